/**
 * The weights a model topology would create, found before anything is allocated.
 *
 * A model.json from someone else can ask for any size (an attention layer with
 * `num_heads: 1e7`, a Dense with a billion units); building it to find out would fill the
 * memory, and on wasm break the backend for the rest of the process. So the loaders first
 * build the model from its config once with every weight replaced by a stand-in: while
 * `planModel` runs, `Layer.addWeight` records the name, shape and dtype a layer asks for
 * and creates a scalar in its place, marked as planned (limits.ts) and carrying the real
 * shape. Every layer, tfjs's own, this library's and a user's registered classes, is sized
 * by its own build code from the config alone; this library's layers also refuse a weight
 * no tensor can hold (checkLayerWeights) on the way. A stateful RNN's states, which its
 * build makes with tf.zeros, are counted the same way (RNN.resetStates is patched too).
 * The stand-ins are disposed with the planned model, or, when building fails, one by one.
 *
 * tfjs builds a model from a topology synchronously inside `tf.models.modelFromJSON` (it
 * awaits only to fetch weights, and none are given), so the patch is in place for exactly
 * that synchronous stretch and never while other code runs; a planned model whose weights
 * are not all stand-ins is refused rather than trusted.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {dtypeBytes, formatBytes, isPlanned, isValidShape, markPlanned, maxTensorElements,
  shapeSize} from '../core/limits';

/** One weight of a planned model. */
export interface PlannedWeight {
  /** The layer that creates it. */
  layer: string;
  /** Its name in the model (originalName: `dense/kernel`). */
  name: string;
  shape: number[];
  dtype: tf.DataType;
  /** shape x dtype size; NaN for a kind not sized here (strings). */
  bytes: number;
}

/** What a topology builds: its weights, their total bytes, and the model of stand-ins (dispose it). */
export interface ModelPlan {
  weights: PlannedWeight[];
  bytes: number;
  model: tf.LayersModel;
}

type AddWeight = (this: tf.layers.Layer, name: string, shape: number[], dtype?: tf.DataType, ...rest: unknown[])
  => tf.LayerVariable;
type ResetStates = (this: StatefulRNN, states?: unknown, training?: boolean) => void;
/** What planModel reads of a tfjs RNN layer. */
interface StatefulRNN {
  name: string;
  stateful: boolean;
  inputSpec: {shape?: (number | null)[]}[] | null;
  states_: unknown;
  cell: {stateSize: number | number[]};
}

/**
 * Builds the model of `topology` (a model.json's modelTopology) with stand-in weights and
 * returns what it would hold. Throws what building the model throws (an unknown layer
 * class, a bad config, a layer of this library refusing its sizes).
 */
export async function planModel(topology: object): Promise<ModelPlan> {
  const proto = tf.layers.Layer.prototype as unknown as {addWeight: AddWeight};
  const original = proto.addWeight;
  const weights: PlannedWeight[] = [];
  const made: tf.LayerVariable[] = [];
  const zeros = tf.initializers.zeros();
  proto.addWeight = function (name, shape, dtype, _initializer, regularizer, trainable, constraint) {
    if (!isValidShape(shape)) {
      throw new AttentionError('INVALID_CONFIG', `layer '${this.name}' asks for a weight '${name}' of shape ${show(shape)}`);
    }
    const weight = original.call(this, name, [], dtype, zeros, regularizer, trainable, constraint);
    made.push(weight);
    (weight as {shape: number[]}).shape = [...shape];
    markPlanned(weight);
    const kind = dtype ?? 'float32';
    weights.push({layer: this.name, name: weight.originalName, shape: [...shape], dtype: kind,
      bytes: shapeSize(shape) * dtypeBytes(kind)});
    return weight;
  };
  // A stateful RNN makes its states in build ([batch, units] zeros): counted, not made.
  const rnn = (tf as unknown as {RNN?: {prototype: {resetStates: ResetStates}}}).RNN?.prototype;
  const originalReset = rnn?.resetStates;
  if (rnn != null) {
    rnn.resetStates = function (this: StatefulRNN, states?: unknown, training?: boolean) {
      const batch = this.inputSpec?.[0]?.shape?.[0];
      if (!this.stateful || batch == null || states != null || this.states_ != null) {
        return originalReset!.call(this, states, training);
      }
      const sizes = Array.isArray(this.cell.stateSize) ? this.cell.stateSize : [this.cell.stateSize];
      sizes.forEach((dim, i) => weights.push({layer: this.name, name: `${this.name}/state_${i}`, shape: [batch, dim],
        dtype: 'float32', bytes: batch * dim * 4}));
    };
  }
  let pending: Promise<tf.LayersModel>;
  try {
    pending = tf.models.modelFromJSON({modelTopology: topology as tf.io.ModelJSON['modelTopology']});
  } finally {
    proto.addWeight = original;
    if (rnn != null) rnn.resetStates = originalReset!;
  }
  let model: tf.LayersModel;
  try {
    model = await pending;
  } catch (e) {
    made.forEach((w) => w.dispose()); // the stand-ins of the layers built before the one that failed
    throw e;
  }
  if (!model.weights.every((w) => isPlanned(w))) {
    model.dispose();
    throw new AttentionError('UNSUPPORTED', 'this tfjs version builds models from a topology asynchronously, so a ' +
      "model's size cannot be found before it is built");
  }
  return {weights, bytes: weights.reduce((n, w) => n + (Number.isNaN(w.bytes) ? 0 : w.bytes), 0), model};
}

/**
 * Throws AttentionError('IO') when the planned weights pass `maxBytes`, naming the total,
 * the largest weight and how to raise the limit; also when one weight is larger than one
 * tensor can hold. `source` names the model.
 */
export function checkPlan(plan: ModelPlan, maxBytes: number, source: string, raise: string): void {
  const limit = maxTensorElements();
  const huge = plan.weights.find((w) => shapeSize(w.shape) > limit);
  if (huge != null) {
    throw new AttentionError('IO', `${source}: layer '${huge.layer}' asks for a weight '${huge.name}' of shape ` +
      `${show(huge.shape)}, more than one tensor can hold on the ${tf.getBackend()} backend ` +
      `(${limit.toExponential(2)} entries); nothing was allocated`);
  }
  if (plan.bytes > maxBytes) {
    const largest = [...plan.weights].sort((a, b) => (b.bytes || 0) - (a.bytes || 0))[0];
    throw new AttentionError('IO', `${source}: its config builds ${plan.weights.length} weights of ` +
      `${formatBytes(plan.bytes)}, over the limit of ${formatBytes(maxBytes)} (the largest: '${largest.name}' of ` +
      `shape ${show(largest.shape)} in layer '${largest.layer}'); nothing was allocated. ${raise}`);
  }
}
