/**
 * What the engines that work unit by unit share (the tiled engine of exact attention and
 * linear attention's FAVOR+ engine). A unit is a range of (batch entry, key/value group)
 * pairs worked at once: a single pair where products are split into 2-D ones, as many as a
 * memory budget allows on wasm, every pair elsewhere. Its products are plain 2-D ones for a
 * single pair and batched for more; its tensors are freed step by step (`disposeAfter`)
 * rather than at the end of a tidy, which would keep every step's buffer alive.
 */
import * as tf from '@tensorflow/tfjs';
import {matMul, splitsProducts, tilesAttention} from './matmul';

/**
 * How many units an engine takes at once: 1 where products are split; on the backends in
 * SPLIT_BACKENDS (wasm, whose memory is one heap that never shrinks) as many as keep a
 * step's largest intermediate, `perUnit` elements for one unit, within `budget` (so long
 * sequences go one unit at a time and short ones in one batch); elsewhere all `total`.
 */
export function unitsAtOnce(total: number, perUnit: number, budget: number): number {
  if (splitsProducts()) return 1;
  if (!tilesAttention()) return total;
  return Math.max(1, Math.min(total, Math.floor(budget / Math.max(1, perUnit))));
}

/** y = f(x), then x disposed: keeps one buffer alive where a tidy would keep every step's. */
export function disposeAfter(x: tf.Tensor, f: (x: tf.Tensor) => tf.Tensor): tf.Tensor {
  const y = f(x);
  x.dispose();
  return y;
}

/** Concatenates parts along `axis` and disposes them (a single part is returned as it is). */
export function concatAndDispose(parts: tf.Tensor[], axis: number): tf.Tensor {
  if (parts.length === 1) return parts[0];
  const out = tf.concat(parts, axis);
  tf.dispose(parts);
  return out;
}

/** The number of units of x [...units, ., .]: the product of its leading dims. */
function unitCount(shape: number[]): number {
  return shape.slice(0, -2).reduce((n, d) => n * d, 1);
}

/**
 * a [...units, m, k] times b [...units, k, n], or times b [k, n] for every unit: one 2-D
 * product for a single unit or a shared b (the units folded into its rows), batched otherwise.
 */
export function unitMatMul(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const shape = a.shape as number[];
  const units = unitCount(shape);
  if (b.rank > 2 && units > 1) return matMul(a, b);
  const [m, k] = shape.slice(-2);
  const n = b.shape[b.rank - 1] as number;
  // Every view disposed here: a view keeps its buffer alive until the enclosing tidy ends.
  const a2 = tf.reshape(a, [units * m, k]);                   // [units*m, k]
  const b2 = b.rank === 2 ? b : tf.reshape(b, [k, n]);        // [k, n]
  const c = tf.matMul(a2, b2);
  tf.dispose(b2 === b ? [a2] : [a2, b2]);
  return disposeAfter(c, (x) => tf.reshape(x, [...shape.slice(0, -2), m, n])); // [...units, m, n]
}

/** a [...units, k, m] transposed times b [...units, k, n]: a^T b [...units, m, n], as unitMatMul. */
export function unitMatMulTransposeA(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const shape = a.shape as number[];
  if (unitCount(shape) !== 1) return matMul(a, b, true, false);
  const [k, m] = shape.slice(-2);
  const n = b.shape[b.rank - 1] as number;
  const a2 = tf.reshape(a, [k, m]);
  const b2 = tf.reshape(b, [k, n]);
  const c = matMul(a2, b2, true, false);
  tf.dispose([a2, b2]);
  return disposeAfter(c, (x) => tf.reshape(x, [...shape.slice(0, -2), m, n])); // [...units, m, n]
}

/** x sliced to [start, start + n) along `axis` (a copy of the whole tensor when that is all of it). */
function sliceAxis(x: tf.Tensor, axis: number, start: number, n: number): tf.Tensor {
  const shape = x.shape as number[];
  if (start === 0 && n === shape[axis]) return tf.clone(x);
  return tf.slice(x, shape.map((_, i) => (i === axis ? start : 0)), shape.map((d, i) => (i === axis ? n : d)));
}

/** Rows [start, start + n) of x [..., L, C]: [..., n, C]. */
export function sliceRows(x: tf.Tensor, start: number, n: number): tf.Tensor {
  return sliceAxis(x, x.rank - 2, start, n);
}

/** Columns [start, start + n) of x [..., L, C]: [..., L, n]. */
export function sliceColumns(x: tf.Tensor, start: number, n: number): tf.Tensor {
  return sliceAxis(x, x.rank - 1, start, n);
}
