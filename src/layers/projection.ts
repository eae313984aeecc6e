/**
 * The input and output projections of the attention layers, each one custom-gradient op
 * (so a training step's tape holds the projected heads and the saved input, not every
 * reshape, product, bias sum and transpose with its gradient), computed as 2-D products
 * through ops/matmul so that the backward uses the backend's fast product path too.
 */
import * as tf from '@tensorflow/tfjs';
import {columnSums} from '../ops/dense';
import {matMul} from '../ops/matmul';
import {zerosWithZeroGrads} from '../ops/zeros';

type GradFn = Parameters<typeof tf.customGrad>[0];
type Op = (...t: tf.Tensor[]) => tf.Tensor;

/** x [B, T, E] with kernel [E, N, X] and bias [N, X] -> heads [B, N, T, X]. */
export function projectToHeads(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor4D {
  const [B, T, E] = x.shape as [number, number, number];
  const [, N, X] = kernel.shape as [number, number, number];
  const inputs = bias != null ? [x, kernel, bias] : [x, kernel];
  // No rows (B or T = 0): zeros, without the transposes that divide by zero on wasm.
  if (B * T === 0) return zerosWithZeroGrads([B, N, T, X], inputs) as tf.Tensor4D;
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [xx, w, b] = args as tf.Tensor[];
    let y = matMul(tf.reshape(xx, [B * T, E]), tf.reshape(w, [E, N * X])); // [B*T, N*X]
    if (b != null) y = tf.add(y, tf.reshape(b, [N * X]));
    save([xx, w]);
    return {
      value: tf.transpose(tf.reshape(y, [B, T, N, X]), [0, 2, 1, 3]), // [B, N, T, X]
      gradFunc: (dy: tf.Tensor, [sx, sw]: tf.Tensor[]) => tf.tidy(() => {
        const g = tf.reshape(tf.transpose(dy, [0, 2, 1, 3]), [B * T, N * X]);
        const dx = tf.reshape(matMul(g, tf.reshape(sw, [E, N * X]), false, true), [B, T, E]);
        const dw = tf.reshape(matMul(tf.reshape(sx, [B * T, E]), g, true, false), [E, N, X]);
        return b != null ? [dx, dw, tf.reshape(columnSums(g as tf.Tensor2D), [N, X])] : [dx, dw];
      }),
    };
  }) as unknown as GradFn) as unknown as Op;
  return f(...inputs) as tf.Tensor4D;
}

/** heads [B, H, T, Dv] with kernel [H, Dv, E] and bias [E] -> [B, T, E]. */
export function projectFromHeads(o: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor3D {
  const [B, H, T, Dv] = o.shape as [number, number, number, number];
  const E = kernel.shape[2] as number;
  const inputs = bias != null ? [o, kernel, bias] : [o, kernel];
  if (B * T === 0) return zerosWithZeroGrads([B, T, E], inputs) as tf.Tensor3D;
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [oo, w, b] = args as tf.Tensor[];
    const flat = tf.reshape(tf.transpose(oo, [0, 2, 1, 3]), [B * T, H * Dv]); // [B*T, H*Dv]
    let y = matMul(flat, tf.reshape(w, [H * Dv, E]));                          // [B*T, E]
    if (b != null) y = tf.add(y, b);
    save([flat, w]); // the backward needs the heads in this layout, not o's
    return {
      value: tf.reshape(y, [B, T, E]),
      gradFunc: (dy: tf.Tensor, [sflat, sw]: tf.Tensor[]) => tf.tidy(() => {
        const g = tf.reshape(dy, [B * T, E]);
        const dflat = matMul(g, tf.reshape(sw, [H * Dv, E]), false, true);   // [B*T, H*Dv]
        const dO = tf.transpose(tf.reshape(dflat, [B, T, H, Dv]), [0, 2, 1, 3]);
        const dw = tf.reshape(matMul(sflat, g, true, false), [H, Dv, E]);
        return b != null ? [dO, dw, columnSums(g as tf.Tensor2D)] : [dO, dw];
      }),
    };
  }) as unknown as GradFn) as unknown as Op;
  return f(...inputs) as tf.Tensor3D;
}
