/**
 * Tile on the wasm backend from views of the heap: `tileValues` copies rows and whole
 * repetitions, where tfjs-backend-wasm 4.22's kernel loops over every element. Strings go to
 * the original kernel.
 */
import * as tf from '@tensorflow/tfjs';
import {HeapArray, WasmBackend} from './backend_types';
import {KernelReplacement, stopsAtNativeOutput} from './wasm_replacement';

/**
 * Writes x (values `xs`, shape `shape`) tiled `reps` times into `out`: each axis's first
 * repetition is written from x (rows copied, or one value filled), the others copied from it.
 */
export function tileValues(xs: HeapArray, shape: number[], reps: number[], out: HeapArray): void {
  const r = shape.length;
  if (r === 0) {
    out[0] = xs[0];
    return;
  }
  const xStride = new Array<number>(r);
  const outStride = new Array<number>(r);
  xStride[r - 1] = outStride[r - 1] = 1;
  for (let d = r - 2; d >= 0; d--) {
    xStride[d] = xStride[d + 1] * shape[d + 1];
    outStride[d] = outStride[d + 1] * shape[d + 1] * reps[d + 1];
  }
  const fill = (d: number, xOff: number, outOff: number): void => {
    const n = shape[d];
    if (d === r - 1) {
      if (n === 1) {
        out.fill(xs[xOff], outOff, outOff + reps[d]);
      } else {
        const row = xs.subarray(xOff, xOff + n);
        for (let k = 0; k < reps[d]; k++) out.set(row, outOff + k * n);
      }
      return;
    }
    for (let i = 0; i < n; i++) fill(d + 1, xOff + i * xStride[d], outOff + i * outStride[d]);
    const block = n * outStride[d];
    for (let k = 1; k < reps[d]; k++) out.copyWithin(outOff + k * block, outOff, outOff + block);
  };
  fill(0, 0, 0);
}

/** The library's Tile kernel. */
export const TILE_FROM_HEAP: tf.KernelConfig = {
  kernelName: 'Tile',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === 'string') return restoredTile()!.kernelFunc(args);
    const reps = (args.attrs as unknown as {reps: number[]}).reps;
    const b = args.backend as unknown as WasmBackend;
    const out = b.makeOutput(x.shape.map((s, i) => s * reps[i]), x.dtype);
    if (tf.util.sizeFromShape(out.shape) === 0) return out;
    // Views of the heap are taken after makeOutput, which may grow (and so move) the heap.
    tileValues(b.typedArrayFromHeap(x), x.shape, reps, b.typedArrayFromHeap(out));
    return out;
  },
};

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's Tile: on a stand-in backend it
 * makes one output of the tiled shape and then asks for its native id (for the native
 * call, which the probe never reaches).
 */
export function isNativeTile(kernelFunc: tf.KernelFunc): boolean {
  return stopsAtNativeOutput(kernelFunc, {x: {shape: [2, 3]}}, {reps: [2, 1]}, [4, 3]);
}

/** Our Tile, in place of tfjs's native one. */
const TILE = new KernelReplacement(TILE_FROM_HEAP, (current) => isNativeTile(current.kernelFunc));

/**
 * Puts the library's Tile (tileValues on heap views) in place of tfjs's, recognised by
 * `isNativeTile`; any other kernel is left alone. Idempotent.
 */
export function installTileFromHeap(): 'replaced' | 'kept' | 'absent' {
  return TILE.install();
}

/** tfjs's Tile as setLibraryKernels('tfjs') registers it again (and strings run), or null before the replacement. */
export function restoredTile(): tf.KernelConfig | null {
  return TILE.restored();
}
