/**
 * Kernels that the wasm backend of tfjs 4.22 does not register but ordinary training
 * needs. Registered for the 'wasm' backend when the library loads; a later tfjs that
 * ships its own kernel keeps it (we never overwrite a registered kernel).
 *
 * - UnsortedSegmentSum: the gradient of `gather`, so `tf.layers.embedding` can train.
 *   Computed in plain TypeScript on the values read from the wasm heap: it runs once
 *   per embedding per step on [B*T, E] rows, which costs far less than the model.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmLikeBackend {
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number,
             values?: tf.backend_util.BackendValues): tf.TensorInfo;
}

/** out[s, ...] = sum of x[i, ...] over the i whose segmentIds[i] == s; ids outside [0, n) are dropped. */
export function unsortedSegmentSumValues(
    x: ArrayLike<number>, ids: ArrayLike<number>, numSegments: number, inner: number,
    out: Float32Array | Int32Array): void {
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j] += x[src + j];
  }
}

const unsortedSegmentSumConfig: tf.KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: ({inputs, backend, attrs}) => {
    const {x, segmentIds} = inputs as {x: tf.TensorInfo; segmentIds: tf.TensorInfo};
    const {numSegments} = attrs as unknown as {numSegments: number};
    const b = backend as unknown as WasmLikeBackend;
    // Segment ids index the leading segmentIds.rank axes of x.
    const idsRank = segmentIds.shape.length;
    const inner = tf.util.sizeFromShape(x.shape.slice(idsRank));
    const outShape = [numSegments, ...x.shape.slice(idsRank)];
    const xs = b.readSync(x.dataId) as Float32Array | Int32Array;
    const ids = b.readSync(segmentIds.dataId) as Int32Array | Float32Array;
    const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
    unsortedSegmentSumValues(xs, ids, numSegments, inner, out);
    return b.makeOutput(outShape, x.dtype, undefined, out);
  },
};

let registered = false;

/** Registers the kernels above for 'wasm' unless a kernel of that name is already there. */
export function registerMissingWasmKernels(): void {
  if (registered) return;
  registered = true;
  for (const config of [unsortedSegmentSumConfig]) {
    if (tf.getKernel(config.kernelName, 'wasm') == null) tf.registerKernel(config);
  }
}
