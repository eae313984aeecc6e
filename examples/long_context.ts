/**
 * Exact attention over a long sequence on every core: the wasm backend started with
 * `selectBackend('wasm', {threads: 'auto'})` (in Node; a browser gets tfjs's own threads on
 * cross-origin-isolated pages), and a FlashAttention layer whose tiles are set by `blockSize`
 * (query positions) and `keyBlockSize` (keys), so forward+backward holds a few tiles of
 * scores instead of a T x T matrix per head. Its output equals MultiHeadAttention's with the
 * same weights.
 *
 *   npx ts-node examples/long_context.ts            (T = 4096, every core)
 *   npx ts-node examples/long_context.ts 2048 1     (T = 2048, one thread)
 *
 * Tiles of 128 x 1024 hold 128 * 1024 scores per head at a time (512 KiB); larger tiles mean
 * fewer, larger products (faster on wasm) and more memory.
 */
import * as tf from '@tensorflow/tfjs';
import {FlashAttention, MultiHeadAttention, wasmThreads} from '../src/node';
import {runAsProgram} from './run';

export interface LongContextResult {
  /** The flash layer's output shape [B, T, units]. */
  shape: number[];
  /** Largest |flash - MultiHeadAttention| over the outputs. */
  maxDiff: number;
  /** Whether every gradient of the flash layer's weights is finite and some entry non-zero. */
  gradsOk: boolean;
  /** The tile the layer used: [query positions, keys]. */
  tile: [number, number];
}

export async function main(log: (line: string) => void = console.log, T = 4096, blockSize = 128,
                           keyBlockSize = 1024): Promise<LongContextResult> {
  const args = {numHeads: 4, headDim: 16, causal: true,
    kernelInitializer: tf.initializers.glorotUniform({seed: 7})};
  const flash = new FlashAttention({...args, blockSize, keyBlockSize});
  const exact = new MultiHeadAttention(args);
  const x = tf.randomNormal([1, T, 32], 0, 1, 'float32', 2);
  tf.tidy(() => {
    exact.apply(x); // builds the layers
    flash.apply(x);
    flash.setWeights(exact.getWeights()); // the same weights: the two differ only in how they compute
  });

  const start = Date.now();
  const weights = flash.trainableWeights.map((w) => w.read() as tf.Variable);
  const {value, grads} = tf.variableGrads(() => tf.mean(tf.square(flash.apply(x) as tf.Tensor)) as tf.Scalar, weights);
  const ms = Date.now() - start;
  let gradsOk = true;
  for (const g of Object.values(grads)) {
    const data = await g.data();
    gradsOk = gradsOk && data.every(Number.isFinite) && data.some((d) => d !== 0);
  }
  const [a, b] = [flash.apply(x) as tf.Tensor, exact.apply(x) as tf.Tensor];
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const maxDiff = (await diff.data())[0];
  const threads = tf.getBackend() === 'wasm' ? `, ${wasmThreads()} thread(s)` : '';
  log(`flash attention, T=${T}, tiles ${blockSize} x ${keyBlockSize}: forward+backward in ${ms} ms on ` +
    `${tf.getBackend()}${threads}; max |flash - exact| = ${maxDiff.toExponential(2)}`);
  const shape = a.shape;
  tf.dispose([x, value, ...Object.values(grads), a, b, diff]);
  flash.dispose();
  exact.dispose();
  return {shape, maxDiff, gradsOk, tile: [blockSize, keyBlockSize]};
}

if (require.main === module) {
  const [T, threads] = process.argv.slice(2);
  runAsProgram(() => main(console.log, T != null ? Number(T) : undefined), 'wasm',
    {threads: threads != null ? Number(threads) : 'auto'});
}
