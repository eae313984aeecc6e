// The library's own kernels (src/kernels/library_kernels.ts) and the optimizer built on one
// (src/train/adam.ts): column sums equal tf.sum over the first axis; FusedAdamOptimizer
// updates as tf.train.adam does (up to float32 rounding), one kernel per variable, with the
// same state under the same names, so each resumes from the other's; it falls back to
// tfjs's update where the backend lacks the kernel.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {ADAM, COLUMN_SUMS, adamValues, hasLibraryKernel, sumColumns} from '../../src/kernels/library_kernels';
import {columnSums} from '../../src/ops/dense';
import {setLibraryKernels} from '../../src/kernels/kernel_setting';
import {FusedAdamOptimizer, fusedAdam} from '../../src/train/adam';
import {BACKEND, expectClose, expectNoLeaks, randn, title} from '../support/helpers';

/** Plain column sums in float64. */
function naiveColumnSums(g: Float32Array, R: number, C: number): Float64Array {
  const out = new Float64Array(C);
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) out[j] += g[i * C + j];
  return out;
}

/** A few variables of odd shapes, seeded; each test gets its own (tfjs names variables globally). */
let made = 0;
function variables(): tf.Variable[] {
  made++;
  return [[7, 5], [97], [3, 1, 4], [1]].map((shape, i) =>
    tf.variable(randn(shape, 10 * made + i), true, `adam_test_${made}_${i}`));
}

/** A loss whose gradients differ in sign and scale over the variables. */
function loss(vars: tf.Variable[]): tf.Scalar {
  return tf.tidy(() => vars.map((v, i) => tf.sum(tf.sin(tf.mul(v, i + 1.5))))
    .reduce((a, b) => tf.add(a, b)) as tf.Scalar);
}

/** tfjs types Adam's applyGradients as taking variables; it takes gradients, as any optimizer's. */
function apply(optimizer: tf.Optimizer, grads: tf.NamedTensorMap): void {
  (optimizer as unknown as {applyGradients(g: tf.NamedTensorMap): void}).applyGradients(grads);
}

function step(vars: tf.Variable[], optimizer: tf.Optimizer): void {
  tf.tidy(() => {
    const {grads} = tf.variableGrads(() => loss(vars), vars);
    optimizer.applyGradients(grads);
  });
}

describe(title('library kernels'), () => {
  test('sumColumns equals plain column sums for 0, 1, 3, 4, 7 and 97 rows', () => {
    for (const R of [0, 1, 3, 4, 7, 97]) {
      for (const C of [1, 5, 128]) {
        const g = Float32Array.from({length: R * C}, (_, i) => Math.sin(i * 0.7) * (1 + (i % 13)));
        const out = new Float32Array(C).fill(NaN);
        sumColumns(g, R, C, out);
        const want = naiveColumnSums(g, R, C);
        want.forEach((w, j) => expect(Math.abs(out[j] - w)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(w)) * R));
      }
    }
  });

  test('columnSums runs the library kernel here and equals tf.sum over the first axis', async () => {
    expect(hasLibraryKernel(COLUMN_SUMS)).toBe(true);
    for (const [R, C] of [[1, 3], [97, 7], [1024, 128], [0, 4]]) {
      const g = randn([R, C], R + C) as tf.Tensor2D;
      const profile = await tf.profile(() => columnSums(g));
      const got = profile.result as tf.Tensor;
      expect(profile.kernels.map((k) => k.name)).toEqual([COLUMN_SUMS]);
      expectClose(got, tf.sum(g, 0), 1e-5);
      tf.dispose([g, got]);
    }
    expectNoLeaks(() => {
      const g = randn([5, 3], 1) as tf.Tensor2D;
      tf.dispose([g, columnSums(g)]);
    });
  });

  test('column sums have a gradient (dy over every row), and go unused under setLibraryKernels(\'tfjs\')', async () => {
    const g = randn([5, 3], 7) as tf.Tensor2D;
    const w = tf.tensor1d([1, -2, 0.5]);
    const grad = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(columnSums(x as tf.Tensor2D), w)))(g);
    expectClose(grad, tf.tile(tf.reshape(w, [1, 3]), [5, 1]), 0);
    const previous = setLibraryKernels('tfjs');
    try {
      expect(hasLibraryKernel(COLUMN_SUMS)).toBe(false);
      const profile = await tf.profile(() => columnSums(g));
      expect(profile.kernels.map((k) => k.name)).not.toContain(COLUMN_SUMS);
      expectClose(profile.result as tf.Tensor, tf.sum(g, 0), 1e-5);
      (profile.result as tf.Tensor).dispose();
    } finally {
      setLibraryKernels(previous);
    }
    expect(hasLibraryKernel(COLUMN_SUMS)).toBe(true);
    tf.dispose([g, w, grad]);
  });

  test('the column-sum kernel refuses what it does not compute', () => {
    const x = tf.zeros([2, 3, 4]);
    expect(() => tf.engine().runKernel(COLUMN_SUMS, {x}, {})).toThrow(/float32 matrix/);
    x.dispose();
  });

  test('adamValues is tfjs\'s Adam arithmetic on one value', () => {
    const s = {beta1: 0.8, beta2: 0.99, epsilon: 1e-7, learningRate: 0.05, correction1: 1 - 0.8 ** 3,
      correction2: 1 - 0.99 ** 3};
    const [w, g, m, v] = [[1.5], [-0.25], [0.1], [0.02]].map((a) => Float32Array.from(a));
    const out = [new Float32Array(1), new Float32Array(1), new Float32Array(1)];
    adamValues(w, g, m, v, s, out[0], out[1], out[2]);
    const m1 = 0.1 * 0.8 + -0.25 * 0.2;
    const v1 = 0.02 * 0.99 + 0.0625 * 0.01;
    const w1 = 1.5 - 0.05 * (m1 / s.correction1) / (Math.sqrt(v1 / s.correction2) + 1e-7);
    expect(out[1][0]).toBeCloseTo(m1, 6);
    expect(out[2][0]).toBeCloseTo(v1, 6);
    expect(out[0][0]).toBeCloseTo(w1, 6);
  });
});

describe(title('FusedAdamOptimizer'), () => {
  test('25 steps equal tf.train.adam\'s up to float32 rounding, one kernel per variable', async () => {
    const [ours, theirs] = [variables(), variables()];
    theirs.forEach((v, i) => v.assign(ours[i]));
    const [fused, plain] = [fusedAdam(0.05, 0.8, 0.99), tf.train.adam(0.05, 0.8, 0.99)];
    for (let s = 0; s < 25; s++) {
      step(ours, fused);
      step(theirs, plain);
    }
    ours.forEach((v, i) => expectClose(v, theirs[i], 2e-6));
    // The weights moved: the comparison is not of two untouched copies.
    const start = variables();
    expect(Math.max(...ours.map((v, i) => tf.max(tf.abs(tf.sub(v, start[i]))).dataSync()[0]))).toBeGreaterThan(0.1);
    // The update: one ADAM kernel per variable, and the two bias-correction products.
    const grads = tf.variableGrads(() => loss(ours), ours).grads;
    const profile = await tf.profile(() => apply(fused, grads));
    const names = profile.kernels.map((k) => k.name);
    expect(names.filter((n) => n === ADAM)).toHaveLength(ours.length);
    expect(names.length).toBeLessThanOrEqual(ours.length + 2);
    tf.dispose([...ours, ...theirs, ...start, ...Object.values(grads)]);
    fused.dispose();
    plain.dispose();
  });

  test('its state is tf.train.adam\'s: the same names, and each resumes from the other', async () => {
    const [a, b] = [variables(), variables()];
    b.forEach((v, i) => v.assign(a[i]));
    const [fused, plain] = [fusedAdam(0.02), tf.train.adam(0.02)];
    for (let s = 0; s < 3; s++) {
      step(a, fused);
      step(b, plain);
    }
    const [mine, theirs] = [await fused.getWeights(), await plain.getWeights()];
    const strip = (name: string) => name.replace(/adam_test_\d+_/, '');
    expect(mine.map((w) => strip(w.name))).toEqual(theirs.map((w) => strip(w.name)));
    mine.forEach((w, i) => expectClose(w.tensor, theirs[i].tensor, 2e-6));
    // Swap: each optimizer takes the other's state and the two runs go on together.
    const [fused2, plain2] = [fusedAdam(0.02), tf.train.adam(0.02)];
    await fused2.setWeights(theirs.map((w, i) => ({name: mine[i].name, tensor: tf.clone(w.tensor)})));
    await plain2.setWeights(mine.map((w, i) => ({name: theirs[i].name, tensor: tf.clone(w.tensor)})));
    for (let s = 0; s < 3; s++) {
      step(a, fused2);
      step(b, plain2);
    }
    a.forEach((v, i) => expectClose(v, b[i], 2e-6));
    tf.dispose([...a, ...b, mine[0].tensor, theirs[0].tensor]);
    [fused, plain, fused2, plain2].forEach((o) => o.dispose());
  });

  test('leaks nothing: after the first step (which makes the moments) the tensor count stays', () => {
    const vars = variables();
    const fused = fusedAdam(0.01);
    step(vars, fused);
    expectNoLeaks(() => {
      for (let s = 0; s < 3; s++) step(vars, fused);
    });
    tf.dispose(vars);
    fused.dispose();
  });

  test('a variable without a gradient keeps its value, as with tf.train.adam', () => {
    const vars = variables();
    const before = tf.clone(vars[1]);
    const fused = fusedAdam(0.1);
    tf.tidy(() => {
      const {grads} = tf.variableGrads(() => tf.sum(tf.square(vars[0])), [vars[0]]);
      apply(fused, {...grads, [vars[1].name]: null as unknown as tf.Tensor});
    });
    expectClose(vars[1], before, 0);
    tf.dispose([...vars, before]);
    fused.dispose();
  });

  test('where the backend lacks the kernel it takes tfjs\'s own update, with the same result', () => {
    const kernel = tf.getKernel(ADAM, BACKEND)!;
    const [a, b] = [variables(), variables()];
    b.forEach((v, i) => v.assign(a[i]));
    const [withKernel, without] = [fusedAdam(0.05), fusedAdam(0.05)];
    tf.unregisterKernel(ADAM, BACKEND);
    try {
      expect(hasLibraryKernel(ADAM)).toBe(false);
      for (let s = 0; s < 4; s++) step(b, without);
    } finally {
      tf.registerKernel(kernel);
    }
    expect(hasLibraryKernel(ADAM)).toBe(true);
    for (let s = 0; s < 4; s++) step(a, withKernel);
    a.forEach((v, i) => expectClose(v, b[i], 2e-6));
    tf.dispose([...a, ...b]);
    withKernel.dispose();
    without.dispose();
  });

  test('refuses bad arguments and non-float32 variables', () => {
    expect(() => fusedAdam(0)).toThrow(/learningRate must be a positive finite number, received 0/);
    expect(() => fusedAdam(0.1, 1)).toThrow(/beta1 must be a number in \[0, 1\), received 1/);
    expect(() => new FusedAdamOptimizer(0.1, 0.9, -0.5)).toThrow(/beta2/);
    expect(() => fusedAdam(0.1, 0.9, 0.999, 0)).toThrow(/epsilon/);
    const v = tf.variable(tf.tensor1d([1, 2], 'int32'), true, `adam_test_int_${made++}`);
    const w = tf.variable(tf.tensor1d([1, 2]), true, `adam_test_float_${made++}`);
    const fused = fusedAdam(0.1);
    // Refused before any update: the float32 variable listed first keeps its value.
    expect(() => apply(fused, {[w.name]: tf.tensor1d([1, 1]), [v.name]: tf.tensor1d([1, 1], 'int32')}))
      .toThrow(/float32 variables, received .* of int32/);
    expect(Array.from(w.dataSync())).toEqual([1, 2]);
    // A gradient of another shape is refused the same way (tfjs's Adam would broadcast it).
    const u = tf.variable(tf.tensor1d([3, 4]), true, `adam_test_float_${made++}`);
    expect(() => apply(fused, {[w.name]: tf.tensor1d([1, 1]), [u.name]: tf.tensor2d([[1, 1]])}))
      .toThrow(/gradient of .* must have its shape \[2\], received \[1, 2\]/);
    expect(Array.from(w.dataSync())).toEqual([1, 2]);
    tf.dispose([v, w, u]);
    fused.dispose();
  });

  test('model.compile takes it, and fit lowers the loss', async () => {
    const model = tf.sequential({layers: [tf.layers.dense({units: 1, inputShape: [3]})]});
    model.compile({optimizer: fusedAdam(0.05), loss: 'meanSquaredError'});
    const x = randn([32, 3], 5);
    const y = tf.tidy(() => tf.sum(tf.mul(x, tf.tensor1d([1, -2, 0.5])), 1, true));
    const history = await model.fit(x, y, {epochs: 30, batchSize: 32, verbose: 0});
    const losses = history.history.loss as number[];
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] / 2);
    tf.dispose([x, y]);
    model.dispose();
  });
});
