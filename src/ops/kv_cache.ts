/**
 * The key/value rows of exact attention's decoding cache: keys [B, G, length, D] and values
 * [B, G, length, Dv], grown as positions arrive (a new tensor each time: the old rows stay
 * valid until their owner disposes them). Growing costs one copy of the rows per step, the
 * same as reading them; a buffer of maxLength rows written in place would cost more in tfjs,
 * which has no in-place update (each write is a concat of the whole buffer).
 */
import * as tf from '@tensorflow/tfjs';

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
