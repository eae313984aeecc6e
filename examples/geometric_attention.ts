/**
 * Attention over point clouds. First GeometricAttention (PyG's PointTransformerConv): clouds of
 * clusters of different spreads, each point linked to its k nearest by knnGraph, and a
 * tf.model fitted with model.fit to give each point the mean distance to those neighbours (a
 * local density that only the positions tell: every point has the same features), then saved
 * and loaded back to the same predictions. Then EquivariantAttention (EGNN with attention):
 * the same cloud rotated, reflected and translated gives positions that moved the same way
 * and the same features.
 *
 *   npx ts-node examples/geometric_attention.ts
 */
import * as tf from '@tensorflow/tfjs';
import {EquivariantAttention, GeometricAttention, knnGraph} from '../src/node';
import {runAsProgram} from './run';

export interface GeometricExampleResult {
  /** The edges knnGraph gave: [B, N * k, 2]. */
  edgeShape: number[];
  /** The model's mean squared error after its first and last epoch of model.fit. */
  firstLoss: number;
  lastLoss: number;
  /** The error of always predicting the targets' mean (what a model blind to the positions does at best). */
  constantLoss: number;
  /** The GeometricAttention layer's weights, in getWeights() order. */
  weightNames: string[];
  /** Largest difference between the model's predictions and those of its saved and loaded copy. */
  reloadDiff: number;
  /** How far EquivariantAttention moved the points (so that the check below is not trivial). */
  moved: number;
  /** max |f_x(Qx + t, Qv) - (Q f_x(x, v) + t)|: the positions' equivariance error. */
  positionError: number;
  /** max |f_h(Qx + t, Qv) - f_h(x, v)|: the features' invariance error. */
  featureError: number;
}

/**
 * `count` clouds of `n` points in the plane, each three clusters whose spreads differ, so
 * that the density differs from point to point; seeded.
 */
function pointClouds(count: number, n: number, seed: number): tf.Tensor3D {
  let state = seed;
  const rand = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  const clouds: number[][][] = [];
  for (let c = 0; c < count; c++) {
    const centres = Array.from({length: 3}, () => [rand() * 4 - 2, rand() * 4 - 2, 0.05 + 0.5 * rand()]);
    clouds.push(Array.from({length: n}, (_, i) => {
      const [x, y, spread] = centres[i % 3];
      return [x + spread * (rand() * 2 - 1), y + spread * (rand() * 2 - 1)];
    }));
  }
  return tf.tensor3d(clouds);
}

/** Each point's mean distance to the sources of its incoming edges: [B, N, 1]. */
function meanNeighbourDistance(positions: tf.Tensor3D, edges: tf.Tensor3D): tf.Tensor3D {
  const p = positions.arraySync();
  const sums = p.map((cloud) => cloud.map(() => [0, 0]));  // [distance sum, count] per point
  edges.arraySync().forEach((rows, b) => rows.forEach(([j, i]) => {
    if (j < 0) return;                                        // padding
    sums[b][i][0] += Math.hypot(p[b][i][0] - p[b][j][0], p[b][i][1] - p[b][j][1]);
    sums[b][i][1]++;
  }));
  return tf.tensor3d(sums.map((cloud) => cloud.map(([s, k]) => [s / k])));
}

/** A GeometricAttention model fitted to the mean neighbour distance, saved to memory and loaded back. */
async function geometricExample(log: (line: string) => void) {
  const [count, n, k] = [48, 24, 4];
  const positions = pointClouds(count, n, 5);
  const edges = knnGraph(positions, k);                        // [count, n * k, 2] int32
  const targets = meanNeighbourDistance(positions, edges);
  const features = tf.ones([count, n, 1]);                     // every point alike: only positions tell
  const init = (seed: number) => tf.initializers.glorotUniform({seed});
  const x = tf.input({shape: [n, 1]});
  const p = tf.input({shape: [n, 2]});
  const e = tf.input({shape: [n * k, 2], dtype: 'int32'});
  const layer = new GeometricAttention({units: 16, numHeads: 4, positionUnits: [16], name: 'point_transformer',
    kernelInitializer: init(1)});
  let h = layer.apply([x, p, e]) as tf.SymbolicTensor;                                          // [B, n, 16]
  h = tf.layers.dense({units: 16, activation: 'relu', kernelInitializer: init(2)}).apply(h) as tf.SymbolicTensor;
  const out = tf.layers.dense({units: 1, kernelInitializer: init(3)}).apply(h) as tf.SymbolicTensor; // [B, n, 1]
  const model = tf.model({inputs: [x, p, e], outputs: out});
  const optimizer = tf.train.adam(0.01);
  model.compile({optimizer, loss: 'meanSquaredError'});
  const inputs = [features, positions, edges];
  const history = await model.fit(inputs, targets, {epochs: 20, batchSize: 16, shuffle: false, verbose: 0});
  const losses = history.history.loss as number[];
  const constantLoss = tf.tidy(() => tf.mean(tf.square(tf.sub(targets, tf.mean(targets)))).dataSync()[0]);
  log(`geometric attention: knnGraph edges [${edges.shape}]; model.fit mse ${losses[0].toFixed(5)} -> ` +
    `${losses[losses.length - 1].toFixed(5)} over ${losses.length} epochs (a constant guess: ${constantLoss.toFixed(5)})`);
  // Saving to memory and loading: the layer is registered for serialization.
  let artifacts: tf.io.ModelArtifacts | null = null;
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
  const reloadDiff = tf.tidy(() =>
    tf.max(tf.abs(tf.sub(model.predict(inputs) as tf.Tensor, loaded.predict(inputs) as tf.Tensor))).dataSync()[0]);
  const weightNames = layer.weights.map((w) => w.originalName.split('/').pop()!);
  loaded.dispose();
  model.dispose();
  optimizer.dispose(); // a model does not dispose an optimizer it was handed
  tf.dispose([positions, edges, targets, features]);
  return {edgeShape: edges.shape, firstLoss: losses[0], lastLoss: losses[losses.length - 1], constantLoss, weightNames,
    reloadDiff};
}

/** One EquivariantAttention layer on a cloud and on the cloud moved by Q and t. */
function equivariantExample(log: (line: string) => void) {
  const [B, N, F] = [2, 12, 4];
  const h = tf.randomNormal([B, N, F], 0, 1, 'float32', 1);
  const x = tf.randomNormal([B, N, 3], 0, 1, 'float32', 2);
  const v = tf.randomNormal([B, N, 3], 0, 1, 'float32', 3);
  const edges = knnGraph(x, 4);             // distances alone decide it: the moved cloud has the same graph
  const layer = new EquivariantAttention({hiddenUnits: 16, velocity: true,
    kernelInitializer: tf.initializers.glorotUniform({seed: 4})});
  // Q: a rotation by 0.7 about z, then a reflection of z; t: a translation. A row p moves to p Q^T + t.
  const [c, s] = [Math.cos(0.7), Math.sin(0.7)];
  const Q = tf.tensor2d([[c, -s, 0], [s, c, 0], [0, 0, -1]]);
  const t = tf.tensor1d([3, -1, 2]);
  const rotate = (p: tf.Tensor) => tf.reshape(tf.matMul(tf.reshape(p, [B * N, 3]), Q, false, true), [B, N, 3]);
  const result = tf.tidy(() => {
    const [h1, x1] = layer.apply([h, x, edges, v]) as tf.Tensor[];
    const [h2, x2] = layer.apply([h, tf.add(rotate(x), t), edges, rotate(v)]) as tf.Tensor[];
    const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
    return {moved: maxDiff(x1, x), positionError: maxDiff(x2, tf.add(rotate(x1), t)), featureError: maxDiff(h2, h1)};
  });
  log(`equivariant attention: points moved up to ${result.moved.toFixed(3)}; rotated, reflected and translated ` +
    `input: positions off by ${result.positionError.toExponential(1)}, features by ${result.featureError.toExponential(1)}`);
  layer.dispose();
  tf.dispose([h, x, v, edges, Q, t]);
  return result;
}

export async function main(log: (line: string) => void = console.log): Promise<GeometricExampleResult> {
  const geometric = await geometricExample(log);
  return {...geometric, ...equivariantExample(log)};
}

if (require.main === module) runAsProgram(() => main(), 'wasm');
