/**
 * Exact attention with the whole [B, H, T, S] score matrix formed, a score mod and a mask mod
 * evaluated over all of it, and optional attention sinks: what a layer with score-changing options
 * (softcap, ALiBi, sliding windows, sinks) computes when it needs the probabilities (dropout while
 * training, returned scores) or asks for implementation 'standard'. Plain tf ops, so autograd
 * differentiates the mods and the tensors they read. The tiled counterpart is flexAttention.
 */
import * as tf from '@tensorflow/tfjs';
import {CausalAlignment, causalMask} from './causal';
import {maskValuesOf} from './flex_mods';
import {MaskMod, ModContext, ScoreMod} from './flex_types';
import {attentionDims, attentionScale, groupHeads, ungroupHeads} from './heads';
import {combineMasks, MASKED_LOGIT} from './masks';
import {matMul} from './matmul';
import {AttentionWithWeights} from './sdpa';

export interface DenseModOptions {
  /** Bool, broadcastable to [B, H, T, S], 1 = may attend. */
  mask?: tf.Tensor | null;
  causal?: CausalAlignment | null;
  /** Applied to the scaled scores of every pair (see ScoreMod). */
  scoreMod?: ScoreMod | null;
  /** Keys each query may see, on top of mask and causal (see MaskMod). */
  maskMod?: MaskMod | null;
  /** One logit per query head [H] joining each row's softmax denominator (taking no value). */
  sinks?: tf.Tensor | null;
  dropout?: number;
  training?: boolean;
  returnWeights?: boolean;
}

/**
 * log sum_j exp(x_ij) over the last axis, keeping it, with the gradient dy * softmax(x). Not
 * tf.logSumExp: its gradient goes through its max, which compares every entry with it, and its
 * exp is a scalar loop on wasm (the two cost a sink layer three quarters of its step). Here from
 * the fast Softmax kernel: at the row's largest entry m, p = exp(m - lse) >= 1 / S, so
 * lse = m - log(max p) is well conditioned.
 */
function rowLogSumExp(x: tf.Tensor): tf.Tensor {
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, save] = args as [tf.Tensor, tf.GradSaveFunc];
    save([xx]);
    return {
      value: tf.tidy(() => tf.sub(tf.max(xx, -1, true), tf.log(tf.max(tf.softmax(xx), -1, true)))),
      gradFunc: (dy: tf.Tensor, [sx]: tf.Tensor[]) => tf.mul(dy, tf.softmax(sx)),
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(x);
}

/**
 * Attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv]: p = softmax over the visible
 * keys of scoreMod(scale * q k^T) (with a sink: exp(s) / (sum exp(s) + exp(sink_h))), output p v.
 * Rows with no visible key give zeros. Returns [B, H, T, Dv], or `{output, weights}` with the
 * probabilities (before dropout, after the sink's share) when returnWeights.
 */
export function denseModAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D,
                                  options: DenseModOptions): tf.Tensor4D | AttentionWithWeights {
  const dims = attentionDims(q, k, v);
  const {B, H, T, S, D} = dims;
  const scale = attentionScale(undefined, D);
  return tf.tidy(() => {
    const qg = groupHeads(tf.mul(q, scale), dims);                             // [B, G, R*T, D]
    let logits = ungroupHeads(matMul(qg, k, false, true), dims, T);          // [B, H, T, S]
    const context: ModContext = {batch: B, heads: H, queryLength: T, keyLength: S};
    const [b, h, qi, kv] = [[B, 1, 1, 1], [1, H, 1, 1], [1, 1, T, 1], [1, 1, 1, S]].map((shape) =>
      tf.reshape(tf.range(0, shape.reduce((x, y) => x * y), 1, 'int32'), shape));
    if (options.scoreMod != null) logits = options.scoreMod(logits, b, h, qi, kv, context);
    let keep: tf.Tensor | null = null;
    const allowed = combineMasks(options.mask, null, [B, H, T, S]);
    if (allowed != null) keep = tf.cast(allowed, 'float32');
    // The causal rule and the mod in their float forms (mask_values.ts: wasm's comparisons are scalar loops).
    const mods = [options.causal != null ? causalMask(options.causal) : null, options.maskMod ?? null];
    for (const mod of mods) {
      if (mod == null) continue;
      const values = maskValuesOf(mod, b, h, qi, kv, context);
      keep = keep == null ? values : tf.mul(keep, values);
    }
    if (keep != null) logits = tf.add(logits, tf.mul(tf.sub(1, keep), MASKED_LOGIT));
    let weights = tf.softmax(logits);                                          // [B, H, T, S]
    if (options.sinks != null) {
      // The sink's share of the denominator: sum exp(s) / (sum exp(s) + exp(sink)) = sigmoid(lse - sink).
      const lse = rowLogSumExp(logits);                                        // [B, H, T, 1]
      weights = tf.mul(weights, tf.sigmoid(tf.sub(lse, tf.reshape(options.sinks, [1, H, 1, 1]))));
    }
    if (keep != null) weights = tf.mul(weights, keep);
    const dropping = (options.training ?? false) && (options.dropout ?? 0) > 0;
    const dropped = dropping ? tf.dropout(weights, options.dropout!) : weights;
    const output = ungroupHeads(matMul(groupHeads(dropped, dims), v), dims, T) as tf.Tensor4D; // [B, H, T, Dv]
    return options.returnWeights === true ? {output, weights: weights as tf.Tensor4D} : output;
  });
}
