/**
 * The benchmark rows that are not an attention op on (q, k, v):
 *
 * - `matmul`: one 2-D, non-transposed [n, n] x [n, n] `tf.matMul`, the backend's own
 *   fastest product: the practical ceiling for every other row's GFLOP/s.
 * - `mha-layer`: the MultiHeadAttention layer end to end (four projections and
 *   attention), self-attention on x [B, T, E], gradients for x and all eight weights.
 * - `mha-layer-naive`: the same layer, same weights, written as a tfjs user would
 *   write it by hand: `tf.matMul` projections and the `naive` attention, with autograd.
 * - `graph`: the graphAttention op (GAT, self loops added) on one random graph of E = S
 *   edges among N = T nodes (graphShape: N = E / GRAPH_DEGREE), F = H * D features in,
 *   H heads of D channels out; fwd+bwd takes gradients for the nodes and every weight.
 * - `knn-graph`, `geometric`, `equivariant`: the rows on point clouds (geometric_workloads.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {MultiHeadAttention} from '../layers/multi_head_attention';
import {graphAttention, GraphWeights} from '../ops/graph';
import {POINT_WORKLOADS} from './geometric_workloads';
import {AttentionShape, PASSES, Pass} from './measure';
import {Workload} from './workload_types';

export {Prepared, Workload} from './workload_types';
import {naiveAttention} from './naive';

/**
 * The `matmul` row's shape: n = T = S = D (B = H = G = 1): a [T, D] x [D, S] product.
 */
export const matmulShape = (n: number): AttentionShape => ({B: 1, H: 1, G: 1, T: n, S: n, D: n});

const matmul: Workload = {
  description: 'the backend\'s 2-D non-transposed [n, n] x [n, n] tf.matMul (n = T = S = D): the GFLOP/s ceiling',
  passes: ['fwd'],
  flops: ({T, S, D}) => 2 * T * S * D,
  floorBytes: ({T, S, D}) => 4 * (T * D + D * S + T * S),
  prepare({T, S, D}, seed) {
    const a = tf.randomNormal([T, D], 0, 1, 'float32', seed);
    const b = tf.randomNormal([D, S], 0, 1, 'float32', seed + 1);
    return {
      pass: (p) => (p === 'fwd' ? () => [tf.matMul(a, b)] : null),
      dispose: () => tf.dispose([a, b]),
    };
  },
};

/**
 * Projections plus attention: 2*B*T*E*(H + 2G)*D for q, k, v, 2*B*T*H*D*E for the
 * output, 4*B*H*T*S*D for attention (E = H * D); forward+backward is three times that.
 */
function layerFlops({B, H, G, T, S, D}: AttentionShape, pass: Pass): number {
  const E = H * D;
  const fwd = 2 * B * T * E * (H + 2 * G) * D + 2 * B * T * H * D * E + 4 * B * H * T * S * D;
  return pass === 'fwd' ? fwd : 3 * fwd;
}

/** x, the eight weights and the output; fwd+bwd also dOut and a gradient for each of x and the weights. */
function layerFloor({B, H, G, T, D}: AttentionShape, pass: Pass): number {
  const E = H * D;
  const weights = E * (H + 2 * G) * D + (H + 2 * G) * D + H * D * E + E;
  const fwd = 4 * (2 * B * T * E + weights);
  return pass === 'fwd' ? fwd : 2 * fwd;
}

/** A layer with heads H, kv heads G, head dim D on E = H * D features, built on [B, T, E], seeded weights. */
function buildLayer({B, H, G, T, D}: AttentionShape, seed: number): MultiHeadAttention {
  const E = H * D;
  const layer = new MultiHeadAttention({
    numHeads: H, numKvHeads: G, headDim: D,
    kernelInitializer: tf.initializers.glorotUniform({seed}),
    biasInitializer: tf.initializers.randomNormal({stddev: 0.1, seed: seed + 1}),
  });
  layer.build([B, T, E]);
  return layer;
}

/** Frees a layer's weights; tfjs refuses layer.dispose() for a layer never called. */
function freeLayer(layer: MultiHeadAttention): void {
  for (const w of layer.weights) w.dispose();
}

const mhaLayer: Workload = {
  description: 'MultiHeadAttention layer end to end (projections + attention) on x [B, T, E = H*D]; ' +
    'fwd+bwd: gradients for x and all 8 weights',
  passes: ['fwd', 'fwd+bwd'],
  flops: layerFlops,
  floorBytes: layerFloor,
  prepare(shape, seed, passes = PASSES) {
    const layer = buildLayer(shape, seed);
    const init = tf.randomNormal([shape.B, shape.T, shape.H * shape.D], 0, 1, 'float32', seed + 2);
    const x = tf.variable(init); // a copy
    init.dispose();
    const dy = passes.includes('fwd+bwd') ? tf.randomNormal(x.shape, 0, 1, 'float32', seed + 3) : null;
    // LayerVariable.read() is the tf.Variable itself: the gradients are those training takes.
    const variables = [x, ...layer.trainableWeights.map((w) => w.read() as tf.Variable)];
    return {
      pass: (p) => {
        if (p === 'fwd') return () => [layer.apply(x) as tf.Tensor];
        return () => {
          const {value, grads} = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(x) as tf.Tensor, dy!)), variables);
          return [value, ...variables.map((v) => grads[v.name])];
        };
      },
      dispose: () => {
        tf.dispose([x, ...(dy != null ? [dy] : [])]);
        freeLayer(layer);
      },
    };
  },
};

/** Projections by tf.matMul on [B*T, E] views, attention by naiveAttention. */
function naiveLayer(x: tf.Tensor, [wq, bq, wk, bk, wv, bv, wo, bo]: tf.Tensor[], H: number, G: number): tf.Tensor {
  const [B, T, E] = x.shape as number[];
  const D = wq.shape[2] as number;
  const x2 = tf.reshape(x, [B * T, E]);
  const heads = (w: tf.Tensor, b: tf.Tensor, n: number) => tf.transpose(
    tf.reshape(tf.add(tf.matMul(x2, tf.reshape(w, [E, n * D])), tf.reshape(b, [n * D])), [B, T, n, D]), [0, 2, 1, 3]);
  const o = naiveAttention(heads(wq, bq, H), heads(wk, bk, G), heads(wv, bv, G)); // [B, H, T, D]
  const flat = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B * T, H * D]);
  return tf.reshape(tf.add(tf.matMul(flat, tf.reshape(wo, [H * D, -1])), bo), [B, T, -1]);
}

const mhaLayerNaive: Workload = {
  description: 'the same layer and weights by hand: tf.matMul projections + naive attention, autograd',
  passes: ['fwd', 'fwd+bwd'],
  flops: layerFlops,
  floorBytes: layerFloor,
  prepare(shape, seed, passes = PASSES) {
    const layer = buildLayer(shape, seed);
    const weights = layer.getWeights().map((w) => w.clone());
    freeLayer(layer);
    const x = tf.randomNormal([shape.B, shape.T, shape.H * shape.D], 0, 1, 'float32', seed + 2);
    const dy = passes.includes('fwd+bwd') ? tf.randomNormal(x.shape, 0, 1, 'float32', seed + 3) : null;
    const f = (input: tf.Tensor, ...ws: tf.Tensor[]) => naiveLayer(input, ws, shape.H, shape.G);
    return {
      pass: (p) => (p === 'fwd' ? () => [f(x, ...weights)]
        : () => tf.grads((...args: tf.Tensor[]) => tf.sum(tf.mul(f(args[0], ...args.slice(1)), dy!)))([x, ...weights])),
      dispose: () => tf.dispose([x, ...(dy != null ? [dy] : []), ...weights]),
    };
  },
};

/** Mean edges into a node of the graph row. */
export const GRAPH_DEGREE = 10;
/** The graph row's shape for E edges: N = E / GRAPH_DEGREE nodes (T), E edges (S), 4 heads of 16 channels. */
export const graphShape = (E: number): AttentionShape =>
  ({B: 1, H: 4, G: 4, T: Math.max(1, Math.round(E / GRAPH_DEGREE)), S: E, D: 16});

const graph: Workload = {
  description: `graphAttention (GAT): one random graph of E = S edges and N = E/${GRAPH_DEGREE} = T nodes, ` +
    'F = H*D, H heads of D',
  passes: ['fwd', 'fwd+bwd'],
  // The node projection [N, F] x [F, H*D] and the messages (alpha * x'_j summed: E+N rows of H*D);
  // fwd+bwd: three times that.
  flops: ({T, S, H, D}, p) => (p === 'fwd' ? 1 : 3) * (2 * T * (H * D) * (H * D) + 2 * (S + T) * H * D),
  // Nodes, edges, the weights and the output (fwd+bwd: also its cotangent and the gradients).
  floorBytes: ({T, S, H, D}, p) => {
    const io = T * H * D + 2 * S + (H * D) * (H * D) + 2 * H * D + T * H * D;
    return 4 * (p === 'fwd' ? io : io + T * H * D + T * H * D + (H * D) * (H * D) + 2 * H * D);
  },
  prepare({T: N, S: E, H, D}, seed, passes = PASSES) {
    const F = H * D;
    const x = tf.randomNormal([1, N, F], 0, 1, 'float32', seed);
    const src = tf.randomUniform([1, E, 1], 0, N, 'int32', seed + 1);
    const dst = tf.randomUniform([1, E, 1], 0, N, 'int32', seed + 2);
    const edges = tf.concat([src, dst], 2);
    tf.dispose([src, dst]);
    const w: GraphWeights = {
      kernel: tf.randomNormal([F, H, D], 0, 1 / Math.sqrt(F), 'float32', seed + 3),
      attentionSource: tf.randomNormal([H, D], 0, 0.3, 'float32', seed + 4),
      attentionTarget: tf.randomNormal([H, D], 0, 0.3, 'float32', seed + 5),
    };
    const dy = passes.includes('fwd+bwd') ? tf.randomNormal([1, N, F], 0, 1, 'float32', seed + 6) : null;
    const f = (xx: tf.Tensor, kernel: tf.Tensor, aS: tf.Tensor, aT: tf.Tensor) =>
      graphAttention(xx, edges, {kernel, attentionSource: aS, attentionTarget: aT});
    const args = [x, w.kernel, w.attentionSource!, w.attentionTarget!];
    return {
      pass: (p) => (p === 'fwd' ? () => [f(x, w.kernel, w.attentionSource!, w.attentionTarget!)]
        : () => tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
          tf.sum(tf.mul(f(a, b, c, d), dy!)))(args)),
      dispose: () => tf.dispose([...args, edges, ...(dy != null ? [dy] : [])]),
    };
  },
};

export const WORKLOADS: Readonly<Record<string, Workload>> = {
  matmul,
  'mha-layer': mhaLayer,
  'mha-layer-naive': mhaLayerNaive,
  graph,
  ...POINT_WORKLOADS,
};

/** The layer rows' default shape: B=4, T=S=512, E=256, 8 heads, 2 kv heads (D = 32). */
export const LAYER_SHAPE: AttentionShape = {B: 4, H: 8, G: 2, T: 512, S: 512, D: 32};
