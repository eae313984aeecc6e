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
 *
 * Replaced the same way: the products (wasm_matmul.ts), Tile and Identity (below) and
 * GatherV2 (wasm_gather.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {PRODUCT_KERNELS, ProductArgs, isTfjsWasmProduct, setSmallProductKernel, setUpOnFirstUse, stopsAtNativeOutput}
  from './wasm_matmul';
import {useLibraryGradients} from './gradients';
import {useOwnKernels} from './library_kernels';
import {GATHER_FROM_HEAP, gatherStatus, installGatherFromHeap, restoredGather} from './wasm_gather';

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

/** The Tile kernel the replacement took the place of. */
let originalTile: tf.KernelConfig | null = null;

/**
 * Writes x (values `xs`, shape `shape`) tiled `reps` times into `out`: each axis's first
 * repetition is written from x (rows copied, or one value filled), the others copied from it.
 */
export function tileValues(xs: Float32Array | Int32Array | Uint8Array, shape: number[], reps: number[],
                           out: Float32Array | Int32Array | Uint8Array): void {
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

const tileFromHeapConfig: tf.KernelConfig = {
  kernelName: 'Tile',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === 'string') return restoredTile().kernelFunc(args);
    const reps = (args.attrs as unknown as {reps: number[]}).reps;
    const b = args.backend as unknown as WasmHeapBackend;
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

/**
 * Puts the library's Tile (tileValues on heap views, about 50x faster than tfjs-wasm 4.22's
 * per-element loop on a LayerNormalization's [8, 128, 128]) in place of tfjs's, recognised by
 * `isNativeTile`; any other kernel is left alone. Idempotent.
 */
export function installTileFromHeap(): 'replaced' | 'kept' | 'absent' {
  const current = tf.getKernel('Tile', 'wasm');
  if (current == null) return 'absent';
  if (current.kernelFunc === tileFromHeapConfig.kernelFunc) return 'replaced';
  if (!isNativeTile(current.kernelFunc)) return 'kept';
  originalTile = {...current} as tf.KernelConfig;
  tf.unregisterKernel('Tile', 'wasm');
  tf.registerKernel(tileFromHeapConfig);
  return 'replaced';
}

/** The Identity kernel the replacement took the place of. */
let originalIdentity: tf.KernelFunc | null = null;

interface RefCountingBackend {
  incRef(dataId: tf.DataId): void;
}

/**
 * Identity that shares its input's buffer (one more reference), as tfjs's cpu and webgl
 * backends do: tensors are immutable, so a clone need not copy. tfjs-wasm 4.22's copies the
 * whole tensor, and tfjs's engine clones every tensor it saves for the backward pass (each
 * kernel's saved inputs and outputs), so on wasm training held every activation twice.
 */
const sharedIdentityConfig: tf.KernelConfig = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === 'string') return originalIdentity!(args);
    (args.backend as unknown as RefCountingBackend).incRef(x.dataId);
    return {dataId: x.dataId, shape: x.shape, dtype: x.dtype};
  },
};

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's Identity: on a stand-in backend
 * it makes a new output of x's shape and copies x's values into it.
 */
export function isCopyingIdentity(kernelFunc: tf.KernelFunc): boolean {
  const xId = {};
  const outId = {};
  const input = new Float32Array([1, 2, 3]);
  const output = new Float32Array(3);
  let made = 0;
  const backend = {
    makeOutput: (shape: number[], dtype: string) => {
      made++;
      return {dataId: outId, shape, dtype};
    },
    typedArrayFromHeap: (t: {dataId: unknown}) => (t.dataId === xId ? input : t.dataId === outId ? output : null),
    incRef: () => { throw new Error('shares'); },
  };
  try {
    kernelFunc({inputs: {x: {dataId: xId, shape: [3], dtype: 'float32'}} as unknown as tf.NamedTensorInfoMap,
      backend: backend as unknown as tf.KernelBackend, attrs: {}});
  } catch {
    return false;
  }
  return made === 1 && output.join() === '1,2,3';
}

/** Puts the sharing Identity in place of tfjs-wasm's copying one (`isCopyingIdentity`); any other is left alone. */
export function installSharedIdentity(): 'replaced' | 'kept' | 'absent' {
  const current = tf.getKernel('Identity', 'wasm');
  if (current == null) return 'absent';
  if (current.kernelFunc === sharedIdentityConfig.kernelFunc) return 'replaced';
  if (current.setupFunc != null || !isCopyingIdentity(current.kernelFunc)) return 'kept';
  originalIdentity = current.kernelFunc;
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel(sharedIdentityConfig);
  return 'replaced';
}

/** What registerMissingWasmKernels did, as the kernel registry holds it now. */
export interface WasmKernelStatus {
  /** 'replaced': ours is registered; 'kept': another kernel is (not recognised as tfjs's); 'absent': none. */
  Slice: 'replaced' | 'kept' | 'absent';
  /** 'added': ours is registered; 'kept': another kernel is (a later tfjs's own); 'absent': none. */
  UnsortedSegmentSum: 'added' | 'kept' | 'absent';
  /** The product kernels (wasm_matmul.ts): 'replaced', 'kept' or 'absent' as for Slice. */
  BatchMatMul: 'replaced' | 'kept' | 'absent';
  _FusedMatMul: 'replaced' | 'kept' | 'absent';
  /** Tile (tileValues on the heap): 'replaced', 'kept' or 'absent' as for Slice. */
  Tile: 'replaced' | 'kept' | 'absent';
  /** Identity (shares the buffer instead of copying it): 'replaced', 'kept' or 'absent'. */
  Identity: 'replaced' | 'kept' | 'absent';
  /** GatherV2 (slices copied whole from the heap, wasm_gather.ts): 'replaced', 'kept' or 'absent'. */
  GatherV2: 'replaced' | 'kept' | 'absent';
}

export type ProductName = keyof typeof PRODUCT_KERNELS;
const PRODUCT_NAMES = Object.keys(PRODUCT_KERNELS) as ProductName[];
/** The product kernels the replacements took the place of. */
const originalProducts: Partial<Record<ProductName, tf.KernelConfig>> = {};

function productStatus(name: ProductName): 'replaced' | 'kept' | 'absent' {
  const k = tf.getKernel(name, 'wasm');
  return k == null ? 'absent' : k.kernelFunc === PRODUCT_KERNELS[name].kernelFunc ? 'replaced' : 'kept';
}

/**
 * Puts the library's BatchMatMul and _FusedMatMul kernels (wasm_matmul.ts) in place of the
 * registered wasm ones that behave as tfjs-backend-wasm 4.x's (`isTfjsWasmProduct`); any
 * other kernel is left alone. Idempotent. Returns what the registry holds afterwards.
 */
export function installFastProducts(): Pick<WasmKernelStatus, ProductName> {
  for (const name of PRODUCT_NAMES) {
    const current = tf.getKernel(name, 'wasm');
    if (current == null || current.kernelFunc === PRODUCT_KERNELS[name].kernelFunc) continue;
    if (!isTfjsWasmProduct(current.kernelFunc)) continue;
    originalProducts[name] = {...current} as tf.KernelConfig;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(PRODUCT_KERNELS[name]);
  }
  setSmallProductKernel(tfjsSmallProduct);
  return {BatchMatMul: productStatus('BatchMatMul'), _FusedMatMul: productStatus('_FusedMatMul')};
}

/**
 * tfjs's own product kernel for a small batched product it computes right: batches equal or
 * one of them 1, and (fused) no bias, which its loop adds at the wrong positions. Else null.
 */
function tfjsSmallProduct(args: ProductArgs, backend: unknown): tf.TensorInfo | null {
  const fused = args.bias != null || (args.activation ?? 'linear') !== 'linear';
  const name: ProductName = fused ? '_FusedMatMul' : 'BatchMatMul';
  if (originalProducts[name] == null || args.bias != null) return null;
  const [aCount, bCount] = [args.a, args.b].map((t) => tf.util.sizeFromShape(t.shape.slice(0, -2)));
  if (aCount !== bCount && aCount !== 1 && bCount !== 1) return null;
  if (fused && (args.a.shape.length !== 3 || args.b.shape.length !== 3)) return null; // its fused kernel takes rank 3 only
  const {a, b, transposeA, transposeB, activation, preluActivationWeights, leakyreluAlpha} = args;
  return restoredProduct(name).kernelFunc({
    inputs: (fused ? {a, b, ...(preluActivationWeights != null ? {preluActivationWeights} : {})} : {a, b}) as
      tf.NamedTensorInfoMap,
    backend: backend as tf.KernelBackend,
    attrs: {transposeA, transposeB, ...(fused ? {activation, leakyreluAlpha: leakyreluAlpha ?? 0} : {})},
  }) as tf.TensorInfo;
}

/** The product kernel `name` that the replacement took the place of (undefined until it has). */
export function replacedProductKernel(name: ProductName): tf.KernelConfig | undefined {
  return originalProducts[name];
}

/** Which of the library's wasm kernels are registered now. */
export function wasmKernelStatus(): WasmKernelStatus {
  const slice = tf.getKernel('Slice', 'wasm');
  const segment = tf.getKernel('UnsortedSegmentSum', 'wasm');
  const tile = tf.getKernel('Tile', 'wasm');
  const identity = tf.getKernel('Identity', 'wasm');
  return {
    Slice: slice == null ? 'absent' : slice.kernelFunc === librarySlice ? 'replaced' : 'kept',
    UnsortedSegmentSum: segment == null ? 'absent' :
      segment.kernelFunc === unsortedSegmentSumConfig.kernelFunc ? 'added' : 'kept',
    BatchMatMul: productStatus('BatchMatMul'),
    _FusedMatMul: productStatus('_FusedMatMul'),
    Tile: tile == null ? 'absent' : tile.kernelFunc === tileFromHeapConfig.kernelFunc ? 'replaced' : 'kept',
    Identity: identity == null ? 'absent' : identity.kernelFunc === sharedIdentityConfig.kernelFunc ? 'replaced' : 'kept',
    GatherV2: gatherStatus(),
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
 * Registers the kernels tfjs-backend-wasm lacks (UnsortedSegmentSum) for 'wasm' unless a
 * kernel of that name is already there: at once, whether or not the wasm backend is imported
 * yet (it registers none of that name), so an embedding trains on wasm whatever the import
 * order. Then installs the replacements (`installSliceFromHeap`, ...) once tfjs-backend-wasm
 * has registered its kernels (those would replace the replacements): when the library is
 * imported after it, or when selectBackend imports it.
 */
export function registerMissingWasmKernels(): void {
  for (const config of [unsortedSegmentSumConfig]) {
    if (tf.getKernel(config.kernelName, 'wasm') == null) tf.registerKernel(config);
  }
  if (registered || tf.getKernel('Slice', 'wasm') == null) return;
  registered = true;
  if (current === 'library') installReplacements(); // else setLibraryKernels('library') does
}

function installReplacements(): void {
  installSliceFromHeap();
  installFastProducts();
  installTileFromHeap();
  installSharedIdentity();
  installGatherFromHeap();
}

const restored: Partial<Record<ProductName, tf.KernelConfig>> = {};

/** tfjs's product kernel `name` as registered again by setLibraryKernels('tfjs'). */
function restoredProduct(name: ProductName): tf.KernelConfig {
  return restored[name] ??= setUpOnFirstUse(originalProducts[name]!);
}

let restoredTileConfig: tf.KernelConfig | null = null;

/** tfjs's Tile as registered again by setLibraryKernels('tfjs') (or for strings). */
function restoredTile(): tf.KernelConfig {
  return restoredTileConfig ??= setUpOnFirstUse(originalTile!);
}

/** Whose kernels and gradients the backends run: the library's replacements, or tfjs's own. */
export type LibraryKernels = 'library' | 'tfjs';
let current: LibraryKernels = 'library';

/** The setting of setLibraryKernels now. */
export function libraryKernelsInUse(): LibraryKernels {
  return current;
}

const followers: ((which: LibraryKernels) => void)[] = [];

/** Lets another module's replacements follow setLibraryKernels (cpu_kernels.ts does). */
export function followLibraryKernels(apply: (which: LibraryKernels) => void): void {
  followers.push(apply);
}

/**
 * Puts tfjs's own kernels and gradients back in place of the library's replacements
 * ('tfjs'), on every backend, or the library's again ('library'); kernels the library adds
 * because tfjs lacks them stay, and its own kernels (library_kernels.ts: column sums, Adam)
 * go unused under 'tfjs'. The setting holds for backends started later too. The way to opt
 * out of the replacements (they change speed, missing gradients and a few tfjs 4.22 bugs),
 * and how the bench measures what they gain (bench --suite step). Returns the previous setting.
 */
export function setLibraryKernels(which: LibraryKernels): LibraryKernels {
  const previous = current;
  if (which === current) return previous;
  current = which;
  useLibraryGradients(which === 'library');
  useOwnKernels(which === 'library');
  const pairs: [tf.KernelConfig, tf.KernelConfig | null][] = [
    [sliceFromHeapConfig, originalSlice == null ? null : restoredSlice ??= wasmKernel('Slice', originalSlice)],
    [sharedIdentityConfig, originalIdentity == null ? null : restoredIdentity ??= wasmKernel('Identity', originalIdentity)],
    [tileFromHeapConfig, originalTile == null ? null : restoredTile()],
    [GATHER_FROM_HEAP, restoredGather()],
    ...PRODUCT_NAMES.map((name): [tf.KernelConfig, tf.KernelConfig | null] =>
      [PRODUCT_KERNELS[name], originalProducts[name] == null ? null : restoredProduct(name)]),
  ];
  for (const [ours, theirs] of pairs) {
    if (theirs != null) swapKernel(ours, theirs, which);
  }
  if (which === 'library' && registered) installReplacements(); // those never installed under 'tfjs'
  for (const apply of followers) apply(which);
  return previous;
}

let restoredSlice: tf.KernelConfig | null = null;
let restoredIdentity: tf.KernelConfig | null = null;

function wasmKernel(kernelName: string, kernelFunc: tf.KernelFunc): tf.KernelConfig {
  return {kernelName, backendName: 'wasm', kernelFunc};
}

/**
 * Registers `theirs` (tfjs's kernel) for 'tfjs' where `ours` is registered, or `ours` for
 * 'library' where `theirs` is; any other registered kernel (a later tfjs's, one of yours)
 * is left alone.
 */
function swapKernel(ours: tf.KernelConfig, theirs: tf.KernelConfig, which: LibraryKernels): void {
  const [from, to] = which === 'tfjs' ? [ours, theirs] : [theirs, ours];
  if (tf.getKernel(ours.kernelName, 'wasm')?.kernelFunc !== from.kernelFunc) return;
  tf.unregisterKernel(ours.kernelName, 'wasm');
  tf.registerKernel(to);
}
