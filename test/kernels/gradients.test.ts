// The gradients the library puts in place of tfjs 4.22's (src/kernels/gradients.ts): Tile's in one
// reshape and one sum instead of a slice and an add per repetition, and BatchMatMul's
// summed over the axes a broadcast operand was repeated along. Both must give tfjs's
// values wherever tfjs's gradient works, on every backend.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {gradientStatus} from '../../src/internals';
import {isPerRepetitionTileGrad, isUnreducedMatMulGrad, useLibraryGradients} from '../../src/kernels/gradients';
import {title, seededValues as values} from '../support/helpers';

/** Runs `f` with tfjs's own gradients. */
function withTfjsGradients<T>(f: () => T): T {
  useLibraryGradients(false);
  try {
    return f();
  } finally {
    useLibraryGradients(true);
  }
}

/** Awaits `f` with tfjs's own gradients. */
async function withTfjsGradientsAsync<T>(f: () => Promise<T>): Promise<T> {
  useLibraryGradients(false);
  try {
    return await f();
  } finally {
    useLibraryGradients(true);
  }
}

/** Gradients of sum(f(x) * dy) for x, and how many kernels the step ran. */
async function gradAndKernels(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, dy: tf.Tensor):
    Promise<{g: Float32Array; kernels: number}> {
  let g: tf.Tensor | null = null;
  const info = await tf.profile(() => {
    g = tf.grads((t: tf.Tensor) => f(t))([x], dy)[0];
  });
  const kernels = info.kernels.length;
  const values = (await g!.data()) as Float32Array;
  g!.dispose();
  return {g: values, kernels};
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(want[i])));
  }
}

describe(title('gradients replaced for every model'), () => {
  test('both are the library\'s, and the probes tell tfjs 4.22\'s gradients from the replacements', () => {
    expect(gradientStatus()).toEqual({Tile: 'replaced', BatchMatMul: 'replaced'});
    const tile = tf.getGradient('Tile')!;
    const matmul = tf.getGradient('BatchMatMul')!;
    // The registered wrappers run the library's gradient: not per repetition, and reduced.
    expect(isPerRepetitionTileGrad(tile)).toBe(false);
    expect(isUnreducedMatMulGrad(matmul)).toBe(false);
    withTfjsGradients(() => {
      expect(isPerRepetitionTileGrad(tile)).toBe(true);
      expect(isUnreducedMatMulGrad(matmul)).toBe(true);
    });
  });

  test('Tile: the same gradient as tfjs\'s for ranks 1 to 4 and reps with 1s, in a few kernels whatever the repetitions', async () => {
    const cases: [number[], number[]][] = [[[3], [4]], [[2, 3], [1, 5]], [[2, 3], [4, 1]], [[1, 1, 6], [8, 16, 1]],
      [[8, 16, 1], [1, 1, 6]], [[2, 1, 3, 1], [1, 4, 2, 3]], [[2, 3], [1, 1]], [[2, 3, 2, 3], [2, 2, 3, 2]]];
    let seed = 1;
    for (const [shape, reps] of cases) {
      const x = tf.tensor(values(tf.util.sizeFromShape(shape), seed++), shape);
      const outShape = shape.map((s, i) => s * reps[i]);
      const dy = tf.tensor(values(tf.util.sizeFromShape(outShape), seed++), outShape);
      const f = (t: tf.Tensor) => tf.tile(t, reps);
      const ours = await gradAndKernels(f, x, dy);
      const theirs = await withTfjsGradientsAsync(() => gradAndKernels(f, x, dy));
      expectClose(ours.g, theirs.g);
      // Ours: the forward tile, a reshape and a sum per tiled axis, and tf.grads' own few;
      // tfjs's grow with the repetitions.
      const repeats = reps.reduce((p, r) => p * r, 1);
      const bound = 3 + 2 * reps.filter((r) => r !== 1).length;
      expect({shape, reps, ours: ours.kernels <= bound, theirs: theirs.kernels >= repeats}).toEqual(
        {shape, reps, ours: true, theirs: true});
      tf.dispose([x, dy]);
    }
  });

  test('LayerNormalization: the same gradient as with tfjs\'s, in a fixed few kernels instead of two per repeated row', async () => {
    const layer = tf.layers.layerNormalization();
    // Its mean and variance [4, 8, 1] are tiled 256 times along the features.
    const x = tf.tensor(values(4 * 8 * 256, 7), [4, 8, 256]);
    const dy = tf.tensor(values(4 * 8 * 256, 8), [4, 8, 256]);
    layer.apply(x);
    const f = (t: tf.Tensor) => layer.apply(t) as tf.Tensor;
    const ours = await gradAndKernels(f, x, dy);
    const theirs = await withTfjsGradientsAsync(() => gradAndKernels(f, x, dy));
    expectClose(ours.g, theirs.g);
    expect(theirs.kernels).toBeGreaterThan(1000); // tfjs's: a slice and an add per repetition
    expect(ours.kernels).toBeLessThan(100);
    tf.dispose([x, dy]);
    layer.dispose();
  });

  test('BatchMatMul: a broadcast operand\'s gradient is summed over the batch it was repeated for', () => {
    // [1, 3, 4] x [5, 4, 2] and [5, 3, 4] x [4, 2]: each gradient equals the sum of the per-entry gradients.
    const a = tf.tensor(values(12, 1), [1, 3, 4]);
    const b = tf.tensor(values(40, 2), [5, 4, 2]);
    const [da, db] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.matMul(x, y)))([a, b]);
    expect(da.shape).toEqual([1, 3, 4]);
    expect(db.shape).toEqual([5, 4, 2]);
    const aTiled = tf.tile(a, [5, 1, 1]);
    const [daTiled] = tf.grads((x: tf.Tensor) => tf.sum(tf.matMul(x, b)))([aTiled]);
    expectClose(da.dataSync(), tf.sum(daTiled, 0, true).dataSync());
    const c = tf.tensor(values(60, 3), [5, 3, 4]);
    const w = tf.tensor(values(8, 4), [4, 2]);
    const [, dw] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.matMul(x, y)))([c, w]);
    const [, dwFlat] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.matMul(x, y)))([tf.reshape(c, [15, 4]), w]);
    expect(dw.shape).toEqual([4, 2]);
    expectClose(dw.dataSync(), dwFlat.dataSync());
    tf.dispose([a, b, da, db, aTiled, daTiled, c, w, dw, dwFlat]);
  });

  test('BatchMatMul: where tfjs\'s gradient works (equal batches), the same values for every transpose', () => {
    let seed = 100;
    for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
      const a = tf.tensor(values(2 * 3 * 4, seed++), tA ? [2, 4, 3] : [2, 3, 4]);
      const b = tf.tensor(values(2 * 4 * 5, seed++), tB ? [2, 5, 4] : [2, 4, 5]);
      const dy = tf.tensor(values(2 * 3 * 5, seed++), [2, 3, 5]);
      const f = () => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, tA, tB))([a, b], dy);
      const ours = f();
      const theirs = withTfjsGradients(f);
      ours.forEach((g, i) => expectClose(g.dataSync(), theirs[i].dataSync()));
      tf.dispose([a, b, dy, ...ours, ...theirs]);
    }
  });
});
