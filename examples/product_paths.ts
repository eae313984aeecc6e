/**
 * The two ways the library computes its matrix products, on one layer: split into 2-D,
 * non-transposed products (what tfjs's own wasm kernels run fast; 'auto' chooses it on wasm
 * only where the library's product kernels are not in place) or left to tf.matMul as
 * batched products (with the library's wasm kernels, as fast). Both give the same output and gradients to
 * float rounding; this program shows which path 'auto' takes on your backend, runs a
 * GQA MultiHeadAttention layer forward and backward both ways, and prints the largest
 * difference and each path's time. It also prints the order `auto` tries backends in and
 * what wasmKernelStatus() says of the wasm kernels the library installs.
 *
 *   npx ts-node examples/product_paths.ts
 */
import * as tf from '@tensorflow/tfjs';
import {MultiHeadAttention} from '../src/node';
import {
  MatMulPath, autoBackends, getMatMulPath, matMul, setMatMulPath, splitsProducts, wasmKernelStatus, WasmKernelStatus,
} from '../src/internals';
import {runAsProgram} from './run';

export interface PathsResult {
  /** What 'auto' does on this backend. */
  autoSplits: boolean;
  /** Largest |split - batched| over the output and every gradient, relative to max(1, |batched|). */
  maxDiff: number;
  /** Milliseconds of one forward+backward per path. */
  ms: Record<'split' | 'batched', number>;
  /** The library's product of a [2, 3, 4] x [2, 5, 4] pair (b transposed), as tf.matMul computes it. */
  productShape: number[];
  /** What wasmKernelStatus() reports. */
  kernels: WasmKernelStatus;
}

export async function main(log: (line: string) => void = console.log, B = 2, T = 64): Promise<PathsResult> {
  const autoSplits = getMatMulPath() === 'auto' && splitsProducts();
  // The kernels the library installs for wasm (recognised by behaviour, so also in a minified bundle).
  const kernels = wasmKernelStatus();
  log(`backend ${tf.getBackend()} (auto tries ${autoBackends().join(', ')}): matMul path '${getMatMulPath()}' ` +
    `${splitsProducts() ? 'splits products into 2-D ones' : 'uses tf.matMul as is'}; wasm Slice ${kernels.Slice}, ` +
    `UnsortedSegmentSum ${kernels.UnsortedSegmentSum}, BatchMatMul ${kernels.BatchMatMul}, _FusedMatMul ` +
    `${kernels._FusedMatMul}, Tile ${kernels.Tile}, Identity ${kernels.Identity}, GatherV2 ${kernels.GatherV2}`);

  // matMul has tf.matMul's semantics on every path.
  const product = tf.tidy(() => matMul(tf.ones([2, 3, 4]), tf.ones([2, 5, 4]), false, true));
  const productShape = product.shape;
  product.dispose();

  const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true});
  const x = tf.randomNormal([B, T, 64], 0, 1, 'float32', 1);
  tf.dispose(layer.apply(x) as tf.Tensor); // builds the weights
  const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const pass = (path: MatMulPath): {values: tf.Tensor[]; ms: number} => {
    const previous = setMatMulPath(path);
    try {
      const start = Date.now();
      const values = tf.tidy(() => {
        const {value, grads} = tf.variableGrads(() => tf.sum(tf.square(layer.apply(x) as tf.Tensor)), weights);
        return [value, ...weights.map((w) => grads[w.name])];
      });
      values.forEach((t) => t.dataSync());
      return {values, ms: Date.now() - start};
    } finally {
      setMatMulPath(previous); // the setting is global: always put it back
    }
  };
  for (const path of ['split', 'batched'] as const) tf.dispose(pass(path).values); // untimed warm-up
  const split = pass('split');
  const batched = pass('batched');
  const maxDiff = Math.max(...split.values.map((t, i) => tf.tidy(() => {
    const ref = batched.values[i];
    const scale = Math.max(1, tf.max(tf.abs(ref)).dataSync()[0]);
    return tf.max(tf.abs(tf.sub(t, ref))).dataSync()[0] / scale;
  })));
  log(`MultiHeadAttention forward+backward (B=${B}, T=${T}, E=64, 4 heads, 2 kv heads): split ${split.ms} ms, ` +
    `batched ${batched.ms} ms, largest difference ${maxDiff.toExponential(2)}`);
  tf.dispose([x, ...split.values, ...batched.values]);
  layer.dispose();
  return {autoSplits, maxDiff, ms: {split: split.ms, batched: batched.ms}, productShape, kernels};
}

if (require.main === module) runAsProgram(() => main());
