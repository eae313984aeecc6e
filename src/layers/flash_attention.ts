/**
 * FlashAttention layer: multi-head attention with grouped-query heads whose attention is
 * computed by `flashAttention` ("FlashAttention: Fast and Memory-Efficient Exact Attention
 * with IO-Awareness", Dao et al. 2022; FlashAttention-2, Dao 2023). The result is the
 * exact attention of MultiHeadAttention, with the same weights in the same (Keras) layout,
 * but the [B, H, T, S] score matrix is never held: queries and keys are processed in
 * tiles of `blockSize` rows with an online softmax, forward and backward, so memory
 * grows linearly in the sequence length.
 *
 * Args (besides the tfjs LayerArgs): those of MultiHeadAttention (see AttentionLayerArgs):
 *   numHeads H, numKvHeads G (default H; 1 = multi-query), headDim D, valueDim Dv,
 *   outputDim, useBias, causal, initializers, regularizers and constraints; plus
 *   blockSize: rows per query tile and per key tile (default DEFAULT_BLOCK_SIZE).
 *   dropout must be 0: flash attention never materialises the attention probabilities,
 *   so there is nothing to drop (use MultiHeadAttention for attention dropout).
 *
 * Call arguments:
 *   inputs: x [batch, length, features] (self-attention), [query, value] (key = value)
 *     or [query, value, key]; query [batch, targetLength, Eq], value [batch, sourceLength, Ev],
 *     key [batch, sourceLength, Ek].
 *   attentionMask: bool or 0/1 [batch, targetLength, sourceLength] (or broadcastable to
 *     [batch, H, targetLength, sourceLength]), 1 = may attend.
 *   training: accepted for compatibility; changes nothing (there is no dropout).
 *   returnAttentionScores: not supported (the scores are never formed); throws UNSUPPORTED.
 *   Padding masks propagated by tfjs (embedding({maskZero: true})) are honoured as in
 *   MultiHeadAttention.
 *
 * Returns: [batch, targetLength, outputDim].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../errors';
import {DEFAULT_BLOCK_SIZE, flashAttention} from '../ops/flash';
import {assertPositiveInt} from '../validate';
import {AttendOptions, AttentionLayerArgs, AttentionLayerBase} from './base_attention';

// tfjs' own Kwargs type is `{[key: string]: any}`.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Kwargs = {[key: string]: any};

export interface FlashAttentionArgs extends AttentionLayerArgs {
  /** Rows per query tile and per key tile; a positive integer. Default DEFAULT_BLOCK_SIZE. */
  blockSize?: number;
}

/** The UNSUPPORTED error for dropout > 0 with flash attention; `who` names the layer or setting. */
export function flashDropoutError(who: string, rate: number): AttentionError {
  return new AttentionError('UNSUPPORTED',
    `${who} does not support dropout (received ${rate}): flash attention never materialises the ` +
    'attention probabilities, so it cannot drop them; use dropout 0, or MultiHeadAttention with ' +
    "implementation 'standard' for attention dropout");
}

/** The UNSUPPORTED error for returnAttentionScores with flash attention. */
export function flashScoresError(who: string): AttentionError {
  return new AttentionError('UNSUPPORTED',
    `${who} cannot return attention scores: flash attention never materialises the ` +
    '[batch, heads, targetLength, sourceLength] scores (that is how it saves memory); use ' +
    "MultiHeadAttention with implementation 'standard' (or 'auto') to get them");
}

export class FlashAttention extends AttentionLayerBase {
  static className = 'FlashAttention';
  static override readonly ownArgs: readonly string[] = ['blockSize'];
  readonly blockSize: number;

  constructor(args: FlashAttentionArgs) {
    super(args);
    if (this.dropout > 0) throw flashDropoutError('FlashAttention', this.dropout);
    this.blockSize = args.blockSize ?? DEFAULT_BLOCK_SIZE;
    assertPositiveInt('blockSize', this.blockSize);
  }

  /** Refuses returnAttentionScores up front, also when building a model graph. */
  override apply(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                 kwargs?: Kwargs): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[] {
    if (kwargs?.returnAttentionScores === true) throw flashScoresError('FlashAttention');
    return super.apply(inputs, kwargs);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions): tf.Tensor4D {
    if (options.returnScores) throw flashScoresError('FlashAttention');
    return flashAttention(q, k, v, {mask: options.mask, causal: options.causal ?? false, blockSize: this.blockSize});
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), blockSize: this.blockSize};
  }
}
tf.serialization.registerClass(FlashAttention);
