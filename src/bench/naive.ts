/**
 * Attention as a tfjs user writes it by hand: repeat the key/value heads for
 * grouped-query attention, then matMul -> softmax -> matMul. The baseline every
 * other implementation in the benchmark is timed against. Deliberately independent
 * of src/ops, so it also serves as a cross-check of scaledDotProductAttention.
 */
import * as tf from '@tensorflow/tfjs';

/** [B, G, S, X] -> [B, G*R, S, X]: each key/value head repeated R times in place (repeat_interleave). */
export function repeatHeads(x: tf.Tensor, R: number): tf.Tensor {
  if (R === 1) return x;
  const [B, G, S, X] = x.shape;
  // tfjs has no gradient for rank-5 tile, so tile a [B, G, 1, S*X] view.
  const flat = tf.reshape(x, [B, G, 1, S * X]);               // [B, G, 1, S*X]
  const tiled = tf.tile(flat, [1, 1, R, 1]);                  // [B, G, R, S*X]
  return tf.reshape(tiled, [B, G * R, S, X]);                 // [B, H, S, X]
}

/** softmax(q k^T * scale) v for q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv]; returns [B, H, T, Dv]. */
export function naiveAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale?: number): tf.Tensor {
  return tf.tidy(() => {
    const [, H, , D] = q.shape as number[];
    const R = H / (k.shape as number[])[1];
    const kh = repeatHeads(k, R);                                   // [B, H, S, D]
    const vh = repeatHeads(v, R);                                   // [B, H, S, Dv]
    const s = scale ?? 1 / Math.sqrt(D);
    const logits = tf.mul(tf.matMul(q, kh, false, true), s);        // [B, H, T, S]
    return tf.matMul(tf.softmax(logits), vh);                       // [B, H, T, Dv]
  });
}
