/**
 * Exact attention in tiles, the engine of flashAttention and of scaledDotProductAttention's
 * wasm path (FlashAttention-2's schedule, arranged for tfjs's backends).
 *
 * The forward keeps, per query row, only the output and the logsumexp (as its two parts, the
 * row max M and log l: at logits of 1e4 a float32 M + log l would lose ~1e-3 of the exponent);
 * the backward recomputes each tile's probabilities from them. So no T x S matrix is held
 * between the passes, and within a pass only a few tiles of `rows x keys` scores at a time;
 * except where the whole attention is one small tile (a short sequence: at most
 * UNIT_WORK_ELEMENTS scores), whose probabilities tiledAttention keeps for the backward.
 *
 * Work goes by units, each a range of (batch entry, key/value group) pairs: single pairs
 * where products are split into 2-D ones; on wasm as many pairs as keep their work within
 * UNIT_WORK_ELEMENTS (long sequences one pair at a time, short ones all at once); elsewhere
 * every pair, with batched products. Within a unit the R = H/G query heads of
 * the group are stacked along the rows, so one product per tile serves them all and the
 * products sum dK and dV over those heads. The small operands are transposed once per unit
 * (k, v) or per query block (q, dO), never a tile: every product is non-transposed, and a
 * query block's dQ and each key tile's dK, dV come from one pass over the tiles.
 *
 * A query block whose visible keys fit in one tile (every block of sdpa's; flash's up to
 * FLASH_TILE_SCORES) takes its probabilities from one tf.softmax of the tile, in the forward
 * and again in the backward, instead of exp(s - M - log l): on wasm the Softmax kernel is
 * several times faster than Exp (XNNPACK's vector code against a scalar loop), and such a
 * block needs no row statistics (its M and log l are returned as zeros, never read).
 *
 * Causal masking and sliding windows (query i sees keys j with |i - j| <= window, the local
 * branch of localGlobalAttention) skip the key tiles a query block cannot see, clip the tiles
 * at the edge of what it sees, and mask the rest with an additive band sliced from one band
 * built per call; rows that see no key at all (and user masks) take a multiplicative 0/1 keep
 * as well, so their probabilities are exact zeros. Key tiles are fixed (blocks of bk from key
 * 0), so a clipped tile's dK and dV are padded back to its width before they are summed; a
 * windowed block works its visible keys as one tile whose dK, dV are split among them.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionDims} from './heads';
import {matMul, swapLast, unitsAtOnce} from './matmul';

/** Added to the logits of masked keys (the same constant as sdpa.ts). */
const MASKED = -1e9;
/** The row max given to rows with no visible key: exp(s - M) is then 0 for every s. */
export const NO_KEYS_MAX = 1e30;

export interface TilePlan extends AttentionDims {
  scale: number;
  causal: boolean;
  /** Query i sees key j iff j <= i + offset (when causal). */
  offset: number;
  /** Query positions per tile (each tile has R * bq rows). */
  bq: number;
  /** Keys per tile. */
  bk: number;
  /** Query i sees key j only if |i - j| <= window; null or absent: no such bound. */
  window?: number | null;
}

/**
 * What query i may see: keys j with -lower <= j - i <= upper (each bound Infinity when there
 * is none): upper from causality (the offset) and the window, lower from the window.
 */
function reach(p: TilePlan): {lower: number; upper: number} {
  const w = p.window ?? Infinity;
  return {lower: w, upper: Math.min(p.causal ? p.offset : Infinity, w)};
}

/** A (batch, group) range worked at once: single (b, g) pairs, or everything. */
interface Unit {b: number; nb: number; g: number; ng: number}

/**
 * Elements a batch of units may work with at once on wasm (4 MiB of float32): per unit a
 * tile's scores and the unit's keys and values with their transposes (R * bq * bk + 2 * S *
 * (D + Dv)). Long sequences (sdpa's and flash's tiles of 10^5 to 10^6 scores) go one unit
 * at a time, as they did, and short ones (a small model's T = 128) all at once.
 */
export const UNIT_WORK_ELEMENTS = 2 ** 20;

/**
 * The (batch, group) ranges worked at once: as many units as `unitsAtOnce` allows, as
 * whole batch entries (every group) or groups of one entry, so each range's query heads
 * are contiguous.
 */
function units(p: TilePlan): Unit[] {
  const n = unitsAtOnce(p.B * p.G, p.R * p.bq * p.bk + 2 * p.S * (p.D + p.Dv), UNIT_WORK_ELEMENTS);
  if (n >= p.B * p.G) return [{b: 0, nb: p.B, g: 0, ng: p.G}];
  const out: Unit[] = [];
  if (n >= p.G) {
    const nb = Math.floor(n / p.G);
    for (let b = 0; b < p.B; b += nb) out.push({b, nb: Math.min(nb, p.B - b), g: 0, ng: p.G});
    return out;
  }
  for (let b = 0; b < p.B; b++) for (let g = 0; g < p.G; g += n) out.push({b, nb: 1, g, ng: Math.min(n, p.G - g)});
  return out;
}

/** [start, size] of each block of `bs` along a length n; the last one may be shorter. */
function blocks(n: number, bs: number): [number, number][] {
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += bs) out.push([start, Math.min(bs, n - start)]);
  return out;
}

/** a [n1, n2, m, k] x b [n1, n2, k, p]: one 2-D product for a single unit, batched otherwise. */
function mm(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [n1, n2, m, k] = a.shape as number[];
  const p = b.shape[3] as number;
  if (n1 * n2 !== 1) return matMul(a, b);
  // Every view disposed here: a view keeps its buffer alive until the enclosing tidy ends.
  const a2 = tf.reshape(a, [m, k]);
  const b2 = tf.reshape(b, [k, p]);
  const c = tf.matMul(a2, b2);
  tf.dispose([a2, b2]);
  return then(c, (x) => tf.reshape(x, [1, 1, m, p]));
}

/** a [n1, n2, k, m] transposed times b [n1, n2, k, p]: a^T b [n1, n2, m, p], as mm. */
function mmT(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [n1, n2, k, m] = a.shape as number[];
  const p = b.shape[3] as number;
  if (n1 * n2 !== 1) return matMul(a, b, true, false);
  const a2 = tf.reshape(a, [k, m]);
  const b2 = tf.reshape(b, [k, p]);
  const c = matMul(a2, b2, true, false);
  tf.dispose([a2, b2]);
  return then(c, (x) => tf.reshape(x, [1, 1, m, p]));
}

/** y = f(x), then x disposed: keeps one buffer alive where a tidy would keep every step's. */
export function then(x: tf.Tensor, f: (x: tf.Tensor) => tf.Tensor): tf.Tensor {
  const y = f(x);
  x.dispose();
  return y;
}

/** Rows [t0, t0 + bq) of the unit's query heads of x3 [B*H, T, X], as [nb, ng, R*bq, X]. */
function queryRows(p: TilePlan, u: Unit, x3: tf.Tensor, t0: number, bq: number): tf.Tensor {
  const X = x3.shape[2] as number;
  const h0 = u.b * p.H + u.g * p.R;
  const heads = u.nb * u.ng * p.R; // a single unit's R heads, or all B*H
  return tf.reshape(tf.slice(x3, [h0, t0, 0], [heads, bq, X]), [u.nb, u.ng, p.R * bq, X]);
}

/** The unit's part of x [B, G, S, X]. */
function unitPart(u: Unit, x: tf.Tensor): tf.Tensor {
  const [, , S, X] = x.shape as number[];
  return tf.slice(x, [u.b, u.g, 0, 0], [u.nb, u.ng, S, X]);
}

/** Columns [s0, s0 + n) of x [., ., X, S] (the whole tensor when that is all of it). */
function cols(x: tf.Tensor, s0: number, n: number): tf.Tensor {
  const [a, b, X, S] = x.shape as number[];
  return s0 === 0 && n === S ? tf.clone(x) : tf.slice(x, [0, 0, 0, s0], [a, b, X, n]);
}

/** Rows [s0, s0 + n) of x [., ., S, X]. */
function rowsOf(x: tf.Tensor, s0: number, n: number): tf.Tensor {
  const [a, b, S, X] = x.shape as number[];
  return s0 === 0 && n === S ? tf.clone(x) : tf.slice(x, [0, 0, s0, 0], [a, b, n, X]);
}

/** The additive band of a call, [bq, width]: entry (t, x) stands for j - i = x - c - t. */
interface Band {band: tf.Tensor; c: number}

/**
 * The band of a call: band[t, x] = MASKED where d = x - c - t is out of reach (d > upper or
 * d < -lower), else 0. A tile of block t0 over keys [a, a + n) takes band[:bq, x0 :][:, :n]
 * with x0 = a - t0 + c. Causal only (lower infinite): c = bq - offset and width 2 bq, since a
 * masked tile ends by t0 + bq + offset; columns left of the band (x0 < 0) are all visible, so
 * their part of the mask is zeros padded on. With a window: c = lower, since a >= t0 - lower,
 * and width lower + bq + max(upper, 0), since a + n <= t0 + bq + upper.
 * Null when nothing bounds what a query sees.
 */
function makeBand(p: TilePlan): Band | null {
  const {lower, upper} = reach(p);
  if (!Number.isFinite(lower) && !Number.isFinite(upper)) return null;
  const c = Number.isFinite(lower) ? lower : p.bq - p.offset;
  const width = Number.isFinite(lower) ? lower + p.bq + Math.max(upper, 0) : 2 * p.bq;
  // Written in JS: the broadcasting int32 ops that would build it run a slow scalar loop on wasm.
  const data = new Float32Array(p.bq * width);
  for (let t = 0; t < p.bq; t++) {
    for (let x = 0; x < width; x++) {
      const d = x - c - t; // j - i
      if (d > upper || d < -lower) data[t * width + x] = MASKED;
    }
  }
  const band = tf.tensor2d(data, [p.bq, width]);
  return {band, c};
}

/** What a tile needs besides q k^T: an additive mask and a 0/1 keep, each broadcastable to [nb, ng, R, bq, n] viewed as rank 4. */
interface TileMask {
  /** Added to the scores [nb*ng, R, bq, n]; null when nothing in the tile is masked. */
  add: tf.Tensor | null;
  /** Multiplies the probabilities [nb*ng, R, bq, n]; null when no row of the tile is wholly masked. */
  keep: tf.Tensor | null;
}

/** The keys a query block [t0, t0 + bq) can see at all: [start, end), empty when start >= end. */
function visibleRange(p: TilePlan, t0: number, bq: number): [number, number] {
  const {lower, upper} = reach(p);
  const start = Number.isFinite(lower) ? Math.max(0, t0 - lower) : 0;
  const end = Number.isFinite(upper) ? Math.max(0, Math.min(p.S, t0 + bq + upper)) : p.S;
  return [start, end];
}

/** A key tile a query block sees: fixed tile j = [s0, s0 + w), clipped to the visible [a, a + n). */
interface KeyTile {j: number; s0: number; w: number; a: number; n: number}

/**
 * The tiles a query block [t0, t0 + bq) works through: with a window, the keys it sees as one
 * tile (they are few, and one tile means one softmax), else the fixed key tiles it meets.
 */
function blockTiles(p: TilePlan, t0: number, bq: number): KeyTile[] {
  const [start, end] = visibleRange(p, t0, bq);
  if (p.window == null) return keyTiles(p, start, end);
  return start < end ? [{j: -1, s0: start, w: end - start, a: start, n: end - start}] : [];
}

/** The fixed key tiles (blocks of bk from key 0) that meet [start, end), each clipped to it. */
function keyTiles(p: TilePlan, start: number, end: number): KeyTile[] {
  const out: KeyTile[] = [];
  blocks(p.S, p.bk).forEach(([s0, w], j) => {
    const a = Math.max(s0, start);
    const e = Math.min(s0 + w, end);
    if (a < e) out.push({j, s0, w, a, n: e - a});
  });
  return out;
}

/**
 * The tile's masks, as [nb*ng or 1, R or 1, bq, n] tensors (scores are viewed so):
 * the causal band's slice, and the user keep mask's slice. `keep` is set for user masks (with
 * the causal band in it) and for causal blocks with rows that see no key (offset < 0).
 */
function tileMask(p: TilePlan, u: Unit, band: Band | null, keep: tf.Tensor | null,
                  t0: number, bq: number, s0: number, n: number): TileMask {
  let add: tf.Tensor | null = null;
  let mul: tf.Tensor | null = null;
  const {lower, upper} = reach(p);
  if (band != null && (s0 + n - 1 - t0 > upper || s0 - (t0 + bq - 1) < -lower)) {
    const x0 = s0 - t0 + band.c;
    const part = x0 >= 0 ? tf.slice(band.band, [0, x0], [bq, n])
      : then(tf.slice(band.band, [0, 0], [bq, n + x0]), (x) => tf.pad(x, [[0, 0], [-x0, 0]]));
    add = tf.reshape(part, [1, 1, bq, n]);
    // A row may see no key: every one out of reach (offset < 0, or past the keys' end), or the
    // ones in reach hidden by the user's mask. Then only exact zeros keep its probabilities at zero.
    if (t0 + upper < 0 || t0 + bq - 1 - lower > p.S - 1 || keep != null) mul = tf.cast(tf.equal(add, 0), 'float32');
  }
  if (keep != null) {
    const [Bm, Hm, Tm, Sm] = keep.shape as number[];
    const bRange: [number, number] = Bm === 1 ? [0, 1] : [u.b, u.nb];
    const hRange: [number, number] = Hm === 1 ? [0, 1] : [u.g * p.R, u.ng * p.R];
    const tRange: [number, number] = Tm === 1 ? [0, 1] : [t0, bq];
    const sRange: [number, number] = Sm === 1 ? [0, 1] : [s0, n];
    let m = tf.slice(keep, [bRange[0], hRange[0], tRange[0], sRange[0]], [bRange[1], hRange[1], tRange[1], sRange[1]]);
    // [nb, heads, tq, tk] -> [nb*ng or 1, R or 1, tq, tk]: heads h = g*R + r of the unit.
    const [mb, mh, mt, ms] = m.shape as number[];
    if (mh === 1 && mb > 1 && u.ng > 1) m = tf.broadcastTo(m, [mb, u.ng, mt, ms]); // one mask per batch entry, every group
    m = tf.reshape(m, mh === 1 ? [(m.shape as number[])[0] * (m.shape as number[])[1], 1, mt, ms] : [mb * u.ng, p.R, mt, ms]);
    const userAdd = tf.mul(tf.sub(1, m), MASKED);
    add = add == null ? userAdd : tf.add(add, userAdd);
    mul = mul == null ? m : tf.mul(mul, m);
  }
  return {add, keep: mul};
}

/** s [nb, ng, R*bq, n] with the mask added, same shape. */
function masked(p: TilePlan, s: tf.Tensor, add: tf.Tensor | null): tf.Tensor {
  if (add == null) return s;
  const [nb, ng, rows, n] = s.shape as number[];
  const bq = rows / p.R;
  const sum = then(then(s, (x) => tf.reshape(x, [nb * ng, p.R, bq, n])), (x) => tf.add(x, add));
  return then(sum, (x) => tf.reshape(x, [nb, ng, rows, n]));
}

/** p * keep (keep as in TileMask), same shape as p. */
function kept(p: TilePlan, pr: tf.Tensor, keep: tf.Tensor | null): tf.Tensor {
  if (keep == null) return pr;
  const [nb, ng, rows, n] = pr.shape as number[];
  const bq = rows / p.R;
  const prod = then(then(pr, (x) => tf.reshape(x, [nb * ng, p.R, bq, n])), (x) => tf.mul(x, keep));
  return then(prod, (x) => tf.reshape(x, [nb, ng, rows, n]));
}

/**
 * True when the whole attention is one product of one tile ([nb, ng, R*T, S] scores for
 * every pair at once: a short sequence) of at most UNIT_WORK_ELEMENTS scores: the forward can
 * then hand its probabilities to the backward instead of the backward computing them again (a
 * product and a softmax per call; 10-13 ms of a small transformer's step on wasm). The bound
 * holds on every backend (off wasm all pairs are one unit whatever their size).
 */
function oneTile(p: TilePlan, us: Unit[], qBlocks: [number, number][]): boolean {
  return us.length === 1 && qBlocks.length === 1 && blockTiles(p, 0, p.T).length === 1 &&
    p.B * p.H * p.T * p.S <= UNIT_WORK_ELEMENTS;
}

/**
 * Forward over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] and an optional float keep
 * [Bm, Hm, Tm, Sm]: the output O [B, H, T, Dv] and the logsumexp parts M, LL [B*H, T, 1];
 * with `keepProbs`, where the attention is one tile (`oneTile`), its probabilities P
 * [nb, ng, R*T, S] as a fourth tensor, for tiledBackward.
 */
export function tiledForward(p: TilePlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, keep: tf.Tensor | null,
                             keepProbs = false): tf.Tensor[] {
  const {B, H, T, D, Dv} = p;
  const band = makeBand(p);
  const q3 = tf.reshape(q, [B * H, T, D]);
  const us = units(p);
  const qBlocks = blocks(T, p.bq);
  const withProbs = keepProbs && oneTile(p, us, qBlocks);
  // Pieces in the order of the output: query blocks outer, units inner (so each concat joins
  // the heads of a block, then the blocks).
  const pieces = qBlocks.map(() => us.map(() => [] as tf.Tensor[]));
  us.forEach((u, ui) => {
    const kT = tf.tidy(() => swapLast(unitPart(u, k)));  // [nb, ng, D, S]
    const vU = unitPart(u, v);                            // [nb, ng, S, Dv]
    qBlocks.forEach(([t0, bq], bi) => {
      pieces[bi][ui] = tf.tidy(() => {
        const heads = u.nb * u.ng * p.R;
        const tiles = blockTiles(p, t0, bq);
        if (tiles.length === 0) return [tf.zeros([heads, bq, Dv]), tf.fill([heads, bq, 1], NO_KEYS_MAX), tf.zeros([heads, bq, 1])];
        const qi = tf.mul(queryRows(p, u, q3, t0, bq), p.scale); // [nb, ng, R*bq, D], scaled
        if (tiles.length === 1) {
          // All the block's keys in one tile: the probabilities in one softmax (see the file
          // comment); the backward takes the same path, so M and LL are not needed here.
          const {a: s0, n} = tiles[0];
          const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
          const pr = kept(p, then(masked(p, mm(qi, cols(kT, s0, n)), mask.add), (x) => tf.softmax(x)), mask.keep);
          const o = mm(pr, rowsOf(vU, s0, n));                                    // [nb, ng, R*bq, Dv]
          return [tf.reshape(o, [heads, bq, Dv]), tf.zeros([heads, bq, 1]), tf.zeros([heads, bq, 1]),
            ...(withProbs ? [pr] : [])];
        }
        let m: tf.Tensor | null = null;
        let l: tf.Tensor | null = null;
        let acc: tf.Tensor | null = null;
        for (const {a: s0, n} of tiles) {
          const next = tf.tidy(() => {
            const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
            const s = masked(p, mm(qi, cols(kT, s0, n)), mask.add);   // [nb, ng, R*bq, n]
            const rowMax = tf.max(s, -1, true);
            const mNew = m == null ? rowMax : tf.maximum(m, rowMax);
            const pr = kept(p, then(then(s, (x) => tf.sub(x, mNew)), tf.exp), mask.keep);
            const pv = mm(pr, rowsOf(vU, s0, n));                       // [nb, ng, R*bq, Dv]
            const rowSum = tf.sum(pr, -1, true);
            if (m == null) return {m: mNew, l: rowSum, acc: pv};
            const alpha = tf.exp(tf.sub(m, mNew));
            return {m: mNew, l: tf.add(tf.mul(l!, alpha), rowSum), acc: tf.add(tf.mul(acc!, alpha), pv)};
          });
          tf.dispose([m, l, acc] as tf.Tensor[]);
          ({m, l, acc} = next);
        }
        // Divide once at the end; rows with no visible key (l = 0) stay zero.
        const seen = tf.greater(l!, 0);
        const lSafe = tf.where(seen, l!, tf.onesLike(l!));
        const o = tf.div(acc!, lSafe);
        const mOut = tf.where(seen, m!, tf.fill(m!.shape, NO_KEYS_MAX));
        return [tf.reshape(o, [heads, bq, Dv]), tf.reshape(mOut, [heads, bq, 1]), tf.reshape(tf.log(lSafe), [heads, bq, 1])];
      });
    });
    tf.dispose([kT, vU]);
  });
  // Each block's heads (units in order are heads in order), then the blocks along T.
  const join = (which: number) => {
    const perBlock = pieces.map((row) => {
      const parts = row.map((x) => x[which]);
      const joined = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
      if (parts.length > 1) tf.dispose(parts);
      return joined;
    });
    const all = perBlock.length === 1 ? perBlock[0] : tf.concat(perBlock, 1);
    if (perBlock.length > 1) tf.dispose(perBlock);
    return all;
  };
  const probs = withProbs ? pieces[0][0][3] : undefined;
  const O = then(join(0), (x) => tf.reshape(x, [B, H, T, Dv]));
  const M = join(1);
  const LL = join(2);
  tf.dispose([q3, ...(band != null ? [band.band] : [])]);
  return probs != null ? [O, M, LL, probs] : [O, M, LL];
}

/**
 * Backward: dq, dk, dv from dO and the saved q, k, v, O and logsumexp parts M, LL, and the
 * forward's probabilities where it kept them (tiledForward's keepProbs), else null.
 */
export function tiledBackward(p: TilePlan, dO: tf.Tensor, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, O: tf.Tensor,
                              M: tf.Tensor, LL: tf.Tensor, keep: tf.Tensor | null, probs: tf.Tensor | null = null): tf.Tensor[] {
  const {B, H, G, T, S, D, Dv} = p;
  const band = makeBand(p);
  const q3 = tf.reshape(q, [B * H, T, D]);
  const dO3 = tf.reshape(dO, [B * H, T, Dv]);
  // D = rowsum(dO * O), as row-by-row products: the kernel that computes dO v^T, so where a row
  // sees one key (O = v, P = 1) dP - D is exactly 0, as the softmax's own gradient gives.
  const Dsum = tf.tidy(() => tf.reshape(tf.matMul(tf.reshape(dO3, [B * H * T, 1, Dv]), tf.reshape(O, [B * H * T, Dv, 1])),
    [B * H, T, 1]));                                                                        // [B*H, T, 1]
  const us = units(p);
  const qBlocks = blocks(T, p.bq);
  const dqPieces = qBlocks.map(() => us.map(() => null as tf.Tensor | null));
  const dkUnits: tf.Tensor[] = [];
  const dvUnits: tf.Tensor[] = [];
  us.forEach((u, ui) => {
    const kU = unitPart(u, k);                               // [nb, ng, S, D]
    const kT = tf.tidy(() => swapLast(kU));                  // [nb, ng, D, S]
    const vT = tf.tidy(() => swapLast(unitPart(u, v)));      // [nb, ng, Dv, S]
    const kTiles = blocks(S, p.bk);
    const dKt: (tf.Tensor | null)[] = kTiles.map(() => null); // [nb, ng, n, D] each
    const dVt: (tf.Tensor | null)[] = kTiles.map(() => null); // [nb, ng, n, Dv] each
    qBlocks.forEach(([t0, bq], bi) => {
      const heads = u.nb * u.ng * p.R;
      const tiles = blockTiles(p, t0, bq);
      if (tiles.length === 0) {
        dqPieces[bi][ui] = tf.zeros([heads, bq, D]);
        return;
      }
      const qi = tf.tidy(() => tf.mul(queryRows(p, u, q3, t0, bq), p.scale)); // [nb, ng, R*bq, D], scaled
      const dOi = queryRows(p, u, dO3, t0, bq);              // [nb, ng, R*bq, Dv]
      const Mi = queryRows(p, u, M, t0, bq);
      const LLi = queryRows(p, u, LL, t0, bq);
      const Di = queryRows(p, u, Dsum, t0, bq);
      let dQ: tf.Tensor | null = null;
      tiles.forEach(({a: s0, n}) => {
        const next = tf.tidy(() => {
          const pr = probs != null ? tf.clone(probs) : tf.tidy(() => {
            const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
            const s = masked(p, mm(qi, cols(kT, s0, n)), mask.add);
            return kept(p, tiles.length === 1 ? then(s, (x) => tf.softmax(x))
              : then(then(then(s, (x) => tf.sub(x, Mi)), (x) => tf.sub(x, LLi)), tf.exp), mask.keep);
          });
          // dV and dK as P^T dO and dS^T q, [n, X] per unit: as fast as dO^T P and q^T dS on
          // wasm or faster (a product of many rows and few columns; 4.1-4.8 against 5.3-7.8 ms
          // for 32 units of 128 x 128 tiles, D = 32), with no transposes of dO or q.
          const dVpart = mmT(pr, dOi);                                        // [nb, ng, n, Dv]
          const dS = then(then(mm(dOi, cols(vT, s0, n)), (x) => tf.sub(x, Di)), (x) => tf.mul(pr, x));
          pr.dispose();
          const dQpart = mm(dS, rowsOf(kU, s0, n));                           // [nb, ng, R*bq, D]
          const dKpart = mmT(dS, qi);                                         // [nb, ng, n, D]
          return {dV: dVpart, dK: dKpart, dQ: dQ == null ? dQpart : tf.add(dQ, dQpart)};
        });
        if (dQ != null) dQ.dispose();
        dQ = next.dQ;
        // Rows [s0, s0 + n) into the fixed key tiles they cover, each piece padded to its
        // tile's length (a bk x D copy, small beside the tile's products).
        for (const [acc, part] of [[dVt, next.dV], [dKt, next.dK]] as [(tf.Tensor | null)[], tf.Tensor][]) {
          let kept = false;
          for (const t of keyTiles(p, s0, s0 + n)) {
            const whole = t.a === s0 && t.n === n;
            if (whole && t.n === t.w && acc[t.j] == null) {
              acc[t.j] = part;
              kept = true;
              continue;
            }
            const sum = tf.tidy(() => {
              const [n1, n2, , X] = part.shape as number[];
              let piece = whole ? part : tf.slice(part, [0, 0, t.a - s0, 0], [n1, n2, t.n, X]);
              if (t.n !== t.w) piece = tf.pad(piece, [[0, 0], [0, 0], [t.a - t.s0, t.s0 + t.w - t.a - t.n], [0, 0]]);
              return acc[t.j] == null ? piece : tf.add(acc[t.j]!, piece);
            });
            if (acc[t.j] != null) acc[t.j]!.dispose();
            acc[t.j] = sum;
          }
          if (!kept) part.dispose();
        }
      });
      dqPieces[bi][ui] = tf.tidy(() => tf.reshape(tf.mul(dQ!, p.scale), [heads, bq, D]));
      tf.dispose([qi, dOi, Mi, LLi, Di, dQ!]);
    });
    // The unit's dK, dV [nb, ng, S, X] from the key tiles (zeros for tiles no query saw).
    const gather = (parts: (tf.Tensor | null)[], X: number) => tf.tidy(() => {
      const full = parts.map((t, j) => t ?? tf.zeros([u.nb, u.ng, kTiles[j][1], X]));
      return full.length === 1 ? tf.clone(full[0]) : tf.concat(full, 2);
    });
    dkUnits.push(gather(dKt, D));
    dvUnits.push(gather(dVt, Dv));
    tf.dispose([kU, kT, vT, ...(dKt.filter((t) => t != null) as tf.Tensor[]),
      ...(dVt.filter((t) => t != null) as tf.Tensor[])]);
  });
  const joinUnits = (parts: tf.Tensor[]) => {
    // Units are (b, g) in order, or one unit of everything: [B, G, S, X].
    if (parts.length === 1) return parts[0];
    const out = tf.reshape(tf.concat(parts, 1), [B, G, S, parts[0].shape[3] as number]);
    tf.dispose(parts);
    return out;
  };
  const dk = joinUnits(dkUnits);
  const dv = joinUnits(dvUnits);
  const perBlock = dqPieces.map((row) => {
    const parts = row as tf.Tensor[];
    const joined = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
    if (parts.length > 1) tf.dispose(parts);
    return joined;
  });
  const dq3 = perBlock.length === 1 ? perBlock[0] : tf.concat(perBlock, 1);
  if (perBlock.length > 1) tf.dispose(perBlock);
  const dq = then(dq3, (x) => tf.reshape(x, [B, H, T, D]));
  tf.dispose([q3, dO3, Dsum, ...(band != null ? [band.band] : [])]);
  return [dq, dk, dv];
}

/**
 * Exact attention through the engine as one tf.customGrad over q, k, v and an optional
 * float keep mask (a non-differentiated input, so it is saved for the backward pass; it gets
 * zeros): the forward saves the output and the row logsumexp parts, the backward is
 * tiledBackward. The keep mask is the caller's to dispose.
 */
export function tiledAttention(p: TilePlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, keep: tf.Tensor | null): tf.Tensor {
  const run = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [qq, kk, vv, kp] = args as tf.Tensor[];
    const [O, M, LL, P] = tiledForward(p, qq, kk, vv, kp ?? null, true);
    save([qq, kk, vv, O, M, LL, ...(kp != null ? [kp] : []), ...(P != null ? [P] : [])]);
    return {
      value: O,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sO, sM, sLL, ...rest] = saved;
        const skp = kp != null ? rest.shift()! : null;
        const sP = P != null ? rest.shift()! : null;
        const grads = tiledBackward(p, dy, sq, sk, sv, sO, sM, sLL, skp, sP);
        return skp != null ? [...grads, tf.zerosLike(skp)] : grads;
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return keep != null ? run(q, k, v, keep) : run(q, k, v);
}
