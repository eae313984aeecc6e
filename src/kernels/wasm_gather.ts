/**
 * GatherV2 on the wasm backend from views of the heap. tfjs-backend-wasm 4.22's native
 * Gather computes every value's index on its own; the replacement copies each gathered slice
 * whole (`out.set` of a subarray), so a lookup costs a copy of its output. It checks the
 * indices as tfjs does (the same message), gives empty inputs their true shape (tfjs-wasm
 * 4.22's kept a 4-D one) and batched gathers (batchDims > 0) tfjs-cpu's values (tfjs-wasm
 * 4.22's are wrong for some: x [2, 5, 3, 2], indices [2, 3] along axis 1), and hands strings
 * to the original kernel (which refuses them).
 */
import * as tf from '@tensorflow/tfjs';
import {HeapArray, WasmBackend} from './backend_types';
import {KernelReplacement, stopsAtNativeOutput} from './wasm_replacement';

/** Throws as tfjs does for an index outside [0, dim). */
export function checkIndices(idx: ArrayLike<number>, dim: number): void {
  for (let i = 0; i < idx.length; i++) {
    const index = idx[i];
    if (!(index >= 0 && index <= dim - 1)) {
      throw new Error(`GatherV2: the index value ${index} is not in [0, ${dim - 1}]`);
    }
  }
}

/**
 * out[b, o, i, :] = x[b, o, idx[b, i], :] for x as [batches, outer, dim, slice], idx as
 * [batches, n] and out as [batches, outer, n, slice]; throws as tfjs does for an index outside
 * [0, dim).
 */
export function gatherValues(x: HeapArray, idx: ArrayLike<number>, batches: number, outer: number, dim: number,
                             slice: number, out: HeapArray): void {
  checkIndices(idx, dim);
  const n = idx.length / Math.max(batches, 1);
  let o = 0;
  for (let b = 0; b < batches; b++) {
    for (let r = 0; r < outer; r++) {
      const base = (b * outer + r) * dim * slice;
      for (let i = 0; i < n; i++) {
        const start = base + idx[b * n + i] * slice;
        out.set(x.subarray(start, start + slice), o);
        o += slice;
      }
    }
  }
}

/** The library's GatherV2 kernel. */
export const GATHER_FROM_HEAP: tf.KernelConfig = {
  kernelName: 'GatherV2',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const {x, indices} = args.inputs as {x: tf.TensorInfo; indices: tf.TensorInfo};
    if (x.dtype === 'string') return restoredGather()!.kernelFunc(args);
    const {axis, batchDims} = args.attrs as unknown as {axis: number; batchDims?: number};
    const b = args.backend as unknown as WasmBackend;
    const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0];
    const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x as unknown as tf.Tensor,
      indices as unknown as tf.Tensor, parsedAxis, batchDims ?? 0);
    const idx = b.readSync(indices.dataId) as Int32Array;
    checkIndices(idx, info.dimSize); // before anything is allocated
    const out = b.makeOutput(info.outputShape, x.dtype);
    if (idx.length === 0 || tf.util.sizeFromShape(x.shape) === 0) return out;
    // Views of the heap are taken after makeOutput, which may grow (and so move) the heap.
    gatherValues(b.typedArrayFromHeap(x), idx, info.batchSize, info.outerSize, info.dimSize, info.sliceSize,
      b.typedArrayFromHeap(out));
    return out;
  },
};

/** The GatherV2 kernel that the replacement took the place of (null until it has). */
export function replacedGatherKernel(): tf.KernelConfig | null {
  return GATHER.replaced;
}

/** Our kernel function, to tell it apart from any other registered later. */
export const libraryGather = GATHER_FROM_HEAP.kernelFunc;

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's GatherV2: on a stand-in backend,
 * gathering indices [2, 0] of x [3, 2] along axis 0, it reads the indices with readSync, makes
 * one output of the flattened shape [1, 1, 2, 2] and then asks for that output's native id
 * (for the native call, which the probe never reaches).
 */
export function isNativeGather(kernelFunc: tf.KernelFunc): boolean {
  return stopsAtNativeOutput(kernelFunc, {x: {shape: [3, 2]}, indices: {shape: [2]}}, {axis: 0, batchDims: 0},
    [1, 1, 2, 2], {indices: new Int32Array([2, 0])});
}

/** Our GatherV2, in place of tfjs's native one. */
const GATHER = new KernelReplacement(GATHER_FROM_HEAP, (current) => isNativeGather(current.kernelFunc));

/**
 * Puts the library's GatherV2 in place of the registered wasm one when that behaves as
 * tfjs's (`isNativeGather`); any other kernel is left alone. Idempotent. Returns what the
 * registry holds afterwards: 'replaced' (ours), 'kept' (another) or 'absent'.
 */
export function installGatherFromHeap(): 'replaced' | 'kept' | 'absent' {
  return GATHER.install();
}

/** tfjs's GatherV2 as setLibraryKernels('tfjs') registers it again, or null before the replacement. */
export function restoredGather(): tf.KernelConfig | null {
  return GATHER.restored();
}
