// generate() and sampleToken: greedy decoding == an argmax loop over full passes (every
// cached kind, learned and rotary positions), a ragged batch == each prompt alone, seeded
// sampling reproducible, sampleToken's distribution (temperature, topK, topP) against
// softmax, stopToken and onToken, contextLength's sliding context, the errors, no leaks,
// and no synchronous reads.
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../../src/core/errors';
import {uniform} from '../../src/ops/random_features';
import {generate, GenerateOptions, sampleToken} from '../../src/train/generate';
import {buildTransformer, TransformerPositions} from '../../src/train/model';
import {randn, title} from '../support/helpers';

const V = 11;
const L = 16; // the learned position table

type Kind = 'mha' | 'gqa' | 'linear' | 'local-global';

/**
 * A causal model whose token embeddings are N(0, 1) rather than N(0, 0.02), so that its
 * greedy continuations depend on the prompt (and a wrong cache would show).
 */
function lively(kind: Kind, positions: TransformerPositions, seed = 3): tf.LayersModel {
  const model = buildTransformer({
    attention: kind, vocabSize: V, seqLength: L, modelDim: 16, numHeads: 4, numKvHeads: kind === 'gqa' ? 2 : undefined,
    numLayers: 2, causal: true, positions, seed,
    attentionArgs: kind === 'local-global' ? {windowSize: 4, globalIndices: [0, 9]} : {},
  });
  const embedding = model.getLayer('token_embedding');
  const table = randn([V, 16], seed + 100);
  embedding.setWeights([table]);
  table.dispose();
  return model;
}

/** The lowest id among the largest values. */
function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Greedy continuations by full passes of model.predict on the growing sequences (padded
 * with 0 after their end: the model is causal), with no cache anywhere.
 */
function argmaxLoop(model: tf.LayersModel, prompts: number[][], n: number, learned: boolean): number[][] {
  const seqs = prompts.map((p) => [...p]);
  for (let s = 0; s < n; s++) {
    const width = learned ? L : Math.max(...seqs.map((q) => q.length));
    const padded = seqs.map((q) => [...q, ...Array(width - q.length).fill(0)]);
    const probs = tf.tidy(() => (model.predict(tf.tensor2d(padded, [seqs.length, width], 'int32')) as tf.Tensor)
      .arraySync()) as number[][][];
    seqs.forEach((q, i) => q.push(argmax(probs[i][q.length - 1])));
  }
  return seqs.map((q, i) => q.slice(prompts[i].length));
}

async function expectRejects(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  let error: unknown;
  try { await promise; } catch (e) { error = e; }
  expect(error).toBeInstanceOf(AttentionError);
  expect((error as AttentionError).code).toBe(code);
  expect((error as Error).message).toMatch(message);
}

describe(title('generate: greedy == an argmax loop over full passes'), () => {
  const prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 1, 2, 3]];
  for (const kind of ['mha', 'gqa', 'linear', 'local-global'] as const) {
    for (const positions of ['learned', 'rope'] as const) {
      test(`${kind}, ${positions}: 8 greedy tokens for 3 prompts == model.predict argmax, step by step`, async () => {
        const model = lively(kind, positions);
        const out = await generate(model, prompts, {maxNewTokens: 8, temperature: 0});
        expect(out.map((o) => o.length)).toEqual([8, 8, 8]);
        expect(out).toEqual(argmaxLoop(model, prompts, 8, positions === 'learned'));
        // Continuations that depend on the prompt: a cache that lost it would not match.
        expect(new Set(out.map((o) => o.join(','))).size).toBeGreaterThan(1);
        model.dispose();
      });
    }
  }
});

describe(title('generate: batches and seeds'), () => {
  const ragged = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 1]];

  test.each([['mha', 'learned'], ['linear', 'rope'], ['local-global', 'rope']] as const)(
    '%s, %s: a ragged batch == each prompt alone (greedy, and sampling with seed + its index)', async (kind, positions) => {
      const model = lively(kind, positions);
      const greedy = await generate(model, ragged, {maxNewTokens: 6, temperature: 0});
      for (let i = 0; i < ragged.length; i++) {
        expect(await generate(model, [ragged[i]], {maxNewTokens: 6, temperature: 0})).toEqual([greedy[i]]);
      }
      const sampled = await generate(model, ragged, {maxNewTokens: 6, seed: 11, topK: 5});
      for (let i = 0; i < ragged.length; i++) {
        expect(await generate(model, [ragged[i]], {maxNewTokens: 6, seed: 11 + i, topK: 5})).toEqual([sampled[i]]);
      }
      model.dispose();
    });

  test('sampling: the same seed gives the same tokens twice, other seeds other tokens', async () => {
    const model = lively('gqa', 'rope');
    const options: GenerateOptions = {maxNewTokens: 10, temperature: 1.5, seed: 42};
    const a = await generate(model, ragged, options);
    const b = await generate(model, ragged, options);
    expect(b).toEqual(a);
    const others = await Promise.all([1, 2, 3].map((seed) => generate(model, ragged, {...options, seed})));
    for (const o of others) expect(o).not.toEqual(a);
    // Sampled is not greedy: at temperature 1.5 the draws leave the argmax path.
    expect(a).not.toEqual(await generate(model, ragged, {maxNewTokens: 10, temperature: 0}));
    model.dispose();
  });
});

describe(title('sampleToken'), () => {
  const logits = [0.5, -1, 2, 0, 1.2, -0.3];
  const softmax = (xs: number[], T: number) => {
    const m = Math.max(...xs);
    const e = xs.map((x) => Math.exp((x - m) / T));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / s);
  };
  /** Frequencies of N draws. */
  const frequencies = (options: {temperature: number; topK: number; topP: number}, l: number[], N: number,
    seed: number) => {
    const next = uniform(seed);
    const counts = new Array(l.length).fill(0);
    for (let i = 0; i < N; i++) counts[sampleToken(l, options, next)] += 1;
    return counts.map((c) => c / N);
  };
  /** |f - p| <= 5 standard errors of a frequency of N draws (plus float slack), for every id. */
  const within = (f: number[], p: number[], N: number) =>
    f.every((fi, i) => Math.abs(fi - p[i]) <= 5 * Math.sqrt(p[i] * (1 - p[i]) / N) + 1e-9);

  test('temperature 0 is the argmax, the lowest id on ties, whatever the uniform draws', () => {
    for (const u of [0, 0.5, 0.999]) {
      expect(sampleToken(logits, {temperature: 0, topK: 0, topP: 1}, () => u)).toBe(2);
      expect(sampleToken([1, 3, 3, 2], {temperature: 0, topK: 0, topP: 1}, () => u)).toBe(1);
      expect(sampleToken([-5, -5, -5], {temperature: 0, topK: 0, topP: 1}, () => u)).toBe(0);
    }
  });

  test('topK 1 and a tiny topP are the argmax at any temperature (ties: the lowest id)', () => {
    for (const u of [0, 0.3, 0.999]) {
      for (const temperature of [0.5, 1, 10]) {
        expect(sampleToken(logits, {temperature, topK: 1, topP: 1}, () => u)).toBe(2);
        expect(sampleToken(logits, {temperature, topK: 0, topP: 1e-6}, () => u)).toBe(2);
        expect(sampleToken([1, 3, 3, 2], {temperature, topK: 1, topP: 1}, () => u)).toBe(1);
      }
    }
  });

  test.each([1, 0.5, 2])('20000 seeded draws at temperature %d match softmax(logits / T) within 5 standard errors', (T) => {
    const N = 20000;
    const f = frequencies({temperature: T, topK: 0, topP: 1}, logits, N, 7);
    expect(within(f, softmax(logits, T), N)).toBe(true);
    // ... and not the distribution of another temperature (the bound tells them apart).
    expect(within(f, softmax(logits, T === 1 ? 2 : 1), N)).toBe(false);
  });

  test('topK 3 restricts the support to the 3 most likely ids, in softmax proportions', () => {
    const N = 20000;
    const f = frequencies({temperature: 1, topK: 3, topP: 1}, logits, N, 8);
    const top = [2, 4, 0]; // logits 2, 1.2, 0.5
    [1, 3, 5].forEach((i) => expect(f[i]).toBe(0));
    const p = softmax(top.map((i) => logits[i]), 1);
    expect(within(top.map((i) => f[i]), p, N)).toBe(true);
  });

  test('topP keeps the smallest set of most likely ids whose mass reaches p', () => {
    // Probabilities 0.5 (id 2), 0.3 (id 0), 0.15 (id 3), 0.05 (id 1).
    const l = [0.3, 0.05, 0.5, 0.15].map(Math.log);
    const N = 20000;
    const cases: [number, number[]][] = [[0.4, [2]], [0.75, [2, 0]], [0.9, [2, 0, 3]], [0.99, [2, 0, 3, 1]]];
    for (const [topP, kept] of cases) {
      const f = frequencies({temperature: 1, topK: 0, topP}, l, N, 9);
      [0, 1, 2, 3].filter((i) => !kept.includes(i)).forEach((i) => expect(f[i]).toBe(0));
      const mass = kept.reduce((s, i) => s + Math.exp(l[i]), 0);
      expect(within(kept.map((i) => f[i]), kept.map((i) => Math.exp(l[i]) / mass), N)).toBe(true);
    }
    // topK first, then topP within the top k: k = 2 leaves 0.625 and 0.375 of its mass; p = 0.6 keeps id 2 alone,
    // p = 0.7 both.
    expect(frequencies({temperature: 1, topK: 2, topP: 0.6}, l, 1000, 10)[2]).toBe(1);
    const f = frequencies({temperature: 1, topK: 2, topP: 0.7}, l, N, 10);
    expect(f[1] + f[3]).toBe(0);
    expect(within([f[2], f[0]], [0.625, 0.375], N)).toBe(true);
  });
});

describe(title('generate: stopToken and onToken'), () => {
  test('a stopToken ends its prompt (kept in the output) while the others go on; onToken sees each token once, in order', async () => {
    const model = lively('mha', 'rope');
    const prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]; // one batch: the stopped rows ride along
    const full = await generate(model, prompts, {maxNewTokens: 10, temperature: 0});
    // A token that stops some prompt early while another goes on past that step.
    const firstAt = (o: number[], s: number) => (o.includes(s) ? o.indexOf(s) : Infinity);
    const stop = Array.from({length: V}, (_, s) => s).find((s) => {
      const at = full.map((o) => firstAt(o, s));
      return Math.min(...at) < 9 && Math.max(...at) > Math.min(...at);
    });
    expect(stop).toBeDefined();
    const calls: [number, number, number][] = [];
    const out = await generate(model, prompts, {maxNewTokens: 10, temperature: 0, stopToken: stop!,
      onToken: (token, prompt, step) => calls.push([token, prompt, step])});
    const expected = full.map((o) => o.slice(0, Math.min(o.length, firstAt(o, stop!) + 1)));
    expect(out).toEqual(expected);
    expect(out.some((o) => o.length < 10 && o[o.length - 1] === stop)).toBe(true);
    expect(Math.max(...out.map((o) => o.length))).toBeGreaterThan(Math.min(...out.map((o) => o.length)));
    expect(calls).toHaveLength(out.reduce((n, o) => n + o.length, 0));
    out.forEach((o, i) => expect(calls.filter((c) => c[1] === i)).toEqual(o.map((t, s) => [t, i, s])));
    // Within a batch, step by step: every token of step s comes before any of step s + 1.
    const steps = calls.map((c) => c[2]);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    model.dispose();
  });
});

describe(title('generate: contextLength (a sliding context)'), () => {
  /**
   * The reference: what each prompt has in view is its last W tokens; each new token joins
   * it, and a view grown past W keeps its last floor(W / 2) tokens (decoding starts again
   * there, at position 0). Full passes of model.predict on the views, padded with 0 after.
   */
  function slidingLoop(model: tf.LayersModel, prompts: number[][], n: number, W: number, learned: boolean): number[][] {
    const views = prompts.map((p) => p.slice(-W));
    const out: number[][] = prompts.map(() => []);
    for (let s = 0; s < n; s++) {
      const width = learned ? L : Math.max(...views.map((v) => v.length));
      const padded = views.map((v) => [...v, ...Array(width - v.length).fill(0)]);
      const probs = tf.tidy(() => (model.predict(tf.tensor2d(padded, [views.length, width], 'int32')) as tf.Tensor)
        .arraySync()) as number[][][];
      views.forEach((v, i) => {
        const token = argmax(probs[i][v.length - 1]);
        out[i].push(token);
        v.push(token);
        if (v.length > W) v.splice(0, v.length - Math.floor(W / 2));
      });
    }
    return out;
  }

  test.each([['gqa', 'learned'], ['local-global', 'rope']] as const)(
    '%s, %s: greedy with contextLength 6 == full passes over the cropped views (12 new tokens, a prompt of 8 cut to 6)',
    async (kind, positions) => {
      const model = lively(kind, positions);
      const prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 1, 2, 3, 4]];
      const out = await generate(model, prompts, {maxNewTokens: 12, temperature: 0, contextLength: 6});
      expect(out).toEqual(slidingLoop(model, prompts, 12, 6, positions === 'learned'));
      // The crops matter: the same prompts (cut to 6) with every token kept in view continue otherwise.
      const uncropped = argmaxLoop(model, prompts.map((p) => p.slice(-6)), 10, positions === 'learned');
      expect(out.map((o) => o.slice(0, 10))).not.toEqual(uncropped);
      model.dispose();
    });

  test('learned positions: a context past the table is CACHE_FULL (naming contextLength), one within it is not', async () => {
    const model = lively('mha', 'learned');
    const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
    await expectRejects(generate(model, [prompt], {maxNewTokens: 12, temperature: 0}), 'CACHE_FULL',
      /need 19 positions; model '.*' has learned positions for 16: use fewer new tokens, contextLength 16/);
    await expectRejects(generate(model, [prompt], {maxNewTokens: 12, temperature: 0, contextLength: 17}), 'CACHE_FULL',
      /need 17 positions/);
    const before = tf.memory().numTensors;
    const [out] = await generate(model, [prompt], {maxNewTokens: 12, temperature: 0, contextLength: 16});
    expect(out).toHaveLength(12);
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});

describe(title('generate: errors, leaks, no synchronous reads'), () => {
  let model: tf.LayersModel;
  beforeAll(() => { model = lively('gqa', 'learned'); });
  afterAll(() => model.dispose());

  test('a non-causal model is UNSUPPORTED; a model not from buildTransformer is INVALID_CONFIG', async () => {
    const open = buildTransformer({attention: 'mha', vocabSize: V, seqLength: 8, modelDim: 16, numHeads: 4, numLayers: 1});
    await expectRejects(generate(open, [[1]]), 'UNSUPPORTED', /is not causal .* cannot be decoded one position at a time/);
    open.dispose();
    const other = tf.sequential({layers: [tf.layers.dense({units: 2, inputShape: [3]})]});
    await expectRejects(generate(other, [[1]]), 'INVALID_CONFIG',
      /decoding needs a causal model from buildTransformer; model '.*' has no layer 'token_embedding'/);
    other.dispose();
    await expectRejects(generate({} as never, [[1]]), 'INVALID_CONFIG',
      /decoding takes a tf.LayersModel from buildTransformer/);
  });

  test.each([
    ['no prompts', [], /prompts must be a non-empty array of token id arrays, received/],
    ['an empty prompt', [[1], []], /prompt 1 must be a non-empty array of token ids in \[0, 10\], received/],
    ['an id past the vocabulary', [[1, 11]], /prompt 0 must be a non-empty array of token ids in \[0, 10\]/],
    ['a negative id', [[3], [-1]], /prompt 1 must be a non-empty array of token ids in \[0, 10\]/],
    ['a fractional id', [[1.5]], /prompt 0 must be a non-empty array of token ids/],
  ])('%s is INVALID_CONFIG', async (_, prompts, message) => {
    await expectRejects(generate(model, prompts as number[][]), 'INVALID_CONFIG', message);
  });

  test.each([
    [{maxNewToken: 3}, /unknown argument 'maxNewToken' for generate; did you mean 'maxNewTokens'\?/],
    [{temprature: 0}, /unknown argument 'temprature' for generate; did you mean 'temperature'\?/],
    [{topk: 2}, /unknown argument 'topk' for generate; did you mean 'topK'\?/],
    [{maxNewTokens: 0}, /maxNewTokens must be a positive integer, received 0/],
    [{temperature: -1}, /temperature must be a number >= 0 \(0: greedy\), received -1/],
    [{topK: 1.5}, /topK must be a non-negative integer, received 1\.5/],
    [{topP: 0}, /topP must be a number in \(0, 1\], received 0/],
    [{topP: 1.5}, /topP must be a number in \(0, 1\], received 1\.5/],
    [{seed: -3}, /seed must be a non-negative integer, received -3/],
    [{stopToken: 11}, /stopToken must be a token id in \[0, 10\], received 11/],
    [{onToken: 5}, /onToken must be a function, received 5/],
    [{contextLength: 1}, /contextLength must be at least 2, received 1/],
    [{contextLength: 0}, /contextLength must be a positive integer, received 0/],
    [{contextLen: 8}, /unknown argument 'contextLen' for generate; did you mean 'contextLength'\?/],
  ])('options %j are INVALID_CONFIG', async (options, message) => {
    await expectRejects(generate(model, [[1, 2]], options as GenerateOptions), 'INVALID_CONFIG', message);
  });

  test('learned positions too short for the prompt and the new tokens: CACHE_FULL (a prompt of 10 fits 7 new tokens, not 8)', async () => {
    const prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    await expectRejects(generate(model, [[1], prompt], {maxNewTokens: 8, temperature: 0}), 'CACHE_FULL',
      /a prompt of 10 tokens and 8 new ones need 17 positions; model '.*' has learned positions for 16/);
    const [out] = await generate(model, [prompt], {maxNewTokens: 7, temperature: 0});
    expect(out).toHaveLength(7);
  });

  test('a generate call (ragged, sampled, stopToken) leaves no tensor behind, nor does a failed one', async () => {
    const before = tf.memory().numTensors;
    await generate(model, [[1, 2, 3], [4, 5], [6, 7, 8]], {maxNewTokens: 6, seed: 3, topK: 4, stopToken: 2});
    await generate(model, [[1, 2, 3]], {maxNewTokens: 6, temperature: 0});
    await expectRejects(generate(model, [[1, 2, 3]], {maxNewTokens: 16}), 'CACHE_FULL', /positions/);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('generate never reads a tensor synchronously (dataSync, arraySync)', async () => {
    const dataSync = jest.spyOn(tf.Tensor.prototype, 'dataSync');
    const arraySync = jest.spyOn(tf.Tensor.prototype, 'arraySync');
    try {
      const out = await generate(model, [[1, 2, 3], [4, 5]], {maxNewTokens: 5, seed: 1, topK: 3, topP: 0.9});
      expect(out.map((o) => o.length)).toEqual([5, 5]);
      expect(dataSync).not.toHaveBeenCalled();
      expect(arraySync).not.toHaveBeenCalled();
    } finally {
      dataSync.mockRestore();
      arraySync.mockRestore();
    }
    // The spies do see a synchronous read when one happens.
    const spy = jest.spyOn(tf.Tensor.prototype, 'dataSync');
    const t = tf.scalar(1);
    t.dataSync();
    expect(spy).toHaveBeenCalled();
    spy.mockRestore();
    t.dispose();
  });
});
