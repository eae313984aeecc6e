/**
 * Results of computations that have nothing to compute (an empty batch, no queries, no
 * keys): zeros that autograd still connects to the inputs, with zero gradients. No kernel
 * runs on an empty tensor (several wasm kernels, transpose and batched matMul among them,
 * divide by zero on one).
 */
import * as tf from '@tensorflow/tfjs';

/** Zeros of `shape` whose gradient with respect to each of `inputs` is zeros of that input's shape. */
export function zerosWithZeroGrads(shape: number[], inputs: tf.Tensor[]): tf.Tensor {
  const f = tf.customGrad(((...args: tf.Tensor[]) => ({
    value: tf.zeros(shape),
    gradFunc: () => args.slice(0, inputs.length).map((a) => tf.zeros(a.shape)),
  })) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...t: tf.Tensor[]) => tf.Tensor;
  return f(...inputs);
}
