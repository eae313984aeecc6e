// The GraphAttention layer: equal to the one-node-at-a-time reference (forward and
// gradients) through its own weights, named and ordered as documented; inside a tf.model
// it trains with model.fit (every weight's gradient non-zero), saves and loads to identical
// outputs, returns alpha from a graph, drops alpha only while training, and refuses bad
// edges, dtypes, shapes and arguments with codes. No leaks.
import * as tf from '@tensorflow/tfjs';
import {GraphAttention} from '../../src/layers/graph_attention';
import {registerAttentionLayers} from '../../src/layers/register';
import {
  asSaved, expectClose, expectError, expectNoLeaks, maxDiff, randn, reloadedInMemory, title,
} from '../support/helpers';
import {GraphReferenceWeights, referenceGraph} from '../support/reference';

const B = 2, N = 5, F = 3, H = 2, C = 4, D = 2, E = 7;
// Graph 0: a duplicate edge, an input self loop (replaced), node 4 without incoming edges,
// padding. Graph 1: a cycle with a chord and padding in the middle.
const EDGES: number[][][] = [
  [[1, 0], [1, 0], [2, 0], [2, 2], [0, 3], [3, 1], [-1, -1]],
  [[0, 1], [1, 2], [-1, -1], [2, 3], [3, 4], [4, 0], [0, 2]],
];
/** The reference's weight names, in the layer's getWeights() order. */
const ORDER = {
  gat: ['kernel', 'attentionSource', 'attentionTarget', 'edgeKernel', 'attentionEdge', 'bias'],
  gatv2: ['kernel', 'targetKernel', 'attention', 'edgeKernel', 'bias'],
};
const NAMES: Record<string, string> = {
  kernel: 'kernel', attentionSource: 'attention_source', attentionTarget: 'attention_target', targetKernel: 'target_kernel',
  attention: 'attention', edgeKernel: 'edge_kernel', attentionEdge: 'attention_edge', bias: 'bias',
};

function shapeOf(name: string, concat: boolean): number[] {
  if (name === 'kernel' || name === 'targetKernel') return [F, H, C];
  if (name === 'edgeKernel') return [D, H, C];
  if (name === 'bias') return [concat ? H * C : C];
  return [H, C];
}

describe(title('GraphAttention layer against the reference'), () => {
  const cases: ['gat' | 'gatv2', boolean, boolean][] = [];
  for (const version of ['gat', 'gatv2'] as const) {
    for (const withAttr of [false, true]) for (const concat of [true, false]) cases.push([version, withAttr, concat]);
  }
  test.each(cases)('%s, edge features %s, concat %s: weights as documented, output and gradients within 1e-4',
    (version, withAttr, concat) => {
      const layer = new GraphAttention({units: C, numHeads: H, concatHeads: concat, version});
      const x = randn([B, N, F], 41);
      const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
      const attr = withAttr ? randn([B, E, D], 42) : null;
      const inputs = attr != null ? [x, edges, attr] : [x, edges];
      tf.dispose(layer.apply(inputs) as tf.Tensor); // builds
      const order = ORDER[version].filter((n) => withAttr || (n !== 'edgeKernel' && n !== 'attentionEdge'));
      expect(layer.weights.map((w) => w.originalName.replace(`${layer.name}/`, ''))).toEqual(order.map((n) => NAMES[n]));
      const values = order.map((n, i) => randn(shapeOf(n, concat), 50 + i, n === 'bias' ? 0.3 : 0.7));
      layer.setWeights(values);
      const w: Record<string, tf.Tensor> = {};
      order.forEach((n, i) => { w[n] = values[i]; });
      const opts = {version, slope: 0.2, selfLoops: true, concat};
      const cot = randn([B, N, concat ? H * C : C], 43);
      const ours = layer.apply(inputs) as tf.Tensor;
      const ref = referenceGraph(x, EDGES, w as unknown as GraphReferenceWeights, attr, opts);
      expect(ours.shape).toEqual([B, N, concat ? H * C : C]);
      expectClose(ours, ref.output);
      // Gradients for the layer's own variables, the nodes and the edge attributes.
      const {grads} = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(inputs) as tf.Tensor, cot)) as tf.Scalar);
      const diffs = [x, ...(attr != null ? [attr] : [])];
      const gInputs = tf.grads((...a: tf.Tensor[]) =>
        tf.sum(tf.mul(layer.apply(a.length === 2 ? [a[0], edges, a[1]] : [a[0], edges]) as tf.Tensor, cot)))(diffs);
      const refGrads = tf.grads((...a: tf.Tensor[]) => {
        const ws: Record<string, tf.Tensor> = {};
        order.forEach((n, i) => { ws[n] = a[i]; });
        const aa = attr != null ? a[a.length - 1] : null;
        return tf.sum(tf.mul(
          referenceGraph(a[order.length], EDGES, ws as unknown as GraphReferenceWeights, aa, opts).output, cot));
      })([...values, ...diffs]);
      layer.weights.forEach((v, i) => {
        const g = grads[v.name];
        expectClose(g, refGrads[i]);
        expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0);
      });
      gInputs.forEach((g, i) => expectClose(g, refGrads[order.length + i]));
      tf.dispose([x, edges, attr, ...values, cot, ours, ref.output,
        ...Object.values(grads), ...gInputs, ...refGrads] as tf.Tensor[]);
      layer.dispose();
    });
});

/** nodes [N, F], edges [E, 2] int32 (and edgeAttr [E, D]) -> two GraphAttention layers -> [N, 3]. */
function graphModel(withScores = false): {model: tf.LayersModel; layers: GraphAttention[]} {
  const nodes = tf.input({shape: [N, F], name: 'nodes'});
  const edges = tf.input({shape: [E, 2], dtype: 'int32', name: 'edges'});
  const attr = tf.input({shape: [E, D], name: 'edge_attr'});
  const g1 = new GraphAttention({units: C, numHeads: H, edgeDim: D, name: 'gat1'});
  const g2 = new GraphAttention({units: 3, numHeads: H, concatHeads: false, version: 'gatv2', name: 'gat2'});
  const h = tf.layers.activation({activation: 'elu'}).apply(g1.apply([nodes, edges, attr])) as tf.SymbolicTensor;
  const out = g2.apply([h, edges], {returnAttentionScores: withScores}) as tf.SymbolicTensor | tf.SymbolicTensor[];
  return {model: tf.model({inputs: [nodes, edges, attr], outputs: out}), layers: [g1, g2]};
}

describe(title('GraphAttention in a tf.model'), () => {
  const data = () => ({
    x: randn([B, N, F], 61),
    edges: tf.tensor3d(EDGES, [B, E, 2], 'int32'),
    attr: randn([B, E, D], 62),
    y: randn([B, N, 3], 63),
  });

  test('model.fit lowers the loss; every weight has a non-zero gradient; a second fit leaks nothing', async () => {
    const {model} = graphModel();
    const {x, edges, attr, y} = data();
    expect(model.weights.map((w) => w.name)).toEqual(['gat1/kernel', 'gat1/attention_source', 'gat1/attention_target',
      'gat1/edge_kernel', 'gat1/attention_edge', 'gat1/bias', 'gat2/kernel', 'gat2/target_kernel', 'gat2/attention',
      'gat2/bias']);
    // The bias starts at zero; the gradient of every weight, biases included, carries signal.
    const {value, grads} = tf.variableGrads(() =>
      tf.losses.meanSquaredError(y, model.apply([x, edges, attr], {training: true}) as tf.Tensor) as tf.Scalar);
    for (const w of model.trainableWeights) {
      expect(tf.tidy(() => tf.max(tf.abs(grads[w.name])).dataSync()[0])).toBeGreaterThan(0);
    }
    tf.dispose([value, ...Object.values(grads)]);
    model.compile({optimizer: tf.train.adam(0.02), loss: 'meanSquaredError'});
    const first = await model.fit([x, edges, attr], y, {epochs: 15, batchSize: 2, verbose: 0});
    const losses = first.history.loss as number[];
    expect(losses[losses.length - 1]).toBeLessThan(0.8 * losses[0]);
    const before = tf.memory().numTensors; // Adam's moments exist now
    await model.fit([x, edges, attr], y, {epochs: 2, batchSize: 1, verbose: 0});
    expect(tf.memory().numTensors).toBe(before);
    expectNoLeaks(() => tf.dispose(model.predict([x, edges, attr]) as tf.Tensor));
    tf.dispose([x, edges, attr, y]);
    model.dispose();
  });

  test('save -> load gives the same config and identical outputs (alpha included)', async () => {
    registerAttentionLayers();
    const {model} = graphModel(true);
    const {x, edges, attr, y} = data();
    const loaded = await reloadedInMemory(model);
    const json = asSaved;
    expect(json(loaded.getLayer('gat1').getConfig())).toEqual(json(model.getLayer('gat1').getConfig()));
    expect(json(loaded.getLayer('gat2').getConfig())).toEqual(json(model.getLayer('gat2').getConfig()));
    expect(model.getLayer('gat1').getConfig()).toMatchObject({units: C, numHeads: H, edgeDim: D, version: 'gat',
      negativeSlope: 0.2, addSelfLoops: true, concatHeads: true});
    const [o1, s1] = model.predict([x, edges, attr]) as tf.Tensor[];
    const [o2, s2] = loaded.predict([x, edges, attr]) as tf.Tensor[];
    expect(o1.shape).toEqual([B, N, 3]);
    expect(s1.shape).toEqual([B, E + N, H]);
    expect(model.outputs[1].shape).toEqual([null, E + N, H]);
    expect(maxDiff(o1, o2)).toBe(0);
    expect(maxDiff(s1, s2)).toBe(0);
    // alpha sums to 1 over each node's incoming edges (its self loop included).
    const alpha = s1.arraySync() as number[][][];
    for (let i = 0; i < N; i++) {
      const rows = [...EDGES[1].map(([s, t], e) => (t === i && s !== -1 && s !== t ? e : -1))
        .filter((e) => e >= 0), E + i];
      for (let h = 0; h < H; h++) expect(rows.reduce((a, r) => a + alpha[1][r][h], 0)).toBeCloseTo(1, 5);
    }
    tf.dispose([x, edges, attr, y, o1, s1, o2, s2]);
    model.dispose();
    loaded.dispose();
  });

  test('dropout drops alpha only while training', () => {
    const layer = new GraphAttention({units: C, numHeads: H, dropout: 0.5});
    const {x, edges, attr, y} = data();
    const eval1 = layer.apply([x, edges]) as tf.Tensor;
    const eval2 = layer.apply([x, edges], {training: false}) as tf.Tensor;
    const train1 = layer.apply([x, edges], {training: true}) as tf.Tensor;
    expect(maxDiff(eval1, eval2)).toBe(0);
    expect(maxDiff(eval1, train1)).toBeGreaterThan(1e-3);
    tf.dispose([x, edges, attr, y, eval1, eval2, train1]);
    layer.dispose();
  });
});

describe(title('GraphAttention: weights sized before build'), () => {
  test.each([['gat', false], ['gat', true], ['gatv2', true]] as const)(
    '%s, edge features %s: weightShapes(inputShape) lists, without allocating, what build creates', (version, attr) => {
      const layer = new GraphAttention({numHeads: 2, units: 3, version, edgeDim: attr ? 4 : undefined} as never);
      const shapes = [[null, 5, 8], [null, 7, 2], ...(attr ? [[null, 7, 4]] : [])] as (number | null)[][];
      const tensors = tf.memory().numTensors;
      const planned = layer.weightShapes(shapes);
      expect(tf.memory().numTensors).toBe(tensors);
      layer.build(shapes); // outside a graph: weights named without the layer's scope
      expect(layer.weights.map((w) => ({name: w.originalName, shape: w.shape}))).toEqual(planned);
      layer.weights.forEach((w) => w.dispose());
    });

  test('a layer whose weights one tensor cannot hold is refused at build (INVALID_CONFIG), nothing allocated', () => {
    const layer = new GraphAttention({numHeads: 1e6, units: 1e4});
    const tensors = tf.memory().numTensors;
    expectError(() => layer.build([[null, 5, 8], [null, 7, 2]]), 'INVALID_CONFIG',
      /GraphAttention's weight 'kernel' of shape \[8, 1000000, 10000\] would hold .* more than one tensor can hold/);
    expect(tf.memory().numTensors).toBe(tensors);
  });
});

describe(title('GraphAttention: bad inputs and arguments'), () => {
  test('an edge index >= N fails with DIMENSION_MISMATCH at predict, naming the edge', () => {
    const {model} = graphModel();
    const x = randn([1, N, F], 71);
    const bad = tf.tensor3d([[[0, 1], [1, N], [-1, -1], [-1, -1], [-1, -1], [-1, -1], [-1, -1]]], [1, E, 2], 'int32');
    const attr = randn([1, E, D], 72);
    expectError(() => model.predict([x, bad, attr]), 'DIMENSION_MISMATCH', /edges\[0\]\[1\] is \[1, 5\]/);
    tf.dispose([x, bad, attr]);
    model.dispose();
  });

  test('wrong dtypes and shapes are refused with codes, when the graph is built and when called', () => {
    const layer = () => new GraphAttention({units: 2});
    const nodes = tf.input({shape: [N, F]});
    const floatEdges = tf.input({shape: [E, 2]});
    expectError(() => layer().apply([nodes, floatEdges]), 'INVALID_CONFIG', /edges must be int32.*dtype: 'int32'/);
    const edges3 = tf.input({shape: [E, 3], dtype: 'int32'});
    expectError(() => layer().apply([nodes, edges3]), 'DIMENSION_MISMATCH', /edges must have shape \[batch, edges, 2\]/);
    const edges = tf.input({shape: [E, 2], dtype: 'int32'});
    const attr = tf.input({shape: [E + 1, D]});
    expectError(() => layer().apply([nodes, edges, attr]), 'DIMENSION_MISMATCH', /same edges, received 7 and 8/);
    expectError(() => new GraphAttention({units: 2, edgeDim: D}).apply([nodes, edges]), 'INVALID_CONFIG',
      /has edgeDim 2: give \[nodes, edges, edgeAttr/);
    expectError(() => layer().apply(nodes as never), 'INVALID_CONFIG', /takes \[nodes, edges\]/);
    // Eager: float edges, a rank-2 nodes tensor, a built layer given other features.
    const built = layer();
    const x = randn([1, N, F], 73);
    const e = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'int32');
    tf.dispose(built.apply([x, e]) as tf.Tensor);
    const fe = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'float32');
    expectError(() => built.apply([x, fe]), 'INVALID_CONFIG', /edges must be int32/);
    const x2 = randn([1, N, F + 1], 74);
    expectError(() => built.apply([x2, e]), 'DIMENSION_MISMATCH', /last dim \(4\) differs .* built with \(3\)/);
    const flat = randn([N, F], 75);
    expectError(() => built.apply([flat, e]), 'DIMENSION_MISMATCH', /nodes must have shape \[batch, nodes, features\]/);
    expectError(() => built.apply([x, e], {returnScores: true}), 'INVALID_CONFIG', /unknown argument 'returnScores'.*'returnAttentionScores'/);
    // Built without edge attributes: it has no edge weights, so edgeAttr is refused, not ignored.
    const a = randn([1, 1, D], 76);
    expectError(() => built.apply([x, e, a]), 'INVALID_CONFIG', /built without edge attributes.*takes no edgeAttr/);
    tf.dispose([x, e, fe, x2, flat, a]);
  });

  test('bad constructor arguments are refused, with advice for GATConv names', () => {
    expectError(() => new GraphAttention({units: 0}), 'INVALID_CONFIG', /units/);
    expectError(() => new GraphAttention({units: 2, numHeads: 1.5}), 'INVALID_CONFIG', /numHeads/);
    expectError(() => new GraphAttention({units: 2, version: 'gat3' as never}), 'INVALID_CONFIG', /version/);
    expectError(() => new GraphAttention({units: 2, dropout: 1}), 'INVALID_CONFIG', /dropout/);
    expectError(() => new GraphAttention({units: 2, heads: 4} as never), 'INVALID_CONFIG', /did you mean 'numHeads'/);
    expectError(() => new GraphAttention({units: 2, concat: false} as never), 'INVALID_CONFIG', /concatHeads/);
    expectError(() => new GraphAttention({units: 2, fillValue: 'add'} as never), 'UNSUPPORTED', /mean attribute/);
    expectError(() => new GraphAttention({units: 2, negativeSlop: 0.1} as never), 'INVALID_CONFIG', /did you mean 'negativeSlope'/);
  });

  test('eager calls, their gradients and setWeights leak nothing', () => {
    const layer = new GraphAttention({units: C, numHeads: H, edgeDim: D});
    const x = randn([B, N, F], 81);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const attr = randn([B, E, D], 82);
    tf.dispose(layer.apply([x, edges, attr]) as tf.Tensor);
    expectNoLeaks(() => tf.dispose(layer.apply([x, edges, attr], {returnAttentionScores: true}) as tf.Tensor[]));
    expectNoLeaks(() => {
      const {value, grads} = tf.variableGrads(() => tf.sum(layer.apply([x, edges, attr]) as tf.Tensor) as tf.Scalar);
      tf.dispose([value, ...Object.values(grads)]);
    });
    expectNoLeaks(() =>
      tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(layer.apply([a, edges, attr]) as tf.Tensor))([x])));
    expectNoLeaks(() => layer.setWeights(layer.getWeights()));
    expectError(() => layer.setWeights(layer.getWeights().slice(1)), 'DIMENSION_MISMATCH', /takes 6 weights \(kernel,/);
    tf.dispose([x, edges, attr]);
    layer.dispose();
  });
});
