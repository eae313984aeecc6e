// Shared test helpers. Nothing here computes attention: see reference.ts for that.
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../../src/core/errors';

/** The backend this jest project runs on (wasm or cpu). */
export const BACKEND = process.env.TEST_BACKEND ?? 'cpu';

/** A describe title that says which backend the file ran on: `sdpa [wasm]`. */
export function title(name: string): string {
  return `${name} [${BACKEND}]`;
}

/**
 * max |actual - expected| / max |expected|: the error relative to the tensor's scale,
 * which stays meaningful where single entries are near zero.
 */
export function maxRelError(actual: tf.Tensor, expected: tf.Tensor): number {
  const a = actual.dataSync();
  const e = expected.dataSync();
  if (a.length !== e.length) throw new Error(`size ${a.length} != ${e.length}`);
  let scale = 0;
  for (let i = 0; i < e.length; i++) scale = Math.max(scale, Math.abs(e[i]));
  let worst = 0;
  for (let i = 0; i < e.length; i++) {
    const d = Math.abs(a[i] - e[i]);
    if (Number.isNaN(a[i]) !== Number.isNaN(e[i])) return Infinity;
    worst = Math.max(worst, d / Math.max(scale, 1e-6));
  }
  return worst;
}

/** Asserts same shape and relative error below tol; prints the worst error on failure. */
export function expectClose(actual: tf.Tensor, expected: tf.Tensor, tol = 1e-4): void {
  expect(actual.shape).toEqual(expected.shape);
  const err = maxRelError(actual, expected);
  if (!(err <= tol)) throw new Error(`max relative error ${err.toExponential(3)} > ${tol}`);
}

/** Seeded values in [-1, 1) (a linear congruential generator: the same on every machine). */
export function seededValues(n: number, seed: number): Float32Array {
  let s = seed * 2654435761 >>> 0;
  return Float32Array.from({length: n}, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/** Seeded normal tensor. */
export function randn(shape: number[], seed: number, scale = 1): tf.Tensor {
  return tf.tidy(() => tf.randomNormal(shape, 0, scale, 'float32', seed));
}

/** Runs fn and checks it leaves exactly `kept` more tensors alive than before. */
export function expectNoLeaks(fn: () => void, kept = 0): void {
  const before = tf.memory().numTensors;
  fn();
  expect(tf.memory().numTensors - before).toBe(kept);
}

/** Asserts fn throws an AttentionError with this code and a message matching `message`. */
export function expectError(fn: () => unknown, code: string, message: RegExp): void {
  let error: unknown;
  try { tf.dispose(fn() as tf.Tensor); } catch (e) { error = e; }
  expect(error).toBeInstanceOf(AttentionError);
  expect((error as AttentionError).code).toBe(code);
  expect((error as Error).message).toMatch(message);
}

/** max |a - b|. */
export function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/** x [B, T, E] with kernel [E, N, X] and bias [N, X] -> [B, N, T, X], written plainly. */
export function headsOf(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor): tf.Tensor4D {
  const [B, T, E] = x.shape;
  const [, N, X] = kernel.shape;
  const y = tf.add(tf.reshape(tf.matMul(tf.reshape(x, [B * T, E]), tf.reshape(kernel, [E, N * X])), [B, T, N, X]),
    bias);
  return tf.transpose(y, [0, 2, 1, 3]) as tf.Tensor4D;
}

/**
 * Adam (learning rate 0.01) on mean squared error between y and model(x): step() runs
 * one update and returns the loss. Dispose the optimizer when done.
 */
export function adamTrainer(model: tf.LayersModel, x: tf.Tensor | tf.Tensor[], y: tf.Tensor) {
  const optimizer = tf.train.adam(0.01);
  const loss = () => tf.losses.meanSquaredError(y, model.apply(x) as tf.Tensor) as tf.Scalar;
  const step = () => {
    const l = optimizer.minimize(loss, true)!;
    const v = l.dataSync()[0];
    l.dispose();
    return v;
  };
  return {optimizer, step};
}

/**
 * A built attention layer leaves no tensor behind in a forward pass (with the mask),
 * tf.grads for its input and tf.variableGrads for its weights.
 */
export function expectLayerNoLeaks(layer: tf.layers.Layer, x: tf.Tensor, mask: tf.Tensor): void {
  const run = (a: tf.Tensor, kwargs = {}) => layer.apply(a, kwargs) as tf.Tensor;
  expectNoLeaks(() => tf.dispose(run(x, {attentionMask: mask, training: true})));
  expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(run(a, {attentionMask: mask})))([x])));
  expectNoLeaks(() => {
    const {value, grads} = tf.variableGrads(() => tf.sum(run(x)) as tf.Scalar);
    tf.dispose([value, Object.values(grads)]);
  });
}

/**
 * A kernel registered for `name` on wasm that is not tfjs's (here one that wraps the current
 * one) is left alone by `install`, which says 'kept'; once the current one is back, `install`
 * says 'replaced' again.
 */
export function expectOtherKernelKept(name: string, install: () => string): void {
  const ours = tf.getKernel(name, 'wasm')!;
  const users: tf.KernelFunc = (args) => ours.kernelFunc(args);
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({kernelName: name, backendName: 'wasm', kernelFunc: users});
  try {
    expect(install()).toBe('kept');
    expect(tf.getKernel(name, 'wasm')!.kernelFunc).toBe(users);
  } finally {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(ours);
  }
  expect(install()).toBe('replaced');
}

/** The model saved to memory (tf.io.withSaveHandler) and loaded back with tf.loadLayersModel. */
export async function reloadedInMemory(model: tf.LayersModel): Promise<tf.LayersModel> {
  let artifacts: tf.io.ModelArtifacts | null = null;
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a)};
  }));
  return tf.loadLayersModel(tf.io.fromMemory(artifacts!));
}

/** A config as model.json holds it: undefined entries (an initializer's seed) become null. */
export function asSaved(config: object): unknown {
  return JSON.parse(JSON.stringify(config, (_k, v) => (v === undefined ? null : v)));
}
