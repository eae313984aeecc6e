/**
 * Linear (Performer) attention on an 8192-token sequence: causal self-attention whose
 * time and memory grow linearly with the length, forward and backward, where exact
 * attention would hold an 8192 x 8192 matrix per head.
 *
 *   npx ts-node examples/linear_long.ts
 */
import * as tf from '@tensorflow/tfjs';
import {LinearAttention} from '../src/node';
import {runAsProgram} from './run';

export async function main(log: (line: string) => void = console.log,
    T = 8192): Promise<{shape: number[]; finite: boolean; peakMiB: number}> {
  const layer = new LinearAttention({numHeads: 2, headDim: 16, causal: true, seed: 1});
  const x = tf.randomNormal([1, T, 32], 0, 1, 'float32', 2);
  const start = Date.now();
  const profile = await tf.profile(() => {
    const [dx] = tf.grads((a: tf.Tensor) => tf.sum(layer.apply(a) as tf.Tensor))([x]);
    return dx;
  });
  const dx = profile.result as tf.Tensor;
  const out = layer.apply(x) as tf.Tensor;
  const finite = (await dx.data()).every(Number.isFinite) && (await out.data()).every(Number.isFinite);
  const peakMiB = profile.peakBytes / 2 ** 20;
  log(`linear attention, T=${T}: output ${JSON.stringify(out.shape)}, forward+backward in ${Date.now() - start} ms, ` +
    `peak ${peakMiB.toFixed(1)} MiB (one 8192 x 8192 float32 matrix alone is 256 MiB)`);
  const shape = out.shape;
  tf.dispose([x, dx, out]);
  layer.dispose();
  return {shape, finite, peakMiB};
}

if (require.main === module) runAsProgram(() => main());
