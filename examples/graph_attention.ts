/**
 * Graph attention over an edge list. First the op: two small graphs padded to the same
 * node and edge counts (padding edges [-1, -1]), GAT's scoring with edge features, the
 * attention each node gives its incoming edges, and gradients for the weights. Then the
 * layer: a tf.model of two GraphAttention layers (GAT with edge features, then GATv2)
 * trained with model.fit to give each node the mean first feature of its in-neighbours
 * (something only the edges tell), saved and loaded back to the same predictions.
 *
 *   npx ts-node examples/graph_attention.ts
 */
import * as tf from '@tensorflow/tfjs';
import {GraphAttention, graphAttention} from '../src/node';
import {runAsProgram} from './run';

export interface GraphExampleResult {
  /** The output shape [B, N, H * C]. */
  shape: number[];
  /** For each graph and node, the sum of alpha over its incoming edges and self loop, per head (1 each). */
  alphaSums: number[][][];
  /** Whether every weight's gradient is finite with some entry non-zero. */
  gradsOk: boolean;
  /** The layer model's mean squared error after its first and last epoch of model.fit. */
  firstLoss: number;
  lastLoss: number;
  /** The error of always predicting the targets' mean (what ignoring the graph gives at best). */
  constantLoss: number;
  /** The names of the first GraphAttention layer's weights, in getWeights() order. */
  weightNames: string[];
  /** Largest difference between the model's predictions and those of its saved and loaded copy. */
  reloadDiff: number;
}

/**
 * Random graphs of n nodes and e edges (no self loops; the last edges of some graphs are
 * padding), node features, edge attributes, and each node's target: the mean of feature 0
 * over the sources of its incoming edges (0 for a node with none).
 */
function neighbourMeanData(count: number, n: number, e: number, f: number, edgeDim: number, seed: number) {
  let state = seed;
  const rand = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  const nodes: number[][][] = [];
  const edges: number[][][] = [];
  const attrs: number[][][] = [];
  const targets: number[][][] = [];
  for (let g = 0; g < count; g++) {
    const x = Array.from({length: n}, () => Array.from({length: f}, () => rand() * 2 - 1));
    const used = e - Math.floor(rand() * 3);                  // 0-2 padding edges
    const list = Array.from({length: e}, (_, k) => {
      if (k >= used) return [-1, -1];
      const s = Math.floor(rand() * n);
      return [s, (s + 1 + Math.floor(rand() * (n - 1))) % n];   // any node but s
    });
    const sum = new Array(n).fill(0);
    const deg = new Array(n).fill(0);
    for (const [s, t] of list) if (s >= 0) { sum[t] += x[s][0]; deg[t]++; }
    nodes.push(x);
    edges.push(list);
    attrs.push(list.map(() => Array.from({length: edgeDim}, () => rand())));
    targets.push(sum.map((v, i) => [deg[i] > 0 ? v / deg[i] : 0]));
  }
  return {
    nodes: tf.tensor3d(nodes), edges: tf.tensor3d(edges, undefined, 'int32'),
    attrs: tf.tensor3d(attrs), targets: tf.tensor3d(targets),
  };
}

/** A two-layer graph network fitted to neighbourMeanData, saved to memory and loaded back. */
async function layerExample(log: (line: string) => void) {
  const [n, e, f, edgeDim] = [6, 8, 3, 2];
  const data = neighbourMeanData(96, n, e, f, edgeDim, 11);
  const nodes = tf.input({shape: [n, f]});
  const edges = tf.input({shape: [e, 2], dtype: 'int32'});
  const attrs = tf.input({shape: [e, edgeDim]});
  // Seeded initializers, so the run prints the same figures each time.
  const init = (seed: number) => tf.initializers.glorotUniform({seed});
  const first = new GraphAttention({units: 8, numHeads: 2, name: 'gat', kernelInitializer: init(1),
    attentionInitializer: init(2)});
  let h = first.apply([nodes, edges, attrs]) as tf.SymbolicTensor;             // [B, n, 16]
  h = tf.layers.activation({activation: 'elu'}).apply(h) as tf.SymbolicTensor;
  h = new GraphAttention({units: 8, numHeads: 2, concatHeads: false, version: 'gatv2', name: 'gatv2',
    kernelInitializer: init(3), attentionInitializer: init(4)}).apply([h, edges]) as tf.SymbolicTensor; // [B, n, 8]
  const out = tf.layers.dense({units: 1, kernelInitializer: init(5)}).apply(h) as tf.SymbolicTensor;   // [B, n, 1]
  const model = tf.model({inputs: [nodes, edges, attrs], outputs: out});
  const optimizer = tf.train.adam(0.01);
  model.compile({optimizer, loss: 'meanSquaredError'});
  const inputs = [data.nodes, data.edges, data.attrs];
  const history = await model.fit(inputs, data.targets, {epochs: 40, batchSize: 16, shuffle: false, verbose: 0});
  const losses = history.history.loss as number[];
  const constantLoss = tf.tidy(() => tf.mean(tf.square(tf.sub(data.targets, tf.mean(data.targets)))).dataSync()[0]);
  log(`graph attention layers: model.fit mse ${losses[0].toFixed(4)} -> ${losses[losses.length - 1].toFixed(4)} ` +
    `over ${losses.length} epochs (a constant guess: ${constantLoss.toFixed(4)})`);
  // Saving to memory and loading: the layer is registered for serialization.
  let artifacts: tf.io.ModelArtifacts | null = null;
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
  const reloadDiff = tf.tidy(() =>
    tf.max(tf.abs(tf.sub(model.predict(inputs) as tf.Tensor, loaded.predict(inputs) as tf.Tensor))).dataSync()[0]);
  const weightNames = first.weights.map((w) => w.originalName.split('/').pop()!);
  loaded.dispose();
  model.dispose();
  optimizer.dispose(); // a model does not dispose an optimizer it was handed
  tf.dispose(Object.values(data));
  return {firstLoss: losses[0], lastLoss: losses[losses.length - 1], constantLoss, weightNames, reloadDiff};
}

export async function main(log: (line: string) => void = console.log): Promise<GraphExampleResult> {
  const [B, N, F, H, C, edgeDim] = [2, 4, 3, 2, 5, 2];
  // (source, target): graph 0 is a cycle with a chord, graph 1 a star into node 0.
  const edges = tf.tensor3d([
    [[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]],
    [[1, 0], [2, 0], [3, 0], [-1, -1], [-1, -1]],
  ], [B, 5, 2], 'int32');
  const nodes = tf.randomNormal([B, N, F], 0, 1, 'float32', 1);
  const edgeAttr = tf.randomNormal([B, 5, edgeDim], 0, 1, 'float32', 2);
  const init = (shape: number[], seed: number) => {
    const start = tf.randomNormal(shape, 0, 0.5, 'float32', seed);
    const v = tf.variable(start);
    start.dispose();
    return v;
  };
  const weights = {
    kernel: init([F, H, C], 3), attentionSource: init([H, C], 4), attentionTarget: init([H, C], 5),
    edgeKernel: init([edgeDim, H, C], 6), attentionEdge: init([H, C], 7), bias: init([H * C], 8),
  };
  const {output, scores} = graphAttention(nodes, edges, weights, {edgeAttr, returnAttentionScores: true});
  // alpha per incoming edge: rows 0..E-1 are the input edges, rows E..E+N-1 the self loops.
  const alpha = (await scores.array()) as number[][][];
  const edgeList = (await edges.array()) as number[][][];
  const alphaSums = alpha.map((rows, b) => Array.from({length: N}, (_, i) => Array.from({length: H}, (_, h) => {
    let sum = rows[5 + i][h];
    edgeList[b].forEach(([s, t], e) => { if (s !== -1 && t === i && s !== t) sum += rows[e][h]; });
    return sum;
  })));
  log(`graph attention: output [${output.shape}]; graph 1, node 0 (3 incoming edges + self loop), head 0 alpha: ` +
    [0, 1, 2, 5].map((e) => alpha[1][e][0].toFixed(3)).join(', '));
  const {value, grads} = tf.variableGrads(() =>
    tf.mean(tf.square(graphAttention(nodes, edges, weights, {edgeAttr}))) as tf.Scalar);
  let gradsOk = true;
  for (const g of Object.values(grads)) {
    const data = await g.data();
    gradsOk = gradsOk && data.every(Number.isFinite) && data.some((d) => d !== 0);
  }
  const shape = output.shape;
  tf.dispose([edges, nodes, edgeAttr, output, scores, value, ...Object.values(grads), ...Object.values(weights)]);
  return {shape, alphaSums, gradsOk, ...await layerExample(log)};
}

if (require.main === module) runAsProgram(() => main(), 'wasm');
