/** Sizes of the weights a weights manifest lists (browser-safe: no Node modules). */
import * as tf from '@tensorflow/tfjs';

/** Bytes of one weight in a weights file; -Infinity (no check) for kinds not sized here (strings). */
export function specBytes(spec: tf.io.WeightsManifestEntry): number {
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const per: Record<string, number> = {float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2, complex64: 8};
  return dtype in per ? size * per[dtype] : -Infinity;
}

/** Bytes of all the weights of a manifest; -Infinity when one of them is not sized here. */
export function manifestBytes(specs: readonly tf.io.WeightsManifestEntry[]): number {
  return specs.reduce((n, spec) => n + specBytes(spec), 0);
}
