/**
 * Causal linear attention by chunked prefix sums, plain autograd over tf ops (what
 * linearAttentionFromFeatures and the decoding step run on features computed elsewhere):
 * inside a chunk the (chunk x chunk) products masked to the lower triangle, across chunks an
 * exclusive cumulative sum of the per-chunk [M, Dv+1] sums, so memory is
 * O(T*M + (T/chunk)*M*Dv) rather than the O(T*M*Dv) of a cumulative sum over every row.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionDims, assertFits, attentionDims, groupHeads, repeatHeads, ungroupHeads} from './heads';
import {matMul} from './matmul';

/**
 * Rows per chunk of the causal prefix sums, for linearAttention, linearAttentionFromFeatures
 * and the decoding step alike. 64 and 128 tied for linearAttention on wasm; 64 is kept since
 * the chunked prefix sums of the other two ran faster with it, and an [M, Dv+1] state per
 * chunk stays below the size of the chunk's features only for Dv < 64.
 */
export const DEFAULT_CHUNK_SIZE = 64;

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
export function emptyRows(keep: tf.Tensor | null, offset: number | null, T: number, S: number): tf.Tensor | null {
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
export function causalProducts(qf: tf.Tensor, kf: tf.Tensor, vAug: tf.Tensor, dims: AttentionDims, chunk: number,
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
