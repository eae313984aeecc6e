// The GeometricAttention layer: weights named, shaped and ordered as documented; equal to
// the op with its own weights and to the float64 reference; inside a tf.model it trains with
// model.fit (every weight that the softmax does not cancel gets a non-zero gradient and
// moves), saves and loads to identical outputs, round-trips its config, and refuses bad
// arguments, dtypes and shapes with codes. No leaks.
import * as tf from '@tensorflow/tfjs';
import {GeometricAttention, GeometricAttentionArgs} from '../../src/layers/geometric_attention';
import {geometricAttention, GeometricWeights} from '../../src/ops/geometric';
import {
  asSaved, expectClose, expectError, expectNoLeaks, maxDiff, randn, reloadedInMemory, title,
} from '../support/helpers';
import {flat, referenceGeometric, tensorOf} from '../support/geometric_reference';

const B = 2, N = 5, F = 3, C = 4, D = 3, E = 7;
// Graph 0: a duplicate edge, an input self loop, node 4 without incoming edges, padding.
// Graph 1: a cycle with a chord and padding in the middle.
const EDGES: number[][][] = [
  [[1, 0], [1, 0], [2, 0], [2, 2], [0, 3], [3, 1], [-1, -1]],
  [[0, 1], [1, 2], [-1, -1], [2, 3], [3, 4], [4, 0], [0, 2]],
];
const RICH: GeometricAttentionArgs = {units: C, numHeads: 2, positionUnits: [6], attentionUnits: [5], useBias: true};

const short = (layer: tf.layers.Layer) => layer.weights.map((w) => w.originalName.replace(`${layer.name}/`, ''));
const maxAbs = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);

describe(title('GeometricAttention: weights'), () => {
  const projections = [['kernel', [F, C]], ['source_kernel', [F, C]], ['target_kernel', [F, C]]];
  test.each([
    ['defaults (h = Linear(d, C), gamma identity)', {units: C},
      [...projections, ['position_kernel_0', [D, C]], ['position_bias_0', [C]]]],
    ['numHeads 2 (gamma = Linear(C, H))', {units: C, numHeads: 2},
      [...projections, ['position_kernel_0', [D, C]], ['position_bias_0', [C]], ['attention_kernel_0', [C, 2]],
        ['attention_bias_0', [2]]]],
    ['attentionUnits [] (gamma = Linear(C, C))', {units: C, attentionUnits: []},
      [...projections, ['position_kernel_0', [D, C]], ['position_bias_0', [C]], ['attention_kernel_0', [C, C]],
        ['attention_bias_0', [C]]]],
    ['numHeads 2, positionUnits [6], attentionUnits [5], useBias', RICH,
      [...projections, ['position_kernel_0', [D, 6]], ['position_bias_0', [6]], ['position_kernel_1', [6, C]],
        ['position_bias_1', [C]], ['attention_kernel_0', [C, 5]], ['attention_bias_0', [5]],
        ['attention_kernel_1', [5, 2]], ['attention_bias_1', [2]], ['bias', [C]]]],
  ] as const)('%s: names, shapes and order; weightShapes lists them without allocating', (_name, args, expected) => {
    const layer = new GeometricAttention({...args} as GeometricAttentionArgs);
    const shapes = [[null, N, F], [null, N, D], [null, E, 2]];
    const tensors = tf.memory().numTensors;
    const planned = layer.weightShapes(shapes);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(planned).toEqual(expected.map(([name, shape]) => ({name, shape})));
    const x = randn([B, N, F], 1);
    const p = randn([B, N, D], 2);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    tf.dispose(layer.apply([x, p, edges]) as tf.Tensor);
    expect(short(layer)).toEqual(expected.map(([name]) => name));
    expect(layer.weights.map((w) => w.shape)).toEqual(expected.map(([, shape]) => shape));
    tf.dispose([x, p, edges]);
    layer.dispose();
  });

  test('a layer whose weights one tensor cannot hold is refused at build (INVALID_CONFIG), nothing allocated', () => {
    const layer = new GeometricAttention({units: 1e5});
    const tensors = tf.memory().numTensors;
    expectError(() => layer.build([[null, 5, 1e5], [null, 5, 3], [null, 7, 2]]), 'INVALID_CONFIG',
      /GeometricAttention's weight 'kernel' of shape \[100000, 100000\] would hold/);
    expect(tf.memory().numTensors).toBe(tensors);
  });
});

describe(title('GeometricAttention against the op and the reference'), () => {
  test.each([['defaults', {units: C}], ['rich', RICH]] as const)(
    '%s: equal to geometricAttention with the layer\'s weights and to the float64 reference; translation-invariant', (_n, args) => {
      const layer = new GeometricAttention({...args} as GeometricAttentionArgs);
      expect(layer.isTranslationInvariant).toBe(true);
      expect(layer.isRotationEquivariant).toBe(false);
      const x = randn([B, N, F], 11);
      const p = randn([B, N, D], 12);
      const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
      tf.dispose(layer.apply([x, p, edges]) as tf.Tensor);
      // Random values everywhere (biases start at zero) so that every weight matters.
      const values = layer.weights.map((w, i) => randn(w.shape as number[], 20 + i, 0.6));
      layer.setWeights(values);
      const y = layer.apply([x, p, edges]) as tf.Tensor;
      const t = layer.getWeights();
      const a: GeometricAttentionArgs = args;
      const nPos = (a.positionUnits?.length ?? 0) + 1;
      const nAtt = a.numHeads != null ? (a.attentionUnits?.length ?? 0) + 1 : 0;
      const at = (from: number, n: number, odd: number) => Array.from({length: n}, (_, k) => t[from + 2 * k + odd]);
      const w: GeometricWeights = {kernel: t[0], sourceKernel: t[1], targetKernel: t[2],
        positionKernels: at(3, nPos, 0), positionBiases: at(3, nPos, 1),
        ...(nAtt > 0 ? {attentionKernels: at(3 + 2 * nPos, nAtt, 0), attentionBiases: at(3 + 2 * nPos, nAtt, 1)} : {}),
        ...(a.useBias === true ? {bias: t[t.length - 1]} : {})};
      const op = geometricAttention(x, p, edges, w, {numHeads: a.numHeads ?? null});
      expect(y.shape).toEqual([B, N, C]);
      expect(maxDiff(y, op)).toBe(0);
      const ref = tensorOf(referenceGeometric({features: flat(x), positions: flat(p), kernel: flat(t[0]),
        sourceKernel: flat(t[1]), targetKernel: flat(t[2]), positionKernels: w.positionKernels.map(flat),
        positionBiases: w.positionBiases.map(flat), attentionKernels: (w.attentionKernels ?? []).map(flat),
        attentionBiases: (w.attentionBiases ?? []).map(flat), bias: w.bias != null ? flat(w.bias) : null},
      EDGES, {selfLoops: true, numHeads: a.numHeads ?? null}));
      expectClose(y, ref);
      const moved = tf.add(p, tf.tensor1d([3.5, -2.25, 0.5]));
      const yMoved = layer.apply([x, moved, edges]) as tf.Tensor;
      expectClose(yMoved, y);
      tf.dispose([x, p, edges, ...values, y, op, ref, moved, yMoved]); // t: the variables' own values
      layer.dispose();
    });
});

/** features [N, F], positions [N, D], edges [E, 2] int32 -> two GeometricAttention layers -> [N, 3]. */
function geometricModel(withScores = false): tf.LayersModel {
  const features = tf.input({shape: [N, F], name: 'features'});
  const positions = tf.input({shape: [N, D], name: 'positions'});
  const edges = tf.input({shape: [E, 2], dtype: 'int32', name: 'edges'});
  const g1 = new GeometricAttention({...RICH, name: 'geo1'});
  const g2 = new GeometricAttention({units: 3, attentionUnits: [4], addSelfLoops: false, name: 'geo2'});
  const h = tf.layers.activation({activation: 'relu'}).apply(g1.apply([features, positions, edges])) as tf.SymbolicTensor;
  const out = g2.apply([h, positions, edges], {returnAttentionScores: withScores}) as
    tf.SymbolicTensor | tf.SymbolicTensor[];
  const model = tf.model({inputs: [features, positions, edges], outputs: out});
  // Seeded weights (the initializers draw from Math.random, whose state other test files share): a
  // draw that leaves a ReLU dead would leave weights with no gradient.
  const values = model.getWeights().map((w, i) => randn(w.shape, 300 + i, 0.5));
  model.setWeights(values);
  tf.dispose(values);
  return model;
}

describe(title('GeometricAttention in a tf.model'), () => {
  const data = () => ({
    x: randn([B, N, F], 61), p: randn([B, N, D], 62), edges: tf.tensor3d(EDGES, [B, E, 2], 'int32'), y: randn([B, N, 3], 63),
  });

  test('one model.fit step moves every weight but the inert last gamma biases; each of those has a non-zero gradient', async () => {
    const model = geometricModel();
    const {x, p, edges, y} = data();
    // gamma's last bias shifts all of a node's logits alike: the softmax cancels it.
    const inert = ['geo1/attention_bias_1', 'geo2/attention_bias_1'];
    expect(model.weights.map((w) => w.name)).toEqual([
      'geo1/kernel', 'geo1/source_kernel', 'geo1/target_kernel', 'geo1/position_kernel_0', 'geo1/position_bias_0',
      'geo1/position_kernel_1', 'geo1/position_bias_1', 'geo1/attention_kernel_0', 'geo1/attention_bias_0',
      'geo1/attention_kernel_1', 'geo1/attention_bias_1', 'geo1/bias', 'geo2/kernel', 'geo2/source_kernel',
      'geo2/target_kernel', 'geo2/position_kernel_0', 'geo2/position_bias_0', 'geo2/attention_kernel_0',
      'geo2/attention_bias_0', 'geo2/attention_kernel_1', 'geo2/attention_bias_1']);
    const {value, grads} = tf.variableGrads(() =>
      tf.losses.meanSquaredError(y, model.apply([x, p, edges]) as tf.Tensor) as tf.Scalar);
    for (const w of model.trainableWeights) {
      if (inert.includes(w.name)) expect(maxAbs(grads[w.name])).toBeLessThan(1e-6);
      else expect(maxAbs(grads[w.name])).toBeGreaterThan(1e-6);
    }
    tf.dispose([value, ...Object.values(grads)]);
    const before = model.getWeights().map((w) => w.clone());
    model.compile({optimizer: tf.train.adam(0.01), loss: 'meanSquaredError'});
    await model.fit([x, p, edges], y, {epochs: 1, batchSize: B, verbose: 0});
    const after = model.getWeights();
    model.weights.forEach((w, i) => {
      if (!inert.includes(w.name)) expect(maxDiff(before[i], after[i])).toBeGreaterThan(1e-4);
    });
    const tensors = tf.memory().numTensors; // Adam's moments exist now
    await model.fit([x, p, edges], y, {epochs: 1, batchSize: 1, verbose: 0});
    expect(tf.memory().numTensors).toBe(tensors);
    expectNoLeaks(() => tf.dispose(model.predict([x, p, edges]) as tf.Tensor));
    tf.dispose([x, p, edges, y, ...before]);
    model.dispose();
  });

  test('save -> tf.loadLayersModel gives the same config and identical outputs (alpha included)', async () => {
    const model = geometricModel(true);
    const {x, p, edges, y} = data();
    const loaded = await reloadedInMemory(model);
    const json = asSaved;
    for (const name of ['geo1', 'geo2']) {
      expect(loaded.getLayer(name)).toBeInstanceOf(GeometricAttention);
      expect(json(loaded.getLayer(name).getConfig())).toEqual(json(model.getLayer(name).getConfig()));
    }
    const [o1, s1] = model.predict([x, p, edges]) as tf.Tensor[];
    const [o2, s2] = loaded.predict([x, p, edges]) as tf.Tensor[];
    expect(o1.shape).toEqual([B, N, 3]);
    expect(s1.shape).toEqual([B, E, 3]); // geo2: no self loops, per channel
    expect(model.outputs[1].shape).toEqual([null, E, 3]);
    expect(maxDiff(o1, o2)).toBe(0);
    expect(maxDiff(s1, s2)).toBe(0);
    tf.dispose([x, p, edges, y, o1, s1, o2, s2]);
    model.dispose();
    loaded.dispose();
  });

  test('getConfig -> fromConfig -> getConfig is the identity, initializers, regularizers and constraints included', () => {
    const layer = new GeometricAttention({...RICH, addSelfLoops: false, kernelInitializer: 'heNormal',
      biasInitializer: 'ones', kernelRegularizer: 'l1l2', biasConstraint: 'nonNeg', name: 'geo'});
    const config = layer.getConfig();
    expect(config).toMatchObject({units: C, numHeads: 2, positionUnits: [6], attentionUnits: [5], addSelfLoops: false,
      useBias: true});
    expect(tf.serialization.SerializationMap.getMap().classNameMap.GeometricAttention?.[0]).toBe(GeometricAttention);
    const copy = GeometricAttention.fromConfig(GeometricAttention, config) as GeometricAttention;
    expect(copy).toBeInstanceOf(GeometricAttention);
    expect(copy.getConfig()).toEqual(config);
    expect(new GeometricAttention({units: 2}).getConfig()).toMatchObject({numHeads: null, positionUnits: [],
      attentionUnits: null, addSelfLoops: true, useBias: false});
  });
});

describe(title('GeometricAttention: bad inputs and arguments'), () => {
  test('bad constructor arguments are refused by code, with advice for PointTransformerConv names', () => {
    const make = (args: object) => () => new GeometricAttention(args as GeometricAttentionArgs);
    expectError(make({units: 0}), 'INVALID_CONFIG', /units must be a positive integer/);
    expectError(make({units: 4, numHeads: 3}), 'INVALID_CONFIG', /units \(4\) must be divisible by numHeads \(3\)/);
    expectError(make({units: 4, numHeads: 0}), 'INVALID_CONFIG', /numHeads must be a positive integer/);
    expectError(make({units: 4, positionUnits: [0]}), 'INVALID_CONFIG', /positionUnits must be an array of positive integers/);
    expectError(make({units: 4, attentionUnits: 5}), 'INVALID_CONFIG', /attentionUnits must be an array of positive integers/);
    expectError(make({units: 4, addSelfLoops: 'yes'}), 'INVALID_CONFIG', /addSelfLoops must be a boolean/);
    expectError(make({units: 4, outChannels: 4}), 'INVALID_CONFIG', /did you mean 'units'/);
    expectError(make({units: 4, heads: 2}), 'INVALID_CONFIG', /did you mean 'numHeads'/);
    expectError(make({units: 4, posNn: {}}), 'INVALID_CONFIG', /'positionUnits'/);
    expectError(make({units: 4, attnNn: {}}), 'INVALID_CONFIG', /'attentionUnits'/);
    expectError(make({units: 4, inChannels: 3}), 'INVALID_CONFIG', /features' last dim/);
    expectError(make({units: 4, aggr: 'mean'}), 'UNSUPPORTED', /summed/);
    expectError(make({units: 4, positionUnit: [2]}), 'INVALID_CONFIG', /did you mean 'positionUnits'/);
    expectError(make({units: 4, returnAttentionScores: true}), 'INVALID_CONFIG', /argument of apply/);
    expect(() => new GeometricAttention({units: 4, aggr: 'add'} as never)).not.toThrow();
  });

  test('wrong dtypes and shapes are refused with codes, when the graph is built and when called', () => {
    const layer = () => new GeometricAttention({units: 2});
    const features = tf.input({shape: [N, F]});
    const positions = tf.input({shape: [N, D]});
    const edges = tf.input({shape: [E, 2], dtype: 'int32'});
    expectError(() => layer().apply([features, positions, tf.input({shape: [E, 2]})]), 'INVALID_CONFIG',
      /edges must be int32.*dtype: 'int32'/);
    expectError(() => layer().apply([features, positions, tf.input({shape: [E, 3], dtype: 'int32'})]),
      'DIMENSION_MISMATCH', /edges must have shape \[batch, edges, 2\]/);
    expectError(() => layer().apply([features, tf.input({shape: [N + 1, D]}), edges]), 'DIMENSION_MISMATCH',
      /share the number of nodes, received \[5, 6\]/);
    expectError(() => layer().apply([features, tf.input({shape: [N]}), edges]), 'DIMENSION_MISMATCH',
      /positions must have shape \[batch, nodes, coordinates\]/);
    expectError(() => layer().apply([features, edges] as never), 'INVALID_CONFIG', /takes \[features, positions, edges\]/);
    // Eager: a built layer given other position dims, float edges, a bad index, an unknown kwarg.
    const built = layer();
    const x = randn([1, N, F], 71);
    const p = randn([1, N, D], 72);
    const e = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'int32');
    tf.dispose(built.apply([x, p, e]) as tf.Tensor);
    const plane = randn([1, N, 2], 73);
    expectError(() => built.apply([x, plane, e]), 'DIMENSION_MISMATCH', /positions' last dim \(2\) differs .* built with \(3\)/);
    const fe = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'float32');
    expectError(() => built.apply([x, p, fe]), 'INVALID_CONFIG', /edges must be int32/);
    const bad = tf.tensor3d([[[0, N]]], [1, 1, 2], 'int32');
    expectError(() => built.apply([x, p, bad]), 'DIMENSION_MISMATCH', /edges\[0\]\[0\] is \[0, 5\]/);
    expectError(() => built.apply([x, p, e], {returnScores: true}), 'INVALID_CONFIG',
      /unknown argument 'returnScores'.*'returnAttentionScores'/);
    tf.dispose([x, p, e, plane, fe, bad]);
    built.dispose();
  });

  test('eager calls, their gradients and setWeights leak nothing; setWeights checks the count', () => {
    const layer = new GeometricAttention(RICH);
    const x = randn([B, N, F], 81);
    const p = randn([B, N, D], 82);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    tf.dispose(layer.apply([x, p, edges]) as tf.Tensor);
    expectNoLeaks(() => tf.dispose(layer.apply([x, p, edges]) as tf.Tensor));
    expectNoLeaks(() => tf.dispose(layer.apply([x, p, edges], {returnAttentionScores: true}) as tf.Tensor[]));
    expectNoLeaks(() => {
      const {value, grads} = tf.variableGrads(() => tf.sum(layer.apply([x, p, edges]) as tf.Tensor) as tf.Scalar);
      tf.dispose([value, ...Object.values(grads)]);
    });
    expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, q: tf.Tensor) =>
      tf.sum(layer.apply([a, q, edges]) as tf.Tensor))([x, p])));
    expectNoLeaks(() => layer.setWeights(layer.getWeights()));
    expectError(() => layer.setWeights(layer.getWeights().slice(1)), 'DIMENSION_MISMATCH', /takes 12 weights \(kernel,/);
    tf.dispose([x, p, edges]);
    layer.dispose();
  });
});
