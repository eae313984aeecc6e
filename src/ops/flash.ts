/**
 * FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023): exact attention computed
 * in tiles with an online softmax, so the T x S score matrix is never held, neither in
 * the forward pass nor in the backward pass.
 *
 * Built with tf.customGrad: the forward keeps only the output O and the per-row
 * logsumexp L = M + log(l), held as its two parts (the row max M and log l) because at
 * logits of 1e4 a float32 sum M + log(l) would lose ~1e-3 of the exponent; the backward
 * recomputes each tile's probabilities as exp((S - M) - log l). Peak tensor
 * memory is O(T*D + blockSize^2) per batch-head instead of O(T*S).
 *
 * Tiles work in the grouped-head layout of ops/heads.ts: the R = H/G query heads that
 * share a key/value head are stacked along the rows, so one product per tile serves
 * them all and dK, dV are summed over those heads by the product itself.
 */
import * as tf from '@tensorflow/tfjs';
import {matMul} from './matmul';
import {noProbabilities} from '../arguments';
import {AttentionError, show} from '../errors';
import {assertPositiveInt, checkArgNames} from '../validate';
import {AttentionDims, assertFits, attentionDims, isEmptyAttention, zeroAttention} from './heads';
import {CausalArg, causalAlignment, causalOffset, normalizeMask} from './masks';
import {MASKED_LOGIT} from './sdpa';

export interface FlashOptions {
  /** Bool or 0/1, 1 = may attend; [T, S], [B, T, S] or broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor | null;
  /** true or 'bottom-right': query i sees key j iff j <= i + (S - T); 'top-left': iff j <= i. Default false. */
  causal?: CausalArg;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /** Rows per query tile and per key tile. Default DEFAULT_BLOCK_SIZE. */
  blockSize?: number;
}

/**
 * Chosen by measurement on the wasm backend with its 2-D product path (forward+backward,
 * B=1, H=4, D=64, median of 3): at T=2048, blockSize 128/256/384/512/1024 took
 * 2.05/2.65/2.36/1.49-1.85/1.84 s with peaks 46/48/60/76/185 MiB; at T=4096, 256 took
 * 8.5 s (92 MiB) and 512 took 5.7 s (113 MiB). Larger tiles mean fewer, larger kernels
 * (wasm pays per kernel); past 512 the tile's blockSize^2 scores cost memory for no speed.
 */
export const DEFAULT_BLOCK_SIZE = 512;

/** The option names flashAttention takes. */
export const FLASH_OPTIONS = ['mask', 'causal', 'scale', 'blockSize'] as const;

/** The row max given to rows with no visible key: exp(s - M) is then 0 for every s. */
const NO_KEYS_MAX = 1e30;

interface Plan extends AttentionDims {
  bs: number;
  scale: number;
  causal: boolean;
  /** Query i sees key j iff j <= i + offset (when causal): S - T bottom-right, 0 top-left. */
  offset: number;
}

/** [start, size] of each block of `bs` along a length n; the last one may be shorter. */
function blocks(n: number, bs: number): [number, number][] {
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += bs) out.push([start, Math.min(bs, n - start)]);
  return out;
}

/** False when causal masking hides every key of the tile from every query of it. */
function tileVisible(p: Plan, t0: number, bq: number, s0: number): boolean {
  return !p.causal || s0 <= t0 + bq - 1 + p.offset;
}

/**
 * The 0/1 keep mask of one tile, broadcastable to its scores [B, G, R*bq, bk], or null
 * when causality hides nothing in the tile and there is no user mask. Everything stays
 * at rank 4: the wasm backend slices rank-5 tensors with a slow generic loop.
 */
function keepTile(p: Plan, keep: tf.Tensor | null, t0: number, bq: number, s0: number, bk: number): tf.Tensor | null {
  let tile: tf.Tensor | null = null; // [Bm, Hm, bq, bk] with Hm in {1, H}
  if (p.causal && s0 + bk - 1 > t0 + p.offset) {
    const j = tf.reshape(tf.range(s0, s0 + bk, 1, 'int32'), [1, bk]);                       // [1, bk]
    const i = tf.reshape(tf.range(t0 + p.offset, t0 + p.offset + bq, 1, 'int32'), [bq, 1]); // [bq, 1]
    tile = tf.reshape(tf.cast(tf.lessEqual(j, i), 'float32'), [1, 1, bq, bk]);
  }
  if (keep != null) {
    const [Bm, Hm, Tm, Sm] = keep.shape as number[];
    const rows: [number, number] = Tm === 1 ? [0, 1] : [t0, bq];
    const cols: [number, number] = Sm === 1 ? [0, 1] : [s0, bk];
    const m = tf.slice(keep, [0, 0, rows[0], cols[0]], [Bm, Hm, rows[1], cols[1]]); // [Bm, Hm, tq, tk]
    tile = tile == null ? m : tf.mul(tile, m);
  }
  if (tile == null || p.R === 1) return tile; // [Bm, H|1, bq|1, bk|1] == [B, G, R*bq, bk] when R = 1
  // Fold to the grouped rows (r, t) -> r * bq + t.
  const [Bm, Hm, tq, tk] = tile.shape as number[];
  if (Hm === p.H) {
    const full = tq === bq ? tile : tf.broadcastTo(tile, [Bm, Hm, bq, tk]);
    return tf.reshape(full, [Bm, p.G, p.R * bq, tk]);                       // [Bm, G, R*bq, tk]
  }
  return tq === 1 ? tile : tf.tile(tile, [1, 1, p.R, 1]);                   // [Bm, 1, R*bq, tk]
}

/** Scores of one tile, [B, G, R*bq, bk], with masked keys pushed to MASKED_LOGIT. */
function tileScores(qi: tf.Tensor, kj: tf.Tensor, kt: tf.Tensor | null): tf.Tensor {
  const s = matMul(qi, kj, false, true); // [B, G, R*bq, bk]
  return kt == null ? s : tf.add(s, tf.mul(tf.sub(1, kt), MASKED_LOGIT));
}

/** Rows [t0, t0 + bq) of a per-query-head tensor x3 [B*H, T, X], as [B, G, R*bq, X]. */
function queryRows(p: Plan, x3: tf.Tensor, t0: number, bq: number): tf.Tensor {
  const X = x3.shape[2] as number;
  return tf.reshape(tf.slice(x3, [0, t0, 0], [p.B * p.H, bq, X]), [p.B, p.G, p.R * bq, X]);
}

/** Rows [s0, s0 + bk) of a [B, G, S, X] tensor. */
function keyRows(p: Plan, x: tf.Tensor, s0: number, bk: number): tf.Tensor {
  return tf.slice(x, [0, 0, s0, 0], [p.B, p.G, bk, x.shape[3] as number]);
}

/** Forward: returns O [B, H, T, Dv] and the logsumexp's parts M and log l, each [B*H, T, 1]. */
function forward(p: Plan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, keep: tf.Tensor | null): tf.Tensor[] {
  const {B, T, S, H, Dv, bs} = p;
  const q3 = tf.reshape(tf.mul(q, p.scale), [B * H, T, p.D]); // [B*H, T, D], scaled
  const outs: tf.Tensor[] = [];
  const maxes: tf.Tensor[] = [];
  const logSums: tf.Tensor[] = [];
  for (const [t0, bq] of blocks(T, bs)) {
    const [o, rowMax, logSum] = tf.tidy(() => {
      const qi = queryRows(p, q3, t0, bq); // [B, G, R*bq, D]
      // Running row max m, row sum l and unnormalised output acc over the key tiles.
      let m: tf.Tensor | null = null;
      let l: tf.Tensor | null = null;
      let acc: tf.Tensor | null = null;
      for (const [s0, bk] of blocks(S, bs)) {
        if (!tileVisible(p, t0, bq, s0)) break; // later key tiles are hidden too
        const next = tf.tidy(() => {
          const kt = keepTile(p, keep, t0, bq, s0, bk);
          const s = tileScores(qi, keyRows(p, k, s0, bk), kt);  // [B, G, R*bq, bk]
          const rowMax = tf.max(s, -1, true);                    // [B, G, R*bq, 1]
          const mNew = m == null ? rowMax : tf.maximum(m, rowMax);
          let pr = tf.exp(tf.sub(s, mNew));
          if (kt != null) pr = tf.mul(pr, kt); // exact zeros where masked, even in all-masked rows
          const pv = matMul(pr, keyRows(p, v, s0, bk)); // [B, G, R*bq, Dv]
          const rowSum = tf.sum(pr, -1, true);
          if (m == null) return {m: mNew, l: rowSum, acc: pv};
          const alpha = tf.exp(tf.sub(m, mNew)); // rescales what was summed under the old max
          return {m: mNew, l: tf.add(tf.mul(l!, alpha), rowSum), acc: tf.add(tf.mul(acc!, alpha), pv)};
        });
        tf.dispose([m, l, acc] as tf.Tensor[]);
        ({m, l, acc} = next);
      }
      if (m == null || l == null || acc == null) {
        return [tf.zeros([B * H, bq, Dv]), tf.fill([B * H, bq, 1], NO_KEYS_MAX), tf.zeros([B * H, bq, 1])];
      }
      // Divide once at the end; rows with no visible key (l = 0) stay zero.
      const seen = tf.greater(l, 0);
      const lSafe = tf.where(seen, l, tf.onesLike(l));
      const o = tf.div(acc, lSafe);                                          // [B, G, R*bq, Dv]
      const mOut = tf.where(seen, m, tf.fill(m.shape, NO_KEYS_MAX));         // [B, G, R*bq, 1]
      return [tf.reshape(o, [B * H, bq, Dv]), tf.reshape(mOut, [B * H, bq, 1]), tf.reshape(tf.log(lSafe), [B * H, bq, 1])];
    });
    outs.push(o);
    maxes.push(rowMax);
    logSums.push(logSum);
  }
  const O = tf.reshape(tf.concat(outs, 1), [B, H, T, Dv]); // [B, H, T, Dv]
  const M = tf.concat(maxes, 1);                             // [B*H, T, 1]
  const LL = tf.concat(logSums, 1);                          // [B*H, T, 1]
  tf.dispose([q3, ...outs, ...maxes, ...logSums]);
  return [O, M, LL];
}

/** Backward: dq, dk, dv from dO and the saved q, k, v, O and logsumexp parts M, LL. */
function backward(p: Plan, dO: tf.Tensor, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, O: tf.Tensor, M: tf.Tensor,
                  LL: tf.Tensor, keep: tf.Tensor | null): tf.Tensor[] {
  const {B, G, T, S, H, D, Dv, bs} = p;
  const q3 = tf.reshape(tf.mul(q, p.scale), [B * H, T, D]); // [B*H, T, D], scaled
  const dO3 = tf.reshape(dO, [B * H, T, Dv]);                 // [B*H, T, Dv]
  // 1. D = rowsum(dO * O), one number per query row.
  const Dsum = tf.sum(tf.mul(dO3, tf.reshape(O, [B * H, T, Dv])), -1, true); // [B*H, T, 1]
  const qBlocks = blocks(T, bs);
  const dQ: (tf.Tensor | null)[] = qBlocks.map(() => null);
  const dKs: tf.Tensor[] = [];
  const dVs: tf.Tensor[] = [];
  for (const [s0, bk] of blocks(S, bs)) {
    const kj = keyRows(p, k, s0, bk); // [B, G, bk, D]
    const vj = keyRows(p, v, s0, bk); // [B, G, bk, Dv]
    let dK: tf.Tensor | null = null;
    let dV: tf.Tensor | null = null;
    qBlocks.forEach(([t0, bq], i) => {
      if (!tileVisible(p, t0, bq, s0)) return;
      const next = tf.tidy(() => {
        const qi = queryRows(p, q3, t0, bq);   // [B, G, R*bq, D]
        const dOi = queryRows(p, dO3, t0, bq); // [B, G, R*bq, Dv]
        const Mi = queryRows(p, M, t0, bq);    // [B, G, R*bq, 1]
        const LLi = queryRows(p, LL, t0, bq);  // [B, G, R*bq, 1]
        const Di = queryRows(p, Dsum, t0, bq); // [B, G, R*bq, 1]
        // 2. Recompute the tile's probabilities from the saved logsumexp: P = exp(S - L).
        const kt = keepTile(p, keep, t0, bq, s0, bk);
        let pr = tf.exp(tf.sub(tf.sub(tileScores(qi, kj, kt), Mi), LLi)); // [B, G, R*bq, bk]
        if (kt != null) pr = tf.mul(pr, kt);
        // 3. dV += P^T dO (the product sums over the R query heads of the group).
        const dVpart = matMul(pr, dOi, true, false);           // [B, G, bk, Dv]
        // 4. dP = dO V^T and dS = P * (dP - D).
        const dP = matMul(dOi, vj, false, true);               // [B, G, R*bq, bk]
        const dS = tf.mul(pr, tf.sub(dP, Di));                    // [B, G, R*bq, bk]
        // 5. dQ += dS K * scale and dK += dS^T (Q * scale).
        const dQpart = tf.mul(matMul(dS, kj), p.scale);                                 // [B, G, R*bq, D]
        const dKpart = matMul(dS, qi, true, false);                                     // [B, G, bk, D]
        return {
          dV: dV == null ? dVpart : tf.add(dV, dVpart),
          dK: dK == null ? dKpart : tf.add(dK, dKpart),
          dQ: dQ[i] == null ? dQpart : tf.add(dQ[i]!, dQpart),
        };
      });
      tf.dispose([dV, dK, dQ[i]] as tf.Tensor[]);
      dV = next.dV;
      dK = next.dK;
      dQ[i] = next.dQ;
    });
    dKs.push(dK ?? tf.zeros([B, G, bk, D]));
    dVs.push(dV ?? tf.zeros([B, G, bk, Dv]));
    tf.dispose([kj, vj]);
  }
  const dQ3 = qBlocks.map(([, bq], i) =>
    dQ[i] == null ? tf.zeros([B * H, bq, D]) : tf.reshape(dQ[i]!, [B * H, bq, D]));
  const dq = tf.reshape(tf.concat(dQ3, 1), [B, H, T, D]); // [B, H, T, D]
  const dk = tf.concat(dKs, 2);                             // [B, G, S, D]
  const dv = tf.concat(dVs, 2);                             // [B, G, S, Dv]
  tf.dispose([q3, dO3, Dsum, ...dQ3, ...(dQ.filter((d) => d != null) as tf.Tensor[]), ...dKs, ...dVs]);
  return [dq, dk, dv];
}

/**
 * Exact attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] (G divides H;
 * query head h reads key/value head floor(h / (H / G))) without holding the T x S
 * scores: same results and semantics as scaledDotProductAttention (masks with
 * 1 = may attend, causal in either alignment, zero rows where nothing is visible), gradients
 * for q, k and v through a tiled backward pass.
 *
 * Returns [B, H, T, Dv].
 */
export function flashAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: FlashOptions = {}): tf.Tensor4D {
  options = options ?? {};
  checkArgNames('flashAttention', options, FLASH_OPTIONS, noProbabilities('flashAttention'));
  const dims = attentionDims(q, k, v);
  const scale = options.scale ?? 1 / Math.sqrt(dims.D);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new AttentionError('INVALID_CONFIG', `scale must be a finite number, received ${show(options.scale)}`);
  }
  const bs = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  assertPositiveInt('blockSize', bs);
  const alignment = causalAlignment(options.causal);
  const {B, H, T, S} = dims;
  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(normalizeMask(options.mask, [B, H, T, S])); // still checked
    return zeroAttention(q, k, v, dims);
  }
  // A tile never exceeds the sequence: a larger blockSize gives the same tiles as T (or S).
  const plan: Plan = {...dims, bs: Math.min(bs, Math.max(T, S)), scale, causal: alignment != null,
    offset: alignment != null ? causalOffset(alignment, T, S) : 0};
  assertFits('flashAttention', 'the scores of a tile', [B, dims.G, dims.R * Math.min(plan.bs, T), Math.min(plan.bs, S)]);
  // The mask enters as a (non-differentiated) input so it is saved for the backward pass.
  const keep = options.mask != null
    ? tf.tidy(() => tf.cast(normalizeMask(options.mask!, [B, H, T, S]), 'float32'))
    : null;

  const run = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [qq, kk, vv, kp] = args as tf.Tensor[];
    const [O, M, LL] = forward(plan, qq, kk, vv, kp ?? null);
    save(kp != null ? [qq, kk, vv, O, M, LL, kp] : [qq, kk, vv, O, M, LL]);
    return {
      value: O,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sO, sM, sLL, skp] = saved;
        const grads = backward(plan, dy, sq, sk, sv, sO, sM, sLL, skp ?? null);
        return skp != null ? [...grads, tf.zerosLike(skp)] : grads;
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);

  const out = keep != null ? run(q, k, v, keep) : run(q, k, v);
  if (keep != null) keep.dispose();
  return out as tf.Tensor4D;
}
