/**
 * The input and output projections of the attention layers, as 2-D matmuls on
 * reshaped views (a 3-D x 2-D matMul has a broken gradient in tfjs 4.x), through
 * ops/matmul so that their backward pass uses 2-D non-transposed products too where the
 * backend rewards it (wasm).
 */
import * as tf from '@tensorflow/tfjs';
import {matMul} from '../ops/matmul';
import {zerosWithZeroGrads} from '../ops/zeros';

/** x [B, T, E] with kernel [E, N, X] and bias [N, X] -> heads [B, N, T, X]. */
export function projectToHeads(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, T, E] = x.shape as [number, number, number];
    const [, N, X] = kernel.shape as [number, number, number];
    // No rows (B or T = 0): zeros, without the transposes that divide by zero on wasm.
    if (B * T === 0) return zerosWithZeroGrads([B, N, T, X], [x, kernel, ...(bias != null ? [bias] : [])]) as tf.Tensor4D;
    let y = matMul(tf.reshape(x, [B * T, E]), tf.reshape(kernel, [E, N * X])); // [B*T, N*X]
    if (bias != null) y = tf.add(y, tf.reshape(bias, [N * X]));
    return tf.transpose(tf.reshape(y, [B, T, N, X]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, N, T, X]
  });
}

/** heads [B, H, T, Dv] with kernel [H, Dv, E] and bias [E] -> [B, T, E]. */
export function projectFromHeads(o: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, H, T, Dv] = o.shape as [number, number, number, number];
    const E = kernel.shape[2] as number;
    if (B * T === 0) return zerosWithZeroGrads([B, T, E], [o, kernel, ...(bias != null ? [bias] : [])]) as tf.Tensor3D;
    const flat = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B * T, H * Dv]); // [B*T, H*Dv]
    let y = matMul(flat, tf.reshape(kernel, [H * Dv, E]));              // [B*T, E]
    if (bias != null) y = tf.add(y, bias);
    return tf.reshape(y, [B, T, E]) as tf.Tensor3D;                        // [B, T, E]
  });
}
