// Shapes are checked when a graph is built (computeOutputShape, apply on tf.inputs) for
// every mismatch an eager call rejects; setWeights copies, so one tensor may be given for
// several weights (as Keras tests do) without corrupting the wasm heap.
import * as tf from '@tensorflow/tfjs';
import {FlashAttention, LinearAttention, LocalGlobalAttention, MultiHeadAttention} from '../../src';
import {expectError, maxDiff, randn, title} from '../support/helpers';

type Maker = () => tf.layers.Layer;
const KINDS: [string, Maker][] = [
  ['MultiHeadAttention', () => new MultiHeadAttention({numHeads: 2})],
  ['FlashAttention', () => new FlashAttention({numHeads: 2})],
  ['LinearAttention', () => new LinearAttention({numHeads: 2, seed: 1})],
  ['LocalGlobalAttention', () => new LocalGlobalAttention({numHeads: 2, windowSize: 2})],
];

describe(title('graph-time shape checks'), () => {
  describe.each(KINDS)('%s', (name, make) => {
    test('key and value of different lengths: DIMENSION_MISMATCH when the graph is built', () => {
      const layer = make();
      const [q, v, k] = [tf.input({shape: [4, 8]}), tf.input({shape: [6, 8]}), tf.input({shape: [5, 8]})];
      expectError(() => layer.apply([q, v, k]), 'DIMENSION_MISMATCH', /key and value must have the same length, received 5 and 6/);
      // The same call on tensors says the same.
      const layer2 = make();
      expectError(() => layer2.apply([randn([1, 4, 8], 1), randn([1, 6, 8], 2), randn([1, 5, 8], 3)]), 'DIMENSION_MISMATCH',
        /key and value must have the same length, received 5 and 6/);
    });

    test('batch sizes that differ', () => {
      const layer = make();
      const q = tf.input({batchShape: [2, 4, 8]});
      const v = tf.input({batchShape: [3, 4, 8]});
      expectError(() => layer.apply([q, v]), 'DIMENSION_MISMATCH', /share the batch size, received 2, 3 and 3/);
      // An unknown batch size (null) is not a mismatch.
      const free = make();
      const out = free.apply([tf.input({shape: [4, 8]}), tf.input({batchShape: [3, 4, 8]})]) as tf.SymbolicTensor;
      expect(out.shape).toEqual([null, 4, 8]);
    });

    test('a last dim other than the one the layer was built with, and a rank other than 3', () => {
      const layer = make();
      const built = layer.apply(tf.input({shape: [4, 8]})) as tf.SymbolicTensor;
      expect(built.shape).toEqual([null, 4, 8]);
      expectError(() => layer.apply(tf.input({shape: [4, 6]})), 'DIMENSION_MISMATCH',
        /query's last dim \(6\) differs from the one the layer was built with \(8\)/);
      expectError(() => layer.computeOutputShape([[null, 4, 8], [null, 4, 5]]), 'DIMENSION_MISMATCH',
        /value's last dim \(5\) differs from the one the layer was built with \(8\)/);
      expectError(() => make().apply(tf.input({shape: [8]})), 'DIMENSION_MISMATCH',
        /query must have shape \[batch, length, features\] with known features, received \[null, 8\]/);
      expectError(() => layer.apply(randn([2, 4, 6], 4)), 'DIMENSION_MISMATCH', /last dim \(6\) differs/);
    });

    test("computeOutputShape([query, value, null]), tfjs-layers' form for an absent key, reads the key as the value", () => {
      const layer = make();
      const S = name === 'LocalGlobalAttention' ? 4 : 6;
      expect(layer.computeOutputShape([[null, 4, 8], [null, S, 5], null as never])).toEqual([null, 4, 8]);
      expect(layer.computeOutputShape([[null, 4, 8], [null, S, 5], null as never]))
        .toEqual(layer.computeOutputShape([[null, 4, 8], [null, S, 5]]));
      expectError(() => layer.computeOutputShape([[null, 4, 8], null as never, null as never]), 'DIMENSION_MISMATCH',
        /value must have shape \[batch, length, features\] with known features, received null/);
    });

    test('weightShapes(inputShape) lists, without allocating, the names and shapes build creates', () => {
      const layer = make() as tf.layers.Layer & {weightShapes(s: unknown): {name: string; shape: number[]}[]};
      const tensors = tf.memory().numTensors;
      const planned = layer.weightShapes([[null, 4, 8], [null, 4, 6]]);
      expect(tf.memory().numTensors).toBe(tensors);
      tf.dispose(layer.apply([randn([1, 4, 8], 1), randn([1, 4, 6], 2)]) as tf.Tensor);
      expect(layer.weights.map((w) => ({name: w.name.slice(w.name.indexOf('/') + 1), shape: w.shape})))
        .toEqual(planned.map(({name, shape}) => ({name, shape})));
    });

    test('a graph that builds also predicts; lengths may differ for cross-attention where the kind allows', () => {
      const layer = make();
      const S = name === 'LocalGlobalAttention' ? 4 : 6;
      const q = tf.input({shape: [4, 8]});
      const v = tf.input({shape: [S, 8]});
      const model = tf.model({inputs: [q, v], outputs: layer.apply([q, v]) as tf.SymbolicTensor});
      const y = model.predict([randn([2, 4, 8], 5), randn([2, S, 8], 6)]) as tf.Tensor;
      expect(y.shape).toEqual([2, 4, 8]);
      y.dispose();
      model.dispose();
    });
  });

  test('LocalGlobalAttention: query and key lengths that differ are UNSUPPORTED in a graph, as in a call', () => {
    const layer = new LocalGlobalAttention({numHeads: 2, windowSize: 1});
    expectError(() => layer.apply([tf.input({shape: [3, 4]}), tf.input({shape: [5, 4]})]), 'UNSUPPORTED', /T=3 and S=5/);
  });
});

describe(title('setWeights'), () => {
  test('one tensor given for several weights: each weight gets its own copy; predict and fit work and stay right', async () => {
    // E = H = D = 2: the four kernels are all [2, 2, 2], the three input biases [2, 2].
    const n = 2;
    const build = () => {
      const input = tf.input({shape: [3, n]});
      const layer = new MultiHeadAttention({numHeads: n, headDim: n});
      const model = tf.model({inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor});
      model.compile({optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError'});
      return {layer, model};
    };
    const shared = build();
    const separate = build();
    const w = tf.fill([n, n, n], 0.3);
    const b = tf.fill([n, n], 0.1);
    const bo = tf.zeros([n]);
    shared.layer.setWeights([w, b, w, b, w, b, w, bo]);
    const copy = (t: tf.Tensor) => tf.tensor(t.dataSync(), t.shape);
    const own = [w, b, w, b, w, b, w, bo].map(copy);
    separate.layer.setWeights(own);
    w.dispose(); // the layer's weights do not depend on the caller's tensor
    const x = randn([4, 3, n], 7);
    const y = randn([4, 3, n], 8);
    expect(maxDiff(shared.model.predict(x) as tf.Tensor, separate.model.predict(x) as tf.Tensor)).toBe(0);
    await shared.model.fit(x, y, {epochs: 3, verbose: 0});
    await separate.model.fit(x, y, {epochs: 3, verbose: 0});
    const after = shared.layer.getWeights();
    separate.layer.getWeights().forEach((t, i) => expect(maxDiff(after[i], t)).toBeLessThanOrEqual(1e-6));
    // The weights moved apart from each other (they are separate variables now).
    expect(maxDiff(after[0], after[2])).toBeGreaterThan(0);
    // And the backend still computes.
    expect(tf.matMul(tf.ones([2, 3]), tf.ones([3, 2])).sum().dataSync()[0]).toBe(12);
    tf.dispose([b, bo, own, x, y]);
    shared.model.dispose();
    separate.model.dispose();
  });

  test('a wrong count or shape is DIMENSION_MISMATCH naming the weight; no tensor leaks', () => {
    const layer = new MultiHeadAttention({numHeads: 2});
    tf.dispose(layer.apply(randn([1, 3, 4], 9)) as tf.Tensor);
    const weights = layer.getWeights();
    expectError(() => layer.setWeights(weights.slice(1)), 'DIMENSION_MISMATCH',
      /setWeights takes 8 weights \(query\/kernel, query\/bias, .*\), received 7/);
    const bad = [...weights];
    bad[2] = tf.zeros([4, 2, 3]);
    expectError(() => layer.setWeights(bad), 'DIMENSION_MISMATCH',
      /weight 2 \('key\/kernel'\) must have shape \[4, 2, 2\], received shape \[4, 2, 3\]/);
    const before = tf.memory().numTensors;
    layer.setWeights(weights);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([bad[2]]);
    layer.dispose();
  });
});
