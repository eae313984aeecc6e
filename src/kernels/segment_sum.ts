/**
 * UnsortedSegmentSum as one pass over its input, for any backend whose tensors' values can
 * be read synchronously: the kernel the library adds on wasm (wasm_kernels.ts) and puts in
 * place of the per-segment one on cpu (cpu_kernels.ts).
 */
import * as tf from '@tensorflow/tfjs';

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

/**
 * UnsortedSegmentSum computed on values read from a backend: [numSegments, ...x.shape after
 * the ids' axes], float32 for float32 x, int32 for int32 and bool x (as TensorFlow sums
 * integers; tfjs-cpu 4.22's kernel gave float32).
 */
function segmentSumOutput(x: tf.TensorInfo, segmentIds: tf.TensorInfo, numSegments: number,
                          read: (dataId: tf.DataId) => tf.backend_util.BackendValues):
    {shape: number[]; dtype: 'float32' | 'int32'; values: Float32Array | Int32Array} {
  if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'bool') {
    throw new Error(`unsortedSegmentSum takes float32, int32 or bool x, received ${x.dtype}`);
  }
  // Segment ids index the leading segmentIds.rank axes of x.
  const idsRank = segmentIds.shape.length;
  const inner = tf.util.sizeFromShape(x.shape.slice(idsRank));
  const dtype = x.dtype === 'float32' ? 'float32' : 'int32';
  const values = dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  unsortedSegmentSumValues(read(x.dataId) as ArrayLike<number>, read(segmentIds.dataId) as ArrayLike<number>,
    numSegments, inner, values);
  return {shape: [numSegments, ...x.shape.slice(idsRank)], dtype, values};
}

/**
 * An UnsortedSegmentSum kernel for `backendName` that reads its inputs with the backend's
 * readSync and hands the sums to `output`, which makes the backend's tensor of them.
 */
export function segmentSumKernel(backendName: string,
                                 output: (backend: tf.KernelBackend, shape: number[], dtype: 'float32' | 'int32',
                                          values: Float32Array | Int32Array) => tf.TensorInfo): tf.KernelConfig {
  return {
    kernelName: 'UnsortedSegmentSum',
    backendName,
    kernelFunc: ({inputs, backend, attrs}) => {
      const {x, segmentIds} = inputs as {x: tf.TensorInfo; segmentIds: tf.TensorInfo};
      const {numSegments} = attrs as unknown as {numSegments: number};
      const b = backend as tf.KernelBackend;
      const out = segmentSumOutput(x, segmentIds, numSegments, (id) => b.readSync(id));
      return output(b, out.shape, out.dtype, out.values);
    },
  };
}
