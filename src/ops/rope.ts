/**
 * Rotary position embedding (RoPE: "RoFormer: Enhanced Transformer with Rotary Position
 * Embedding", Su et al. 2021). The first `dim` channels of each head are split into
 * halves (x1, x2) = (x[0 : dim/2], x[dim/2 : dim]) and channel pair (i, i + dim/2) at
 * position p is rotated by the angle p * base^(-2i / dim):
 *   x1' = x1 cos - x2 sin,   x2' = x2 cos + x1 sin,
 * the rest pass unchanged (partial rotary, as GPT-NeoX's rotary_pct). The half split is
 * the layout of keras-hub's RotaryEmbedding and of Hugging Face's rotate_half. Since the
 * rotation of q at m and of k at n multiply as a rotation by n - m, q'.k' depends on the
 * positions only through their offset.
 *
 * Computed as x * C + (x R) * S with [T, D] tables C (cos, 1 past dim) and S (sin, 0 past
 * dim) and one fixed [D, D] matrix R (the signed half swap), so it is a 2-D matMul and
 * elementwise ops, with no slice or concat of the channels.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertPositiveInt} from '../core/validate';
import {matMul} from './matmul';

export const DEFAULT_ROPE_BASE = 10000;

export interface RopeOptions {
  /** The position of the first row: rows are at start, start + 1, ... Default 0. */
  start?: number;
  /** The frequencies' base. Default DEFAULT_ROPE_BASE (10000). */
  base?: number;
  /** Channels rotated, even and at most D. Default D. */
  dim?: number;
}

/** Throws INVALID_CONFIG unless dim is an even positive integer no larger than D. */
export function checkRopeDim(dim: number, D: number): void {
  assertPositiveInt('ropeDim', dim);
  if (dim % 2 !== 0 || dim > D) {
    throw new AttentionError('INVALID_CONFIG',
      `ropeDim must be even and at most the head dim (${D}), received ${show(dim)}`);
  }
}

/** Throws INVALID_CONFIG unless base is a finite number above 1. */
export function checkRopeBase(base: unknown): asserts base is number {
  if (typeof base !== 'number' || !Number.isFinite(base) || base <= 1) {
    throw new AttentionError('INVALID_CONFIG', `ropeBase must be a finite number above 1, received ${show(base)}`);
  }
}

/** [T, D] cos and sin tables for positions start .. start + T - 1 (1 and 0 past dim). */
function tables(T: number, D: number, dim: number, start: number, base: number): [tf.Tensor2D, tf.Tensor2D] {
  const half = dim / 2;
  const c = new Float32Array(T * D).fill(1);
  const s = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (start + t) * Math.pow(base, (-2 * i) / dim);
      const [cos, sin] = [Math.cos(angle), Math.sin(angle)];
      c[t * D + i] = cos;
      c[t * D + i + half] = cos;
      s[t * D + i] = sin;
      s[t * D + i + half] = sin;
    }
  }
  return [tf.tensor2d(c, [T, D]), tf.tensor2d(s, [T, D])];
}

/** [D, D] R with (x R)[i] = -x[i + half] for i < half, x[i - half] for half <= i < dim, 0 after. */
function halfSwap(D: number, dim: number): tf.Tensor2D {
  const half = dim / 2;
  const r = new Float32Array(D * D);
  for (let i = 0; i < half; i++) {
    r[(i + half) * D + i] = -1;
    r[i * D + i + half] = 1;
  }
  return tf.tensor2d(r, [D, D]);
}

/** x [B, N, T, D] rotated at positions start .. start + T - 1; see the file comment. */
export function rotaryEmbedding(x: tf.Tensor, options: RopeOptions = {}): tf.Tensor4D {
  if (!(x instanceof tf.Tensor) || x.rank !== 4) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `rotaryEmbedding takes x [batch, heads, length, dim], received ${x instanceof tf.Tensor ? `shape ${show(x.shape)}` : show(x)}`);
  }
  const [B, N, T, D] = x.shape as number[];
  const start = options.start ?? 0;
  if (!Number.isInteger(start) || start < 0) {
    throw new AttentionError('INVALID_CONFIG', `start must be a non-negative integer, received ${show(start)}`);
  }
  const base = options.base ?? DEFAULT_ROPE_BASE;
  checkRopeBase(base);
  const dim = options.dim ?? D;
  checkRopeDim(dim, D);
  if (x.size === 0) return tf.clone(x) as tf.Tensor4D;
  return tf.tidy(() => {
    const [c, s] = tables(T, D, dim, start, base);                                  // [T, D] each
    const swapped = tf.reshape(matMul(tf.reshape(x, [B * N * T, D]), halfSwap(D, dim)), [B, N, T, D]); // [B, N, T, D]
    return tf.add(tf.mul(x, c), tf.mul(swapped, s)) as tf.Tensor4D;
  });
}
