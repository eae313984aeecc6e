/**
 * Dense products and layer normalization over the last axis, each as one custom-gradient
 * op: the forward keeps its intermediates (flattened views, pre-activation sums, centred
 * inputs) inside the op, and the backward computes the input, weight and bias gradients
 * directly. Under autograd each op leaves one output and its few saved tensors on the tape,
 * where tfjs's own layers leave every reshape, product, bias sum, activation, mean and
 * variance, and the gradient of each of them: a transformer block's training step keeps about
 * a third of the tensor bytes (see README, "Training steps").
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {COLUMN_SUMS, hasLibraryKernel} from '../kernels/library_kernels';
import {matMul} from './matmul';
import {zerosWithZeroGrads} from './zeros';

/** The activations a dense op fuses. */
export const DENSE_ACTIVATIONS = ['linear', 'relu'] as const;
export type DenseActivation = typeof DENSE_ACTIVATIONS[number];

type GradFn = Parameters<typeof tf.customGrad>[0];

/** x [..., K] as a 2-D [rows, K] view: its leading axes folded into the rows. */
function asMatrix(x: tf.Tensor): tf.Tensor2D {
  const shape = x.shape as number[];
  return tf.reshape(x, [shape.slice(0, -1).reduce((a, d) => a * d, 1), shape[shape.length - 1]]) as tf.Tensor2D;
}

/**
 * The sums of the columns of g [R, N] -> [N]: the library's loop (library_kernels.ts) where
 * the backend has it (wasm, cpu), else the product ones [1, R] x g (on wasm a product runs
 * faster than tfjs-wasm's Sum over the first axis, and the loop faster than the product).
 */
export function columnSums(g: tf.Tensor2D): tf.Tensor1D {
  if (g.dtype === 'float32' && hasLibraryKernel(COLUMN_SUMS)) return tf.engine().runKernel(COLUMN_SUMS, {x: g}, {}) as tf.Tensor1D;
  return tf.tidy(() => tf.reshape(matMul(tf.ones([1, g.shape[0]]), g), [g.shape[1]]) as tf.Tensor1D);
}

/**
 * act(x W + b) over the last axis: x [..., K], kernel [K, N], bias [N] or null ->
 * [..., N]. Saves x and the kernel (and the output for relu) for the backward.
 */
export function dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null, activation: DenseActivation = 'linear'): tf.Tensor {
  if (kernel.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== kernel.shape[0] ||
      (bias != null && (bias.rank !== 1 || bias.shape[0] !== kernel.shape[1]))) {
    throw new AttentionError('DIMENSION_MISMATCH', `dense: input ${show(x.shape)}, kernel ${show(kernel.shape)} and bias ` +
      `${show(bias?.shape ?? null)} do not fit: x [..., K], kernel [K, N], bias [N]`);
  }
  if (!DENSE_ACTIVATIONS.includes(activation)) {
    throw new AttentionError('INVALID_CONFIG', `dense: activation must be one of ${DENSE_ACTIVATIONS.join(', ')}, received ${show(activation)}`);
  }
  const N = kernel.shape[1] as number;
  const outShape = [...x.shape.slice(0, -1), N];
  const inputs = bias != null ? [x, kernel, bias] : [x, kernel];
  if (x.size === 0 || kernel.size === 0) {
    // No rows, or nothing summed: zeros (plus the activation of the bias when K is 0).
    if (x.size !== 0 || bias == null || outShape.includes(0)) return zerosWithZeroGrads(outShape, inputs);
  }
  const relu = activation === 'relu';
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [xx, w, b] = args as tf.Tensor[];
    let y: tf.Tensor = matMul(asMatrix(xx), w);
    if (b != null) y = tf.add(y, b);
    if (relu) y = tf.relu(y);
    const out = tf.reshape(y, outShape);
    save(relu ? [xx, w, out] : [xx, w]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const [sx, sw, sy] = saved;
        let g: tf.Tensor = asMatrix(dy);                                  // [rows, N]
        if (relu) g = tf.mul(g, tf.step(asMatrix(sy)));
        const dx = tf.reshape(matMul(g, sw, false, true), sx.shape);   // g W^T
        const dw = matMul(asMatrix(sx), g, true, false);               // x^T g
        return b != null ? [dx, dw, columnSums(g as tf.Tensor2D)] : [dx, dw];
      }),
    };
  }) as unknown as GradFn) as unknown as (...t: tf.Tensor[]) => tf.Tensor;
  return f(...inputs);
}

/**
 * Layer normalization over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta,
 * x [..., E], gamma and beta [E] or null. Saves x, gamma and the per-row mean and
 * 1 / sqrt(var + epsilon) for the backward.
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor | null, beta: tf.Tensor | null, epsilon = 1e-3): tf.Tensor {
  if (x.rank < 1) {
    throw new AttentionError('DIMENSION_MISMATCH', 'layerNorm: input must be [..., features], received a scalar');
  }
  const E = x.shape[x.rank - 1];
  for (const [name, w] of [['gamma', gamma], ['beta', beta]] as const) {
    if (w != null && (w.rank !== 1 || w.shape[0] !== E)) {
      throw new AttentionError('DIMENSION_MISMATCH', `layerNorm: ${name} must be [${E}] for input ${show(x.shape)}, received ${show(w.shape)}`);
    }
  }
  if (!(typeof epsilon === 'number' && epsilon > 0 && Number.isFinite(epsilon))) {
    throw new AttentionError('INVALID_CONFIG', `layerNorm: epsilon must be a positive number, received ${show(epsilon)}`);
  }
  const inputs = [x, ...(gamma != null ? [gamma] : []), ...(beta != null ? [beta] : [])];
  if (x.size === 0) return zerosWithZeroGrads(x.shape, inputs);
  const normalize = (xx: tf.Tensor, mean: tf.Tensor, rstd: tf.Tensor) => tf.mul(tf.sub(xx, mean), rstd);
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [xx, ...rest] = args as tf.Tensor[];
    const g = gamma != null ? rest[0] : null;
    const b = beta != null ? rest[gamma != null ? 1 : 0] : null;
    const mean = tf.mean(xx, -1, true);
    const centred = tf.sub(xx, mean);
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(centred), -1, true), epsilon));
    let y: tf.Tensor = tf.mul(centred, rstd);
    if (g != null) y = tf.mul(y, g);
    if (b != null) y = tf.add(y, b);
    save(g != null ? [xx, mean, rstd, g] : [xx, mean, rstd]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const [sx, sm, sr, sg] = saved;
        const xhat = normalize(sx, sm, sr);
        const dxhat = sg != null ? tf.mul(dy, sg) : dy;
        // d/dx of (x - mean) * rstd: rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
        const dx = tf.mul(sr, tf.sub(tf.sub(dxhat, tf.mean(dxhat, -1, true)),
          tf.mul(xhat, tf.mean(tf.mul(dxhat, xhat), -1, true))));
        const grads = [dx];
        if (sg != null) grads.push(columnSums(asMatrix(tf.mul(dy, xhat))));
        if (b != null) grads.push(columnSums(asMatrix(dy)));
        return grads;
      }),
    };
  }) as unknown as GradFn) as unknown as (...t: tf.Tensor[]) => tf.Tensor;
  return f(...inputs);
}
