/**
 * Multi-head attention with grouped-query heads ("Attention Is All You Need",
 * Vaswani et al. 2017; GQA: Ainslie et al. 2023), a drop-in tfjs layer with the
 * weight layout of Keras' MultiHeadAttention / GroupedQueryAttention.
 *
 * Args (besides the tfjs LayerArgs): see AttentionLayerArgs. In short `numHeads` H,
 * `numKvHeads` G (default H; 1 = multi-query), `headDim` D, `valueDim` Dv, `outputDim`,
 * `useBias`, `dropout`, `causal`, initializers, regularizers and constraints; and
 * `implementation`, how attention is computed (the result is the same exact attention):
 *   'standard' (default): scaledDotProductAttention, which forms the [B, H, T, S] scores.
 *   'flash': flashAttention (tiled, memory linear in T); dropout > 0 and
 *     returnAttentionScores then throw UNSUPPORTED (the probabilities are never formed).
 *   'auto': flash for calls with T * S >= FLASH_AUTO_MIN_SCORES (with a slidingWindow W, also
 *     for S >= 4W and T * S >= 2^16), no scores requested and no dropout active (training with
 *     dropout > 0); standard otherwise.
 *
 * Call arguments:
 *   inputs: x [batch, length, features] (self-attention), [query, value] (key = value)
 *     or [query, value, key]; query [batch, targetLength, Eq], value [batch, sourceLength, Ev],
 *     key [batch, sourceLength, Ek].
 *   attentionMask: bool or 0/1 [batch, targetLength, sourceLength] (or broadcastable to
 *     [batch, H, targetLength, sourceLength]), 1 = may attend.
 *   training: enables dropout.
 *   returnAttentionScores: also return the scores.
 *   Padding masks propagated by tfjs (embedding({maskZero: true})) are honoured:
 *   padded keys are never attended and padded queries give the output bias only.
 *
 * Returns: [batch, targetLength, outputDim], or with returnAttentionScores
 * [output, scores] with scores [batch, H, targetLength, sourceLength].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../core/errors';
import {flashAttention} from '../ops/flash';
import {AttentionWithWeights, scaledDotProductAttention} from '../ops/sdpa';
import {assertOneOf} from '../core/validate';
import {AttendOptions, AttentionLayerArgs} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {AttentionCapabilities, FULL_CAPABILITIES} from './capabilities';
import {
  checkFlexArgs, FLEX_LAYER_ARGS, FlexConfig, flexConfigOf, FlexLayerArgs, flexAttend, usesFlex,
} from './flex_layer';

import {flashCapabilities} from './flash_attention';
import {ATTENTION_OPTION_ARGS, AttentionOptionArgs, attentionOptionsConfig, changesScores} from './attention_options';

export const MHA_IMPLEMENTATIONS = ['standard', 'flash', 'auto'] as const;
export type MhaImplementation = typeof MHA_IMPLEMENTATIONS[number];

/**
 * implementation 'auto' uses flash attention for calls whose score matrix has at least
 * this many entries per batch and head (T * S), i.e. T = S = 1024.
 */
export const FLASH_AUTO_MIN_SCORES = 1024 * 1024;

/**
 * With a sliding window W, 'auto' tiles calls of at least WINDOW_AUTO_MIN_SCORES scores whose keys
 * are at least WINDOW_AUTO_MIN_KEYS * W (the window then hides three quarters of the scores or more).
 */
export const WINDOW_AUTO_MIN_KEYS = 4;
export const WINDOW_AUTO_MIN_SCORES = 256 * 256;

export interface MultiHeadAttentionArgs extends AttentionLayerArgs, FlexLayerArgs, AttentionOptionArgs {
  /**
   * How attention is computed: 'standard' (scaledDotProductAttention), 'flash'
   * (flashAttention: no dropout, no scores) or 'auto' (flash when T * S >=
   * FLASH_AUTO_MIN_SCORES and neither scores nor dropout are needed). Default 'standard'.
   */
  implementation?: MhaImplementation;
}

export class MultiHeadAttention extends AttentionLayerBase {
  static className = 'MultiHeadAttention';
  static override readonly ownArgs: readonly string[] = ['implementation', ...FLEX_LAYER_ARGS, ...ATTENTION_OPTION_ARGS];
  readonly implementation: MhaImplementation;
  /** The layer's mask and score mods (flexAttention then computes every call). */
  readonly flex: FlexConfig;

  /** With implementation 'flash', no scores and no dropout (the probabilities are never formed). */
  static override capabilitiesFor(args: MultiHeadAttentionArgs): AttentionCapabilities {
    return args.implementation === 'flash' ? flashCapabilities("MultiHeadAttention with implementation 'flash'")
      : FULL_CAPABILITIES;
  }

  constructor(args: MultiHeadAttentionArgs) {
    // Checked before the base reads it in capabilitiesFor.
    assertOneOf('implementation', args?.implementation ?? 'standard', MHA_IMPLEMENTATIONS);
    super(args);
    this.implementation = args.implementation ?? 'standard';
    this.flex = checkFlexArgs(args);
    if (usesFlex(this.flex, undefined) && this.dropout > 0) {
      throw new AttentionError('UNSUPPORTED', 'a layer with maskMod or scoreMod attends through flexAttention, which ' +
        `has no attention dropout (received dropout ${this.dropout}): use dropout 0`);
    }
  }

  protected override attendsWithMods(): boolean {
    return usesFlex(this.flex, undefined);
  }

  /**
   * Whether this call runs tiled (flashAttention, or flexAttention for the options that change the
   * scores): always for 'flash', by size and need for 'auto'.
   */
  private usesFlash(T: number, S: number, options: AttendOptions): boolean {
    if (this.implementation !== 'auto') return this.implementation === 'flash';
    const dropoutActive = options.training && this.dropout > 0;
    if (options.returnScores || dropoutActive) return false;
    // A sliding window computes only the tiles it reaches: worth tiling once it hides most keys.
    const W = this.attentionOptions.slidingWindow;
    return T * S >= FLASH_AUTO_MIN_SCORES ||
      (W != null && S >= WINDOW_AUTO_MIN_KEYS * W && T * S >= WINDOW_AUTO_MIN_SCORES);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D,
                   options: AttendOptions): tf.Tensor | AttentionWithWeights {
    if (usesFlex(this.flex, options.flex)) {
      if (options.returnScores) {
        throw new AttentionError('UNSUPPORTED', 'a call with mask or score mods attends through flexAttention, which ' +
          'never forms the attention scores: leave returnAttentionScores out');
      }
      if (options.training && this.dropout > 0) {
        throw new AttentionError('UNSUPPORTED', 'a call with mask or score mods attends through flexAttention, which ' +
          `has no attention dropout (the layer's dropout is ${this.dropout}): call with training false or use dropout 0`);
      }
      return flexAttend(q, k, v, this.flex, options.flex ?? {}, options.mask, options.causal,
        this.optionMods(options.causal));
    }
    const tiled = this.usesFlash(q.shape[2], k.shape[2], options);
    if (changesScores(this.attentionOptions)) return this.attendWithOptions(q, k, v, options, tiled);
    if (tiled) {
      return flashAttention(q, k, v, {mask: options.mask, causal: options.causal ?? false});
    }
    return scaledDotProductAttention(q, k, v, {
      mask: options.mask,
      causal: options.causal ?? false,
      dropout: this.dropout,
      training: options.training,
      returnWeights: options.returnScores,
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), implementation: this.implementation, ...flexConfigOf(this.flex),
      ...attentionOptionsConfig(this.attentionOptions)};
  }
}
tf.serialization.registerClass(MultiHeadAttention);
