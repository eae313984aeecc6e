/**
 * Masks and scores as functions. First flexAttention over packed sequences: three documents in
 * one row, a block mask of causal AND same-document attention that leaves most tiles empty,
 * equal to dense attention with the same mask. Then a learned relative-position bias: its table
 * is a variable that the score mod declares, and a few Adam steps on it alone fit a target
 * attention. Last a MultiHeadAttention with a sliding window and soft capping in its config
 * (and rotary positions) fitted to copy the input of two positions back, then a saved and
 * loaded copy that predicts the same.
 *
 *   npx ts-node examples/flex_attention.ts
 */
import * as tf from '@tensorflow/tfjs';
import {
  andMasks, causalMask, createBlockMask, documentMask, flexAttention, MultiHeadAttention, relativePositionBias,
  scaledDotProductAttention, slidingWindow, softcap,
} from '../src/node';
import {runAsProgram} from './run';

export interface FlexExampleResult {
  /** The share of tiles the packed row's block mask computes. */
  packedTiles: number;
  /** max |flexAttention - dense attention with the same mask|. */
  packedDiff: number;
  /** The bias-fitting loss before and after the Adam steps. */
  biasFirstLoss: number;
  biasLastLoss: number;
  /** The layer's config as saved: its mods' specs. */
  maskModSpec: unknown;
  scoreModSpec: unknown;
  /** The model's loss after its first and last epoch of model.fit. */
  firstLoss: number;
  lastLoss: number;
  /** Largest difference between the model's predictions and those of its saved and loaded copy. */
  reloadDiff: number;
}

/** Three documents packed in a row of 256: the block mask against the dense mask. */
function packedDocuments(log: (line: string) => void): {packedTiles: number; packedDiff: number} {
  const T = 256;
  const lengths = [100, 60, 96];
  const ids = tf.tensor1d(lengths.flatMap((n, d) => Array<number>(n).fill(d)), 'int32');          // [T]
  const blockMask = createBlockMask(andMasks(causalMask(), documentMask(ids)), 1, 1, T, T, {blockSize: 32});
  const result = tf.tidy(() => {
    const [q, k, v] = [1, 2, 3].map((seed) => tf.randomNormal([1, 4, T, 16], 0, 1, 'float32', seed));
    const doc = ids.arraySync();
    const dense = tf.tensor2d(doc.map((di, i) => doc.map((dj, j) => (di === dj && j <= i ? 1 : 0))));  // [T, S]
    const diff = tf.max(tf.abs(tf.sub(flexAttention(q, k, v, {blockMask}),
      scaledDotProductAttention(q, k, v, {mask: dense})))).dataSync()[0];
    return {packedTiles: blockMask.computedFraction(), packedDiff: diff};
  });
  log(`packed documents ${lengths.join(', ')} in T=${T}: ${(100 * result.packedTiles).toFixed(1)}% of the tiles ` +
    `computed; max |flex - dense| ${result.packedDiff.toExponential(1)}`);
  blockMask.dispose();
  ids.dispose();
  return result;
}

/** A relative-position bias table fitted so that attention matches a target that prefers the previous key. */
function learnedBias(log: (line: string) => void): {biasFirstLoss: number; biasLastLoss: number} {
  const [T, M] = [16, 4];
  const zeros = tf.zeros([2, 2 * M + 1]);
  const table = tf.variable(zeros);                                   // [H, 2M + 1]
  zeros.dispose();
  const q = tf.zeros([1, 2, T, 8]);                                   // no content: only the bias decides
  const k = tf.zeros([1, 2, T, 8]);
  const v = tf.tidy(() => tf.reshape(tf.tile(tf.reshape(tf.range(0, T), [1, 1, T, 1]), [1, 2, 1, 8]), [1, 2, T, 8]));
  const target = tf.tidy(() => tf.maximum(tf.sub(v, 1), 0));           // each row's previous position
  const blockMask = createBlockMask(causalMask(), 1, 1, T, T, {blockSize: 8});
  const loss = () => tf.mean(tf.square(tf.sub(flexAttention(q, k, v,
    {blockMask, scoreMod: relativePositionBias(table)}), target))) as tf.Scalar;
  const optimizer = tf.train.adam(0.3);
  const first = tf.tidy(() => loss().dataSync()[0]);
  for (let step = 0; step < 60; step++) tf.dispose(optimizer.minimize(loss, true, [table]) ?? []);
  const last = tf.tidy(() => loss().dataSync()[0]);
  log(`learned relative bias: loss ${first.toFixed(3)} -> ${last.toFixed(3)} after 60 Adam steps on the table alone`);
  optimizer.dispose();
  blockMask.dispose();
  tf.dispose([table, q, k, v, target]);
  return {biasFirstLoss: first, biasLastLoss: last};
}

/** A model whose attention has a sliding window and soft capping in its config: fit, save, load. */
async function slidingModel(log: (line: string) => void) {
  const [N, T, E] = [64, 12, 8];
  // The target at t is the input at t - 2: within a window of 3 positions.
  const x = tf.randomNormal([N, T, E], 0, 1, 'float32', 7);
  const y = tf.tidy(() => tf.concat([tf.zeros([N, 2, E]), tf.slice(x, [0, 0, 0], [N, T - 2, E])], 1));
  const input = tf.input({shape: [T, E]});
  const layer = new MultiHeadAttention({numHeads: 2, headDim: 8, causal: true, maskMod: slidingWindow(3),
    scoreMod: softcap(20), positionEncoding: 'rope', kernelInitializer: tf.initializers.glorotUniform({seed: 1})});
  const model = tf.model({inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor});
  const optimizer = tf.train.adam(0.02);
  model.compile({optimizer, loss: 'meanSquaredError'});
  const history = await model.fit(x, y, {epochs: 25, batchSize: 16, verbose: 0});
  const losses = history.history.loss as number[];
  const artifacts: {value?: tf.io.ModelArtifacts} = {};
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts.value = a;
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts.value!));
  const reloadDiff = tf.tidy(() =>
    tf.max(tf.abs(tf.sub(model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor))).dataSync()[0]);
  const config = layer.getConfig();
  log(`sliding window 3 + softcap 20 in a model: model.fit mse ${losses[0].toFixed(3)} -> ` +
    `${losses[losses.length - 1].toFixed(3)} over ${losses.length} epochs; saved and loaded: predictions differ by ` +
    `${reloadDiff}`);
  model.dispose();
  loaded.dispose();
  optimizer.dispose();
  tf.dispose([x, y]);
  return {maskModSpec: config.maskMod, scoreModSpec: config.scoreMod, firstLoss: losses[0],
    lastLoss: losses[losses.length - 1], reloadDiff};
}

export async function main(log: (line: string) => void = console.log): Promise<FlexExampleResult> {
  const packed = packedDocuments(log);
  const bias = learnedBias(log);
  return {...packed, ...bias, ...await slidingModel(log)};
}

if (require.main === module) runAsProgram(() => main(), 'wasm');
