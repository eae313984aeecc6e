/**
 * Graph attention over edge lists (GATConv semantics: Velickovic et al., as PyTorch
 * Geometric defines it), in O(E * H * C) memory: never an N x N tensor.
 *
 * For a batch of graphs padded to N nodes and E edges, nodes [B, N, F] and edges [B, E, 2]
 * int32 (source, target; padding edges [-1, -1]), per head h:
 *   x'   = x W                                      (kernel [F, H, C])
 *   GAT:   e_ij = LeakyReLU(a_src . x'_j + a_dst . x'_i + a_edge . (attr_ij W_e))
 *   GATv2: e_ij = a . LeakyReLU(x'_j + x_i W_t + attr_ij W_e)    (W [x_i || x_j] with W = [W_t; W])
 *   alpha_ij = softmax of e_ij over the edges j -> i coming into i
 *   out_i    = sum_j alpha_ij x'_j
 * for each edge j -> i, then heads concatenated ([B, N, H * C]) or averaged ([B, N, C]), plus
 * the bias. With self loops (the default) a graph's own self loops are dropped and one per
 * node added, whose edge attribute is the mean of the node's incoming edges' attributes
 * (zeros when it has none), as PyG's add_self_loops(fill_value='mean') after
 * remove_self_loops.
 *
 * The edge lists are read once in JavaScript (they are integer inputs, never differentiated):
 * that is where bad indices are refused, padding and dropped self loops are left out, and
 * the graphs of the batch become one graph of B * N nodes. The rest is tf ops: gathers of
 * per-node rows onto edges, a segment softmax over each node's incoming edges, and segment
 * sums back onto nodes, so autograd gives gradients for the nodes, every weight and the edge
 * attributes. The segment softmax is a tf.customGrad whose forward shifts each node's scores
 * by their maximum (a segmented scan in tf ops, so exp never overflows and the scores are
 * never read back) and whose backward is alpha * (g - sum over the node's edges of alpha * g).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, assertOneOf, assertRate, checkArgNames, ForeignName} from '../core/validate';
import {matMul} from './matmul';
import {gatherRows, segmentSoftmax, segmentSum} from './segments';

/** The scoring rules: GAT's (a . [x'_i || x'_j]) and GATv2's (a . LeakyReLU(W [x_i || x_j])). */
export const GRAPH_VERSIONS = ['gat', 'gatv2'] as const;
export type GraphVersion = typeof GRAPH_VERSIONS[number];

/** The weights of graphAttention, by the names the GraphAttention layer gives them. */
export interface GraphWeights {
  /** Shape [F, H, C]: the node projection (GATv2: the source side, which is also the message). */
  kernel: tf.Tensor;
  /** [H, C], GAT: the source node's part of the attention vector. */
  attentionSource?: tf.Tensor;
  /** [H, C], GAT: the target node's part. */
  attentionTarget?: tf.Tensor;
  /** [F, H, C], GATv2: the target node's projection. */
  targetKernel?: tf.Tensor;
  /** [H, C], GATv2: the attention vector. */
  attention?: tf.Tensor;
  /** Shape [edgeDim, H, C]: the edge attributes' projection (with edgeAttr). */
  edgeKernel?: tf.Tensor;
  /** [H, C], GAT with edgeAttr: the edge's part of the attention vector. */
  attentionEdge?: tf.Tensor;
  /** [H * C] when heads are concatenated, else [C]. */
  bias?: tf.Tensor;
}

export interface GraphOptions {
  /** [B, E, edgeDim] float32: one attribute vector per edge (needs weights.edgeKernel). */
  edgeAttr?: tf.Tensor;
  /** 'gat' (default) or 'gatv2'. */
  version?: GraphVersion;
  /** The LeakyReLU's slope for negative inputs. Default 0.2. */
  negativeSlope?: number;
  /** Drop the graphs' self loops and add one per node. Default true. */
  addSelfLoops?: boolean;
  /** Concatenate the heads ([B, N, H * C], default) or average them ([B, N, C]). */
  concatHeads?: boolean;
  /** Dropout rate on alpha, applied only when training. Default 0. */
  dropout?: number;
  training?: boolean;
  seed?: number;
  /** Also return alpha [B, E + N, H] (self loops last; E alone without them), before dropout. */
  returnAttentionScores?: boolean;
}

/** The weights each version uses, and those it adds with edge attributes. */
const GAT_WEIGHTS = ['kernel', 'attentionSource', 'attentionTarget'] as const;
const GATV2_WEIGHTS = ['kernel', 'targetKernel', 'attention'] as const;
const EDGE_WEIGHTS: Record<GraphVersion, readonly string[]> = {gat: ['edgeKernel', 'attentionEdge'], gatv2: ['edgeKernel']};

export const GRAPH_OPTIONS = ['edgeAttr', 'version', 'negativeSlope', 'addSelfLoops', 'concatHeads', 'dropout',
  'training', 'seed', 'returnAttentionScores'] as const;

export interface GraphAttentionWithScores {
  output: tf.Tensor3D;
  /** alpha [B, E + N, H] (E without self loops): 0 for padding edges and dropped self loops. */
  scores: tf.Tensor3D;
}

/** The edges of a batch as one graph of B * N nodes: what the tf ops gather and sum by. */
export interface EdgePlan {
  B: number; N: number; E: number;
  /** Source and target node (b * N + node) of each kept edge, then of each added self loop. */
  src: Int32Array;
  dst: Int32Array;
  /** Row of each kept edge in the flat [B * E] edge list. */
  kept: Int32Array;
  /** Incoming kept edges per node (b * N + node), for the self loops' mean attribute. */
  inDegree: Int32Array;
  /** Row of each edge (kept, then self loops) in the scores [B * (E + N or E), H]. */
  scoreRow: Int32Array;
  selfLoops: boolean;
}

/** Checks edges is an int32 [B, E, 2] tensor (before anything reads it) and returns E. */
function checkEdges(edges: tf.Tensor, B: number): number {
  if (!(edges instanceof tf.Tensor)) throw new AttentionError('INVALID_CONFIG', `edges must be a tf.Tensor, received ${show(edges)}`);
  if (edges.dtype !== 'int32') {
    throw new AttentionError('INVALID_CONFIG', `edges must be int32 (source, target) node indices, received dtype ${edges.dtype}`);
  }
  if (edges.rank !== 3 || edges.shape[0] !== B || edges.shape[2] !== 2) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `edges must have shape [${B}, E, 2] (batch, edge, (source, target)), received shape ${show(edges.shape)}`);
  }
  return edges.shape[1] as number;
}

/**
 * Reads and checks edges [B, E, 2] int32 for N nodes per graph: every entry in [0, N) or the
 * padding pair [-1, -1]. Throws DIMENSION_MISMATCH naming the first bad edge.
 */
export function planEdges(edges: tf.Tensor, B: number, N: number, selfLoops: boolean): EdgePlan {
  const E = checkEdges(edges, B);
  const data = edges.dataSync() as Int32Array;
  const src: number[] = [];
  const dst: number[] = [];
  const kept: number[] = [];
  const scoreRow: number[] = [];
  const inDegree = new Int32Array(B * N);
  const rowsPerGraph = selfLoops ? E + N : E;
  for (let b = 0; b < B; b++) {
    for (let e = 0; e < E; e++) {
      const s = data[(b * E + e) * 2];
      const t = data[(b * E + e) * 2 + 1];
      if (s === -1 && t === -1) continue; // padding
      if (!(s >= 0 && s < N && t >= 0 && t < N)) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `edges[${b}][${e}] is [${s}, ${t}]: node indices must lie in [0, ${N}) (the nodes' length), or be [-1, -1] for padding`);
      }
      if (selfLoops && s === t) continue; // replaced by the added self loop
      src.push(b * N + s);
      dst.push(b * N + t);
      kept.push(b * E + e);
      scoreRow.push(b * rowsPerGraph + e);
      inDegree[b * N + t]++;
    }
  }
  if (selfLoops) {
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < N; i++) {
        src.push(b * N + i);
        dst.push(b * N + i);
        scoreRow.push(b * rowsPerGraph + E + i);
      }
    }
  }
  return {B, N, E, src: Int32Array.from(src), dst: Int32Array.from(dst), kept: Int32Array.from(kept),
    inDegree, scoreRow: Int32Array.from(scoreRow), selfLoops};
}

function checkWeight(name: string, w: tf.Tensor | undefined, shape: number[]): tf.Tensor {
  if (!(w instanceof tf.Tensor)) throw new AttentionError('INVALID_CONFIG', `weights.${name} must be a tf.Tensor, received ${show(w)}`);
  if (w.dtype !== 'float32') throw new AttentionError('INVALID_CONFIG', `weights.${name} must be float32, received dtype ${w.dtype}`);
  if (w.rank !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
    throw new AttentionError('DIMENSION_MISMATCH', `weights.${name} must have shape ${show(shape)}, received shape ${show(w.shape)}`);
  }
  return w;
}

/**
 * The result when there is no node at all (B = 0 or N = 0, so no edge either): zeros of the
 * output's shape, plus the bias, and zero scores. Taken apart from the general path because
 * tfjs-wasm 4.22 gathers from an empty tensor into a wrong shape, in the gradients too. The
 * output is tied to the nodes, weights and attributes by a zero term, so their gradients are
 * zeros of their shapes rather than missing.
 */
function emptyGraphs(nodes: tf.Tensor, weights: GraphWeights, attr: tf.Tensor | undefined, B: number, N: number,
                     width: number, plan: EdgePlan, H: number,
                     returnScores: boolean): tf.Tensor3D | GraphAttentionWithScores {
  return tf.tidy(() => {
    const given = [nodes, ...Object.values(weights).filter((w): w is tf.Tensor => w instanceof tf.Tensor),
      ...(attr != null ? [attr] : [])];
    const tie = tf.mul(tf.addN(given.map((t) => tf.sum(t))), 0);
    let out = tf.add(tf.zeros([B, N, width]), tie);
    if (weights.bias != null) out = tf.add(out, weights.bias);
    if (!returnScores) return out as tf.Tensor3D;
    const scores = tf.zeros([B, plan.selfLoops ? plan.E + N : plan.E, H]);
    return {output: out as tf.Tensor3D, scores: scores as tf.Tensor3D};
  });
}

/**
 * Graph attention (see the file comment) over nodes [B, N, F] and edges [B, E, 2] int32.
 * Returns [B, N, H * C] (concatHeads, the default) or [B, N, C]; with returnAttentionScores,
 * {output, scores}.
 */
export function graphAttention(nodes: tf.Tensor, edges: tf.Tensor, weights: GraphWeights,
                               options?: GraphOptions & {returnAttentionScores?: false}): tf.Tensor3D;
export function graphAttention(nodes: tf.Tensor, edges: tf.Tensor, weights: GraphWeights,
                               options: GraphOptions & {returnAttentionScores: true}): GraphAttentionWithScores;
export function graphAttention(nodes: tf.Tensor, edges: tf.Tensor, weights: GraphWeights,
                               options?: GraphOptions): tf.Tensor3D | GraphAttentionWithScores;
export function graphAttention(nodes: tf.Tensor, edges: tf.Tensor, weights: GraphWeights,
                               options: GraphOptions = {}): tf.Tensor3D | GraphAttentionWithScores {
  options = options ?? {};
  checkArgNames('graphAttention', options, GRAPH_OPTIONS);
  if (!(nodes instanceof tf.Tensor)) throw new AttentionError('INVALID_CONFIG', `nodes must be a tf.Tensor, received ${show(nodes)}`);
  if (nodes.dtype !== 'float32') throw new AttentionError('INVALID_CONFIG', `nodes must be float32, received dtype ${nodes.dtype}`);
  if (nodes.rank !== 3) {
    throw new AttentionError('DIMENSION_MISMATCH', `nodes must have rank 3 ([batch, nodes, features]), received shape ${show(nodes.shape)}`);
  }
  if (weights == null || typeof weights !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `graphAttention needs weights {kernel, ...}, received ${show(weights)}`);
  }
  const [B, N, F] = nodes.shape as [number, number, number];
  const version = options.version ?? 'gat';
  assertOneOf('version', version, GRAPH_VERSIONS);
  const slope = options.negativeSlope ?? 0.2;
  if (typeof slope !== 'number' || !Number.isFinite(slope)) {
    throw new AttentionError('INVALID_CONFIG', `negativeSlope must be a finite number, received ${show(options.negativeSlope)}`);
  }
  const selfLoops = options.addSelfLoops ?? true;
  assertBoolean('addSelfLoops', selfLoops);
  const concat = options.concatHeads ?? true;
  assertBoolean('concatHeads', concat);
  const rate = options.dropout ?? 0;
  assertRate('dropout', rate);
  // Every weight given is one this version and these inputs use: nothing is ignored.
  const used = [...(version === 'gat' ? GAT_WEIGHTS : GATV2_WEIGHTS), ...(options.edgeAttr != null ? EDGE_WEIGHTS[version] : []), 'bias'];
  const unused: Record<string, ForeignName> = {};
  for (const name of [...GAT_WEIGHTS, ...GATV2_WEIGHTS, ...EDGE_WEIGHTS.gat]) {
    if ((used as string[]).includes(name)) continue;
    unused[name] = {code: 'INVALID_CONFIG', advice: EDGE_WEIGHTS[version].includes(name) // one for edge attributes
      ? 'it is for edge attributes: pass options.edgeAttr [B, E, edgeDim], or leave it out'
      : `version '${version}' uses ${used.join(', ')}`};
  }
  checkArgNames('graphAttention weights', weights, used, unused);
  const kernel = weights.kernel;
  if (!(kernel instanceof tf.Tensor)) {
    throw new AttentionError('INVALID_CONFIG', `weights.kernel must be a tf.Tensor [${F}, heads, units], received ${show(kernel)}`);
  }
  if (kernel.rank !== 3 || kernel.shape[0] !== F) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `weights.kernel must be a [${F}, heads, units] tensor (its first dim the nodes' features), received ${show(kernel)}`);
  }
  const [, H, C] = kernel.shape as [number, number, number];
  checkWeight('kernel', kernel, [F, H, C]); // its dtype
  const gat = version === 'gat';
  const attS = gat ? checkWeight('attentionSource', weights.attentionSource, [H, C]) : null;
  const attD = gat ? checkWeight('attentionTarget', weights.attentionTarget, [H, C]) : null;
  const kernelT = gat ? null : checkWeight('targetKernel', weights.targetKernel, [F, H, C]);
  const att = gat ? null : checkWeight('attention', weights.attention, [H, C]);
  const E = checkEdges(edges, B);
  const attr = options.edgeAttr;
  let edgeDim = 0;
  if (attr != null) {
    if (!(attr instanceof tf.Tensor) || attr.dtype !== 'float32') {
      throw new AttentionError('INVALID_CONFIG', `edgeAttr must be a float32 tensor, received ${show(attr)}`);
    }
    if (attr.rank !== 3 || attr.shape[0] !== B || attr.shape[1] !== E) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `edgeAttr must have shape [${B}, ${E}, edgeDim] (one vector per edge), received shape ${show(attr.shape)}`);
    }
    edgeDim = attr.shape[2] as number;
    checkWeight('edgeKernel', weights.edgeKernel, [edgeDim, H, C]);
    if (gat) checkWeight('attentionEdge', weights.attentionEdge, [H, C]);
  }
  if (weights.bias != null) checkWeight('bias', weights.bias, [concat ? H * C : C]);
  const plan = planEdges(edges, B, N, selfLoops);
  const returnScores = options.returnAttentionScores ?? false;
  assertBoolean('returnAttentionScores', returnScores);

  if (B * N === 0) return emptyGraphs(nodes, weights, attr, B, N, concat ? H * C : C, plan, H, returnScores);

  return tf.tidy(() => {
    const BN = B * N;
    const K = plan.src.length;
    const src = tf.tensor1d(plan.src, 'int32');
    const dst = tf.tensor1d(plan.dst, 'int32');
    const x2 = tf.reshape(nodes, [BN, F]);
    const xp = tf.reshape(matMul(x2, tf.reshape(kernel, [F, H * C])), [BN, H, C]);  // x W
    const xj = gatherRows(xp, src);                                                 // [K, H, C]
    // The edges' projected attributes [K, H, C] (kept edges, then the self loops' means).
    let ep: tf.Tensor | null = null;
    if (attr != null) {
      const flat = tf.reshape(attr, [B * plan.E, edgeDim]);
      let rows = gatherRows(flat, tf.tensor1d(plan.kept, 'int32'));                 // [kept, edgeDim]
      if (plan.selfLoops) {
        const keptDst = tf.tensor1d(plan.dst.subarray(0, plan.kept.length), 'int32');
        const sums = tf.unsortedSegmentSum(rows, keptDst, BN);                      // [BN, edgeDim]
        const counts = tf.tensor2d(Float32Array.from(plan.inDegree, (d) => Math.max(d, 1)), [BN, 1]);
        rows = tf.concat([rows, tf.div(sums, counts)], 0);                          // [K, edgeDim]
      }
      ep = tf.reshape(matMul(rows, tf.reshape(weights.edgeKernel!, [edgeDim, H * C])), [K, H, C]);
    }
    let e: tf.Tensor;                                                               // [K, H]
    if (gat) {
      const aS = tf.sum(tf.mul(xp, attS!), -1);                                     // [BN, H]
      const aD = tf.sum(tf.mul(xp, attD!), -1);
      e = tf.add(gatherRows(aS, src), gatherRows(aD, dst));
      if (ep != null) e = tf.add(e, tf.sum(tf.mul(ep, weights.attentionEdge!), -1));
      e = tf.leakyRelu(e, slope);
    } else {
      const xt = tf.reshape(matMul(x2, tf.reshape(kernelT!, [F, H * C])), [BN, H, C]);
      let z = tf.add(xj, gatherRows(xt, dst));                                      // [K, H, C]
      if (ep != null) z = tf.add(z, ep);
      e = tf.sum(tf.mul(tf.leakyRelu(z, slope), att!), -1);
    }
    const alpha = K > 0 ? segmentSoftmax(e, dst, plan.dst, BN) : e;                  // [K, H]
    const used = options.training === true && rate > 0 ? tf.dropout(alpha, rate, undefined, options.seed) : alpha;
    const msg = tf.mul(tf.expandDims(used, -1), xj);                                 // [K, H, C]
    const agg = segmentSum(msg, dst, plan.dst, BN);                                   // [BN, H, C]
    let out = concat ? tf.reshape(agg, [B, N, H * C]) : tf.reshape(tf.mean(agg, 1), [B, N, C]);
    if (weights.bias != null) out = tf.add(out, weights.bias);
    if (!returnScores) return out as tf.Tensor3D;
    const rows = plan.selfLoops ? plan.E + N : plan.E;
    const scores = tf.reshape(tf.unsortedSegmentSum(alpha, tf.tensor1d(plan.scoreRow, 'int32'), B * rows), [B, rows, H]);
    return {output: out as tf.Tensor3D, scores: scores as tf.Tensor3D};
  });
}
