/**
 * How large a tensor, a layer's weights and a loaded model may be, and the checks that
 * refuse more before anything is allocated (running out of the wasm heap corrupts the
 * backend for the rest of the process).
 *
 *   one tensor     at most MAX_TENSOR_ELEMENTS entries (2^31 - 1; on wasm a quarter of
 *                  its 4 GiB heap)
 *   one layer      at most DEFAULT_MAX_BYTES (2 GiB) of weights
 *   one model      at most `maxBytes` of weights when loaded (default DEFAULT_MAX_BYTES)
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from './errors';

/** Elements a single tensor may hold: tfjs indexes with 32-bit integers and typed arrays stop near 2^31. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;
/** The wasm backend's whole heap is 4 GiB; a tensor of that size cannot be allocated there. */
const WASM_HEAP_BYTES = 2 ** 32;
/** The default limit on a loaded model's weights, and the limit on one layer's: 2 GiB. */
export const DEFAULT_MAX_BYTES = 2 ** 31;

/** The most float32 entries one tensor may hold on the active backend. */
export function maxTensorElements(): number {
  return tf.getBackend() === 'wasm' ? Math.min(MAX_TENSOR_ELEMENTS, WASM_HEAP_BYTES / 4 - 1) : MAX_TENSOR_ELEMENTS;
}

const DTYPE_BYTES: Record<string, number> = {
  float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2,
};

/** Bytes per entry of `dtype`; NaN for kinds not sized here (strings). */
export function dtypeBytes(dtype: string): number {
  return DTYPE_BYTES[dtype] ?? NaN;
}

/** Entries of `shape`. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** `n` bytes for a message: "2.00 GiB (2147483648 bytes)". */
export function formatBytes(n: number): string {
  const units: [number, string][] = [[2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']];
  const [size, unit] = units.find(([u]) => n >= u) ?? [1, 'bytes'];
  return size === 1 ? `${n} bytes` : `${(n / size).toFixed(2)} ${unit} (${n} bytes)`;
}

/** One weight a layer would create. */
export interface WeightShape {
  name: string;
  shape: readonly number[];
  dtype?: tf.DataType;
}

/** True when every dim of `shape` is a non-negative integer. */
export function isValidShape(shape: unknown): shape is number[] {
  return Array.isArray(shape) && shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
}

/**
 * Throws INVALID_CONFIG, before anything is allocated, when `who` (a layer) would create a
 * weight that one tensor cannot hold on the active backend, or weights of more than
 * DEFAULT_MAX_BYTES in all. The message names the weight, its shape and the sizes.
 */
export function checkLayerWeights(who: string, weights: readonly WeightShape[]): void {
  const limit = maxTensorElements();
  let total = 0;
  for (const {name, shape, dtype = 'float32'} of weights) {
    const n = shapeSize(shape);
    if (n > limit) {
      throw new AttentionError('INVALID_CONFIG',
        `${who}'s weight '${name}' of shape ${show([...shape])} would hold ${n.toExponential(2)} entries ` +
        `(${(n * dtypeBytes(dtype) / 2 ** 30).toFixed(2)} GiB), more than one tensor can hold on the ${tf.getBackend()} backend ` +
        `(${limit.toExponential(2)} entries): check the layer's arguments`);
    }
    total += n * dtypeBytes(dtype);
  }
  if (total > DEFAULT_MAX_BYTES) {
    const largest = [...weights].sort((a, b) => shapeSize(b.shape) - shapeSize(a.shape))[0];
    throw new AttentionError('INVALID_CONFIG',
      `${who}'s weights would take ${formatBytes(total)}, more than the ${formatBytes(DEFAULT_MAX_BYTES)} one layer ` +
      `may hold (the largest: '${largest.name}' of shape ${show([...largest.shape])}): check the layer's arguments`);
  }
}

/** Marks the stand-in weights of a model sized without allocating (io/model_plan.ts). */
const PLANNED = Symbol.for('tfjs-attention.plannedWeight');

/** Marks `weight` as a stand-in: a scalar that carries the shape the real weight would have. */
export function markPlanned(weight: tf.LayerVariable): void {
  (weight as unknown as Record<symbol, boolean>)[PLANNED] = true;
}

/** True for a stand-in weight: a layer's build should not write values into it. */
export function isPlanned(weight: tf.LayerVariable | null | undefined): boolean {
  return weight != null && (weight as unknown as Record<symbol, boolean>)[PLANNED] === true;
}
