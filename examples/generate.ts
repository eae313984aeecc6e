/**
 * Generating: train a small causal character model with rotary positions on the text that
 * ships with the package, continue a prompt with generate() (streamed token by token),
 * then decode one causal LinearAttention layer for 300 steps from its cache, whose size
 * does not grow with the length.
 *
 *   npx ts-node examples/generate.ts
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionCache, generate, LinearAttention} from '../src/node';
import {cacheBytes} from '../src/internals';
import {decodeText, encodeText, readTextFile, sampleTextPath, train, unigramEntropy} from '../src/train';
import {runAsProgram} from './run';

export async function main(log: (line: string) => void = console.log,
    steps = 60): Promise<{loss: number; entropy: number; text: string; cacheBytes: number[]}> {
  // 1. A character model of the shipped text: causal attention, rotary positions, no position table.
  const {model, record} = await train({
    task: 'text', taskOptions: {seqLength: 32},
    model: {attention: 'gqa', modelDim: 32, numHeads: 4, numKvHeads: 2, numLayers: 1, causal: true, positions: 'rope'},
    steps, batchSize: 16, learningRate: 5e-3, warmupSteps: 10, evalEvery: steps, evalBatches: 2,
  });
  const vocabulary = String(record.task.vocabulary);
  const entropy = unigramEntropy(readTextFile(sampleTextPath()));
  const loss = record.history[record.history.length - 1].loss;
  log(`text model: validation loss ${loss.toFixed(3)} nats/char after ${steps} steps ` +
    `(unigram entropy of the text ${entropy.toFixed(3)})`);

  // 2. Continue a prompt; onToken sees each character as it is decoded.
  let streamed = '';
  const [ids] = await generate(model, [encodeText(vocabulary, 'Attention ')], {
    maxNewTokens: 60, temperature: 0.7, topK: 10, seed: 1, contextLength: 32,
    onToken: (token) => { streamed += decodeText(vocabulary, [token]); },
  });
  const text = decodeText(vocabulary, ids);
  log(`generate: "Attention ${text}"${streamed === text ? '' : ' (stream differs!)'}`);
  model.dispose();

  // 3. One causal linear attention layer as an RNN: a step costs the same at any length.
  const layer = new LinearAttention({numHeads: 2, causal: true, seed: 0});
  const x = tf.randomNormal([1, 1, 16], 0, 1, 'float32', 3);
  tf.dispose(layer.apply(x) as tf.Tensor); // builds the weights
  let cache: AttentionCache = layer.createCache(1, 300);
  const sizes: number[] = [];
  for (let t = 0; t < 300; t++) {
    const [y, next] = layer.apply(x, {cache}) as unknown as [tf.Tensor, AttentionCache];
    tf.dispose([y, cache]);
    cache = next;
    if (t === 0 || t === 299) sizes.push(cacheBytes(cache));
  }
  log(`linear attention cache: ${sizes[0]} bytes after 1 step, ${sizes[1]} bytes after 300`);
  tf.dispose([x, cache]);
  layer.dispose();
  return {loss, entropy, text, cacheBytes: sizes};
}

if (require.main === module) runAsProgram(() => main());
