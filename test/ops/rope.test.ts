// Rotary position embedding: rotaryEmbedding against a plain-loop reference of the math
// (full and partial ropeDim, start > 0), q.k depending only on the offset, norms kept, its
// gradient the inverse rotation; layers with positionEncoding 'rope' (== the reference
// attention on rotated q and k, config, save -> load); buildTransformer({positions: 'rope'})
// (any length, no position table) training on the copy task; and the errors.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {registerFileRouter} from '../../src/io/file_system';
import {ATTENTION_KINDS, attentionLayer} from '../../src/layers/factory';
import {AttentionLayerBase} from '../../src/layers/base_attention';
import {MultiHeadAttention} from '../../src/layers/multi_head_attention';
import {rotaryEmbedding} from '../../src/ops/rope';
import {buildTransformer} from '../../src/train/model';
import {PositionEmbedding} from '../../src/layers/position_embedding';
import {makeToyTask} from '../../src/train/tasks';
import {evaluate} from '../../src/train/evaluate';
import {train} from '../../src/train/trainer';
import {expectClose, expectError, headsOf, maxDiff, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

registerFileRouter();

type Rows = number[][][][]; // [B, N, T, D]

/**
 * The math, written out: channel pair (i, i + dim/2) of the row at position p = start + t
 * turns by the angle p * base^(-2i / dim); channels from dim on pass unchanged. With
 * `inverse`, the turn is the other way (the transpose of the rotation).
 */
function ropeReference(x: Rows, start: number, base: number, dim: number, inverse = false): Rows {
  const half = dim / 2;
  return x.map((heads) => heads.map((rows) => rows.map((row, t) => {
    const out = row.slice();
    for (let i = 0; i < half; i++) {
      const angle = (start + t) * Math.pow(base, (-2 * i) / dim) * (inverse ? -1 : 1);
      const [x1, x2] = [row[i], row[i + half]];
      out[i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
      out[i + half] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
    }
    return out;
  })));
}

const rows = (t: tf.Tensor) => t.arraySync() as Rows;
const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i], 0);
const norm = (a: number[]) => Math.sqrt(dot(a, a));

describe(title('rotaryEmbedding'), () => {
  test.each([
    // [shape [B, N, T, D], start, base, dim]
    [[1, 1, 1, 8], 0, 10000, 8],
    [[2, 3, 7, 8], 0, 10000, 8],
    [[2, 3, 7, 8], 5, 10000, 8],
    [[1, 2, 7, 12], 1000, 10000, 12],
    [[2, 2, 5, 12], 3, 10000, 6],   // partial: 6 of 12 channels
    [[1, 2, 9, 8], 40, 500, 2],     // partial: one pair, another base
  ])('x %j, start %i, base %i, ropeDim %i == the plain loop (relative 1e-5)', (shape, start, base, dim) => {
    tf.tidy(() => {
      const x = randn(shape as number[], 1);
      const y = rotaryEmbedding(x, {start, base, dim});
      expectClose(y, tf.tensor(ropeReference(rows(x), start, base, dim)), 1e-5);
      // Channels past ropeDim are exactly the input; and the rotation is not the identity.
      const D = shape[3];
      const rest = (t: tf.Tensor) => tf.slice(t, [0, 0, 0, dim], [-1, -1, -1, D - dim]);
      if (dim < D) expect(maxDiff(rest(y), rest(x))).toBe(0);
      if (start + shape[2] > 1) expect(maxDiff(y, x)).toBeGreaterThan(1e-2);
    });
  });

  test('defaults: start 0, base 10000, the whole head; position 0 is the identity', () => {
    tf.tidy(() => {
      const x = randn([1, 2, 6, 8], 2);
      expect(maxDiff(rotaryEmbedding(x), rotaryEmbedding(x, {start: 0, base: 10000, dim: 8}))).toBe(0);
      expect(maxDiff(tf.slice(rotaryEmbedding(x), [0, 0, 0, 0], [1, 2, 1, 8]), tf.slice(x, [0, 0, 0, 0], [1, 2, 1, 8])))
        .toBeLessThan(1e-7);
    });
  });

  test('q.k depends only on the offset: shifting both positions by 1, 7, 100, 1000, 4096 keeps every score (4e-6 of |q||k|)', () => {
    tf.tidy(() => {
      const D = 16;
      const q = randn([1, 1, 1, D], 3);
      const k = randn([1, 1, 1, D], 4);
      const scale = norm(rows(q)[0][0][0]) * norm(rows(k)[0][0][0]);
      // The same q at positions s .. s + 11 and the same k there: scores[i][j] = q(s + i) . k(s + j).
      const T = 12;
      const scores = (s: number) => {
        const qs = rows(rotaryEmbedding(tf.tile(q, [1, 1, T, 1]), {start: s}))[0][0];
        const ks = rows(rotaryEmbedding(tf.tile(k, [1, 1, T, 1]), {start: s}))[0][0];
        return qs.map((qi) => ks.map((kj) => dot(qi, kj)));
      };
      const base = scores(0);
      let worst = 0;
      for (const s of [1, 7, 100, 1000, 4096]) {
        const shifted = scores(s);
        base.forEach((row, i) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(shifted[i][j] - v)); }));
      }
      expect(worst / scale).toBeLessThan(4e-6);
      // Along a diagonal (one offset) the score is one number; across offsets it changes.
      for (let i = 0; i + 1 < T; i++) expect(Math.abs(base[i + 1][i + 1] - base[0][0]) / scale).toBeLessThan(4e-6);
      const offsets = [0, 1, 2, 5, 11].map((d) => base[0][d]);
      for (let a = 1; a < offsets.length; a++) expect(Math.abs(offsets[a] - offsets[0]) / scale).toBeGreaterThan(1e-2);
      // Without the rotation the scores would not move at all: the test sees the positions.
      expect(Math.abs(base[0][1] - dot(rows(q)[0][0][0], rows(k)[0][0][0])) / scale).toBeGreaterThan(1e-3);
    });
  });

  test('norms are kept at every position, for the whole head and a partial ropeDim (relative 1e-6)', () => {
    tf.tidy(() => {
      const x = randn([2, 2, 9, 8], 5);
      for (const [start, dim] of [[0, 8], [1000, 8], [3, 4]]) {
        const y = rows(rotaryEmbedding(x, {start, dim}));
        rows(x).forEach((heads, b) => heads.forEach((r, n) => r.forEach((row, t) => {
          expect(Math.abs(norm(y[b][n][t]) - norm(row)) / norm(row)).toBeLessThan(1e-6);
        })));
      }
    });
  });

  test('its gradient is the inverse rotation (plain loop), and it leaks no tensor', () => {
    tf.tidy(() => {
      const x = randn([1, 2, 5, 8], 6);
      const w = randn([1, 2, 5, 8], 7);
      const [g] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(rotaryEmbedding(a, {start: 9, dim: 6}), w)))([x]);
      expectClose(g, tf.tensor(ropeReference(rows(w), 9, 10000, 6, true)), 1e-5);
    });
    const x = randn([1, 2, 5, 8], 6);
    const before = tf.memory().numTensors;
    tf.dispose(rotaryEmbedding(x, {start: 3}));
    tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(rotaryEmbedding(a, {start: 3})))([x]));
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });

  test.each([
    [{dim: 3}, /ropeDim must be even and at most the head dim \(8\), received 3/],
    [{dim: 10}, /ropeDim must be even and at most the head dim \(8\), received 10/],
    [{base: 1}, /ropeBase must be a finite number above 1, received 1/],
    [{base: 0.5}, /ropeBase must be a finite number above 1, received 0\.5/],
    [{start: -1}, /start must be a non-negative integer, received -1/],
    [{start: 1.5}, /start must be a non-negative integer, received 1\.5/],
  ])('rotaryEmbedding(x, %j) throws INVALID_CONFIG', (options, message) => {
    const x = tf.zeros([1, 1, 2, 8]);
    expectError(() => rotaryEmbedding(x, options), 'INVALID_CONFIG', message);
    x.dispose();
  });

  test('rotaryEmbedding of a rank-3 tensor is DIMENSION_MISMATCH', () => {
    const x = tf.zeros([1, 2, 8]);
    expectError(() => rotaryEmbedding(x), 'DIMENSION_MISMATCH',
      /takes x \[batch, heads, length, dim\], received shape \[1, 2, 8\]/);
    x.dispose();
  });
});

describe(title("layers with positionEncoding 'rope'"), () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-rope-')); });
  afterEach(() => fs.rmSync(dir, {recursive: true, force: true}));

  test.each([[false, 4], [true, 4], [true, 2]])(
    'MultiHeadAttention (causal %s, ropeDim %i of D=4) == reference attention over plain-loop-rotated q, k (1e-5)',
    (causal, ropeDim) => {
      tf.tidy(() => {
        const layer = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4, causal, positionEncoding: 'rope',
          ropeBase: 100, ropeDim, biasInitializer: 'randomNormal'});
        const x = randn([2, 7, 8], 1);
        const y = layer.apply(x) as tf.Tensor;
        const [qk, qb, kk, kb, vk, vb, ok, ob] = layer.getWeights();
        const q = tf.tensor(ropeReference(rows(headsOf(x, qk, qb)), 0, 100, ropeDim));
        const k = tf.tensor(ropeReference(rows(headsOf(x, kk, kb)), 0, 100, ropeDim));
        const o = referenceAttention(q, k, headsOf(x, vk, vb), {causal});       // [B, H, T, Dv]
        const expected = tf.add(tf.matMul(tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [14, 8]),
          tf.reshape(ok, [8, 8])), ob).reshape([2, 7, 8]);
        expectClose(y, expected, 1e-5);
        // The same weights without RoPE give other outputs.
        const plain = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4, causal});
        tf.dispose(plain.apply(x) as tf.Tensor);
        plain.setWeights(layer.getWeights());
        expect(maxDiff(plain.apply(x) as tf.Tensor, y)).toBeGreaterThan(1e-3);
        layer.dispose();
        plain.dispose();
      });
    });

  test('getConfig holds positionEncoding, ropeBase, ropeDim; save -> load gives identical outputs, every kind', async () => {
    const input = tf.input({shape: [null, 16]});
    let h = input as tf.SymbolicTensor;
    for (const kind of ATTENTION_KINDS) {
      const args = {numHeads: 4, causal: true, positionEncoding: 'rope' as const, name: `rope_${kind}`,
        ...(kind === 'mha' ? {ropeBase: 500, ropeDim: 2} : {}), ...(kind === 'gqa' ? {numKvHeads: 2} : {}),
        ...(kind === 'local-global' ? {windowSize: 3, globalIndices: [0]} : {}), ...(kind === 'linear' ? {seed: 2} : {})};
      h = tf.layers.add().apply([h, attentionLayer(kind, args).apply(h) as tf.SymbolicTensor]) as tf.SymbolicTensor;
    }
    const model = tf.model({inputs: input, outputs: h});
    const mha = model.getLayer('rope_mha') as AttentionLayerBase;
    expect([mha.getConfig().positionEncoding, mha.getConfig().ropeBase, mha.getConfig().ropeDim]).toEqual(['rope', 500, 2]);
    const gqa = model.getLayer('rope_gqa') as AttentionLayerBase;
    expect([gqa.getConfig().positionEncoding, gqa.getConfig().ropeBase, gqa.getConfig().ropeDim])
      .toEqual(['rope', 10000, null]);
    expect(gqa.ropeDim).toBe(4); // the whole head, once built
    const plain = new MultiHeadAttention({numHeads: 2});
    expect([plain.getConfig().positionEncoding, plain.getConfig().ropeDim, plain.ropeDim]).toEqual(['none', null, null]);

    const x = randn([2, 9, 16], 3);
    const before = model.predict(x) as tf.Tensor;
    await model.save(`file://${dir}/m`);
    const loaded = await tf.loadLayersModel(`file://${dir}/m/model.json`);
    const after = loaded.predict(x) as tf.Tensor;
    expect(maxDiff(before, after)).toBeLessThanOrEqual(1e-6);
    for (const kind of ATTENTION_KINDS) {
      const [a, b] = [model, loaded].map((m) => (m.getLayer(`rope_${kind}`) as AttentionLayerBase).getConfig());
      expect([b.positionEncoding, b.ropeBase, b.ropeDim]).toEqual([a.positionEncoding, a.ropeBase, a.ropeDim]);
    }
    // Another length works too (no position table), and positions matter: a shifted input is not a shifted output.
    const longer = randn([1, 13, 16], 4);
    const y = loaded.predict(longer) as tf.Tensor;
    expect(y.shape).toEqual([1, 13, 16]);
    expect(maxDiff(y, model.predict(longer) as tf.Tensor)).toBeLessThanOrEqual(1e-6);
    tf.dispose([x, before, after, longer, y]);
    model.dispose();
    loaded.dispose();
  });

  test('errors: ropeDim odd, ropeDim > headDim, ropeBase <= 1, ropeDim without rope, an unknown encoding', () => {
    expectError(() => new MultiHeadAttention({numHeads: 2, positionEncoding: 'rope', ropeDim: 3}), 'INVALID_CONFIG',
      /ropeDim must be even, received 3/);
    const wide = new MultiHeadAttention({numHeads: 2, headDim: 4, positionEncoding: 'rope', ropeDim: 6});
    expectError(() => wide.apply(tf.zeros([1, 3, 8])), 'INVALID_CONFIG',
      /ropeDim must be even and at most the head dim \(4\), received 6/);
    for (const ropeBase of [1, 0, -2]) {
      expectError(() => attentionLayer('linear', {numHeads: 2, positionEncoding: 'rope', ropeBase}), 'INVALID_CONFIG',
        new RegExp(`ropeBase must be a finite number above 1, received ${ropeBase}`));
    }
    expectError(() => attentionLayer('flash', {numHeads: 2, ropeDim: 4}), 'INVALID_CONFIG',
      /ropeDim is for positionEncoding 'rope'; pass positionEncoding: 'rope'/);
    expectError(() => new MultiHeadAttention({numHeads: 2, positionEncoding: 'alibi' as never}), 'INVALID_CONFIG',
      /positionEncoding must be one of 'none', 'rope'/);
    expectError(() => buildTransformer({attention: 'mha', vocabSize: 5, seqLength: 4, attentionArgs: {positionEncoding: 'rope'}}),
      'INVALID_CONFIG', /buildTransformer sets the attention layers' positionEncoding itself: pass positions: 'rope'/);
  });
});

describe(title("buildTransformer({positions: 'rope'})"), () => {
  const tiny = {vocabSize: 11, seqLength: 8, modelDim: 16, numHeads: 4, numLayers: 2, causal: true, positions: 'rope' as const};

  test('takes tokens of any length (5 and 37), has no position table, rotates in every attention layer', () => {
    const model = buildTransformer({attention: 'gqa', ...tiny, seed: 2});
    expect(model.inputs[0].shape).toEqual([null, null]);
    expect(model.layers.some((l) => l.name === 'position_embedding' || l instanceof PositionEmbedding)).toBe(false);
    const attention = model.layers.filter((l) => l instanceof AttentionLayerBase) as AttentionLayerBase[];
    expect(attention.map((l) => l.positionEncoding)).toEqual(['rope', 'rope']);
    const ids = Array.from({length: 37}, (_, i) => (i * 3 + 1) % 11);
    tf.tidy(() => {
      const long = model.predict(tf.tensor2d([ids], [1, 37], 'int32')) as tf.Tensor;
      const short = model.predict(tf.tensor2d([ids.slice(0, 5)], [1, 5], 'int32')) as tf.Tensor;
      expect(long.shape).toEqual([1, 37, 11]);
      expect(short.shape).toEqual([1, 5, 11]);
      // Causal, positions from 0: the first 5 rows of the long pass are the short pass.
      expect(maxDiff(tf.slice(long, [0, 0, 0], [1, 5, 11]), short)).toBeLessThan(1e-5);
    });
    const learned = buildTransformer({attention: 'gqa', ...tiny, positions: 'learned'});
    expect(learned.inputs[0].shape).toEqual([null, 8]);
    expect(learned.getLayer('position_embedding')).toBeInstanceOf(PositionEmbedding);
    [model, learned].forEach((m) => m.dispose());
  });

  test('gradients reach every weight (finite; query and key kernels non-zero), with RoPE between them', () => {
    const model = buildTransformer({attention: 'mha', ...tiny, seed: 4});
    const x = tf.tensor2d([[1, 5, 2, 9, 3, 7, 4]], [1, 7], 'int32');
    const {value, grads} = tf.variableGrads(() =>
      tf.mean(tf.log(tf.add(model.apply(x) as tf.Tensor, 1e-6))) as tf.Scalar);
    const names = Object.keys(grads);
    expect(names.length).toBe(model.trainableWeights.length);
    for (const name of names) {
      const g = grads[name];
      expect(tf.tidy(() => tf.all(tf.isFinite(g)).dataSync()[0])).toBe(1);
      if (/(query|key)\/kernel/.test(name)) {
        const size = tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]);
        if (!(size > 0)) throw new Error(`${name} has a zero gradient`);
      }
    }
    expect(names.filter((n) => /(query|key)\/kernel/.test(n))).toHaveLength(4);
    tf.dispose([x, value, Object.values(grads)]);
    model.dispose();
  });

  test('learns the copy task (causal, 40 steps): loss from > 2 to < 0.5, token accuracy from chance (1/8) to > 0.8', async () => {
    const taskOptions = {length: 4, vocabSize: 10}; // 8 symbols
    const model = {attention: 'mha' as const, modelDim: 16, numHeads: 2, numLayers: 1, ffDim: 32, causal: true,
      positions: 'rope' as const};
    const task = makeToyTask('copy', taskOptions);
    const untrained = buildTransformer({...model, vocabSize: task.vocabSize, seqLength: task.seqLength, seed: 1});
    const start = await evaluate(untrained, task, 1, 32, 2);
    untrained.dispose();
    const result = await train({task: 'copy', taskOptions, model, seed: 1, steps: 40, batchSize: 16, learningRate: 1e-2,
      warmupSteps: 10, evalEvery: 20, evalBatches: 2});
    const end = result.record.history[result.record.history.length - 1];
    expect(end.step).toBe(40);
    expect(start.loss).toBeGreaterThan(2);
    expect(start.tokenAccuracy).toBeLessThan(0.3);
    expect(end.loss).toBeLessThan(0.5);
    expect(end.tokenAccuracy).toBeGreaterThan(0.8);
    result.model.dispose();
  });
});
