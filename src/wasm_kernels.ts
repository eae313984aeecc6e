/**
 * Kernels that the wasm backend of tfjs 4.22 does not register but ordinary training
 * needs. Registered for the 'wasm' backend when the library loads; a later tfjs that
 * ships its own kernel keeps it (we never overwrite a registered kernel).
 *
 * - UnsortedSegmentSum: the gradient of `gather`, so `tf.layers.embedding` can train.
 *   Computed in plain TypeScript on the values read from the wasm heap: it runs once
 *   per embedding per step on [B*T, E] rows, which costs far less than the model.
 *
 * One kernel is replaced rather than added:
 *
 * - Slice: tfjs-backend-wasm 4.22 copies the WHOLE input out of the wasm heap
 *   (`readSync`) for every slice, so taking n pieces of a tensor costs n times its size
 *   (the per-head and per-tile products of this library take many). The replacement
 *   reads the input through a view of the heap, so a slice costs its output's size; it
 *   computes the same values and hands strings and slices of rank above 4 to the
 *   original kernel. Installed only while the registered kernel behaves as the one tfjs
 *   shipped (a probe that survives minification, unlike the function's name).
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

/**
 * UnsortedSegmentSum computed on values read from a backend: [numSegments, ...x.shape after
 * the ids' axes], float32 for float32 x, int32 for int32 and bool x (as TensorFlow sums
 * integers; tfjs-cpu 4.22's kernel gave float32). The wasm and cpu kernels share it.
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

const unsortedSegmentSumConfig = segmentSumKernel('wasm', (backend, shape, dtype, values) =>
  (backend as unknown as WasmLikeBackend).makeOutput(shape, dtype, undefined, values));

interface WasmHeapBackend extends WasmLikeBackend {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/** The tfjs kernel function this replaces (kept for the cases it still serves). */
let originalSlice: tf.KernelFunc | null = null;

/** Copies rows of a strided slice of `x` (shape, strides) into `out`; rank <= 4. */
function copyStrided(x: ArrayLike<number> & {subarray(a: number, b: number): ArrayLike<number>},
                     strides: number[], begin: number[], size: number[],
                     out: {set(a: ArrayLike<number>, offset: number): void}): void {
  const rank = begin.length;
  // Pad to rank 4 with leading unit axes.
  const pad = 4 - rank;
  const b = [...new Array(pad).fill(0), ...begin];
  const sz = [...new Array(pad).fill(1), ...size];
  const st = [...new Array(pad).fill(0), ...strides, 1].slice(-4);
  let o = 0;
  for (let i = b[0]; i < b[0] + sz[0]; i++) {
    for (let j = b[1]; j < b[1] + sz[1]; j++) {
      for (let k = b[2]; k < b[2] + sz[2]; k++) {
        const start = i * st[0] + j * st[1] + k * st[2] + b[3];
        out.set(x.subarray(start, start + sz[3]), o);
        o += sz[3];
      }
    }
  }
}

const sliceFromHeapConfig: tf.KernelConfig = {
  kernelName: 'Slice',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const {inputs, backend, attrs} = args;
    const x = inputs.x as tf.TensorInfo;
    if (x.dtype === 'string' || x.shape.length > 4) return originalSlice!(args);
    const {begin, size} = attrs as unknown as {begin: number | number[]; size: number | number[]};
    const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
    const b = backend as unknown as WasmHeapBackend;
    const out = b.makeOutput(size_, x.dtype);
    if (tf.util.sizeFromShape(size_) === 0) return out;
    // Views of the heap are taken after makeOutput, which may grow (and so move) the heap.
    const xs = b.typedArrayFromHeap(x);
    const outs = b.typedArrayFromHeap(out);
    const strides = tf.util.computeStrides(x.shape);
    if (tf.slice_util.isSliceContinous(x.shape, begin_, size_)) {
      const offset = tf.slice_util.computeFlatOffset(begin_, strides);
      outs.set(xs.subarray(offset, offset + tf.util.sizeFromShape(size_)));
    } else {
      copyStrided(xs, strides, begin_, size_, outs);
    }
    return out;
  },
};

/** The Slice kernel that the replacement took the place of (null until it has). */
export function replacedSliceKernel(): tf.KernelFunc | null {
  return originalSlice;
}

/** Our Slice kernel function, to tell it apart from any other registered later. */
const librarySlice = sliceFromHeapConfig.kernelFunc;

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's Slice: run against a stand-in
 * backend, it reads its whole input once with `readSync` and writes the slice into the
 * output's heap view. A minifier renames functions but keeps this behaviour, so the test
 * holds in any bundle; a kernel that reads its input any other way is not recognised.
 */
export function isCopyingSlice(kernelFunc: tf.KernelFunc): boolean {
  const xId = {};
  const outId = {};
  const input = new Float32Array([10, 11, 12, 13]);
  const output = new Float32Array(2);
  let reads = 0;
  const backend = {
    readSync: (id: unknown) => {
      if (id !== xId) throw new Error('unexpected read');
      reads++;
      return input;
    },
    makeOutput: (shape: number[], dtype: string) => ({dataId: outId, shape, dtype}),
    dataIdMap: {get: () => ({})},
    typedArrayFromHeap: (t: {dataId: unknown}) => {
      if (t.dataId !== outId) throw new Error('unexpected heap view');
      return output;
    },
  };
  try {
    kernelFunc({inputs: {x: {dataId: xId, shape: [4], dtype: 'float32'}} as unknown as tf.NamedTensorInfoMap,
      attrs: {begin: [1], size: [2]}, backend: backend as unknown as tf.KernelBackend});
  } catch {
    return false;
  }
  return reads === 1 && output[0] === 11 && output[1] === 12;
}

/** What registerMissingWasmKernels did, as the kernel registry holds it now. */
export interface WasmKernelStatus {
  /** 'replaced': ours is registered; 'kept': another kernel is (not recognised as tfjs's); 'absent': none. */
  Slice: 'replaced' | 'kept' | 'absent';
  /** 'added': ours is registered; 'kept': another kernel is (a later tfjs's own); 'absent': none. */
  UnsortedSegmentSum: 'added' | 'kept' | 'absent';
}

/** Which of the library's wasm kernels are registered now. */
export function wasmKernelStatus(): WasmKernelStatus {
  const slice = tf.getKernel('Slice', 'wasm');
  const segment = tf.getKernel('UnsortedSegmentSum', 'wasm');
  return {
    Slice: slice == null ? 'absent' : slice.kernelFunc === librarySlice ? 'replaced' : 'kept',
    UnsortedSegmentSum: segment == null ? 'absent' :
      segment.kernelFunc === unsortedSegmentSumConfig.kernelFunc ? 'added' : 'kept',
  };
}

/**
 * Puts the library's Slice kernel in place of the registered wasm one when that one is
 * recognised as tfjs's copying kernel (`isCopyingSlice`, no setup function); any other
 * kernel is left alone. Idempotent. Returns what the registry holds afterwards.
 */
export function installSliceFromHeap(): WasmKernelStatus['Slice'] {
  const current = tf.getKernel('Slice', 'wasm');
  if (current == null) return 'absent';
  if (current.kernelFunc === librarySlice) return 'replaced';
  if (current.setupFunc != null || !isCopyingSlice(current.kernelFunc)) return 'kept';
  originalSlice = current.kernelFunc;
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel(sliceFromHeapConfig);
  return 'replaced';
}

let registered = false;

/**
 * Registers the kernels above for 'wasm' unless a kernel of that name is already there,
 * and installs the Slice replacement (`installSliceFromHeap`). Idempotent; runs when the
 * library is imported.
 */
export function registerMissingWasmKernels(): void {
  if (registered) return;
  registered = true;
  for (const config of [unsortedSegmentSumConfig]) {
    if (tf.getKernel(config.kernelName, 'wasm') == null) tf.registerKernel(config);
  }
  installSliceFromHeap();
}
