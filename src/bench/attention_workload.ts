/**
 * An attention implementation of IMPLS as a benchmark workload: its inputs q, k, v (and
 * the cotangent dy) made from a seed, and its fwd and fwd+bwd passes. The suite (run.ts)
 * and the heap's child process (heap.ts) both build their attention rows with it.
 */
import * as tf from '@tensorflow/tfjs';
import {BenchImpl} from './impls';
import {AttentionShape, Pass, PASSES, PassFn, attentionFloorBytes, attentionFlops} from './measure';
import {Workload} from './workloads';

/** An attention implementation as a workload on q, k, v with cotangent dy. */
export function attentionWorkload(impl: BenchImpl): Workload {
  return {
    description: impl.description,
    passes: PASSES,
    flops: attentionFlops,
    ...(impl.performedFlops != null ? {performedFlops: impl.performedFlops} : {}),
    ...(impl.computedFraction != null ? {computedFraction: impl.computedFraction} : {}),
    floorBytes: attentionFloorBytes,
    prepare(shape, seed, passes = PASSES) {
      const inputs = makeInputs(shape, seed, passes.includes('fwd+bwd'));
      return {pass: (p) => passFn(impl, p, inputs), dispose: () => tf.dispose(inputs)};
    },
  };
}

/** q [B, H, T, D], k and v [B, G, S, D], and (withCotangent) the cotangent dy [B, H, T, D]. */
function makeInputs({B, H, G, T, S, D}: AttentionShape, seed: number, withCotangent: boolean): tf.Tensor[] {
  const shapes = [[B, H, T, D], [B, G, S, D], [B, G, S, D], ...(withCotangent ? [[B, H, T, D]] : [])];
  return shapes.map((s, i) => tf.randomNormal(s, 0, 1, 'float32', seed + i));
}

/**
 * fwd: the output. fwd+bwd: the gradients for q, k, v of the output with cotangent dy
 * (d/d(q, k, v) of sum(output * dy)), dy handed to tf.grads as the output's gradient, so the
 * pass holds no loss tensors of its own.
 */
function passFn(impl: BenchImpl, pass: Pass, [q, k, v, dy]: tf.Tensor[]): PassFn {
  if (pass === 'fwd') return () => [impl.run(q, k, v, {})];
  const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => impl.run(a, b, c, {});
  return () => tf.grads(f)([q, k, v], dy);
}
