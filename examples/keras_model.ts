/**
 * A Keras model with MultiHeadAttention, converted with tensorflowjs_converter, run in
 * JavaScript: loadKerasModel reads the Keras 3 model.json (here a real conversion, two
 * BiLSTMs, MultiHeadAttention and two Dense heads; test/fixtures/keras/real/smartfood),
 * predicts, and saves it as an ordinary tfjs model that tf.loadLayersModel reads back.
 *
 *   npx ts-node examples/keras_model.ts
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {loadKerasModel, MultiHeadAttention, registerAttentionLayers} from '../src/node';
import {runAsProgram} from './run';

export interface KerasModelResult {
  /** The attention layer's numHeads and headDim, read from Keras's num_heads / key_dim. */
  attention: [number, number];
  /** Output shapes of the two heads for a batch of 3. */
  shapes: number[][];
  /** Each row of the softmax head sums to 1. */
  rowSums: number[];
  /** max |reloaded - loaded| over both outputs. */
  reloadDiff: number;
}

export async function main(log: (line: string) => void = console.log): Promise<KerasModelResult> {
  const source = path.join(__dirname, '..', 'test', 'fixtures', 'keras', 'real', 'smartfood', 'model.json');
  const model = await loadKerasModel(`file://${source}`);
  const mha = model.getLayer('attention') as MultiHeadAttention;
  const config = mha.getConfig() as {numHeads: number; headDim: number};
  log(`loaded ${model.layers.length} layers, ${model.countParams()} parameters; 'attention' is this library's ` +
    `${mha.getClassName()} with ${config.numHeads} heads of ${config.headDim}`);

  // 3 sequences of 14 steps with 9 features, as the model's input layer says.
  const x = tf.randomNormal([3, 14, 9], 0, 1, 'float32', 7);
  const [calories, category] = model.predict(x) as tf.Tensor[];
  const rowSums = tf.tidy(() => Array.from(tf.sum(category, -1).dataSync()));
  log(`predict: calories ${JSON.stringify(calories.shape)}, category ${JSON.stringify(category.shape)} ` +
    `(rows sum to ${rowSums.map((s) => s.toFixed(4)).join(', ')})`);

  // What `tfjs-attention convert` does: an ordinary tfjs model folder.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-keras-model-'));
  await model.save(`file://${dir}`);
  // Loading by class name: every layer class of the library must be registered. Importing the
  // library does that in Node; a web bundle keeps only the classes it uses, so call this there.
  registerAttentionLayers();
  const reloaded = await tf.loadLayersModel(`file://${dir}/model.json`);
  const again = reloaded.predict(x) as tf.Tensor[];
  const reloadDiff = Math.max(...[calories, category].map((t, i) =>
    tf.tidy(() => tf.max(tf.abs(tf.sub(t, again[i]))).dataSync()[0])));
  log(`saved to ${dir} and reloaded with tf.loadLayersModel: outputs differ by ${reloadDiff}`);
  fs.rmSync(dir, {recursive: true, force: true});

  const result = {attention: [config.numHeads, config.headDim] as [number, number],
    shapes: [calories.shape, category.shape], rowSums, reloadDiff};
  tf.dispose([x, calories, category, ...again]);
  model.dispose();
  reloaded.dispose();
  return result;
}

if (require.main === module) runAsProgram(() => main());
