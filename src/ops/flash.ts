/**
 * FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023): exact attention computed
 * in tiles with an online softmax, so the T x S score matrix is never held, neither in
 * the forward pass nor in the backward pass.
 *
 * Built with tf.customGrad: the forward keeps only the output O and the per-row
 * logsumexp L = M + log(l), held as its two parts (the row max M and log l) because at
 * logits of 1e4 a float32 sum M + log(l) would lose ~1e-3 of the exponent; the backward
 * recomputes each tile's probabilities as exp((S - M) - log l). Memory is O(T*D) plus a
 * few tiles of R*bq x bk scores, instead of O(T*S). The tiles and their schedule are
 * ops/tiled.ts's, shared with scaledDotProductAttention's wasm path: by default a query
 * block of DEFAULT_BLOCK_SIZE positions sees all its keys in one tile up to 8192 keys.
 */
import * as tf from '@tensorflow/tfjs';
import {noProbabilities} from '../core/arguments';
import {assertPositiveInt, checkArgNames} from '../core/validate';
import {AttentionDims, assertFits, attentionDims, isEmptyAttention, zeroAttention, attentionScale} from './heads';
import {CausalAlignment, CausalArg, causalAlignment, causalOffset} from './causal';
import {normalizeMask} from './masks';
import {TilePlan} from './tile_plan';
import {tiledAttention} from './tiled';

export interface FlashOptions {
  /** Bool or 0/1, 1 = may attend; [T, S], [B, T, S] or broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor | null;
  /** true or 'bottom-right': query i sees key j iff j <= i + (S - T); 'top-left': iff j <= i. Default false. */
  causal?: CausalArg;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /**
   * Query positions per tile, and keys per tile unless keyBlockSize says otherwise. Default:
   * DEFAULT_BLOCK_SIZE query positions, and keys filling a tile of FLASH_TILE_SCORES scores.
   */
  blockSize?: number | null;
  /** Keys per tile. Default: blockSize when that is given, else as many as fill FLASH_TILE_SCORES. */
  keyBlockSize?: number | null;
}

/**
 * Query positions per tile when blockSize is not given (a tile has R * DEFAULT_BLOCK_SIZE
 * rows for R query heads per key/value head), chosen from forward+backward timings on wasm
 * (docs/benchmarks.md).
 */
export const DEFAULT_BLOCK_SIZE = 256;

/**
 * Scores one tile holds when the key tile is left to the default: 2^21 (8 MiB of float32),
 * so at R * DEFAULT_BLOCK_SIZE = 256 rows a tile spans 8192 keys: up to that length every
 * query block sees all its keys in one tile and needs no online rescaling.
 */
export const FLASH_TILE_SCORES = 2 ** 21;

/** The option names flashAttention takes. */
export const FLASH_OPTIONS = ['mask', 'causal', 'scale', 'blockSize', 'keyBlockSize'] as const;

/**
 * The tiles of a flash call: bq query positions (blockSize, default DEFAULT_BLOCK_SIZE) and
 * bk keys (keyBlockSize, else blockSize when given, else what fills FLASH_TILE_SCORES), neither
 * longer than the sequence it tiles.
 */
export function flashPlan(dims: AttentionDims, scale: number, alignment: CausalAlignment | null,
                          blockSize: number | null, keyBlockSize: number | null): TilePlan {
  const {T, S, R} = dims;
  const bq = Math.min(blockSize ?? DEFAULT_BLOCK_SIZE, T);
  const bk = keyBlockSize ?? blockSize ?? Math.max(bq, Math.floor(FLASH_TILE_SCORES / (R * bq)));
  return {...dims, scale, bq, bk: Math.min(bk, S), causal: alignment != null,
    offset: alignment != null ? causalOffset(alignment, T, S) : 0};
}

/**
 * Exact attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] (G divides H;
 * query head h reads key/value head floor(h / (H / G))) without holding the T x S
 * scores (but a short sequence's, at most UNIT_WORK_ELEMENTS, which it keeps for the
 * backward, see ops/tiled.ts): same results and semantics as scaledDotProductAttention (masks with
 * 1 = may attend, causal in either alignment, zero rows where nothing is visible), gradients
 * for q, k and v through a tiled backward pass.
 *
 * Returns [B, H, T, Dv].
 */
export function flashAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: FlashOptions = {}): tf.Tensor4D {
  options = options ?? {};
  checkArgNames('flashAttention', options, FLASH_OPTIONS, noProbabilities('flashAttention'));
  const dims = attentionDims(q, k, v);
  const scale = attentionScale(options.scale, dims.D);
  if (options.blockSize != null) assertPositiveInt('blockSize', options.blockSize);
  if (options.keyBlockSize != null) assertPositiveInt('keyBlockSize', options.keyBlockSize);
  const alignment = causalAlignment(options.causal);
  const {B, H, T, S} = dims;
  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(normalizeMask(options.mask, [B, H, T, S])); // still checked
    return zeroAttention(q, k, v, dims);
  }
  const plan = flashPlan(dims, scale, alignment, options.blockSize ?? null, options.keyBlockSize ?? null);
  assertFits('flashAttention', 'the scores of a tile', [dims.R * plan.bq, plan.bk]);
  // The mask enters as a (non-differentiated) input so it is saved for the backward pass.
  const keep = options.mask != null
    ? tf.tidy(() => tf.cast(normalizeMask(options.mask!, [B, H, T, S]), 'float32'))
    : null;

  const out = tiledAttention(plan, q, k, v, keep);
  if (keep != null) keep.dispose();
  return out as tf.Tensor4D;
}
