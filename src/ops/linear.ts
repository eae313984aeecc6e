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
 * linearAttention is one custom gradient from q, k, v and the projection that saves only
 * them, its output and its inverse denominators ([B, H, T, 1]): no features are kept between the
 * passes, the backward pass recomputes them. It works per unit (one batch entry and key/value
 * group, the group's query heads stacked along rows, so every product is a plain 2-D one; all
 * of them at once on backends whose batched products are fast) and per chunk of queries:
 * causal attention carries one running [M, Dv+1] state of phi(k)^T [v, 1] over the keys
 * before each chunk, forward (the output, dq) and backward (a running sum of phi(q)^T g for
 * dk, dv), with masked (chunk x chunk) products for the chunk's own keys. So beyond its inputs
 * and outputs a call holds the features of one unit's keys (and, in the backward pass, of its
 * queries) and a few [chunk, M] pieces: memory linear in T, on wasm 1.5-2.4x the floor
 * of the eight [B, H, T, D] tensors of forward+backward (src/bench/heap.ts).
 *
 * linearAttentionFromFeatures (features computed elsewhere) stays plain autograd over tf ops:
 * causal prefix sums over chunks, inside a chunk the (chunk x chunk) products masked to the
 * lower triangle, across chunks an exclusive cumulative sum of the per-chunk [M, Dv+1] sums,
 * so its memory is O(T*M + (T/chunk)*M*Dv) rather than the O(T*M*Dv) of a cumulative sum
 * over every row.
 */
import * as tf from '@tensorflow/tfjs';
import {matMul, swapLast, unitsAtOnce} from './matmul';
import {noProbabilities, OP_NAMES} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {assertOneOf, assertPositiveInt, assertPositiveNumber, checkArgNames, ForeignName} from '../core/validate';
import {AttentionDims, assertFits, attentionDims, groupHeads, isEmptyAttention, repeatHeads, ungroupHeads, zeroAttention} from './heads';
import {CausalArg, causalAlignment, causalOffset, keyPaddingKeep} from './masks';
import {then} from './tiled';
import {zerosWithZeroGrads} from './zeros';

export const FEATURE_KERNELS = ['softmax', 'relu'] as const;
/** 'softmax': FAVOR+ positive random features; 'relu': relu(w.x') / sqrt(M) (a different kernel). */
export type FeatureKernel = typeof FEATURE_KERNELS[number];

/** Added to every softmax feature (before the 1/sqrt(M) factor), as the Performer reference does. */
export const SOFTMAX_STABILIZER = 1e-6;
/** Added to every relu feature, as the Performer reference does. */
export const RELU_STABILIZER = 1e-3;
/**
 * Rows per chunk of the causal prefix sums. Measured on wasm (causal forward+backward of
 * linearAttention, B=1, H=4, T=4096, D=64, M=266, median of 7, interleaved): chunks of
 * 32/64/128/256 rows took 1.29/1.05/1.03/1.18 s (64 and 128 also tie at T=1024 and 256), the
 * heap the same 2.1x its floor for all four. 64 stays: linearAttentionFromFeatures and the
 * decoding step share this default, and their chunked prefix sums measured slower with 128
 * (5.7 s against 4.6 s), with an [M, Dv+1] state per chunk that stays below the features'
 * size only for Dv < 64.
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

// ---------------------------------------------------------------------------------------
// linearAttention's engine: one custom gradient from q, k, v and the projection, worked
// per unit and per chunk, that saves no features and recomputes them in the backward pass.

/**
 * Queries [t0, t0 + nq) of a chunk and their key block [s0, s0 + nb): query t0 + a sees
 * every key before s0 (the state) and block key s0 + b iff b - a <= d.
 */
interface Chunk {t0: number; nq: number; s0: number; nb: number; d: number}

/**
 * Query rows per chunk when not causal (the features of one chunk exist at a time). Measured
 * on wasm (B=1, H=4, T=4096, D=64, M=266, forward+backward): 256/512/1024/all 4096 rows took
 * the same time within noise; the heap grew 2.1x the floor with 512 rows, 2.6x with all rows.
 */
const QUERY_PIECE = 512;

interface FavorPlan extends AttentionDims {
  M: number;
  kernel: FeatureKernel;
  scale: number;
  /** Keys [0, first) start every state: all keys when not causal. */
  first: number;
  /** The query chunks in order; their key blocks tile [first, end of the last block). */
  chunks: Chunk[];
}

/**
 * The chunks of a call. Not causal: pieces of QUERY_PIECE queries over a state of all keys
 * and no block. Causal (query i sees key j iff j <= i + offset): chunks of `chunk` queries,
 * the block of [t0, t0 + nq) being keys clamp([t0 + offset, t0 + nq + offset), 0, S).
 */
function favorPlan(dims: AttentionDims, M: number, kernel: FeatureKernel, scale: number, offset: number | null,
                   chunk: number): FavorPlan {
  const {T, S} = dims;
  const chunks: Chunk[] = [];
  if (offset == null) {
    for (let t0 = 0; t0 < T; t0 += QUERY_PIECE) chunks.push({t0, nq: Math.min(QUERY_PIECE, T - t0), s0: S, nb: 0, d: 0});
    return {...dims, M, kernel, scale, first: S, chunks};
  }
  const clamp = (x: number) => Math.min(Math.max(x, 0), S);
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const nq = Math.min(chunk, T - t0);
    const s0 = clamp(t0 + offset);
    chunks.push({t0, nq, s0, nb: clamp(t0 + nq + offset) - s0, d: t0 + offset - s0});
  }
  return {...dims, M, kernel, scale, first: clamp(offset), chunks};
}

/** The (batch, group) pairs [i, i + N) worked at once. */
interface Unit {i: number; N: number}

/**
 * Elements of a unit's largest intermediate (its key features, a chunk's query features or
 * products) that a batch of units may hold on wasm (2 MiB of float32): long sequences go one
 * unit at a time, short ones together.
 */
export const LINEAR_UNIT_ELEMENTS = 2 ** 19;

/** Runs of consecutive pairs as `unitsAtOnce` allows: single pairs where products are split, all B*G elsewhere. */
function favorUnits(p: FavorPlan): Unit[] {
  const total = p.B * p.G;
  const rows = Math.max(1, ...p.chunks.map((c) => c.nq));
  const cols = Math.max(1, ...p.chunks.map((c) => c.nb));
  const n = unitsAtOnce(total, Math.max(p.S * p.M, p.R * rows * p.M, p.R * rows * cols), LINEAR_UNIT_ELEMENTS);
  const out: Unit[] = [];
  for (let i = 0; i < total; i += n) out.push({i, N: Math.min(n, total - i)});
  return out;
}

/** a [N, m, k] times b [N, k, n], or times b [k, n] for every N: plain 2-D products for one unit, batched for all. */
function mm(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [N, m, k] = a.shape as number[];
  if (b.rank === 3 && N > 1) return matMul(a, b);
  const n = b.shape[b.rank - 1] as number;
  // Every view disposed here: a view keeps its buffer alive until the enclosing tidy ends.
  const a2 = tf.reshape(a, [N * m, k]);                       // [N*m, k]
  const b2 = b.rank === 2 ? b : tf.reshape(b, [k, n]);        // [k, n]
  const c = tf.matMul(a2, b2);
  tf.dispose(b2 === b ? [a2] : [a2, b2]);
  return then(c, (x) => tf.reshape(x, [N, m, n]));            // [N, m, n]
}

/** Concatenates parts along `axis` and disposes them. */
function joined(parts: tf.Tensor[], axis: number): tf.Tensor {
  if (parts.length === 1) return parts[0];
  const out = tf.concat(parts, axis);
  tf.dispose(parts);
  return out;
}

/** Columns [c0, c0 + n) of x [N, L, C]. */
function colsOf(x: tf.Tensor, c0: number, n: number): tf.Tensor {
  const [N, L] = x.shape as number[];
  return tf.slice(x, [0, 0, c0], [N, L, n]);
}

/** Rows [s0, s0 + n) of a small x [N, L, C] (a key keep). */
function rowsOf(x: tf.Tensor, s0: number, n: number): tf.Tensor {
  const [N, , C] = x.shape as number[];
  return tf.slice(x, [0, s0, 0], [N, n, C]);
}

/**
 * A [B*G, R*L, C] tensor (the R query heads of a group stacked along rows; R = 1 for keys)
 * to cut into pieces of rows. (On wasm the library's Slice kernel reads the heap in place, so
 * a piece costs its own size, not the source's: see wasm_kernels.ts.)
 */
interface Rows {x: tf.Tensor; R: number}

function rowsSource(x3: tf.Tensor, R: number): Rows {
  return {x: x3, R};
}

/** Rows [start, start + n) of each of the R heads of the unit: [N, R*n, C]. */
function cut(s: Rows, u: Unit, start: number, n: number): tf.Tensor {
  const [U, RL, C] = s.x.shape as number[];
  const L = RL / s.R;
  if (u.N === U && start === 0 && n === L) return tf.reshape(s.x, s.x.shape); // a view (tf.clone copies on wasm)
  const x4 = tf.reshape(s.x, [U, s.R, L, C]);                                    // [U, R, L, C]
  const piece = tf.slice(x4, [u.i, 0, start, 0], [u.N, s.R, n, C]);               // [N, R, n, C]
  x4.dispose();
  return then(piece, (t) => tf.reshape(t, [u.N, s.R * n, C]));                    // [N, R*n, C]
}

/** The key keep of the unit, [N or 1, S, 1], from keep [Bm, S]; null without a mask. */
function keepOf(p: FavorPlan, u: Unit, keep: tf.Tensor | null): tf.Tensor | null {
  if (keep == null) return null;
  const {B, G, S} = p;
  if (keep.shape[0] === 1) return tf.reshape(keep, [1, S, 1]);
  if (u.N === 1) return tf.reshape(tf.slice(keep, [Math.floor(u.i / G), 0], [1, S]), [1, S, 1]);
  const all = tf.reshape(tf.broadcastTo(tf.reshape(keep, [B, 1, S]), [B, G, S]), [B * G, S, 1]); // [B*G, S, 1]
  return u.N === B * G ? all : then(all, (t) => tf.slice(t, [u.i, 0, 0], [u.N, S, 1]));
}

/** The chunk masks of a plan by shape: [nq, nb] and its transpose as [nb, 1, nq], 0/1. */
function chunkMasks(p: FavorPlan): Map<string, tf.Tensor[]> {
  const masks = new Map<string, tf.Tensor[]>();
  for (const {nq, nb, d} of p.chunks) {
    const key = `${nq},${nb},${d}`;
    if (nb === 0 || masks.has(key)) continue;
    const m = new Float32Array(nq * nb);
    const mT = new Float32Array(nq * nb);
    for (let a = 0; a < nq; a++) {
      for (let b = 0; b < nb && b - a <= d; b++) {
        m[a * nb + b] = 1;
        mT[b * nq + a] = 1;
      }
    }
    masks.set(key, [tf.tensor2d(m, [nq, nb]), tf.tensor3d(mT, [nb, 1, nq])]);
  }
  return masks;
}

const maskOf = (masks: Map<string, tf.Tensor[]>, c: Chunk) => masks.get(`${c.nq},${c.nb},${c.d}`)!;

/** s [N, R*nq, nb] (each head's query rows against the block) times the mask [nq, nb]. */
function maskRows(p: FavorPlan, s: tf.Tensor, mask: tf.Tensor): tf.Tensor {
  const [N, rows, nb] = s.shape as number[];
  const m = then(then(s, (x) => tf.reshape(x, [N, p.R, rows / p.R, nb])), (x) => tf.mul(x, mask)); // [N, R, nq, nb]
  return then(m, (x) => tf.reshape(x, [N, rows, nb]));
}

/** sT [N, nb, R*nq] (the block against each head's query rows) times the transposed mask [nb, 1, nq]. */
function maskCols(p: FavorPlan, sT: tf.Tensor, maskT: tf.Tensor): tf.Tensor {
  const [N, nb, cols] = sT.shape as number[];
  const m = then(then(sT, (x) => tf.reshape(x, [N, nb, p.R, cols / p.R])), (x) => tf.mul(x, maskT)); // [N, nb, R, nq]
  return then(m, (x) => tf.reshape(x, [N, nb, cols]));
}

/** x [N, L, D] scaled: the rows xw that multiply the projection (with relu's 1 / sqrt(M) on this small side). */
function scaledRows(p: FavorPlan, x: tf.Tensor): tf.Tensor {
  const xs = tf.mul(x, Math.sqrt(p.scale));                                         // [N, L, D]
  return p.kernel === 'relu' ? then(xs, (t) => tf.div(t, Math.sqrt(p.M))) : xs;
}

/**
 * The softmax shift of key rows xw [N, L, D] with logits wx [N, L, M]: the max over all
 * their rows and features of w.k' - |k'|^2 / 2, plus log(M) / 2 (the 1 / sqrt(M) factor),
 * as [N, 1, 1], taken row by row.
 */
function keyShiftOf(p: FavorPlan, xw: tf.Tensor, wx: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const diag = tf.div(tf.sum(tf.square(xw), -1, true), 2);                        // [N, L, 1]
    return tf.add(tf.max(tf.sub(tf.max(wx, -1, true), diag), 1, true), 0.5 * Math.log(p.M)); // [N, 1, 1]
  });
}

/**
 * The features phi [N, L, M] of rows x [N, L, D] and xw [N, L, D], the scaled rows that
 * multiply the projection (PT = projection^T [D, M]): favorFeatures' math. The softmax
 * shift: 'row' for queries, each row's max (a row's |x'|^2 / 2 cancels in it); for keys,
 * 'all' when x holds all the unit's keys, else the unit's key shift [N, 1, 1]. Keys are
 * multiplied by their keep [N or 1, L, 1] when given.
 */
function features(p: FavorPlan, x: tf.Tensor, PT: tf.Tensor, shift: 'row' | 'all' | tf.Tensor,
                  keep: tf.Tensor | null): {phi: tf.Tensor; xw: tf.Tensor} {
  return tf.tidy(() => {
    const xw = scaledRows(p, x);                                                    // [N, L, D]
    const wx = mm(xw, PT);                                                          // [N, L, M]
    let phi: tf.Tensor;
    if (p.kernel === 'relu') {
      phi = then(then(wx, tf.relu), (t) => tf.add(t, RELU_STABILIZER));
    } else {
      const rows = shift === 'row' ? tf.add(tf.max(wx, -1, true), 0.5 * Math.log(p.M))   // [N, L, 1]
        : tf.add(tf.div(tf.sum(tf.square(xw), -1, true), 2), shift === 'all' ? keyShiftOf(p, xw, wx) : shift);
      const floor = SOFTMAX_STABILIZER / Math.sqrt(p.M);
      phi = then(then(then(wx, (t) => tf.sub(t, rows)), tf.exp), (t) => tf.add(t, floor));
    }
    if (keep != null) phi = then(phi, (t) => tf.mul(t, keep));
    return {phi, xw};
  });
}

/**
 * Back through `features`, the shift a constant: dx [N, L, D] and the rows' share of
 * d projection^T [D, M], from dphi [N, L, M] (disposed), the features phi and the scaled rows xw:
 *   softmax: d wx = dphi * (phi - eps / sqrt(M)),  d xw = d wx P - rowsum(d wx) * xw;
 *   relu:    d wx = dphi * (wx > 0),               d xw = d wx P;
 * and d P^T = xw^T d wx. (Masked keys have dphi = 0, so a phi multiplied by keep serves.)
 */
function featureGrad(p: FavorPlan, dphi: tf.Tensor, phi: tf.Tensor, xw: tf.Tensor,
                     P: tf.Tensor): {dx: tf.Tensor; dPT: tf.Tensor} {
  return tf.tidy(() => {
    const [N, L, D] = xw.shape as number[];
    // wx > 0 read from the features: relu(wx) + eps > eps (they differ only for wx below an ulp of eps).
    const factor = p.kernel === 'relu' ? tf.cast(tf.greater(phi, RELU_STABILIZER), 'float32')
      : tf.sub(phi, SOFTMAX_STABILIZER / Math.sqrt(p.M));
    const dwx = tf.mul(dphi, factor);                                              // [N, L, M]
    tf.dispose([dphi, factor]);
    let dxw = mm(dwx, P);                                                           // [N, L, D]
    if (p.kernel === 'softmax') dxw = tf.sub(dxw, tf.mul(tf.sum(dwx, -1, true), xw));
    const xT = tf.transpose(tf.reshape(xw, [N * L, D]));                            // [D, N*L]
    const dPT = tf.matMul(xT, tf.reshape(dwx, [N * L, p.M]));                       // [D, M]
    const c = Math.sqrt(p.scale) / (p.kernel === 'relu' ? Math.sqrt(p.M) : 1);
    return {dx: tf.mul(dxw, c), dPT};
  });
}

/** What a unit's passes read: the row sources and the per-call constants. */
interface UnitInputs {
  q: Rows; k: Rows; v: Rows;
  /** projection^T [D, M] and projection [M, D]. */
  PT: tf.Tensor; P: tf.Tensor;
  masks: Map<string, tf.Tensor[]>;
}

/** Features, scaled rows and [v, 1] of the unit's keys [s0, s0 + n) (shift: unitShift's): kf [N, n, M], xk [N, n, D], va [N, n, X]. */
function keyRows(p: FavorPlan, u: Unit, inp: UnitInputs, shift: tf.Tensor | null, keep: tf.Tensor | null,
                 s0: number, n: number): tf.Tensor[] {
  return tf.tidy(() => {
    const {phi, xw} = features(p, cut(inp.k, u, s0, n), inp.PT, shift ?? 'all', keep != null ? rowsOf(keep, s0, n) : null);
    return [phi, xw, tf.concat([cut(inp.v, u, s0, n), tf.ones([u.N, n, 1])], 2)];
  });
}

/**
 * The unit's softmax key shift [N, 1, 1], for keys taken in pieces; null where the keys come
 * in one piece (not causal), whose features take it themselves, and for relu, which has none.
 */
function unitShift(p: FavorPlan, u: Unit, inp: UnitInputs): tf.Tensor | null {
  if (p.kernel === 'relu' || p.first === p.S) return null;
  return tf.tidy(() => {
    const xw = scaledRows(p, cut(inp.k, u, 0, p.S));                                 // [N, S, D]
    return keyShiftOf(p, xw, mm(xw, inp.PT));
  });
}

/**
 * The unit's output [N, R*T, Dv] and inverse denominators [N, R*T, 1] (0 for rows that see
 * no key). Per chunk c, with the state S_c = sum of kf^T [v, 1] over the keys before its block:
 *   out_c = qf_c S_c + (mask ⊙ qf_c kf_blk^T) [v, 1]_blk,   then S_{c+1} = S_c + kf_blk^T [v, 1]_blk.
 * One state at a time; the features of one chunk and one block at a time.
 */
function unitForward(p: FavorPlan, u: Unit, inp: UnitInputs, keep: tf.Tensor | null): tf.Tensor[] {
  const {N} = u;
  const {R, Dv, M} = p;
  const shift = unitShift(p, u, inp);
  let state = p.first === 0 ? tf.zeros([N, M, Dv + 1]) : tf.tidy(() => {           // [N, M, X]
    const [kf, , va] = keyRows(p, u, inp, shift, keep, 0, p.first);
    return swapLast(mm(swapLast(va), kf));
  });
  const outs: tf.Tensor[] = [];
  const invs: tf.Tensor[] = [];
  for (const c of p.chunks) {
    const next = tf.tidy(() => {
      const qc = features(p, cut(inp.q, u, c.t0, c.nq), inp.PT, 'row', null).phi;   // [N, R*nq, M]
      let acc = mm(qc, state);                                                      // [N, R*nq, X]
      let grown = state;
      if (c.nb > 0) {
        const [kb, , vb] = keyRows(p, u, inp, shift, keep, c.s0, c.nb);            // [N, nb, M], [N, nb, X]
        const kbT = swapLast(kb);                                                   // [N, M, nb]
        const a = maskRows(p, mm(qc, kbT), maskOf(inp.masks, c)[0]);                // [N, R*nq, nb]
        acc = tf.add(acc, mm(a, vb));
        grown = tf.add(state, mm(kbT, vb));
      }
      const den = colsOf(acc, Dv, 1);                                               // [N, R*nq, 1]
      const inv = tf.where(tf.greater(den, 0), tf.div(1, den), tf.zerosLike(den));  // rows that see no key: 0
      const out = tf.mul(colsOf(acc, 0, Dv), inv);                                  // [N, R*nq, Dv]
      return {out: tf.reshape(out, [N, R, c.nq, Dv]), inv: tf.reshape(inv, [N, R, c.nq, 1]), state: grown};
    });
    if (next.state !== state) state.dispose();
    state = next.state;
    outs.push(next.out);
    invs.push(next.inv);
  }
  tf.dispose([state, ...(shift != null ? [shift] : [])]);
  const out = then(joined(outs, 2), (x) => tf.reshape(x, [N, R * p.T, Dv]));       // [N, R*T, Dv]
  const inv = then(joined(invs, 2), (x) => tf.reshape(x, [N, R * p.T, 1]));        // [N, R*T, 1]
  return [out, inv];
}

/**
 * The unit's dq [N, R*T, D], dk [N, S, D], dv [N, S, Dv] and d projection^T [D, M], from
 * the features recomputed and g = d out_aug = [dO / den, -rowsum(dO * out) / den]:
 *   1. forward over the chunks (the state S_c as in the forward pass):
 *      dqf_c = g_c S_c^T + (mask ⊙ g_c [v, 1]_blk^T) kf_blk, and on to dq_c at once;
 *   2. backward over the chunks, dS = sum of qf^T g over the later chunks (before adding c's own):
 *      dkf_blk = [v, 1]_blk dS^T + (mask ⊙ g_c [v, 1]_blk^T)^T qf_c,
 *      d[v, 1]_blk = kf_blk dS + (mask ⊙ qf_c kf_blk^T)^T g_c;
 *   3. the keys before the first block (seen by every query): [v, 1] dS^T and kf dS;
 *   4. zeros for the keys no query sees.
 * States are carried transposed ([N, X, M]) so every product is a plain one. The features
 * of step 1 are kept for step 2 and freed chunk by chunk there.
 */
function unitBackward(p: FavorPlan, u: Unit, inp: UnitInputs, grad: {dO: Rows; out: Rows; inv: Rows},
                      keep: tf.Tensor | null): tf.Tensor[] {
  const {N} = u;
  const {R, T, S, D, Dv, M} = p;
  const X = Dv + 1;
  const shift = unitShift(p, u, inp);
  let dPT = tf.zeros([D, M]);
  // 1. dq, chunk by chunk, through the state S_c^T.
  const prefix = p.first > 0 ? keyRows(p, u, inp, shift, keep, 0, p.first) : null;  // kf, xk, va
  let state = prefix == null ? tf.zeros([N, X, M]) : tf.tidy(() => mm(swapLast(prefix[2]), prefix[0])); // [N, X, M]
  const held: tf.Tensor[][] = [];  // per chunk: qf, xq, g and, with a block, its kf, xk, va
  const dqs: tf.Tensor[] = [];
  for (const c of p.chunks) {
    const next = tf.tidy(() => {
      const {phi: qc, xw: xq} = features(p, cut(inp.q, u, c.t0, c.nq), inp.PT, 'row', null); // [N, R*nq, M], [N, R*nq, D]
      const dO = cut(grad.dO, u, c.t0, c.nq);                                       // [N, R*nq, Dv]
      const inv = cut(grad.inv, u, c.t0, c.nq);                                     // [N, R*nq, 1]
      const dDen = tf.neg(tf.mul(tf.sum(tf.mul(dO, cut(grad.out, u, c.t0, c.nq)), -1, true), inv));
      const gc = tf.concat([tf.mul(dO, inv), dDen], 2);                             // [N, R*nq, X], 0 on rows that see no key
      let dqf = mm(gc, state);                                                      // [N, R*nq, M]
      let grown = state;
      const block = c.nb > 0 ? keyRows(p, u, inp, shift, keep, c.s0, c.nb) : [];
      if (c.nb > 0) {
        const [kb, , vb] = block;                                                   // [N, nb, M], [N, nb, X]
        const vbT = swapLast(vb);                                                   // [N, X, nb]
        const a = maskRows(p, mm(gc, vbT), maskOf(inp.masks, c)[0]);                // [N, R*nq, nb]
        dqf = tf.add(dqf, mm(a, kb));
        grown = tf.add(state, mm(vbT, kb));
      }
      const {dx, dPT: share} = featureGrad(p, dqf, qc, xq, inp.P);
      return {dq: tf.reshape(dx, [N, R, c.nq, D]), dPT: tf.add(dPT, share), state: grown, keep: [qc, xq, gc, ...block]};
    });
    if (next.state !== state) state.dispose();
    dPT.dispose();
    ({state, dPT} = next);
    dqs.push(next.dq);
    held.push(next.keep);
  }
  state.dispose();
  // 2. dk, dv of each block, from the last chunk back, through dS^T.
  let dS = tf.zeros([N, X, M]);                                                     // [N, X, M]
  const dks: tf.Tensor[] = [];
  const dvs: tf.Tensor[] = [];
  for (let ci = p.chunks.length - 1; ci >= 0; ci--) {
    const c = p.chunks[ci];
    const next = tf.tidy(() => {
      const [qc, , gc, kb, xb, vb] = held[ci];
      const gcT = swapLast(gc);                                                     // [N, X, R*nq]
      const block: tf.Tensor[] = []; // dk, dv of the block, when it has keys
      let dPTNext = dPT;
      if (c.nb > 0) {
        const [mask, maskT] = maskOf(inp.masks, c);
        const aT = maskCols(p, mm(vb, gcT), maskT);                                 // [N, nb, R*nq]
        let dkf = tf.add(mm(vb, dS), mm(aT, qc));                                   // [N, nb, M]
        const bT = swapLast(maskRows(p, mm(qc, swapLast(kb)), mask));               // [N, nb, R*nq]
        const dva = tf.add(mm(kb, swapLast(dS)), mm(bT, gc));                       // [N, nb, X]
        if (keep != null) dkf = tf.mul(dkf, rowsOf(keep, c.s0, c.nb));
        const {dx, dPT: share} = featureGrad(p, dkf, kb, xb, inp.P);
        block.push(dx, colsOf(dva, 0, Dv));                                         // [N, nb, D], [N, nb, Dv]
        dPTNext = tf.add(dPT, share);
      }
      return {block, dPT: dPTNext, dS: tf.add(dS, mm(gcT, qc))};
    });
    tf.dispose(held[ci]);
    if (next.dPT !== dPT) dPT.dispose();
    dS.dispose();
    ({dS, dPT} = next);
    if (next.block.length > 0) {
      dks.unshift(next.block[0]);
      dvs.unshift(next.block[1]);
    }
  }
  // 3. The keys every query sees.
  if (prefix != null) {
    const next = tf.tidy(() => {
      const [kp, xp, vp] = prefix;                                                  // [N, first, M], [N, first, D], [N, first, X]
      let dkf = mm(vp, dS);                                                         // [N, first, M]
      const dva = mm(kp, swapLast(dS));                                             // [N, first, X]
      if (keep != null) dkf = tf.mul(dkf, rowsOf(keep, 0, p.first));
      const {dx, dPT: share} = featureGrad(p, dkf, kp, xp, inp.P);
      return {dk: dx, dv: colsOf(dva, 0, Dv), dPT: tf.add(dPT, share)};
    });
    tf.dispose([dPT, ...prefix]);
    dPT = next.dPT;
    dks.unshift(next.dk);
    dvs.unshift(next.dv);
  }
  tf.dispose([dS, ...(shift != null ? [shift] : [])]);
  // 4. The keys no query sees.
  const seen = dks.reduce((n, t) => n + (t.shape[1] as number), 0);
  if (seen < S) {
    dks.push(tf.zeros([N, S - seen, D]));
    dvs.push(tf.zeros([N, S - seen, Dv]));
  }
  const dq = then(joined(dqs, 2), (x) => tf.reshape(x, [N, R * T, D]));            // [N, R*T, D]
  return [dq, joined(dks, 1), joined(dvs, 1), dPT];
}

/**
 * linearAttention's result for a plan: one tf.customGrad over q, k, v, the projection (and
 * the key keep [Bm, S]) that saves only its inputs, the output and the inverse
 * denominators [B*G, R*T, 1], never the features.
 */
function favorAttention(p: FavorPlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, projection: tf.Tensor,
                        keep: tf.Tensor | null): tf.Tensor4D {
  const {B, H, G, R, T, S, D, Dv} = p;
  // [B, H, T, C] -> [B*G, R*T, C]: the R query heads of a group stacked along rows.
  const inputs = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, P: tf.Tensor): UnitInputs => ({
    q: rowsSource(tf.reshape(a, [B * G, R * T, D]), R), k: rowsSource(tf.reshape(b, [B * G, S, D]), 1),
    v: rowsSource(tf.reshape(c, [B * G, S, Dv]), 1), PT: tf.transpose(P), P, masks: chunkMasks(p),
  });
  const release = (inp: UnitInputs, ...more: Rows[]) =>
    tf.dispose([inp.q.x, inp.k.x, inp.v.x, inp.PT, ...more.map((s) => s.x), ...[...inp.masks.values()].flat()]);
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [a, b, c, P, kp] = args.slice(0, -1) as tf.Tensor[];
    const inp = inputs(a, b, c, P);
    const outs: tf.Tensor[] = [];
    const invs: tf.Tensor[] = [];
    for (const u of favorUnits(p)) {
      const [out, inv] = tf.tidy(() => unitForward(p, u, inp, keepOf(p, u, kp ?? null)));
      outs.push(out);
      invs.push(inv);
    }
    release(inp);
    const out = then(joined(outs, 0), (x) => tf.reshape(x, [B, H, T, Dv]));        // [B, H, T, Dv]
    const inv = joined(invs, 0);                                                    // [B*G, R*T, 1]
    save([a, b, c, P, out, inv, ...(kp != null ? [kp] : [])]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sP, sOut, sInv, sKeep] = saved;
        const inp2 = inputs(sq, sk, sv, sP);
        const grad = {
          dO: rowsSource(tf.reshape(dy, [B * G, R * T, Dv]), R), out: rowsSource(tf.reshape(sOut, [B * G, R * T, Dv]), R),
          inv: rowsSource(tf.reshape(sInv, sInv.shape), R),
        };
        const parts: tf.Tensor[][] = [[], [], []];
        let dPT: tf.Tensor | null = null;
        for (const u of favorUnits(p)) {
          const [dq, dk, dv, share] = tf.tidy(() => unitBackward(p, u, inp2, grad, keepOf(p, u, sKeep ?? null)));
          [dq, dk, dv].forEach((t, i) => parts[i].push(t));
          dPT = dPT == null ? share : then(share, (x) => tf.add(dPT!, x));
        }
        release(inp2, grad.dO, grad.out, grad.inv);
        const dP = then(dPT!, (x) => tf.transpose(x));                              // [M, D]
        const dq = then(joined(parts[0], 0), (x) => tf.reshape(x, [B, H, T, D]));   // [B, H, T, D]
        const dk = then(joined(parts[1], 0), (x) => tf.reshape(x, [B, G, S, D]));   // [B, G, S, D]
        const dv = then(joined(parts[2], 0), (x) => tf.reshape(x, [B, G, S, Dv]));  // [B, G, S, Dv]
        return sKeep != null ? [dq, dk, dv, dP, tf.zerosLike(sKeep)] : [dq, dk, dv, dP];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(...(keep != null ? [q, k, v, projection, keep] : [q, k, v, projection])) as tf.Tensor4D;
}
