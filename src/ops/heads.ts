/**
 * Shape checks and head grouping shared by the attention ops.
 *
 * Grouped-query attention: query head h reads key/value head floor(h / R) with
 * R = H / G, so the R query heads of one group are consecutive. Folding them into
 * the row axis ([B, H, T, D] -> [B, G, R*T, D]) lets one batched product serve the
 * whole group without copying k or v R times.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../errors';

export interface AttentionDims {
  B: number; H: number; G: number; T: number; S: number; D: number; Dv: number;
  /** Query heads per key/value head, H / G. */
  R: number;
}

/** Checks q [B,H,T,D], k [B,G,S,D], v [B,G,S,Dv] and returns the letters. */
export function attentionDims(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor): AttentionDims {
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
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
