/**
 * E(n)-equivariant graph attention: one EGNN layer with attention (Satorras, Hoogeboom and
 * Welling 2021, "E(n) Equivariant Graph Neural Networks", their E_GCL / E_GCL_vel with
 * attention on), over edge lists in O(E) memory: never an N x N tensor.
 *
 * For features h [B, N, F], positions x [B, N, d] and edges [B, E, 2] int32 (source j,
 * target i: i receives; padding [-1, -1]), for each edge j -> i:
 *   m_ij = phi_e([h_i, h_j, ||x_i - x_j||^2, a_ij])     phi_e: Linear(2F+1+A -> U), act, Linear(U -> U), act
 *   e_ij = sigmoid(m_ij W_a + b_a)                       the attention gate, one per edge
 *   m_ij = e_ij * m_ij
 * then for each node i:
 *   x'_i = x_i + coordsWeight * AGG_j (x_i - x_j) phi_x(m_ij)   phi_x: Linear(U -> U), act, Linear(U -> 1, no bias)
 *          [+ phi_v(h_i) v_i with velocities]                   phi_v: Linear(F -> U), act, Linear(U -> 1)
 *   h'_i = [h_i +] phi_h([h_i, sum_j m_ij])                      phi_h: Linear(F+U -> U), act, Linear(U -> units)
 * AGG is the mean over i's incoming edges ('mean', EGNN's coords_agg; a node without one
 * does not move) or their sum. Only the edges given are used: no self loop is added, and a
 * self loop given contributes m_ii with a zero offset. x' rotates, reflects and translates
 * with x (and v rotates with it); h' is invariant.
 *
 * The edge lists are read once in JavaScript (planEdges: bad indices refused, padding left
 * out, the batch made one graph of B * N nodes); the rest is tf ops (gathers onto edges,
 * segment sums back onto nodes), so autograd differentiates the features, positions, edge
 * attributes, velocities and every weight. phi_e's first product is taken per node (h W for
 * the target's and the source's rows) and gathered onto the edges, not per edge.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, assertOneOf, checkArgNames, ForeignName} from '../core/validate';
import {planEdges} from './graph';
import {matMul} from './matmul';
import {gatherRows, segmentSum} from './segments';

/** How a node's coordinate updates are combined: EGNN's coords_agg. */
export const COORDINATE_AGGREGATIONS = ['mean', 'sum'] as const;
export type CoordinateAggregation = typeof COORDINATE_AGGREGATIONS[number];

/** tfjs' activation names (its 'swish', x * sigmoid(x), is SiLU, EGNN's default). */
export const EQUIVARIANT_ACTIVATIONS = ['swish', 'relu', 'elu', 'selu', 'relu6', 'linear', 'sigmoid', 'hardSigmoid',
  'softplus', 'softsign', 'tanh', 'softmax', 'logSoftmax', 'gelu', 'gelu_new', 'mish'] as const;

/** The weights of equivariantAttention, by the names the EquivariantAttention layer gives them. */
export interface EquivariantWeights {
  /** Shape [2F + 1 + A, U]: phi_e's first layer over [h_i, h_j, ||x_i - x_j||^2, a_ij]. */
  edgeKernel0: tf.Tensor;
  /** [U] */
  edgeBias0: tf.Tensor;
  /** Shape [U, U]: phi_e's second layer. */
  edgeKernel1: tf.Tensor;
  /** [U] */
  edgeBias1: tf.Tensor;
  /** Shape [U, 1]: the attention gate e_ij = sigmoid(m_ij W + b). */
  attentionKernel: tf.Tensor;
  /** [1] */
  attentionBias: tf.Tensor;
  /** Shape [U, U]: phi_x's first layer. */
  coordKernel0: tf.Tensor;
  /** [U] */
  coordBias0: tf.Tensor;
  /** Shape [U, 1]: phi_x's output, without bias. */
  coordKernel1: tf.Tensor;
  /** Shape [F + U, U]: phi_h's first layer over [h_i, sum_j m_ij]. */
  nodeKernel0: tf.Tensor;
  /** [U] */
  nodeBias0: tf.Tensor;
  /** Shape [U, units]: phi_h's output. */
  nodeKernel1: tf.Tensor;
  /** [units] */
  nodeBias1: tf.Tensor;
  /** [F, U], with velocities: phi_v's first layer. */
  velocityKernel0?: tf.Tensor;
  /** [U] */
  velocityBias0?: tf.Tensor;
  /** Shape [U, 1]: phi_v's output. */
  velocityKernel1?: tf.Tensor;
  /** [1] */
  velocityBias1?: tf.Tensor;
}

export type EquivariantWeightKey = keyof EquivariantWeights;

/** Each weight's name in the layer (getWeights() order), the velocity weights last. */
export const EQUIVARIANT_WEIGHT_NAMES: Readonly<Record<EquivariantWeightKey, string>> = {
  edgeKernel0: 'edge_kernel_0', edgeBias0: 'edge_bias_0', edgeKernel1: 'edge_kernel_1', edgeBias1: 'edge_bias_1',
  attentionKernel: 'attention_kernel', attentionBias: 'attention_bias',
  coordKernel0: 'coord_kernel_0', coordBias0: 'coord_bias_0', coordKernel1: 'coord_kernel_1',
  nodeKernel0: 'node_kernel_0', nodeBias0: 'node_bias_0', nodeKernel1: 'node_kernel_1', nodeBias1: 'node_bias_1',
  velocityKernel0: 'velocity_kernel_0', velocityBias0: 'velocity_bias_0', velocityKernel1: 'velocity_kernel_1',
  velocityBias1: 'velocity_bias_1',
};

/**
 * The weights' keys and shapes, in getWeights() order, for F features, U hidden units, A
 * edge attributes (0: none), `units` output features, and phi_v when `velocity`.
 */
export function equivariantWeightShapes(F: number, U: number, A: number, units: number,
                                        velocity: boolean): [EquivariantWeightKey, number[]][] {
  const shapes: [EquivariantWeightKey, number[]][] = [
    ['edgeKernel0', [2 * F + 1 + A, U]], ['edgeBias0', [U]], ['edgeKernel1', [U, U]], ['edgeBias1', [U]],
    ['attentionKernel', [U, 1]], ['attentionBias', [1]],
    ['coordKernel0', [U, U]], ['coordBias0', [U]], ['coordKernel1', [U, 1]],
    ['nodeKernel0', [F + U, U]], ['nodeBias0', [U]], ['nodeKernel1', [U, units]], ['nodeBias1', [units]],
  ];
  if (velocity) {
    shapes.push(['velocityKernel0', [F, U]], ['velocityBias0', [U]], ['velocityKernel1', [U, 1]],
      ['velocityBias1', [1]]);
  }
  return shapes;
}

export interface EquivariantOptions {
  /** [B, E, A] float32: one attribute vector per edge, a_ij in phi_e's input. */
  edgeAttr?: tf.Tensor;
  /** [B, N, d] float32: adds phi_v(h_i) v_i to x'_i (needs the velocity* weights). */
  velocities?: tf.Tensor;
  /** Scales the aggregated coordinate update. Default 1. */
  coordsWeight?: number;
  /** 'mean' (default) or 'sum' of the coordinate updates over a node's incoming edges. */
  coordinateAggregation?: CoordinateAggregation;
  /** A tfjs activation name for the MLPs' hidden layers. Default 'swish' (SiLU). */
  activation?: string;
  /** h' = h + phi_h(...) (default true; then units must equal F), else phi_h(...). */
  residual?: boolean;
  /** Also return the gates e_ij [B, E, 1] (0 on padding edges). */
  returnAttentionScores?: boolean;
}

export const EQUIVARIANT_OPTIONS = ['edgeAttr', 'velocities', 'coordsWeight', 'coordinateAggregation', 'activation',
  'residual', 'returnAttentionScores'] as const;

/** EGNN's argument names (camelCase and snake_case), with what to use here. */
const EGNN_NAMES: Record<string, ForeignName> = {
  coordsAgg: {code: 'INVALID_CONFIG', advice: "did you mean 'coordinateAggregation' (EGNN's coords_agg)?"},
  actFn: {code: 'INVALID_CONFIG', advice: "did you mean 'activation' (a tfjs activation name; 'swish' is SiLU)?"},
  recurrent: {code: 'INVALID_CONFIG', advice: "did you mean 'residual' (EGNN's recurrent: h' = h + phi_h)?"},
  attention: {code: 'UNSUPPORTED', inert: (v) => v == null || v === true,
    advice: 'the attention gate e_ij is always on here (EGNN with attention=True)'},
  normDiff: {code: 'UNSUPPORTED', inert: (v) => v == null || v === false,
    advice: 'the offsets x_i - x_j are used unnormalised (EGNN\'s norm_diff=False)'},
  tanh: {code: 'UNSUPPORTED', inert: (v) => v == null || v === false,
    advice: 'phi_x has no tanh output (EGNN\'s tanh=False); use coordsWeight to scale the coordinate updates'},
  clamp: {code: 'UNSUPPORTED', inert: (v) => v == null || v === false,
    advice: 'the coordinate updates are not clamped'},
  nodeAttr: {code: 'UNSUPPORTED', inert: (v) => v == null,
    advice: 'concatenate node attributes to the features instead (EGNN\'s node_attr)'},
  nodesAttDim: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 0,
    advice: 'concatenate node attributes to the features instead (EGNN\'s nodes_att_dim)'},
};

/** `names`, each also under its snake_case spelling (coordsAgg and coords_agg). */
export function withSnakeCase(names: Record<string, ForeignName>): Record<string, ForeignName> {
  const out: Record<string, ForeignName> = {...names};
  for (const [k, v] of Object.entries(names)) out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  return out;
}

export const EGNN_FOREIGN_NAMES: Readonly<Record<string, ForeignName>> = withSnakeCase(EGNN_NAMES);

/** The tfjs activation `name` as a function (INVALID_CONFIG for another name). */
export function activationFunction(name: unknown): (x: tf.Tensor) => tf.Tensor {
  if (name === 'silu') {
    throw new AttentionError('INVALID_CONFIG', "activation 'silu' is tfjs' 'swish' (x * sigmoid(x)): use 'swish'");
  }
  assertOneOf('activation', name, EQUIVARIANT_ACTIVATIONS);
  const [cls, fromConfig] = tf.serialization.SerializationMap.getMap().classNameMap[name];
  const act = fromConfig(cls, {}) as unknown as {apply: (x: tf.Tensor) => tf.Tensor};
  return (x) => act.apply(x);
}

function checkFloat(name: string, t: unknown, shape: (number | null)[], meaning: string): tf.Tensor {
  if (!(t instanceof tf.Tensor) || t.dtype !== 'float32') {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a float32 tf.Tensor, received ${show(t)}`);
  }
  if (t.rank !== shape.length || shape.some((d, i) => d != null && d !== t.shape[i])) {
    const want = shape.map((d, i) => d ?? meaning.split(', ')[i]).join(', ');
    throw new AttentionError('DIMENSION_MISMATCH', `${name} must have shape [${want}] ([${meaning}]), received shape ${show(t.shape)}`);
  }
  return t;
}

/** Every weight the inputs need, of its shape, and none they do not use. */
function checkWeights(weights: EquivariantWeights, F: number, A: number, velocity: boolean,
                      residual: boolean): {U: number; units: number} {
  if (weights == null || typeof weights !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `equivariantAttention needs weights {edgeKernel0, ...}, received ${show(weights)}`);
  }
  const velocityKeys = ['velocityKernel0', 'velocityBias0', 'velocityKernel1', 'velocityBias1'];
  const unused: Record<string, ForeignName> = {};
  if (!velocity) {
    for (const k of velocityKeys) {
      unused[k] = {code: 'INVALID_CONFIG', advice: 'it is for velocities: pass options.velocities [B, N, d], or leave it out'};
    }
  }
  const used = equivariantWeightShapes(F, 1, A, 1, velocity).map(([k]) => k);
  checkArgNames('equivariantAttention weights', weights, used, unused);
  const k0 = weights.edgeKernel0;
  if (!(k0 instanceof tf.Tensor) || k0.rank !== 2 || k0.shape[0] !== 2 * F + 1 + A) {
    throw new AttentionError('DIMENSION_MISMATCH', `weights.edgeKernel0 must be a [${2 * F + 1 + A}, hiddenUnits] ` +
      `tensor (2F + 1 + A rows: F = ${F} features, A = ${A} edge attributes), received ${show(k0)}`);
  }
  const U = k0.shape[1] as number;
  const k1 = weights.nodeKernel1;
  if (!(k1 instanceof tf.Tensor) || k1.rank !== 2) {
    throw new AttentionError('DIMENSION_MISMATCH', `weights.nodeKernel1 must be a [${U}, units] tensor, received ${show(k1)}`);
  }
  const units = k1.shape[1] as number;
  if (residual && units !== F) {
    throw new AttentionError('DIMENSION_MISMATCH', 'with residual (h\' = h + phi_h), weights.nodeKernel1 must have ' +
      `F = ${F} columns (the features' size), received shape ${show(k1.shape)}; pass residual: false for another size`);
  }
  for (const [key, shape] of equivariantWeightShapes(F, U, A, units, velocity)) {
    checkFloat(`weights.${key}`, weights[key], shape, shape.map(String).join(', '));
  }
  return {U, units};
}

/**
 * The result when there is no node (B = 0 or N = 0): empty outputs tied to every input by
 * a zero term, so gradients are zeros of their shapes rather than missing (tfjs-wasm 4.22
 * gathers from an empty tensor into a wrong shape).
 */
function emptyGraphs(given: tf.Tensor[], B: number, N: number, d: number, units: number, E: number,
                     returnScores: boolean): tf.Tensor3D[] {
  return tf.tidy(() => {
    const tie = tf.mul(tf.addN(given.map((t) => tf.sum(t))), 0);
    const out = [tf.add(tf.zeros([B, N, units]), tie), tf.add(tf.zeros([B, N, d]), tie)];
    if (returnScores) out.push(tf.add(tf.zeros([B, E, 1]), tie));
    return out as tf.Tensor3D[];
  });
}

/** act(x W + b) for x [K, in], W [in, out], b [out]; no activation when act is null. */
function dense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | null, act: ((t: tf.Tensor) => tf.Tensor) | null): tf.Tensor {
  let y = matMul(x, w);
  if (b != null) y = tf.add(y, b);
  return act != null ? act(y) : y;
}

/**
 * One EGNN layer with attention (see the file comment) over features [B, N, F], positions
 * [B, N, d] and edges [B, E, 2] int32. Returns [features' [B, N, units], positions'
 * [B, N, d]]; with returnAttentionScores also the gates e_ij [B, E, 1].
 */
export function equivariantAttention(features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor,
    weights: EquivariantWeights, options?: EquivariantOptions & {returnAttentionScores?: false}):
    [tf.Tensor3D, tf.Tensor3D];
export function equivariantAttention(features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor,
    weights: EquivariantWeights, options: EquivariantOptions & {returnAttentionScores: true}):
    [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D];
export function equivariantAttention(features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor,
    weights: EquivariantWeights, options?: EquivariantOptions): tf.Tensor3D[];
export function equivariantAttention(features: tf.Tensor, positions: tf.Tensor, edges: tf.Tensor,
                                     weights: EquivariantWeights, options: EquivariantOptions = {}): tf.Tensor3D[] {
  options = options ?? {};
  checkArgNames('equivariantAttention', options, EQUIVARIANT_OPTIONS, EGNN_FOREIGN_NAMES);
  if (!(features instanceof tf.Tensor) || features.dtype !== 'float32' || features.rank !== 3 || features.shape[2] === 0) {
    const code = features instanceof tf.Tensor && features.dtype === 'float32' ? 'DIMENSION_MISMATCH' : 'INVALID_CONFIG';
    throw new AttentionError(code,
      `features must be a float32 tensor [batch, nodes, features] with features >= 1, received ${show(features)}`);
  }
  const [B, N, F] = features.shape as [number, number, number];
  checkFloat('positions', positions, [B, N, null], 'batch, nodes, d');
  const d = positions.shape[2] as number;
  if (d === 0) throw new AttentionError('DIMENSION_MISMATCH', `positions must have d >= 1 coordinates, received shape ${show(positions.shape)}`);
  const coordsWeight = options.coordsWeight ?? 1;
  if (typeof coordsWeight !== 'number' || !Number.isFinite(coordsWeight)) {
    throw new AttentionError('INVALID_CONFIG', `coordsWeight must be a finite number, received ${show(options.coordsWeight)}`);
  }
  const aggregation = options.coordinateAggregation ?? 'mean';
  assertOneOf('coordinateAggregation', aggregation, COORDINATE_AGGREGATIONS);
  const act = activationFunction(options.activation ?? 'swish');
  const residual = options.residual ?? true;
  assertBoolean('residual', residual);
  const returnScores = options.returnAttentionScores ?? false;
  assertBoolean('returnAttentionScores', returnScores);
  const plan = planEdges(edges, B, N, false); // checks edges [B, E, 2] int32 and every index
  const E = plan.E;
  const attr = options.edgeAttr != null ? checkFloat('edgeAttr', options.edgeAttr, [B, E, null], 'batch, edges, A') : null;
  const A = attr != null ? attr.shape[2] as number : 0;
  const vel = options.velocities != null ? checkFloat('velocities', options.velocities, [B, N, d], 'batch, nodes, d') : null;
  const {U, units} = checkWeights(weights, F, A, vel != null, residual);

  if (B * N === 0) {
    const given = [features, positions, ...Object.values(weights), attr, vel].filter((t): t is tf.Tensor => t != null);
    return emptyGraphs(given, B, N, d, units, E, returnScores);
  }

  return tf.tidy(() => {
    const BN = B * N;
    const w = weights;
    const src = tf.tensor1d(plan.src, 'int32');                                // j of each kept edge
    const dst = tf.tensor1d(plan.dst, 'int32');                                // i
    const h = tf.reshape(features, [BN, F]);
    const x = tf.reshape(positions, [BN, d]);
    // 1. The offsets x_i - x_j and their squared lengths.
    const diff = tf.sub(gatherRows(x, dst), gatherRows(x, src));               // [K, d]
    const radial = tf.sum(tf.square(diff), -1, true);                          // [K, 1]
    // 2. m_ij = phi_e([h_i, h_j, radial, a_ij]): the first product split by rows of its kernel.
    const rows = (start: number, size: number) => tf.slice(w.edgeKernel0, [start, 0], [size, U]);
    let pre = tf.add(gatherRows(matMul(h, rows(0, F)), dst), gatherRows(matMul(h, rows(F, F)), src)); // [K, U]
    pre = tf.add(pre, tf.mul(radial, rows(2 * F, 1)));
    if (attr != null) {
      const a = gatherRows(tf.reshape(attr, [B * E, A]), tf.tensor1d(plan.kept, 'int32')); // [K, A]
      pre = tf.add(pre, matMul(a, rows(2 * F + 1, A)));
    }
    const m0 = dense(act(tf.add(pre, w.edgeBias0)), w.edgeKernel1, w.edgeBias1, act); // [K, U]
    // 3. The attention gate.
    const gate = tf.sigmoid(dense(m0, w.attentionKernel, w.attentionBias, null)); // [K, 1]
    const m = tf.mul(gate, m0);
    // 4. x'_i = x_i + coordsWeight AGG_j (x_i - x_j) phi_x(m_ij) [+ phi_v(h_i) v_i].
    const phiX = dense(dense(m, w.coordKernel0, w.coordBias0, act), w.coordKernel1, null, null); // [K, 1]
    let shift = segmentSum(tf.mul(diff, phiX), dst, plan.dst, BN);          // [BN, d]
    if (aggregation === 'mean') {
      shift = tf.div(shift, tf.tensor2d(Float32Array.from(plan.inDegree, (n) => Math.max(n, 1)), [BN, 1]));
    }
    let xOut = tf.add(x, tf.mul(shift, coordsWeight));
    if (vel != null) {
      const hidden = dense(h, w.velocityKernel0!, w.velocityBias0!, act);          // [BN, U]
      const phiV = dense(hidden, w.velocityKernel1!, w.velocityBias1!, null);     // [BN, 1]
      xOut = tf.add(xOut, tf.mul(phiV, tf.reshape(vel, [BN, d])));             // [BN, 1] * [BN, d]
    }
    // 5. h'_i = [h_i +] phi_h([h_i, sum_j m_ij]).
    const agg = segmentSum(m, dst, plan.dst, BN);                              // [BN, U]
    let hOut = dense(dense(tf.concat([h, agg], 1), w.nodeKernel0, w.nodeBias0, act), w.nodeKernel1, w.nodeBias1, null);
    if (residual) hOut = tf.add(h, hOut);
    const out = [tf.reshape(hOut, [B, N, units]), tf.reshape(xOut, [B, N, d])]; // [B, N, units], [B, N, d]
    if (returnScores) {
      const scores = tf.unsortedSegmentSum(gate, tf.tensor1d(plan.kept, 'int32'), B * E); // [B * E, 1]
      out.push(tf.reshape(scores, [B, E, 1]));
    }
    return out as tf.Tensor3D[];
  });
}
