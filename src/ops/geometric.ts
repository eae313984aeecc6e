/**
 * Geometric attention over edge lists with positions: PyTorch Geometric's PointTransformerConv
 * (Zhao et al. 2021, "Point Transformer"), in O(E * C) memory: never an N x N tensor.
 *
 * For a batch of graphs padded to N nodes and E edges, features x [B, N, F], positions
 * p [B, N, d] and edges [B, E, 2] int32 (source j, target i; padding [-1, -1]):
 *   delta_ij = h(p_i - p_j)                                   (h: an MLP d -> C)
 *   a_ij     = gamma(W_dst x_i - W_src x_j + delta_ij)         (gamma: identity, or an MLP C -> C or H)
 *   alpha_ij = the softmax of a_ij over the edges j -> i coming into i, per channel
 *   x'_i     = sum_j alpha_ij * (W x_j + delta_ij)              (elementwise), plus the bias
 * W = kernel, W_src = sourceKernel, W_dst = targetKernel: [F, C], no bias (as PyG's lin,
 * lin_src, lin_dst). h and gamma are MLPs of Linear layers with a bias each and ReLU between
 * them (the activation of PyG's examples and of the paper); h is one Linear(d, C) by default
 * (PyG's pos_nn), gamma the identity (PyG's attn_nn None). Aggregation is the sum (PyG's aggr
 * 'add'). The output depends on positions only through p_i - p_j, so it is invariant to a
 * translation of all positions; it is not rotation-equivariant (h sees raw offsets).
 *
 * The softmax cancels what shifts all of a node's logits alike: gamma's last bias never
 * changes the output, nor does W_dst when gamma is affine (the identity, PyG's default, or one
 * Linear); their gradients are zero. They are kept so that PyG's parameters map one to one.
 *
 * Heads (numHeads H, not in PyG): gamma's last layer outputs H logits per edge, the softmax
 * is per head, and each group of C / H consecutive channels takes its head's weight: the
 * grouped vector attention of Point Transformer v2 (Wu et al. 2022). Without numHeads the
 * attention is per channel (vector attention, as PyG); H = C is the same thing.
 *
 * Self loops (the default): the graphs' own self loops are dropped and one added per node
 * (delta_ii = h(0)), as PyG's remove_self_loops + add_self_loops. Without them a node with no
 * incoming edge outputs zeros (plus the bias). The edge lists are read once in JavaScript
 * (planEdges, as graphAttention); the rest is gathers onto edges, the segment softmax and
 * segment sums, all differentiable.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, assertDivisible, assertPositiveInt, checkArgNames} from '../core/validate';
import {EdgePlan, planEdges} from './graph';
import {matMul} from './matmul';
import {gatherRows, segmentSoftmax, segmentSum} from './segments';

/** The weights of geometricAttention; the GeometricAttention layer's names in brackets. */
export interface GeometricWeights {
  /** Shape [F, C]: W, the value projection (`kernel`). */
  kernel: tf.Tensor;
  /** Shape [F, C]: W_src, the source node's part of the attention (`source_kernel`). */
  sourceKernel: tf.Tensor;
  /** Shape [F, C]: W_dst, the target node's part (`target_kernel`). */
  targetKernel: tf.Tensor;
  /** h's kernels [d, u1], [u1, u2], ..., [uk, C] (`position_kernel_0`, ...); at least one. */
  positionKernels: tf.Tensor[];
  /** h's biases [u1], ..., [C] (`position_bias_0`, ...), one per kernel. */
  positionBiases: tf.Tensor[];
  /** gamma's kernels [C, v1], ..., [vk, C] (or [vk, H] with numHeads); absent: gamma is the identity. */
  attentionKernels?: tf.Tensor[];
  /** gamma's biases, one per kernel. */
  attentionBiases?: tf.Tensor[];
  /** [C] (`bias`), added to the output. */
  bias?: tf.Tensor;
}

export interface GeometricOptions {
  /** Drop the graphs' self loops and add one per node. Default true. */
  addSelfLoops?: boolean;
  /** H: grouped attention with H heads (needs attention weights ending in H outputs). Default null: per channel. */
  numHeads?: number | null;
  /** Also return alpha [B, E + N, H or C] (self loops last; E alone without them). */
  returnAttentionScores?: boolean;
}

export const GEOMETRIC_OPTIONS = ['addSelfLoops', 'numHeads', 'returnAttentionScores'] as const;
const GEOMETRIC_WEIGHTS = ['kernel', 'sourceKernel', 'targetKernel', 'positionKernels', 'positionBiases',
  'attentionKernels', 'attentionBiases', 'bias'] as const;

export interface GeometricAttentionWithScores {
  output: tf.Tensor3D;
  /** alpha [B, E + N, H or C] (E without self loops): 0 for padding edges and dropped self loops. */
  scores: tf.Tensor3D;
}

/** Checks one weight's type, dtype and shape. */
function checkWeight(name: string, given: unknown, shape: number[]): tf.Tensor {
  if (!(given instanceof tf.Tensor)) {
    throw new AttentionError('INVALID_CONFIG', `weights.${name} must be a tf.Tensor, received ${show(given)}`);
  }
  const w: tf.Tensor = given;
  if (w.dtype !== 'float32') throw new AttentionError('INVALID_CONFIG', `weights.${name} must be float32, received dtype ${w.dtype}`);
  if (w.rank !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
    throw new AttentionError('DIMENSION_MISMATCH', `weights.${name} must have shape ${show(shape)}, received shape ${show(w.shape)}`);
  }
  return w;
}

/**
 * Checks an MLP's kernels and biases: kernel k [in_k, out_k] with in_0 = `inputs` and
 * in_{k+1} = out_k, bias k [out_k], the last out_k = `outputs`.
 */
function checkMlp(name: string, kernels: unknown, biases: unknown, inputs: number, outputs: number,
                  why: string): void {
  const kn = `${name}Kernels`;
  const bn = `${name}Biases`;
  if (!Array.isArray(kernels) || kernels.length === 0) {
    throw new AttentionError('INVALID_CONFIG', `weights.${kn} must be a non-empty array of tf.Tensors, received ${show(kernels)}`);
  }
  if (!Array.isArray(biases) || biases.length !== kernels.length) {
    throw new AttentionError('INVALID_CONFIG',
      `weights.${bn} must be an array of one bias per kernel (${kernels.length}), received ${show(biases)}`);
  }
  let units = inputs;
  kernels.forEach((k, i) => {
    const last = i === kernels.length - 1;
    if (!(k instanceof tf.Tensor) || k.rank !== 2) {
      throw new AttentionError('DIMENSION_MISMATCH', `weights.${kn}[${i}] must be a [${units}, units] tf.Tensor, received ${show(k)}`);
    }
    if (k.shape[0] !== units) {
      throw new AttentionError('DIMENSION_MISMATCH', `weights.${kn}[${i}] must have ${units} rows ` +
        `(${i === 0 ? why : `the outputs of ${kn}[${i - 1}]`}), received shape ${show(k.shape)}`);
    }
    if (last && k.shape[1] !== outputs) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `the last of weights.${kn} must have ${outputs} columns, received shape ${show(k.shape)}`);
    }
    checkWeight(`${kn}[${i}]`, k, k.shape);
    checkWeight(`${bn}[${i}]`, biases[i], [k.shape[1]]);
    units = k.shape[1];
  });
}

/** x through Linear-ReLU-...-Linear: x [K, in] -> [K, out]. */
function mlp(x: tf.Tensor, kernels: tf.Tensor[], biases: tf.Tensor[]): tf.Tensor {
  let h = x;
  kernels.forEach((k, i) => {
    h = tf.add(matMul(h, k), biases[i]);
    if (i < kernels.length - 1) h = tf.relu(h);
  });
  return h;
}

/** Every weight given, in the layer's getWeights() order. */
function weightList(w: GeometricWeights): tf.Tensor[] {
  const pairs = (ks: tf.Tensor[] = [], bs: tf.Tensor[] = []) => ks.flatMap((k, i) => [k, bs[i]]);
  return [w.kernel, w.sourceKernel, w.targetKernel, ...pairs(w.positionKernels, w.positionBiases),
    ...pairs(w.attentionKernels, w.attentionBiases), ...(w.bias != null ? [w.bias] : [])];
}

/**
 * The result when nothing is aggregated (no node, or no edge once padding is left out and
 * without self loops): zeros plus the bias, tied to every input by a zero term so that their
 * gradients are zeros of their shapes. tfjs-wasm 4.22 mishandles gathers and products of
 * empty tensors, so this path runs no kernel on one.
 */
function noMessages(features: tf.Tensor, positions: tf.Tensor, weights: GeometricWeights, C: number,
                    width: number, plan: EdgePlan, returnScores: boolean): tf.Tensor3D | GeometricAttentionWithScores {
  const {B, N} = plan;
  return tf.tidy(() => {
    const tie = tf.mul(tf.addN([features, positions, ...weightList(weights)].map((t) => tf.sum(t))), 0);
    let out = tf.add(tf.zeros([B, N, C]), tie);
    if (weights.bias != null) out = tf.add(out, weights.bias);
    if (!returnScores) return out as tf.Tensor3D;
    const scores = tf.zeros([B, plan.selfLoops ? plan.E + N : plan.E, width]);
    return {output: out as tf.Tensor3D, scores: scores as tf.Tensor3D};
  });
}

/** Checks features [B, N, F] and positions [B, N, d], both float32. */
function checkInputs(features: tf.Tensor, positions: tf.Tensor): void {
  for (const [name, t, dims] of [['features', features, 'features'], ['positions', positions, 'coordinates']] as const) {
    if (!(t instanceof tf.Tensor)) throw new AttentionError('INVALID_CONFIG', `${name} must be a tf.Tensor, received ${show(t)}`);
    if (t.dtype !== 'float32') throw new AttentionError('INVALID_CONFIG', `${name} must be float32, received dtype ${t.dtype}`);
    if (t.rank !== 3) {
      throw new AttentionError('DIMENSION_MISMATCH', `${name} must have rank 3 ([batch, nodes, ${dims}]), received shape ${show(t.shape)}`);
    }
  }
  if (positions.shape[0] !== features.shape[0] || positions.shape[1] !== features.shape[1]) {
    throw new AttentionError('DIMENSION_MISMATCH', `positions must have shape [${features.shape[0]}, ${features.shape[1]}, d] ` +
      `(one position per node of features), received shape ${show(positions.shape)}`);
  }
}

/**
 * Geometric attention (see the file comment) over features [B, N, F], positions [B, N, d]
 * and edges [B, E, 2] int32. Returns [B, N, C]; with returnAttentionScores, {output, scores}.
 */
export function geometricAttention(
  features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor, weights: GeometricWeights,
  options?: GeometricOptions & {returnAttentionScores?: false}): tf.Tensor3D;
export function geometricAttention(
  features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor, weights: GeometricWeights,
  options: GeometricOptions & {returnAttentionScores: true}): GeometricAttentionWithScores;
export function geometricAttention(
  features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor, weights: GeometricWeights,
  options?: GeometricOptions): tf.Tensor3D | GeometricAttentionWithScores;
export function geometricAttention(
  features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor, weights: GeometricWeights,
  options: GeometricOptions = {}): tf.Tensor3D | GeometricAttentionWithScores {
  options = options ?? {};
  checkArgNames('geometricAttention', options, GEOMETRIC_OPTIONS);
  checkInputs(features, positions);
  if (weights == null || typeof weights !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `geometricAttention needs weights {kernel, sourceKernel, ...}, received ${show(weights)}`);
  }
  checkArgNames('geometricAttention weights', weights, GEOMETRIC_WEIGHTS);
  const [B, N, F] = features.shape as [number, number, number];
  const d = positions.shape[2] as number;
  const kernel = weights.kernel;
  if (!(kernel instanceof tf.Tensor) || kernel.rank !== 2 || kernel.shape[0] !== F) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `weights.kernel must be a [${F}, units] tf.Tensor (its first dim the features' last), received ${show(kernel)}`);
  }
  const C = kernel.shape[1] as number;
  checkWeight('kernel', kernel, [F, C]); // its dtype
  checkWeight('sourceKernel', weights.sourceKernel, [F, C]);
  checkWeight('targetKernel', weights.targetKernel, [F, C]);
  checkMlp('position', weights.positionKernels, weights.positionBiases, d, C, "d, the positions' last dim");
  const H = options.numHeads ?? null;
  if (H != null) {
    assertPositiveInt('numHeads', H);
    assertDivisible('units', C, 'numHeads', H);
    if (weights.attentionKernels == null) {
      throw new AttentionError('INVALID_CONFIG', `numHeads (${H}) needs gamma to give one logit per head: ` +
        `pass weights.attentionKernels and attentionBiases ending in ${H} outputs (at least [${C}, ${H}] and [${H}])`);
    }
  }
  const width = H ?? C; // logits per edge
  const gamma = weights.attentionKernels != null || weights.attentionBiases != null;
  if (gamma) checkMlp('attention', weights.attentionKernels, weights.attentionBiases, C, width, 'units, the logits');
  if (weights.bias != null) checkWeight('bias', weights.bias, [C]);
  const selfLoops = options.addSelfLoops ?? true;
  assertBoolean('addSelfLoops', selfLoops);
  const returnScores = options.returnAttentionScores ?? false;
  assertBoolean('returnAttentionScores', returnScores);
  const plan = planEdges(edges, B, N, selfLoops);
  const K = plan.src.length;
  if (B * N === 0 || K === 0) return noMessages(features, positions, weights, C, width, plan, returnScores);

  return tf.tidy(() => {
    const BN = B * N;
    const src = tf.tensor1d(plan.src, 'int32');
    const dst = tf.tensor1d(plan.dst, 'int32');
    // 1. The three projections in one product: [BN, 3C] -> W x, W_src x, W_dst x.
    const x2 = tf.reshape(features, [BN, F]);
    const kernels = tf.concat([kernel, weights.sourceKernel, weights.targetKernel], 1);    // [F, 3C]
    const [v, s, t] = tf.split(matMul(x2, kernels), 3, 1);                                // [BN, C] each
    // 2. delta_ij = h(p_i - p_j) on each edge.
    const p2 = tf.reshape(positions, [BN, d]);
    const rel = tf.sub(gatherRows(p2, dst), gatherRows(p2, src));                         // [K, d]
    const delta = mlp(rel, weights.positionKernels, weights.positionBiases);              // [K, C]
    // 3. Logits gamma(W_dst x_i - W_src x_j + delta_ij), softmax over each node's incoming edges.
    let logits = tf.add(tf.sub(gatherRows(t, dst), gatherRows(s, src)), delta);          // [K, C]
    if (gamma) logits = mlp(logits, weights.attentionKernels!, weights.attentionBiases!);  // [K, C or H]
    const alpha = segmentSoftmax(logits, dst, plan.dst, BN);                              // [K, C or H]
    // 4. Messages alpha * (W x_j + delta_ij), summed onto their targets.
    const value = tf.add(gatherRows(v, src), delta);                                      // [K, C]
    const msg = H == null ? tf.mul(alpha, value)
      : tf.reshape(tf.mul(tf.expandDims(alpha, -1), tf.reshape(value, [K, H, C / H])), [K, C]); // heads' groups
    let out = tf.reshape(segmentSum(msg, dst, plan.dst, BN), [B, N, C]);
    if (weights.bias != null) out = tf.add(out, weights.bias);
    if (!returnScores) return out as tf.Tensor3D;
    const rows = plan.selfLoops ? plan.E + N : plan.E;
    const scores = tf.reshape(tf.unsortedSegmentSum(alpha, tf.tensor1d(plan.scoreRow, 'int32'), B * rows), [B, rows, width]);
    return {output: out as tf.Tensor3D, scores: scores as tf.Tensor3D};
  });
}
