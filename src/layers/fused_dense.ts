/**
 * FusedDense: a Dense layer over the last axis (tf.layers.dense's semantics for inputs of any
 * rank) whose forward and backward are each one custom-gradient op (ops/dense), so a training
 * step keeps the output and the saved input instead of tfjs's reshapes, product, bias sum and
 * activation with their gradients. Weights `kernel` [K, units] and `bias` [units], in
 * tf.layers.dense's order, so weights move between the two with getWeights / setWeights.
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {featuresOf, firstShape} from './inputs';
import {DENSE_ACTIVATIONS, DenseActivation, dense} from '../ops/dense';
import {assertBoolean, assertOneOf, assertPositiveInt, checkedLayerArgs} from '../core/validate';
import {LayerArgs} from './tfjs_types';

export interface FusedDenseArgs extends LayerArgs {
  /** N: the output features. */
  units: number;
  /** 'linear' (default) or 'relu'. */
  activation?: DenseActivation;
  /** Whether there is a bias. Default true. */
  useBias?: boolean;
}

/**
 * x [..., K] -> activation(x kernel + bias) [..., units]. Kernel Glorot-uniform, bias zeros
 * (set other values with setWeights).
 */
export class FusedDense extends tf.layers.Layer {
  static className = 'FusedDense';
  readonly units: number;
  readonly activation: DenseActivation;
  readonly useBias: boolean;
  private kernel: tf.LayerVariable | null = null;
  private bias: tf.LayerVariable | null = null;

  constructor(args: FusedDenseArgs) {
    super(checkedLayerArgs('FusedDense', args, ['units', 'activation', 'useBias', ...LAYER_ARGS]));
    assertPositiveInt('units', args.units);
    this.units = args.units;
    this.activation = args.activation ?? 'linear';
    assertOneOf('activation', this.activation, DENSE_ACTIVATIONS);
    this.useBias = args.useBias ?? true;
    assertBoolean('useBias', this.useBias);
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const K = featuresOf('FusedDense', inputShape);
    this.kernel = this.addWeight('kernel', [K, this.units], 'float32', tf.initializers.glorotUniform({}));
    if (this.useBias) this.bias = this.addWeight('bias', [this.units], 'float32', tf.initializers.zeros());
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return dense(x, this.kernel!.read(), this.bias?.read() ?? null, this.activation);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    return [...firstShape(inputShape).slice(0, -1), this.units];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {...super.getConfig(), units: this.units, activation: this.activation, useBias: this.useBias};
  }
}
tf.serialization.registerClass(FusedDense);
