/**
 * Scaled dot-product attention: softmax(q k^T * scale + mask) v, with grouped-query
 * heads, boolean masks, bottom-right causal masking and dropout on the probabilities.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../errors';
import {assertRate} from '../validate';
import {attentionDims, groupHeads, ungroupHeads} from './heads';
import {combineMasks} from './masks';

/**
 * Added to the logits of masked keys. Finite, so a row with no key left stays finite
 * (it is zeroed afterwards), and far below any logit a float32 model produces.
 */
export const MASKED_LOGIT = -1e9;

export interface SdpaOptions {
  /** Bool or 0/1, 1 = may attend; [T, S], [B, T, S] or broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor | null;
  /** Query i sees key j iff j <= i + (S - T). Default false. */
  causal?: boolean;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /** Dropout rate on the attention probabilities, applied only when `training`. Default 0. */
  dropout?: number;
  /** Enables dropout. Default false. */
  training?: boolean;
  /** Seed for the dropout pattern. */
  seed?: number;
  /** Also return the attention probabilities [B, H, T, S] (before dropout). */
  returnWeights?: boolean;
}

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
  const dims = attentionDims(q, k, v);
  const {B, H, T, S, D} = dims;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new AttentionError('INVALID_CONFIG', `scale must be a finite number, received ${show(options.scale)}`);
  }
  const rate = options.dropout ?? 0;
  assertRate('dropout', rate);

  return tf.tidy(() => {
    const allowed = combineMasks(options.mask, options.causal ?? false, [B, H, T, S]);

    // 1. Logits, with the query heads of each kv group folded into rows.
    const qg = groupHeads(tf.mul(q, scale), dims);                 // [B, G, R*T, D]
    let logits = ungroupHeads(tf.matMul(qg, k, false, true), dims, T); // [B, H, T, S]

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
    const dropped = options.training && rate > 0 ? tf.dropout(weights, rate, undefined, options.seed) : weights;
    const out = tf.matMul(groupHeads(dropped, dims), v);           // [B, G, R*T, Dv]
    const output = ungroupHeads(out, dims, T) as tf.Tensor4D;      // [B, H, T, Dv]
    return options.returnWeights ? {output, weights: weights as tf.Tensor4D} : output;
  });
}
