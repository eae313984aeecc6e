/**
 * The attention of today's models as layer options. First a Gemma-2-style layer (soft-capped
 * scores, a sliding window, rotary positions) and a gpt-oss-style one (a window and a learned
 * sink per head) fitted with model.fit to copy the input of two positions back, then saved and
 * loaded. Then one decoded token by token: a sliding-window cache holds its last W positions
 * whatever the context, and the cached outputs equal the full pass.
 *
 *   npx ts-node examples/attention_options.ts
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionCache, MultiHeadAttention, MultiHeadAttentionArgs} from '../src/node';
import {runAsProgram} from './run';

export interface OptionsExampleResult {
  /** Per style: the loss of the first and last epoch, and how far the loaded copy's predictions are. */
  styles: {name: string; firstLoss: number; lastLoss: number; reloadDiff: number; weights: string[]}[];
  /** Positions the window cache holds after 16 and after 64 decoded positions. */
  cachePositions: [number, number];
  /** max |cached step outputs - the full pass|. */
  decodeDiff: number;
}

const STYLES: {name: string; args: Partial<MultiHeadAttentionArgs>}[] = [
  {name: 'Gemma-2-style (softcap 20, window 4)', args: {softcap: 20, slidingWindow: 4}},
  {name: 'gpt-oss-style (sinks, window 4)', args: {attentionSinks: true, slidingWindow: 4}},
];

/** A layer of one style in a model fitted to copy the input of two positions back: losses, then save and load. */
async function fitStyle(style: typeof STYLES[number], log: (line: string) => void) {
  const [N, T, E] = [64, 12, 8];
  const x = tf.randomNormal([N, T, E], 0, 1, 'float32', 7);
  const y = tf.tidy(() => tf.concat([tf.zeros([N, 2, E]), tf.slice(x, [0, 0, 0], [N, T - 2, E])], 1));
  const input = tf.input({shape: [T, E]});
  const layer = new MultiHeadAttention({numHeads: 2, headDim: 8, causal: true, positionEncoding: 'rope',
    kernelInitializer: tf.initializers.glorotUniform({seed: 1}), ...style.args});
  const model = tf.model({inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor});
  const optimizer = tf.train.adam(0.02);
  model.compile({optimizer, loss: 'meanSquaredError'});
  const losses = (await model.fit(x, y, {epochs: 25, batchSize: 16, verbose: 0})).history.loss as number[];
  const saved: {artifacts?: tf.io.ModelArtifacts} = {};
  await model.save(tf.io.withSaveHandler(async (a) => {
    saved.artifacts = a;
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved.artifacts!));
  const reloadDiff = tf.tidy(() =>
    tf.max(tf.abs(tf.sub(model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor))).dataSync()[0]);
  // The weights the options add follow the projections (here the sinks).
  const weights = layer.weights.slice(8).map((w) => `${w.name.replace(/^.*?\//, '')} [${w.shape}]`);
  const [first, last] = [losses[0], losses[losses.length - 1]];
  log(`${style.name}: model.fit mse ${first.toFixed(3)} -> ${last.toFixed(3)} over ${losses.length} epochs; ` +
    `loaded copy differs by ${reloadDiff}${weights.length > 0 ? `; its own weights: ${weights.join(', ')}` : ''}`);
  model.dispose();
  loaded.dispose();
  optimizer.dispose();
  tf.dispose([x, y]);
  return {name: style.name, firstLoss: first, lastLoss: last, reloadDiff, weights};
}

/** A sliding-window layer decoded one token at a time: the cache keeps 8 positions at any length. */
function decodeWindow(log: (line: string) => void): {cachePositions: [number, number]; decodeDiff: number} {
  const [T, E] = [64, 16];
  const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true, positionEncoding: 'rope',
    slidingWindow: 8, attentionSinks: true, softcap: 20});
  const x = tf.randomNormal([1, T, E], 0, 1, 'float32', 3);
  const full = layer.apply(x) as tf.Tensor;
  let cache: AttentionCache = layer.createCache(1, T);
  const steps: tf.Tensor[] = [];
  const held: number[] = [];
  for (let t = 0; t < T; t++) {
    const xt = tf.slice(x, [0, t, 0], [1, 1, E]);
    const [y, next] = layer.apply(xt, {cache}) as unknown as [tf.Tensor, AttentionCache];
    tf.dispose([xt, cache]);
    cache = next;
    steps.push(y);
    if (t + 1 === 16 || t + 1 === T) held.push(cache.tensors.key.shape[2] as number);
  }
  const decodeDiff = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.concat(steps, 1), full))).dataSync()[0]);
  log(`decoding with a window of 8: the cache holds ${held[0]} positions after 16 tokens and ${held[1]} after ` +
    `${T}; cached == full pass within ${decodeDiff.toExponential(1)}`);
  tf.dispose([x, full, cache, steps]);
  layer.dispose();
  return {cachePositions: [held[0], held[1]], decodeDiff};
}

export async function main(log: (line: string) => void = console.log): Promise<OptionsExampleResult> {
  const styles = [];
  for (const style of STYLES) styles.push(await fitStyle(style, log));
  return {styles, ...decodeWindow(log)};
}

if (require.main === module) runAsProgram(() => main(), 'wasm');
