/**
 * Scaled dot-product attention: softmax(q k^T * scale + mask) v, with grouped-query
 * heads, boolean masks, causal masking (aligned bottom-right or top-left) and dropout on the probabilities.
 */
import * as tf from '@tensorflow/tfjs';
import {OP_NAMES} from '../core/arguments';
import {assertBoolean, assertInteger, assertRate, checkArgNames} from '../core/validate';
import {AttentionDims, assertFits, attentionDims, groupHeads, isEmptyAttention, ungroupHeads, zeroAttention, attentionScale} from './heads';
import {CausalAlignment, CausalArg, causalAlignment, causalOffset} from './causal';
import {combineMasks, MASKED_LOGIT, normalizeMask} from './masks';
import {matMul, tilesAttention} from './matmul';
import {TilePlan} from './tile_plan';
import {tiledAttention} from './tiled';

export interface SdpaOptions {
  /** Bool or 0/1, 1 = may attend; [T, S], [B, T, S] or broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor | null;
  /**
   * true or 'bottom-right': query i sees key j iff j <= i + (S - T); 'top-left': iff j <= i
   * (PyTorch's is_causal, Keras' use_causal_mask). The same when T == S. Default false.
   */
  causal?: CausalArg;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /** Dropout rate on the attention probabilities, applied only when `training`. Default 0. */
  dropout?: number;
  /** Enables dropout. Default false. */
  training?: boolean;
  /** Integer seed for the dropout pattern. */
  seed?: number;
  /** Also return the attention probabilities [B, H, T, S] (before dropout). */
  returnWeights?: boolean;
}

/** The option names scaledDotProductAttention takes. */
export const SDPA_OPTIONS = ['mask', 'causal', 'scale', 'dropout', 'training', 'seed', 'returnWeights'] as const;

export interface AttentionWithWeights {
  /** [B, H, T, Dv] */
  output: tf.Tensor4D;
  /** [B, H, T, S]; rows with no visible key are all zero. */
  weights: tf.Tensor4D;
}

/**
 * Exact attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] with G dividing H;
 * query head h reads key/value head floor(h / (H / G)).
 *
 * Returns the output [B, H, T, Dv], or `{output, weights}` with `returnWeights`.
 * A query row with no key it may attend to gives zeros, not NaN.
 */
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: SdpaOptions & {returnWeights: true}): AttentionWithWeights;
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options?: SdpaOptions): tf.Tensor4D;
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: SdpaOptions = {}): tf.Tensor4D | AttentionWithWeights {
  options = options ?? {};
  checkArgNames('scaledDotProductAttention', options, SDPA_OPTIONS, OP_NAMES);
  const dims = attentionDims(q, k, v);
  const {B, H, T, S, D} = dims;
  const scale = attentionScale(options.scale, D);
  const rate = options.dropout ?? 0;
  assertRate('dropout', rate);
  const causal = causalAlignment(options.causal);
  const training = options.training ?? false;
  assertBoolean('training', training);
  const returnWeights = options.returnWeights ?? false;
  assertBoolean('returnWeights', returnWeights);
  if (options.seed != null) assertInteger('seed', options.seed);

  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(normalizeMask(options.mask, [B, H, T, S])); // still checked
    const output = zeroAttention(q, k, v, dims);
    return returnWeights ? {output, weights: tf.zeros([B, H, T, S]) as tf.Tensor4D} : output;
  }
  assertFits('scaledDotProductAttention', 'the [B, H, T, S] attention weights', [B, H, T, S]);
  const dropping = training && rate > 0;
  const fast = tilesAttention() && !returnWeights && !dropping;

  if (fast) return splitAttention(q, k, v, options.mask, causal, scale, dims);
  return tf.tidy(() => {
    const allowed = combineMasks(options.mask, causal, [B, H, T, S]);

    // 1. Logits, with the query heads of each kv group folded into rows.
    const qg = groupHeads(tf.mul(q, scale), dims);                 // [B, G, R*T, D]
    let logits = ungroupHeads(matMul(qg, k, false, true), dims, T); // [B, H, T, S]

    // 2. Masked keys get a large negative logit; probabilities are zeroed there
    //    afterwards, which also turns rows with no visible key into zeros.
    let keep: tf.Tensor | null = null;
    if (allowed != null) {
      keep = tf.cast(allowed, 'float32');                         // broadcastable to [B, H, T, S]
      logits = tf.add(logits, tf.mul(tf.sub(1, keep), MASKED_LOGIT));
    }
    let weights = tf.softmax(logits);                              // [B, H, T, S]
    if (keep != null) weights = tf.mul(weights, keep);

    // 3. Dropout on the probabilities, then the weighted sum of values.
    const dropped = dropping ? tf.dropout(weights, rate, undefined, options.seed) : weights;
    const out = matMul(groupHeads(dropped, dims), v);           // [B, G, R*T, Dv]
    const output = ungroupHeads(out, dims, T) as tf.Tensor4D;      // [B, H, T, Dv]
    return returnWeights ? {output, weights: weights as tf.Tensor4D} : output;
  });
}

/**
 * Scores one tile of the wasm path holds (2^22: 16 MiB of float32): each query block spans
 * all S keys, with as many query positions as fit.
 */
export const SDPA_TILE_SCORES = 2 ** 22;

/**
 * Exact attention for backends that want 2-D, non-transposed products: the tiled engine of
 * ops/tiled.ts with one key tile of all S keys (so no online rescaling) and query blocks of
 * SDPA_TILE_SCORES / (R * S) positions. The forward keeps only the output and each row's
 * logsumexp, and the backward recomputes the probabilities a block at a time, so no T x S
 * matrix outlives its block (but one of at most UNIT_WORK_ELEMENTS scores, which the forward
 * keeps for the backward) and none is ever transposed. No dropout or returned weights (the
 * caller takes the general path for them).
 */
function splitAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor | null | undefined,
                        causal: CausalAlignment | null, scale: number, dims: AttentionDims): tf.Tensor4D {
  const {B, H, T, S, R} = dims;
  const bq = Math.max(1, Math.min(T, Math.floor(SDPA_TILE_SCORES / (R * S))));
  const plan: TilePlan = {...dims, scale, bq, bk: S, causal: causal != null,
    offset: causal != null ? causalOffset(causal, T, S) : 0};
  const keep = mask != null ? tf.tidy(() => tf.cast(normalizeMask(mask, [B, H, T, S]), 'float32')) : null;
  const out = tiledAttention(plan, q, k, v, keep);
  if (keep != null) keep.dispose();
  return out as tf.Tensor4D;
}
