/**
 * Causal linear attention as an RNN: the running sums a decoding cache keeps, and one step
 * of t new positions over them, with the result linearAttention gives over the whole prefix.
 */
import * as tf from '@tensorflow/tfjs';
import {FeatureKernel, favorFeatures, softmaxKeyLogits, SOFTMAX_STABILIZER} from './linear_features';
import {causalProductsFrom} from './linear_prefix_sums';
import {matMul} from './matmul';

/** The running state of causal linear attention, per batch and key/value head. */
export interface LinearState {
  /** Shape [B, G, M, Dv + 1]: sum over keys of exp(a - shift) [v, 1]^T (softmax), or phi(k) [v, 1]^T (relu). */
  kv: tf.Tensor4D;
  /** Shape [B, G, 1, Dv + 1]: sum over keys of [v, 1] (carries the features' additive stabiliser). */
  v1: tf.Tensor4D;
  /** Shape [B, G, 1, 1]: the shift of the softmax features so far (the max key logit + log(M) / 2). */
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
    options: {projection: tf.Tensor; kernel: FeatureKernel; chunkSize?: number}):
    {output: tf.Tensor4D; state: LinearState} {
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
      shift = tf.maximum(state.shift,
        tf.add(tf.max(a, [2, 3], true), 0.5 * Math.log(M))) as tf.Tensor4D;                  // [B, G, 1, 1]
      const decay = tf.exp(tf.sub(state.shift, shift));                                      // [B, G, 1, 1]
      const e = tf.exp(tf.sub(a, shift));                                                    // [B, G, t, M]
      const old = tf.mul(state.kv, decay);                                                   // [B, G, M, Dv+1]
      // the earlier keys' phi^T [v, 1]
      initial = tf.add(old, tf.mul(state.v1, floor));
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
