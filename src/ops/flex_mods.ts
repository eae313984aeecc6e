/**
 * Masks and scores as functions (FlexAttention's mask_mod and score_mod, PyTorch 2.5): the
 * built-in mods (causalMask, in causal.ts, is one too) and their combinators.
 *
 * A mod is ordinary tf code over index tensors that broadcast over a tile of scores
 * [nb, heads, bq, n]: `b` [nb, 1, 1, 1], `h` [1, heads, 1, 1], `qIdx` [1, 1, bq, 1] and
 * `kvIdx` [1, 1, 1, n], all int32 (batch entries, query heads, query and key positions).
 * A mask mod returns a bool tensor (true = may attend) broadcastable to the tile; a score
 * mod takes the scaled score q.k [nb, heads, bq, n] first and returns the new score, the
 * same shape. Gradients flow through a score mod to q and k, and to the tensors it declares
 * (`capturing`, and the built-ins' own).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertPositiveInt, assertNonNegativeInt, assertPositiveNumber} from '../core/validate';
import {alignedQueries, CausalAlignment, causalAlignment, causalMask, indexDifference} from './causal';
import {MaskMod, ModContext, ModSpec, ScoreMod} from './flex_types';
import {maskValuesFunction, positive, withMaskValues} from './mask_values';

/**
 * A score mod that reads `tensors` (a learned bias, slopes): they get gradients from
 * flexAttention as q, k and v do. A tensor the mod reads but that is not listed here is a
 * constant to the gradient.
 */
export function capturing(tensors: readonly tf.Tensor[], mod: ScoreMod): ScoreMod {
  if (!Array.isArray(tensors) || tensors.some((t) => !(t instanceof tf.Tensor))) {
    throw new AttentionError('INVALID_CONFIG', `capturing takes an array of tensors, received ${show(tensors)}`);
  }
  if (typeof mod !== 'function') {
    throw new AttentionError('INVALID_CONFIG', `capturing takes a score mod function, received ${show(mod)}`);
  }
  const f: ScoreMod = (score, b, h, q, kv, context) => mod(score, b, h, q, kv, context);
  f.tensors = [...(mod.tensors ?? []), ...tensors];
  if (mod.spec != null) f.spec = mod.spec;
  return f;
}

/** Attaches a spec to a mod function. */
function described<F extends MaskMod | ScoreMod>(f: F, spec: ModSpec): F {
  f.spec = spec;
  return f;
}

/**
 * Causal attention to the last `window` positions, the query's own included (Mistral's and
 * Gemma's sliding window): query i sees key j iff 0 <= i' - j < window, where i' = i + (S - T)
 * ('bottom-right', the default) or i ('top-left').
 */
export function slidingWindow(window: number, alignment: CausalAlignment | boolean = 'bottom-right'): MaskMod {
  assertPositiveInt('window', window);
  const a = causalAlignment(alignment, 'alignment') ?? 'bottom-right';
  const mod = described<MaskMod>((_b, _h, q, kv, context) => {
    const d = indexDifference(alignedQueries(q, context, a), kv); // i' - j, [1, 1, bq, n]
    return tf.logicalAnd(tf.greaterEqual(d, 0), tf.less(d, window));
  }, {name: 'slidingWindow', window, alignment: a});
  return withMaskValues(mod, (_b, _h, q, kv, context) => {
    const d = indexDifference(alignedQueries(q, context, a), kv);
    return tf.mul(positive(tf.add(d, 0.5)), positive(tf.sub(window - 0.5, d)));
  });
}

/**
 * Prefix language model: every query sees the first `prefix` keys (the prompt, attended both
 * ways) and, past them, keys up to its own position (causal, aligned as causalMod).
 */
export function prefixLm(prefix: number, alignment: CausalAlignment | boolean = 'bottom-right'): MaskMod {
  assertNonNegativeInt('prefix', prefix);
  const a = causalAlignment(alignment, 'alignment') ?? 'bottom-right';
  const mod = described<MaskMod>((_b, _h, q, kv, context) => {
    const past = tf.lessEqual(indexDifference(kv, alignedQueries(q, context, a)), 0);             // [1, 1, bq, n]
    const [prompt, causal] = sameShape([tf.less(kv, prefix), past]);
    return tf.logicalOr(prompt, causal);
  },
  {name: 'prefixLm', prefix, alignment: a});
  return withMaskValues(mod, (_b, _h, q, kv, context) => {
    const prompt = positive(tf.sub(prefix - 0.5, tf.cast(kv, 'float32')));
    const past = positive(tf.sub(0.5, indexDifference(kv, alignedQueries(q, context, a))));
    return tf.clipByValue(tf.add(prompt, past), 0, 1);
  });
}

/**
 * Packed sequences: `docIds` [S] or [B, S] (int32) gives each position's document, and a
 * query sees only keys of its own document. Queries and keys share positions: query i is at
 * position i + (S - T). Combine with causalMod for packed causal language modelling:
 * `andMasks(causalMod(), documentMask(ids))`. The caller owns docIds and keeps it alive
 * while the mod is used.
 */
export function documentMask(docIds: tf.Tensor): MaskMod {
  if (!(docIds instanceof tf.Tensor) || (docIds.rank !== 1 && docIds.rank !== 2) || docIds.dtype !== 'int32') {
    throw new AttentionError('INVALID_CONFIG',
      `docIds must be an int32 tensor of shape [S] or [B, S], received ${show(docIds)}`);
  }
  const ids = docIds;
  // Each query's and key's document, float32: [nb, 1, bq, 1] and [nb, 1, 1, n].
  const documents = (b: tf.Tensor, q: tf.Tensor, kv: tf.Tensor, context: ModContext): [tf.Tensor, tf.Tensor] => {
    const Bd = ids.rank === 2 ? ids.shape[0] as number : 1;
    const S = ids.shape[ids.rank - 1] as number;
    if (S !== context.keyLength) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `documentMask's docIds cover ${S} positions, but the keys have ${context.keyLength}`);
    }
    if (Bd !== 1 && Bd !== context.batch) {
      throw new AttentionError('DIMENSION_MISMATCH', `documentMask's docIds have ${Bd} rows, but the batch has ` +
        `${context.batch} entries` + (context.batch === 1 ? ' (pass the batch size to createBlockMask)' : ''));
    }
    let rows = tf.reshape(ids, [Bd, S]);                                        // [Bd, S]
    let nb = 1;
    if (Bd > 1) {
      nb = b.size;
      rows = tf.gather(rows, tf.reshape(b, [nb]), 0);                            // [nb, S]
    }
    const qPos = tf.reshape(alignedQueries(q, context, 'bottom-right'), [-1]);
    const qDoc = tf.reshape(tf.gather(rows, qPos, 1), [nb, 1, q.size, 1]);      // [nb, 1, bq, 1]
    const kDoc = tf.reshape(tf.gather(rows, tf.reshape(kv, [-1]), 1), [nb, 1, 1, kv.size]); // [nb, 1, 1, n]
    return [qDoc, kDoc];
  };
  const mod: MaskMod = (b, _h, q, kv, context) => tf.equal(indexDifference(...documents(b, q, kv, context)), 0);
  // The same documents: |doc_i - doc_j| < 0.5.
  return withMaskValues(mod, (b, _h, q, kv, context) =>
    positive(tf.sub(0.5, tf.abs(indexDifference(...documents(b, q, kv, context))))));
}

/** Keys every mod allows. */
export function andMasks(...mods: MaskMod[]): MaskMod {
  return combined('andMasks', 'and', mods, tf.logicalAnd, (xs) => xs.reduce((x, y) => tf.mul(x, y)));
}

/** Keys any mod allows. */
export function orMasks(...mods: MaskMod[]): MaskMod {
  return combined('orMasks', 'or', mods, tf.logicalOr,
    (xs) => tf.clipByValue(xs.reduce((x, y) => tf.add(x, y)), 0, 1));
}

/** A mask mod joining `mods` with a logical op, and its float form joining theirs (mask_values.ts). */
function combined(who: string, name: 'and' | 'or', mods: MaskMod[], join: (x: tf.Tensor, y: tf.Tensor) => tf.Tensor,
                  joinValues: (xs: tf.Tensor[]) => tf.Tensor): MaskMod {
  checkMods(who, mods);
  const mod = described<MaskMod>((b, h, q, kv, context) =>
    sameShape(mods.map((m) => maskOf(m, b, h, q, kv, context))).reduce((x, y) => join(x, y)),
  {name, mods: specsOf(mods)});
  return withMaskValues(mod, (b, h, q, kv, context) =>
    joinValues(mods.map((m) => maskValuesOf(m, b, h, q, kv, context))));
}

/**
 * Tensors broadcast to their common shape (tf.broadcastTo copies fast; a broadcasting logical op
 * on wasm is a slow scalar loop).
 */
function sameShape(xs: tf.Tensor[]): tf.Tensor[] {
  const shape = xs.reduce((s: number[], x) => tf.backend_util.assertAndGetBroadcastShape(s, x.shape), []);
  return xs.map((x) => (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i]) ? x
    : tf.broadcastTo(x, shape)));
}

function checkMods(who: string, mods: unknown[]): void {
  if (mods.length === 0 || mods.some((m) => typeof m !== 'function')) {
    throw new AttentionError('INVALID_CONFIG', `${who} takes one or more mask mods (functions), received ${show(mods)}`);
  }
}

/** The specs of mods that all have one, else null (the combination is then not described). */
function specsOf(mods: (MaskMod | ScoreMod)[]): ModSpec[] | null {
  return mods.every((m) => m.spec != null) ? mods.map((m) => m.spec!) : null;
}

/**
 * A mask mod's result as bool, checked: bool or 0/1 numbers, broadcastable to the tile
 * [nb, heads, bq, n] of the index tensors.
 */
export function maskOf(mod: MaskMod, b: tf.Tensor, h: tf.Tensor, q: tf.Tensor, kv: tf.Tensor,
                       context: ModContext): tf.Tensor {
  const m = mod(b, h, q, kv, context);
  const tile = [b.size, h.size, q.size, kv.size];
  if (!(m instanceof tf.Tensor) || m.rank > 4 || !broadcastsTo(m.shape, tile)) {
    throw new AttentionError('INVALID_MASK', 'a mask mod must return a bool tensor broadcastable to the tile ' +
      `${show(tile)} of its index tensors, received ${show(m)}`);
  }
  if (m.dtype === 'bool') return m;
  if (m.dtype === 'string' || m.dtype === 'complex64') {
    throw new AttentionError('INVALID_MASK', `a mask mod must return bool (true = may attend), received dtype ${m.dtype}`);
  }
  return tf.notEqual(m, 0);
}

/**
 * A mask mod's result as float32 1 (visible) / 0, broadcastable to the tile: the built-ins'
 * float form (mask_values.ts), or the mod's own result checked by maskOf and cast.
 */
export function maskValuesOf(mod: MaskMod, b: tf.Tensor, h: tf.Tensor, q: tf.Tensor, kv: tf.Tensor,
                             context: ModContext): tf.Tensor {
  const values = maskValuesFunction(mod);
  return values != null ? values(b, h, q, kv, context) : tf.cast(maskOf(mod, b, h, q, kv, context), 'float32');
}

/** True when `shape` (right-aligned, rank <= 4) broadcasts to `target` without growing it. */
export function broadcastsTo(shape: readonly number[], target: readonly number[]): boolean {
  const pad = target.length - shape.length;
  return pad >= 0 && shape.every((d, i) => d === 1 || d === target[i + pad]);
}

/**
 * Slopes of ALiBi (Press et al. 2022) for H heads: the geometric sequence 2^(-8/n), 2^(-16/n),
 * ... for n = H a power of two; otherwise those of the nearest power of two below, then every
 * other slope of twice that, as the paper does.
 */
export function alibiSlopes(H: number): number[] {
  assertPositiveInt('heads', H);
  const geometric = (n: number) => Array.from({length: n}, (_, i) => 2 ** (-8 * (i + 1) / n));
  const p = 2 ** Math.floor(Math.log2(H));
  if (p === H) return geometric(H);
  return [...geometric(p), ...geometric(2 * p).filter((_, i) => i % 2 === 0).slice(0, H - p)];
}

/**
 * ALiBi: score + slope[h] * (j - i'), a penalty linear in how far back the key is (i' aligned
 * as causalMod). `slopes` [H] (a tensor gets gradients, a learned slope); default alibiSlopes(H).
 */
export function alibi(slopes?: tf.Tensor | readonly number[] | null,
                      alignment: CausalAlignment | boolean = 'bottom-right'): ScoreMod {
  const a = causalAlignment(alignment, 'alignment') ?? 'bottom-right';
  if (slopes != null && !(slopes instanceof tf.Tensor) &&
      !(Array.isArray(slopes) && slopes.every((x) => typeof x === 'number' && Number.isFinite(x)))) {
    throw new AttentionError('INVALID_CONFIG', 'alibi slopes must be a [heads] tensor or array of numbers, ' +
      `received ${show(slopes)}`);
  }
  if (slopes instanceof tf.Tensor && (slopes.rank !== 1 || slopes.dtype !== 'float32')) {
    throw new AttentionError('INVALID_CONFIG', `alibi slopes must be a float32 [heads] tensor, received ${show(slopes)}`);
  }
  const given = slopes;
  const f: ScoreMod = (score, _b, h, q, kv, context) => {
    const H = given == null ? context.heads : given instanceof tf.Tensor ? given.shape[0] as number : given.length;
    if (H !== context.heads) {
      throw new AttentionError('DIMENSION_MISMATCH', `alibi has ${H} slopes, but the attention ${context.heads} heads`);
    }
    const table = given instanceof tf.Tensor ? given : tf.tensor1d(given ?? alibiSlopes(H));
    const slope = tf.reshape(tf.gather(table, tf.reshape(h, [-1])), [1, h.size, 1, 1]);   // [1, heads, 1, 1]
    const distance = indexDifference(kv, alignedQueries(q, context, a));                      // [1, 1, bq, n]
    return tf.add(score, tf.mul(slope, distance));
  };
  if (slopes instanceof tf.Tensor) f.tensors = [slopes];
  else f.spec = {name: 'alibi', alignment: a, slopes: slopes == null ? null : [...slopes]};
  return f;
}

/**
 * Soft capping (Gemma 2, Grok): cap * tanh(score / cap), scores kept within (-cap, cap). Computed
 * as 2 cap sigmoid(2 score / cap) - cap, the same function: wasm's Tanh is a scalar loop some 8x
 * slower than its Sigmoid (18.6 against 2.3 ms over 2^19 scores).
 */
export function softcap(cap: number): ScoreMod {
  assertPositiveNumber('cap', cap);
  return described((score) => tf.sub(tf.mul(tf.sigmoid(tf.mul(score, 2 / cap)), 2 * cap), cap), {name: 'softcap', cap});
}

/**
 * A learned relative-position bias (T5, Shaw et al. 2018, without buckets): score +
 * table[h, clip(j - i', -M, M) + M] with `table` [H, 2M + 1] or [1, 2M + 1] (one for every
 * head), M the largest distance told apart (farther keys share the end entries). The table
 * (a tf.Variable to learn it) gets gradients.
 */
export function relativePositionBias(table: tf.Tensor, alignment: CausalAlignment | boolean = 'bottom-right'): ScoreMod {
  if (!(table instanceof tf.Tensor) || table.rank !== 2 || table.dtype !== 'float32' ||
      (table.shape[1] as number) % 2 !== 1) {
    throw new AttentionError('INVALID_CONFIG', 'relativePositionBias takes a float32 table [heads, 2 * maxDistance + 1] ' +
      `(an odd number of columns), received ${show(table)}`);
  }
  const a = causalAlignment(alignment, 'alignment') ?? 'bottom-right';
  const M = ((table.shape[1] as number) - 1) / 2;
  const f: ScoreMod = (score, _b, h, q, kv, context) => {
    const Ht = table.shape[0] as number;
    if (Ht !== 1 && Ht !== context.heads) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `relativePositionBias's table has ${Ht} rows, but the attention ${context.heads} heads (or give 1 row)`);
    }
    const rows = Ht === 1 ? table : tf.gather(table, tf.reshape(h, [-1]));                // [heads|1, 2M+1]
    const d = tf.clipByValue(indexDifference(kv, alignedQueries(q, context, a)), -M, M);    // [1, 1, bq, n]
    const idx = tf.cast(tf.add(d, M), 'int32');
    const [bq, n] = [q.size, kv.size];
    const bias = tf.gather(rows, tf.reshape(tf.broadcastTo(idx, [1, 1, bq, n]), [bq * n]), 1);  // [heads|1, bq*n]
    return tf.add(score, tf.reshape(bias, [1, rows.shape[0] as number, bq, n]));
  };
  f.tensors = [table];
  return f;
}

/** Score mods applied one after the other (each gets the score the previous one returned). */
export function chainScores(...mods: ScoreMod[]): ScoreMod {
  if (mods.length === 0 || mods.some((m) => typeof m !== 'function')) {
    throw new AttentionError('INVALID_CONFIG', `chainScores takes one or more score mods (functions), received ${show(mods)}`);
  }
  if (mods.length === 1) return mods[0];
  const f: ScoreMod = (score, b, h, q, kv, context) => mods.reduce((s, m) => m(s, b, h, q, kv, context), score);
  const tensors = mods.flatMap((m) => m.tensors ?? []);
  if (tensors.length > 0) f.tensors = tensors;
  const specs = specsOf(mods);
  if (specs != null) f.spec = {name: 'chain', mods: specs};
  return f;
}

/** The mask mods a spec can name (the built-ins without tensors). */
export const MASK_SPECS = ['causal', 'slidingWindow', 'prefixLm', 'and', 'or'] as const;
/** The score mods a spec can name. */
export const SCORE_SPECS = ['alibi', 'softcap', 'chain'] as const;

/** The built-in mask mod a spec describes (as its `spec` property gives it). Throws INVALID_CONFIG for any other. */
export function maskModFromSpec(spec: ModSpec): MaskMod {
  const s = checkSpec(spec, MASK_SPECS, 'a mask mod');
  const alignment = (s.alignment ?? 'bottom-right') as CausalAlignment;
  switch (s.name) {
    case 'causal': return causalMask(alignment);
    case 'slidingWindow': return slidingWindow(s.window as number, alignment);
    case 'prefixLm': return prefixLm(s.prefix as number, alignment);
    default: {
      const mods = listOf(s).map(maskModFromSpec);
      return s.name === 'and' ? andMasks(...mods) : orMasks(...mods);
    }
  }
}

/** The built-in score mod a spec describes. Throws INVALID_CONFIG for any other. */
export function scoreModFromSpec(spec: ModSpec): ScoreMod {
  const s = checkSpec(spec, SCORE_SPECS, 'a score mod');
  switch (s.name) {
    case 'alibi': return alibi(s.slopes as number[] | null, (s.alignment ?? 'bottom-right') as CausalAlignment);
    case 'softcap': return softcap(s.cap as number);
    default: return chainScores(...listOf(s).map(scoreModFromSpec));
  }
}

function checkSpec(spec: unknown, names: readonly string[], what: string): ModSpec {
  const s = spec as ModSpec;
  if (s == null || typeof s !== 'object' || !names.includes(s.name)) {
    throw new AttentionError('INVALID_CONFIG', `${show(spec)} does not describe ${what}: a spec is the \`spec\` of a ` +
      `built-in, {name, ...} with name one of ${names.map((n) => `'${n}'`).join(', ')}`);
  }
  return s;
}

function listOf(s: ModSpec): ModSpec[] {
  if (!Array.isArray(s.mods) || s.mods.length === 0) {
    throw new AttentionError('INVALID_CONFIG', `the spec ${show(s.name)} must list the specs of its mods, received ` +
      `${show(s.mods)} (a combination of mods that are not all built-ins has no spec)`);
  }
  return s.mods as ModSpec[];
}
