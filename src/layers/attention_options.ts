/**
 * The options of today's attention layers, on MultiHeadAttention and FlashAttention: logit soft
 * capping (Gemma 2), sliding windows (Mistral, Gemma 2/3), attention sinks (gpt-oss), per-head
 * q/k normalisation (Qwen3, OLMo 2, Gemma 3), output gates (Gated Attention, Qwen3-Next) and ALiBi
 * (BLOOM, MPT). Each is a constructor argument, saved in the config; the weights they add follow
 * the layer's projections in getWeights(): sinks [H], query_norm/gamma [D], key_norm/gamma [D],
 * gate/kernel and gate/bias, alibi/slopes [H]. docs/attention-options.md has a section per option.
 *
 * The scores of pair (i, j) are s = scale * q_i.k_j, then softcap c * tanh(s / c), then ALiBi's
 * -slope_h * |i' - j| (i' the query's position on the keys' axis: i + S - T for a causal call aligned
 * bottom-right, else i); the sliding window hides keys outside 0 <= i' - j < W (causal) or
 * |i - j| < W (not causal); a sink adds exp(sink_h) to each row's denominator.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {WeightShape} from '../core/limits';
import {assertBoolean, assertOneOf, assertPositiveInt, assertPositiveNumber} from '../core/validate';
import {CausalAlignment} from '../ops/causal';
import {alibiSlopes, chainScores, slidingWindow, softcap} from '../ops/flex_mods';
import {MaskMod, ModContext, ScoreMod} from '../ops/flex_types';
import {withMaskValues, positive} from '../ops/mask_values';
import {projectToHeads} from './projection';

/** The constructor arguments the options add. */
export const ATTENTION_OPTION_ARGS = [
  'softcap', 'slidingWindow', 'attentionSinks', 'qkNorm', 'qkNormEpsilon', 'outputGate', 'alibi',
] as const;

export const QK_NORMS = ['rms', 'layer'] as const;
export type QkNorm = typeof QK_NORMS[number];
export const OUTPUT_GATES = ['headwise', 'elementwise'] as const;
export type OutputGate = typeof OUTPUT_GATES[number];
/** qkNorm's epsilon when not given (Qwen3's and Gemma 3's). */
export const DEFAULT_QK_NORM_EPSILON = 1e-6;

export interface AttentionOptionArgs {
  /** c > 0: scores become c * tanh(s / c) after scaling, before masks and softmax (Gemma 2). Default null. */
  softcap?: number | null;
  /**
   * W: a causal layer's query sees the W keys ending at its own position (0 <= i' - j < W);
   * a non-causal one the keys with |i - j| < W (Keras' sliding_window). Default null.
   */
  slidingWindow?: number | null;
  /** One learned logit per query head (weight `sinks` [H]) joins each row's softmax denominator (gpt-oss). */
  attentionSinks?: boolean;
  /** Per-head normalisation of q and k before rotary positions, with learned scales [D]. Default null. */
  qkNorm?: QkNorm | null;
  /** The epsilon of qkNorm. Default DEFAULT_QK_NORM_EPSILON. */
  qkNormEpsilon?: number;
  /** Y * sigmoid(x W_g + b_g) before the output projection: one gate per head or per channel. Default null. */
  outputGate?: OutputGate | null;
  /** true: ALiBi with the standard slopes for H heads; 'learned': slopes learned from them. Default false. */
  alibi?: boolean | 'learned';
}

/** The options, checked, with their defaults. */
export interface AttentionOptions {
  softcap: number | null;
  slidingWindow: number | null;
  attentionSinks: boolean;
  qkNorm: QkNorm | null;
  qkNormEpsilon: number;
  outputGate: OutputGate | null;
  alibi: boolean | 'learned';
}

export const NO_OPTIONS: AttentionOptions = {softcap: null, slidingWindow: null, attentionSinks: false, qkNorm: null,
  qkNormEpsilon: DEFAULT_QK_NORM_EPSILON, outputGate: null, alibi: false};

/** Checks the options of a layer's arguments (INVALID_CONFIG for a bad value or a lone qkNormEpsilon). */
export function checkAttentionOptions(args: AttentionOptionArgs): AttentionOptions {
  const softcapArg = args.softcap ?? null;
  if (softcapArg != null) assertPositiveNumber('softcap', softcapArg);
  const window = args.slidingWindow ?? null;
  if (window != null) assertPositiveInt('slidingWindow', window);
  const attentionSinks = args.attentionSinks ?? false;
  assertBoolean('attentionSinks', attentionSinks);
  const qkNorm = args.qkNorm ?? null;
  if (qkNorm != null) assertOneOf('qkNorm', qkNorm, QK_NORMS);
  if (args.qkNormEpsilon != null && qkNorm == null) {
    throw new AttentionError('INVALID_CONFIG', `qkNormEpsilon (${show(args.qkNormEpsilon)}) is for qkNorm: give ` +
      "qkNorm 'rms' or 'layer', or leave qkNormEpsilon out");
  }
  const qkNormEpsilon = args.qkNormEpsilon ?? DEFAULT_QK_NORM_EPSILON;
  assertPositiveNumber('qkNormEpsilon', qkNormEpsilon);
  const outputGate = args.outputGate ?? null;
  if (outputGate != null) assertOneOf('outputGate', outputGate, OUTPUT_GATES);
  const alibi = args.alibi ?? false;
  if (alibi !== true && alibi !== false && alibi !== 'learned') {
    throw new AttentionError('INVALID_CONFIG', `alibi must be true, false or 'learned', received ${show(alibi)}`);
  }
  return {softcap: softcapArg, slidingWindow: window, attentionSinks, qkNorm, qkNormEpsilon, outputGate, alibi};
}

/** The options as config entries (the defaults left out, so a plain layer's config is as before). */
export function attentionOptionsConfig(o: AttentionOptions): tf.serialization.ConfigDict {
  const config: tf.serialization.ConfigDict = {};
  if (o.softcap != null) config.softcap = o.softcap;
  if (o.slidingWindow != null) config.slidingWindow = o.slidingWindow;
  if (o.attentionSinks) config.attentionSinks = true;
  if (o.qkNorm != null) {
    config.qkNorm = o.qkNorm;
    config.qkNormEpsilon = o.qkNormEpsilon;
  }
  if (o.outputGate != null) config.outputGate = o.outputGate;
  if (o.alibi !== false) config.alibi = o.alibi;
  return config;
}

/** True when an option changes the scores or the softmax (the layer then attends through its mods). */
export function changesScores(o: AttentionOptions): boolean {
  return o.slidingWindow != null || changesVisibleScores(o);
}

/** True when an option changes the scores of the keys a query sees (any but the window). */
export function changesVisibleScores(o: AttentionOptions): boolean {
  return o.softcap != null || o.attentionSinks || o.alibi !== false;
}

/** The weights the options add, in getWeights() order; `init` says how build initialises each. */
export function optionWeightShapes(o: AttentionOptions, dims: {Eq: number; D: number; Dv: number},
                                   heads: {H: number; useBias: boolean}): (WeightShape & {init: OptionInit})[] {
  const {H, useBias} = heads;
  const shapes: (WeightShape & {init: OptionInit})[] = [];
  if (o.attentionSinks) shapes.push({name: 'sinks', shape: [H], init: 'zeros'});
  if (o.qkNorm != null) {
    shapes.push({name: 'query_norm/gamma', shape: [dims.D], init: 'ones'});
    shapes.push({name: 'key_norm/gamma', shape: [dims.D], init: 'ones'});
  }
  if (o.outputGate != null) {
    const perHead = o.outputGate === 'headwise' ? [H] : [H, dims.Dv];
    shapes.push({name: 'gate/kernel', shape: [dims.Eq, ...perHead], init: 'kernel'});
    if (useBias) shapes.push({name: 'gate/bias', shape: perHead, init: 'bias'});
  }
  if (o.alibi === 'learned') shapes.push({name: 'alibi/slopes', shape: [H], init: 'alibi'});
  return shapes;
}

/**
 * How an option weight starts: as the layer's kernels or biases (their initializer, regularizer and
 * constraint), or as ones, zeros or ALiBi's slopes.
 */
export type OptionInit = 'kernel' | 'bias' | 'ones' | 'zeros' | 'alibi';

/** The option weights of a built layer (null where the option is off). */
export interface OptionWeights {
  sinks: tf.LayerVariable | null;
  queryGamma: tf.LayerVariable | null;
  keyGamma: tf.LayerVariable | null;
  gateKernel: tf.LayerVariable | null;
  gateBias: tf.LayerVariable | null;
  slopes: tf.LayerVariable | null;
}

export const NO_OPTION_WEIGHTS: OptionWeights = {sinks: null, queryGamma: null, keyGamma: null, gateKernel: null,
  gateBias: null, slopes: null};

/** The option weights by name, from those build made. */
export function optionWeightsOf(made: Map<string, tf.LayerVariable>): OptionWeights {
  const get = (name: string) => made.get(name) ?? null;
  return {sinks: get('sinks'), queryGamma: get('query_norm/gamma'), keyGamma: get('key_norm/gamma'),
    gateKernel: get('gate/kernel'), gateBias: get('gate/bias'), slopes: get('alibi/slopes')};
}

/** ALiBi's standard slopes for H heads [H]. */
export function alibiInitial(H: number): tf.Tensor {
  return tf.tensor1d(alibiSlopes(H));
}

/**
 * The initializer of learned ALiBi slopes: the standard slopes for the weight's H heads (an
 * object with tfjs Initializer's `apply`, which is all addWeight calls).
 */
export const ALIBI_INITIALIZER = {
  apply: (shape: number[]) => alibiInitial(shape[0]),
  getClassName: () => 'AlibiSlopes',
  getConfig: () => ({}),
} as unknown as ReturnType<typeof tf.initializers.zeros>;

/**
 * Heads x [B, N, L, D] normalised over D with scales gamma [D]: 'rms' x / sqrt(mean(x^2) + eps),
 * 'layer' (x - mean) / sqrt(var + eps), each times gamma.
 */
export function normalizeHeads(x: tf.Tensor4D, gamma: tf.Tensor, kind: QkNorm, eps: number): tf.Tensor4D {
  return tf.tidy(() => {
    const centred = kind === 'layer' ? tf.sub(x, tf.mean(x, -1, true)) : x;
    const inv = tf.rsqrt(tf.add(tf.mean(tf.square(centred), -1, true), eps));
    return tf.mul(tf.mul(centred, inv), gamma) as tf.Tensor4D;
  });
}

/** o [B, H, T, Dv] times the gate sigmoid(x W_g + b_g) of the query input x [B, T, Eq]. */
export function gateHeads(o: tf.Tensor4D, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null,
                          mode: OutputGate): tf.Tensor4D {
  return tf.tidy(() => {
    const H = o.shape[1];
    const w = mode === 'headwise' ? tf.reshape(kernel, [kernel.shape[0] as number, H, 1]) : kernel;
    const b = bias == null ? null : mode === 'headwise' ? tf.reshape(bias, [H, 1]) : bias;
    return tf.mul(o, tf.sigmoid(projectToHeads(x, w, b))) as tf.Tensor4D; // gate [B, H, T, 1 | Dv]
  });
}

/**
 * A non-causal band: query i sees key j iff |i - j| < window (both from 0, as Keras' sliding_window
 * without a causal mask).
 */
export function bandMask(window: number): MaskMod {
  assertPositiveInt('window', window);
  const distance = (q: tf.Tensor, kv: tf.Tensor) => tf.abs(tf.sub(tf.cast(q, 'float32'), tf.cast(kv, 'float32')));
  const mod: MaskMod = (_b, _h, q, kv) => tf.less(distance(q, kv), window);
  return withMaskValues(mod, (_b, _h, q, kv) => positive(tf.sub(window - 0.5, distance(q, kv))));
}

/**
 * ALiBi as a score mod: score - slope[h] * |i' - j|, i' aligned as `alignment` (null: i' = i).
 * `slopes` [H], learned, is declared (it gets gradients through flexAttention too); null: the
 * standard slopes of the call's heads.
 */
export function alibiBias(slopes: tf.Tensor | null, alignment: CausalAlignment | null): ScoreMod {
  const f: ScoreMod = (score, _b, h, q, kv, context: ModContext) => {
    const offset = alignment === 'bottom-right' ? context.keyLength - context.queryLength : 0;
    const table = slopes ?? alibiInitial(context.heads);
    const slope = tf.reshape(tf.gather(table, tf.reshape(h, [-1])), [1, h.size, 1, 1]);   // [1, heads, 1, 1]
    const distance = tf.abs(tf.sub(tf.add(tf.cast(q, 'float32'), offset), tf.cast(kv, 'float32'))); // [1, 1, bq, n]
    return tf.sub(score, tf.mul(slope, distance));
  };
  if (slopes != null) f.tensors = [slopes];
  return f;
}

/** The mask and score mods of a layer's options for one call, and the sinks; nulls where none. */
export interface OptionMods {
  maskMod: MaskMod | null;
  scoreMod: ScoreMod | null;
  sinks: tf.Tensor | null;
}

/**
 * The options' mods for a call aligned `causal` (null: not causal). The window's mask mods are made
 * once per alignment and kept in `masks`, so calls with the same masks can share one block mask.
 */
export function optionMods(o: AttentionOptions, w: OptionWeights, causal: CausalAlignment | null,
                           masks: Map<string, MaskMod>): OptionMods {
  let maskMod: MaskMod | null = null;
  if (o.slidingWindow != null) {
    const key = causal ?? 'none';
    maskMod = masks.get(key) ?? null;
    if (maskMod == null) {
      maskMod = causal != null ? slidingWindow(o.slidingWindow, causal) : bandMask(o.slidingWindow);
      masks.set(key, maskMod);
    }
  }
  const scores: ScoreMod[] = [];
  if (o.softcap != null) scores.push(softcap(o.softcap));
  if (o.alibi !== false) scores.push(alibiBias(w.slopes?.read() ?? null, causal));
  const scoreMod = scores.length === 0 ? null : chainScores(...scores);
  return {maskMod, scoreMod, sinks: w.sinks?.read() ?? null};
}
