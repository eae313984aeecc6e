// The EquivariantAttention layer: its weights named, shaped and ordered as documented for
// each input arrangement, its output equal to the float64 reference through them; two
// stacked layers in a tf.model (features, positions, int32 edges, edge attributes,
// velocities) train by model.fit, every weight moving, and save / load to identical
// outputs; getConfig round trips; bad arguments and inputs are refused with codes. No leaks.
import * as tf from '@tensorflow/tfjs';
import {EquivariantAttention} from '../../src/layers/equivariant_attention';
import {
  asSaved, expectClose, expectError, expectNoLeaks, maxDiff, randn, reloadedInMemory, title,
} from '../support/helpers';
import {arr, referenceEquivariant} from '../support/equivariant_reference';

const B = 2, N = 4, F = 3, U = 5, A = 2, E = 6, D = 3;
// Graph 0: a self loop, node 3 without incoming edges, padding. Graph 1: a ring and a chord.
const EDGES: number[][][] = [
  [[1, 0], [2, 0], [2, 2], [0, 1], [-1, -1], [-1, -1]],
  [[0, 1], [1, 2], [2, 3], [3, 0], [0, 2], [-1, -1]],
];
const CORE = ['edge_kernel_0', 'edge_bias_0', 'edge_kernel_1', 'edge_bias_1', 'attention_kernel', 'attention_bias',
  'coord_kernel_0', 'coord_bias_0', 'coord_kernel_1', 'node_kernel_0', 'node_bias_0', 'node_kernel_1', 'node_bias_1'];
const VELOCITY = ['velocity_kernel_0', 'velocity_bias_0', 'velocity_kernel_1', 'velocity_bias_1'];
/** The reference's (and the op's) weight keys, by layer name. */
const camel = (name: string) => name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());

function shapesFor(a: number, units: number, velocity: boolean): number[][] {
  const core = [[2 * F + 1 + a, U], [U], [U, U], [U], [U, 1], [1], [U, U], [U], [U, 1], [F + U, U], [U], [U, units],
    [units]];
  return velocity ? [...core, [F, U], [U], [U, 1], [1]] : core;
}

const data = () => ({
  h: randn([B, N, F], 1),
  x: randn([B, N, D], 2),
  edges: tf.tensor3d(EDGES, [B, E, 2], 'int32'),
  attr: randn([B, E, A], 3),
  vel: randn([B, N, D], 4),
});

describe(title('EquivariantAttention: weights and the reference'), () => {
  const cases: [string, boolean, boolean, number | null][] = [
    ['[h, x, edges]', false, false, null], ['[h, x, edges, edgeAttr]', true, false, null],
    ['[h, x, edges, velocities]', false, true, null], ['[h, x, edges, edgeAttr, velocities], units 2, no residual', true, true, 2],
  ];
  test.each(cases)('%s: weights named, shaped and ordered as documented; output equals the reference', (_n, withAttr, velocity, units) => {
    const {h, x, edges, attr, vel} = data();
    const layer = new EquivariantAttention({hiddenUnits: U, velocity, units, residual: units == null, activation: 'swish'});
    const inputs = [h, x, edges, ...(withAttr ? [attr] : []), ...(velocity ? [vel] : [])];
    tf.dispose(layer.apply(inputs) as tf.Tensor[]); // builds
    const names = [...CORE, ...(velocity ? VELOCITY : [])];
    expect(layer.weights.map((w) => w.originalName.replace(`${layer.name}/`, ''))).toEqual(names);
    expect(layer.weights.map((w) => w.shape)).toEqual(shapesFor(withAttr ? A : 0, units ?? F, velocity));
    expect(layer.edgeDim).toBe(withAttr ? A : null);
    // EGNN's phi_x output: glorot-uniform with gain 0.001, bound 0.001 sqrt(6 / (U + 1)).
    const coord = tf.tidy(() => tf.max(tf.abs(layer.weights[8].read())).dataSync()[0]);
    expect(coord).toBeLessThanOrEqual(1e-3 * Math.sqrt(6 / (U + 1)));
    expect(coord).toBeGreaterThan(0);
    const values = layer.weights.map((w, k) => randn(w.shape as number[], 10 + k, 0.6));
    layer.setWeights(values);
    const [h1, x1] = layer.apply(inputs) as tf.Tensor[];
    const named: Record<string, tf.Tensor> = {features: h, positions: x, ...(withAttr ? {edgeAttr: attr} : {}),
      ...(velocity ? {velocities: vel} : {})};
    names.forEach((n, k) => { named[camel(n)] = values[k]; });
    const ref = referenceEquivariant(Object.fromEntries(Object.entries(named).map(([k, t]) => [k, arr(t)])), EDGES,
      {coordsWeight: 1, aggregation: 'mean', activation: 'swish', residual: units == null});
    const [wantH, wantX] = [tf.tensor(ref.h), tf.tensor(ref.x)];
    expectClose(h1, wantH);
    expectClose(x1, wantX);
    expect(maxDiff(x1, x)).toBeGreaterThan(0.05);
    tf.dispose([h, x, edges, attr, vel, ...values, h1, x1, wantH, wantX]);
    layer.dispose();
  });

  test('weightShapes(inputShape) lists what build creates, allocating nothing; the symmetry flags are set', () => {
    const layer = new EquivariantAttention({hiddenUnits: U, velocity: true, edgeDim: A});
    const shapes = [[null, N, F], [null, N, D], [null, E, 2], [null, E, A], [null, N, D]];
    const tensors = tf.memory().numTensors;
    const planned = layer.weightShapes(shapes);
    expect(tf.memory().numTensors).toBe(tensors);
    layer.build(shapes);
    expect(layer.weights.map((w) => ({name: w.originalName, shape: w.shape}))).toEqual(planned);
    expect(layer.computeOutputShape(shapes)).toEqual([[null, N, F], [null, N, D]]);
    expect(layer.computeMask()).toEqual([null, null]);
    expect([layer.isRotationEquivariant, layer.isTranslationInvariant]).toEqual([true, true]);
    layer.weights.forEach((w) => w.dispose());
  });
});

/** h, x, edges, edgeAttr, velocities -> two stacked EquivariantAttention layers -> [h'' [N, 2], x'' [N, D]]. */
function egnnModel(withScores = false): tf.LayersModel {
  const h = tf.input({shape: [N, F], name: 'h'});
  const x = tf.input({shape: [N, D], name: 'x'});
  const edges = tf.input({shape: [E, 2], dtype: 'int32', name: 'edges'});
  const attr = tf.input({shape: [E, A], name: 'edge_attr'});
  const vel = tf.input({shape: [N, D], name: 'v'});
  const l1 = new EquivariantAttention({hiddenUnits: U, velocity: true, name: 'egnn1'});
  const l2 = new EquivariantAttention({hiddenUnits: U, units: 2, residual: false, edgeDim: A, velocity: true,
    coordinateAggregation: 'sum', coordsWeight: 0.5, activation: 'tanh', name: 'egnn2'});
  const [h1, x1] = l1.apply([h, x, edges, attr, vel]) as tf.SymbolicTensor[];
  const out = l2.apply([h1, x1, edges, attr, vel], {returnAttentionScores: withScores}) as tf.SymbolicTensor[];
  return tf.model({inputs: [h, x, edges, attr, vel], outputs: out});
}

describe(title('EquivariantAttention in a tf.model'), () => {
  test('one model.fit step moves every weight of both layers; a second fit and predict leak nothing', async () => {
    const model = egnnModel();
    const {h, x, edges, attr, vel} = data();
    const [yh, yx] = [randn([B, N, 2], 5), randn([B, N, D], 6)];
    expect(model.outputs.map((o) => o.shape)).toEqual([[null, N, 2], [null, N, D]]);
    expect(model.weights.map((w) => w.name)).toEqual([
      ...[...CORE, ...VELOCITY].map((n) => `egnn1/${n}`), ...[...CORE, ...VELOCITY].map((n) => `egnn2/${n}`)]);
    const before = model.getWeights().map((w) => w.clone());
    model.compile({optimizer: tf.train.adam(0.01), loss: 'meanSquaredError'});
    await model.fit([h, x, edges, attr, vel], [yh, yx], {epochs: 1, batchSize: B, verbose: 0});
    const after = model.getWeights();
    model.weights.forEach((w, k) => {
      const moved = maxDiff(after[k], before[k]);
      if (!(moved > 1e-4)) throw new Error(`${w.name} did not move (${moved})`);
    });
    const count = tf.memory().numTensors; // Adam's moments exist now
    await model.fit([h, x, edges, attr, vel], [yh, yx], {epochs: 1, batchSize: 1, verbose: 0});
    expect(tf.memory().numTensors).toBe(count);
    expectNoLeaks(() => tf.dispose(model.predict([h, x, edges, attr, vel]) as tf.Tensor[]));
    tf.dispose([h, x, edges, attr, vel, yh, yx, ...before]);
    model.dispose();
  });

  test('save -> tf.loadLayersModel gives the same configs and identical outputs (gates included)', async () => {
    const model = egnnModel(true);
    const {h, x, edges, attr, vel} = data();
    const loaded = await reloadedInMemory(model);
    const json = asSaved;
    for (const name of ['egnn1', 'egnn2']) {
      expect(json(loaded.getLayer(name).getConfig())).toEqual(json(model.getLayer(name).getConfig()));
    }
    expect(model.getLayer('egnn2').getConfig()).toMatchObject({units: 2, hiddenUnits: U, edgeDim: A, velocity: true,
      coordsWeight: 0.5, coordinateAggregation: 'sum', activation: 'tanh', residual: false});
    const o1 = model.predict([h, x, edges, attr, vel]) as tf.Tensor[];
    const o2 = loaded.predict([h, x, edges, attr, vel]) as tf.Tensor[];
    expect(o1.map((t) => t.shape)).toEqual([[B, N, 2], [B, N, D], [B, E, 1]]);
    o1.forEach((t, k) => expect(maxDiff(t, o2[k])).toBe(0));
    tf.dispose([h, x, edges, attr, vel, ...o1, ...o2]);
    model.dispose();
    loaded.dispose();
  });

  test('getConfig -> fromConfig gives a layer with the same config and, with the same weights, the same outputs', () => {
    const layer = new EquivariantAttention({hiddenUnits: U, edgeDim: A, velocity: true, coordsWeight: 2,
      coordinateAggregation: 'sum', activation: 'relu', kernelInitializer: 'heNormal', biasInitializer: 'ones',
      kernelRegularizer: 'l1l2', name: 'eq'});
    const {h, x, edges, attr, vel} = data();
    const o1 = layer.apply([h, x, edges, attr, vel]) as tf.Tensor[];
    const config = layer.getConfig();
    const copy = tf.serialization.SerializationMap.getMap().classNameMap.EquivariantAttention[1](
      EquivariantAttention as never, config) as unknown as EquivariantAttention;
    expect(copy.getConfig()).toEqual(config);
    tf.dispose(copy.apply([h, x, edges, attr, vel]) as tf.Tensor[]);
    copy.setWeights(layer.getWeights());
    const o2 = copy.apply([h, x, edges, attr, vel]) as tf.Tensor[];
    o1.forEach((t, k) => expect(maxDiff(t, o2[k])).toBe(0));
    tf.dispose([h, x, edges, attr, vel, ...o1, ...o2]);
    layer.dispose();
    copy.dispose();
  });
});

describe(title('EquivariantAttention: refusals and leaks'), () => {
  test('bad constructor arguments are refused, with advice for EGNN names', () => {
    expectError(() => new EquivariantAttention({units: 0}), 'INVALID_CONFIG', /units must be a positive integer/);
    expectError(() => new EquivariantAttention({hiddenUnits: 2.5}), 'INVALID_CONFIG', /hiddenUnits/);
    expectError(() => new EquivariantAttention({velocity: 'yes'} as never), 'INVALID_CONFIG', /velocity must be a boolean/);
    expectError(() => new EquivariantAttention({coordinateAggregation: 'max'} as never), 'INVALID_CONFIG', /'mean', 'sum'/);
    expectError(() => new EquivariantAttention({activation: 'silu'}), 'INVALID_CONFIG', /use 'swish'/);
    expectError(() => new EquivariantAttention({coordsWeight: Infinity}), 'INVALID_CONFIG', /coordsWeight/);
    expectError(() => new EquivariantAttention({hiddenNf: 32} as never), 'INVALID_CONFIG', /did you mean 'hiddenUnits'/);
    expectError(() => new EquivariantAttention({hidden_nf: 32} as never), 'INVALID_CONFIG', /did you mean 'hiddenUnits'/);
    expectError(() => new EquivariantAttention({coordsAgg: 'sum'} as never), 'INVALID_CONFIG', /'coordinateAggregation'/);
    expectError(() => new EquivariantAttention({recurrent: false} as never), 'INVALID_CONFIG', /'residual'/);
    expectError(() => new EquivariantAttention({attention: false} as never), 'UNSUPPORTED', /always on/);
    expectError(() => new EquivariantAttention({tanh: true} as never), 'UNSUPPORTED', /no tanh/);
    expectError(() => new EquivariantAttention({returnAttentionScores: true} as never), 'INVALID_CONFIG', /argument of apply/);
    // EGNN's attention=True is what the layer does: accepted without a word.
    expect(new EquivariantAttention({attention: true} as never).hiddenUnits).toBe(64);
  });

  test('bad inputs are refused with codes, when the graph is built and when called', () => {
    const h = tf.input({shape: [N, F]});
    const x = tf.input({shape: [N, D]});
    const edges = tf.input({shape: [E, 2], dtype: 'int32'});
    const make = (args = {}) => new EquivariantAttention({hiddenUnits: U, ...args});
    expectError(() => make().apply([h, x, tf.input({shape: [E, 2]})]), 'INVALID_CONFIG', /edges must be int32.*dtype: 'int32'/);
    expectError(() => make({velocity: true}).apply([h, x, edges]), 'INVALID_CONFIG',
      /takes \[features, positions, edges, velocities\].*received 3 inputs/);
    expectError(() => make({edgeDim: A}).apply([h, x, edges]), 'INVALID_CONFIG', /edges, edgeAttr\].*edgeDim 2/);
    expectError(() => make().apply([h, x, edges, tf.input({shape: [N, D]})]), 'DIMENSION_MISMATCH',
      /same edges, received 6 and 4 of them \(velocities need a layer made with velocity: true\)/);
    expectError(() => make({velocity: true}).apply([h, x, edges, tf.input({shape: [N, 2]})]), 'DIMENSION_MISMATCH',
      /velocities must have the positions' d \(3\)/);
    expectError(() => make({velocity: true}).apply([h, x, edges, tf.input({shape: [N + 1, D]})]), 'DIMENSION_MISMATCH',
      /share the number of nodes/);
    expectError(() => make({units: 2}).apply([h, x, edges]), 'INVALID_CONFIG', /units \(2\) must equal .* \(3\) with residual/);
    expectError(() => make().apply([h, x] as never), 'INVALID_CONFIG', /takes \[features, positions, edges, edgeAttr\?/);
    expectError(() => make().apply([h, x, edges], {returnScores: true}), 'INVALID_CONFIG', /unknown argument 'returnScores'.*'returnAttentionScores'/);
    // Eager: a built layer given other features, edge attributes it has no weights for, other batch sizes.
    const {h: ht, x: xt, edges: et, attr, vel} = data();
    const built = make();
    tf.dispose(built.apply([ht, xt, et]) as tf.Tensor[]);
    const h4 = randn([B, N, F + 1], 7);
    expectError(() => built.apply([h4, xt, et]), 'DIMENSION_MISMATCH', /last dim \(4\) differs .* built with \(3\)/);
    expectError(() => built.apply([ht, xt, et, attr]), 'INVALID_CONFIG', /built without edge attributes/);
    const x1 = randn([1, N, D], 8);
    expectError(() => built.apply([ht, x1, et]), 'DIMENSION_MISMATCH', /share the batch size, received \[2, 1, 2\]/);
    const fe = tf.cast(et, 'float32');
    expectError(() => built.apply([ht, xt, fe]), 'INVALID_CONFIG', /edges must be int32/);
    const bad = tf.tensor3d([[[0, N]], [[0, 1]]], [B, 1, 2], 'int32');
    expectError(() => built.apply([ht, xt, bad]), 'DIMENSION_MISMATCH', /edges\[0\]\[0\] is \[0, 4\]/);
    expectError(() => built.setWeights(built.getWeights().slice(1)), 'DIMENSION_MISMATCH', /takes 13 weights \(edge_kernel_0,/);
    tf.dispose([ht, xt, et, attr, vel, h4, x1, fe, bad]);
  });

  test('eager calls, their gradients and setWeights leak nothing', () => {
    const layer = new EquivariantAttention({hiddenUnits: U, velocity: true});
    const {h, x, edges, attr, vel} = data();
    tf.dispose(layer.apply([h, x, edges, attr, vel]) as tf.Tensor[]);
    const inputs = [h, x, edges, attr, vel];
    expectNoLeaks(() => tf.dispose(layer.apply(inputs, {returnAttentionScores: true}) as tf.Tensor[]));
    expectNoLeaks(() => {
      const {value, grads} = tf.variableGrads(() => {
        const [h1, x1] = layer.apply([h, x, edges, attr, vel]) as tf.Tensor[];
        return tf.add(tf.sum(h1), tf.sum(x1)) as tf.Scalar;
      });
      tf.dispose([value, ...Object.values(grads)]);
    });
    expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.sum((layer.apply([a, b, edges, attr, vel]) as tf.Tensor[])[1]))([h, x])));
    expectNoLeaks(() => layer.setWeights(layer.getWeights()));
    tf.dispose([h, x, edges, attr, vel]);
    layer.dispose();
  });
});
