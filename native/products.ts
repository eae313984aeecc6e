// AssemblyScript source of the library's batched product kernel for the wasm backend
// (compiled by scripts/build-native.js into src/kernels/native_module.ts; see src/kernels/wasm_native.ts).
//
// It runs on tfjs-backend-wasm's own memory (imported, so operands are read and written
// where the tensors live) and keeps no state: no data segments, no globals, no allocation.
// Every address is a byte offset into that memory.
//
// products(list, from, to, M, K, N, transA, transB, scratch) computes, for each unit u in
// [from, to), C_u[M, N] = op(A_u) op(B_u), where the unit's three byte offsets (a, b, c)
// are the i32 triple at list + 12 u; op(A) is A [M, K] or, with transA, A [K, M] read
// transposed, and the same for B [K, N] / [N, K]. `scratch` holds K x roundUp(N, 8) + 32
// floats for this call alone (each thread passes its own).

import {TILE_COLS, TILE_ROWS, tile} from './tile';

export {flexBackward, flexForward, flexScratchFloats} from './flex';

/** scratch [K, N8] = B [K, N] (transB: B^T of B [N, K]), columns N..N8 zero. */
function pack(b: usize, K: i32, N: i32, N8: i32, transB: i32, scratch: usize): void {
  for (let k = 0; k < K; k++) {
    const row = scratch + (<usize>(k * N8) << 2);
    if (transB) {
      for (let j = 0; j < N; j++) store<f32>(row + (<usize>j << 2), load<f32>(b + (<usize>(j * K + k) << 2)));
    } else {
      memory.copy(row, b + (<usize>(k * N) << 2), <usize>N << 2);
    }
    for (let j = N; j < N8; j++) store<f32>(row + (<usize>j << 2), 0);
  }
}

export function products(list: usize, from: i32, to: i32, M: i32, K: i32, N: i32, transA: i32, transB: i32,
                         scratch: usize): void {
  const N8 = (N + TILE_COLS - 1) & ~(TILE_COLS - 1);
  const packed = transB != 0 || N8 != N;
  const tmp = scratch + (<usize>(K * N8) << 2);
  const ars: usize = transA ? 4 : <usize>K << 2;
  const acs: usize = transA ? <usize>M << 2 : 4;
  const ldc = <usize>N << 2;
  for (let u = from; u < to; u++) {
    const entry = list + <usize>u * 12;
    const a = <usize>load<u32>(entry);
    let b = <usize>load<u32>(entry, 4);
    const c = <usize>load<u32>(entry, 8);
    let ldb = <usize>N << 2;
    if (packed) {
      pack(b, K, N, N8, transB, scratch);
      b = scratch;
      ldb = <usize>N8 << 2;
    }
    for (let i = 0; i < M; i += TILE_ROWS) {
      const rows = min(TILE_ROWS, M - i);
      const ai = a + <usize>i * ars;
      const ci = c + <usize>i * ldc;
      for (let j = 0; j < N; j += TILE_COLS) {
        tile(ai, ars, acs, b + (<usize>j << 2), ldb, ci + (<usize>j << 2), ldc, K, rows, min(TILE_COLS, N - j), tmp,
          false);
      }
    }
  }
}

/** Rows of B packed at a time by `panels`: GROUP panels of [PANEL_DEPTH, 8] (16 KiB) stay in the first-level cache. */
const PANEL_DEPTH = 128;
/** Panels of eight columns per work item of `panels`: each strip of A read serves all of them. */
const GROUP = 4;

/**
 * One product C [M, N] = op(A) op(B) by work items of 32 columns times `rows` rows: item u in
 * [from, to) is column block g = u / blocks (columns 32g .. 32g + 31) of row block u % blocks
 * (rows (u % blocks) rows onward), blocks = ceil(M / rows). For each item those columns of B
 * are packed PANEL_DEPTH rows at a time into scratch as four panels of eight, and every row
 * of the item accumulates over them, each strip of four rows of A used for the four panels
 * while it is in cache. A's element (i, k) is at a + i ars + k acs and B's element (k, j) at
 * b + k brs + j bcs (bcs = 4: rows contiguous). `scratch` holds GROUP x PANEL_DEPTH x 8 + 32
 * floats. Each element of C is summed in the same order whatever `rows` is.
 */
export function panels(a: usize, ars: usize, acs: usize, b: usize, brs: usize, bcs: usize, c: usize,
                       M: i32, K: i32, N: i32, rows: i32, from: i32, to: i32, scratch: usize): void {
  const blocks = (M + rows - 1) / rows;
  const ldc = <usize>N << 2;
  for (let u = from; u < to; u++) {
    const i0 = (u % blocks) * rows;
    columnBlock(a + <usize>i0 * ars, ars, acs, b, brs, bcs, c + <usize>i0 * ldc, min(rows, M - i0), K, N, u / blocks,
      scratch);
  }
}

/** Columns 32g .. 32g + 31 of C [M, N] (see panels). */
function columnBlock(a: usize, ars: usize, acs: usize, b: usize, brs: usize, bcs: usize, c: usize,
                     M: i32, K: i32, N: i32, g: i32, scratch: usize): void {
  const ldc = <usize>N << 2;
  const panelBytes = <usize>(PANEL_DEPTH * TILE_COLS) << 2;
  const tmp = scratch + <usize>GROUP * panelBytes;
  const j0 = g * GROUP * TILE_COLS;
  const panelCount = min(GROUP, (N - j0 + TILE_COLS - 1) / TILE_COLS);
  for (let k0 = 0; k0 < K; k0 += PANEL_DEPTH) {
    const depth = min(PANEL_DEPTH, K - k0);
    for (let q = 0; q < panelCount; q++) {
      const j = j0 + q * TILE_COLS;
      const cols = min(TILE_COLS, N - j);
      const panel = scratch + <usize>q * panelBytes;
      for (let k = 0; k < depth; k++) {
        const src = b + <usize>(k0 + k) * brs + <usize>j * bcs;
        const dst = panel + (<usize>(k * TILE_COLS) << 2);
        if (cols == TILE_COLS && bcs == 4) {
          v128.store(dst, v128.load(src));
          v128.store(dst, v128.load(src, 16), 16);
        } else {
          for (let t = 0; t < TILE_COLS; t++) {
            store<f32>(dst + (<usize>t << 2), t < cols ? load<f32>(src + <usize>t * bcs) : 0);
          }
        }
      }
    }
    const ak = a + <usize>k0 * acs;
    for (let i = 0; i < M; i += TILE_ROWS) {
      const rows = min(TILE_ROWS, M - i);
      for (let q = 0; q < panelCount; q++) {
        const j = j0 + q * TILE_COLS;
        tile(ak + <usize>i * ars, ars, acs, scratch + <usize>q * panelBytes, TILE_COLS << 2,
          c + <usize>i * ldc + (<usize>j << 2), ldc, depth, rows, min(TILE_COLS, N - j), tmp, k0 > 0);
      }
    }
  }
}
