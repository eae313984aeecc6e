/**
 * Multi-head attention with grouped-query heads ("Attention Is All You Need",
 * Vaswani et al. 2017; GQA: Ainslie et al. 2023), a drop-in tfjs layer with the
 * weight layout of Keras' MultiHeadAttention / GroupedQueryAttention.
 *
 * Args (besides the tfjs LayerArgs): see AttentionLayerArgs. In short `numHeads` H,
 * `numKvHeads` G (default H; 1 = multi-query), `headDim` D, `valueDim` Dv, `outputDim`,
 * `useBias`, `dropout`, `causal`, initializers, regularizers and constraints.
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
import {scaledDotProductAttention} from '../ops/sdpa';
import {assertOneOf} from '../validate';
import {AttendOptions, AttentionLayerArgs, AttentionLayerBase} from './base_attention';

export const MHA_IMPLEMENTATIONS = ['standard'] as const;
export type MhaImplementation = typeof MHA_IMPLEMENTATIONS[number];

export interface MultiHeadAttentionArgs extends AttentionLayerArgs {
  /** How attention is computed. Only 'standard' (exact, scaledDotProductAttention) for now. */
  implementation?: MhaImplementation;
}

export class MultiHeadAttention extends AttentionLayerBase {
  static className = 'MultiHeadAttention';
  readonly implementation: MhaImplementation;

  constructor(args: MultiHeadAttentionArgs) {
    super(args);
    this.implementation = args.implementation ?? 'standard';
    assertOneOf('implementation', this.implementation, MHA_IMPLEMENTATIONS);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions) {
    return scaledDotProductAttention(q, k, v, {
      mask: options.mask,
      causal: this.causal,
      dropout: this.dropout,
      training: options.training,
      returnWeights: options.returnScores,
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), implementation: this.implementation};
  }
}
tf.serialization.registerClass(MultiHeadAttention);
