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
 * Causal attention uses prefix sums of phi(k) [v, 1]^T, in chunks: inside a chunk the
 * (chunk x chunk) products are masked to the lower triangle, across chunks a running
 * [M, Dv+1] state carries the sum, so memory is O(T*M + chunk^2 + (T/chunk)*M*Dv) rather
 * than the O(T*M*Dv) of a cumulative sum over the whole sequence.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../errors';
import {assertOneOf, assertPositiveInt, assertPositiveNumber} from '../validate';
import {AttentionDims, attentionDims, groupHeads, ungroupHeads} from './heads';
import {normalizeMask} from './masks';

export const FEATURE_KERNELS = ['softmax', 'relu'] as const;
/** 'softmax': FAVOR+ positive random features; 'relu': relu(w.x') / sqrt(M) (a different kernel). */
export type FeatureKernel = typeof FEATURE_KERNELS[number];

/** Added to every softmax feature (before the 1/sqrt(M) factor), as the Performer reference does. */
export const SOFTMAX_STABILIZER = 1e-6;
/** Added to every relu feature, as the Performer reference does. */
export const RELU_STABILIZER = 1e-3;
/** Rows per chunk of the causal prefix sums. */
export const DEFAULT_CHUNK_SIZE = 128;

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
  /** Query i sees key j iff j <= i + (S - T). Default false. */
  causal?: boolean;
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
  const kernel = options.kernel ?? 'softmax';
  assertOneOf('kernel', kernel, FEATURE_KERNELS);
  assertOneOf('role', options.role, ['query', 'key'] as const);
  if (x.rank !== 4) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `x must have rank 4 ([batch, heads, length, dim]), received shape ${show(x.shape)}`);
  }
  const [B, N, L, D] = x.shape as number[];
  checkProjection(projection, D);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  assertPositiveNumber('scale', scale);
  const M = projection.shape[0] as number;
  return tf.tidy(() => {
    const xs = tf.mul(x, Math.sqrt(scale));        // [B, N, L, D]
    // relu(w.x') / sqrt(M) = relu(w.(x' / sqrt(M))): the factor goes on the small side.
    const xw = kernel === 'relu' ? tf.div(xs, Math.sqrt(M)) : xs;
    const x2 = tf.reshape(xw, [B * N * L, D]);           // [B*N*L, D]
    const wx = tf.matMul(x2, tf.transpose(projection)); // [B*N*L, M]
    if (kernel === 'relu') return tf.reshape(tf.add(tf.relu(wx), RELU_STABILIZER), [B, N, L, M]) as tf.Tensor4D;
    const diag = tf.div(tf.sum(tf.square(x2), -1, true), 2); // [B*N*L, 1]
    return positiveFeatures(wx, diag, options.role, [B, N, L, M]);
  });
}

function checkProjection(projection: tf.Tensor, D: number): void {
  if (!(projection instanceof tf.Tensor) || projection.rank !== 2 || projection.shape[1] !== D) {
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
  if (options == null || options.projection == null) {
    throw new AttentionError('INVALID_CONFIG',
      'linearAttention needs options.projection, the [numFeatures, D] random projection ' +
      '(orthogonalProjection(numFeatures, D, seed) makes one)');
  }
  const {D} = attentionDims(q, k, v);
  checkProjection(options.projection, D);
  return tf.tidy(() => {
    const feature = {kernel: options.kernel, scale: options.scale};
    const qf = favorFeatures(q, options.projection, {...feature, role: 'query'}); // [B, H, T, M]
    const kf = favorFeatures(k, options.projection, {...feature, role: 'key'});   // [B, G, S, M]
    return linearAttentionFromFeatures(qf, kf, v, options);
  });
}

/**
 * The attention step alone, for features computed elsewhere: qf [B, H, T, M],
 * kf [B, G, S, M] (non-negative), v [B, G, S, Dv]:
 *   out_i = sum_j (qf_i . kf_j) v_j / sum_j (qf_i . kf_j)
 * over the keys j that query i may see (all, or j <= i + S - T when causal, minus
 * masked keys). Returns [B, H, T, Dv].
 */
export function linearAttentionFromFeatures(qf: tf.Tensor, kf: tf.Tensor, v: tf.Tensor,
    options: {causal?: boolean; mask?: tf.Tensor | null; chunkSize?: number} = {}): tf.Tensor4D {
  const dims = attentionDims(qf, kf, v);
  const {B, H, G, T, S, Dv} = dims;
  const causal = options.causal ?? false;
  const chunk = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  assertPositiveInt('chunkSize', chunk);
  return tf.tidy(() => {
    const keep = options.mask != null ? keyKeep(options.mask, [B, H, T, S]) : null; // [Bm, 1, S, 1]
    const kfm = keep != null ? tf.mul(kf, keep) : kf;                              // [B, G, S, M]
    const vAug = tf.concat([v, tf.ones([B, G, S, 1])], 3);                          // [B, G, S, Dv+1]
    const out = causal ? causalProducts(qf, kfm, vAug, dims, chunk)
      : ungroupHeads(tf.matMul(groupHeads(qf, dims), tf.matMul(kfm, vAug, true, false)), dims, T); // [B, H, T, Dv+1]
    const num = tf.slice(out, [0, 0, 0, 0], [B, H, T, Dv]); // [B, H, T, Dv]
    let den = tf.slice(out, [0, 0, 0, Dv], [B, H, T, 1]);   // [B, H, T, 1]
    const empty = emptyRows(keep, causal, T, S);
    if (empty != null) den = tf.add(den, empty); // num is 0 there, so the row is 0
    return tf.div(num, den) as tf.Tensor4D;
  });
}

/**
 * The 0/1 float keep of each key, [Bm, 1, S, 1], from a key padding mask; throws
 * UNSUPPORTED for a mask that depends on the query or the head.
 */
function keyKeep(mask: tf.Tensor, target: [number, number, number, number]): tf.Tensor {
  const m = normalizeMask(mask, target); // [Bm, Hm, Tm, Sm]
  const [Bm, Hm, Tm, Sm] = m.shape;
  if (Hm !== 1 || Tm !== 1) {
    m.dispose();
    throw new AttentionError('UNSUPPORTED',
      `linear attention takes key padding masks only (broadcastable to [B, 1, 1, S] = ` +
      `${show([target[0], 1, 1, target[3]])}), received shape ${show(mask.shape)}: the attention ` +
      'matrix is never formed, so a mask that differs per query or per head cannot be applied');
  }
  return tf.tidy(() => tf.reshape(tf.cast(m, 'float32'), [Bm, 1, Sm, 1])); // [Bm, 1, S|1, 1]
}

/**
 * 1 for the query rows that see no key, else 0, as [Bm|1, 1, T|1, 1]; null when every
 * row sees a key. Built from the mask alone (never from differentiated tensors).
 */
function emptyRows(keep: tf.Tensor | null, causal: boolean, T: number, S: number): tf.Tensor | null {
  const offset = S - T;
  if (keep == null && (!causal || offset >= 0)) return null;
  const k = keep != null ? tf.broadcastTo(keep, [keep.shape[0], 1, S, 1]) : tf.ones([1, 1, S, 1]); // [Bm, 1, S, 1]
  if (!causal) return tf.cast(tf.equal(tf.sum(k, 2, true), 0), 'float32'); // [Bm, 1, 1, 1]
  // Query i sees the keys j <= i + offset: count them with a cumulative sum.
  const seen = tf.cumsum(k, 2); // [Bm, 1, S, 1]
  const counts = offset >= 0
    ? tf.slice(seen, [0, 0, offset, 0], [-1, 1, T, 1])
    : tf.concat([tf.zeros([seen.shape[0], 1, -offset, 1]), seen], 2); // [Bm, 1, T, 1]
  return tf.cast(tf.equal(counts, 0), 'float32');
}

/** [R*n, n] 0/1: grouped row r*n + i may see column j iff j <= i. */
function lowerTriangle(R: number, n: number): tf.Tensor2D {
  const data = new Float32Array(R * n * n);
  for (let r = 0; r < R; r++) {
    for (let i = 0; i < n; i++) data.fill(1, (r * n + i) * n, (r * n + i) * n + i + 1);
  }
  return tf.tensor2d(data, [R * n, n]);
}

/**
 * Causal numerator and denominator, [B, H, T, Dv+1], by chunked prefix sums: query i
 * sees keys j <= i + offset, offset = S - T. Keys before the first query's diagonal
 * (offset > 0) start the running state; queries before the first key (offset < 0) get 0.
 */
function causalProducts(qf: tf.Tensor, kf: tf.Tensor, vAug: tf.Tensor, dims: AttentionDims, chunk: number): tf.Tensor {
  const {B, H, G, R, T, S} = dims;
  const M = qf.shape[3] as number;
  const X = vAug.shape[3] as number; // Dv + 1
  const offset = S - T;
  const outs: tf.Tensor[] = [];
  let state: tf.Tensor | null = null; // [B, G, M, X]: sum of kf_j^T [v_j, 1] over the keys seen so far
  let qa = qf;
  let ka = kf;
  let va = vAug;
  if (offset > 0) {
    state = tf.matMul(tf.slice(kf, [0, 0, 0, 0], [B, G, offset, M]), tf.slice(vAug, [0, 0, 0, 0], [B, G, offset, X]),
      true, false);                                                      // [B, G, M, X]
    ka = tf.slice(kf, [0, 0, offset, 0], [B, G, T, M]);                  // [B, G, T, M]
    va = tf.slice(vAug, [0, 0, offset, 0], [B, G, T, X]);                // [B, G, T, X]
  } else if (offset < 0) {
    outs.push(tf.zeros([B, H, -offset, X]));                             // rows that see no key
    qa = tf.slice(qf, [0, 0, -offset, 0], [B, H, S, M]);                 // [B, H, S, M]
  }
  const L = qa.shape[2] as number; // the aligned length: query r sees keys 0..r of ka
  // Chunks by one split per tensor, not a slice per chunk: the gradient of a slice is a
  // zero-padded full-size tensor, and autograd keeps every one of them until the end.
  const sizes: number[] = [];
  for (let c0 = 0; c0 < L; c0 += chunk) sizes.push(Math.min(chunk, L - c0));
  // (A split into one piece has a broken gradient in tfjs 4.22: keep the tensor whole.)
  const pieces = (x: tf.Tensor) => (sizes.length === 1 ? [x] : tf.split(x, sizes, 2));
  const qs = pieces(qa); // [B, H, n, M] each
  const ks = pieces(ka); // [B, G, n, M] each
  const vs = pieces(va); // [B, G, n, X] each
  const triangles = new Map<number, tf.Tensor>();
  sizes.forEach((n, c) => {
    if (!triangles.has(n)) triangles.set(n, lowerTriangle(R, n));
    const next: {o: tf.Tensor; s: tf.Tensor} = tf.tidy(() => {
      const qc = groupHeads(qs[c], {...dims, T: n}); // [B, G, R*n, M]
      const kc = ks[c];
      const vc = vs[c];
      // Within the chunk: the masked (R*n x n) products; across chunks: the running state.
      const a = tf.mul(tf.matMul(qc, kc, false, true), triangles.get(n)!);            // [B, G, R*n, n]
      let o = tf.matMul(a, vc);                                                         // [B, G, R*n, X]
      if (state != null) o = tf.add(o, tf.matMul(qc, state));
      const update = tf.matMul(kc, vc, true, false);                                    // [B, G, M, X]
      return {o: ungroupHeads(o, dims, n), s: state != null ? tf.add(state, update) : update}; // o [B, H, n, X]
    });
    if (state != null) state.dispose();
    state = next.s;
    outs.push(next.o);
  });
  const out = outs.length === 1 ? outs[0] : tf.concat(outs, 2); // [B, H, T, X]
  return out;
}
