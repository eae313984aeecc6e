/**
 * Shape checks and head grouping shared by the attention ops.
 *
 * Grouped-query attention: query head h reads key/value head floor(h / R) with
 * R = H / G, so the R query heads of one group are consecutive. Folding them into
 * the row axis ([B, H, T, D] -> [B, G, R*T, D]) lets one batched product serve the
 * whole group without copying k or v R times.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {maxTensorElements} from '../core/limits';
import {zerosWithZeroGrads} from './zeros';

export interface AttentionDims {
  B: number; H: number; G: number; T: number; S: number; D: number; Dv: number;
  /** Query heads per key/value head, H / G. */
  R: number;
}

/**
 * Checks q [B,H,T,D], k [B,G,S,D], v [B,G,S,Dv] and returns the letters. D (called `what`
 * in messages: the head dim, or the feature count of linear attention) must be at least 1;
 * B, T, S and Dv may be 0 (see zeroAttention).
 */
export function attentionDims(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, what = 'head dim'): AttentionDims {
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (!(t instanceof tf.Tensor)) {
      throw new AttentionError('INVALID_CONFIG', `${name} must be a tf.Tensor, received ${show(t)}`);
    }
    if (t.dtype !== 'float32') {
      throw new AttentionError('INVALID_CONFIG', `${name} must be float32, received dtype ${t.dtype}`);
    }
    if (t.rank !== 4) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `${name} must have rank 4 ([batch, heads, length, dim]), received shape ${show(t.shape)}`);
    }
  }
  const [B, H, T, D] = q.shape;
  const [Bk, G, S, Dk] = k.shape;
  const [Bv, Gv, Sv, Dv] = v.shape;
  if (Bk !== B || Bv !== B) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `q, k and v must share the batch size, received ${B}, ${Bk} and ${Bv}`);
  }
  if (Dk !== D) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `k's last dim (${Dk}) must equal q's last dim (${D})`);
  }
  if (Gv !== G) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `k and v must have the same number of heads, received ${G} and ${Gv}`);
  }
  if (Sv !== S) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `k and v must have the same length, received ${S} and ${Sv}`);
  }
  if (D === 0) {
    throw new AttentionError('DIMENSION_MISMATCH', `the ${what} of q and k (their last dim) must be at least 1, received 0`);
  }
  if (G === 0 && H > 0) {
    throw new AttentionError('DIMENSION_MISMATCH', `k and v have no heads (shape ${show(k.shape)}) for the ${H} heads of q`);
  }
  if (H % G !== 0) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `query heads (${H}) must be divisible by key/value heads (${G})`);
  }
  return {B, H, G, T, S, D, Dv, R: H / G};
}

/** [B, H, T, X] -> [B, G, R*T, X]: the query heads of one kv group stacked along rows. */
export function groupHeads(x: tf.Tensor, dims: AttentionDims): tf.Tensor {
  const {B, G, R} = dims;
  if (R === 1) return x; // already [B, G, T, X]; a reshape would only add a view
  const [, , T, X] = x.shape as number[];
  return tf.reshape(x, [B, G, R * T, X]); // [B, G, R*T, X]
}

/** [B, G, R*T, X] -> [B, H, T, X]: the inverse of groupHeads. */
export function ungroupHeads(x: tf.Tensor, dims: AttentionDims, T: number): tf.Tensor {
  const {B, H, R} = dims;
  if (R === 1) return x; // already [B, H, T, X]
  const X = x.shape[3] as number;
  return tf.reshape(x, [B, H, T, X]); // [B, H, T, X]
}

/**
 * [B, G, S, X] -> [B, H, S, X] with H = G * R: key/value head g repeated for its R query
 * heads (h reads g = floor(h / R)). A rank-4 tile, whose gradient tfjs has.
 */
export function repeatHeads(x: tf.Tensor, R: number): tf.Tensor {
  if (R === 1) return x;
  const [B, G, S, X] = x.shape as number[];
  const tiled = tf.tile(tf.reshape(x, [B, G, 1, S * X]), [1, 1, R, 1]); // [B, G, R, S*X]
  return tf.reshape(tiled, [B, G * R, S, X]);                           // [B, H, S, X]
}

/** True when the attention of these dims has no output entries or no keys: zeroAttention answers it. */
export function isEmptyAttention({B, H, T, S, Dv}: AttentionDims): boolean {
  return B * H * T * Dv === 0 || S === 0;
}

/**
 * The attention result when there is nothing to attend or to output (B, H, T or Dv = 0, or
 * no keys at all): zeros [B, H, T, Dv] (every row sees no key), with zero gradients for q,
 * k, v and any `others` the op takes (a gate, a projection).
 */
export function zeroAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, dims: AttentionDims,
                              ...others: tf.Tensor[]): tf.Tensor4D {
  const {B, H, T, Dv} = dims;
  return zerosWithZeroGrads([B, H, T, Dv], [q, k, v, ...others]) as tf.Tensor4D;
}

/**
 * Throws UNSUPPORTED, naming the shape and its size, when `who` would form a float32
 * tensor of `shape` that the active backend cannot hold, before anything is allocated
 * (running out of the wasm heap corrupts it for the rest of the process).
 */
export function assertFits(who: string, what: string, shape: readonly number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const limit = maxTensorElements();
  if (n > limit) {
    throw new AttentionError('UNSUPPORTED',
      `${who} would form ${what} of shape ${show([...shape])} (${n.toExponential(2)} float32 entries, ` +
      `${(n * 4 / 2 ** 30).toFixed(1)} GiB), more than one tensor can hold on the ${tf.getBackend()} backend ` +
      `(${limit.toExponential(2)} entries)`);
  }
}

/** The scale of q k^T: `scale` when given (a finite number, else INVALID_CONFIG), else 1 / sqrt(D). */
export function attentionScale(scale: unknown, D: number): number {
  const value = scale ?? 1 / Math.sqrt(D);
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new AttentionError('INVALID_CONFIG', `scale must be a finite number, received ${show(scale)}`);
  }
  return value;
}
