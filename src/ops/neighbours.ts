/**
 * Graphs from point clouds, in the library's edge format: radiusGraph (the edges within a
 * distance r, PyTorch Geometric's radius_graph) and knnGraph (the edges from the k nearest
 * points, PyG's knn_graph), both with flow source_to_target as PyG: row [j, i] means node i
 * receives from j.
 *
 * Positions [B, N, d] float32 are one point cloud per batch entry (padding points are the
 * caller's to leave out: a graph is all N points of its entry). They are read back to
 * JavaScript once (dataSync) and searched with a k-d tree per graph (./kd_tree): they are
 * inputs, never differentiated, and the edges are integers with no gradient. Cost per graph:
 * O(d N log N) time to build the tree, about O(log N + m log m) per query for m = k or
 * maxNeighbors with well-spread points in low d (more in high d, or when many points are at
 * equal distance), O(N d) memory for the tree; the output is O(B * N * m) int32. No N x N
 * tensor or array is ever made.
 *
 * Distances are float64, sqrt(sum over c of (p_ic - p_jc)^2) from the float32 coordinates.
 * Edges into each target are chosen and ordered by (distance, source index): a tie goes to
 * the lower index, so the result is deterministic. Rows are sorted by target ascending,
 * then distance, then source; each graph's rows come first and padding [-1, -1] fills the
 * rest up to E, the largest edge count in the batch (E = 0 when no graph has an edge).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, assertPositiveInt, checkArgNames, ForeignName, NULL_OR_FALSE} from '../core/validate';
import {KdTree, squaredLimit} from './kd_tree';

export interface RadiusGraphOptions {
  /**
   * The most edges into one target: its maxNeighbors nearest sources within r are kept (ties
   * to the lower index). Default 32, as PyG's max_num_neighbors, whose CPU version keeps an
   * arbitrary subset of the neighbours instead of the nearest.
   */
  maxNeighbors?: number;
  /**
   * Include the edge i -> i of every node (its distance 0 is within any r), unless maxNeighbors
   * is filled by duplicates of i with lower indices (distance 0 too: ties go to the lower index).
   * Default false.
   */
  loop?: boolean;
}

export interface KnnGraphOptions {
  /** Let a node be one of its own k nearest (at distance 0, so it counts among the k). Default false. */
  loop?: boolean;
}

/** The option names radiusGraph and knnGraph take. */
export const RADIUS_GRAPH_OPTIONS = ['maxNeighbors', 'loop'] as const;
export const KNN_GRAPH_OPTIONS = ['loop'] as const;

/** Default maxNeighbors of radiusGraph (PyG's max_num_neighbors). */
export const DEFAULT_MAX_NEIGHBORS = 32;

/** PyG's arguments of radius_graph and knn_graph, with what to use here. */
const PYG_NAMES: Readonly<Record<string, ForeignName>> = {
  batch: {code: 'INVALID_CONFIG', inert: (v) => v == null,
    advice: 'the graphs are the first dimension of positions [B, N, d], one point cloud per batch entry'},
  flow: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 'source_to_target',
    advice: "edges are always [source j, target i] with i receiving from j (PyG's 'source_to_target')"},
  cosine: {code: 'UNSUPPORTED', inert: NULL_OR_FALSE, advice: 'distances are Euclidean'},
};

const RADIUS_NAMES: Readonly<Record<string, ForeignName>> = {
  ...PYG_NAMES,
  maxNumNeighbors: {code: 'INVALID_CONFIG', advice: "did you mean 'maxNeighbors'?"},
  max_num_neighbors: {code: 'INVALID_CONFIG', advice: "did you mean 'maxNeighbors'?"},
};

const KNN_NAMES: Readonly<Record<string, ForeignName>> = {
  ...PYG_NAMES,
  k: {code: 'INVALID_CONFIG', advice: 'k is the second argument: knnGraph(positions, k, options)'},
  maxNeighbors: {code: 'INVALID_CONFIG', advice: 'k, the second argument of knnGraph(positions, k), is the count per node'},
};

/** Checks positions is a float32 [B, N, d] tensor with d >= 1 and returns its shape. */
function checkPositions(who: string, positions: tf.Tensor): [number, number, number] {
  if (!(positions instanceof tf.Tensor)) {
    throw new AttentionError('INVALID_CONFIG', `${who}: positions must be a tf.Tensor [B, N, d], received ${show(positions)}`);
  }
  if (positions.dtype !== 'float32') {
    throw new AttentionError('INVALID_CONFIG', `${who}: positions must be float32, received dtype ${positions.dtype}`);
  }
  if (positions.rank !== 3) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${who}: positions must have rank 3 ([batch, points, coordinates]), received shape ${show(positions.shape)}`);
  }
  const [B, N, d] = positions.shape as [number, number, number];
  if (d < 1) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${who}: positions need at least one coordinate (d >= 1), received shape ${show(positions.shape)}`);
  }
  return [B, N, d];
}

/** The positions as numbers, refusing the first point with a NaN or infinite coordinate. */
function readPositions(who: string, positions: tf.Tensor, N: number, d: number): Float32Array {
  const data = positions.dataSync() as Float32Array;
  for (let x = 0; x < data.length; x++) {
    if (!Number.isFinite(data[x])) {
      const point = Math.floor(x / d);
      const b = Math.floor(point / N);
      const n = point % N;
      const coords = Array.from(data.subarray(point * d, point * d + d));
      throw new AttentionError('INVALID_CONFIG',
        `${who}: positions[${b}][${n}] is ${show(coords)}: every coordinate must be a finite number`);
    }
  }
  return data;
}

/**
 * Per graph: the edges into each node from its at most `cap` nearest points within squared
 * distance `limit`, as [B, E, 2] int32 rows [source, target] (see the file comment).
 */
function nearestGraph(data: Float32Array, B: number, N: number, d: number, cap: number, limit: number,
                      loop: boolean): tf.Tensor3D {
  cap = Math.min(cap, loop ? N : N - 1);
  const out: Int32Array[] = [];
  let E = 0;
  for (let b = 0; b < B && cap > 0; b++) {
    const tree = new KdTree(data, b * N * d, N, d);
    // Queried in tree order (so consecutive queries search the same part of the tree): node i's
    // sources lie at sources[start[i] ...], count[i] of them, in a buffer grown as they are found.
    let sources = new Int32Array(Math.min(N * cap, 1024) + cap);
    const start = new Int32Array(N);
    const count = new Int32Array(N);
    let total = 0;
    for (let pos = 0; pos < N; pos++) {
      if (total + cap > sources.length) {
        const grown = new Int32Array(Math.max(2 * sources.length, total + cap));
        grown.set(sources.subarray(0, total));
        sources = grown;
      }
      const i = tree.ids[pos];
      start[i] = total;
      count[i] = tree.nearest(pos, cap, limit, loop, sources, total);
      total += count[i];
    }
    // Rows [source, target] by target.
    const rows = new Int32Array(2 * total);
    for (let i = 0, row = 0; i < N; i++) {
      for (let k = 0; k < count[i]; k++, row++) {
        rows[row * 2] = sources[start[i] + k];
        rows[row * 2 + 1] = i;
      }
    }
    out.push(rows);
    E = Math.max(E, total);
  }
  const edges = new Int32Array(B * E * 2).fill(-1);
  out.forEach((rows, b) => edges.set(rows, b * E * 2));
  return tf.tensor3d(edges, [B, E, 2], 'int32');
}

/**
 * The radius graph of each point cloud: an edge j -> i (row [j, i]) for every pair with
 * ||p_i - p_j|| <= r (inclusive, in float64), at most maxNeighbors into each target (its
 * nearest, ties to the lower source index), no i -> i unless loop. PyG's radius_graph with
 * flow 'source_to_target', except that its CPU version keeps an arbitrary subset of a node's
 * neighbours past max_num_neighbors where this keeps the nearest.
 *
 * Positions are read back once and never differentiated. Cost: O(d N log N) per graph to build
 * a k-d tree, about O(log N + m log m) per node (m = maxNeighbors) for well-spread points in
 * low dimension, O(N d) working memory, O(B * N * m) for the output: never N x N.
 *
 * @param positions [B, N, d] float32, d >= 1: one point cloud per batch entry.
 * @param r the radius, a finite number >= 0 (r = 0 links only points at the same place).
 * @returns edges [B, E, 2] int32, rows [source, target] sorted by target, distance, source;
 *   padding [-1, -1]; E the largest edge count of the batch's graphs ([B, 0, 2] with none).
 */
export function radiusGraph(positions: tf.Tensor, r: number, options: RadiusGraphOptions = {}): tf.Tensor3D {
  options = options ?? {};
  checkArgNames('radiusGraph', options, RADIUS_GRAPH_OPTIONS, RADIUS_NAMES);
  const [B, N, d] = checkPositions('radiusGraph', positions);
  if (typeof r !== 'number' || !Number.isFinite(r) || r < 0) {
    throw new AttentionError('INVALID_CONFIG', `radiusGraph: r must be a finite number >= 0, received ${show(r)}`);
  }
  const maxNeighbors = options.maxNeighbors ?? DEFAULT_MAX_NEIGHBORS;
  assertPositiveInt('maxNeighbors', maxNeighbors);
  const loop = options.loop ?? false;
  assertBoolean('loop', loop);
  const data = readPositions('radiusGraph', positions, N, d);
  return nearestGraph(data, B, N, d, maxNeighbors, squaredLimit(r), loop);
}

/**
 * The k-nearest-neighbour graph of each point cloud: edges j -> i (rows [j, i]) from the k
 * points nearest to i (ties to the lower index), i itself left out unless loop; with loop,
 * i is at distance 0 and counts among its k (as PyG's knn_graph with loop=True), but a
 * duplicate of i with a lower index comes before it. A graph with fewer than k candidates
 * gives all of them.
 *
 * Positions are read back once and never differentiated. Cost: O(d N log N) per graph to build
 * a k-d tree, about O(log N + k log k) per node for well-spread points in low dimension,
 * O(N d) working memory, O(B * N * k) for the output: never N x N.
 *
 * @param positions [B, N, d] float32, d >= 1: one point cloud per batch entry.
 * @param k the number of sources per node, a positive integer.
 * @returns edges [B, E, 2] int32 (E <= N * k), rows [source, target] sorted by target,
 *   distance, source; padding [-1, -1]; [B, 0, 2] when no graph has an edge.
 */
export function knnGraph(positions: tf.Tensor, k: number, options: KnnGraphOptions = {}): tf.Tensor3D {
  options = options ?? {};
  checkArgNames('knnGraph', options, KNN_GRAPH_OPTIONS, KNN_NAMES);
  const [B, N, d] = checkPositions('knnGraph', positions);
  assertPositiveInt('k', k);
  const loop = options.loop ?? false;
  assertBoolean('loop', loop);
  const data = readPositions('knnGraph', positions, N, d);
  return nearestGraph(data, B, N, d, k, Infinity, loop);
}
