/**
 * Graph attention over an edge list: two small graphs padded to the same node and edge
 * counts (padding edges [-1, -1]), GAT's scoring with edge features, the attention each
 * node gives its incoming edges, and gradients for the weights.
 *
 *   npx ts-node examples/graph_attention.ts
 */
import * as tf from '@tensorflow/tfjs';
import {graphAttention, selectBackend} from '../src';

export interface GraphExampleResult {
  /** The output shape [B, N, H * C]. */
  shape: number[];
  /** For each graph and node, the sum of alpha over its incoming edges and self loop, per head (1 each). */
  alphaSums: number[][][];
  /** Whether every weight's gradient is finite with some entry non-zero. */
  gradsOk: boolean;
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
  return {shape, alphaSums, gradsOk};
}

if (require.main === module) {
  selectBackend('wasm').then(() => main()).catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
