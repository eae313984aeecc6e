/**
 * What a Keras or PyTorch user brings: causal masking aligned top-left (Keras'
 * use_causal_mask, PyTorch's is_causal) or bottom-right (FlashAttention-2's `causal=True`),
 * Keras' padding masks at call time, arguments that are checked rather than ignored, and a
 * model saved into a folder that holds other files.
 *
 *   npx ts-node examples/keras_semantics.ts
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, causalMask, MultiHeadAttention} from '../src/node';
import {runAsProgram} from './run';

export interface KerasSemanticsResult {
  /** max |useCausalMask - explicit top-left mask| and |useCausalMask - causal: 'top-left'|. */
  topLeftDiffs: [number, number];
  /** max |top-left - bottom-right| for 5 queries over 3 keys: the two alignments differ. */
  alignmentsDiffer: number;
  /** The code and message of a misspelt argument. */
  refused: [string, string];
  /** The user's file beside the saved model, read back after two saves. */
  notesAfter: string;
  /** max |loaded - saved| of the model's output. */
  loadDiff: number;
}

export async function main(log: (line: string) => void = console.log): Promise<KerasSemanticsResult> {
  const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
  const query = tf.randomNormal([2, 5, 16], 0, 1, 'float32', 1);
  const value = tf.randomNormal([2, 3, 16], 0, 1, 'float32', 2);

  // 1. Keras' use_causal_mask is top-left: query i sees key j iff j <= i.
  const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2});
  const viaKwarg = layer.apply([query, value], {useCausalMask: true}) as tf.Tensor;
  const mask = tf.tidy(() => tf.tile(tf.expandDims(causalMask(5, 3, 'top-left')), [2, 1, 1])); // [B, T, S]
  const viaMask = layer.apply([query, value], {attentionMask: mask}) as tf.Tensor;
  const topLeft = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: 'top-left'});
  tf.dispose(topLeft.apply([query, value]) as tf.Tensor);
  topLeft.setWeights(layer.getWeights());
  const viaCausal = topLeft.apply([query, value]) as tf.Tensor;
  // causal: true is bottom-right: j <= i + (S - T), so here the first two queries see nothing.
  const bottomRight = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true});
  tf.dispose(bottomRight.apply([query, value]) as tf.Tensor);
  bottomRight.setWeights(layer.getWeights());
  const viaBottomRight = bottomRight.apply([query, value]) as tf.Tensor;
  const topLeftDiffs: [number, number] = [maxDiff(viaKwarg, viaMask), maxDiff(viaKwarg, viaCausal)];
  const alignmentsDiffer = maxDiff(viaKwarg, viaBottomRight);
  log(`useCausalMask == explicit j <= i mask: ${topLeftDiffs[0].toExponential(1)}; == causal 'top-left': ` +
    `${topLeftDiffs[1].toExponential(1)}; top-left vs bottom-right (T=5, S=3): ${alignmentsDiffer.toFixed(3)}`);

  // 2. Keras' padding masks at call time: value_mask [B, S], 0 = padding.
  const valueMask = tf.tensor2d([[1, 1, 0], [1, 1, 1]]);
  tf.dispose(layer.apply([query, value], {valueMask}) as tf.Tensor);

  // 3. Arguments are checked, not ignored.
  let refused: [string, string] = ['', ''];
  try {
    new MultiHeadAttention({numHeads: 4, numHead: 2} as never);
  } catch (e) {
    if (e instanceof AttentionError) refused = [e.code, e.message];
  }
  log(`refused: ${refused[0]}: ${refused[1]}`);

  // 4. A model saved into a folder with the user's own files keeps them.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-keras-'));
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'my notes\n');
  const input = tf.input({shape: [5, 16]});
  const output = new MultiHeadAttention({numHeads: 4}).apply(input, {useCausalMask: true}) as tf.SymbolicTensor;
  const model = tf.model({inputs: input, outputs: output});
  await model.save(`file://${dir}`);
  await model.save(`file://${dir}`); // a second save replaces only model.json and its weights
  const notesAfter = fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8');
  const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
  const loadDiff = tf.tidy(() => maxDiff(model.predict(query) as tf.Tensor, loaded.predict(query) as tf.Tensor));
  log(`saved twice into ${dir}: ${fs.readdirSync(dir).sort().join(', ')}; loaded output differs by ${loadDiff}`);
  fs.rmSync(dir, {recursive: true, force: true});

  tf.dispose([query, value, viaKwarg, mask, viaMask, viaCausal, viaBottomRight, valueMask]);
  [layer, topLeft, bottomRight].forEach((l) => l.dispose());
  model.dispose();
  loaded.dispose();
  return {topLeftDiffs, alignmentsDiffer, refused, notesAfter, loadDiff};
}

if (require.main === module) runAsProgram(() => main());
