/**
 * Linear attention with positive random features: FAVOR+ from "Rethinking Attention with
 * Performers" (Choromanski et al. 2021). The softmax kernel exp(q.k * scale) is the
 * expectation of phi(q).phi(k) for the random feature map
 *   phi(x) = exp(w.x' - |x'|^2 / 2) / sqrt(M),   x' = x * sqrt(scale),  w ~ N(0, I_D),
 * with M rows w of a fixed projection. Attention then factors as
 *   out = phi(Q) (phi(K)^T [V, 1])   (numerator and, in the last column, denominator),
 * which costs O(T*M*Dv) instead of O(T*S*D) and never forms the T x S matrix.
 *
 * Stabilisers, as in the Performer reference code: a constant is subtracted inside the
 * exp (the row max for a query, one max over all key rows and features for the keys of
 * a batch and head) and treated as a constant by autograd; it cancels between numerator
 * and denominator. The max is taken over w.x' - |x'|^2 / 2 (the reference takes it over
 * w.x' alone): the same kind of constant, but it keeps the largest feature at exp(0) = 1,
 * so inputs with a large |x| do not underflow every feature to zero. A small epsilon is
 * then added to every feature, keeping the denominator positive.
 *
 * This file holds the two ops and their argument checks. linearAttention runs the FAVOR+
 * engine (linear_engine.ts: one custom gradient that keeps no features between the passes);
 * linearAttentionFromFeatures, for features computed elsewhere (linear_features.ts makes
 * them), runs plain autograd over chunked prefix sums (linear_prefix_sums.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {noProbabilities} from '../core/arguments';
import {AttentionError} from '../core/errors';
import {assertOneOf, assertPositiveInt, assertPositiveNumber, checkArgNames, ForeignName} from '../core/validate';
import {CausalArg, causalAlignment, causalOffset} from './causal';
import {assertFits, attentionDims, groupHeads, isEmptyAttention, ungroupHeads, zeroAttention} from './heads';
import {favorAttention} from './linear_engine';
import {checkProjection, FEATURE_KERNELS, FeatureKernel} from './linear_features';
import {favorPlan, favorUnits, QUERY_PIECE} from './linear_plan';
import {causalProducts, DEFAULT_CHUNK_SIZE, emptyRows} from './linear_prefix_sums';
import {keyPaddingKeep} from './masks';
import {matMul} from './matmul';

/** The option names of linearAttention and linearAttentionFromFeatures. */
export const LINEAR_OPTIONS = ['projection', 'causal', 'kernel', 'scale', 'mask', 'chunkSize'] as const;
export const FROM_FEATURES_OPTIONS = ['causal', 'mask', 'chunkSize'] as const;

const LINEAR_NAMES: Readonly<Record<string, ForeignName>> = {
  ...noProbabilities('linearAttention'),
  numFeatures: {code: 'INVALID_CONFIG',
    advice: 'pass projection: orthogonalProjection(numFeatures, D, seed), the [numFeatures, D] random features'},
};

export interface LinearOptions {
  /** [M, D] rows w of the random features, e.g. orthogonalProjection(M, D, seed). */
  projection: tf.Tensor;
  /** true or 'bottom-right': query i sees key j iff j <= i + (S - T); 'top-left': iff j <= i. Default false. */
  causal?: CausalArg;
  /** Feature map: 'softmax' (FAVOR+, approximates softmax attention) or 'relu'. Default 'softmax'. */
  kernel?: FeatureKernel;
  /** Multiplies q k^T in the kernel approximated. Default 1 / sqrt(D). */
  scale?: number;
  /**
   * Key padding mask, bool or 0/1, 1 = may attend: broadcastable to [B, 1, 1, S]
   * ([B, 1, 1, S], [B, 1, S] or [1, S]). Masks that differ per query or per head do
   * not factor through the features and throw UNSUPPORTED.
   */
  mask?: tf.Tensor | null;
  /** Rows per chunk of the causal prefix sums. Default DEFAULT_CHUNK_SIZE. */
  chunkSize?: number;
}

/**
 * Linear attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] with G dividing H
 * (query head h reads key/value head floor(h / (H / G))). Returns [B, H, T, Dv]; a query
 * with no key it may attend to gives zeros.
 */
export function linearAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: LinearOptions): tf.Tensor4D {
  checkArgNames('linearAttention', options, LINEAR_OPTIONS, LINEAR_NAMES);
  if (options == null || options.projection == null) {
    throw new AttentionError('INVALID_CONFIG',
      'linearAttention needs options.projection, the [numFeatures, D] random projection ' +
      '(orthogonalProjection(numFeatures, D, seed) makes one)');
  }
  const dims = attentionDims(q, k, v);
  const {B, H, R, T, S, D} = dims;
  checkProjection(options.projection, D);
  const kernel = options.kernel ?? 'softmax';
  assertOneOf('kernel', kernel, FEATURE_KERNELS);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  assertPositiveNumber('scale', scale);
  const chunk = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  assertPositiveInt('chunkSize', chunk);
  const alignment = causalAlignment(options.causal);
  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(keyPaddingKeep(options.mask, [B, H, T, S], 'linear attention')); // still checked
    return zeroAttention(q, k, v, dims, options.projection);
  }
  const M = options.projection.shape[0] as number;
  const plan = favorPlan(dims, M, kernel, scale, alignment != null ? causalOffset(alignment, T, S) : null, chunk);
  const N = favorUnits(plan)[0].N; // the (batch, group) pairs of one unit
  const rows = Math.min(T, alignment != null ? chunk : QUERY_PIECE); // query positions per chunk
  assertFits('linearAttention', 'the key features', [N, S, M]);
  assertFits('linearAttention', 'the query features of a chunk', [N, R * rows, M]);
  if (alignment != null) assertFits('linearAttention', 'the products inside chunks', [N, R * rows, rows]);
  return tf.tidy(() => {
    const keep = options.mask != null ? keyPaddingKeep(options.mask, [B, H, T, S], 'linear attention') : null; // [Bm, S]
    return favorAttention(plan, q, k, v, options.projection, keep);
  });
}

/**
 * The attention step alone, for features computed elsewhere: qf [B, H, T, M],
 * kf [B, G, S, M] (non-negative), v [B, G, S, Dv]:
 *   out_i = sum_j (qf_i . kf_j) v_j / sum_j (qf_i . kf_j)
 * over the keys j that query i may see (all, or j <= i + S - T or j <= i when causal, minus
 * masked keys). Returns [B, H, T, Dv].
 */
export function linearAttentionFromFeatures(qf: tf.Tensor, kf: tf.Tensor, v: tf.Tensor,
    options: {causal?: CausalArg; mask?: tf.Tensor | null; chunkSize?: number} = {}): tf.Tensor4D {
  options = options ?? {};
  checkArgNames('linearAttentionFromFeatures', options, FROM_FEATURES_OPTIONS, LINEAR_NAMES);
  const dims = attentionDims(qf, kf, v, 'feature count M');
  const {B, H, G, T, S, Dv} = dims;
  const alignment = causalAlignment(options.causal);
  const chunk = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  assertPositiveInt('chunkSize', chunk);
  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(keyPaddingKeep(options.mask, [B, H, T, S], 'linear attention')); // still checked
    return zeroAttention(qf, kf, v, dims);
  }
  const M = qf.shape[3] as number;
  assertFits('linearAttention', 'the [M, Dv + 1] key-value sums', [B, H, M, Dv + 1]);
  // Query i sees key j iff j <= i + offset.
  const offset = alignment != null ? causalOffset(alignment, T, S) : null;
  return tf.tidy(() => {
    const keep = options.mask != null                                              // [Bm, 1, S, 1]
      ? tf.reshape(keyPaddingKeep(options.mask, [B, H, T, S], 'linear attention'), [-1, 1, S, 1]) : null;
    const kfm = keep != null ? tf.mul(kf, keep) : kf;                              // [B, G, S, M]
    const vAug = tf.concat([v, tf.ones([B, G, S, 1])], 3);                          // [B, G, S, Dv+1]
    const out = offset != null ? causalProducts(qf, kfm, vAug, dims, chunk, offset)
      : ungroupHeads(matMul(groupHeads(qf, dims), matMul(kfm, vAug, true, false)), dims, T); // [B, H, T, Dv+1]
    const num = tf.slice(out, [0, 0, 0, 0], [B, H, T, Dv]); // [B, H, T, Dv]
    let den = tf.slice(out, [0, 0, 0, Dv], [B, H, T, 1]);   // [B, H, T, 1]
    const empty = emptyRows(keep, offset, T, S);
    if (empty != null) den = tf.add(den, empty); // num is 0 there, so the row is 0
    return tf.div(num, den) as tf.Tensor4D;
  });
}
