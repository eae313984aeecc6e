/**
 * The key/value rows of exact attention's decoding cache: keys [B, G, length, D] and values
 * [B, G, length, Dv], grown as positions arrive (a new tensor each time: the old rows stay
 * valid until their owner disposes them). Growing costs one copy of the rows per step, the
 * same as reading them; a buffer of maxLength rows written in place would cost more in tfjs,
 * which has no in-place update (each write is a concat of the whole buffer).
 */
import * as tf from '@tensorflow/tfjs';
import {MASKED_LOGIT} from './masks';

/**
 * rows [B, G, L, X] cut to its first `index` rows, then x [B, G, t, X]: rows
 * 0 .. index + t - 1, what the new queries attend to and the cache keeps.
 */
export function appendRows(rows: tf.Tensor, x: tf.Tensor, index: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, G, L, X] = rows.shape as number[];
    if (index === 0) return tf.clone(x) as tf.Tensor4D;
    const kept = index === L ? rows : tf.slice(rows, [0, 0, 0, 0], [B, G, index, X]); // [B, G, index, X]
    return tf.concat([kept, x], 2) as tf.Tensor4D;                                   // [B, G, index + t, X]
  });
}

/**
 * A cached step computes by broadcasting (decodeAttention) when each key/value head serves
 * at most this many query rows (query heads per group x new positions): with more rows, a
 * matrix product amortises its packing and scaledDotProductAttention is faster (the
 * decoding timings are in docs/benchmarks.md).
 */
export const DECODE_BROADCAST_MAX_ROWS = 2;

/**
 * Exact causal attention of t new queries q [B, H, t, D] over every cached key k [B, G, S, D]
 * and value v [B, G, S, Dv] up to their own position (query i sees j <= i + S - t), for a
 * small t: the scores and the weighted sum are broadcast products summed over an axis, not
 * matrix products. A step's products are matrix-vector shaped, which tfjs-wasm's matMul
 * runs slowly (its fast path packs the whole key matrix on every call), so the broadcast
 * form is the faster one for a step of one or two rows per key/value head.
 * Holds one [B, H, t, S, max(D, Dv)] product at a time.
 */
export function decodeAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, H, t, D] = q.shape;
    const [, G, S] = k.shape;
    const Dv = v.shape[3];
    const R = H / G;
    // Query head h = g * R + r reads key/value head g: rows r * t + i of group g.
    const qg = tf.reshape(tf.mul(q, 1 / Math.sqrt(D)), [B, G, R * t, 1, D]);             // [B, G, R*t, 1, D]
    let logits = tf.sum(tf.mul(qg, tf.reshape(k, [B, G, 1, S, D])), -1);                 // [B, G, R*t, S]
    if (t > 1) {
      const penalty = new Float32Array(R * t * S);
      for (let r = 0; r < R; r++) {
        for (let i = 0; i < t; i++) penalty.fill(MASKED_LOGIT, (r * t + i) * S + (S - t + i + 1), (r * t + i + 1) * S);
      }
      logits = tf.add(logits, tf.tensor2d(penalty, [R * t, S]));
    }
    const p = tf.softmax(logits);                                                          // [B, G, R*t, S]
    const out = tf.sum(tf.mul(tf.reshape(p, [B, G, R * t, S, 1]),
      tf.reshape(v, [B, G, 1, S, Dv])), 3);                                                // [B, G, R*t, Dv]
    return tf.reshape(out, [B, H, t, Dv]) as tf.Tensor4D;                                 // [B, H, t, Dv]
  });
}
