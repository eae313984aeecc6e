// The fused dense and layer-norm ops and layers (buildTransformer's feed-forward and norms) and
// the attention projections: equal to tfjs's layers and to plain tf-op compositions, forward and
// gradients, for ranks 2-4, odd and empty sizes; configs, saving and strict arguments; and what
// they are for: a training step's tape holds fewer tensor bytes than with tfjs's layers.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {dense, layerNorm, columnSums} from '../../src/ops/dense';
import {FusedDense} from '../../src/layers/fused_dense';
import {FusedLayerNormalization} from '../../src/layers/fused_layer_norm';
import {projectFromHeads, projectToHeads} from '../../src/layers/projection';
import {MultiHeadAttention} from '../../src/layers/multi_head_attention';
import {BACKEND, expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';

type Fn = (...t: tf.Tensor[]) => tf.Tensor;

/** Values and gradients (for the cotangent dy) of f and g at the same inputs must agree. */
function expectSameGrads(f: Fn, g: Fn, inputs: tf.Tensor[], dySeed: number, tol = 1e-4): void {
  tf.tidy(() => {
    const y1 = f(...inputs);
    const y2 = g(...inputs);
    expectClose(y1, y2, tol);
    const dy = randn(y1.shape, dySeed);
    const g1 = tf.grads(f)(inputs, dy);
    const g2 = tf.grads(g)(inputs, dy);
    g1.forEach((d, i) => expectClose(d, g2[i], tol));
  });
}

/** act(x W + b) with tf ops on the last axis. */
function plainDense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | null, relu: boolean): tf.Tensor {
  const K = x.shape[x.rank - 1] as number;
  const R = x.size / Math.max(K, 1);
  let y: tf.Tensor = tf.matMul(tf.reshape(x, [R, K]), w);
  if (b != null) y = tf.add(y, b);
  if (relu) y = tf.relu(y);
  return tf.reshape(y, [...x.shape.slice(0, -1), w.shape[1] as number]);
}

function plainLayerNorm(x: tf.Tensor, g: tf.Tensor | null, b: tf.Tensor | null, eps: number): tf.Tensor {
  const {mean, variance} = tf.moments(x, -1, true);
  let y = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps)));
  if (g != null) y = tf.mul(y, g);
  if (b != null) y = tf.add(y, b);
  return y;
}

describe(title('dense op'), () => {
  const shapes: number[][] = [[7, 5], [2, 3, 97], [2, 1, 3, 7], [1, 1]];
  for (const shape of shapes) {
    for (const N of [1, 7, 97]) {
      for (const activation of ['linear', 'relu'] as const) {
        test(`x ${JSON.stringify(shape)}, ${N} units, ${activation}, with and without bias`, () => {
          const K = shape[shape.length - 1];
          const [x, w, b] = [randn(shape, 1), randn([K, N], 2, 0.5), randn([N], 3)];
          const relu = activation === 'relu';
          expectSameGrads((a, c, d) => dense(a, c, d, activation), (a, c, d) => plainDense(a, c, d, relu),
            [x, w, b], 4);
          expectSameGrads((a, c) => dense(a, c, null, activation), (a, c) => plainDense(a, c, null, relu), [x, w], 5);
          expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
            tf.sum(dense(a, c, d, activation)))([x, w, b])));
          tf.dispose([x, w, b]);
        });
      }
    }
  }

  test('empty: no rows gives an empty output with zero gradients; no input features gives act(bias) for every row', () => {
    const w0 = randn([0, 3], 1);
    const b = tf.tensor1d([1, -2, 3]);
    const x0 = tf.zeros([4, 0]);
    const y = dense(x0, w0, b, 'relu');
    expect(y.shape).toEqual([4, 3]);
    expect(Array.from(y.dataSync())).toEqual([1, 0, 3, 1, 0, 3, 1, 0, 3, 1, 0, 3]);
    const [, , db] = tf.grads((a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) => tf.sum(dense(a, c, d, 'relu')))([x0, w0, b]);
    expect(Array.from(db.dataSync())).toEqual([4, 0, 4]);
    const w = randn([5, 3], 2);
    const noRows = tf.zeros([0, 2, 5]);
    const e = dense(noRows, w, b);
    expect(e.shape).toEqual([0, 2, 3]);
    const [dx, dw] = tf.grads((a: tf.Tensor, c: tf.Tensor) => tf.sum(dense(a, c, b)))([noRows, w]);
    expect(dx.shape).toEqual([0, 2, 5]);
    expect(Array.from(dw.dataSync()).every((v) => v === 0)).toBe(true);
    tf.dispose([w0, b, x0, y, db, w, noRows, e, dx, dw]);
  });

  test('columnSums equals tf.sum over the first axis', () => {
    const g = randn([97, 7], 1) as tf.Tensor2D;
    expectClose(columnSums(g), tf.sum(g, 0), 1e-5);
    g.dispose();
  });

  test('bad shapes and activations are refused', () => {
    const x = randn([2, 3], 1);
    expectError(() => dense(x, randn([4, 2], 2), null), 'DIMENSION_MISMATCH', /kernel \[4, 2\]/);
    expectError(() => dense(x, randn([3, 2], 2), randn([3], 3)), 'DIMENSION_MISMATCH', /bias \[3\]/);
    expectError(() => dense(x, randn([3, 2], 2), null, 'gelu' as never), 'INVALID_CONFIG', /activation must be one of linear, relu/);
    x.dispose();
  });
});

describe(title('layerNorm op'), () => {
  for (const shape of [[7, 5], [2, 3, 97], [2, 1, 3, 7], [3, 1]]) {
    test(`x ${JSON.stringify(shape)}: with gamma and beta, either, neither; epsilon 1e-3 and 1e-5`, () => {
      const E = shape[shape.length - 1];
      const [x, g, b] = [randn(shape, 1, 3), randn([E], 2), randn([E], 3)];
      for (const eps of [1e-3, 1e-5]) {
        expectSameGrads((a, c, d) => layerNorm(a, c, d, eps), (a, c, d) => plainLayerNorm(a, c, d, eps),
          [x, g, b], 4, 2e-4);
        expectSameGrads((a, c) => layerNorm(a, c, null, eps), (a, c) => plainLayerNorm(a, c, null, eps),
          [x, g], 5, 2e-4);
        expectSameGrads((a, d) => layerNorm(a, null, d, eps), (a, d) => plainLayerNorm(a, null, d, eps),
          [x, b], 6, 2e-4);
        // Rows of one feature normalize to 0 whatever x; the gradient is still finite.
        if (E > 1) {
          expectSameGrads((a) => layerNorm(a, null, null, eps), (a) => plainLayerNorm(a, null, null, eps),
            [x], 7, 2e-4);
        }
      }
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
        tf.sum(tf.square(layerNorm(a, c, d))))([x, g, b])));
      tf.dispose([x, g, b]);
    });
  }

  test('no rows: an empty output and zero gradients; bad gamma and epsilon are refused', () => {
    const x = tf.zeros([0, 4]);
    const g = tf.ones([4]);
    const [dx, dg] = tf.grads((a: tf.Tensor, c: tf.Tensor) => tf.sum(layerNorm(a, c, null)))([x, g]);
    expect(dx.shape).toEqual([0, 4]);
    expect(Array.from(dg.dataSync())).toEqual([0, 0, 0, 0]);
    expectError(() => layerNorm(randn([2, 3], 1), g, null), 'DIMENSION_MISMATCH', /gamma must be \[3\]/);
    expectError(() => layerNorm(randn([2, 4], 1), g, null, 0), 'INVALID_CONFIG', /epsilon must be a positive number/);
    tf.dispose([x, g, dx, dg]);
  });
});

describe(title('attention projections as one op each'), () => {
  test('projectToHeads and projectFromHeads equal their tf-op compositions, forward and gradients, with and without bias', () => {
    const [B, T, E, N, X] = [2, 7, 5, 3, 4];
    const toHeads = (x: tf.Tensor, k: tf.Tensor, b?: tf.Tensor) => {
      let y = tf.matMul(tf.reshape(x, [B * T, E]), tf.reshape(k, [E, N * X]));
      if (b != null) y = tf.add(y, tf.reshape(b, [N * X]));
      return tf.transpose(tf.reshape(y, [B, T, N, X]), [0, 2, 1, 3]);
    };
    const fromHeads = (o: tf.Tensor, k: tf.Tensor, b?: tf.Tensor) => {
      let y = tf.matMul(tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B * T, N * X]), tf.reshape(k, [N * X, E]));
      if (b != null) y = tf.add(y, b);
      return tf.reshape(y, [B, T, E]);
    };
    const [x, kIn, bIn, o, kOut, bOut] = [randn([B, T, E], 1), randn([E, N, X], 2), randn([N, X], 3),
      randn([B, N, T, X], 4), randn([N, X, E], 5), randn([E], 6)];
    expectSameGrads((a, k, b) => projectToHeads(a, k, b), toHeads, [x, kIn, bIn], 7);
    expectSameGrads((a, k) => projectToHeads(a, k, null), (a, k) => toHeads(a, k), [x, kIn], 8);
    expectSameGrads((a, k, b) => projectFromHeads(a, k, b), fromHeads, [o, kOut, bOut], 9);
    expectSameGrads((a, k) => projectFromHeads(a, k, null), (a, k) => fromHeads(a, k), [o, kOut], 10);
    tf.dispose([x, kIn, bIn, o, kOut, bOut]);
  });
});

describe(title('MultiHeadAttention in few kernels'), () => {
  // B=2 on cpu, whose kernels run far slower inside jest: the counts do not grow with B.
  const B = BACKEND === 'cpu' ? 2 : 8;
  test(`a forward at B=${B}, T=128, E=128, 4 heads runs at most 60 kernels, forward and backward at most 200, ` +
    'causal or not', async () => {
    const x = randn([B, 128, 128], 1);
    for (const causal of [false, true]) {
      const layer = new MultiHeadAttention({numHeads: 4, headDim: 32, causal});
      tf.dispose(layer.apply(x) as tf.Tensor); // builds the weights
      const forward = (await tf.profile(() => tf.dispose(layer.apply(x) as tf.Tensor))).kernels.length;
      const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
      const both = (await tf.profile(() => {
        const r = tf.variableGrads(() => tf.sum(layer.apply(x) as tf.Tensor) as tf.Scalar, vars);
        tf.dispose([r.value, ...Object.values(r.grads)]);
      })).kernels.length;
      expect({causal, forward: forward <= 60, both: both <= 200}).toEqual({causal, forward: true, both: true});
      expect(forward).toBeGreaterThan(10); // counted at all
      layer.dispose();
    }
    x.dispose();
  });
});

describe(title('FusedDense and FusedLayerNormalization layers'), () => {
  test('equal tf.layers.dense and tf.layers.layerNormalization with the same weights, in the same order, forward and gradients', () => {
    const x = randn([2, 5, 6], 1);
    const pairs: [tf.layers.Layer, tf.layers.Layer][] = [
      [new FusedDense({units: 7, activation: 'relu'}), tf.layers.dense({units: 7, activation: 'relu'})],
      [new FusedDense({units: 3, useBias: false}), tf.layers.dense({units: 3, useBias: false})],
      [new FusedLayerNormalization(), tf.layers.layerNormalization()],
      // (tfjs 4.22's own layer with center: false has no gradient: its tape gets an undefined beta.)
      [new FusedLayerNormalization({epsilon: 1e-5}), tf.layers.layerNormalization({epsilon: 1e-5})],
    ];
    for (const [ours, theirs] of pairs) {
      ours.apply(x);
      theirs.apply(x);
      expect(ours.weights.map((w) => [w.originalName.split('/').pop(), w.shape]))
        .toEqual(theirs.weights.map((w) => [w.originalName.split('/').pop(), w.shape]));
      theirs.setWeights(ours.getWeights().map((w, i) =>
        tf.add(w, randn(w.shape, 10 + i, 0.3)))); // not the initial values
      ours.setWeights(theirs.getWeights());
      const run = (layer: tf.layers.Layer) => tf.variableGrads(
        () => tf.sum(tf.square(layer.apply(x, {training: true}) as tf.Tensor)),
        layer.trainableWeights.map((w) => w.read() as tf.Variable));
      const a = run(ours);
      const b = run(theirs);
      expect(Math.abs(a.value.dataSync()[0] - b.value.dataSync()[0]))
        .toBeLessThan(1e-3 * Math.abs(b.value.dataSync()[0]));
      const ga = Object.values(a.grads);
      const gb = Object.values(b.grads);
      expect(ga.length).toBe(ours.trainableWeights.length);
      ga.forEach((g, i) => expectClose(g, gb[i], 2e-4));
      tf.dispose([a.value, b.value, ...ga, ...gb]);
      ours.dispose();
      theirs.dispose();
    }
    x.dispose();
  });

  test('a model of them saves and loads with the same predictions; configs round-trip', async () => {
    const input = tf.input({shape: [4, 6]});
    let h = new FusedLayerNormalization({name: 'norm', epsilon: 1e-4, scale: false}).apply(input) as tf.SymbolicTensor;
    h = new FusedDense({units: 5, activation: 'relu', name: 'ff'}).apply(h) as tf.SymbolicTensor;
    const model = tf.model({inputs: input, outputs: h});
    const x = randn([3, 4, 6], 1);
    let saved: tf.io.ModelArtifacts | null = null;
    await model.save(tf.io.withSaveHandler(async (a) => { saved = a; return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}}; }));
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
    expect(loaded.getLayer('ff').getClassName()).toBe('FusedDense');
    expect(loaded.getLayer('norm').getConfig()).toEqual(model.getLayer('norm').getConfig());
    expect(loaded.getLayer('ff').getConfig()).toEqual(model.getLayer('ff').getConfig());
    const [p, q] = [model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
    expect(Array.from(q.dataSync())).toEqual(Array.from(p.dataSync()));
    tf.dispose([x, p, q]);
    model.dispose();
    loaded.dispose();
  });

  test('strict arguments', () => {
    expectError(() => new FusedDense({units: 0}), 'INVALID_CONFIG', /units/);
    expectError(() => new FusedDense({units: 3, activation: 'tanh' as never}), 'INVALID_CONFIG', /activation/);
    expectError(() => new FusedDense({units: 3, kernelInitializer: 'zeros'} as never), 'INVALID_CONFIG', /kernelInitializer/);
    expectError(() => new FusedLayerNormalization({epsilon: -1}), 'INVALID_CONFIG', /epsilon/);
    expectError(() => new FusedLayerNormalization({axis: 1} as never), 'INVALID_CONFIG', /axis/);
    expectError(() => new FusedDense({units: 3}).apply(tf.input({shape: [null as unknown as number]})), 'DIMENSION_MISMATCH', /known features/);
  });

  test('a training step keeps fewer tensor bytes than with tfjs\'s layers (the same weights, the same gradients)', async () => {
    const x = randn([4, 32, 64], 1);
    const build = (fused: boolean) => {
      const input = tf.input({shape: [32, 64]});
      let h = (fused ? new FusedLayerNormalization() : tf.layers.layerNormalization())
        .apply(input) as tf.SymbolicTensor;
      h = (fused ? new FusedDense({units: 256, activation: 'relu'}) : tf.layers.dense({units: 256, activation: 'relu'})).apply(h) as tf.SymbolicTensor;
      h = (fused ? new FusedDense({units: 64}) : tf.layers.dense({units: 64})).apply(h) as tf.SymbolicTensor;
      return tf.model({inputs: input, outputs: h});
    };
    const [ours, theirs] = [build(true), build(false)];
    ours.setWeights(theirs.getWeights());
    const peak = async (model: tf.LayersModel) => {
      const before = tf.memory().numBytes;
      let grads: tf.Tensor[] = [];
      const info = await tf.profile(() => {
        const r = tf.variableGrads(() => tf.mean(tf.square(model.apply(x, {training: true}) as tf.Tensor)) as tf.Scalar,
          model.trainableWeights.map((w) => w.read() as tf.Variable));
        grads = [r.value, ...Object.values(r.grads)];
      });
      return {bytes: info.peakBytes - before, grads};
    };
    const a = await peak(ours);
    const b = await peak(theirs);
    a.grads.forEach((g, i) => expectClose(g, b.grads[i], 2e-4));
    // tfjs's layers keep every reshape, sum, activation and moment and their gradients until the backward ends.
    expect(a.bytes).toBeLessThan(0.5 * b.bytes);
    tf.dispose([x, ...a.grads, ...b.grads]);
    ours.dispose();
    theirs.dispose();
  });
});
