// The FlashAttention layer and MultiHeadAttention's `implementation`: equality with
// MultiHeadAttention (same weights; forward and gradients for inputs and every weight),
// save -> load, training, no leaks, errors; which op 'flash' and 'auto' call.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {FlashAttention, MhaImplementation, MultiHeadAttention} from '../../src';
import {FLASH_AUTO_MIN_SCORES} from '../../src/internals';
import * as flashOps from '../../src/ops/flash';
import * as sdpaOps from '../../src/ops/sdpa';
import {expectClose, expectError, randn, title} from '../support/helpers';

type Layer = FlashAttention | MultiHeadAttention;
const vals = (layer: Layer) => layer.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val);
const isKeyBias = (name: string) => /key\/bias(_\d+)?$/.test(name);

interface Case {
  name: string; H: number; G: number; T: number; S: number; E: number; blockSize: number;
  headDim?: number; cross?: 'value' | 'key'; causal?: boolean; padding?: boolean; useBias?: boolean;
  /** Also mask every key of query 0 in batch 0. */
  fullRow?: boolean;
}

const cases: Case[] = [
  {name: 'MHA self T=7, blockSize 4', H: 2, G: 2, T: 7, S: 7, E: 8, blockSize: 4},
  {name: 'GQA cross T=7 S=5 D=12 causal, blockSize 2', H: 4, G: 2, T: 7, S: 5, E: 8, headDim: 12,
    cross: 'value', causal: true, blockSize: 2},
  {name: 'MQA [q, v, k] T=5 S=9 key padding, blockSize 4', H: 3, G: 1, T: 5, S: 9, E: 6, cross: 'key',
    padding: true, blockSize: 4},
  {name: 'GQA self T=13 causal x padding, fully masked row, no bias, blockSize 4', H: 4, G: 2, T: 13, S: 13, E: 8,
    causal: true, padding: true, fullRow: true, useBias: false, blockSize: 4},
];

/** [query, value, key] and what to pass to apply for a case. */
function caseInputs(c: Case, B: number) {
  const query = randn([B, c.T, c.E], 1);
  const value = c.cross ? randn([B, c.S, c.E + 2], 2) : query;
  const key = c.cross === 'key' ? randn([B, c.S, c.E - 2], 3) : value;
  const xs = c.cross === 'key' ? [query, value, key] : c.cross === 'value' ? [query, value] : [query];
  // Key padding: the last two keys of batch 1 are padding.
  const rows = Array.from({length: B}, (_, b) =>
    Array.from({length: c.S}, (_, j) => (b === 1 && j >= c.S - 2 ? 0 : 1)));
  const attentionMask = c.padding ? tf.tensor3d(rows.map((row, b) => Array.from({length: c.T},
    (_, i) => (c.fullRow && b === 0 && i === 0 ? row.map(() => 0) : row)))) : undefined;
  return {xs, attentionMask};
}

/** Output and gradients (inputs, then every trainable weight) of sum(layer(xs) * cot). */
function forwardAndGrads(layer: Layer, xs: tf.Tensor[], cot: tf.Tensor, attentionMask?: tf.Tensor) {
  const run = (x: tf.Tensor[]) => layer.apply(x.length === 1 ? x[0] : x, {attentionMask}) as tf.Tensor;
  const out = run(xs);
  const inputGrads = tf.grads((...x: tf.Tensor[]) => tf.sum(tf.mul(run(x), cot)))(xs);
  const {value, grads} = tf.variableGrads(() => tf.sum(tf.mul(run(xs), cot)) as tf.Scalar, vals(layer));
  value.dispose();
  return {out, inputGrads, weightGrads: vals(layer).map((v) => grads[v.name])};
}

/** Asserts the second layer's output and gradients equal the first's; the key bias gradient is ~0 in both. */
function expectSameLayer(expected: Layer, actual: Layer, xs: tf.Tensor[], cot: tf.Tensor, attentionMask?: tf.Tensor) {
  const e = forwardAndGrads(expected, xs, cot, attentionMask);
  const a = forwardAndGrads(actual, xs, cot, attentionMask);
  expectClose(a.out, e.out);
  a.inputGrads.forEach((g, i) => expectClose(g, e.inputGrads[i]));
  // The key bias shifts a whole row of logits by q.b, which softmax ignores: its true
  // gradient is zero, so both sides must be float noise around 0.
  const scale = Math.max(...e.weightGrads.map((g) => tf.max(tf.abs(g)).dataSync()[0]));
  actual.trainableWeights.forEach((w, i) => {
    expect(a.weightGrads[i]).toBeDefined();
    if (isKeyBias(w.name)) {
      expect(tf.max(tf.abs(a.weightGrads[i])).dataSync()[0]).toBeLessThan(1e-5 * scale);
      expect(tf.max(tf.abs(e.weightGrads[i])).dataSync()[0]).toBeLessThan(1e-5 * scale);
    } else {
      expectClose(a.weightGrads[i], e.weightGrads[i]);
    }
  });
  tf.dispose([e.out, e.inputGrads, e.weightGrads, a.out, a.inputGrads, a.weightGrads]);
}

describe(title('FlashAttention layer'), () => {
  for (const c of cases) {
    test(`FlashAttention == MultiHeadAttention with the same weights, forward and gradients (${c.name})`, () => {
      const B = 2;
      const common = {numHeads: c.H, numKvHeads: c.G, headDim: c.headDim, causal: c.causal, useBias: c.useBias ?? true};
      const flash = new FlashAttention({...common, blockSize: c.blockSize,
        biasInitializer: 'randomNormal'}); // non-zero biases so they are checked too
      const mha = new MultiHeadAttention(common);
      const {xs, attentionMask} = caseInputs(c, B);
      const inputs = xs.length === 1 ? xs[0] : xs;
      tf.dispose(flash.apply(inputs, {attentionMask}) as tf.Tensor); // build
      tf.dispose(mha.apply(inputs, {attentionMask}) as tf.Tensor);
      mha.setWeights(flash.getWeights());
      expect(flash.weights.map((w) => w.shape)).toEqual(mha.weights.map((w) => w.shape));
      const cot = randn([B, c.T, c.E], 4);
      expectSameLayer(mha, flash, xs, cot, attentionMask);
      tf.dispose([...new Set(xs), cot]);
      attentionMask?.dispose();
      flash.dispose();
      mha.dispose();
    });
  }

  test('weights follow the Keras layout; blockSize and keyBlockSize default to null (the op\'s tiles) and are in getConfig', () => {
    const layer = new FlashAttention({numHeads: 4, numKvHeads: 2, headDim: 3, valueDim: 5, outputDim: 7, name: 'fa'});
    expect(layer.blockSize).toBeNull();
    expect(layer.keyBlockSize).toBeNull();
    const q = tf.zeros([1, 2, 8]);
    const v = tf.zeros([1, 3, 6]);
    const out = layer.apply([q, v]) as tf.Tensor;
    expect(out.shape).toEqual([1, 2, 7]);
    expect(layer.weights.map((w) => [w.name, w.shape])).toEqual([
      ['fa/query/kernel', [8, 4, 3]], ['fa/query/bias', [4, 3]],
      ['fa/key/kernel', [6, 2, 3]], ['fa/key/bias', [2, 3]],
      ['fa/value/kernel', [6, 2, 5]], ['fa/value/bias', [2, 5]],
      ['fa/attention_output/kernel', [4, 5, 7]], ['fa/attention_output/bias', [7]],
    ]);
    expect(layer.getClassName()).toBe('FlashAttention');
    expect(new FlashAttention({numHeads: 2, blockSize: 16}).getConfig()).toMatchObject({numHeads: 2, blockSize: 16,
      keyBlockSize: null});
    expect(new FlashAttention({numHeads: 2, keyBlockSize: 8}).getConfig())
      .toMatchObject({blockSize: null, keyBlockSize: 8});
    expect(() => new FlashAttention({numHeads: 2, keyBlockSize: 0})).toThrow(/keyBlockSize/);
    tf.dispose([q, v, out]);
    layer.dispose();
  });

  describe('in models', () => {
    let dir: string;
    beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-flash-')); });
    afterEach(() => fs.rmSync(dir, {recursive: true, force: true}));

    /** FlashAttention (GQA, causal) then MultiHeadAttention with implementation 'flash' (cross). */
    function flashModel(): tf.LayersModel {
      const x = tf.input({shape: [6, 8]});
      const ctx = tf.input({shape: [4, 5]});
      const self = new FlashAttention({numHeads: 4, numKvHeads: 2, causal: true, blockSize: 4, name: 'flash'})
        .apply(x) as tf.SymbolicTensor;
      const h = tf.layers.add().apply([x, self]) as tf.SymbolicTensor;
      const cross = new MultiHeadAttention({numHeads: 2, headDim: 3, outputDim: 8, implementation: 'flash', name: 'mha'})
        .apply([h, ctx]) as tf.SymbolicTensor;
      const out = tf.layers.dense({units: 2}).apply(cross) as tf.SymbolicTensor;
      return tf.model({inputs: [x, ctx], outputs: out});
    }

    test('save -> load gives identical outputs (1e-6), a FlashAttention with the same blockSize', async () => {
      const model = flashModel();
      const x = randn([3, 6, 8], 1);
      const ctx = randn([3, 4, 5], 2);
      const before = model.predict([x, ctx]) as tf.Tensor;
      await model.save(`file://${dir}/m`);
      const loaded = await tf.loadLayersModel(`file://${dir}/m/model.json`);
      const after = loaded.predict([x, ctx]) as tf.Tensor;
      expect(tf.max(tf.abs(tf.sub(before, after))).dataSync()[0]).toBeLessThanOrEqual(1e-6);
      const flash = loaded.getLayer('flash');
      expect(flash).toBeInstanceOf(FlashAttention);
      expect([(flash as FlashAttention).blockSize, (flash as FlashAttention).numKvHeads,
        (flash as FlashAttention).causal]).toEqual([4, 2, true]);
      expect((loaded.getLayer('mha') as MultiHeadAttention).implementation).toBe('flash');
      expect(loaded.getWeights().map((w) => w.shape)).toEqual(model.getWeights().map((w) => w.shape));
      tf.dispose([x, ctx, before, after]);
      model.dispose();
      loaded.dispose();
    });
  });

  describe('errors', () => {
    test.each([
      [{numHeads: 2, blockSize: 0}, /blockSize must be a positive integer, received 0/],
      [{numHeads: 2, blockSize: 2.5}, /blockSize must be a positive integer, received 2\.5/],
      [{numHeads: 8, numKvHeads: 3}, /numHeads \(8\) must be divisible by numKvHeads \(3\)/],
    ])('constructor rejects %j with INVALID_CONFIG', (args, message) => {
      expectError(() => new FlashAttention(args), 'INVALID_CONFIG', message);
    });

    test('dropout > 0 is UNSUPPORTED in the constructor, and says why', () => {
      expectError(() => new FlashAttention({numHeads: 2, dropout: 0.1}), 'UNSUPPORTED',
        /FlashAttention does not support dropout \(received 0\.1\): flash attention never materialises the attention probabilities/);
    });

    test('returnAttentionScores is UNSUPPORTED at call, eagerly and in a graph, and says why', () => {
      const layer = new FlashAttention({numHeads: 2});
      const x = randn([1, 3, 4], 1);
      tf.dispose(layer.apply(x) as tf.Tensor);
      const why = /FlashAttention cannot return attention scores: flash attention never materialises/;
      expectError(() => layer.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED', why);
      expectError(() => layer.call(x, {returnAttentionScores: true}), 'UNSUPPORTED', why);
      expectError(() => new FlashAttention({numHeads: 2}).apply(tf.input({shape: [3, 4]}),
        {returnAttentionScores: true}), 'UNSUPPORTED', why);
      x.dispose();
      layer.dispose();
    });
  });
});

/**
 * Stands in for both ops in the dispatch tests, so that shapes above the threshold cost
 * nothing on the cpu backend: zeros [B, H, T, Dv] (and zero weights [B, H, T, S]).
 */
function fakeAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options?: {returnWeights?: boolean}) {
  const [B, H, T] = q.shape;
  const output = tf.zeros([B, H, T, v.shape[3]!]) as tf.Tensor4D;
  if (options?.returnWeights !== true) return output;
  return {output, weights: tf.zeros([B, H, T, k.shape[2]!]) as tf.Tensor4D};
}

describe(title('MultiHeadAttention implementation'), () => {
  let spy: jest.SpiedFunction<typeof flashOps.flashAttention>;
  beforeEach(() => { spy = jest.spyOn(flashOps, 'flashAttention'); });
  afterEach(() => jest.restoreAllMocks());

  /** Replaces both ops by fakeAttention (the flash spy keeps counting calls). */
  function fakeOps(): void {
    spy.mockImplementation(fakeAttention as never);
    jest.spyOn(sdpaOps, 'scaledDotProductAttention').mockImplementation(fakeAttention as never);
  }

  test("'flash' == 'standard' with the same weights, forward and gradients (GQA cross T=7 S=5 causal x padding)", () => {
    const c = cases[1];
    const common = {numHeads: c.H, numKvHeads: c.G, headDim: c.headDim, causal: true, biasInitializer: 'randomNormal' as const};
    const standard = new MultiHeadAttention(common);
    const flash = new MultiHeadAttention({...common, implementation: 'flash'});
    const {xs} = caseInputs(c, 2);
    const attentionMask = tf.tensor3d([[[1, 1, 1, 1, 1]], [[1, 1, 1, 0, 0]]]); // [B, 1, S]
    tf.dispose(standard.apply(xs, {attentionMask}) as tf.Tensor);
    tf.dispose(flash.apply(xs, {attentionMask}) as tf.Tensor);
    flash.setWeights(standard.getWeights());
    spy.mockClear();
    const cot = randn([2, c.T, c.E], 4);
    expectSameLayer(standard, flash, xs, cot, attentionMask);
    expect(spy).toHaveBeenCalled();
    expect(flash.getConfig().implementation).toBe('flash');
    tf.dispose([...xs, cot, attentionMask]);
    standard.dispose();
    flash.dispose();
  });

  test("'standard' never calls flashAttention, 'flash' always does", () => {
    const x = randn([1, 3, 4], 1);
    for (const [implementation, calls] of [['standard', 0], ['flash', 1]] as const) {
      spy.mockClear();
      const layer = new MultiHeadAttention({numHeads: 2, implementation});
      tf.dispose(layer.apply(x) as tf.Tensor);
      expect(spy).toHaveBeenCalledTimes(calls);
      layer.dispose();
    }
    x.dispose();
  });

  test(`'auto' picks flash from T * S >= FLASH_AUTO_MIN_SCORES (${FLASH_AUTO_MIN_SCORES}) with no scores and no active dropout`, () => {
    // Cross-attention with T = 32 and S just at / just below the threshold.
    fakeOps();
    const T = 32;
    const S = Math.ceil(FLASH_AUTO_MIN_SCORES / T);
    const layer = new MultiHeadAttention({numHeads: 1, headDim: 4, dropout: 0.5, implementation: 'auto'});
    const q = randn([1, T, 4], 1);
    const above = randn([1, S, 4], 2);
    const below = tf.slice(above, [0, 0, 0], [1, S - 1, 4]);
    const calls = (inputs: tf.Tensor[], kwargs: object) => {
      spy.mockClear();
      tf.dispose(layer.apply(inputs, kwargs) as tf.Tensor | tf.Tensor[]);
      return spy.mock.calls.length;
    };
    expect(calls([q, above], {})).toBe(1);
    expect(calls([q, below], {})).toBe(0);
    expect(calls([q, above], {training: true})).toBe(0); // dropout is active
    spy.mockClear();
    const [out, scores] = layer.apply([q, above], {returnAttentionScores: true}) as tf.Tensor[];
    expect(spy).not.toHaveBeenCalled();
    expect(scores.shape).toEqual([1, 1, T, S]);
    tf.dispose([q, above, below, out, scores]);
    layer.dispose();
  });

  test("'auto' without dropout uses flash in training too, and round-trips through getConfig", () => {
    const layer = new MultiHeadAttention({numHeads: 1, implementation: 'auto'});
    fakeOps();
    const T = Math.ceil(Math.sqrt(FLASH_AUTO_MIN_SCORES));
    const x = randn([1, T, 2], 1);
    spy.mockClear();
    tf.dispose(layer.apply(x, {training: true}) as tf.Tensor);
    expect(spy).toHaveBeenCalledTimes(1);
    const again = MultiHeadAttention.fromConfig(MultiHeadAttention, layer.getConfig()) as MultiHeadAttention;
    expect(again.implementation).toBe('auto');
    x.dispose();
    layer.dispose();
  });

  describe('errors', () => {
    test("'flash' with dropout > 0 is UNSUPPORTED in the constructor; 'auto' and 'standard' accept it", () => {
      expectError(() => new MultiHeadAttention({numHeads: 2, dropout: 0.1, implementation: 'flash'}), 'UNSUPPORTED',
        /MultiHeadAttention with implementation 'flash' does not support dropout \(received 0\.1\): flash attention never materialises/);
      for (const implementation of ['auto', 'standard'] as MhaImplementation[]) {
        expect(new MultiHeadAttention({numHeads: 2, dropout: 0.1, implementation}).dropout).toBe(0.1);
      }
    });

    test("'flash' with returnAttentionScores is UNSUPPORTED at call, eagerly and in a graph", () => {
      const layer = new MultiHeadAttention({numHeads: 2, implementation: 'flash'});
      const x = randn([1, 3, 4], 1);
      tf.dispose(layer.apply(x) as tf.Tensor); // build
      const why = /MultiHeadAttention with implementation 'flash' cannot return attention scores: flash attention never materialises/;
      expectError(() => layer.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED', why);
      expectError(() => layer.call(x, {returnAttentionScores: true}), 'UNSUPPORTED', why);
      expectError(() => new MultiHeadAttention({numHeads: 2, implementation: 'flash'})
        .apply(tf.input({shape: [3, 4]}), {returnAttentionScores: true}), 'UNSUPPORTED', why);
      x.dispose();
      layer.dispose();
    });
  });
});
