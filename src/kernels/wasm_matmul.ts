/**
 * Products on the wasm backend at the speed of its 2-D product, for every tfjs model.
 *
 * tfjs-backend-wasm 4.22 runs `BatchMatMul` and `_FusedMatMul` through XNNPACK only when
 * both operands are one 2-D matrix and neither is transposed; every transposed, batched or
 * broadcast product falls to a naive loop. Training pays it on every step: the gradients of
 * a Dense layer are transposed products.
 *
 * The replacement kernels here pick, for each product, the path that computes it at that
 * speed (wasm_product_paths.ts):
 *
 * - a batched product of small matrices (attention's per-(batch, head) products) and a 2-D
 *   product with a transposed operand (the gradients of a Dense layer), with no fused bias
 *   or activation, run on the library's own kernel (wasm_native.ts), in place on the heap;
 * - every other product takes the backend's own XNNPACK path, on views of the operands;
 * - batches of very small products go to tfjs's own kernel, whose plain loop is quicker there.
 *
 * Batch dimensions broadcast as numpy's do (each of a's and b's batch axes is 1 or the
 * output's). The kernels are installed only while the registered ones behave as
 * tfjs-backend-wasm 4.x's (wasm_replacement.ts); `wasmKernelStatus()` says which are in place.
 */
import * as tf from '@tensorflow/tfjs';
import {WasmBackend} from './backend_types';
import {ACTIVATION_CODE, ProductArgs, ProductDims, libraryKernelProduct, xnnpackProduct} from './wasm_product_paths';
import {replaceRecognised, replacementState, setUpOnFirstUse, stopsAtNativeOutput} from './wasm_replacement';

/**
 * Per-matrix products of fewer multiply-adds than this, in batches, go to tfjs's own kernel
 * (when it was replaced): its plain loop beats one native call per matrix there.
 */
export const SMALL_PRODUCT = 8192;

/**
 * Batched products whose second operands hold at most this many values (64 KiB: each stays
 * in cache while its product runs) go to the library's own kernel (wasm_native.ts) when it
 * runs on the backend.
 */
export const NATIVE_PRODUCT_B = 16384;

/**
 * out = activation(op(a) x op(b) + bias), batch axes broadcast; a and b float32 of rank >= 2.
 * The output is a new tensor of the backend of shape [...batch, M, N].
 */
export function fastProduct(args: ProductArgs, backend: WasmBackend): tf.TensorInfo {
  const {a, b, transposeA, transposeB} = args;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') {
    throw new Error('BatchMatMul for non non-float32 tensors not yet supported.');
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
  // The output's batch shape, or throws as tfjs does for shapes that do not broadcast.
  const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
  const count = tf.util.sizeFromShape(outBatch);
  const dims: ProductDims = {M, K, N, aBatch, bBatch, outBatch, count};
  const activation = args.activation ?? 'linear';
  const code = ACTIVATION_CODE[activation];
  if (code == null) throw new Error(`${activation} activation not yet supported for FusedConv2D in the wasm backend.`);

  if (count > 1 && M * K * N < SMALL_PRODUCT) {
    const done = tfjsSmallProduct(args, backend);
    if (done != null) return done;
  }
  if (K > 0 && args.bias == null && code === 0 && ((count > 1 && K * N <= NATIVE_PRODUCT_B) ||
      (count === 1 && (transposeA || transposeB)))) {
    const done = libraryKernelProduct(args, dims, backend);
    if (done != null) return done;
  }
  return xnnpackProduct(args, dims, backend);
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

export type ProductName = keyof typeof PRODUCT_KERNELS;
export const PRODUCT_NAMES = Object.keys(PRODUCT_KERNELS) as ProductName[];

/** True when `backend`'s BatchMatMul kernel is the library's (every product takes the fast path). */
export function hasFastProducts(backend: string): boolean {
  return tf.getKernel('BatchMatMul', backend)?.kernelFunc === batchMatMulConfig.kernelFunc;
}

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's BatchMatMul or _FusedMatMul (on a
 * [2, 3, 4] x [2, 4, 5] product).
 */
export function isTfjsWasmProduct(kernelFunc: tf.KernelFunc): boolean {
  return stopsAtNativeOutput(kernelFunc, {a: {shape: [2, 3, 4]}, b: {shape: [2, 4, 5]}},
    {transposeA: false, transposeB: false, activation: 'linear'}, [2, 3, 5]);
}

/** The product kernels the replacements took the place of. */
const originalProducts: Partial<Record<ProductName, tf.KernelConfig>> = {};

/**
 * Puts the library's BatchMatMul and _FusedMatMul kernels in place of the registered wasm
 * ones that behave as tfjs-backend-wasm 4.x's (`isTfjsWasmProduct`); any other kernel is
 * left alone. Idempotent. Returns what the registry holds afterwards.
 */
export function installFastProducts(): Record<ProductName, 'replaced' | 'kept' | 'absent'> {
  for (const name of PRODUCT_NAMES) {
    replaceRecognised(PRODUCT_KERNELS[name], (current) => isTfjsWasmProduct(current.kernelFunc),
      (replaced) => { originalProducts[name] = replaced; });
  }
  return {BatchMatMul: replacementState(batchMatMulConfig), _FusedMatMul: replacementState(fusedMatMulConfig)};
}

/** The product kernel `name` that the replacement took the place of (undefined until it has). */
export function replacedProductKernel(name: ProductName): tf.KernelConfig | undefined {
  return originalProducts[name];
}

const restored: Partial<Record<ProductName, tf.KernelConfig>> = {};

/** tfjs's product kernel `name` as setLibraryKernels('tfjs') registers it again, or null before the replacement. */
export function restoredProduct(name: ProductName): tf.KernelConfig | null {
  const original = originalProducts[name];
  if (original == null) return null;
  return restored[name] ??= setUpOnFirstUse(original);
}

/**
 * tfjs's own product kernel for a small batched product it computes right: batches equal or
 * one of them 1, and (fused) no bias, which its loop adds at the wrong positions. Else null.
 */
function tfjsSmallProduct(args: ProductArgs, backend: WasmBackend): tf.TensorInfo | null {
  const fused = args.bias != null || (args.activation ?? 'linear') !== 'linear';
  const name: ProductName = fused ? '_FusedMatMul' : 'BatchMatMul';
  const tfjs = restoredProduct(name);
  if (tfjs == null || args.bias != null) return null;
  const [aCount, bCount] = [args.a, args.b].map((t) => tf.util.sizeFromShape(t.shape.slice(0, -2)));
  if (aCount !== bCount && aCount !== 1 && bCount !== 1) return null;
  // its fused kernel takes rank 3 only
  if (fused && (args.a.shape.length !== 3 || args.b.shape.length !== 3)) return null;
  const {a, b, transposeA, transposeB, activation, preluActivationWeights, leakyreluAlpha} = args;
  return tfjs.kernelFunc({
    inputs: (fused ? {a, b, ...(preluActivationWeights != null ? {preluActivationWeights} : {})} : {a, b}) as
      tf.NamedTensorInfoMap,
    backend: backend as unknown as tf.KernelBackend,
    attrs: {transposeA, transposeB, ...(fused ? {activation, leakyreluAlpha: leakyreluAlpha ?? 0} : {})},
  }) as tf.TensorInfo;
}
