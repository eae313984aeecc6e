/**
 * The child of threads.test.ts: starts the wasm backend with the threads asked for, runs a
 * matMul and a MultiHeadAttention forward+backward (seeded), and prints one line RESULT {...}
 * with the threads running and a hash of every result's bits. Then it returns: the process
 * must exit by itself. `fallback` as the second argument makes the installed
 * tfjs-backend-wasm look like another version (its package.json as read through fs).
 */
import * as crypto from 'crypto';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {selectBackend} from '../src/backend';
import {MultiHeadAttention} from '../src/layers/multi_head_attention';
import {wasmThreads} from '../src/wasm_threads';

const [threadsArg, mode] = process.argv.slice(2);

if (mode === 'fallback') {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const fs = require('fs') as typeof import('fs');
  const read = fs.readFileSync;
  const target = path.join('tfjs-backend-wasm', 'package.json');
  (fs as {readFileSync: unknown}).readFileSync = function (this: unknown, file: unknown, ...rest: unknown[]) {
    const text = (read as (...a: unknown[]) => string | Buffer).call(this, file, ...rest);
    if (!String(file).endsWith(target)) return text;
    return JSON.stringify({...JSON.parse(text.toString()), version: '4.21.0'});
  };
}

function bits(t: tf.Tensor): string {
  const data = t.dataSync() as Float32Array;
  return crypto.createHash('sha256').update(Buffer.from(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
}

(async () => {
  const threads = threadsArg === 'auto' ? 'auto' : Number(threadsArg);
  await selectBackend('wasm', {threads});
  const hashes: Record<string, string> = {};
  tf.tidy(() => {
    const a = tf.randomNormal([256, 384], 0, 1, 'float32', 1);
    const b = tf.randomNormal([384, 320], 0, 1, 'float32', 2);
    hashes.matMul = bits(tf.matMul(a, b));
  });
  const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, headDim: 16,
    kernelInitializer: tf.initializers.glorotUniform({seed: 3}), biasInitializer: 'ones'});
  const x = tf.randomNormal([2, 48, 32], 0, 1, 'float32', 4);
  layer.apply(x); // builds the weights
  const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const {value, grads} = tf.variableGrads(() => tf.sum(tf.square(layer.apply(x) as tf.Tensor)) as tf.Scalar,
    weights);
  hashes.loss = bits(value);
  for (const [name, g] of Object.entries(grads)) hashes[`grad ${name}`] = bits(g);
  tf.dispose([value, ...Object.values(grads), x]);
  // Threads are fixed once wasm runs: another count is refused, 'auto' takes what runs.
  const again: Record<string, string> = {};
  for (const t of [1, 2, 'auto'] as const) {
    again[String(t)] = await selectBackend('wasm', {threads: t}).then(() => 'ok', (e) => `${e.code}: ${e.message}`);
  }
  process.stdout.write(`RESULT ${JSON.stringify({threads: wasmThreads(), hashes, again})}\n`);
})().catch((e) => {
  process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
  process.exitCode = 1;
});
