/**
 * The losses the trainer minimises and evaluates: cross-entropy from a model's logits (one
 * custom-gradient op), or from its probabilities for a model without a logits head.
 */
import * as tf from '@tensorflow/tfjs';
import {TaskBatch} from './task_base';

/**
 * Mean cross-entropy over the scored positions from logits [n, L, V]: logsumexp(z) minus the
 * target's logit, with no log of a softmax (what the trainer minimises; the same value as
 * maskedLoss of softmax(logits), to rounding). Its gradient is one op: per row, softmax(z)
 * minus the target's one-hot, times the row's weight over the sum of the weights.
 */
export function sparseCrossEntropy(logits: tf.Tensor, batch: TaskBatch, V: number): tf.Scalar {
  const N = batch.n * batch.L;
  // Unscored positions (weight 0) may hold any target: any index in range serves.
  const targets = Int32Array.from(batch.targets, (t) => Math.min(V - 1, Math.max(0, t)));
  const total = batch.weights.reduce((a, w) => a + w, 0);
  const scale = Float32Array.from(batch.weights, (w) => w / total); // each position's share of the mean
  // One custom gradient, softmax(z) - onehot(target) per row times its share, in place of
  // tfjs's gradient of the max inside logSumExp (which compares z with its broadcast row max).
  const loss = tf.customGrad(((z: tf.Tensor, save: tf.GradSaveFunc) => {
    const z2 = tf.reshape(z, [N, V]);
    const lse = tf.logSumExp(z2, 1, true);                                            // [N, 1]
    const at = Int32Array.from(targets, (t, i) => i * V + t);
    const picked = tf.gather(tf.reshape(z2, [N * V]), tf.tensor1d(at, 'int32'));    // [N]
    save([z2, lse]);
    return {
      value: tf.sum(tf.mul(tf.sub(tf.reshape(lse, [N]), picked), tf.tensor1d(scale))),
      gradFunc: (dy: tf.Tensor, [sz, slse]: tf.Tensor[]) => tf.tidy(() => {
        const p = tf.exp(tf.sub(sz, slse));                                            // softmax [N, V]
        const dz = tf.sub(p, tf.oneHot(tf.tensor1d(targets, 'int32'), V));
        return tf.reshape(tf.mul(dz, tf.mul(tf.reshape(tf.tensor1d(scale), [N, 1]), dy)), z.shape);
      }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (z: tf.Tensor) => tf.Scalar;
  return loss(logits);
}

/**
 * The logits [..., V] of a model whose output layer is a Dense named 'head' with a softmax
 * (buildTransformer's, the graph networks'): the layers before the head, then the head's
 * kernel and bias without its softmax. Null for any other model (the trainer then takes the
 * loss from the probabilities).
 */
export function logitsOf(model: tf.LayersModel): ((x: tf.Tensor | tf.Tensor[], training: boolean) => tf.Tensor) | null {
  const head = model.layers.find((l) => l.name === 'head');
  if (head == null || model.outputs.length !== 1 || model.outputs[0].sourceLayer !== head) return null;
  const config = head.getConfig();
  if (head.getClassName() !== 'Dense' || config.activation !== 'softmax' || head.inboundNodes.length !== 1) return null;
  const [kernel, bias] = head.trainableWeights;
  if (kernel == null || kernel.shape.length !== 2) return null;
  const trunk = tf.model({inputs: model.inputs, outputs: head.input as tf.SymbolicTensor});
  const [E, V] = kernel.shape as number[];
  return (x, training) => tf.tidy(() => {
    const h = trunk.apply(x, {training}) as tf.Tensor;
    const flat = tf.matMul(tf.reshape(h, [-1, E]), kernel.read());
    const z = bias != null ? tf.add(flat, bias.read()) : flat;
    return tf.reshape(z, [...h.shape.slice(0, -1), V]);
  });
}

/** Mean cross-entropy over the scored positions; probs [n, L, V]. */
export function maskedLoss(probs: tf.Tensor, batch: TaskBatch, V: number): tf.Scalar {
  return tf.tidy(() => {
    const p = tf.reshape(probs, [batch.n * batch.L, V]);
    const picked = tf.sum(tf.mul(p, tf.oneHot(tf.tensor1d(batch.targets, 'int32'), V)), 1); // [n*L]
    const w = tf.tensor1d(batch.weights);
    return tf.div(tf.neg(tf.sum(tf.mul(tf.log(tf.add(picked, 1e-9)), w))), tf.sum(w)) as tf.Scalar;
  });
}
