/**
 * FlashAttention layer: multi-head attention with grouped-query heads whose attention is
 * computed by `flashAttention` ("FlashAttention: Fast and Memory-Efficient Exact Attention
 * with IO-Awareness", Dao et al. 2022; FlashAttention-2, Dao 2023). The result is the
 * exact attention of MultiHeadAttention, with the same weights in the same (Keras) layout,
 * but the [B, H, T, S] score matrix is never held: queries and keys are processed in
 * tiles with an online softmax, forward and backward, so memory grows linearly in the
 * sequence length.
 *
 * Args (besides the tfjs LayerArgs): those of MultiHeadAttention (see AttentionLayerArgs):
 *   numHeads H, numKvHeads G (default H; 1 = multi-query), headDim D, valueDim Dv,
 *   outputDim, useBias, causal, initializers, regularizers and constraints; plus
 *   blockSize: query positions per tile, and keys per tile unless keyBlockSize is given
 *     (default null: flashAttention's, DEFAULT_BLOCK_SIZE positions and keys filling
 *     FLASH_TILE_SCORES scores); keyBlockSize: keys per tile (default null, as said).
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
import {flashAttention} from '../ops/flash';
import {assertPositiveInt} from '../core/validate';
import {AttendOptions, AttentionLayerArgs} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {AttentionCapabilities, FULL_CAPABILITIES} from './capabilities';
import {ATTENTION_OPTION_ARGS, AttentionOptionArgs, attentionOptionsConfig, changesScores} from './attention_options';
import {checkFlexArgs, FLEX_LAYER_ARGS, FlexConfig, flexConfigOf, FlexLayerArgs, flexAttend, usesFlex} from './flex_layer';

export interface FlashAttentionArgs extends AttentionLayerArgs, FlexLayerArgs, AttentionOptionArgs {
  /**
   * Query positions per tile, and keys per tile unless keyBlockSize is given; a positive
   * integer or null (flashAttention's default).
   */
  blockSize?: number | null;
  /** Keys per tile; a positive integer or null (blockSize when given, else flashAttention's default). */
  keyBlockSize?: number | null;
}

/** What flash attention cannot do, and why: it never forms the probabilities. */
export function flashCapabilities(subject?: string): AttentionCapabilities {
  return {
    ...FULL_CAPABILITIES, scores: false, dropout: false,
    limits: {
      why: 'flash attention never materialises the attention probabilities (nor the [batch, heads, targetLength, ' +
        'sourceLength] scores: that is how it saves memory)',
      scores: "use MultiHeadAttention with implementation 'standard' (or 'auto') to get them",
      dropout: "MultiHeadAttention with implementation 'standard' for attention dropout",
      subject,
    },
  };
}

export class FlashAttention extends AttentionLayerBase {
  static className = 'FlashAttention';
  static override readonly ownArgs: readonly string[] = ['blockSize', 'keyBlockSize', ...FLEX_LAYER_ARGS,
    ...ATTENTION_OPTION_ARGS];
  readonly blockSize: number | null;
  readonly keyBlockSize: number | null;
  /** The layer's mask and score mods (flexAttention then computes every call). */
  readonly flex: FlexConfig;

  static override capabilitiesFor(): AttentionCapabilities {
    return flashCapabilities();
  }

  constructor(args: FlashAttentionArgs) {
    super(args);
    this.blockSize = args.blockSize ?? null;
    this.keyBlockSize = args.keyBlockSize ?? null;
    if (this.blockSize != null) assertPositiveInt('blockSize', this.blockSize);
    if (this.keyBlockSize != null) assertPositiveInt('keyBlockSize', this.keyBlockSize);
    this.flex = checkFlexArgs(args);
  }

  protected override attendsWithMods(): boolean {
    return usesFlex(this.flex, undefined);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions): tf.Tensor4D {
    if (usesFlex(this.flex, options.flex)) {
      return flexAttend(q, k, v, this.flex, options.flex ?? {}, options.mask, options.causal,
        this.optionMods(options.causal));
    }
    // No dropout and no scores here (flashCapabilities): always the output alone.
    if (changesScores(this.attentionOptions)) return this.attendWithOptions(q, k, v, options, true) as tf.Tensor4D;
    return flashAttention(q, k, v, {mask: options.mask, causal: options.causal ?? false, blockSize: this.blockSize,
      keyBlockSize: this.keyBlockSize});
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), blockSize: this.blockSize, keyBlockSize: this.keyBlockSize,
      ...flexConfigOf(this.flex), ...attentionOptionsConfig(this.attentionOptions)};
  }
}
tf.serialization.registerClass(FlashAttention);
