/**
 * The types of masks and scores as functions (FlexAttention's mask_mod and score_mod):
 * see flex_mods.ts for the built-ins and flex.ts for the op.
 */
import * as tf from '@tensorflow/tfjs';

/** What a mod knows of the whole call: the sizes its index tensors range over. */
export interface ModContext {
  /** B: batch entries (1 for a block mask shared by every entry). */
  batch: number;
  /** H: query heads (1 for a block mask shared by every head). */
  heads: number;
  /** T: query positions. */
  queryLength: number;
  /** S: key positions. */
  keyLength: number;
}

/**
 * A built-in mod's description, JSON that layers store in their config (a mod holding a
 * tensor, documentMask's ids or a bias table, is not described: it is given at call time).
 */
export interface ModSpec {
  name: string;
  [arg: string]: string | number | boolean | null | number[] | ModSpec[];
}

/** Which keys each query may see: bool, broadcastable to the tile [nb, heads, bq, n]. */
export interface MaskMod {
  (b: tf.Tensor, h: tf.Tensor, qIdx: tf.Tensor, kvIdx: tf.Tensor, context: ModContext): tf.Tensor;
  /** Set on the built-ins. */
  spec?: ModSpec;
}

/** The score of each pair from the scaled score [nb, heads, bq, n]: the same shape. */
export interface ScoreMod {
  (score: tf.Tensor, b: tf.Tensor, h: tf.Tensor, qIdx: tf.Tensor, kvIdx: tf.Tensor, context: ModContext): tf.Tensor;
  /**
   * The tensors (and tf.Variables) the mod reads that should get gradients: each becomes an
   * input of the attention's gradient. Set it with `capturing`.
   */
  tensors?: readonly tf.Tensor[];
  /** Set on the built-ins. */
  spec?: ModSpec;
}
