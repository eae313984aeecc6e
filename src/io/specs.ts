/** Sizes of the weights a weights manifest lists (browser-safe: no Node modules). */
import * as tf from '@tensorflow/tfjs';
import {dtypeBytes, shapeSize} from '../core/limits';

/** Bytes of one weight in a weights file; -Infinity (no check) for kinds not sized here (strings). */
export function specBytes(spec: tf.io.WeightsManifestEntry): number {
  const per = dtypeBytes(spec.quantization?.dtype ?? spec.dtype);
  return Number.isNaN(per) ? -Infinity : shapeSize(spec.shape) * per;
}

/** Bytes of all the weights of a manifest in their files; -Infinity when one of them is not sized here. */
export function manifestBytes(specs: readonly tf.io.WeightsManifestEntry[]): number {
  return specs.reduce((n, spec) => n + specBytes(spec), 0);
}

/** Bytes the weights of a manifest take once decoded (a quantized weight is stored smaller); strings count 0. */
export function decodedBytes(specs: readonly tf.io.WeightsManifestEntry[]): number {
  return specs.reduce((n, spec) => n + (shapeSize(spec.shape) * dtypeBytes(spec.dtype) || 0), 0);
}
