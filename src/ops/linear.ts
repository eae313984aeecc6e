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
 * Causal attention uses prefix sums of phi(k) [v, 1]^T over chunks: inside a chunk the
 * (chunk x chunk) products are masked to the lower triangle, across chunks an exclusive
 * cumulative sum of the per-chunk [M, Dv+1] sums carries the prefix, so memory is
 * O(T*M + (T/chunk)*M*Dv) rather than the O(T*M*Dv) of a cumulative sum over every row.
 */
import * as tf from '@tensorflow/tfjs';
import {matMul} from './matmul';
import {noProbabilities, OP_NAMES} from '../arguments';
import {AttentionError, show} from '../errors';
import {assertOneOf, assertPositiveInt, assertPositiveNumber, checkArgNames, ForeignName} from '../validate';
import {AttentionDims, assertFits, attentionDims, groupHeads, isEmptyAttention, repeatHeads, ungroupHeads, zeroAttention} from './heads';
import {CausalArg, causalAlignment, causalOffset, keyPaddingKeep} from './masks';
import {zerosWithZeroGrads} from './zeros';

export const FEATURE_KERNELS = ['softmax', 'relu'] as const;
/** 'softmax': FAVOR+ positive random features; 'relu': relu(w.x') / sqrt(M) (a different kernel). */
export type FeatureKernel = typeof FEATURE_KERNELS[number];

/** Added to every softmax feature (before the 1/sqrt(M) factor), as the Performer reference does. */
export const SOFTMAX_STABILIZER = 1e-6;
/** Added to every relu feature, as the Performer reference does. */
export const RELU_STABILIZER = 1e-3;
/**
 * Rows per chunk of the causal prefix sums. Measured on wasm (causal forward+backward,
 * B=1, H=4, T=4096, D=64, M=266, median of 3): chunks of 32/64/128/256 rows took
 * 4.2/4.6/5.7/9.8 s with peaks of 872/711/643/633 MiB; 64 is near the fastest and its
 * [M, Dv+1] state per chunk stays below the features' size for Dv < 64.
 */
export const DEFAULT_CHUNK_SIZE = 64;

/** The option names of linearAttention, linearAttentionFromFeatures and favorFeatures. */
export const LINEAR_OPTIONS = ['projection', 'causal', 'kernel', 'scale', 'mask', 'chunkSize'] as const;
export const FROM_FEATURES_OPTIONS = ['causal', 'mask', 'chunkSize'] as const;
export const FEATURE_OPTIONS = ['role', 'kernel', 'scale'] as const;

const LINEAR_NAMES: Readonly<Record<string, ForeignName>> = {
  ...noProbabilities('linearAttention'),
  numFeatures: {code: 'INVALID_CONFIG',
    advice: 'pass projection: orthogonalProjection(numFeatures, D, seed), the [numFeatures, D] random features'},
};

export interface FeatureOptions {
  /**
   * 'query': the stabilising max is taken per row; 'key': over all rows and features of
   * each batch and head (per-row shifts would not cancel across keys).
   */
  role: 'query' | 'key';
  /** Default 'softmax'. */
  kernel?: FeatureKernel;
  /** The attention scale; the data is multiplied by sqrt(scale). Default 1 / sqrt(D). */
  scale?: number;
}

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
 * phi = exp(wx - diag - c) / sqrt(M) + eps / sqrt(M) as [B, N, L, M], from wx [B*N*L, M]
 * and diag [B*N*L, 1], with c = max(wx - diag) per row ('query') or per (batch, head)
 * ('key'), a constant for autograd. One custom gradient instead of a chain of
 * elementwise ops keeps the backward pass to two [.., M] tensors rather than one per op:
 * with phi' = phi - eps / sqrt(M), d wx = dphi * phi' and d diag = -rowsum(dphi * phi').
 */
function positiveFeatures(wx: tf.Tensor, diag: tf.Tensor, role: 'query' | 'key', shape: number[]): tf.Tensor4D {
  const [B, N, L, M] = shape;
  const floor = SOFTMAX_STABILIZER / Math.sqrt(M);
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [a, d, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    // Step by step, freeing each [.., M] intermediate as soon as the next exists.
    const logits = tf.tidy(() => tf.reshape(tf.sub(a, d), [B * N, L, M]));   // [B*N, L, M]
    const axes = role === 'query' ? [2] : [1, 2];
    const shift = tf.tidy(() => tf.add(tf.max(logits, axes, true), 0.5 * Math.log(M))); // folds in 1 / sqrt(M)
    const e = tf.tidy(() => tf.exp(tf.sub(logits, shift)));
    logits.dispose();
    const phi = tf.tidy(() => tf.reshape(tf.add(e, floor), shape));          // [B, N, L, M]
    e.dispose();
    save([phi]);
    return {
      value: phi,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dwx = tf.reshape(tf.mul(dy, tf.sub(saved[0], floor)), [B * N * L, M]); // [B*N*L, M]
        return [dwx, tf.neg(tf.sum(dwx, -1, true))];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(wx, diag) as tf.Tensor4D;
}

/**
 * Random features phi(x) [B, N, L, M] of x [B, N, L, D] (queries or keys) for the
 * projection [M, D]. See the file comment for the formula and the stabilisers.
 */
export function favorFeatures(x: tf.Tensor, projection: tf.Tensor, options: FeatureOptions): tf.Tensor4D {
  if (options == null) throw new AttentionError('INVALID_CONFIG', "favorFeatures needs options {role: 'query' | 'key'}");
  checkArgNames('favorFeatures', options, FEATURE_OPTIONS, OP_NAMES);
  const kernel = options.kernel ?? 'softmax';
  assertOneOf('kernel', kernel, FEATURE_KERNELS);
  assertOneOf('role', options.role, ['query', 'key'] as const);
  if (!(x instanceof tf.Tensor) || x.rank !== 4) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `x must be a rank-4 tensor ([batch, heads, length, dim]), received ${x instanceof tf.Tensor ? `shape ${show(x.shape)}` : show(x)}`);
  }
  const [B, N, L, D] = x.shape as number[];
  checkProjection(projection, D);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  assertPositiveNumber('scale', scale);
  const M = projection.shape[0] as number;
  if (x.size === 0) return zerosWithZeroGrads([B, N, L, M], [x, projection]) as tf.Tensor4D; // nothing to map
  assertFits('favorFeatures', 'the features', [B, N, L, M]);
  return tf.tidy(() => {
    const xs = tf.mul(x, Math.sqrt(scale));        // [B, N, L, D]
    // relu(w.x') / sqrt(M) = relu(w.(x' / sqrt(M))): the factor goes on the small side.
    const xw = kernel === 'relu' ? tf.div(xs, Math.sqrt(M)) : xs;
    const x2 = tf.reshape(xw, [B * N * L, D]);           // [B*N*L, D]
    const wx = matMul(x2, projection, false, true); // [B*N*L, M]
    if (kernel === 'relu') return tf.reshape(tf.add(tf.relu(wx), RELU_STABILIZER), [B, N, L, M]) as tf.Tensor4D;
    const diag = tf.div(tf.sum(tf.square(x2), -1, true), 2); // [B*N*L, 1]
    return positiveFeatures(wx, diag, options.role, [B, N, L, M]);
  });
}

function checkProjection(projection: tf.Tensor, D: number): void {
  if (!(projection instanceof tf.Tensor) || projection.rank !== 2 || projection.shape[1] !== D || projection.shape[0] === 0) {
    const got = projection instanceof tf.Tensor ? `shape ${show(projection.shape)}` : show(projection);
    throw new AttentionError('DIMENSION_MISMATCH',
      `projection must be a [numFeatures, ${D}] tensor (its last dim the head dim), received ${got}`);
  }
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
  checkProjection(options.projection, dims.D);
  if (isEmptyAttention(dims)) {
    const {B, H, T, S} = dims;
    if (options.mask != null) tf.dispose(keyPaddingKeep(options.mask, [B, H, T, S], 'linear attention')); // still checked
    return zeroAttention(q, k, v, dims, options.projection);
  }
  return tf.tidy(() => {
    const feature = {kernel: options.kernel, scale: options.scale};
    const qf = favorFeatures(q, options.projection, {...feature, role: 'query'}); // [B, H, T, M]
    const kf = favorFeatures(k, options.projection, {...feature, role: 'key'});   // [B, G, S, M]
    return linearAttentionFromFeatures(qf, kf, v, {causal: options.causal, mask: options.mask, chunkSize: options.chunkSize});
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

/**
 * Exclusive cumulative sum along the last axis of a rank-3 x. Its gradient, the reverse
 * cumulative sum of dy, is computed as flip(cumsum(flip(dy))): tfjs-backend-webgpu 4.22's
 * reverse cumsum (what tf.cumsum's own gradient runs) returns wrong sums.
 */
function exclusivePrefixSum(x: tf.Tensor): tf.Tensor {
  const f = tf.customGrad(((a: tf.Tensor) => ({
    value: tf.cumsum(a, 2, true),
    gradFunc: (dy: tf.Tensor) => tf.reverse(tf.cumsum(tf.reverse(dy, 2), 2, true), 2),
  })) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (t: tf.Tensor) => tf.Tensor;
  return f(x);
}

/**
 * 1 for the query rows that see no key, else 0, as [Bm|1, 1, T|1, 1]; null when every
 * row sees a key. Built from the mask alone (never from differentiated tensors).
 */
function emptyRows(keep: tf.Tensor | null, offset: number | null, T: number, S: number): tf.Tensor | null {
  if (keep == null && (offset == null || offset >= 0)) return null;
  const k = keep != null ? tf.broadcastTo(keep, [keep.shape[0], 1, S, 1]) : tf.ones([1, 1, S, 1]); // [Bm, 1, S, 1]
  if (offset == null) return tf.cast(tf.equal(tf.sum(k, 2, true), 0), 'float32'); // [Bm, 1, 1, 1]
  // Query i sees the keys j <= min(i + offset, S - 1): count them with a cumulative sum.
  const seen = tf.cumsum(k, 2); // [Bm, 1, S, 1]
  const Bm = seen.shape[0] as number;
  const before = offset < 0 ? Math.min(-offset, T) : 0;                // rows that see no key at all
  const from = Math.max(offset, 0);                                    // the last key row `before` sees
  const within = Math.max(0, Math.min(T - before, S - from));          // rows whose last key is inside [0, S)
  const after = T - before - within;                                   // rows that see every key
  const parts: tf.Tensor[] = [];
  if (before > 0) parts.push(tf.zeros([Bm, 1, before, 1]));
  if (within > 0) parts.push(tf.slice(seen, [0, 0, from, 0], [Bm, 1, within, 1]));
  if (after > 0) parts.push(tf.broadcastTo(tf.slice(seen, [0, 0, S - 1, 0], [Bm, 1, 1, 1]), [Bm, 1, after, 1]));
  const counts = parts.length === 1 ? parts[0] : tf.concat(parts, 2);             // [Bm, 1, T, 1]
  return tf.cast(tf.equal(counts, 0), 'float32');
}

/** [n, n] 0/1: row i may see column j iff j <= i. */
function lowerTriangle(n: number): tf.Tensor2D {
  const data = new Float32Array(n * n);
  for (let i = 0; i < n; i++) data.fill(1, i * n, i * n + i + 1);
  return tf.tensor2d(data, [n, n]);
}

/**
 * Causal numerator and denominator, [B, H, T, X] with X = Dv + 1, by chunked prefix
 * sums: query i sees keys j <= i + offset (offset S - T bottom-right, 0 top-left). The
 * keys before the diagonal of the first query that sees any (offset > 0) start every
 * prefix; queries before the first key (offset < 0) get 0; queries past the last key's
 * diagonal (top-left with T > S) see every key.
 *
 * All chunks at once, with no loop and no per-chunk slice (the wasm backend copies a
 * tensor's whole buffer for every slice of it): the aligned length L (query before + r
 * sees keys first .. first + r) is padded to nc chunks of n rows and reshaped to
 * [B*H*nc, n, .]; then
 *   1. u_c = kf_c^T [v, 1]_c, the [M, X] sum of each chunk;
 *   2. the state before chunk c, the exclusive cumulative sum of u over chunks;
 *   3. out_c = qf_c state_c + (qf_c kf_c^T masked to j <= i) [v, 1]_c.
 * Memory: the features, O(T*M), plus one [M, X] state per chunk, O(T*M*X/n), which is
 * O(T*M) for chunks of at least X rows; never a T x S matrix. `initial` [B, G, M, X], when
 * given, is a sum over earlier keys that every query also sees (a decoding cache's state).
 */
function causalProducts(qf: tf.Tensor, kf: tf.Tensor, vAug: tf.Tensor, dims: AttentionDims, chunk: number,
                        offset: number, initial: tf.Tensor | null = null): tf.Tensor {
  const {B, H, G, R, T, S} = dims;
  const M = qf.shape[3] as number;
  const X = vAug.shape[3] as number; // Dv + 1
  const before = Math.min(Math.max(-offset, 0), T); // queries that see no key
  const first = Math.min(Math.max(offset, 0), S);   // keys that every other query sees
  const L = Math.min(T - before, S - first);         // >= 1 for T, S >= 1
  const after = T - before - L;                      // queries that see every key
  // [B, G, M, X]: the sum over the keys every query sees (and a state carried in from earlier keys).
  let start: tf.Tensor | null = initial;
  if (first > 0) {
    const sum = matMul(tf.slice(kf, [0, 0, 0, 0], [B, G, first, M]), tf.slice(vAug, [0, 0, 0, 0], [B, G, first, X]),
      true, false);                                                             // [B, G, M, X]
    start = start == null ? sum : tf.add(start, sum);
  }
  const qa = before > 0 || L < T ? tf.slice(qf, [0, 0, before, 0], [B, H, L, M]) : qf;   // [B, H, L, M]
  const ka = first > 0 || L < S ? tf.slice(kf, [0, 0, first, 0], [B, G, L, M]) : kf;     // [B, G, L, M]
  const va = first > 0 || L < S ? tf.slice(vAug, [0, 0, first, 0], [B, G, L, X]) : vAug; // [B, G, L, X]
  const n = Math.min(chunk, L);
  const nc = Math.ceil(L / n);
  assertFits('linearAttention', 'the per-chunk [M, Dv + 1] states', [B * H, nc, M, X]);
  assertFits('linearAttention', 'the products inside chunks', [B * H * nc, n, n]);
  const pad = (x: tf.Tensor) => (nc * n === L ? x : tf.pad(x, [[0, 0], [0, 0], [0, nc * n - L], [0, 0]]));
  const qc = tf.reshape(pad(qa), [B * H * nc, n, M]);                           // [B*H*nc, n, M]
  const kc = tf.reshape(pad(repeatHeads(ka, R)), [B * H * nc, n, M]);           // [B*H*nc, n, M]
  const vc = tf.reshape(pad(repeatHeads(va, R)), [B * H * nc, n, X]);           // [B*H*nc, n, X]
  // 1. Each chunk's sum of kf^T [v, 1].
  const u = tf.reshape(matMul(kc, vc, true, false), [B * H, nc, M * X]);     // [B*H, nc, M*X]
  // 2. The state before each chunk.
  // (Summed along the last axis: tfjs 4.22's cumsum gradient has the wrong shape for other axes.)
  let state = tf.transpose(exclusivePrefixSum(tf.transpose(u, [0, 2, 1])), [0, 2, 1]); // [B*H, nc, M*X]
  if (start != null) state = tf.add(state, tf.reshape(repeatHeads(start, R), [B * H, 1, M * X]));
  // 3. Across chunks through the state, within a chunk through the masked products.
  const across = matMul(qc, tf.reshape(state, [B * H * nc, M, X]));          // [B*H*nc, n, X]
  const a = tf.mul(matMul(qc, kc, false, true), lowerTriangle(n));          // [B*H*nc, n, n]
  let out = tf.reshape(tf.add(across, matMul(a, vc)), [B, H, nc * n, X]);   // [B, H, nc*n, X]
  if (nc * n !== L) out = tf.slice(out, [0, 0, 0, 0], [B, H, L, X]);            // [B, H, L, X]
  const parts = [out];
  if (before > 0) parts.unshift(tf.zeros([B, H, before, X]));                    // rows that see no key
  if (after > 0) {
    // Rows past the last key's diagonal see all the keys of the aligned part and before it.
    let total = matMul(ka, va, true, false);                                     // [B, G, M, X]
    if (start != null) total = tf.add(total, start);
    const late = tf.slice(qf, [0, 0, before + L, 0], [B, H, after, M]);          // [B, H, after, M]
    const grouped = groupHeads(late, dims);                                      // [B, G, R*after, M]
    parts.push(ungroupHeads(matMul(grouped, total), dims, after));               // [B, H, after, X]
  }
  return parts.length === 1 ? out : tf.concat(parts, 2);                        // [B, H, T, X]
}

/**
 * Causal numerator and denominator [B, H, t, Dv + 1] of t new queries over an earlier
 * state `initial` [B, G, M, Dv + 1] (the sum of kf^T [v, 1] over the keys before them)
 * and the t new keys, query i seeing new keys j <= i: one step of causal linear
 * attention as a recurrence (what a decoding cache runs).
 */
export function causalProductsFrom(qf: tf.Tensor, kf: tf.Tensor, vAug: tf.Tensor, initial: tf.Tensor,
                                   chunkSize = DEFAULT_CHUNK_SIZE): tf.Tensor {
  const dims = attentionDims(qf, kf, vAug, 'feature count M');
  return causalProducts(qf, kf, vAug, dims, chunkSize, 0, initial);
}

/**
 * The key logits a = w.k' - |k'|^2 / 2 [B, G, S, M] (k' = k sqrt(scale)), before the shift
 * and the exp of the softmax features: phi(k) = exp(a - c) + SOFTMAX_STABILIZER / sqrt(M)
 * for a shift c shared by the keys of a batch and head (favorFeatures takes c = max a +
 * log(M) / 2). A decoding cache keeps its own c as keys arrive.
 */
export function softmaxKeyLogits(k: tf.Tensor, projection: tf.Tensor, scale?: number): tf.Tensor4D {
  const [B, G, S, D] = k.shape as number[];
  checkProjection(projection, D);
  const M = projection.shape[0] as number;
  const sc = scale ?? 1 / Math.sqrt(D);
  return tf.tidy(() => {
    const x2 = tf.reshape(tf.mul(k, Math.sqrt(sc)), [B * G * S, D]);           // [B*G*S, D]
    const wx = matMul(x2, projection, false, true);                            // [B*G*S, M]
    const diag = tf.div(tf.sum(tf.square(x2), -1, true), 2);                    // [B*G*S, 1]
    return tf.reshape(tf.sub(wx, diag), [B, G, S, M]) as tf.Tensor4D;
  });
}
