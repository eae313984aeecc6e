/**
 * Matrix products arranged for the backend.
 *
 * The wasm backend of tfjs 4.22 multiplies fast (XNNPACK) only when both operands are 2-D
 * and neither is transposed; a batched (rank 3+) or transposed product falls to a naive
 * loop, many times slower. Autograd makes it worse: the gradient of `tf.matMul` is built
 * from transposed products.
 *
 * `matMul` here has the semantics of `tf.matMul` (batch dims equal, or `b` 2-D). On a
 * backend in SPLIT_BACKENDS it computes the product as one 2-D, non-transposed `tf.matMul`
 * per batch entry, with explicit `tf.transpose`s of whichever operands are cheapest to
 * transpose, and its `tf.customGrad` backward is built the same way. Elsewhere
 * (tensorflow, webgl, cpu) it is `tf.matMul`, whose kernels need no help.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {zerosWithZeroGrads} from './zeros';
import {hasFastProducts} from '../kernels/wasm_matmul';

/**
 * How products are computed: 'auto' splits on the backends in SPLIT_BACKENDS, 'split'
 * always splits, 'batched' never does (plain `tf.matMul`).
 */
export type MatMulPath = 'auto' | 'split' | 'batched';
export const MATMUL_PATHS: readonly MatMulPath[] = ['auto', 'split', 'batched'];

/** Backends whose fast product is 2-D and non-transposed only. */
export const SPLIT_BACKENDS: readonly string[] = ['wasm'];

let currentPath: MatMulPath = 'auto';

/** Sets how products are computed for every op of the library; returns the previous setting. */
export function setMatMulPath(path: MatMulPath): MatMulPath {
  if (!MATMUL_PATHS.includes(path)) {
    throw new AttentionError('INVALID_CONFIG', `matMul path must be one of ${MATMUL_PATHS.join(', ')}, ` +
      `received ${show(path)}`);
  }
  const previous = currentPath;
  currentPath = path;
  return previous;
}

export function getMatMulPath(): MatMulPath {
  return currentPath;
}

/**
 * True when products are split into 2-D, non-transposed ones on the active backend: 'split',
 * or 'auto' on a backend in SPLIT_BACKENDS whose product kernel is still tfjs's slow one
 * (once the library's wasm product kernels are in place, every product takes the fast path
 * in one kernel: no splitting).
 */
export function splitsProducts(): boolean {
  if (currentPath !== 'auto') return currentPath === 'split';
  const backend = tf.getBackend();
  return SPLIT_BACKENDS.includes(backend) && !hasFastProducts(backend);
}

/**
 * True when scaledDotProductAttention takes the tiled engine (no T x S matrix kept between
 * the passes): 'split', or 'auto' on a backend in SPLIT_BACKENDS (wasm), whatever its
 * product kernels; with the library's fast products the engine's products are batched.
 */
export function tilesAttention(): boolean {
  if (currentPath !== 'auto') return currentPath === 'split';
  return SPLIT_BACKENDS.includes(tf.getBackend());
}

/** Swaps the last two axes. */
export function swapLast(x: tf.Tensor): tf.Tensor {
  const r = x.rank;
  if (r === 2) return tf.transpose(x);
  const perm = Array.from({length: r}, (_, i) => i);
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return tf.transpose(x, perm);
}

/** x[n] of x [N, ...]: the contiguous slice of rows [n, n+1), without its leading axis. */
export function entry(x: tf.Tensor, n: number): tf.Tensor {
  const [, ...rest] = x.shape as number[];
  return tf.reshape(tf.slice(x, [n, ...rest.map(() => 0)], [1, ...rest]), rest);
}

/** a [N, m, k] x b [N, k, n] -> [N, m, n] (or a [N, m, k] x b [k, n]): 2-D products only. */
function plainProducts(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [N, m, k] = a.shape as number[];
  if (b.rank === 2) {
    // A shared right operand: the batch folds into the rows of one product.
    const n = b.shape[1] as number;
    return tf.reshape(tf.matMul(tf.reshape(a, [N * m, k]), b), [N, m, n]);
  }
  const n = b.shape[2] as number;
  if (N === 1) return tf.reshape(tf.matMul(tf.reshape(a, [m, k]), tf.reshape(b, [k, n])), [1, m, n]);
  // Each product in its own tidy, and the pieces freed once joined: the transient memory
  // is one copy of the output, not three.
  const parts: tf.Tensor[] = [];
  for (let i = 0; i < N; i++) {
    parts.push(tf.tidy(() => tf.matMul(entry(a, i), entry(b, i)))); // [m, n]
  }
  const joined = tf.concat(parts, 0); // [N*m, n]
  tf.dispose(parts);
  const out = tf.reshape(joined, [N, m, n]);
  joined.dispose();
  return out;
}

/**
 * op(a) op(b) for a, b of rank 3 ([N, ., .]; b may be 2-D when a is not transposed) from
 * non-transposed 2-D products. Either transposes the transposed operands, or computes
 * C^T = op(b)^T op(a)^T and transposes C: whichever moves fewer numbers.
 */
function arranged(a: tf.Tensor, b: tf.Tensor, tA: boolean, tB: boolean): tf.Tensor {
  if (!tA && !tB) return plainProducts(a, b);
  const sizeA = a.size / (a.shape[0] as number);
  const sizeB = b.rank === 2 ? b.size : b.size / (b.shape[0] as number);
  const [ar, ac] = a.shape.slice(-2) as number[];
  const [br, bc] = b.shape.slice(-2) as number[];
  const sizeC = (tA ? ac : ar) * (tB ? br : bc);
  const direct = (tA ? sizeA : 0) + (tB ? sizeB : 0);
  const swapped = (tA ? 0 : sizeA) + (tB ? 0 : sizeB) + sizeC;
  if (direct <= swapped || b.rank === 2) {
    return tf.tidy(() => plainProducts(tA ? swapLast(a) : a, tB ? swapLast(b) : b));
  }
  const cT = tf.tidy(() => plainProducts(tB ? b : swapLast(b), tA ? a : swapLast(a)));
  const c = swapLast(cT);
  cT.dispose();
  return c;
}

/** The split product with a backward pass of split products: a, b of rank 3 (b may be 2-D, see arranged). */
function splitProduct(a: tf.Tensor, b: tf.Tensor, tA: boolean, tB: boolean): tf.Tensor {
  const f = tf.customGrad(((x: tf.Tensor, y: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x, y]);
    return {
      value: arranged(x, y, tA, tB),
      gradFunc: (dy: tf.Tensor, [sx, sy]: tf.Tensor[]) => tf.tidy(() => {
        // A 2-D right operand shared by the batch: its gradient sums over the batch,
        // which the folded rows of a 2-D product do.
        const fold = (t: tf.Tensor) => tf.reshape(t, [-1, t.shape[2] as number]);
        if (sy.rank === 2) {
          const dx = arranged(dy, sy, false, !tB);                                   // [N, m, k]
          const dyFlat = fold(dy);                                                    // [N*m, n]
          const dw = tB ? arranged(tf.expandDims(dyFlat, 0), tf.expandDims(fold(sx), 0), true, false)
            : arranged(tf.expandDims(fold(sx), 0), tf.expandDims(dyFlat, 0), true, false);
          return [dx, tf.reshape(dw, sy.shape)];
        }
        if (!tA && !tB) return [arranged(dy, sy, false, true), arranged(sx, dy, true, false)];
        if (!tA && tB) return [arranged(dy, sy, false, false), arranged(dy, sx, true, false)];
        if (tA && !tB) return [arranged(sy, dy, false, true), arranged(sx, dy, false, false)];
        return [arranged(sy, dy, true, true), arranged(dy, sx, true, true)];
      }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor, y: tf.Tensor) => tf.Tensor;
  return f(a, b);
}

/**
 * `tf.matMul(a, b, transposeA, transposeB)` for a of rank >= 2 and b of the same rank
 * and batch dims, or b 2-D with a not transposed. Splits into 2-D, non-transposed
 * products (forward and backward) where `splitsProducts()`; plain `tf.matMul` otherwise
 * and for operand shapes outside the above.
 */
export function matMul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  // Empty operands: zeros of the product's shape (wasm's kernel divides by zero on them).
  if (a.size === 0 || b.size === 0) return emptyProduct(a, b, transposeA, transposeB);
  if (!splitsProducts()) return tf.matMul(a, b, transposeA, transposeB);
  return tf.tidy(() => {
    if (a.rank === 2 && b.rank === 2) {
      const out = splitProduct(tf.expandDims(a, 0), tf.expandDims(b, 0), transposeA, transposeB);
      return tf.squeeze(out, [0]);
    }
    const batch = a.shape.slice(0, -2) as number[];
    const [ar, ac] = a.shape.slice(-2) as number[];
    const m = transposeA ? ac : ar;
    if (a.rank >= 3 && b.rank === 2 && !transposeA) {
      const n = transposeB ? (b.shape[0] as number) : (b.shape[1] as number);
      const out = splitProduct(tf.reshape(a, [-1, ar, ac]), b, false, transposeB);
      return tf.reshape(out, [...batch, m, n]);
    }
    const sameBatch = a.rank >= 3 && b.rank === a.rank && batch.every((d, i) => d === b.shape[i]);
    if (!sameBatch) return tf.matMul(a, b, transposeA, transposeB);
    const [br, bc] = b.shape.slice(-2) as number[];
    const n = transposeB ? br : bc;
    const out = splitProduct(tf.reshape(a, [-1, ar, ac]), tf.reshape(b, [-1, br, bc]), transposeA, transposeB);
    return tf.reshape(out, [...batch, m, n]);
  });
}

/**
 * op(a) op(b) when a or b has no entries: zeros of the product's shape (an empty tensor,
 * or zeros when only the summed dimension is 0), with zero gradients. Shapes are checked
 * as tf.matMul checks them.
 */
function emptyProduct(a: tf.Tensor, b: tf.Tensor, tA: boolean, tB: boolean): tf.Tensor {
  if (a.rank < 2 || b.rank < 2) return tf.matMul(a, b, tA, tB); // tfjs' own error
  const [ar, ac] = a.shape.slice(-2) as number[];
  const [br, bc] = b.shape.slice(-2) as number[];
  const inner = [tA ? ar : ac, tB ? bc : br];
  if (inner[0] !== inner[1]) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `matMul: the inner dims of ${show(a.shape)} and ${show(b.shape)} (${inner[0]} and ${inner[1]}) must be equal`);
  }
  const batchA = a.shape.slice(0, -2) as number[];
  const batchB = b.shape.slice(0, -2) as number[];
  const sameBatch = batchB.length === 0 || (batchA.length === batchB.length && batchA.every((d, i) => d === batchB[i]));
  if (!sameBatch) return tf.matMul(a, b, tA, tB); // tfjs' own rules (and errors) for other batch shapes
  const shape = [...batchA, tA ? ac : ar, tB ? br : bc];
  return zerosWithZeroGrads(shape, [a, b]);
}
