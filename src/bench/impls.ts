/**
 * The attention implementations the benchmark knows. Each row maps a name (what
 * `--only` takes) to a description and a function with the ops' shared signature.
 * Adding an implementation to the benchmark is adding a row here.
 */
import * as tf from '@tensorflow/tfjs';
import {flashAttention} from '../ops/flash';
import {linearAttention} from '../ops/linear';
import {DEFAULT_CHUNK_SIZE} from '../ops/linear_prefix_sums';
import {localBlockSize, localGlobalAttention} from '../ops/local_global';
import {SparseMask} from '../ops/sparse_masks';
import {defaultNumFeatures, orthogonalProjection} from '../ops/random_features';
import {scaledDotProductAttention} from '../ops/sdpa';
import {FLEX_IMPLS} from './flex_impls';
import {naiveAttention} from './naive';
import {AttentionShape, Pass} from './measure';
import {BenchImpl} from './workload_types';

export {BenchImpl, BenchRunOptions} from './workload_types';

/**
 * The random features of the linear rows: M = round(D ln D), seed 0. The numbers are
 * drawn once per head dim and kept in JS; each run makes its own small tensor from them,
 * so runs leave no tensor behind.
 */
const projections = new Map<number, Float32Array>();
function projectionFor(D: number): tf.Tensor {
  let data = projections.get(D);
  if (data == null) {
    const p = orthogonalProjection(defaultNumFeatures(D), D, 0);
    data = p.dataSync() as Float32Array;
    p.dispose();
    projections.set(D, data);
  }
  return tf.tensor2d(data, [data.length / D, D]);
}

/** The local-global rows' setting: window 64 and 16 global positions spread evenly over T. */
export const LOCAL_GLOBAL_WINDOW = 64;
export const LOCAL_GLOBAL_NUM_GLOBALS = 16;
function globalsFor(T: number): number[] {
  return Array.from({length: LOCAL_GLOBAL_NUM_GLOBALS}, (_, i) => Math.floor((i * T) / LOCAL_GLOBAL_NUM_GLOBALS));
}

/**
 * The same local-global attention computed densely: two scaledDotProductAttention calls
 * with [T, T] masks from SparseMask (built once per length and kept in JS, as a user
 * would keep them) and the gate blend.
 */
const denseMasks = new Map<number, [Uint8Array, Uint8Array]>();
function localGlobalDense(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, gate: tf.Tensor, scale?: number): tf.Tensor {
  const T = q.shape[2] as number;
  let masks = denseMasks.get(T);
  if (masks == null) {
    const read = (m: tf.Tensor) => {
      const data = Uint8Array.from(m.dataSync() as ArrayLike<number>);
      m.dispose();
      return data;
    };
    masks = [read(SparseMask.localWindow(T, LOCAL_GLOBAL_WINDOW)), read(SparseMask.globalIndices(T, globalsFor(T)))];
    denseMasks.clear(); // one length at a time: these are T * T bytes each
    denseMasks.set(T, masks);
  }
  const [local, global] = masks.map((m) => tf.tensor2d(m, [T, T], 'bool'));
  const H = q.shape[1] as number;
  const s = tf.reshape(tf.sigmoid(gate), [1, H, 1, -1]);
  return tf.add(tf.mul(s, scaledDotProductAttention(q, k, v, {scale, mask: local})),
    tf.mul(tf.sub(1, s), scaledDotProductAttention(q, k, v, {scale, mask: global})));
}

/**
 * The products localGlobalAttention computes for the local-global rows: per query block of
 * b = localBlockSize(W) positions, the keys of the tiles it sees, clipped to [t0 - W, t0 + b +
 * W) (or t0 + b when causal), masked entries included; and the Ng global keys for every
 * query. Each (query, key) pair costs two products of D multiply-adds in the forward (q k^T,
 * p v) and five more in the backward (the scores again, dV, dP, dQ, dK).
 */
export function localGlobalFlops({B, H, T, D}: AttentionShape, pass: Pass, causal = false): number {
  const W = Math.min(LOCAL_GLOBAL_WINDOW, T - 1);
  const b = Math.min(localBlockSize(W), T);
  let pairs = 0;
  for (let t0 = 0; t0 < T; t0 += b) {
    const bq = Math.min(b, T - t0);
    pairs += bq * (Math.min(T, t0 + bq + (causal ? 0 : W)) - Math.max(0, t0 - W));
  }
  pairs += T * new Set(globalsFor(T)).size;
  return (pass === 'fwd' ? 2 : 7) * 2 * B * H * pairs * D;
}

/**
 * The products linearAttention computes for the linear rows (M = round(D ln D) features,
 * X = D + 1 columns of [v, 1]), per batch entry and key/value group with R query heads:
 * forward, the query and key features (R T + S) D M and the state products (R T + S) M X;
 * backward, the features again, dq's and the state's products 2 (R T + S) M X, and the
 * features' gradients and the projection's 2 (R T + S) D M. Causal adds, per chunk of n
 * queries over its n keys, the masked in-chunk products: 2 (R n n (M + X)) forward, and in the
 * backward the in-chunk products of dq (R n n (M + X)), of dk and dv (2 R n n (M + X)) and the
 * recomputed scores (R n n M), with the running state carried once more (S M X).
 */
export function linearFlops({B, H, G, T, S, D}: AttentionShape, pass: Pass, causal = false): number {
  const M = defaultNumFeatures(D);
  const X = D + 1;
  const R = H / G;
  const rows = R * T + S;
  let fwd = rows * D * M + rows * M * X;
  let bwd = rows * D * M + 2 * rows * M * X + 2 * rows * D * M;
  if (causal) {
    const n = Math.min(DEFAULT_CHUNK_SIZE, T);
    const inChunk = R * T * n; // query-key pairs inside chunks (the last chunk counted full)
    fwd += inChunk * (M + X);
    bwd += 3 * inChunk * (M + X) + inChunk * M + S * M * X;
  }
  return 2 * B * G * (pass === 'fwd' ? fwd : fwd + bwd);
}

/** The gate of the local-global rows: zeros [H, Dv], an even blend (a layer's initial gate). */
const evenGate = (q: tf.Tensor, v: tf.Tensor) => tf.zeros([q.shape[1] as number, v.shape[3] as number]);

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
  linear: {
    description: 'linearAttention: FAVOR+ random features, M = round(D ln D); approximate, linear in T',
    run: (q, k, v, {scale}) => linearAttention(q, k, v, {scale, projection: projectionFor(q.shape[3] as number)}),
    performedFlops: (shape, pass) => linearFlops(shape, pass),
  },
  'linear-causal': {
    description: 'linearAttention with causal: true (chunked prefix sums)',
    run: (q, k, v, {scale}) =>
      linearAttention(q, k, v, {scale, causal: true, projection: projectionFor(q.shape[3] as number)}),
    performedFlops: (shape, pass) => linearFlops(shape, pass, true),
  },
  'local-global': {
    description: `localGlobalAttention: window ${LOCAL_GLOBAL_WINDOW}, ${LOCAL_GLOBAL_NUM_GLOBALS} global positions, ` +
      'even gate; banded blocks, O(T*(W+Ng))',
    run: (q, k, v, {scale}) => localGlobalAttention(q, k, v, {
      scale, windowSize: LOCAL_GLOBAL_WINDOW, globalIndices: globalsFor(q.shape[2] as number), gate: evenGate(q, v)}),
    performedFlops: (shape, pass) => localGlobalFlops(shape, pass),
  },
  'local-global-dense': {
    description: 'the same local-global attention from two dense [T, T] SparseMask masks and sdpa (the baseline)',
    run: (q, k, v, {scale}) => localGlobalDense(q, k, v, evenGate(q, v), scale),
  },
  ...FLEX_IMPLS,
};

export const IMPL_NAMES: readonly string[] = Object.keys(IMPLS);
