/**
 * Products on the wasm backend at the speed of its 2-D product, for every tfjs model.
 *
 * tfjs-backend-wasm 4.22 runs `BatchMatMul` and `_FusedMatMul` through XNNPACK only when
 * both operands are one 2-D matrix and neither is transposed; every transposed, batched or
 * broadcast product falls to a naive loop, 6x (transposeB) to 26x (transposeA) slower.
 * Training pays it on every step: the gradients of a Dense layer are transposed products.
 *
 * The replacement kernels here compute every product at that speed:
 *
 * - a batched product of small matrices (attention's per-(batch, head) products) and a 2-D
 *   product with a transposed operand (the gradients of a Dense layer), with no fused bias
 *   or activation, run on the library's own kernel (wasm_native.ts), in place on the heap;
 * - every other product takes the backend's own fast path:
 *   - a transposed operand is transposed once, whole, on the heap (transposeMatrices; its
 *     size, not the product's cost);
 *   - a product whose second operand is one matrix for the whole batch is one 2-D product
 *     of the batch's rows ([batch * M, K] x [K, N]);
 *   - any other batched or broadcast product is one 2-D product per output matrix, on views
 *     of the operands where they lie on the heap (no copies): each view is registered with
 *     the backend's native side for the call and released after it;
 *   - a bias of N values and the fused activations that act on values alone go into the
 *     fast path as tfjs fuses them; another bias shape or a prelu with other than N weights
 *     is added after the product with the backend's own kernels.
 *
 * Batch dimensions broadcast as numpy's do (each of a's and b's batch axes is 1 or the
 * output's). The kernels are installed only while the registered ones behave as
 * tfjs-backend-wasm 4.x's (a probe on a stand-in backend that stops before any native
 * call; it survives minification, unlike names); any other kernel (a later tfjs's, a
 * user's) is left alone. `wasmKernelStatus()` says which are in place.
 */
import * as tf from '@tensorflow/tfjs';
import {NativeHost, nativeProducts} from './wasm_native';

/** The native module's parts used here. */
interface WasmModule extends NativeHost {
  cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
  tfjs: {registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void;
    getThreadsCount?(): number};
}

/** The wasm backend's parts used here (tfjs-backend-wasm 4.x). */
interface WasmBackend {
  wasm: WasmModule;
  dataIdNextNumber: number;
  dataIdMap: {get(dataId: tf.DataId): {id: number; memoryOffset: number}};
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: tf.DataId): boolean;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

/** tfjs-backend-wasm's FusableActivation codes. */
const ACTIVATION_CODE: Readonly<Record<string, number>> =
  {linear: 0, relu: 1, relu6: 2, prelu: 3, leakyrelu: 4, sigmoid: 5, elu: 6};

type FusedProduct = (aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number,
                     transposeA: number, transposeB: number, activation: number, biasId: number, preluId: number,
                     leakyreluAlpha: number, outId: number) => void;

const products = new WeakMap<WasmModule, FusedProduct>();

/** The native fused product (`_FusedMatMul`) of this backend's module. */
function nativeProduct(backend: WasmBackend): FusedProduct {
  let f = products.get(backend.wasm);
  if (f == null) {
    f = backend.wasm.cwrap('_FusedMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number',
      'number', 'number', 'number', 'number', 'number', 'number']) as unknown as FusedProduct;
    products.set(backend.wasm, f);
  }
  return f;
}

const shapeBytes = (shape: number[]) => new Uint8Array(new Int32Array(shape).buffer);

/** An operand for the native call: a view of `size` floats at byte `offset`, or a tensor's own native id. */
type Operand = {offset: number; size: number} | {id: number};

/** Runs `fn` with native ids for the operands, registering views for the call and releasing them after. */
function withViews<T>(backend: WasmBackend, operands: Operand[], fn: (ids: number[]) => T): T {
  const ids = operands.map((o) => ('id' in o ? o.id : backend.dataIdNextNumber++));
  operands.forEach((o, i) => {
    if (!('id' in o)) backend.wasm.tfjs.registerTensor(ids[i], o.size, o.offset);
  });
  try {
    return fn(ids);
  } finally {
    // Releasing an id also drops the native operator cached for it (its packed weights).
    operands.forEach((o, i) => {
      if (!('id' in o)) backend.wasm.tfjs.disposeData(ids[i]);
    });
  }
}

/** Runs the registered kernel `name` of the wasm backend (a building block, not through the engine). */
function runKernel(name: string, inputs: tf.NamedTensorInfoMap, backend: WasmBackend, attrs: tf.NamedAttrMap = {}):
    tf.TensorInfo {
  const k = tf.getKernel(name, 'wasm');
  if (k == null) throw new Error(`the wasm backend has no ${name} kernel`);
  return k.kernelFunc({inputs, backend: backend as unknown as tf.KernelBackend, attrs}) as tf.TensorInfo;
}

/**
 * dst = each of the `count` [R, C] matrices of src transposed to [C, R]: eight source rows at
 * a time (eight reads down a column, eight contiguous writes), over columns in blocks of 64 so
 * the eight rows' blocks stay in cache. On the wasm heap this runs about 7x faster than
 * tfjs-wasm 4.22's Transpose kernel (0.14 against 1.06 ms for [1024, 128], 0.58 against 4.1
 * for [1024, 512], measured on this project's 2-core machine).
 */
export function transposeMatrices(src: Float32Array, dst: Float32Array, count: number, R: number, C: number): void {
  const BLOCK = 64;
  for (let m = 0; m < count; m++) {
    const base = m * R * C;
    for (let j0 = 0; j0 < C; j0 += BLOCK) {
      const j1 = Math.min(C, j0 + BLOCK);
      let i = 0;
      for (; i + 7 < R; i += 8) {
        for (let j = j0; j < j1; j++) {
          const o = base + j * R + i;
          const s = base + i * C + j;
          dst[o] = src[s];
          dst[o + 1] = src[s + C];
          dst[o + 2] = src[s + 2 * C];
          dst[o + 3] = src[s + 3 * C];
          dst[o + 4] = src[s + 4 * C];
          dst[o + 5] = src[s + 5 * C];
          dst[o + 6] = src[s + 6 * C];
          dst[o + 7] = src[s + 7 * C];
        }
      }
      for (; i < R; i++) {
        for (let j = j0; j < j1; j++) dst[base + j * R + i] = src[base + i * C + j];
      }
    }
  }
}

/** x with its last two axes swapped, as a new tensor of the backend. */
function transposeLast(x: tf.TensorInfo, backend: WasmBackend): tf.TensorInfo {
  const r = x.shape.length;
  if (x.dtype !== 'float32') {
    const perm = [...Array(r).keys()];
    [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
    return runKernel('Transpose', {x}, backend, {perm});
  }
  const [R, C] = [x.shape[r - 2], x.shape[r - 1]];
  const out = backend.makeOutput([...x.shape.slice(0, -2), C, R], 'float32');
  const count = tf.util.sizeFromShape(x.shape.slice(0, -2));
  // Views of the heap are taken after makeOutput, which may grow (and so move) the heap.
  if (count * R * C > 0) transposeMatrices(backend.typedArrayFromHeap(x), backend.typedArrayFromHeap(out), count, R, C);
  return out;
}

/**
 * Per-matrix products of fewer multiply-adds than this, in batches, go to tfjs's own kernel
 * (when it was replaced): its plain loop beats one native call per matrix there.
 */
export const SMALL_PRODUCT = 8192;

/** tfjs's own product kernel, for the small batched products (set by wasm_kernels.ts). */
let smallProducts: ((args: ProductArgs, backend: WasmBackend) => tf.TensorInfo | null) | null = null;

/** Where small batched products go (null: none, every product takes the native fast path). */
export function setSmallProductKernel(f: typeof smallProducts): void {
  smallProducts = f;
}

export interface ProductArgs {
  a: tf.TensorInfo;
  b: tf.TensorInfo;
  transposeA: boolean;
  transposeB: boolean;
  bias?: tf.TensorInfo | null;
  activation?: string;
  preluActivationWeights?: tf.TensorInfo | null;
  leakyreluAlpha?: number;
}

/** The output's batch shape, or throws as tfjs does for shapes that do not broadcast. */
function batchShape(a: number[], b: number[]): number[] {
  return tf.broadcast_util.assertAndGetBroadcastShape(a, b);
}

/** Row-major strides of `shape`, the last axis' included. */
function strides(shape: number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    st[d] = acc;
    acc *= shape[d];
  }
  return st;
}

/** For output matrix i, the flat index of a's (or b's) matrix: numpy broadcasting of the batch axes `own` to `out`. */
function batchIndex(own: number[], out: number[]): (i: number) => number {
  const padded = [...new Array<number>(out.length - own.length).fill(1), ...own];
  const [outSt, ownSt] = [strides(out), strides(padded)];
  return (i) => {
    let flat = 0;
    let rest = i;
    for (let d = 0; d < out.length; d++) {
      const coord = Math.floor(rest / outSt[d]);
      rest -= coord * outSt[d];
      if (padded[d] !== 1) flat += coord * ownSt[d];
    }
    return flat;
  };
}

/**
 * out = activation(op(a) x op(b) + bias), batch axes broadcast; a and b float32 of rank >= 2.
 * The output is a new tensor of the backend of shape [...batch, M, N].
 */
export function fastProduct(args: ProductArgs, backend: WasmBackend): tf.TensorInfo {
  const {a, b, transposeA, transposeB} = args;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') {
    throw new Error(`BatchMatMul for non non-float32 tensors not yet supported.`);
  }
  const [ra, rb] = [a.shape.length, b.shape.length];
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const Ka = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (Ka !== Kb) {
    throw new Error(`Error in matMul: inner shapes (${Ka}) and (${Kb}) of Tensors with shapes ${a.shape} and ` +
      `${b.shape} and transposeA=${transposeA} and transposeB=${transposeB} must match.`);
  }
  const K = Ka;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const outBatch = batchShape(aBatch, bBatch);
  const outShape = [...outBatch, M, N];
  const count = tf.util.sizeFromShape(outBatch);
  const activation = args.activation ?? 'linear';
  const code = ACTIVATION_CODE[activation];
  if (code == null) throw new Error(`${activation} activation not yet supported for FusedConv2D in the wasm backend.`);
  const bias = args.bias ?? null;
  const prelu = args.preluActivationWeights ?? null;
  // What the native path fuses: a bias of N values; an activation on values alone, or prelu with N weights.
  const fuseBias = bias == null || (tf.util.sizeFromShape(bias.shape) === N && bias.shape.length === 1);
  const fuseActivation = fuseBias && (code !== 3 || (prelu != null && tf.util.sizeFromShape(prelu.shape) === N &&
    prelu.shape.length === 1));
  const nativeActivation = fuseActivation ? code : 0;

  if (count > 1 && M * K * N < SMALL_PRODUCT && smallProducts != null) {
    const done = smallProducts(args, backend);
    if (done != null) return done;
  }
  if (K > 0 && bias == null && code === 0 && ((count > 1 && K * N <= NATIVE_PRODUCT_B) ||
      (count === 1 && (transposeA || transposeB)))) {
    const done = nativeBatch(args, M, K, N, count, aBatch, bBatch, outBatch, backend);
    if (done != null) return done;
  }
  const out = backend.makeOutput(outShape, 'float32');
  if (count * M * N === 0) return out;
  const temps: tf.TensorInfo[] = [];
  try {
    if (K === 0) {
      // Sums of nothing: zeros, then the bias and activation.
      backend.typedArrayFromHeap(out).fill(0);
      return finish(out, bias, activation, prelu, args.leakyreluAlpha, backend, temps, true);
    }
    const a2 = transposeA ? transposeLast(a, backend) : a;
    if (a2 !== a) temps.push(a2);
    const b2 = transposeB ? transposeLast(b, backend) : b;
    if (b2 !== b) temps.push(b2);
    const product = nativeProduct(backend);
    const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const [aBase, bBase, outBase] = [offset(a2), offset(b2), offset(out)];
    const fusedBias = fuseBias && bias != null;
    const fusedPrelu = fuseActivation && code === 3;
    const alpha = args.leakyreluAlpha ?? 0;
    // One b for every product: b, the bias and the prelu weights go by their own ids, so the
    // native side keeps the operator it packs b into for the next call with the same weights
    // (a layer's kernel at inference), and drops it when b is disposed. A slice of b goes by
    // a view (and so do the bias and weights beside it), released after the call.
    const bCount = tf.util.sizeFromShape(bBatch);
    const own = (t: tf.TensorInfo): Operand => ({id: backend.dataIdMap.get(t.dataId).id});
    const side = (t: tf.TensorInfo): Operand => (bCount === 1 ? own(t) : {offset: offset(t), size: N});
    const extra = [...(fusedBias ? [side(bias!)] : []), ...(fusedPrelu ? [side(prelu!)] : [])];
    const run = (aOff: number, bOff: number, outOff: number, rows: number) => withViews(backend,
      [{offset: aOff, size: rows * K}, bCount === 1 ? own(b2) : {offset: bOff, size: K * N},
        {offset: outOff, size: rows * N}, ...extra],
      ([aId, bId, outId, ...rest]) => {
        const biasId = fusedBias ? rest.shift()! : 0;
        const preluId = fusedPrelu ? rest.shift()! : 0;
        product(aId, shapeBytes([1, rows, K]), 3, bId, shapeBytes([1, K, N]), 3, 0, 0, nativeActivation, biasId,
          preluId, alpha, outId);
      });
    if (bCount === 1 && tf.util.sizeFromShape(aBatch) === count) {
      // One b for every matrix of a: a's rows are one 2-D operand.
      run(aBase, bBase, outBase, count * M);
    } else {
      const ia = batchIndex(aBatch, outBatch);
      const ib = batchIndex(bBatch, outBatch);
      for (let i = 0; i < count; i++) run(aBase + 4 * ia(i) * M * K, bBase + 4 * ib(i) * K * N, outBase + 4 * i * M * N, M);
    }
    // What the native call did not fuse: the bias (and so the activation), or the activation.
    if (!fuseBias) return finish(out, bias, activation, prelu, args.leakyreluAlpha, backend, temps, true);
    if (!fuseActivation) return finish(out, null, activation, prelu, args.leakyreluAlpha, backend, temps, true);
    return out;
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/**
 * Batched products whose second operands hold at most this many values (64 KiB: each stays
 * in cache while its product runs) go to the library's own kernel (wasm_native.ts) when it
 * runs on the backend.
 */
export const NATIVE_PRODUCT_B = 16384;

/** The product (batched, or 2-D with a transposed operand) by the library's kernel, or null where that kernel cannot run. */
function nativeBatch(args: ProductArgs, M: number, K: number, N: number, count: number, aBatch: number[],
                     bBatch: number[], outBatch: number[], backend: WasmBackend): tf.TensorInfo | null {
  const native = nativeProducts(backend.wasm);
  if (native == null) return null;
  const out = backend.makeOutput([...outBatch, M, N], 'float32');
  try {
    if (M * N === 0) return out;
    const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const [aBase, bBase, outBase] = [offset(args.a), offset(args.b), offset(out)];
    if (count === 1) {
      native.product({a: aBase, b: bBase, c: outBase, M, K, N, transposeA: args.transposeA, transposeB: args.transposeB});
      return out;
    }
    const [ia, ib] = [batchIndex(aBatch, outBatch), batchIndex(bBatch, outBatch)];
    const offsets = new Int32Array(3 * count);
    for (let i = 0; i < count; i++) {
      offsets[3 * i] = aBase + 4 * ia(i) * M * K;
      offsets[3 * i + 1] = bBase + 4 * ib(i) * K * N;
      offsets[3 * i + 2] = outBase + 4 * i * M * N;
    }
    native.run({offsets, M, K, N, transposeA: args.transposeA, transposeB: args.transposeB});
    return out;
  } catch (e) {
    backend.disposeData(out.dataId);
    throw e;
  }
}

/**
 * out + bias (broadcast), then the activation when `activate`, by the backend's kernels;
 * frees the intermediates (out included) and returns the result.
 */
function finish(out: tf.TensorInfo, bias: tf.TensorInfo | null, activation: string, prelu: tf.TensorInfo | null,
                alpha: number | undefined, backend: WasmBackend, temps: tf.TensorInfo[], activate: boolean): tf.TensorInfo {
  let y = out;
  if (bias != null) {
    temps.push(y);
    y = runKernel('Add', {a: y, b: bias}, backend);
  }
  if (activate && activation !== 'linear') {
    temps.push(y);
    y = activation === 'relu' ? runKernel('Relu', {x: y}, backend)
      : activation === 'relu6' ? runKernel('Relu6', {x: y}, backend)
      : activation === 'elu' ? runKernel('Elu', {x: y}, backend)
      : activation === 'sigmoid' ? runKernel('Sigmoid', {x: y}, backend)
      : activation === 'leakyrelu' ? runKernel('LeakyRelu', {x: y}, backend, {alpha: alpha ?? 0.2})
      : runKernel('Prelu', {x: y, alpha: prelu!}, backend);
  }
  return y;
}

const batchMatMulConfig: tf.KernelConfig = {
  kernelName: 'BatchMatMul',
  backendName: 'wasm',
  kernelFunc: ({inputs, backend, attrs}) => {
    const {a, b} = inputs as {a: tf.TensorInfo; b: tf.TensorInfo};
    const {transposeA, transposeB} = attrs as unknown as {transposeA: boolean; transposeB: boolean};
    return fastProduct({a, b, transposeA, transposeB}, backend as unknown as WasmBackend);
  },
};

const fusedMatMulConfig: tf.KernelConfig = {
  kernelName: '_FusedMatMul',
  backendName: 'wasm',
  kernelFunc: ({inputs, backend, attrs}) => {
    const {a, b, bias, preluActivationWeights} = inputs as Record<string, tf.TensorInfo | undefined>;
    const {transposeA, transposeB, activation, leakyreluAlpha} =
      attrs as unknown as {transposeA: boolean; transposeB: boolean; activation: string; leakyreluAlpha?: number};
    return fastProduct({a: a!, b: b!, transposeA, transposeB, bias, activation, preluActivationWeights, leakyreluAlpha},
      backend as unknown as WasmBackend);
  },
};

/** The library's product kernels by name. */
export const PRODUCT_KERNELS: Readonly<Record<'BatchMatMul' | '_FusedMatMul', tf.KernelConfig>> =
  {BatchMatMul: batchMatMulConfig, _FusedMatMul: fusedMatMulConfig};

/**
 * True when `kernelFunc`, run on a stand-in backend with `inputs` and `attrs`, makes one
 * output of shape `shape` and then asks for that output's native id (to hand it to a native
 * call, which the probe never reaches: it stops the kernel there). What tfjs-backend-wasm
 * 4.x's natively computed kernels do; a minifier renames them but keeps this. `reads` gives
 * the values of the inputs the kernel must read with readSync first (each once; any other
 * read fails the probe).
 */
export function stopsAtNativeOutput(kernelFunc: tf.KernelFunc, inputs: Record<string, {shape: number[]}>,
                                    attrs: tf.NamedAttrMap, shape: number[],
                                    reads: Record<string, tf.backend_util.BackendValues> = {}): boolean {
  const stop = new Error('probe');
  const made: number[][] = [];
  const outId = {};
  let next = 1;
  const infos = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, {dataId: {}, shape: v.shape,
    dtype: k in reads ? 'int32' : 'float32'}]));
  const readCount = new Map<unknown, number>();
  const backend = {
    readSync: (dataId: unknown) => {
      const name = Object.keys(reads).find((k) => infos[k]?.dataId === dataId);
      if (name == null) throw new Error('unexpected read');
      readCount.set(name, (readCount.get(name) ?? 0) + 1);
      return reads[name];
    },
    incRef: () => undefined,
    disposeData: () => true,
    makeOutput: (s: number[], dtype: string) => {
      made.push(s);
      return {dataId: outId, shape: s, dtype};
    },
    dataIdMap: {
      get: (dataId: unknown) => {
        if (dataId === outId) throw stop;
        return {id: next++, memoryOffset: 0};
      },
    },
  };
  try {
    kernelFunc({inputs: infos as unknown as tf.NamedTensorInfoMap, backend: backend as unknown as tf.KernelBackend, attrs});
  } catch (e) {
    return e === stop && made.length === 1 && made[0].join() === shape.join() &&
      Object.keys(reads).every((k) => readCount.get(k) === 1);
  }
  return false;
}

/** True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's BatchMatMul or _FusedMatMul (a [2, 3, 4] x [2, 4, 5] product). */
export function isTfjsWasmProduct(kernelFunc: tf.KernelFunc): boolean {
  return stopsAtNativeOutput(kernelFunc, {a: {shape: [2, 3, 4]}, b: {shape: [2, 4, 5]}},
    {transposeA: false, transposeB: false, activation: 'linear'}, [2, 3, 5]);
}

/**
 * tfjs's kernel `original` registered again after its backend started (setLibraryKernels('tfjs')):
 * tfjs runs a kernel's setup only when its backend starts, so this one sets itself up on
 * first use with each backend.
 */
export function setUpOnFirstUse(original: tf.KernelConfig): tf.KernelConfig {
  const ready = new WeakSet<object>();
  return {
    kernelName: original.kernelName, backendName: original.backendName, setupFunc: original.setupFunc,
    kernelFunc: (args) => {
      if (!ready.has(args.backend)) {
        ready.add(args.backend);
        original.setupFunc?.(args.backend);
      }
      return original.kernelFunc(args);
    },
  };
}

/** True when `backend`'s BatchMatMul kernel is the library's (every product takes the fast path). */
export function hasFastProducts(backend: string): boolean {
  return tf.getKernel('BatchMatMul', backend)?.kernelFunc === batchMatMulConfig.kernelFunc;
}
