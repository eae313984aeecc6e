// The two causal alignments: 'top-left' (query i sees key j iff j <= i: Keras'
// use_causal_mask, PyTorch's is_causal) and 'bottom-right' (= true: j <= i + S - T,
// FlashAttention-2's). Every op against the reference with an explicit mask, forward and
// gradients; every layer's useCausalMask against an explicit mask (or, for the layers
// that take no full masks, against the same weights built with causal: 'top-left');
// graphs, save -> load, and bad values.
import * as tf from '@tensorflow/tfjs';
import {causalMask, FlashAttention, flashAttention, LinearAttention, LocalGlobalAttention, localGlobalAttention, MultiHeadAttention, scaledDotProductAttention} from '../../src';
import {linearAttentionFromFeatures} from '../../src/internals';
import {gradsOf} from '../support/cases';
import {expectClose, expectError, maxDiff, randn, title} from '../support/helpers';
import {referenceAttention, referenceLinear} from '../support/reference';

/** [T, S] 0/1 written plainly: 1 where j <= i + offset. */
function lowerMask(T: number, S: number, offset: number): tf.Tensor2D {
  const rows = Array.from({length: T}, (_, i) => Array.from({length: S}, (_, j) => (j <= i + offset ? 1 : 0)));
  return tf.tensor2d(rows, [T, S]);
}

const SHAPES: [number, number][] = [[5, 5], [5, 3], [3, 5], [1, 4], [7, 2]];

/**
 * expectClose for gradients, some of which are zero in exact arithmetic (a query that sees
 * a single key has dq = 0 and gives that key dk = 0), so that both sides hold only float
 * rounding (~1e-7): there an error relative to the scale means nothing, and both must
 * instead be zero to rounding (1e-5).
 */
function expectGradClose(actual: tf.Tensor, expected: tf.Tensor): void {
  const maxAbsOf = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);
  if (maxAbsOf(expected) > 1e-5) expectClose(actual, expected);
  else expect(maxAbsOf(actual)).toBeLessThanOrEqual(1e-5);
}

describe(title('causal alignments'), () => {
  test('causalMask: top-left is j <= i, bottom-right j <= i + S - T, for T < S, T == S and T > S', () => {
    for (const [T, S] of SHAPES) {
      for (const [alignment, offset] of [['top-left', 0], ['bottom-right', S - T]] as const) {
        const m = causalMask(T, S, alignment);
        const expected = lowerMask(T, S, offset);
        expect(Array.from(m.dataSync()).map(Number)).toEqual(Array.from(expected.dataSync()));
        tf.dispose([m, expected]);
      }
    }
  });

  describe.each(SHAPES)('ops (T=%i, S=%i, H=2, G=1)', (T, S) => {
    const make = () => ({q: randn([2, 2, T, 4], 1), k: randn([2, 1, S, 4], 2), v: randn([2, 1, S, 3], 3),
      cot: randn([2, 2, T, 3], 4)});

    test("sdpa and flash with causal: 'top-left' == the reference with the j <= i mask, forward and gradients", () => {
      const {q, k, v, cot} = make();
      const mask = lowerMask(T, S, 0);
      const ref = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => referenceAttention(a, b, c, {mask});
      const refGrads = gradsOf(ref, q, k, v, cot);
      for (const op of [
        (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => scaledDotProductAttention(a, b, c, {causal: 'top-left'}),
        (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => flashAttention(a, b, c, {causal: 'top-left', blockSize: 2}),
      ]) {
        expectClose(op(q, k, v), ref(q, k, v));
        gradsOf(op, q, k, v, cot).forEach((g, i) => expectGradClose(g, refGrads[i]));
      }
      tf.dispose([q, k, v, cot, mask, refGrads]);
    });

    test("'bottom-right' is true: the reference's causal rule", () => {
      const {q, k, v} = make();
      const ref = referenceAttention(q, k, v, {causal: true});
      expectClose(scaledDotProductAttention(q, k, v, {causal: 'bottom-right'}), ref);
      expectClose(flashAttention(q, k, v, {causal: 'bottom-right', blockSize: 2}), ref);
      expect(maxDiff(scaledDotProductAttention(q, k, v, {causal: true}), ref)).toBeLessThanOrEqual(1e-5);
      tf.dispose([q, k, v, ref]);
    });

    test('linear attention from features: both alignments == the per-prefix reference (chunks of 2)', () => {
      const {v, cot} = make();
      const qf = tf.abs(randn([2, 2, T, 6], 5));
      const kf = tf.abs(randn([2, 1, S, 6], 6));
      for (const [alignment, offset] of [['top-left', 0], ['bottom-right', S - T]] as const) {
        const mask = lowerMask(T, S, offset);
        const op = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
          linearAttentionFromFeatures(a, b, c, {causal: alignment, chunkSize: 2});
        const ref = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => referenceLinear(a, b, c, {mask});
        expectClose(op(qf, kf, v), ref(qf, kf, v));
        const got = gradsOf(op, qf, kf, v, cot);
        gradsOf(ref, qf, kf, v, cot).forEach((g, i) => expectGradClose(got[i], g));
        mask.dispose();
      }
      tf.dispose([v, cot, qf, kf]);
    });
  });

  test("local-global: T == S, so true, 'top-left' and 'bottom-right' are one rule", () => {
    const q = randn([1, 2, 9, 4], 7);
    const gate = randn([2, 4], 8);
    const run = (causal: boolean | 'top-left' | 'bottom-right') =>
      localGlobalAttention(q, q, q, {windowSize: 2, globalIndices: [0, 4], gate, causal});
    const base = run(true);
    expect(maxDiff(run('top-left'), base)).toBe(0);
    expect(maxDiff(run('bottom-right'), base)).toBe(0);
    expect(maxDiff(run(false), base)).toBeGreaterThan(1e-3);
    tf.dispose([q, gate, base]);
  });

  test('bad causal values are INVALID_CONFIG in every op and layer, strings included', () => {
    const q = randn([1, 1, 3, 4], 9);
    for (const bad of ['false', 'true', 1, 'topleft', 'upper']) {
      const msg = /causal must be true, false, 'top-left' or 'bottom-right'/;
      expectError(() => scaledDotProductAttention(q, q, q, {causal: bad as never}), 'INVALID_CONFIG', msg);
      expectError(() => flashAttention(q, q, q, {causal: bad as never}), 'INVALID_CONFIG', msg);
      expectError(() => linearAttentionFromFeatures(tf.abs(q), tf.abs(q), q, {causal: bad as never}), 'INVALID_CONFIG', msg);
      expectError(() => new MultiHeadAttention({numHeads: 1, causal: bad as never}), 'INVALID_CONFIG', msg);
      expectError(() => new LocalGlobalAttention({numHeads: 1, windowSize: 1, causal: bad as never}), 'INVALID_CONFIG', msg);
    }
    q.dispose();
  });

  // Every layer that can be causal, built twice with the same weights.
  type Maker = (causal: boolean | 'top-left' | 'bottom-right') => tf.layers.Layer;
  const KINDS: [string, Maker, boolean][] = [
    ['MultiHeadAttention', (causal) => new MultiHeadAttention({numHeads: 2, numKvHeads: 1, causal}), true],
    ["MultiHeadAttention 'flash'", (causal) =>
      new MultiHeadAttention({numHeads: 2, causal, implementation: 'flash'}), true],
    ['FlashAttention', (causal) => new FlashAttention({numHeads: 2, causal, blockSize: 2}), true],
    ['LinearAttention', (causal) => new LinearAttention({numHeads: 2, causal, seed: 3, chunkSize: 2}), false],
    ['LocalGlobalAttention', (causal) => new LocalGlobalAttention({numHeads: 2, causal, windowSize: 2,
      globalIndices: [0]}), false],
  ];

  describe.each(KINDS)('%s', (name, make, fullMasks) => {
    const lengths: [number, number][] = name === 'LocalGlobalAttention' ? [[5, 5]] : [[5, 5], [5, 3], [3, 5]];

    /** A layer of this kind with `causal`, built and given the weights of `from`. */
    const twin = (from: tf.layers.Layer, causal: boolean | 'top-left' | 'bottom-right', x: tf.Tensor[]) => {
      const layer = make(causal);
      tf.dispose(layer.apply(x) as tf.Tensor);
      layer.setWeights(from.getWeights());
      return layer;
    };

    test.each(lengths)("useCausalMask == causal: 'top-left' == an explicit j <= i mask (T=%i, S=%i)", (T, S) => {
      const x = [randn([2, T, 8], 10), randn([2, S, 8], 11)];
      const plain = make(false);
      const viaKwarg = plain.apply(x, {useCausalMask: true}) as tf.Tensor;
      const topLeft = twin(plain, 'top-left', x);
      expectClose(topLeft.apply(x) as tf.Tensor, viaKwarg, 1e-5);
      if (fullMasks) {
        const mask = tf.tile(tf.expandDims(lowerMask(T, S, 0)), [2, 1, 1]); // [B, T, S]
        expectClose(plain.apply(x, {attentionMask: mask}) as tf.Tensor, viaKwarg, 1e-5);
        mask.dispose();
      }
      // And it is causal: not the unmasked result (every shape here hides some key).
      expect(maxDiff(plain.apply(x) as tf.Tensor, viaKwarg)).toBeGreaterThan(1e-4);
      tf.dispose([x, viaKwarg]);
      [plain, topLeft].forEach((l) => l.dispose());
    });

    test('the layer\'s causal and useCausalMask together: the stricter rule', () => {
      for (const [T, S] of lengths) {
        const x = [randn([1, T, 8], 12), randn([1, S, 8], 13)];
        const bottomRight = make(true);
        const both = bottomRight.apply(x, {useCausalMask: true}) as tf.Tensor;
        // j <= i + min(0, S - T): top-left when S >= T, bottom-right when S < T.
        const stricter = twin(bottomRight, S >= T ? 'top-left' : 'bottom-right', x);
        expectClose(stricter.apply(x) as tf.Tensor, both, 1e-5);
        tf.dispose([x, both]);
        [bottomRight, stricter].forEach((l) => l.dispose());
      }
    });

    test('in a graph: useCausalMask is kept for predict and through save -> load; causal: \'top-left\' is saved', async () => {
      const [T, S] = lengths[lengths.length - 1];
      const q = tf.input({shape: [T, 8]});
      const v = tf.input({shape: [S, 8]});
      const layer = make(false);
      const model = tf.model({inputs: [q, v],
        outputs: layer.apply([q, v], {useCausalMask: true}) as tf.SymbolicTensor});
      const x = [randn([2, T, 8], 14), randn([2, S, 8], 15)];
      const eager = layer.apply(x, {useCausalMask: true}) as tf.Tensor;
      const predicted = model.predict(x) as tf.Tensor;
      expect(maxDiff(predicted, eager)).toBeLessThanOrEqual(1e-6);
      let saved: tf.io.ModelArtifacts | null = null;
      await model.save(tf.io.withSaveHandler(async (a) => { saved = a; return {modelArtifactsInfo: {} as never}; }));
      const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
      expect(maxDiff(loaded.predict(x) as tf.Tensor, eager)).toBeLessThanOrEqual(1e-6);

      // A layer built with causal: 'top-left' saves it in its config and loads as the same layer.
      const q2 = tf.input({shape: [T, 8]});
      const v2 = tf.input({shape: [S, 8]});
      const topLeft = twin(layer, 'top-left', x);
      const model2 = tf.model({inputs: [q2, v2], outputs: topLeft.apply([q2, v2]) as tf.SymbolicTensor});
      await model2.save(tf.io.withSaveHandler(async (a) => { saved = a; return {modelArtifactsInfo: {} as never}; }));
      const loaded2 = await tf.loadLayersModel(tf.io.fromMemory(saved!));
      const reloaded = loaded2.layers.find((l) => l.getClassName() === topLeft.getClassName())!;
      expect(reloaded.getConfig().causal).toBe('top-left');
      expect(maxDiff(loaded2.predict(x) as tf.Tensor, eager)).toBeLessThanOrEqual(1e-6);
      model2.dispose();
      loaded2.dispose();
      tf.dispose([x, eager, predicted]);
      model.dispose();
      loaded.dispose();
    });
  });
});
