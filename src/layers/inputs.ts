/**
 * The inputs of an attention layer: x (self-attention), [query, value] (key = value) or
 * [query, value, key], as tensors, symbolic tensors or their shapes, and the checks an
 * eager call and graph building share, so that a graph that cannot run fails when it
 * is built, not at predict.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';

export type Shape = (number | null)[];

/** Splits a layer input into [query, value, key] (self-attention repeats x). */
export function unpackInputs<T>(inputs: T | T[], isList: boolean): [T, T, T] {
  if (!isList) return [inputs as T, inputs as T, inputs as T];
  const list = inputs as T[];
  if (list.length < 1 || list.length > 3) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `inputs must be x, [x], [query, value] or [query, value, key], received ${list.length} tensors`);
  }
  // A null key is absent, as in tfjs-layers' [queryShape, valueShape, null]: key = value.
  const query = list[0];
  const value = list.length > 1 ? list[1] : query;
  const key = list[2] ?? value;
  return [query, value, key];
}

/** Throws INVALID_CONFIG unless inputs is a tensor (or symbolic tensor), or a list of 1 to 3 of them. */
export function assertInputs(inputs: unknown, who: string): void {
  const isTensor = (t: unknown) => t instanceof tf.Tensor || t instanceof tf.SymbolicTensor;
  const ok = isTensor(inputs) ||
    (Array.isArray(inputs) && inputs.length >= 1 && inputs.length <= 3 && inputs.every(isTensor));
  if (!ok) {
    throw new AttentionError('INVALID_CONFIG',
      `${who} takes x, [query, value] or [query, value, key] (tf.Tensors or SymbolicTensors), received ${show(inputs)}`);
  }
}

/** Throws INVALID_CONFIG unless the query, value and key tensors are float32. */
export function assertFloat32Inputs(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor): void {
  for (const [name, t] of [['query', query], ['value', value], ['key', key]] as const) {
    if (t.dtype !== 'float32') {
      throw new AttentionError('INVALID_CONFIG', `${name} must be float32, received dtype ${t.dtype}`);
    }
  }
}

/**
 * [query, value, key] shapes of a layer input, checked: rank 3 with a known last dim, that
 * dim equal to the one the layer was built with (`built` [Eq, Ev, Ek], null before build),
 * one batch size, and key and value of one length. Sizes still unknown (null) pass.
 */
export function checkInputShapes(inputShape: Shape | Shape[],
    built: [number, number, number] | null): [Shape, Shape, Shape] {
  if (!Array.isArray(inputShape) || inputShape.length === 0) {
    throw new AttentionError('DIMENSION_MISMATCH', `expected input shapes, received ${show(inputShape)}`);
  }
  const shapes = unpackInputs<Shape>(inputShape as Shape | Shape[], Array.isArray(inputShape[0]));
  shapes.forEach((shape, n) => {
    const name = ['query', 'value', 'key'][n];
    const d = Array.isArray(shape) ? shape[shape.length - 1] : null;
    if (!Array.isArray(shape) || shape.length !== 3 || d == null) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `${name} must have shape [batch, length, features] with known features, received ${show(shape)}`);
    }
    if (built != null && d !== built[n]) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `${name}'s last dim (${d}) differs from the one the layer was built with (${built[n]})`);
    }
  });
  const [qs, vs, ks] = shapes;
  const batches = shapes.map((x) => x[0]).filter((b): b is number => b != null);
  if (new Set(batches).size > 1) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `query, value and key must share the batch size, received ${qs[0]}, ${vs[0]} and ${ks[0]}`);
  }
  if (ks[1] != null && vs[1] != null && ks[1] !== vs[1]) {
    throw new AttentionError('DIMENSION_MISMATCH', `key and value must have the same length, received ${ks[1]} and ${vs[1]}`);
  }
  return shapes;
}

/**
 * Symbolic inputs as the graph node should list them. tfjs-layers' executor (predict,
 * fit, evaluate) counts a tensor's consumers once per layer but releases it once per
 * listed input, so a node listing x twice frees x while other layers still need it. So
 * [x, x] (and [x, x, x]) is given as x, self-attention, the same call, and [q, v, v] as
 * [q, v]. (The executor also passes a layer only its first input's padding mask, so a
 * mask carried by a value other than the query does not reach the layer in predict.)
 */
export function graphInputs(inputs: tf.SymbolicTensor | tf.SymbolicTensor[]): tf.SymbolicTensor | tf.SymbolicTensor[] {
  if (!Array.isArray(inputs)) return inputs;
  const [query, value = query, key = value] = inputs;
  if (value === query && key === query) return query;
  if (key === value) return [query, value];
  return inputs;
}

/** The first shape of a layer input shape (a list of shapes gives its first). */
export function firstShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
  return (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
}

/**
 * The number of features (last axis) of a layer input shaped [batch, ..., features];
 * DIMENSION_MISMATCH naming `who` for a shape of rank < 2 or unknown features.
 */
export function featuresOf(who: string, inputShape: tf.Shape | tf.Shape[]): number {
  const shape = firstShape(inputShape);
  const features = shape[shape.length - 1];
  if (shape.length < 2 || features == null) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${who} input must be [batch, ..., features] with known features, received ${show(shape)}`);
  }
  return features;
}
