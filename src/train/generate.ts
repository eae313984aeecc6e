/**
 * Decoding a causal model from buildTransformer: `transformerDecoder(model)` runs the
 * model's own layers, eagerly, on new positions with every attention layer's cache, and
 * `generate(model, prompts, options)` samples continuations with it. Each prompt is
 * prefilled in one call, then one position per step goes through every layer's cache, so
 * a step costs what one position costs (linear and local-global: the same at any length).
 * Browser-safe: it never reads a tensor synchronously.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {AttentionLayerBase} from '../layers/base_attention';
import {AttentionCache} from '../layers/decoding';
import {matMul} from '../ops/matmul';
import {uniform} from '../ops/random_features';
import {assertNonNegativeInt, assertPositiveInt, checkArgNames} from '../core/validate';
import {PositionEmbedding} from '../layers/position_embedding';

type Layer = tf.layers.Layer;

interface Block {
  norm1: Layer;
  attention: AttentionLayerBase;
  norm2: Layer;
  ff1: Layer;
  ff2: Layer;
}

/** The caches of a decoding: one per attention layer, and the positions they hold. */
export interface DecoderCache {
  readonly layers: readonly AttentionCache[];
  readonly batchSize: number;
  readonly maxLength: number;
  /** Positions held: where the next tokens go. */
  readonly length: number;
}

export interface TransformerDecoder {
  readonly vocabSize: number;
  /** The longest sequence the model can position (its position table), or null with rotary positions. */
  readonly maxPositions: number | null;
  /** Empty caches for `batchSize` sequences of up to `maxLength` positions. */
  createCache(batchSize: number, maxLength: number): DecoderCache;
  /**
   * Logits [B, t, vocabSize] (before the softmax) of tokens [B, t] (int32). Without a
   * cache, a full pass over positions 0 .. t - 1 (what model.predict computes, before its
   * softmax); with one, the positions cache.length .. cache.length + t - 1, and the new cache.
   */
  logits(tokens: tf.Tensor2D): tf.Tensor3D;
  logits(tokens: tf.Tensor2D, cache: DecoderCache): [tf.Tensor3D, DecoderCache];
}

function layerNamed(model: tf.LayersModel, name: string): Layer {
  const layer = model.layers.find((l) => l.name === name);
  if (layer == null) {
    throw new AttentionError('INVALID_CONFIG',
      `decoding needs a causal model from buildTransformer; model '${model.name}' has no layer '${name}'`);
  }
  return layer;
}

/**
 * A decoder over `model`'s own layers and weights (nothing is copied: a model trained
 * further decodes with its new weights). Throws INVALID_CONFIG for a model that
 * buildTransformer did not make, UNSUPPORTED for one that is not causal.
 */
export function transformerDecoder(model: tf.LayersModel): TransformerDecoder {
  if (!(model instanceof tf.LayersModel)) {
    throw new AttentionError('INVALID_CONFIG', `decoding takes a tf.LayersModel from buildTransformer, received ${show(model)}`);
  }
  const embedding = layerNamed(model, 'token_embedding');
  const positions = model.layers.find((l) => l.name === 'position_embedding') as PositionEmbedding | undefined ?? null;
  const blocks: Block[] = [];
  for (let l = 0; model.layers.some((x) => x.name === `block${l}_attention`); l++) {
    const attention = layerNamed(model, `block${l}_attention`);
    if (!(attention instanceof AttentionLayerBase)) {
      throw new AttentionError('INVALID_CONFIG', `layer 'block${l}_attention' of model '${model.name}' is not an attention layer`);
    }
    if (attention.causal === false) {
      throw new AttentionError('UNSUPPORTED',
        `model '${model.name}' is not causal (its attention layers see later positions), so it cannot be decoded ` +
        'one position at a time; build and train it with causal: true');
    }
    blocks.push({
      norm1: layerNamed(model, `block${l}_norm1`), attention, norm2: layerNamed(model, `block${l}_norm2`),
      ff1: layerNamed(model, `block${l}_ff1`), ff2: layerNamed(model, `block${l}_ff2`),
    });
  }
  if (blocks.length === 0) layerNamed(model, 'block0_attention'); // throws, naming it
  const finalNorm = layerNamed(model, 'final_norm');
  const head = layerNamed(model, 'head');
  const [kernel, bias] = head.trainableWeights;
  const vocabSize = kernel.shape[1] as number;

  /** The hidden states [B, t, E] -> logits [B, t, V]. */
  const project = (h: tf.Tensor): tf.Tensor3D => {
    const [B, t, E] = h.shape as number[];
    const y = tf.add(matMul(tf.reshape(h, [B * t, E]), kernel.read()), bias.read()); // [B*t, V]
    return tf.reshape(y, [B, t, vocabSize]) as tf.Tensor3D;
  };

  function run(tokens: tf.Tensor2D, cache: DecoderCache | null): {logits: tf.Tensor3D; caches: AttentionCache[]} {
    const start = cache?.length ?? 0;
    const caches: AttentionCache[] = [];
    const logits = tf.tidy(() => {
      let x = embedding.apply(tokens) as tf.Tensor;
      if (positions != null) x = positions.addAt(x, start);
      blocks.forEach((b, i) => {
        const n1 = b.norm1.apply(x) as tf.Tensor;
        let a: tf.Tensor;
        if (cache == null) {
          a = b.attention.apply(n1) as tf.Tensor;
        } else {
          const [y, c] = b.attention.apply(n1, {cache: cache.layers[i], cacheIndex: start}) as unknown as
            [tf.Tensor, AttentionCache];
          caches.push(c);
          Object.values(c.tensors).forEach((t) => tf.keep(t)); // the new cache outlives this tidy
          a = y;
        }
        x = tf.add(x, a);
        const f = b.ff2.apply(b.ff1.apply(b.norm2.apply(x) as tf.Tensor) as tf.Tensor) as tf.Tensor;
        x = tf.add(x, f);
      });
      return project(finalNorm.apply(x) as tf.Tensor);
    });
    return {logits, caches};
  }

  function checkTokens(tokens: tf.Tensor2D): void {
    if (!(tokens instanceof tf.Tensor) || tokens.rank !== 2 || tokens.dtype !== 'int32') {
      throw new AttentionError('DIMENSION_MISMATCH',
        `tokens must be an int32 [batch, length] tensor, received ${show(tokens)}`);
    }
  }

  function logits(tokens: tf.Tensor2D): tf.Tensor3D;
  function logits(tokens: tf.Tensor2D, cache: DecoderCache): [tf.Tensor3D, DecoderCache];
  function logits(tokens: tf.Tensor2D, cache?: DecoderCache): tf.Tensor3D | [tf.Tensor3D, DecoderCache] {
    checkTokens(tokens);
    if (cache == null) return run(tokens, null).logits;
    if (cache.layers == null || cache.layers.length !== blocks.length) {
      throw new AttentionError('INVALID_CACHE', 'the cache is not one of this decoder\'s (createCache makes one)');
    }
    // Before the position table is read: past the cache's end is CACHE_FULL, whatever the positions.
    const t = tokens.shape[1] as number;
    if (cache.length + t > cache.maxLength) {
      throw new AttentionError('CACHE_FULL',
        `positions ${cache.length} .. ${cache.length + t - 1} do not fit a cache of maxLength ${cache.maxLength}; ` +
        'make a longer one with createCache(batchSize, maxLength)');
    }
    const {logits: y, caches} = run(tokens, cache);
    return [y, {layers: caches, batchSize: cache.batchSize, maxLength: cache.maxLength,
      length: cache.length + (tokens.shape[1] as number)}];
  }

  return {
    vocabSize,
    maxPositions: positions?.maxLength ?? null,
    createCache(batchSize: number, maxLength: number): DecoderCache {
      if (positions != null && maxLength > positions.maxLength) {
        throw new AttentionError('CACHE_FULL',
          `model '${model.name}' has learned positions for ${positions.maxLength} tokens, so it cannot decode ` +
          `${maxLength}; use a shorter prompt or fewer new tokens, or train a model with positions 'rope'`);
      }
      const layers: AttentionCache[] = [];
      try {
        for (const b of blocks) layers.push(b.attention.createCache(batchSize, maxLength));
      } catch (e) {
        tf.dispose(layers.map((c) => c.tensors as unknown as tf.Tensor[]));
        throw e;
      }
      return {layers, batchSize, maxLength, length: 0};
    },
    logits,
  };
}

/** Disposes every tensor of a decoder cache. */
export function disposeDecoderCache(cache: DecoderCache): void {
  for (const c of cache.layers) tf.dispose(Object.values(c.tensors));
}

export interface GenerateOptions {
  /** Tokens to add to each prompt, at most. Default 32. */
  maxNewTokens?: number;
  /** Softmax temperature; 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens only; 0 = all. Default 0. */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities add up to p (nucleus); 1 = all. Default 1. */
  topP?: number;
  /** Seed of the sampling: the same seed gives the same tokens on every backend. Default: drawn at random. */
  seed?: number;
  /** A prompt's generation ends after this token (which is kept in its output). */
  stopToken?: number | null;
  /** Called with each new token as it is chosen: its prompt's index and its step (0 = the first new token). */
  onToken?: (token: number, prompt: number, step: number) => void;
  /**
   * The most positions the model sees at once (at least 2). When a sequence would grow past
   * it, decoding starts again from its last contextLength / 2 tokens (a fresh prefill), as
   * nanoGPT crops its context to the block it was trained on; a longer prompt is cut to its
   * last contextLength tokens. Default none: every token stays in view (and a model with
   * learned positions must then hold prompt + maxNewTokens - 1 of them, or CACHE_FULL).
   */
  contextLength?: number | null;
}

export const GENERATE_OPTIONS = [
  'maxNewTokens', 'temperature', 'topK', 'topP', 'seed', 'stopToken', 'onToken', 'contextLength',
] as const;

/**
 * One token from logits by the options' rule: argmax when temperature is 0 (the lowest id
 * among ties), else a draw from softmax(logits / temperature) limited to the top k and to
 * the nucleus of mass topP, with `next()` a uniform number in [0, 1).
 */
export function sampleToken(logits: ArrayLike<number>, options: {temperature: number; topK: number; topP: number},
                            next: () => number): number {
  const V = logits.length;
  if (options.temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const order = Array.from({length: V}, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const k = options.topK > 0 ? Math.min(options.topK, V) : V;
  const top = order.slice(0, k);
  const max = logits[top[0]];
  let p = top.map((i) => Math.exp((logits[i] - max) / options.temperature));
  let total = p.reduce((a, b) => a + b, 0);
  if (options.topP < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < p.length && mass < options.topP * total) mass += p[keep++];
    p = p.slice(0, Math.max(keep, 1));
    total = p.reduce((a, b) => a + b, 0);
  }
  let u = next() * total;
  for (let i = 0; i < p.length; i++) {
    u -= p[i];
    if (u < 0) return top[i];
  }
  return top[p.length - 1];
}

function checkGenerateOptions(options: GenerateOptions):
    Required<Omit<GenerateOptions, 'onToken' | 'stopToken' | 'contextLength'>> &
    Pick<GenerateOptions, 'onToken' | 'stopToken' | 'contextLength'> {
  if (options == null || typeof options !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `generate options must be an object, received ${show(options)}`);
  }
  checkArgNames('generate', options, GENERATE_OPTIONS);
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as GenerateOptions;
  const o = {maxNewTokens: 32, temperature: 1, topK: 0, topP: 1, seed: Math.floor(Math.random() * 2 ** 31), ...given};
  assertPositiveInt('maxNewTokens', o.maxNewTokens);
  if (typeof o.temperature !== 'number' || !Number.isFinite(o.temperature) || o.temperature < 0) {
    throw new AttentionError('INVALID_CONFIG', `temperature must be a number >= 0 (0: greedy), received ${show(o.temperature)}`);
  }
  assertNonNegativeInt('topK', o.topK);
  if (typeof o.topP !== 'number' || !(o.topP > 0 && o.topP <= 1)) {
    throw new AttentionError('INVALID_CONFIG', `topP must be a number in (0, 1], received ${show(o.topP)}`);
  }
  assertNonNegativeInt('seed', o.seed);
  if (o.contextLength != null) assertPositiveInt('contextLength', o.contextLength);
  if (o.contextLength === 1) throw new AttentionError('INVALID_CONFIG', 'contextLength must be at least 2, received 1');
  if (o.onToken != null && typeof o.onToken !== 'function') {
    throw new AttentionError('INVALID_CONFIG', `onToken must be a function, received ${show(o.onToken)}`);
  }
  return o;
}

/**
 * Continues each prompt (token ids; a ragged batch is fine) of a causal model from
 * buildTransformer, returning the new tokens of each. Prompts of one length decode
 * together as one batch; prompts of other lengths in batches of their own, so no row ever
 * sees padding and each prompt gets what it would alone (with greedy decoding, or with the
 * same seed: row i of the batch samples from the stream seed + i).
 */
export async function generate(model: tf.LayersModel, prompts: number[][],
    options: GenerateOptions = {}): Promise<number[][]> {
  const o = checkGenerateOptions(options);
  const decoder = transformerDecoder(model);
  const V = decoder.vocabSize;
  if (!Array.isArray(prompts) || prompts.length === 0) {
    throw new AttentionError('INVALID_CONFIG', `prompts must be a non-empty array of token id arrays, received ${show(prompts)}`);
  }
  prompts.forEach((p, i) => {
    if (!Array.isArray(p) || p.length === 0 || p.some((t) => !Number.isInteger(t) || t < 0 || t >= V)) {
      throw new AttentionError('INVALID_CONFIG',
        `prompt ${i} must be a non-empty array of token ids in [0, ${V - 1}], received ${show(p)}`);
    }
  });
  if (o.stopToken != null && (!Number.isInteger(o.stopToken) || o.stopToken < 0 || o.stopToken >= V)) {
    throw new AttentionError('INVALID_CONFIG', `stopToken must be a token id in [0, ${V - 1}], received ${show(o.stopToken)}`);
  }
  const window = o.contextLength ?? Infinity;
  const seen = prompts.map((p) => p.slice(-window)); // what each row has in view: its (cut) prompt, then new tokens
  const longest = Math.max(...seen.map((p) => p.length));
  const positions = Math.min(longest + o.maxNewTokens - 1, window); // the most a cache must hold
  if (decoder.maxPositions != null && positions > decoder.maxPositions) {
    throw new AttentionError('CACHE_FULL',
      `a prompt of ${longest} tokens and ${o.maxNewTokens} new ones need ${positions} positions; ` +
      `model '${model.name}' has learned positions for ${decoder.maxPositions}: use fewer new tokens, ` +
      `contextLength ${decoder.maxPositions} (a sliding context), or a model with positions 'rope'`);
  }
  const out: number[][] = prompts.map(() => []);
  const groups = new Map<number, number[]>(); // prompt length in view -> prompt indices
  seen.forEach((p, i) => groups.set(p.length, [...(groups.get(p.length) ?? []), i]));
  for (const [P, rows] of groups) {
    const B = rows.length;
    const streams = rows.map((i) => uniform(((o.seed + i) * 0x9e3779b1) >>> 0));
    const capacity = Math.min(P + o.maxNewTokens - 1, window);
    let cache = decoder.createCache(B, capacity);
    const done = rows.map(() => false);
    let tokens: tf.Tensor2D | null = tf.tensor2d(rows.map((i) => seen[i]), [B, P], 'int32');
    try {
      for (let step = 0; step < o.maxNewTokens; step++) {
        const [logits, next] = decoder.logits(tokens, cache);
        tokens.dispose();
        tokens = null;
        disposeDecoderCache(cache);
        cache = next;
        const t = logits.shape[1];
        const last = tf.tidy(() => tf.reshape(tf.slice(logits, [0, t - 1, 0], [B, 1, V]), [B, V]));
        logits.dispose();
        const values = await last.data();
        last.dispose();
        const chosen = rows.map((i, r) => {
          if (done[r]) return o.stopToken ?? 0;
          const token = sampleToken(values.subarray(r * V, (r + 1) * V), o, streams[r]);
          out[i].push(token);
          o.onToken?.(token, i, step);
          if (o.stopToken != null && token === o.stopToken) done[r] = true;
          return token;
        });
        if (done.every((d) => d) || step === o.maxNewTokens - 1) break;
        rows.forEach((i, r) => seen[i].push(chosen[r]));
        if (cache.length + 1 <= capacity) {
          tokens = tf.tensor2d(chosen, [B, 1], 'int32');
        } else {
          // The context is full: start again from the last half of what is in view.
          const keep = Math.floor(window / 2);
          rows.forEach((i) => seen[i].splice(0, seen[i].length - keep));
          disposeDecoderCache(cache);
          cache = decoder.createCache(B, capacity);
          tokens = tf.tensor2d(rows.map((i) => seen[i]), [B, keep], 'int32');
        }
      }
    } finally {
      tokens?.dispose();
      disposeDecoderCache(cache);
    }
  }
  return out;
}
