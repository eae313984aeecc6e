/**
 * setWeights for the library's layers: the given tensors are checked against the layer's
 * own weights (count and shapes with AttentionError('DIMENSION_MISMATCH') naming the
 * weight, dtypes with 'INVALID_CONFIG'), then copies of them are set. tfjs would make each
 * variable share the given tensor's buffer, so one tensor given for several weights (as
 * Keras tests do) would leave several variables on one buffer, which the wasm backend
 * mishandles (memory access out of bounds on a later update).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';

/** Checks `weights` against `layer.weights`, then calls `set` (the base class's setWeights) with copies. */
export function setWeightCopies(layer: tf.layers.Layer, weights: tf.Tensor[],
    set: (copies: tf.Tensor[]) => void): void {
  const params = layer.weights;
  const short = (p: tf.LayerVariable) => p.originalName.replace(`${layer.name}/`, '');
  if (!Array.isArray(weights) || weights.length !== params.length) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${layer.name}.setWeights takes ${params.length} weights (${params.map(short).join(', ')}), ` +
      `received ${Array.isArray(weights) ? weights.length : show(weights)}`);
  }
  weights.forEach((w, i) => {
    const p = params[i];
    if (!(w instanceof tf.Tensor) || w.shape.length !== p.shape.length || w.shape.some((d, a) => d !== p.shape[a])) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `${layer.name}.setWeights: weight ${i} ('${short(p)}') must have shape ${show(p.shape)}, received ` +
        (w instanceof tf.Tensor ? `shape ${show(w.shape)}` : show(w)));
    }
    if (w.dtype !== p.dtype) {
      throw new AttentionError('INVALID_CONFIG',
        `${layer.name}.setWeights: weight ${i} ('${short(p)}') must be ${p.dtype}, received dtype ${w.dtype}`);
    }
  });
  const copies = tf.tidy(() => weights.map((w) => tf.mul(w, tf.scalar(1, w.dtype)))); // own buffers
  try {
    set(copies);
  } finally {
    tf.dispose(copies); // the variables keep their own references
  }
}
