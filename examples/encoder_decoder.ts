/**
 * An encoder-decoder with cross-attention: the encoder reads a source sequence with
 * self-attention; the decoder reads the target so far with causal self-attention and
 * looks at the encoder's output with cross-attention ([query, value] inputs). Trained
 * with model.fit to copy the source (teacher forcing: the decoder input is the target
 * shifted right by one).
 *
 *   npx ts-node examples/encoder_decoder.ts
 */
import * as tf from '@tensorflow/tfjs';
import {MultiHeadAttention} from '../src/node';
import {runAsProgram} from './run';

const T = 6;
const VOCAB = 8; // 0 = start token, 1..7 symbols

function block(x: tf.SymbolicTensor, attention: tf.SymbolicTensor): tf.SymbolicTensor {
  const h = tf.layers.add().apply([x, attention]) as tf.SymbolicTensor;
  return tf.layers.layerNormalization().apply(h) as tf.SymbolicTensor;
}

export function buildModel(): tf.LayersModel {
  const source = tf.input({shape: [T], dtype: 'int32', name: 'source'});
  const target = tf.input({shape: [T], dtype: 'int32', name: 'target_in'});
  const positions = (name: string) => tf.layers.embedding({inputDim: VOCAB, outputDim: 32, name});
  const s = positions('source_embedding').apply(source) as tf.SymbolicTensor;
  const t = positions('target_embedding').apply(target) as tf.SymbolicTensor;
  const encoded = block(s, new MultiHeadAttention({numHeads: 4, name: 'encoder_self'}).apply(s) as tf.SymbolicTensor);
  const selfAttended = block(t, new MultiHeadAttention({numHeads: 4, causal: true, name: 'decoder_self'})
    .apply(t) as tf.SymbolicTensor);
  const crossAttended = block(selfAttended, new MultiHeadAttention({numHeads: 4, numKvHeads: 2, name: 'decoder_cross'})
    .apply([selfAttended, encoded]) as tf.SymbolicTensor);
  const probs = tf.layers.dense({units: VOCAB, activation: 'softmax'}).apply(crossAttended) as tf.SymbolicTensor;
  return tf.model({inputs: [source, target], outputs: probs});
}

export async function main(log: (line: string) => void = console.log): Promise<{firstLoss: number; lastLoss: number}> {
  const n = 64;
  const src: number[][] = [];
  for (let i = 0; i < n; i++) src.push(Array.from({length: T}, (_, j) => 1 + ((i * 5 + j * 3 + i * j) % (VOCAB - 1))));
  const decoderIn = src.map((row) => [0, ...row.slice(0, T - 1)]);
  const model = buildModel();
  model.compile({optimizer: tf.train.adam(0.01), loss: 'sparseCategoricalCrossentropy'});
  const xs = [tf.tensor2d(src, [n, T], 'int32'), tf.tensor2d(decoderIn, [n, T], 'int32')];
  const ys = tf.tensor3d(src.map((row) => row.map((v) => [v])), [n, T, 1]);
  const history = await model.fit(xs, ys, {epochs: 15, batchSize: 16, verbose: 0});
  const losses = history.history.loss as number[];
  log(`encoder-decoder: loss ${losses[0].toFixed(3)} -> ${losses[losses.length - 1].toFixed(3)} in ${losses.length} epochs`);
  tf.dispose([...xs, ys]);
  model.dispose();
  return {firstLoss: losses[0], lastLoss: losses[losses.length - 1]};
}

if (require.main === module) runAsProgram(() => main());
