// The 4 x 8 register tile of the library's wasm kernels (native/products.ts, native/flex.ts):
// C tile = sum over k of A(i, k) B(k, j), four rows of A broadcast against two vectors of B.

export const TILE_ROWS = 4;
export const TILE_COLS = 8;

/**
 * Writes rows x cols of the 4 x 8 tile c00..c31 (rows of two vectors) at c, row stride ldc
 * bytes; with `acc`, adds it to what is there.
 */
@inline function storeTile(c: usize, ldc: usize, rows: i32, cols: i32, tmp: usize, acc: bool,
                           c00: v128, c01: v128, c10: v128, c11: v128,
                           c20: v128, c21: v128, c30: v128, c31: v128): void {
  if (rows == TILE_ROWS && cols == TILE_COLS) {
    if (acc) {
      c00 = f32x4.add(c00, v128.load(c)); c01 = f32x4.add(c01, v128.load(c, 16));
      c10 = f32x4.add(c10, v128.load(c + ldc)); c11 = f32x4.add(c11, v128.load(c + ldc, 16));
      c20 = f32x4.add(c20, v128.load(c + 2 * ldc)); c21 = f32x4.add(c21, v128.load(c + 2 * ldc, 16));
      c30 = f32x4.add(c30, v128.load(c + 3 * ldc)); c31 = f32x4.add(c31, v128.load(c + 3 * ldc, 16));
    }
    v128.store(c, c00); v128.store(c, c01, 16);
    v128.store(c + ldc, c10); v128.store(c + ldc, c11, 16);
    v128.store(c + 2 * ldc, c20); v128.store(c + 2 * ldc, c21, 16);
    v128.store(c + 3 * ldc, c30); v128.store(c + 3 * ldc, c31, 16);
    return;
  }
  // A partial tile goes through tmp (4 rows of 8 floats), then only its valid part out.
  v128.store(tmp, c00); v128.store(tmp, c01, 16);
  v128.store(tmp, c10, 32); v128.store(tmp, c11, 48);
  v128.store(tmp, c20, 64); v128.store(tmp, c21, 80);
  v128.store(tmp, c30, 96); v128.store(tmp, c31, 112);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const at = c + <usize>r * ldc + (<usize>j << 2);
      const v = load<f32>(tmp + (<usize>(r * TILE_COLS + j) << 2));
      store<f32>(at, acc ? load<f32>(at) + v : v);
    }
  }
}

/**
 * One tile: rows x cols (at most 4 x 8) of C at c = sum over k of A(i, k) B(k, j) (added to
 * C with `acc`), A's element (i, k) at a + i ars + k acs, B's row k at b + k ldb (8 floats
 * readable there). Rows past `rows` read row 0 again and are not stored.
 */
@inline export function tile(a: usize, ars: usize, acs: usize, b: usize, ldb: usize, c: usize, ldc: usize,
                      K: i32, rows: i32, cols: i32, tmp: usize, acc: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const r1: usize = rows > 1 ? ars : 0;
  const r2: usize = rows > 2 ? 2 * ars : 0;
  const r3: usize = rows > 3 ? 3 * ars : 0;
  let pa = a;
  let pb = b;
  for (let k = 0; k < K; k++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    const a0 = f32x4.splat(load<f32>(pa));
    const a1 = f32x4.splat(load<f32>(pa + r1));
    const a2 = f32x4.splat(load<f32>(pa + r2));
    const a3 = f32x4.splat(load<f32>(pa + r3));
    c00 = f32x4.add(c00, f32x4.mul(a0, b0)); c01 = f32x4.add(c01, f32x4.mul(a0, b1));
    c10 = f32x4.add(c10, f32x4.mul(a1, b0)); c11 = f32x4.add(c11, f32x4.mul(a1, b1));
    c20 = f32x4.add(c20, f32x4.mul(a2, b0)); c21 = f32x4.add(c21, f32x4.mul(a2, b1));
    c30 = f32x4.add(c30, f32x4.mul(a3, b0)); c31 = f32x4.add(c31, f32x4.mul(a3, b1));
    pa += acs;
    pb += ldb;
  }
  storeTile(c, ldc, rows, cols, tmp, acc, c00, c01, c10, c11, c20, c21, c30, c31);
}
