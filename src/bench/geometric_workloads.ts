/**
 * The benchmark rows on point clouds (issue 33), each over N random 3-D points drawn
 * uniformly in a cube of side N^(1/3) (one point per unit volume, so a point's neighbours lie
 * at distance about 1 at every N) and their k = POINT_NEIGHBOURS nearest neighbours:
 *
 * - `knn-graph`: knnGraph(positions, k), the k-d tree search (forward only: edges are integers,
 *   with no gradient).
 * - `geometric`: geometricAttention (PointTransformerConv, per-channel attention, self loops
 *   added, h = Linear(3, C), gamma the identity: PyG's defaults) on F = C = 64 features; the
 *   kNN edges are made once in prepare, an input like the features. fwd+bwd: gradients for
 *   the features, the positions and the 6 weights.
 * - `equivariant`: equivariantAttention (EGNN with attention, mean coordinate aggregation,
 *   SiLU, residual) on F = U = 64 features over the same kNN graph; fwd+bwd: gradients for the
 *   features, the positions and the 13 weights, with a cotangent for each of its two outputs.
 *
 * Their shape (pointShape): B = H = G = 1, T = N points, S = E = N * min(k, N - 1) edges,
 * D = the feature width F (64), or d = 3 coordinates for knn-graph; `--points` sets N.
 *
 * The attention rows hold every intermediate [E, 64] tensor of a pass at once (tf.tidy keeps
 * them to its end), so their heap grows about linearly in E; wasmMaxT is the largest N whose
 * forward+backward was measured to fit in wasm's 4 GiB heap (docs/benchmarks.md). Larger N are
 * error rows on wasm: running out would abort the whole process.
 */
import * as tf from '@tensorflow/tfjs';
import {equivariantAttention, equivariantWeightShapes, EquivariantWeights} from '../ops/equivariant';
import {geometricAttention, GeometricWeights} from '../ops/geometric';
import {knnGraph} from '../ops/neighbours';
import {AttentionShape, Pass, PASSES} from './measure';
import type {Prepared, Workload} from './workload_types';

/** k of the point rows' kNN graphs. */
export const POINT_NEIGHBOURS = 16;
/** d: the points' coordinates. */
export const POINT_DIMS = 3;
/** F = C (geometric), F = U (equivariant): the feature width of the attention rows. */
export const POINT_FEATURES = 64;

/** The edges of N points' kNN graph: each point receives from its k nearest others. */
const edgeCount = (N: number) => N * Math.min(POINT_NEIGHBOURS, N - 1);

/** N points as a bench shape: B = H = G = 1, T = N, S = E (the kNN edges), D = `D`. */
const pointShape = (N: number, D: number): AttentionShape => ({B: 1, H: 1, G: 1, T: N, S: edgeCount(N), D});

/** positions [1, N, 3], uniform in a cube of side N^(1/3). */
const randomPoints = (N: number, seed: number): tf.Tensor3D =>
  tf.randomUniform([1, N, POINT_DIMS], 0, Math.cbrt(N), 'float32', seed) as tf.Tensor3D;

/** The number of values in a tensor of shape s. */
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** A [rows, cols] kernel of standard deviation 1 / sqrt(rows), or a [cols] bias of 0.1. */
const kernel = (shape: number[], seed: number) =>
  tf.randomNormal(shape, 0, shape.length === 2 ? 1 / Math.sqrt(shape[0]) : 0.1, 'float32', seed);

/**
 * The inputs of an attention row: features [1, N, F], positions and their kNN edges (made
 * here, outside the timed pass), `weights` from their shapes, and with fwd+bwd a cotangent
 * for each output shape in `outputs`. `run` maps (features, positions, ...weights) to the
 * outputs; fwd+bwd returns the gradients of sum(output * cotangent) for all of those.
 */
function preparePointRow({T: N, D: F}: AttentionShape, seed: number, passes: readonly Pass[],
                         weightShapes: number[][], outputs: number[][],
                         run: (edges: tf.Tensor, args: tf.Tensor[]) => tf.Tensor[]): Prepared {
  const positions = randomPoints(N, seed);
  const edges = knnGraph(positions, POINT_NEIGHBOURS);
  const features = tf.randomNormal([1, N, F], 0, 1, 'float32', seed + 1);
  const weights = weightShapes.map((s, i) => kernel(s, seed + 2 + i));
  const args = [features, positions, ...weights];
  const dys = passes.includes('fwd+bwd')
    ? outputs.map((s, i) => tf.randomNormal(s, 0, 1, 'float32', seed + 100 + i)) : [];
  const loss = (...a: tf.Tensor[]) => tf.addN(run(edges, a).map((y, i) => tf.sum(tf.mul(y, dys[i]))));
  return {
    pass: (p) => (p === 'fwd' ? () => run(edges, args) : () => tf.grads(loss)(args)),
    dispose: () => tf.dispose([...args, edges, ...dys]),
  };
}

/** Bytes (float32, int32 edges) of inputs, weights and outputs; fwd+bwd adds the cotangents and gradients. */
function pointFloor({T: N, S: E, D: F}: AttentionShape, pass: Pass, weights: number, outputs: number): number {
  const inputs = N * F + N * POINT_DIMS;
  const fwd = inputs + 2 * E + weights + outputs;
  return 4 * (pass === 'fwd' ? fwd : fwd + outputs + inputs + weights);
}

const knn: Workload = {
  description: `knnGraph: the k = ${POINT_NEIGHBOURS} nearest of N random 3-D points (k-d tree); N = T points, ` +
    'E = S edges, D = 3; fwd only, no FLOP count',
  passes: ['fwd'],
  flops: () => null,
  floorBytes: ({T: N, S: E}) => 4 * (N * POINT_DIMS + 2 * E),
  prepare({T: N}, seed) {
    const positions = randomPoints(N, seed);
    return {
      pass: (p) => (p === 'fwd' ? () => [knnGraph(positions, POINT_NEIGHBOURS)] : null),
      dispose: () => positions.dispose(),
    };
  },
};

/** geometricAttention's weights: W, W_src, W_dst [F, C], h's Linear(3, C), the bias [C]. */
const geometricWeightShapes = (F: number): number[][] =>
  [[F, F], [F, F], [F, F], [POINT_DIMS, F], [F], [F]];

const geometric: Workload = {
  description: 'geometricAttention (PointTransformerConv) over N random 3-D points and their kNN graph ' +
    `(k = ${POINT_NEIGHBOURS}, made outside the pass), F = C = 64 (D), N = T, E = S; fwd+bwd: gradients for ` +
    'features, positions and the 6 weights',
  passes: PASSES,
  wasmMaxT: 40_000,
  // The three projections [N, F] x [F, 3C], h on the E + N edges (self loops added) [K, 3] x [3, C],
  // and the messages alpha * (W x_j + delta_ij) summed: K rows of C. fwd+bwd: three times that.
  flops: ({T: N, S: E, D: F}, p) => {
    const K = E + N;
    return (p === 'fwd' ? 1 : 3) * (2 * N * F * 3 * F + 2 * K * POINT_DIMS * F + 2 * K * F);
  },
  floorBytes: (shape, p) => pointFloor(shape, p, geometricWeightShapes(shape.D).reduce((a, s) => a + size(s), 0),
    shape.T * shape.D),
  prepare(shape, seed, passes = PASSES) {
    const F = shape.D;
    return preparePointRow(shape, seed, passes, geometricWeightShapes(F), [[1, shape.T, F]], (edges, a) => {
      const [x, p, kernelW, source, target, posK, posB, bias] = a;
      const w: GeometricWeights = {kernel: kernelW, sourceKernel: source, targetKernel: target,
        positionKernels: [posK], positionBiases: [posB], bias};
      return [geometricAttention(x, p, edges, w)];
    });
  },
};

/** equivariantAttention's weights for F = U = units, no edge attributes or velocities, in getWeights() order. */
const equivariantShapes = (F: number) => equivariantWeightShapes(F, F, 0, F, false);

const equivariant: Workload = {
  description: `equivariantAttention (EGNN with attention) over the same kNN graph (k = ${POINT_NEIGHBOURS}), ` +
    'F = U = 64 (D), d = 3, N = T, E = S; fwd+bwd: gradients for features, positions and the 13 weights',
  passes: PASSES,
  wasmMaxT: 20_000,
  // The products: per node phi_e's first layer (its h_i and h_j halves) and phi_h's two layers; per
  // edge phi_e's second layer, the gate and phi_x's two layers. fwd+bwd: three times that.
  flops: ({T: N, S: E, D: F}, p) => {
    const U = F;
    const nodes = 2 * (2 * N * F * U) + 2 * N * (F + U) * U + 2 * N * U * F;
    const edges = 2 * E * U * U + 2 * E * U + 2 * E * U * U + 2 * E * U;
    return (p === 'fwd' ? 1 : 3) * (nodes + edges);
  },
  floorBytes: (shape, p) => pointFloor(shape, p, equivariantShapes(shape.D).reduce((a, [, s]) => a + size(s), 0),
    shape.T * (shape.D + POINT_DIMS)),
  prepare(shape, seed, passes = PASSES) {
    const F = shape.D;
    const shapes = equivariantShapes(F);
    return preparePointRow(shape, seed, passes, shapes.map(([, s]) => s), [[1, shape.T, F], [1, shape.T, POINT_DIMS]],
      (edges, [h, x, ...ws]) => {
        const w = Object.fromEntries(shapes.map(([key], i) => [key, ws[i]])) as unknown as EquivariantWeights;
        return equivariantAttention(h, x, edges, w);
      });
  },
};

/** The point rows, by name. */
export const POINT_WORKLOADS: Readonly<Record<string, Workload>> = {'knn-graph': knn, geometric, equivariant};

/** Each point row's shape for N points (see the file comment). */
export const POINT_SHAPES: Readonly<Record<string, (N: number) => AttentionShape>> = {
  'knn-graph': (N) => pointShape(N, POINT_DIMS),
  geometric: (N) => pointShape(N, POINT_FEATURES),
  equivariant: (N) => pointShape(N, POINT_FEATURES),
};
