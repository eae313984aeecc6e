/**
 * The key/value buffers of exact attention's decoding cache: [B, G, maxLength, D] keys and
 * [B, G, maxLength, Dv] values that new rows are written into (fresh tensors each time: the
 * old buffers stay valid until their owner disposes them).
 */
import * as tf from '@tensorflow/tfjs';

/** The tensors of a key/value cache: keys [B, G, L, D] and values [B, G, L, Dv] for L = maxLength. */
export type KvCacheTensors = {key: tf.Tensor4D; value: tf.Tensor4D};

/**
 * buf [B, G, L, X] with rows index .. index + t - 1 replaced by x [B, G, t, X]; also the
 * rows 0 .. index + t - 1 of the result (what the new queries attend to).
 */
export function writeRows(buf: tf.Tensor, x: tf.Tensor, index: number): {buffer: tf.Tensor4D; prefix: tf.Tensor4D} {
  return tf.tidy(() => {
    const [B, G, L, X] = buf.shape as number[];
    const t = x.shape[2] as number;
    const prefix = index === 0 ? x : tf.concat([tf.slice(buf, [0, 0, 0, 0], [B, G, index, X]), x], 2); // [B, G, index+t, X]
    const rest = L - index - t;
    const buffer = rest === 0 ? tf.clone(prefix)
      : tf.concat([prefix, tf.slice(buf, [0, 0, index + t, 0], [B, G, rest, X])], 2);                 // [B, G, L, X]
    return {buffer: buffer as tf.Tensor4D, prefix: (prefix === x ? tf.clone(x) : prefix) as tf.Tensor4D};
  });
}
