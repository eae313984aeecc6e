/**
 * The child of threads.test.ts: starts the wasm backend with the threads asked for, runs a
 * matMul, batched and transposed products (the library's own product kernel, whose worker
 * threads it first waits for) and a MultiHeadAttention forward+backward (seeded), and prints
 * one line RESULT {...} with the threads running, the kernel's workers and the work they
 * took, and a hash of every result's bits. Then it returns: the process
 * must exit by itself. `fallback` as the second argument makes the installed
 * tfjs-backend-wasm look like another version (its package.json as read through fs).
 */
import * as crypto from 'crypto';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {selectBackend} from '../src/backend';
import {MultiHeadAttention} from '../src/layers/multi_head_attention';
import {wasmThreads} from '../src/wasm_threads';
import {nativeProducts, NativeHost} from '../src/wasm_native';

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
  const native = nativeProducts((tf.backend() as unknown as {wasm: NativeHost}).wasm)!;
  // The kernel's workers start on its first use and take work once ready: wait for them.
  tf.tidy(() => tf.matMul(tf.ones([2, 32, 32]), tf.ones([2, 32, 32])).dataSync());
  for (let waited = 0; native.readyThreads < wasmThreads() - 1 && waited < 20_000; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const before = native.stats.byWorkers;
  let splitItems = 0;
  tf.tidy(() => {
    const a = tf.randomNormal([256, 384], 0, 1, 'float32', 1);
    const b = tf.randomNormal([384, 320], 0, 1, 'float32', 2);
    hashes.matMul = bits(tf.matMul(a, b));
    // Batched (64 units of [96, 48] x [48, 80], every transposition) and 2-D transposed products.
    const x = tf.randomNormal([64, 96, 48], 0, 1, 'float32', 5);
    const y = tf.randomNormal([64, 48, 80], 0, 1, 'float32', 6);
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      const [xa, yb] = [tA ? tf.transpose(x, [0, 2, 1]) : x, tB ? tf.transpose(y, [0, 2, 1]) : y];
      hashes[`batched ${tA} ${tB}`] = bits(tf.matMul(xa, yb, tA, tB));
    }
    const [rows, wide] = [x.reshape([-1, 48]), tf.randomNormal([64 * 96, 80], 0, 1, 'float32', 7)];
    hashes['2-D true false'] = bits(tf.matMul(rows, wide, true, false));
    hashes['2-D false true'] = bits(tf.matMul(rows, y.reshape([-1, 48]).slice([0, 0], [80, 48]), false, true));
    hashes['2-D true true'] = bits(tf.matMul(rows.slice([0, 0], [300, 48]), wide.slice([0, 0], [80, 300]), true, true));
    // [300, 80] x [48, 80]^T: 2 blocks of columns, cut into blocks of rows (76, 76, 76, 72) with a worker.
    const panelsBefore = native.stats.panels;
    hashes['2-D rows'] = bits(tf.matMul(wide.slice([0, 0], [300, 80]), y.reshape([-1, 80]).slice([0, 0], [48, 80]), false,
      true));
    splitItems = native.stats.panels - panelsBefore;
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
  // Workers stopped: the calling thread does every product, with the same bits.
  const stoppedBefore = native.stats.byWorkers;
  native.stop();
  const again2 = tf.tidy(() => bits(tf.matMul(tf.randomNormal([64, 96, 48], 0, 1, 'float32', 5),
    tf.randomNormal([64, 48, 80], 0, 1, 'float32', 6))));
  const workers = {ready: native.readyThreads, took: stoppedBefore - before, splitItems,
    afterStop: {took: native.stats.byWorkers - stoppedBefore, same: again2 === hashes['batched false false']}};
  process.stdout.write(`RESULT ${JSON.stringify({threads: wasmThreads(), workers, hashes, again})}\n`);
})().catch((e) => {
  process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
  process.exitCode = 1;
});
