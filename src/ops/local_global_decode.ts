/**
 * Causal local-global attention from a decoding cache: the last W keys and values and the
 * global ones seen so far, O(W + Ng) whatever the length, with the result a full pass over
 * the prefix gives.
 */
import * as tf from '@tensorflow/tfjs';
import {scaledDotProductAttention} from './sdpa';

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
    options: {windowSize: number; globals: readonly number[]; gate: tf.Tensor; index: number}):
    {output: tf.Tensor4D; state: LocalGlobalState} {
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
    const output = globalOut == null ? tf.mul(s, localOut) :
      tf.add(tf.mul(s, localOut), tf.mul(tf.sub(1, s), globalOut));
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
