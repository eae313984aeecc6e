/**
 * Cached (incremental) decoding: the AttentionCache a causal layer decodes from, the
 * checks a cached call passes, and CacheStrategy, how a kind keeps its cache and attends
 * over it. Each kind's layer supplies its strategy; keyValueCache, the exact key/value
 * cache, is the default.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt} from '../core/validate';
import {appendRows, DECODE_BROADCAST_MAX_ROWS, decodeAttention} from '../ops/kv_cache';
import {scaledDotProductAttention} from '../ops/sdpa';
import {AttentionCapabilities, enforceCapabilities} from './capabilities';
import {Kwargs} from './tfjs_types';

/**
 * A cached step of exact attention with fewer query-key pairs than this per batch and head
 * (t * (index + t)) forms its scores directly (see keyValueCache); the same bound as
 * MultiHeadAttention's 'auto' (T = S = 1024).
 */
export const DECODE_DENSE_SCORES = 1024 * 1024;

/**
 * The state a causal layer decodes from: plain tensors the caller owns. A cached call
 * leaves the cache it was given as it was and returns a new one (fresh tensors); dispose
 * each with tf.dispose(cache) when done with it.
 */
// A type, not an interface, so that tf.dispose(cache) and tf.tidy(() => cache) take it.
export type AttentionCache = {
  /** The name of the layer that made it (a cache works only with its own layer). */
  readonly layer: string;
  readonly batchSize: number;
  /** The most positions it can hold. */
  readonly maxLength: number;
  /** Positions it holds: the next call's default cacheIndex. */
  readonly length: number;
  readonly tensors: Readonly<Record<string, tf.Tensor>>;
};

/** Bytes of a cache's tensors (float32). */
export function cacheBytes(cache: AttentionCache): number {
  return Object.values(cache.tensors).reduce((n, t) => n + 4 * t.size, 0);
}

/** Fresh tensors with the same values (a returned cache never shares a tensor with the one given). */
export function cloneTensors(tensors: Readonly<Record<string, tf.Tensor>>): Record<string, tf.Tensor> {
  return Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, tf.clone(t)]));
}

/** One cached step: the attention of the new positions [B, H, t, Dv] and the cache's new tensors. */
export interface CachedStep {
  output: tf.Tensor4D;
  tensors: Record<string, tf.Tensor>;
}

/**
 * How a kind of attention keeps its cache and attends over it. The base layer checks the
 * cache and the call, projects the new positions and keeps the cache's bookkeeping; the
 * strategy only says what the cache holds and how a step reads and extends it.
 */
export interface CacheStrategy {
  /** The tensors of an empty cache for `batchSize` sequences of up to `maxLength` positions. */
  emptyTensors(batchSize: number, maxLength: number): Record<string, tf.Tensor>;
  /**
   * Attention of the new positions index .. index + t - 1 (q [B, H, t, D], k [B, G, t, D],
   * v [B, G, t, Dv], q and k already rotated) over `cache`, which holds the positions
   * before `index`.
   */
  step(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, cache: AttentionCache, index: number): CachedStep;
}

/** What the exact key/value cache reads from its layer. */
export interface KeyValueLayer {
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** The head sizes D and Dv of the built layer. */
  headDims(): {D: number; Dv: number};
  /** True when the layer's attention is not plain exact attention (its mods): every step then takes attendCausal. */
  ownAttention?: () => boolean;
  /** The layer's own attention, causal aligned bottom-right, unmasked and not training. */
  attendCausal(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D): tf.Tensor4D;
  /**
   * A sliding window W (each query sees the W positions ending at its own): the cache then holds
   * only the last W positions. Null or absent: every position.
   */
  window?: number | null;
  /**
   * True when, within its window, the layer's attention is plain exact attention (the window is its
   * only option that changes the scores): a one-token step then sees all its cached keys and
   * takes the plain step's fast path.
   */
  plainInWindow?: () => boolean;
}

/**
 * The exact attention cache: keys [B, G, index, D] and values [B, G, index, Dv], grown by
 * each step to the positions held (at most maxLength), so a grouped-query cache is H / G
 * times smaller than a multi-head one. A step's new keys and values follow the first
 * `index` cached rows (a smaller index rewinds), and its queries attend to every key up to
 * their own position, computed by the size of the step, whatever the layer's own
 * implementation (it is the same exact attention): with at most DECODE_BROADCAST_MAX_ROWS
 * query rows per key/value head by decodeAttention (broadcast products, as matrix-vector
 * products are slow on wasm); a [t, index + t] score matrix smaller than DECODE_DENSE_SCORES
 * by scaledDotProductAttention (flash tiles would only add loop overhead there); a longer
 * prefill by the layer's own attention.
 */
export function keyValueCache(layer: KeyValueLayer): CacheStrategy {
  return {
    emptyTensors(B: number): Record<string, tf.Tensor> {
      const {D, Dv} = layer.headDims();
      return {key: tf.zeros([B, layer.numKvHeads, 0, D]), value: tf.zeros([B, layer.numKvHeads, 0, Dv])};
    },
    step(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, cache: AttentionCache, index: number): CachedStep {
      if (layer.window != null) return windowStep(layer, layer.window, q, k, v, cache, index);
      const key = appendRows(cache.tensors.key, k, index);       // [B, G, index + t, D]
      const value = appendRows(cache.tensors.value, v, index);   // [B, G, index + t, Dv]
      const output = layer.ownAttention?.() === true ? layer.attendCausal(q, key, value)
        : exactStep(layer, q, key, value);
      return {output, tensors: {key, value}};
    },
  };
}

/** Exact causal attention of a step's queries over every key up to their own position, by the step's size. */
function exactStep(layer: KeyValueLayer, q: tf.Tensor4D, key: tf.Tensor4D, value: tf.Tensor4D): tf.Tensor4D {
  const S = key.shape[2];
  const t = q.shape[2];
  const rows = (layer.numHeads / layer.numKvHeads) * t; // query rows per key/value head
  return rows <= DECODE_BROADCAST_MAX_ROWS ? decodeAttention(q, key, value)
    : t * S < DECODE_DENSE_SCORES ? scaledDotProductAttention(q, key, value, {causal: 'bottom-right'})
    : layer.attendCausal(q, key, value);
}

/**
 * A step of a sliding-window layer's cache, which holds the keys and values of the last W positions
 * it saw (positions cache.length - held .. cache.length - 1): the new queries attend to the held
 * positions their window reaches and to the new ones, and the cache keeps the last W of them all,
 * so its memory and a step's work stay flat however long the context. A step may start at
 * cache.length or go back as far as the held positions still cover the window (or to 0, a fresh
 * start); further back is INVALID_CACHE (those keys are gone).
 */
function windowStep(layer: KeyValueLayer, W: number, q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D,
                    cache: AttentionCache, index: number): CachedStep {
  const heldKeys = cache.tensors.key;
  const held = heldKeys.shape[2] as number;
  const first = cache.length - held;                  // the position of the first held row
  const from = Math.max(0, index - W + 1);             // the first position the new queries see
  if (index > 0 && from < first) {
    throw new AttentionError('INVALID_CACHE', `a sliding-window cache (window ${W}) holds positions ${first} .. ` +
      `${cache.length - 1}: a step from position ${index} needs position ${from}; give cacheIndex 0 (a fresh ` +
      `start) or at least ${first + W - 1}`);
  }
  return tf.tidy(() => {
    const t = q.shape[2];
    const rows = (x: tf.Tensor, n: number) => {
      const [B, G, , X] = x.shape as number[];
      return tf.slice(x, [0, 0, from - first, 0], [B, G, n, X]);
    };
    const n = index - from;                           // held positions the new queries see
    const key = n === 0 ? k : tf.concat([rows(heldKeys, n), k], 2) as tf.Tensor4D;                   // [B, G, n + t, D]
    const value = n === 0 ? v : tf.concat([rows(cache.tensors.value, n), v], 2) as tf.Tensor4D;   // [B, G, n + t, Dv]
    // One new position sees every key here (at most W - 1 held, and itself).
    const output = t === 1 && layer.plainInWindow?.() === true ? exactStep(layer, q, key, value)
      : layer.attendCausal(q, key, value);
    const keep = Math.min(W, n + t);
    const last = (x: tf.Tensor) => {
      const [B, G, L, X] = x.shape as number[];
      return tf.slice(x, [0, 0, L - keep, 0], [B, G, keep, X]);
    };
    return {output, tensors: {key: last(key), value: last(value)}};
  });
}

/** Throws unless a layer can decode: causal and built. `who`: "<Class> '<name>'". */
export function checkCacheable(who: string, causal: boolean, built: boolean): void {
  if (!causal) {
    throw new AttentionError('UNSUPPORTED',
      `${who} is not causal: only a causal layer decodes from a cache ` +
      '(each new position must not see later ones); make it with causal: true');
  }
  if (!built) {
    throw new AttentionError('INVALID_CONFIG', `${who} is not built yet: apply it to an input (or build it) before createCache`);
  }
}

/**
 * The one input of an apply with a cache (or a cacheIndex), once refused what a cached call
 * may not take: symbolic inputs, several inputs, masks, scores and training. `who`: "<Class>.apply".
 */
export function cachedCallInput(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                                kwargs: Kwargs, who: string): tf.Tensor {
  if (kwargs.cache == null) {
    throw new AttentionError('INVALID_CACHE', `${who}: cacheIndex needs a cache (from createCache)`);
  }
  const x = Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : null) : inputs;
  if (x instanceof tf.SymbolicTensor) {
    throw new AttentionError('UNSUPPORTED',
      `${who}: a cache works on tensors (eager decoding), not when building a model graph`);
  }
  if (x == null) {
    throw new AttentionError('UNSUPPORTED', `${who}: a cached call is self-attention on one input x [batch, newLength, features]`);
  }
  for (const name of ['attentionMask', 'queryMask', 'valueMask', 'keyMask', 'mask', 'useCausalMask'] as const) {
    if (kwargs[name] != null && kwargs[name] !== false) {
      throw new AttentionError('UNSUPPORTED', `${who}: ${name} cannot be given with a cache (decoding is causal and unpadded)`);
    }
  }
  for (const name of ['maskMod', 'scoreMod', 'blockMask'] as const) {
    if (kwargs[name] != null) {
      throw new AttentionError('UNSUPPORTED', `${who}: ${name} cannot be given with a cache; a cached step applies the ` +
        "layer's own maskMod and scoreMod (constructor arguments) to its new rows");
    }
  }
  if (kwargs.returnAttentionScores === true || kwargs.training === true) {
    throw new AttentionError('UNSUPPORTED',
      `${who}: a cached call is inference: returnAttentionScores and training cannot be true`);
  }
  if (kwargs.cacheIndex != null) assertNonNegativeInt('cacheIndex', kwargs.cacheIndex);
  return x;
}

/**
 * The first position of a cached step of x [B, t, Eq] (cacheIndex, default cache.length),
 * once `cache` and x are checked against the layer `layer` and its capabilities: a live
 * cache of this layer and batch, an index in [0, cache.length] (cache.length itself for a
 * running state) and room for the t positions. `who`: "<Class> '<name>'".
 */
export function cachedStepIndex(who: string, layer: {name: string; Eq: number; capabilities: AttentionCapabilities},
                                cache: AttentionCache, x: tf.Tensor, cacheIndex?: number): number {
  const c = cache as Partial<AttentionCache> | null;
  if (c == null || typeof c !== 'object' || typeof c.layer !== 'string' || c.tensors == null) {
    throw new AttentionError('INVALID_CACHE', `${who}: cache must come from createCache, received ${show(cache)}`);
  }
  if (c.layer !== layer.name) {
    throw new AttentionError('INVALID_CACHE', `${who}: the cache belongs to layer '${c.layer}', not to this one`);
  }
  if (Object.values(cache.tensors).some((t) => t.isDisposed)) {
    throw new AttentionError('INVALID_CACHE', `${who}: the cache's tensors are disposed (was it replaced by a newer one?)`);
  }
  if (!(x instanceof tf.Tensor) || x.rank !== 3 || x.dtype !== 'float32' || x.shape[2] !== layer.Eq) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${who}: a cached call takes x [batch, newLength, ${layer.Eq}] float32 (self-attention), received ` +
      (x instanceof tf.Tensor ? `a ${x.dtype} tensor of shape ${show(x.shape)}` : show(x)));
  }
  const [B, t] = x.shape as number[];
  if (B !== cache.batchSize) {
    throw new AttentionError('INVALID_CACHE', `${who}: the cache holds a batch of ${cache.batchSize}, received ${B} rows`);
  }
  const index = cacheIndex ?? cache.length;
  if (!Number.isInteger(index) || index < 0 || index > cache.length) {
    throw new AttentionError('INVALID_CACHE',
      `${who}: cacheIndex must be an integer in [0, ${cache.length}] (the positions the cache holds), received ${show(cacheIndex)}`);
  }
  enforceCapabilities(layer.capabilities, who, {cacheIndex: {index, length: cache.length}});
  if (index + t > cache.maxLength) {
    throw new AttentionError('CACHE_FULL',
      `${who}: positions ${index} .. ${index + t - 1} do not fit a cache of maxLength ${cache.maxLength}; ` +
      'make a longer one with createCache(batchSize, maxLength)');
  }
  return index;
}
