/**
 * FusedLayerNormalization: layer normalization over the last axis (tf.layers.layerNormalization's
 * semantics and default epsilon 1e-3, Keras's) whose forward and backward are each one
 * custom-gradient op (ops/dense): a training step keeps the output, the input and two numbers
 * per row instead of tfjs's moments, tiles, batch-norm kernel and their gradients. Weights
 * `gamma` and `beta` [features], in tf.layers.layerNormalization's order.
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {featuresOf, firstShape} from './inputs';
import {layerNorm} from '../ops/dense';
import {assertBoolean, assertPositiveNumber, checkedLayerArgs} from '../core/validate';
import {LayerArgs} from './tfjs_types';

export interface FusedLayerNormalizationArgs extends LayerArgs {
  /** Added to the variance. Default 1e-3. */
  epsilon?: number;
  /** Whether there is a learned offset `beta`. Default true. */
  center?: boolean;
  /** Whether there is a learned scale `gamma`. Default true. */
  scale?: boolean;
}

/** x [..., E] -> (x - mean) / sqrt(var + epsilon) * gamma + beta, over the last axis. */
export class FusedLayerNormalization extends tf.layers.Layer {
  static className = 'FusedLayerNormalization';
  readonly epsilon: number;
  readonly center: boolean;
  readonly scale: boolean;
  private gamma: tf.LayerVariable | null = null;
  private beta: tf.LayerVariable | null = null;

  constructor(args?: FusedLayerNormalizationArgs) {
    const a = checkedLayerArgs('FusedLayerNormalization', args, ['epsilon', 'center', 'scale', ...LAYER_ARGS], false);
    super(a);
    this.epsilon = a.epsilon ?? 1e-3;
    assertPositiveNumber('epsilon', this.epsilon);
    this.center = a.center ?? true;
    assertBoolean('center', this.center);
    this.scale = a.scale ?? true;
    assertBoolean('scale', this.scale);
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const E = featuresOf('FusedLayerNormalization', inputShape);
    if (this.scale) this.gamma = this.addWeight('gamma', [E], 'float32', tf.initializers.ones());
    if (this.center) this.beta = this.addWeight('beta', [E], 'float32', tf.initializers.zeros());
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return layerNorm(x, this.gamma?.read() ?? null, this.beta?.read() ?? null, this.epsilon);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return firstShape(inputShape);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), epsilon: this.epsilon, center: this.center, scale: this.scale};
  }
}
tf.serialization.registerClass(FusedLayerNormalization);
