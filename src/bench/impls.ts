/**
 * The attention implementations the benchmark knows. Each row maps a name (what
 * `--only` takes) to a description and a function with the ops' shared signature.
 * Adding an implementation to the benchmark is adding a row here.
 */
import * as tf from '@tensorflow/tfjs';
import {flashAttention} from '../ops/flash';
import {scaledDotProductAttention} from '../ops/sdpa';
import {naiveAttention} from './naive';

/** Options every implementation receives; all are optional so defaults match the ops. */
export interface BenchRunOptions {
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
}

export interface BenchImpl {
  /** One line for `--help` and the report. */
  description: string;
  /** q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] -> [B, H, T, Dv]. Must be differentiable. */
  run(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: BenchRunOptions): tf.Tensor;
}

export const IMPLS: Readonly<Record<string, BenchImpl>> = {
  naive: {
    description: 'hand-written tf ops: repeat kv heads, matMul -> softmax -> matMul',
    run: (q, k, v, {scale}) => naiveAttention(q, k, v, scale),
  },
  sdpa: {
    description: 'scaledDotProductAttention (GQA by folding heads into rows, no repeat)',
    run: (q, k, v, {scale}) => scaledDotProductAttention(q, k, v, {scale}),
  },
  // The causal rows compare flash with sdpa on the same semantics: both mask the
  // same keys, but flash also skips the key tiles that lie wholly after a query tile.
  'sdpa-causal': {
    description: 'scaledDotProductAttention with causal: true (the baseline for flash-causal)',
    run: (q, k, v, {scale}) => scaledDotProductAttention(q, k, v, {scale, causal: true}),
  },
  flash: {
    description: 'flashAttention: tiled online softmax, memory linear in T (default blockSize)',
    run: (q, k, v, {scale}) => flashAttention(q, k, v, {scale}),
  },
  'flash-causal': {
    description: 'flashAttention with causal: true (skips key tiles after the query tile)',
    run: (q, k, v, {scale}) => flashAttention(q, k, v, {scale, causal: true}),
  },
};

export const IMPL_NAMES: readonly string[] = Object.keys(IMPLS);
