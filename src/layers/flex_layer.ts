/**
 * Masks and scores as functions in the layers (MultiHeadAttention, FlashAttention): the
 * built-in mods a layer keeps in its config (saved as their specs), the mods and block mask a
 * call may add, and the attention of a call through flexAttention with the layer's causal
 * rule and the call's padding and attention masks folded into one mask mod.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {BlockMask, createBlockMask, readsSynchronously} from '../ops/block_mask';
import {CausalAlignment, causalMask} from '../ops/causal';
import {flexAttention} from '../ops/flex';
import {andMasks, chainScores, maskModFromSpec, scoreModFromSpec} from '../ops/flex_mods';
import {MaskMod, ModSpec, ScoreMod} from '../ops/flex_types';
import type {OptionMods} from './attention_options';

/** The constructor arguments of the layers that take mods. */
export const FLEX_LAYER_ARGS = ['maskMod', 'scoreMod'] as const;
/** The call arguments that add mods to a call. */
export const FLEX_CALL_ARGS = ['maskMod', 'scoreMod', 'blockMask'] as const;

export interface FlexLayerArgs {
  /**
   * A built-in mask mod (causalMask(), slidingWindow(w), prefixLm(n), andMasks / orMasks of
   * them) or its spec: every call attends through flexAttention with it (and the layer's
   * `causal`). Saved in the config. Default null.
   */
  maskMod?: MaskMod | ModSpec | null;
  /** A built-in score mod (softcap(c), alibi(), chainScores of them) or its spec, as maskMod. Default null. */
  scoreMod?: ScoreMod | ModSpec | null;
}

/** The mods of one call, besides the layer's (eager calls only; not saved). */
export interface FlexCallArgs {
  /** Which keys a query may see, with the layer's masks. */
  maskMod?: MaskMod | null;
  /** Applied after the layer's scoreMod. Its `tensors` get gradients. */
  scoreMod?: ScoreMod | null;
  /** A block mask for the call's [B, H, T, S] (B and H may be 1); its mod joins the layer's masks. */
  blockMask?: BlockMask | null;
}

/** A layer's own mods, checked. */
export interface FlexConfig {
  maskMod: MaskMod | null;
  scoreMod: ScoreMod | null;
}

/** A layer without mods of its own. */
export const NO_FLEX: FlexConfig = {maskMod: null, scoreMod: null};

/** Checks a layer's maskMod and scoreMod: built-ins (with a spec) or specs. */
export function checkFlexArgs(args: FlexLayerArgs): FlexConfig {
  return {
    maskMod: layerMod('maskMod', args.maskMod, maskModFromSpec),
    scoreMod: layerMod('scoreMod', args.scoreMod, scoreModFromSpec),
  };
}

function layerMod<M extends MaskMod | ScoreMod>(name: string, value: M | ModSpec | null | undefined,
                                                  fromSpec: (s: ModSpec) => M): M | null {
  if (value == null) return null;
  if (typeof value === 'function') {
    if (value.spec == null || (value as ScoreMod).tensors != null) {
      throw new AttentionError('INVALID_CONFIG',
        `a layer's ${name} must be a built-in without tensors (it is saved in the config as its spec); ` +
        `give other mods at call time: layer.apply(x, {${name}})`);
    }
    return fromSpec(value.spec);  // checks the spec names a mod of this kind
  }
  return fromSpec(value);
}

/** The specs of a layer's mods, for getConfig (only those it has: configs of layers without mods stay as they were). */
export function flexConfigOf(cfg: FlexConfig): {maskMod?: ModSpec; scoreMod?: ModSpec} {
  return {...(cfg.maskMod != null ? {maskMod: cfg.maskMod.spec!} : {}),
    ...(cfg.scoreMod != null ? {scoreMod: cfg.scoreMod.spec!} : {})};
}

/** True when a call attends through flexAttention: the layer or the call has a mod or a block mask. */
export function usesFlex(cfg: FlexConfig, call: FlexCallArgs | undefined): boolean {
  return cfg.maskMod != null || cfg.scoreMod != null || call?.maskMod != null || call?.scoreMod != null ||
    call?.blockMask != null;
}

/** Checks a call's mods (types only; the block mask's dims are flexAttention's to check). */
export function checkFlexCall(call: FlexCallArgs): void {
  for (const name of ['maskMod', 'scoreMod'] as const) {
    if (call[name] != null && typeof call[name] !== 'function') {
      throw new AttentionError('INVALID_CONFIG', `${name} must be a function, received ${show(call[name])}`);
    }
  }
  if (call.blockMask != null && !(call.blockMask instanceof BlockMask)) {
    throw new AttentionError('INVALID_CONFIG', `blockMask must come from createBlockMask, received ${show(call.blockMask)}`);
  }
}

/**
 * A mask mod reading a bool mask [Bm, Hm, Tm, Sm] (each 1 or the full size) at the tile's
 * indices: the padding and attention masks of a call, as a mod.
 */
export function tensorMaskMod(mask: tf.Tensor4D): MaskMod {
  return (b, h, q, kv) => {
    let m: tf.Tensor = tf.cast(mask, 'int32');
    [b, h, q, kv].forEach((idx, axis) => {
      if (m.shape[axis] !== 1) m = tf.gather(m, tf.reshape(idx, [-1]), axis);
    });
    return tf.notEqual(m, 0);                                                      // [nb|1, heads|1, bq|1, n|1]
  };
}

/**
 * The attention of q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] through flexAttention with
 * the layer's mods and the call's, `causal` and `mask` (bool, broadcastable to [B, H, T, S]):
 * one block mask for the call, built from every mask together (or the call's own block mask
 * when nothing joins it).
 */
export function flexAttend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, cfg: FlexConfig, call: FlexCallArgs,
                           mask: tf.Tensor4D | null, causal: CausalAlignment | null,
                           options: OptionMods | null = null): tf.Tensor4D {
  const [B, H, T] = q.shape;
  const S = k.shape[2];
  const mods: MaskMod[] = [];
  if (causal != null) mods.push(causalMask(causal));
  if (cfg.maskMod != null) mods.push(cfg.maskMod);
  if (options?.maskMod != null) mods.push(options.maskMod);
  if (call.maskMod != null) mods.push(call.maskMod);
  if (mask != null) mods.push(tensorMaskMod(mask));
  const scores = [cfg.scoreMod, options?.scoreMod, call.scoreMod].filter((m) => m != null) as ScoreMod[];
  const scoreMod = scores.length === 0 ? null : chainScores(...scores);
  const given = call.blockMask ?? null;
  if (given != null && (given.queryLength !== T || given.keyLength !== S || ![1, B].includes(given.batch) ||
      ![1, H].includes(given.heads))) {
    throw new AttentionError('DIMENSION_MISMATCH', 'the call\'s block mask was built for [B, H, T, S] = ' +
      `${show([given.batch, given.heads, given.queryLength, given.keyLength])}, the call is ${show([B, H, T, S])} ` +
      '(B and H may be 1 in the mask)');
  }
  let own: BlockMask | null = null;
  let shared: string | null = null;
  if (mods.length > 0 && !readsSynchronously()) {
    throw new AttentionError('UNSUPPORTED', 'a layer call with mask mods (or its causal rule or padding masks with ' +
      `mods) builds a block mask, whose counts it reads synchronously: not on the ${tf.getBackend()} backend. ` +
      'There, call flexAttention with a mask from await createBlockMaskAsync(...), or give the layer score mods only');
  }
  if (mods.length > 0) {
    // A call's mod or a mask may differ per batch entry or head; the layer's built-ins do not.
    const perBatch = call.maskMod != null || (mask != null && mask.shape[0] > 1) || (given?.batch ?? 1) > 1;
    const perHead = call.maskMod != null || (mask != null && mask.shape[1] > 1) || (given?.heads ?? 1) > 1;
    const all = given != null ? [given.maskMod, ...mods] : mods;
    // Inside withAttentionMods the calls made from the same masks share one block mask (a
    // model's layers, one per layer before: the mask's evaluation cost a packed step more than
    // its attention).
    shared = scopeMasks == null ? null : [causal ?? '-', idOf(cfg.maskMod), idOf(options?.maskMod), idOf(call.maskMod),
      mask == null ? '-' : `t${mask.id}`, idOf(given), perBatch ? B : 1, perHead ? H : 1, T, S].join('|');
    own = shared == null ? null : scopeMasks!.get(shared) ?? null;
    if (own == null) {
      // Every partial tile kept: the call's masks are gone by the backward, which reads the tiles the forward saved.
      own = createBlockMask(all.length === 1 ? all[0] : andMasks(...all), perBatch ? B : 1, perHead ? H : 1, T, S,
        {maxKeptEntries: Infinity, ...(given != null ? {blockSize: [given.queryBlockSize, given.keyBlockSize]} : {})});
      if (shared != null) scopeMasks!.set(shared, own);
    }
  }
  try {
    const sinks = options?.sinks ?? null;
    if (sinks == null) return flexAttention(q, k, v, {scoreMod, blockMask: own ?? given});
    // The sink's share of each row's denominator: sum exp(s) / (sum exp(s) + exp(sink)) = sigmoid(lse - sink).
    const {output, lse} = flexAttention(q, k, v, {scoreMod, blockMask: own ?? given, returnLse: true});
    return tf.tidy(() => tf.mul(output, tf.sigmoid(tf.sub(tf.expandDims(lse, 3), tf.reshape(sinks, [1, H, 1, 1])))));
  } finally {
    if (shared == null) own?.dispose();
  }
}

/** The block masks made for the calls of the innermost withAttentionMods under way (freed when it ends). */
let scopeMasks: Map<string, BlockMask> | null = null;
/** A number per mod, mask or block mask object, for scopeMasks' keys. */
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;

function idOf(x: object | null | undefined): string {
  if (x == null) return '-';
  let id = objectIds.get(x);
  if (id == null) {
    id = nextObjectId++;
    objectIds.set(x, id);
  }
  return String(id);
}

/** The mods of the innermost withAttentionMods under way, or null. */
let contextMods: FlexCallArgs | null = null;

/**
 * f() with `mods` added to every call of a MultiHeadAttention or FlashAttention layer made
 * during it, as if each call were given them (a call's own mods join them): how a model's
 * layers get a mask for one batch in a training loop or `model.predict`, which pass no call
 * arguments to the layers inside (packed sequences: `withAttentionMods({maskMod:
 * documentMask(ids)}, () => model.apply(x))`). Any other attention layer called during it
 * throws UNSUPPORTED. Synchronous: the mods hold while f runs, not across an await. Calls of the
 * same shape with the same masks (a model's layers) share one block mask, built at the first
 * and freed when f returns.
 */
export function withAttentionMods<T>(mods: FlexCallArgs, f: () => T): T {
  const given = mods ?? {}; // null or undefined: no mods
  checkFlexCall(given);
  const outer = contextMods;
  const outerMasks = scopeMasks;
  contextMods = outer == null ? given : joinMods(outer, given);
  scopeMasks = new Map();
  try {
    return f();
  } finally {
    for (const m of scopeMasks.values()) m.dispose();
    contextMods = outer;
    scopeMasks = outerMasks;
  }
}

/** The mods of withAttentionMods under way joined with a call's own (null when neither has any). */
export function callMods(call: FlexCallArgs): FlexCallArgs {
  return contextMods == null ? call : joinMods(contextMods, call);
}

/** True while withAttentionMods adds mods to the calls. */
export function modsInContext(): boolean {
  return contextMods != null && usesFlex({maskMod: null, scoreMod: null}, contextMods);
}

function joinMods(a: FlexCallArgs, b: FlexCallArgs): FlexCallArgs {
  if (a.blockMask != null && b.blockMask != null) {
    throw new AttentionError('INVALID_CONFIG', 'two block masks for one call (withAttentionMods and the call): give one, ' +
      'or give mask mods instead');
  }
  const masks = [a.maskMod, b.maskMod].filter((m) => m != null) as MaskMod[];
  const scores = [a.scoreMod, b.scoreMod].filter((m) => m != null) as ScoreMod[];
  return {
    maskMod: masks.length === 0 ? null : masks.length === 1 ? masks[0] : andMasks(...masks),
    scoreMod: scores.length === 0 ? null : chainScores(...scores),
    blockMask: a.blockMask ?? b.blockMask ?? null,
  };
}
