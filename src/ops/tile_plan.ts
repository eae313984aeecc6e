/**
 * The plan of the tiled engine (ops/tiled.ts): the units, query blocks and key tiles a call
 * works through, and each tile's masks (the additive band of causal masking and sliding
 * windows, the 0/1 keep of rows that see no key and of user masks).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionDims} from './heads';
import {MASKED_LOGIT} from './masks';
import {disposeAfter, unitsAtOnce} from './units';

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
export interface Unit {b: number; nb: number; g: number; ng: number}

/**
 * Elements a batch of units may work with at once on wasm (4 MiB of float32): per unit a
 * tile's scores and the unit's keys and values with their transposes (R * bq * bk + 2 * S *
 * (D + Dv)). Long sequences (sdpa's and flash's tiles of 10^5 to 10^6 scores) go one unit
 * at a time, and short ones (a small model's T = 128) all at once.
 */
export const UNIT_WORK_ELEMENTS = 2 ** 20;

/**
 * The (batch, group) ranges worked at once: as many units as `unitsAtOnce` allows, as
 * whole batch entries (every group) or groups of one entry, so each range's query heads
 * are contiguous.
 */
export function tileUnits(p: TilePlan): Unit[] {
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
export function blocks(n: number, bs: number): [number, number][] {
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += bs) out.push([start, Math.min(bs, n - start)]);
  return out;
}

/** Rows [t0, t0 + bq) of the unit's query heads of x3 [B*H, T, X], as [nb, ng, R*bq, X]. */
export function queryRows(p: Pick<TilePlan, 'H' | 'R'>, u: Unit, x3: tf.Tensor, t0: number, bq: number): tf.Tensor {
  const X = x3.shape[2] as number;
  const h0 = u.b * p.H + u.g * p.R;
  const heads = u.nb * u.ng * p.R; // a single unit's R heads, or all B*H
  return tf.reshape(tf.slice(x3, [h0, t0, 0], [heads, bq, X]), [u.nb, u.ng, p.R * bq, X]);
}

/** The unit's part of x [B, G, S, X]. */
export function unitPart(u: Unit, x: tf.Tensor): tf.Tensor {
  const [, , S, X] = x.shape as number[];
  return tf.slice(x, [u.b, u.g, 0, 0], [u.nb, u.ng, S, X]);
}

/** The additive band of a call, [bq, width]: entry (t, x) stands for j - i = x - c - t. */
export interface Band {band: tf.Tensor; c: number}

/**
 * The band of a call: band[t, x] = MASKED_LOGIT where d = x - c - t is out of reach
 * (d > upper or d < -lower), else 0. A tile of block t0 over keys [a, a + n) takes
 * band[:bq, x0 :][:, :n] with x0 = a - t0 + c. Causal only (lower infinite): c = bq - offset
 * and width 2 bq, since a masked tile ends by t0 + bq + offset; columns left of the band
 * (x0 < 0) are all visible, so their part of the mask is zeros padded on. With a window:
 * c = lower, since a >= t0 - lower, and width lower + bq + max(upper, 0), since
 * a + n <= t0 + bq + upper. Null when nothing bounds what a query sees.
 */
export function makeBand(p: TilePlan): Band | null {
  const {lower, upper} = reach(p);
  if (!Number.isFinite(lower) && !Number.isFinite(upper)) return null;
  const c = Number.isFinite(lower) ? lower : p.bq - p.offset;
  const width = Number.isFinite(lower) ? lower + p.bq + Math.max(upper, 0) : 2 * p.bq;
  // Written in JS: the broadcasting int32 ops that would build it run a slow scalar loop on wasm.
  const data = new Float32Array(p.bq * width);
  for (let t = 0; t < p.bq; t++) {
    for (let x = 0; x < width; x++) {
      const d = x - c - t; // j - i
      if (d > upper || d < -lower) data[t * width + x] = MASKED_LOGIT;
    }
  }
  const band = tf.tensor2d(data, [p.bq, width]);
  return {band, c};
}

/**
 * What a tile needs besides q k^T: an additive mask and a 0/1 keep, each broadcastable to
 * [nb, ng, R, bq, n] viewed as rank 4.
 */
export interface TileMask {
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
export interface KeyTile {j: number; s0: number; w: number; a: number; n: number}

/**
 * The tiles a query block [t0, t0 + bq) works through: with a window, the keys it sees as one
 * tile (they are few, and one tile means one softmax), else the fixed key tiles it meets.
 */
export function blockTiles(p: TilePlan, t0: number, bq: number): KeyTile[] {
  const [start, end] = visibleRange(p, t0, bq);
  if (p.window == null) return keyTiles(p, start, end);
  return start < end ? [{j: -1, s0: start, w: end - start, a: start, n: end - start}] : [];
}

/** The fixed key tiles (blocks of bk from key 0) that meet [start, end), each clipped to it. */
export function keyTiles(p: TilePlan, start: number, end: number): KeyTile[] {
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
export function tileMask(p: TilePlan, u: Unit, band: Band | null, keep: tf.Tensor | null,
                         t0: number, bq: number, s0: number, n: number): TileMask {
  let add: tf.Tensor | null = null;
  let mul: tf.Tensor | null = null;
  const {lower, upper} = reach(p);
  if (band != null && (s0 + n - 1 - t0 > upper || s0 - (t0 + bq - 1) < -lower)) {
    const x0 = s0 - t0 + band.c;
    const part = x0 >= 0 ? tf.slice(band.band, [0, x0], [bq, n])
      : disposeAfter(tf.slice(band.band, [0, 0], [bq, n + x0]), (x) => tf.pad(x, [[0, 0], [-x0, 0]]));
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
    // one mask per batch entry, every group
    if (mh === 1 && mb > 1 && u.ng > 1) m = tf.broadcastTo(m, [mb, u.ng, mt, ms]);
    m = tf.reshape(m, mh === 1 ? [(m.shape as number[])[0] * (m.shape as number[])[1], 1, mt, ms] :
      [mb * u.ng, p.R, mt, ms]);
    const userAdd = tf.mul(tf.sub(1, m), MASKED_LOGIT);
    add = add == null ? userAdd : tf.add(add, userAdd);
    mul = mul == null ? m : tf.mul(mul, m);
  }
  return {add, keep: mul};
}

/** s [nb, ng, R*bq, n] with the mask added, same shape. */
export function addMask(p: TilePlan, s: tf.Tensor, add: tf.Tensor | null): tf.Tensor {
  if (add == null) return s;
  const [nb, ng, rows, n] = s.shape as number[];
  const bq = rows / p.R;
  const sum = disposeAfter(disposeAfter(s, (x) => tf.reshape(x, [nb * ng, p.R, bq, n])), (x) => tf.add(x, add));
  return disposeAfter(sum, (x) => tf.reshape(x, [nb, ng, rows, n]));
}

/** The probabilities pr [nb, ng, R*bq, n] times keep (as in TileMask), same shape. */
export function applyKeep(p: TilePlan, pr: tf.Tensor, keep: tf.Tensor | null): tf.Tensor {
  if (keep == null) return pr;
  const [nb, ng, rows, n] = pr.shape as number[];
  const bq = rows / p.R;
  const prod = disposeAfter(disposeAfter(pr, (x) => tf.reshape(x, [nb * ng, p.R, bq, n])), (x) => tf.mul(x, keep));
  return disposeAfter(prod, (x) => tf.reshape(x, [nb, ng, rows, n]));
}

/**
 * True when the whole attention is one product of one tile ([nb, ng, R*T, S] scores for
 * every pair at once: a short sequence) of at most UNIT_WORK_ELEMENTS scores: the forward can
 * then hand its probabilities to the backward instead of the backward computing them again (a
 * product and a softmax per call). The bound holds on every backend (off wasm all pairs are one
 * unit whatever their size).
 */
export function isOneTile(p: TilePlan, us: Unit[], qBlocks: [number, number][]): boolean {
  return us.length === 1 && qBlocks.length === 1 && blockTiles(p, 0, p.T).length === 1 &&
    p.B * p.H * p.T * p.S <= UNIT_WORK_ELEMENTS;
}
