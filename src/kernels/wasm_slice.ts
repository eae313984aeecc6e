/**
 * Slice on the wasm backend from views of the heap. tfjs-backend-wasm 4.22 copies the WHOLE
 * input out of the heap (`readSync`) for every slice, so taking n pieces of a tensor costs n
 * times its size (the per-head and per-tile products of this library take many). The
 * replacement reads the input through a view of the heap, so a slice costs its output's
 * size; it computes the same values and hands strings and slices of rank above 4 to the
 * original kernel.
 */
import * as tf from '@tensorflow/tfjs';
import {WasmBackend} from './backend_types';
import {KernelReplacement} from './wasm_replacement';

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

/** The library's Slice kernel. */
export const SLICE_FROM_HEAP: tf.KernelConfig = {
  kernelName: 'Slice',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const {inputs, backend, attrs} = args;
    const x = inputs.x as tf.TensorInfo;
    if (x.dtype === 'string' || x.shape.length > 4) return SLICE.replaced!.kernelFunc(args);
    const {begin, size} = attrs as unknown as {begin: number | number[]; size: number | number[]};
    const [begin_, size_] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
    const b = backend as unknown as WasmBackend;
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
  return SLICE.replaced?.kernelFunc ?? null;
}

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

/** Our Slice, in place of tfjs's copying one (no setup function). */
const SLICE = new KernelReplacement(SLICE_FROM_HEAP,
  (current) => current.setupFunc == null && isCopyingSlice(current.kernelFunc));

/**
 * Puts the library's Slice kernel in place of the registered wasm one when that one is
 * recognised as tfjs's copying kernel (`isCopyingSlice`, no setup function); any other
 * kernel is left alone. Idempotent. Returns what the registry holds afterwards.
 */
export function installSliceFromHeap(): 'replaced' | 'kept' | 'absent' {
  return SLICE.install();
}

/** tfjs's Slice as setLibraryKernels('tfjs') registers it again, or null before the replacement. */
export function restoredSlice(): tf.KernelConfig | null {
  return SLICE.restored();
}
