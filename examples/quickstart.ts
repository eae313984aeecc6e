/**
 * Quick start: a small classifier over token sequences with grouped-query attention,
 * a padding mask from the embedding, training with model.fit, and a save/load round trip.
 *
 *   npx ts-node examples/quickstart.ts
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {MultiHeadAttention} from '../src/node';
import {runAsProgram} from './run';

/** Label = the first token of the sequence (0 is padding). */
function makeData(n: number, T: number, vocab: number): {xs: tf.Tensor2D; ys: tf.Tensor2D} {
  const rows: number[][] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const len = 2 + (i % (T - 1));
    const row = Array.from({length: T}, (_, t) => (t < len ? 1 + ((i * 13 + t * 7) % (vocab - 1)) : 0));
    rows.push(row);
    labels.push(row[0] % 4);
  }
  return {xs: tf.tensor2d(rows, undefined, 'int32'), ys: tf.tensor2d(labels, [n, 1])};
}

export async function main(log: (line: string) => void = console.log):
    Promise<{firstLoss: number; lastLoss: number; maxDiff: number}> {
  const T = 8;
  const vocab = 16;
  const ids = tf.input({shape: [T], dtype: 'int32'});
  const x = tf.layers.embedding({inputDim: vocab, outputDim: 16, maskZero: true}).apply(ids) as tf.SymbolicTensor;
  const att = new MultiHeadAttention({numHeads: 4, numKvHeads: 2}).apply(x) as tf.SymbolicTensor;
  const pooled = tf.layers.globalAveragePooling1d().apply(att) as tf.SymbolicTensor;
  const probs = tf.layers.dense({units: 4, activation: 'softmax'}).apply(pooled) as tf.SymbolicTensor;
  const model = tf.model({inputs: ids, outputs: probs});
  const optimizer = tf.train.adam(0.01);
  model.compile({optimizer, loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy']});

  const {xs, ys} = makeData(64, T, vocab);
  const history = await model.fit(xs, ys, {epochs: 15, batchSize: 16, verbose: 0});
  const losses = history.history.loss as number[];
  log(`loss ${losses[0].toFixed(3)} -> ${losses[losses.length - 1].toFixed(3)}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quickstart-'));
  await model.save(`file://${dir}`);
  const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
  const a = model.predict(xs) as tf.Tensor;
  const b = loaded.predict(xs) as tf.Tensor;
  const maxDiff = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
  log(`saved to ${dir}; reloaded model differs by ${maxDiff}`);
  fs.rmSync(dir, {recursive: true, force: true});
  tf.dispose([xs, ys, a, b]);
  model.dispose();
  loaded.dispose();
  optimizer.dispose();
  return {firstLoss: losses[0], lastLoss: losses[losses.length - 1], maxDiff};
}

if (require.main === module) runAsProgram(() => main());
