/**
 * Incremental (cached) causal attention: t new queries at positions index .. index + t - 1
 * against what a cache holds of the keys before them, with the result a full causal pass
 * over the same prefix gives. Pure functions of tensors: each returns the output and the
 * cache's new tensors (fresh tensors: the old ones stay valid until their owner disposes them).
 *
 *   writeRows            exact attention: every key so far, in [B, G, maxLength, D] buffers.
 *   linearStateStep      linear attention as an RNN: running sums of phi(k) [v, 1]^T, O(M * Dv).
 *   localGlobalStep      local-global: the last W keys plus the global keys seen, O(W + Ng).
 */
import * as tf from '@tensorflow/tfjs';
import {FeatureKernel, favorFeatures, causalProductsFrom, softmaxKeyLogits, SOFTMAX_STABILIZER} from './linear';
import {matMul} from './matmul';
import {scaledDotProductAttention} from './sdpa';

/** The tensors of a key/value cache: keys [B, G, L, D] and values [B, G, L, Dv] for L = maxLength. */
export type KvCacheTensors = {key: tf.Tensor4D; value: tf.Tensor4D};

/**
 * buf [B, G, L, X] with rows index .. index + t - 1 replaced by x [B, G, t, X]; also the
 * rows 0 .. index + t - 1 of the result (what the new queries attend to).
 */
export function writeRows(buf: tf.Tensor, x: tf.Tensor, index: number): {buffer: tf.Tensor4D; prefix: tf.Tensor4D} {
  return tf.tidy(() => {
    const [B, G, L, X] = buf.shape as number[];
    const t = x.shape[2] as number;
    const prefix = index === 0 ? x : tf.concat([tf.slice(buf, [0, 0, 0, 0], [B, G, index, X]), x], 2); // [B, G, index+t, X]
    const rest = L - index - t;
    const buffer = rest === 0 ? tf.clone(prefix)
      : tf.concat([prefix, tf.slice(buf, [0, 0, index + t, 0], [B, G, rest, X])], 2);                 // [B, G, L, X]
    return {buffer: buffer as tf.Tensor4D, prefix: (prefix === x ? tf.clone(x) : prefix) as tf.Tensor4D};
  });
}

/** The running state of causal linear attention, per batch and key/value head. */
export interface LinearState {
  /** [B, G, M, Dv + 1]: sum over keys of exp(a - shift) [v, 1]^T (softmax), or phi(k) [v, 1]^T (relu). */
  kv: tf.Tensor4D;
  /** [B, G, 1, Dv + 1]: sum over keys of [v, 1] (carries the features' additive stabiliser). */
  v1: tf.Tensor4D;
  /** [B, G, 1, 1]: the shift of the softmax features so far (the max key logit + log(M) / 2). */
  shift: tf.Tensor4D;
}

/** Before any key: the shift starts far below any logit, so the first keys set it. */
export const EMPTY_SHIFT = -1e30;

/**
 * Causal linear attention of q [B, H, t, D] over the state and the new k [B, G, t, D],
 * v [B, G, t, Dv]. With the softmax features, the keys' shift is the max over every key
 * so far (as a full pass over the prefix takes it over its keys), and the stabiliser's
 * share (SOFTMAX_STABILIZER / sqrt(M) per feature) is kept apart in v1, so the result is
 * that of linearAttention over the whole prefix, not an approximation of it.
 */
export function linearStateStep(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, state: LinearState,
    options: {projection: tf.Tensor; kernel: FeatureKernel; chunkSize?: number}): {output: tf.Tensor4D; state: LinearState} {
  return tf.tidy(() => {
    const [B, G, t] = k.shape as number[];
    const Dv = v.shape[3] as number;
    const M = options.projection.shape[0] as number;
    const qf = favorFeatures(q, options.projection, {role: 'query', kernel: options.kernel}); // [B, H, t, M]
    const vAug = tf.concat([v, tf.ones([B, G, t, 1])], 3);                                   // [B, G, t, Dv+1]
    const v1 = tf.add(state.v1, tf.sum(vAug, 2, true)) as tf.Tensor4D;                       // [B, G, 1, Dv+1]
    let initial: tf.Tensor;                                                                   // [B, G, M, Dv+1]
    let kf: tf.Tensor;                                                                        // [B, G, t, M]
    let kv: tf.Tensor4D;
    let shift: tf.Tensor4D;
    if (options.kernel === 'relu') {
      kf = favorFeatures(k, options.projection, {role: 'key', kernel: 'relu'});
      initial = state.kv;
      kv = tf.add(state.kv, matMul(kf, vAug, true, false)) as tf.Tensor4D;
      shift = tf.clone(state.shift);
    } else {
      const floor = SOFTMAX_STABILIZER / Math.sqrt(M);
      const a = softmaxKeyLogits(k, options.projection);                                    // [B, G, t, M]
      shift = tf.maximum(state.shift, tf.add(tf.max(a, [2, 3], true), 0.5 * Math.log(M))) as tf.Tensor4D; // [B, G, 1, 1]
      const decay = tf.exp(tf.sub(state.shift, shift));                                      // [B, G, 1, 1]
      const e = tf.exp(tf.sub(a, shift));                                                    // [B, G, t, M]
      const old = tf.mul(state.kv, decay);                                                   // [B, G, M, Dv+1]
      initial = tf.add(old, tf.mul(state.v1, floor));                                        // the earlier keys' phi^T [v, 1]
      kf = tf.add(e, floor);
      kv = tf.add(old, matMul(e, vAug, true, false)) as tf.Tensor4D;
    }
    const out = causalProductsFrom(qf, kf, vAug, initial, options.chunkSize);               // [B, H, t, Dv+1]
    const [, H] = q.shape as number[];
    const num = tf.slice(out, [0, 0, 0, 0], [B, H, t, Dv]);                                  // [B, H, t, Dv]
    const den = tf.slice(out, [0, 0, 0, Dv], [B, H, t, 1]);                                  // [B, H, t, 1]
    return {output: tf.div(num, den) as tf.Tensor4D, state: {kv, v1, shift}};
  });
}

/** What a local-global cache holds: the last W keys and values, and the global ones. */
export interface LocalGlobalState {
  /** [B, G, W, D] and [B, G, W, Dv]: positions index - W .. index - 1 (rows before 0 unused). */
  windowKey: tf.Tensor4D;
  windowValue: tf.Tensor4D;
  /** [B, G, Ng, D] and [B, G, Ng, Dv]: the global positions, in `globals` order (rows not yet seen unused). */
  globalKey: tf.Tensor4D;
  globalValue: tf.Tensor4D;
}

/**
 * Causal local-global attention of the t new positions index .. index + t - 1 (q
 * [B, H, t, D], k [B, G, t, D], v [B, G, t, Dv]) over the window of the last W positions
 * and the global positions `globals` (sorted, below the cache's length) seen so far:
 *   out = sigmoid(gate) * local + (1 - sigmoid(gate)) * global,
 * local over keys j with p - W <= j <= p, global over the globals g <= p (zero when none).
 */
export function localGlobalStep(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, state: LocalGlobalState,
    options: {windowSize: number; globals: readonly number[]; gate: tf.Tensor; index: number})
    : {output: tf.Tensor4D; state: LocalGlobalState} {
  return tf.tidy(() => {
    const {globals, index} = options;
    const [, H, t] = q.shape as number[];
    const Dv = v.shape[3] as number;
    const W = state.windowKey.shape[2] as number;
    // 1. Local: the window and the new keys, positions index - W .. index + t - 1.
    const keys = tf.concat([state.windowKey, k], 2);                                         // [B, G, W+t, D]
    const values = tf.concat([state.windowValue, v], 2);                                     // [B, G, W+t, Dv]
    const local = new Uint8Array(t * (W + t));
    for (let i = 0; i < t; i++) {
      const p = index + i;
      for (let j = 0; j < W + t; j++) {
        const pk = index - W + j;
        if (pk >= 0 && pk <= p && p - pk <= options.windowSize) local[i * (W + t) + j] = 1;
      }
    }
    const localOut = scaledDotProductAttention(q, keys, values, {mask: tf.tensor4d(local, [1, 1, t, W + t], 'bool')});
    // 2. Global: write the new global keys into their rows, then attend to those at or before each query.
    const Ng = globals.length;
    let globalOut: tf.Tensor | null = null;
    let globalKey = state.globalKey;
    let globalValue = state.globalValue;
    if (Ng > 0) {
      const rows = globals.map((g, s) => (g >= index && g < index + t ? Ng + g - index : s));
      const idx = tf.tensor1d(rows, 'int32');
      globalKey = tf.gather(tf.concat([state.globalKey, k], 2), idx, 2) as tf.Tensor4D;     // [B, G, Ng, D]
      globalValue = tf.gather(tf.concat([state.globalValue, v], 2), idx, 2) as tf.Tensor4D; // [B, G, Ng, Dv]
      const seen = new Uint8Array(t * Ng);
      for (let i = 0; i < t; i++) globals.forEach((g, s) => { if (g <= index + i) seen[i * Ng + s] = 1; });
      globalOut = scaledDotProductAttention(q, globalKey, globalValue,
        {mask: tf.tensor4d(seen, [1, 1, t, Ng], 'bool')});                                    // [B, H, t, Dv]
    } else {
      globalKey = tf.clone(globalKey);
      globalValue = tf.clone(globalValue);
    }
    // 3. The gate blend, and the window moved on by t.
    const s = tf.reshape(tf.sigmoid(options.gate), [1, H, 1, Dv]);                          // [1, H, 1, Dv]
    const output = globalOut == null ? tf.mul(s, localOut) : tf.add(tf.mul(s, localOut), tf.mul(tf.sub(1, s), globalOut));
    const [B, G] = k.shape as number[];
    const D = k.shape[3] as number;
    return {
      output: output as tf.Tensor4D,
      state: {
        windowKey: tf.slice(keys, [0, 0, t, 0], [B, G, W, D]) as tf.Tensor4D,
        windowValue: tf.slice(values, [0, 0, t, 0], [B, G, W, Dv]) as tf.Tensor4D,
        globalKey, globalValue,
      },
    };
  });
}
