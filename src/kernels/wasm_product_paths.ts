/**
 * The two ways the library's wasm product kernels compute a product (wasm_matmul.ts picks
 * one): the library's own kernel (wasm_native.ts), in place on the heap, or the backend's
 * XNNPACK 2-D product, run once per output matrix (or once for a batch sharing one b) on
 * views of the operands where they lie, with a transposed operand transposed once, whole.
 */
import * as tf from '@tensorflow/tfjs';
import {WasmBackend, WasmModule} from './backend_types';
import {nativeProducts} from './wasm_native';

/** A product's arguments, as the BatchMatMul and _FusedMatMul kernels receive them. */
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

/** A product's sizes: op(a) is [...aBatch, M, K], op(b) [...bBatch, K, N], the output [...outBatch, M, N]. */
export interface ProductDims {
  M: number;
  K: number;
  N: number;
  aBatch: number[];
  bBatch: number[];
  outBatch: number[];
  /** Output matrices: the size of outBatch. */
  count: number;
}

/** tfjs-backend-wasm's FusableActivation codes. */
export const ACTIVATION_CODE: Readonly<Record<string, number>> =
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
 * the eight rows' blocks stay in cache.
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
  if (count * R * C > 0) {
    transposeMatrices(backend.typedArrayFromHeap(x) as Float32Array, backend.typedArrayFromHeap(out) as Float32Array,
      count, R, C);
  }
  return out;
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
 * The product (batched, or 2-D with a transposed operand; no bias or activation) by the
 * library's own kernel, or null where that kernel cannot run.
 */
export function libraryKernelProduct(args: ProductArgs, dims: ProductDims, backend: WasmBackend): tf.TensorInfo | null {
  const {M, K, N, count, aBatch, bBatch, outBatch} = dims;
  const native = nativeProducts(backend.wasm);
  if (native == null) return null;
  const out = backend.makeOutput([...outBatch, M, N], 'float32');
  try {
    if (M * N === 0) return out;
    const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
    const [aBase, bBase, outBase] = [offset(args.a), offset(args.b), offset(out)];
    if (count === 1) {
      native.product({a: aBase, b: bBase, c: outBase, M, K, N, transposeA: args.transposeA,
        transposeB: args.transposeB});
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
 * out = activation(op(a) x op(b) + bias) by the backend's XNNPACK 2-D product. A bias of N
 * values and the activations on values alone (prelu with N weights) are fused into it as
 * tfjs fuses them; any other bias or prelu is applied after, by the backend's kernels.
 */
export function xnnpackProduct(args: ProductArgs, dims: ProductDims, backend: WasmBackend): tf.TensorInfo {
  const {a, b, transposeA, transposeB} = args;
  const {M, K, N, count, aBatch, bBatch, outBatch} = dims;
  const activation = args.activation ?? 'linear';
  const code = ACTIVATION_CODE[activation];
  const bias = args.bias ?? null;
  const prelu = args.preluActivationWeights ?? null;
  // What the native path fuses: a bias of N values; an activation on values alone, or prelu with N weights.
  const fuseBias = bias == null || (tf.util.sizeFromShape(bias.shape) === N && bias.shape.length === 1);
  const fuseActivation = fuseBias && (code !== 3 || (prelu != null && tf.util.sizeFromShape(prelu.shape) === N &&
    prelu.shape.length === 1));
  const nativeActivation = fuseActivation ? code : 0;

  const out = backend.makeOutput([...outBatch, M, N], 'float32');
  if (count * M * N === 0) return out;
  const temps: tf.TensorInfo[] = [];
  try {
    if (K === 0) {
      // Sums of nothing: zeros, then the bias and activation.
      backend.typedArrayFromHeap(out).fill(0);
      return addBiasThenActivate(out, bias, activation, prelu, args.leakyreluAlpha, backend, temps);
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
    const ownId = (t: tf.TensorInfo): Operand => ({id: backend.dataIdMap.get(t.dataId).id});
    const fusedOperand = (t: tf.TensorInfo): Operand => (bCount === 1 ? ownId(t) : {offset: offset(t), size: N});
    const fusedOperands = [...(fusedBias ? [fusedOperand(bias!)] : []), ...(fusedPrelu ? [fusedOperand(prelu!)] : [])];
    const run = (aOff: number, bOff: number, outOff: number, rows: number) => withViews(backend,
      [{offset: aOff, size: rows * K}, bCount === 1 ? ownId(b2) : {offset: bOff, size: K * N},
        {offset: outOff, size: rows * N}, ...fusedOperands],
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
      for (let i = 0; i < count; i++) {
        run(aBase + 4 * ia(i) * M * K, bBase + 4 * ib(i) * K * N, outBase + 4 * i * M * N, M);
      }
    }
    // What the native call did not fuse: the bias (and so the activation), or the activation.
    if (!fuseBias) return addBiasThenActivate(out, bias, activation, prelu, args.leakyreluAlpha, backend, temps);
    if (!fuseActivation) return addBiasThenActivate(out, null, activation, prelu, args.leakyreluAlpha, backend, temps);
    return out;
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/**
 * out + bias (broadcast), then the activation, by the backend's kernels; adds the
 * intermediates (out included) to `temps`, for the caller to free, and returns the result.
 */
function addBiasThenActivate(out: tf.TensorInfo, bias: tf.TensorInfo | null, activation: string,
                             prelu: tf.TensorInfo | null, alpha: number | undefined, backend: WasmBackend,
                             temps: tf.TensorInfo[]): tf.TensorInfo {
  let y = out;
  if (bias != null) {
    temps.push(y);
    y = runKernel('Add', {a: y, b: bias}, backend);
  }
  if (activation !== 'linear') {
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
