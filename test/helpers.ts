// Shared test helpers. Nothing here computes attention: see reference.ts for that.
import * as tf from '@tensorflow/tfjs';

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
