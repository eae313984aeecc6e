/**
 * PositionEmbedding: the learned position table of buildTransformer's 'learned' positions.
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {assertOneOf, assertPositiveInt, checkedLayerArgs} from '../core/validate';
import {LayerArgs} from './tfjs_types';

export interface PositionEmbeddingArgs extends LayerArgs {
  /** The longest sequence the layer accepts. */
  maxLength: number;
  /** Initializer of the [maxLength, features] table. Default 'randomNormal' with stddev 0.02 (GPT-2). */
  initializer?: 'randomNormal' | 'zeros';
}

/**
 * Adds a learned vector per position to x [batch, length, features]: x + P[0:length].
 * Args: maxLength, initializer. Returns [batch, length, features].
 */
export class PositionEmbedding extends tf.layers.Layer {
  static className = 'PositionEmbedding';
  readonly maxLength: number;
  readonly initializer: 'randomNormal' | 'zeros';
  private table: tf.LayerVariable | null = null;

  constructor(args: PositionEmbeddingArgs) {
    super(checkedLayerArgs('PositionEmbedding', args, ['maxLength', 'initializer', ...LAYER_ARGS]));
    assertPositiveInt('maxLength', args.maxLength);
    this.maxLength = args.maxLength;
    this.initializer = args.initializer ?? 'randomNormal';
    assertOneOf('initializer', this.initializer, ['randomNormal', 'zeros'] as const);
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = inputShape as tf.Shape;
    const E = shape[shape.length - 1];
    if (shape.length !== 3 || E == null) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `PositionEmbedding input must be [batch, length, features], received ${show(shape)}`);
    }
    const init = this.initializer === 'zeros' ? tf.initializers.zeros() : tf.initializers.randomNormal({stddev: 0.02});
    this.table = this.addWeight('positions', [this.maxLength, E], 'float32', init);
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.addAt(Array.isArray(inputs) ? inputs[0] : inputs, 0);
  }

  /** x [batch, length, features] plus the rows start .. start + length - 1 of the table (decoding). */
  addAt(x: tf.Tensor, start: number): tf.Tensor {
    return tf.tidy(() => {
      const [, L, E] = x.shape as number[];
      if (start + L > this.maxLength) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `positions ${start} .. ${start + L - 1} go past the PositionEmbedding's maxLength (${this.maxLength})` +
          (start === 0 ? `: sequence length ${L} is longer than maxLength` : ''));
      }
      return tf.add(x, tf.slice(this.table!.read(), [start, 0], [L, E]));
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), maxLength: this.maxLength, initializer: this.initializer};
  }
}
tf.serialization.registerClass(PositionEmbedding);
