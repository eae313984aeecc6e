// The fused tile loops of flexAttention with a block mask on the wasm backend (src/kernels/wasm_flex.ts):
// FlashAttention-2's forward and backward over the tiles a block mask leaves, every product,
// softmax and mask of a tile done here, in place on the backend's memory.
//
// Both take a parameter block `params` (i32 slots, P_* below; byte offsets into the memory) and
// a range of work items [from, to) with a scratch area of flexScratchFloats floats:
//
// - flexForward: item u is query block i of head (b, h) (u = (b H + h) nQ + i). For each key block
//   j its row of the block mask lists (full, or partial with an additive mask tile), it computes
//   S = scale q_i k_j^T (+ the tile), the online softmax, and O_i += P V_j; then O_i / l and the
//   logsumexp of each row (zeros and -Infinity for a row that sees no key).
// - flexBackward: item u is the (batch entry, key/value group) pair (b, g): for each of the group's
//   heads and each key block j, for each query block i its column lists, it recomputes
//   P = exp(S - lse) and adds P^T dO_i to dV_j, dS K_j to dQ_i and dS^T q_i to dK_j, with
//   dS = scale P (dO_i V_j^T - delta_i), delta_i = rowsum(dO_i O_i) - dLse_i. An item writes only
//   its own rows of dq, dk and dv (zeroed by the caller): threads never share an output.
//
// A tile's mask is read as the kept block mask holds it: [n, w] floats (the block's own sizes),
// 0 where kept and MASKED_LOGIT (-1e9) where masked.
import {tile} from './tile';

// Parameter slots.
const P_Q = 0;
const P_K = 1;
const P_V = 2;
const P_O = 3;
const P_LSE = 4;
const P_DO = 5;
const P_DLSE = 6;
const P_DQ = 7;
const P_DK = 8;
const P_DV = 9;
const P_B = 10;
const P_H = 11;
const P_G = 12;
const P_T = 13;
const P_S = 14;
const P_D = 15;
const P_DVAL = 16;
const P_BQ = 17;
const P_BK = 18;
const P_MASK_BATCH = 19;
const P_MASK_HEADS = 20;
const P_SCALE = 21;
const P_ROWS = 22;
const P_COLS = 23;

/** A row whose largest score is below this saw only masked keys in the tile. */
const NO_KEY: f32 = -5e8;

@inline function param(params: usize, slot: i32): i32 {
  return load<i32>(params + (<usize>slot << 2));
}

@inline function round8(n: i32): i32 {
  return (n + 7) & ~7;
}

@inline function round4(n: i32): i32 {
  return (n + 3) & ~3;
}

@inline function at(base: usize, floats: i32): usize {
  return base + (<usize>floats << 2);
}

/** e^x, four lanes: Cody-Waite reduction by ln 2 and a degree-6 polynomial (relative error about 2e-7); 0 below -87. */
@inline function expv(x: v128): v128 {
  const lo = f32x4.splat(-87.0);
  const under = f32x4.lt(x, lo);
  x = f32x4.min(f32x4.max(x, lo), f32x4.splat(88.0));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.add(r, f32x4.mul(n, f32x4.splat(2.12194440e-4)));
  let p = f32x4.splat(1.0 / 720.0);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  const e = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(p, e), under);
}

/**
 * ln x for x >= 1 (a row's sum of exponentials, whose largest term is 1): x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), ln m by its series in s = (m - 1) / (m + 1), in float64. Mathf.log
 * would bring a table into the module's data, which instantiating it would write into tfjs's memory.
 */
function logf(x: f32): f32 {
  const bits = reinterpret<u64>(<f64>x);
  let e = <i32>((bits >> 52) & 0x7ff) - 1023;
  let m = reinterpret<f64>((bits & 0x000fffffffffffff) | 0x3ff0000000000000);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  const s = (m - 1) / (m + 1);
  const s2 = s * s;
  const series = s * (2 + s2 * (2.0 / 3 + s2 * (2.0 / 5 + s2 * (2.0 / 7 + s2 * (2.0 / 9 + s2 * (2.0 / 11))))));
  return <f32>(series + <f64>e * 0.6931471805599453);
}

function expf(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

/** dst [rows, ldd] = rows of src (stride `stride` bytes) of `cols` floats each, padded with zeros to ldd. */
function packRows(src: usize, stride: usize, rows: i32, cols: i32, dst: usize, ldd: i32): void {
  for (let r = 0; r < rows; r++) {
    const d = at(dst, r * ldd);
    memory.copy(d, src + <usize>r * stride, <usize>cols << 2);
    for (let c = cols; c < ldd; c++) store<f32>(at(d, c), 0);
  }
}

/** dst [cols, ldd] = src [rows, cols] (row stride `stride` bytes) transposed, padded with zeros to ldd. */
function packTransposed(src: usize, stride: usize, rows: i32, cols: i32, dst: usize, ldd: i32): void {
  for (let c = 0; c < cols; c++) {
    const d = at(dst, c * ldd);
    const s = at(src, c);
    for (let r = 0; r < rows; r++) store<f32>(at(d, r), load<f32>(s + <usize>r * stride));
    for (let r = rows; r < ldd; r++) store<f32>(at(d, r), 0);
  }
}

/**
 * C [M, N] (row stride ldc bytes) = op(A) B, or += with `acc`: A's element (i, k) at a + i ars + k acs,
 * B [K, N] at b with rows of ldb bytes (8 floats readable past each row's N).
 */
function gemm(a: usize, ars: usize, acs: usize, b: usize, ldb: usize, c: usize, ldc: usize, M: i32, K: i32, N: i32,
              acc: bool, tmp: usize): void {
  for (let i = 0; i < M; i += 4) {
    const rows = min(4, M - i);
    const ai = a + <usize>i * ars;
    const ci = c + <usize>i * ldc;
    for (let j = 0; j < N; j += 8) {
      tile(ai, ars, acs, at(b, j), ldb, at(ci, j), ldc, K, rows, min(8, N - j), tmp, acc);
    }
  }
}

/** Floats of one thread's scratch: the regions below, each a multiple of four floats. */
export function flexScratchFloats(bq: i32, bk: i32, D: i32, Dv: i32, backward: i32): i32 {
  const bkp = round8(bk);
  const tile = bq * bkp;
  if (backward == 0) return tile + D * bkp + bk * round8(Dv) + 2 * round4(bq) + 32;
  return 2 * tile + (D + Dv) * bkp + bk * round8(D) + bq * round8(D) + bq * round8(Dv) + round4(bq) + 32;
}

/** The block mask pair (b, h) reads (its batch or heads may be 1). */
function maskPair(params: usize, b: i32, h: i32): i32 {
  const mb = param(params, P_MASK_BATCH);
  const mh = param(params, P_MASK_HEADS);
  return (mb == 1 ? 0 : b) * mh + (mh == 1 ? 0 : h);
}

/**
 * The scores of a tile, s = scale * raw + mask (mask: the tile's [n, w] additive mask, or 0 for
 * a full tile), in place in rows of `ld` floats; returns nothing, the row maxima are taken later.
 */
function scaleAndMask(sc: usize, ld: i32, n: i32, w: i32, scale: f32, mask: usize): void {
  const sv = f32x4.splat(scale);
  for (let r = 0; r < n; r++) {
    const row = at(sc, r * ld);
    const mrow = at(mask, r * w);
    let c = 0;
    if (mask == 0) {
      for (; c + 4 <= w; c += 4) v128.store(at(row, c), f32x4.mul(v128.load(at(row, c)), sv));
      for (; c < w; c++) store<f32>(at(row, c), load<f32>(at(row, c)) * scale);
    } else {
      for (; c + 4 <= w; c += 4) {
        v128.store(at(row, c), f32x4.add(f32x4.mul(v128.load(at(row, c)), sv), v128.load(at(mrow, c))));
      }
      for (; c < w; c++) store<f32>(at(row, c), load<f32>(at(row, c)) * scale + load<f32>(at(mrow, c)));
    }
  }
}

/** Row r of a tile: p = e^(s - m) in place over its w columns (zeros past them up to w8); returns the sum. */
function expRow(row: usize, w: i32, w8: i32, m: f32): f32 {
  const mv = f32x4.splat(m);
  let sum = f32x4.splat(0);
  let c = 0;
  for (; c + 4 <= w; c += 4) {
    const p = expv(f32x4.sub(v128.load(at(row, c)), mv));
    v128.store(at(row, c), p);
    sum = f32x4.add(sum, p);
  }
  let tail: f32 = 0;
  for (; c < w; c++) {
    const p = expf(load<f32>(at(row, c)) - m);
    store<f32>(at(row, c), p);
    tail += p;
  }
  for (; c < w8; c++) store<f32>(at(row, c), 0);
  return f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + f32x4.extract_lane(sum, 2) +
    f32x4.extract_lane(sum, 3) + tail;
}

function rowMax(row: usize, w: i32): f32 {
  let mv = f32x4.splat(-Infinity);
  let c = 0;
  for (; c + 4 <= w; c += 4) mv = f32x4.max(mv, v128.load(at(row, c)));
  let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)),
    max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
  for (; c < w; c++) m = max(m, load<f32>(at(row, c)));
  return m;
}

function scaleRow(row: usize, n: i32, s: f32): void {
  const sv = f32x4.splat(s);
  let c = 0;
  for (; c + 4 <= n; c += 4) v128.store(at(row, c), f32x4.mul(v128.load(at(row, c)), sv));
  for (; c < n; c++) store<f32>(at(row, c), load<f32>(at(row, c)) * s);
}

export function flexForward(params: usize, from: i32, to: i32, scratch: usize): void {
  const H = param(params, P_H);
  const G = param(params, P_G);
  const T = param(params, P_T);
  const S = param(params, P_S);
  const D = param(params, P_D);
  const Dv = param(params, P_DVAL);
  const bq = param(params, P_BQ);
  const bk = param(params, P_BK);
  const scale = reinterpret<f32>(param(params, P_SCALE));
  const rowsList = <usize>param(params, P_ROWS);
  const nQ = (T + bq - 1) / bq;
  const R = H / G;
  const bkp = round8(bk);
  const Dvp = round8(Dv);
  // Scratch: scores [bq, bkp], k_j^T [D, bkp], v_j [bk, Dvp], row max m and sum l [bq], a 4 x 8 tile.
  const sc = scratch;
  const kt = at(sc, bq * bkp);
  const vp = at(kt, D * bkp);
  const mrow = at(vp, bk * Dvp);
  const lrow = at(mrow, round4(bq));
  const tmp = at(lrow, round4(bq));
  for (let u = from; u < to; u++) {
    const bh = u / nQ;
    const i = u % nQ;
    const b = bh / H;
    const h = bh % H;
    const g = h / R;
    const t0 = i * bq;
    const n = min(bq, T - t0);
    const qi = at(<usize>param(params, P_Q), (bh * T + t0) * D);
    const oi = at(<usize>param(params, P_O), (bh * T + t0) * Dv);
    const kg = at(<usize>param(params, P_K), (b * G + g) * S * D);
    const vg = at(<usize>param(params, P_V), (b * G + g) * S * Dv);
    memory.fill(oi, 0, <usize>(n * Dv) << 2);
    for (let r = 0; r < n; r++) {
      store<f32>(at(mrow, r), -Infinity);
      store<f32>(at(lrow, r), 0);
    }
    // The row's entries: (key block, mask tile address or 0) pairs between two offsets of the list.
    const slot = maskPair(params, b, h) * nQ + i;
    const first = load<i32>(at(rowsList, slot));
    const last = load<i32>(at(rowsList, slot + 1));
    for (let e = first; e < last; e++) {
      const j = load<i32>(at(rowsList, 2 * e));
      const mask = <usize>load<i32>(at(rowsList, 2 * e + 1));
      const s0 = j * bk;
      const w = min(bk, S - s0);
      packTransposed(at(kg, s0 * D), <usize>D << 2, w, D, kt, bkp);
      packRows(at(vg, s0 * Dv), <usize>Dv << 2, w, Dv, vp, Dvp);
      gemm(qi, <usize>D << 2, 4, kt, <usize>bkp << 2, sc, <usize>bkp << 2, n, D, w, false, tmp);
      scaleAndMask(sc, bkp, n, w, scale, mask);
      for (let r = 0; r < n; r++) {
        const row = at(sc, r * bkp);
        const mx = rowMax(row, w);
        if (mx < NO_KEY) {
          memory.fill(row, 0, <usize>bkp << 2);
          continue;
        }
        const mOld = load<f32>(at(mrow, r));
        const mNew = max(mOld, mx);
        const alpha = expf(mOld - mNew);
        const sum = expRow(row, w, bkp, mNew);
        store<f32>(at(lrow, r), load<f32>(at(lrow, r)) * alpha + sum);
        store<f32>(at(mrow, r), mNew);
        if (alpha != 1) scaleRow(at(oi, r * Dv), Dv, alpha);
      }
      gemm(sc, <usize>bkp << 2, 4, vp, <usize>Dvp << 2, oi, <usize>Dv << 2, n, w, Dv, true, tmp);
    }
    const lse = at(<usize>param(params, P_LSE), bh * T + t0);
    for (let r = 0; r < n; r++) {
      const l = load<f32>(at(lrow, r));
      if (l > 0) {
        scaleRow(at(oi, r * Dv), Dv, 1 / l);
        store<f32>(at(lse, r), load<f32>(at(mrow, r)) + logf(l));
      } else {
        store<f32>(at(lse, r), -Infinity);
      }
    }
  }
}

export function flexBackward(params: usize, from: i32, to: i32, scratch: usize): void {
  const H = param(params, P_H);
  const G = param(params, P_G);
  const T = param(params, P_T);
  const S = param(params, P_S);
  const D = param(params, P_D);
  const Dv = param(params, P_DVAL);
  const bq = param(params, P_BQ);
  const bk = param(params, P_BK);
  const scale = reinterpret<f32>(param(params, P_SCALE));
  const colsList = <usize>param(params, P_COLS);
  const dLse = <usize>param(params, P_DLSE);
  const nK = (S + bk - 1) / bk;
  const R = H / G;
  const bkp = round8(bk);
  const Dp = round8(D);
  const Dvp = round8(Dv);
  // Scratch: P and dS [bq, bkp]; k_j^T [D, bkp], v_j^T [Dv, bkp], k_j [bk, Dp], q_i [bq, Dp],
  // dO_i [bq, Dvp]; delta [bq]; a 4 x 8 tile.
  const pt = scratch;
  const ds = at(pt, bq * bkp);
  const kt = at(ds, bq * bkp);
  const vt = at(kt, D * bkp);
  const kp = at(vt, Dv * bkp);
  const qp = at(kp, bk * Dp);
  const dop = at(qp, bq * Dp);
  const delta = at(dop, bq * Dvp);
  const tmp = at(delta, round4(bq));
  const vStride = <usize>Dv << 2;
  const kStride = <usize>D << 2;
  for (let u = from; u < to; u++) {
    const b = u / G;
    const g = u % G;
    const kg = at(<usize>param(params, P_K), u * S * D);
    const vg = at(<usize>param(params, P_V), u * S * Dv);
    const dkg = at(<usize>param(params, P_DK), u * S * D);
    const dvg = at(<usize>param(params, P_DV), u * S * Dv);
    for (let r = 0; r < R; r++) {
      const h = g * R + r;
      const bh = b * H + h;
      const qh = at(<usize>param(params, P_Q), bh * T * D);
      const oh = at(<usize>param(params, P_O), bh * T * Dv);
      const doh = at(<usize>param(params, P_DO), bh * T * Dv);
      const dqh = at(<usize>param(params, P_DQ), bh * T * D);
      const lseh = at(<usize>param(params, P_LSE), bh * T);
      const pair = maskPair(params, b, h);
      for (let j = 0; j < nK; j++) {
        const slot = pair * nK + j;
        const first = load<i32>(at(colsList, slot));
        const last = load<i32>(at(colsList, slot + 1));
        if (first == last) continue;
        const s0 = j * bk;
        const w = min(bk, S - s0);
        const kj = at(kg, s0 * D);
        const vj = at(vg, s0 * Dv);
        packTransposed(kj, kStride, w, D, kt, bkp);
        packTransposed(vj, vStride, w, Dv, vt, bkp);
        packRows(kj, kStride, w, D, kp, Dp);
        const dkj = at(dkg, s0 * D);
        const dvj = at(dvg, s0 * Dv);
        for (let e = first; e < last; e++) {
          const i = load<i32>(at(colsList, 2 * e));
          const mask = <usize>load<i32>(at(colsList, 2 * e + 1));
          const t0 = i * bq;
          const n = min(bq, T - t0);
          const qi = at(qh, t0 * D);
          const doi = at(doh, t0 * Dv);
          // P = e^(s - lse): zeros for a row that sees no key.
          gemm(qi, kStride, 4, kt, <usize>bkp << 2, pt, <usize>bkp << 2, n, D, w, false, tmp);
          scaleAndMask(pt, bkp, n, w, scale, mask);
          for (let rr = 0; rr < n; rr++) {
            const row = at(pt, rr * bkp);
            const L = load<f32>(at(lseh, t0 + rr));
            if (L == -Infinity) memory.fill(row, 0, <usize>bkp << 2);
            else expRow(row, w, bkp, L);
            // delta = rowsum(dO O) - dLse.
            const orow = at(oh, (t0 + rr) * Dv);
            const drow = at(doi, rr * Dv);
            let dot: f32 = 0;
            for (let c = 0; c < Dv; c++) dot += load<f32>(at(orow, c)) * load<f32>(at(drow, c));
            if (dLse != 0) dot -= load<f32>(at(at(dLse, bh * T), t0 + rr));
            store<f32>(at(delta, rr), dot);
          }
          packRows(doi, vStride, n, Dv, dop, Dvp);
          packRows(qi, kStride, n, D, qp, Dp);
          // dV_j += P^T dO_i.
          gemm(pt, 4, <usize>bkp << 2, dop, <usize>Dvp << 2, dvj, vStride, w, n, Dv, true, tmp);
          // dP = dO_i v_j^T, then dS = scale P (dP - delta).
          gemm(doi, vStride, 4, vt, <usize>bkp << 2, ds, <usize>bkp << 2, n, Dv, w, false, tmp);
          const sv = f32x4.splat(scale);
          for (let rr = 0; rr < n; rr++) {
            const prow = at(pt, rr * bkp);
            const drow = at(ds, rr * bkp);
            const dv = f32x4.splat(load<f32>(at(delta, rr)));
            for (let c = 0; c < bkp; c += 4) {
              v128.store(at(drow, c),
                f32x4.mul(f32x4.mul(v128.load(at(prow, c)), f32x4.sub(v128.load(at(drow, c)), dv)), sv));
            }
          }
          // dQ_i += dS k_j; dK_j += dS^T q_i.
          gemm(ds, <usize>bkp << 2, 4, kp, <usize>Dp << 2, at(dqh, t0 * D), kStride, n, w, D, true, tmp);
          gemm(ds, 4, <usize>bkp << 2, qp, <usize>Dp << 2, dkj, kStride, w, n, D, true, tmp);
        }
      }
    }
  }
}
