// The attention options (softcap, slidingWindow, attentionSinks, qkNorm, outputGate, alibi) in
// decoding and in models: cached decoding == the full pass for each option and all of them, in a
// model (transformerDecoder, generate) and in a layer; a sliding-window cache holds W positions
// whatever the context and rewinds only as far as they reach; the window equals the same band
// given as an attention mask, causal or not, on both paths; save/load and config round trips;
// buildTransformer's globalEvery; dropout with the options; and the coded errors of bad options.
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../../src/core/errors';
import {AttentionLayerBase} from '../../src/layers/base_attention';
import {AttentionCache, cacheBytes} from '../../src/layers/decoding';
import {FlashAttention} from '../../src/layers/flash_attention';
import {LinearAttention} from '../../src/layers/linear_attention';
import {MultiHeadAttention} from '../../src/layers/multi_head_attention';
import {withAttentionMods} from '../../src/layers/flex_layer';
import {documentMask} from '../../src/ops/flex_mods';
import {DecoderCache, disposeDecoderCache, generate, transformerDecoder} from '../../src/train/generate';
import {buildTransformer} from '../../src/train/model';
import {expectError, maxDiff, randn, reloadedInMemory, title} from '../support/helpers';

const V = 11;
const E = 16;
const OPTION_NAMES = ['sinks', 'query_norm/gamma', 'key_norm/gamma', 'gate/kernel', 'gate/bias', 'alibi/slopes'];

/** Each option alone, then Gemma-2-like, gpt-oss-like and every option together (window 5: the cache drops keys). */
const OPTION_SETS: [string, Record<string, unknown>][] = [
  ['softcap', {softcap: 2}],
  ['slidingWindow', {slidingWindow: 5}],
  ['attentionSinks', {attentionSinks: true}],
  ['qkNorm rms', {qkNorm: 'rms'}],
  ['qkNorm layer', {qkNorm: 'layer'}],
  ['outputGate headwise', {outputGate: 'headwise'}],
  ['outputGate elementwise', {outputGate: 'elementwise'}],
  ['alibi', {alibi: true}],
  ['alibi learned', {alibi: 'learned'}],
  ['gemma-2-like', {softcap: 2, slidingWindow: 5}],
  ['gpt-oss-like', {attentionSinks: true, slidingWindow: 5}],
  ['all', {softcap: 2, slidingWindow: 5, attentionSinks: true, qkNorm: 'rms', outputGate: 'elementwise',
    alibi: 'learned'}],
];

/** Sets the option weights of `model`'s layers to seeded values away from their initial ones (so each matters). */
function perturbOptionWeights(layers: tf.layers.Layer[], seed: number): void {
  layers.forEach((layer, l) => {
    const values = layer.getWeights().map((w, i) => {
      const name = layer.weights[i].originalName.replace(/^.*?\//, '');
      if (!OPTION_NAMES.includes(name)) return w;
      return tf.tidy(() => tf.add(w, randn(w.shape, seed + 10 * l + i, 0.5)));
    });
    layer.setWeights(values);
    tf.dispose(values.filter((v, i) => v !== layer.getWeights()[i]));
  });
}

function optionModel(kind: 'gqa' | 'flash', options: Record<string, unknown>, seqLength = 40): tf.LayersModel {
  const model = buildTransformer({
    attention: kind, vocabSize: V, seqLength, modelDim: E, numHeads: 4, numKvHeads: kind === 'gqa' ? 2 : undefined,
    numLayers: 2, causal: true, positions: 'rope', seed: 5,
    attentionArgs: {...options, ...(kind === 'flash' ? {blockSize: 8} : {})},
  });
  perturbOptionWeights(model.layers.filter((l) => l instanceof AttentionLayerBase), 40);
  const table = randn([V, E], 77);
  model.getLayer('token_embedding').setWeights([table]);
  table.dispose();
  return model;
}

function tokens(seqs: number[][], from: number, to: number): tf.Tensor2D {
  return tf.tensor2d(seqs.map((s) => s.slice(from, to)), [seqs.length, to - from], 'int32');
}

const SEQS = [
  Array.from({length: 40}, (_, i) => (i * 7 + 3) % V),
  Array.from({length: 40}, (_, i) => (i * i + 5 * i + 1) % V),
];
// Prefill 6, 20 single tokens, then 3 steps of 3: 35 positions.
const STEPS = [6, ...Array(20).fill(1), 3, 3, 3];

describe(title('attention options: cached decoding == the full pass'), () => {
  for (const kind of ['gqa', 'flash'] as const) {
    for (const [name, options] of OPTION_SETS) {
      test(`${kind}, ${name}: prefill 6, 20 steps of 1, 3 of 3 == the full pass (1e-4), and the options matter`, () => {
        const model = optionModel(kind, options);
        const plain = optionModel(kind, {});
        const decoder = transformerDecoder(model);
        const whole = tf.tidy(() => decoder.logits(tokens(SEQS, 0, 35)));
        let cache: DecoderCache = decoder.createCache(2, 40);
        let pos = 0;
        let worst = 0;
        for (const t of STEPS) {
          const input = tokens(SEQS, pos, pos + t);
          const [y, next] = decoder.logits(input, cache);
          disposeDecoderCache(cache);
          cache = next;
          worst = Math.max(worst, tf.tidy(() => maxDiff(y, tf.slice(whole, [0, pos, 0], [2, t, V]))));
          tf.dispose([input, y]);
          pos += t;
        }
        expect(worst).toBeLessThan(1e-4);
        // The same weights without the option give other logits: the option took part.
        const plainLogits = tf.tidy(() => transformerDecoder(plain).logits(tokens(SEQS, 0, 35)));
        expect(maxDiff(plainLogits, whole)).toBeGreaterThan(1e-3);
        tf.dispose([whole, plainLogits]);
        disposeDecoderCache(cache);
        model.dispose();
        plain.dispose();
      });
    }
  }

  test('generate (greedy) with Gemma-2-like and gpt-oss-like models == an argmax loop over full passes', async () => {
    for (const options of [{softcap: 2, slidingWindow: 5}, {attentionSinks: true, slidingWindow: 5}]) {
      const model = optionModel('gqa', options);
      const prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 1]];
      const out = await generate(model, prompts, {maxNewTokens: 10, temperature: 0});
      const expected = prompts.map((p) => {
        const seq = [...p];
        for (let i = 0; i < 10; i++) {
          const next = tf.tidy(() => {
            const probs = model.predict(tf.tensor2d([seq], [1, seq.length], 'int32')) as tf.Tensor;
            return tf.argMax(tf.slice(probs, [0, seq.length - 1, 0], [1, 1, V]), -1).dataSync()[0];
          });
          seq.push(next);
        }
        return seq.slice(p.length);
      });
      expect(out).toEqual(expected);
      model.dispose();
    }
  });
});

/** A causal MultiHeadAttention with these options, built on [1, 1, E], its option weights perturbed. */
function layerWith(options: Record<string, unknown>, extra: Record<string, unknown> = {}): AttentionLayerBase {
  const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true, ...options, ...extra});
  tf.dispose(layer.apply(tf.zeros([1, 1, E])) as tf.Tensor);
  perturbOptionWeights([layer], 3);
  return layer;
}

function step(layer: AttentionLayerBase, x: tf.Tensor, cache: AttentionCache, cacheIndex?: number):
    [tf.Tensor, AttentionCache] {
  const [y, next] = layer.apply(x, {cache, ...(cacheIndex != null ? {cacheIndex} : {})}) as unknown as
    [tf.Tensor, AttentionCache];
  tf.dispose(Object.values(cache.tensors));
  return [y, next];
}

describe(title('attention options: the sliding-window cache'), () => {
  test('holds the last W positions: the same bytes after 8 and after 60 positions, 1/10 of a full cache', () => {
    const layer = layerWith({slidingWindow: 6, attentionSinks: true});
    const full = layerWith({attentionSinks: true});
    const x = randn([2, 60, E], 1);
    let cache = layer.createCache(2, 60);
    let fullCache = full.createCache(2, 60);
    const bytes: number[] = [];
    for (let pos = 0; pos < 60; pos++) {
      const xt = tf.slice(x, [0, pos, 0], [2, 1, E]);
      const [y, next] = step(layer, xt, cache);
      const [z, fullNext] = step(full, xt, fullCache);
      cache = next;
      fullCache = fullNext;
      bytes.push(cacheBytes(cache));
      tf.dispose([xt, y, z]);
    }
    expect(cache.tensors.key.shape).toEqual([2, 2, 6, 4]);
    expect(bytes[7]).toBe(bytes[59]);
    expect(cacheBytes(fullCache) / cacheBytes(cache)).toBe(10);
    tf.dispose([x, cache, fullCache]);
  });

  test('rewinds as far as its positions reach (== the full pass there); further back is INVALID_CACHE; 0 restarts', () => {
    const layer = layerWith({slidingWindow: 4, softcap: 3});
    const x = randn([1, 12, E], 2);
    const whole = layer.apply(x) as tf.Tensor;
    const [y0, c0] = layer.apply(tf.slice(x, [0, 0, 0], [1, 10, E]), {cache: layer.createCache(1, 12)}) as unknown as
      [tf.Tensor, AttentionCache];
    // Held: positions 6 .. 9. From 9 the window needs 6 .. 8: held.
    const [y1, c1] = layer.apply(tf.slice(x, [0, 9, 0], [1, 3, E]), {cache: c0, cacheIndex: 9}) as unknown as
      [tf.Tensor, AttentionCache];
    expect(maxDiff(y1, tf.slice(whole, [0, 9, 0], [1, 3, E]))).toBeLessThan(1e-5);
    expect(c1.length).toBe(12);
    expectError(() => layer.apply(tf.slice(x, [0, 8, 0], [1, 1, E]), {cache: c0, cacheIndex: 8}), 'INVALID_CACHE',
      /holds positions 6 \.\. 9.*needs position 5/);
    const [y2, c2] = layer.apply(tf.slice(x, [0, 0, 0], [1, 5, E]), {cache: c0, cacheIndex: 0}) as unknown as
      [tf.Tensor, AttentionCache];
    expect(maxDiff(y2, tf.slice(whole, [0, 0, 0], [1, 5, E]))).toBeLessThan(1e-5);
    expect(c2.length).toBe(5);
    tf.dispose([x, whole, y0, y1, y2, c0, c1, c2]);
  });
});

describe(title('attention options: the sliding window is the band it names'), () => {
  const T = 13;
  const W = 4;
  /** The band as an attention mask [1, T, T]: causal 0 <= i - j < W, else |i - j| < W. */
  const band = (causal: boolean) => tf.tensor3d([Array.from({length: T}, (_, i) => Array.from({length: T},
    (_2, j) => ((causal ? i - j >= 0 && i - j < W : Math.abs(i - j) < W) ? 1 : 0)))]);
  for (const causal of [true, false]) {
    for (const implementation of ['standard', 'flash'] as const) {
      test(`${causal ? 'causal' : 'not causal'}, ${implementation}: slidingWindow ${W} == the band as an ` +
           'attentionMask on a layer without it (1e-5)', () => {
        const windowed = new MultiHeadAttention({numHeads: 2, causal, slidingWindow: W, implementation});
        const plain = new MultiHeadAttention({numHeads: 2, causal});
        const x = randn([2, T, 8], 4);
        tf.dispose(windowed.apply(x) as tf.Tensor);
        tf.dispose(plain.apply(x) as tf.Tensor);
        plain.setWeights(windowed.getWeights());
        const mask = band(causal);
        const a = windowed.apply(x) as tf.Tensor;
        const b = plain.apply(x, {attentionMask: mask}) as tf.Tensor;
        const unmasked = plain.apply(x) as tf.Tensor;
        expect(maxDiff(a, b)).toBeLessThan(1e-5);
        expect(maxDiff(a, unmasked)).toBeGreaterThan(1e-3);
        tf.dispose([x, mask, a, b, unmasked]);
      });
    }
  }
});

describe(title('attention options: within withAttentionMods'), () => {
  test('a document mask joins the window, the cap and the sinks (flexAttention) == the same masks as an ' +
       'attentionMask on the dense path (1e-5)', () => {
    const T = 13;
    const docs = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2];
    const ids = tf.tensor1d(docs, 'int32');
    const layer = layerWith({slidingWindow: 4, softcap: 3, attentionSinks: true});
    const x = randn([2, T, E], 8);
    const packed = withAttentionMods({maskMod: documentMask(ids)}, () => layer.apply(x) as tf.Tensor);
    const mask = tf.tensor3d([Array.from({length: T}, (_, i) => Array.from({length: T},
      (_2, j) => (docs[i] === docs[j] ? 1 : 0)))]);
    const dense = layer.apply(x, {attentionMask: mask}) as tf.Tensor;
    const unpacked = layer.apply(x) as tf.Tensor;
    expect(maxDiff(packed, dense)).toBeLessThan(1e-5);
    expect(maxDiff(packed, unpacked)).toBeGreaterThan(1e-3);
    tf.dispose([ids, x, packed, mask, dense, unpacked]);
  });
});

describe(title('attention options: saving and loading'), () => {
  const all = {softcap: 3, slidingWindow: 5, attentionSinks: true, qkNorm: 'layer', qkNormEpsilon: 1e-5,
    outputGate: 'headwise', alibi: 'learned'} as const;

  test.each([['MultiHeadAttention', 'gqa'], ['FlashAttention', 'flash']] as const)(
    '%s with every option: the weights follow the projections in order, the model round-trips through save/load',
    async (_cls, kind) => {
      const model = optionModel(kind, all);
      const layer = model.getLayer('block0_attention') as AttentionLayerBase;
      const names = layer.weights.map((w) => w.originalName.replace(/^.*?\//, ''));
      expect(names.slice(8)).toEqual(['sinks', 'query_norm/gamma', 'key_norm/gamma', 'gate/kernel', 'gate/bias',
        'alibi/slopes']);
      expect(names.slice(0, 8)).toEqual(['query/kernel', 'query/bias', 'key/kernel', 'key/bias', 'value/kernel',
        'value/bias', 'attention_output/kernel', 'attention_output/bias']);
      const reloaded = await reloadedInMemory(model);
      const input = tokens(SEQS, 0, 40);
      const a = model.predict(input) as tf.Tensor;
      const b = reloaded.predict(input) as tf.Tensor;
      expect(maxDiff(a, b)).toBe(0);
      const config = reloaded.getLayer('block0_attention').getConfig();
      expect(config).toMatchObject({...all});
      // Block 1 is global only with globalEvery: here every block slides.
      expect(reloaded.getLayer('block1_attention').getConfig().slidingWindow).toBe(5);
      tf.dispose([input, a, b]);
      model.dispose();
      reloaded.dispose();
    });

  test('the weights in getWeights() order, with their shapes, for both gate modes', () => {
    const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, headDim: 3, valueDim: 5, attentionSinks: true,
      qkNorm: 'rms', outputGate: 'elementwise', alibi: 'learned'});
    expect(layer.weightShapes([2, 7, 8]).slice(8).map(({name, shape}) => [name, shape])).toEqual([
      ['sinks', [4]], ['query_norm/gamma', [3]], ['key_norm/gamma', [3]], ['gate/kernel', [8, 4, 5]],
      ['gate/bias', [4, 5]], ['alibi/slopes', [4]]]);
    tf.dispose(layer.apply(tf.zeros([2, 7, 8])) as tf.Tensor);
    expect(layer.weights.slice(8).map((w) => w.shape)).toEqual([[4], [3], [3], [8, 4, 5], [4, 5], [4]]);
    // Initial values: sinks 0, gammas 1, ALiBi's standard slopes for 4 heads (2^-2, 2^-4, 2^-6, 2^-8).
    const values = layer.getWeights().slice(8);
    expect(Array.from(values[0].dataSync())).toEqual([0, 0, 0, 0]);
    expect(Array.from(values[1].dataSync())).toEqual([1, 1, 1]);
    expect(Array.from(values[5].dataSync())).toEqual([0.25, 0.0625, 0.015625, 0.00390625]);
    const headwise = new MultiHeadAttention({numHeads: 4, outputGate: 'headwise', useBias: false});
    expect(headwise.weightShapes([2, 7, 8]).map(({name, shape}) => [name, shape]).slice(4)).toEqual([
      ['gate/kernel', [8, 4]]]);
    layer.dispose();
  });

  test('fromConfig(getConfig()) makes the same layer; a plain layer\'s config has no option keys', () => {
    const layer = new MultiHeadAttention({numHeads: 2, causal: true, ...all});
    const config = layer.getConfig();
    const again = MultiHeadAttention.fromConfig(MultiHeadAttention, config) as MultiHeadAttention;
    expect(again.getConfig()).toEqual(config);
    expect(again.attentionOptions).toEqual(layer.attentionOptions);
    const plainConfig = new MultiHeadAttention({numHeads: 2}).getConfig();
    for (const key of Object.keys(all)) expect(plainConfig).not.toHaveProperty(key);
  });
});

describe(title('attention options: buildTransformer and training'), () => {
  test('globalEvery 2: blocks 1 and 3 attend globally, 0 and 2 through the window; without a window it is refused', () => {
    const model = buildTransformer({attention: 'gqa', vocabSize: V, seqLength: 16, modelDim: E, numLayers: 4,
      causal: true, attentionArgs: {slidingWindow: 4, softcap: 10}, globalEvery: 2});
    const windows = [0, 1, 2, 3].map((l) => (model.getLayer(`block${l}_attention`) as AttentionLayerBase)
      .attentionOptions.slidingWindow);
    expect(windows).toEqual([4, null, 4, null]);
    model.dispose();
    expectError(() => buildTransformer({attention: 'gqa', vocabSize: V, seqLength: 16, globalEvery: 2}),
      'INVALID_CONFIG', /globalEvery \(2\).*slidingWindow/);
    expectError(() => buildTransformer({attention: 'gqa', vocabSize: V, seqLength: 16, globalEvery: 0,
      attentionArgs: {slidingWindow: 4}}), 'INVALID_CONFIG', /globalEvery/);
  });

  test('a training step moves every option weight; dropout with options draws on the dense path', () => {
    const model = optionModel('gqa', {softcap: 3, slidingWindow: 5, attentionSinks: true, qkNorm: 'rms',
      outputGate: 'headwise', alibi: 'learned'}, 16);
    const x = tokens(SEQS, 0, 16);
    const y = tf.oneHot(tokens(SEQS, 1, 17), V);
    const variables = model.trainableWeights.filter((w) => OPTION_NAMES.some((n) => w.originalName.endsWith(n)));
    expect(variables.length).toBe(2 * 6);
    const {grads} = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, model.apply(x) as tf.Tensor) as tf.Scalar,
      variables.map((w) => (w as unknown as {val: tf.Variable}).val));
    for (const g of Object.values(grads)) expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0);
    tf.dispose([x, y, grads]);
    model.dispose();

    for (const implementation of ['standard', 'auto'] as const) {
      const layer = new MultiHeadAttention({numHeads: 2, causal: true, dropout: 0.5, slidingWindow: 3,
        attentionSinks: true, implementation});
      const input = randn([1, 9, 8], 6);
      const a = layer.apply(input, {training: true}) as tf.Tensor;
      const b = layer.apply(input, {training: false}) as tf.Tensor;
      const c = layer.apply(input) as tf.Tensor;
      expect(maxDiff(a, b)).toBeGreaterThan(1e-4);
      expect(maxDiff(b, c)).toBe(0);
      tf.dispose([input, a, b, c]);
    }
  });
});

describe(title('attention options: coded errors'), () => {
  test.each([
    [{softcap: 0}, 'INVALID_CONFIG', /softcap/],
    [{softcap: -1}, 'INVALID_CONFIG', /softcap/],
    [{slidingWindow: 2.5}, 'INVALID_CONFIG', /slidingWindow/],
    [{slidingWindow: 0}, 'INVALID_CONFIG', /slidingWindow/],
    [{attentionSinks: 'yes'}, 'INVALID_CONFIG', /attentionSinks/],
    [{qkNorm: 'batch'}, 'INVALID_CONFIG', /qkNorm/],
    [{qkNormEpsilon: 1e-5}, 'INVALID_CONFIG', /qkNormEpsilon .* is for qkNorm/],
    [{qkNorm: 'rms', qkNormEpsilon: 0}, 'INVALID_CONFIG', /qkNormEpsilon/],
    [{outputGate: 'sigmoid'}, 'INVALID_CONFIG', /outputGate/],
    [{alibi: 'fixed'}, 'INVALID_CONFIG', /alibi must be true, false or 'learned'/],
  ] as [Record<string, unknown>, string, RegExp][])('%j: %s', (options, code, message) => {
    expectError(() => new MultiHeadAttention({numHeads: 2, ...options}), code, message);
    expectError(() => new FlashAttention({numHeads: 2, ...options}), code, message);
  });

  test('the kinds without the options refuse them by name', () => {
    for (const name of ['softcap', 'slidingWindow', 'attentionSinks', 'qkNorm', 'outputGate', 'alibi']) {
      let error: unknown = null;
      try {
        new LinearAttention({numHeads: 2, [name]: 1} as never);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(AttentionError);
      expect((error as Error).message).toContain(name);
    }
  });

  test('FlashAttention refuses dropout with the options as without them', () => {
    expectError(() => new FlashAttention({numHeads: 2, slidingWindow: 3, dropout: 0.1}), 'UNSUPPORTED', /dropout/);
  });
});
