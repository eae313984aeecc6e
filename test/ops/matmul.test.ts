// ops/matmul: products split into 2-D non-transposed ones (the wasm fast path) must
// equal tf.matMul, forward and gradients, for every transpose combination and every
// operand layout the library uses; the path setting must behave as documented.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {getMatMulPath, matMul, setMatMulPath, splitsProducts, tilesAttention} from '../../src/ops/matmul';
import {setLibraryKernels} from '../../src/kernels/kernel_setting';
import {BACKEND, expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';

/**
 * tf.matMul, with a 2-D right operand under a batched left one done on a 2-D view
 * (tfjs's 3-D x 2-D gradient is broken).
 */
function reference(a: tf.Tensor, b: tf.Tensor, tA: boolean, tB: boolean): tf.Tensor {
  if (a.rank > 2 && b.rank === 2) {
    const k = a.shape[a.rank - 1] as number;
    const out = tf.matMul(tf.reshape(a, [-1, k]), b, false, tB);
    return tf.reshape(out, [...a.shape.slice(0, -1), out.shape[1] as number]);
  }
  return tf.matMul(a, b, tA, tB);
}

/** [output, da, db] of sum(product(a, b) * dy). */
function withGrads(f: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, a: tf.Tensor, b: tf.Tensor,
    dy: tf.Tensor): tf.Tensor[] {
  return tf.tidy(() => [f(a, b), ...tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(f(x, y), dy)))([a, b])]);
}

describe(title('matMul split into 2-D products'), () => {
  let previous: ReturnType<typeof getMatMulPath>;
  beforeAll(() => { previous = setMatMulPath('split'); });
  afterAll(() => { setMatMulPath(previous); });

  // [a's shape as multiplied, b's shape as multiplied]: a [..., m, k], b [..., k, n].
  const layouts: [string, number[], number[]][] = [
    ['2-D', [7, 5], [5, 6]],
    ['3-D batched', [3, 7, 5], [3, 5, 6]],
    ['4-D batched', [2, 3, 7, 5], [2, 3, 5, 6]],
    ['3-D x shared 2-D', [3, 7, 5], [5, 6]],
    ['4-D x shared 2-D', [2, 3, 7, 5], [5, 6]],
    ['batch of one', [1, 9, 4], [1, 4, 3]],
    ['wide k (131)', [2, 3, 131], [2, 131, 4]],
  ];
  const flags: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
  layouts.forEach(([name, as, bs], li) => {
    flags.forEach(([tA, tB], fi) => {
      if (bs.length === 2 && as.length > 2 && tA) return; // not a layout matMul splits (falls back to tf.matMul)
      test(`${name}, transposeA=${tA}, transposeB=${tB}: output and gradients == tf.matMul`, () => {
        const swap = (s: number[]) => [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]];
        const a = randn(tA ? swap(as) : as, 100 * li + fi);
        const b = randn(tB ? swap(bs) : bs, 100 * li + fi + 50);
        const dy = randn([...as.slice(0, -1), bs[bs.length - 1]], 100 * li + fi + 70);
        const want = withGrads((x, y) => reference(x, y, tA, tB), a, b, dy);
        expectNoLeaks(() => {
          const got = withGrads((x, y) => matMul(x, y, tA, tB), a, b, dy);
          got.forEach((g, i) => expectClose(g, want[i], 1e-5));
          tf.dispose(got);
        });
        tf.dispose([a, b, dy, ...want]);
      });
    });
  });

  test('empty operands give tf.matMul\'s empty result (batch of 0, or k = 0)', () => {
    for (const [as, bs] of [[[0, 3, 4], [0, 4, 2]], [[2, 3, 0], [2, 0, 5]]]) {
      const a = tf.zeros(as);
      const b = tf.zeros(bs);
      const out = matMul(a, b);
      const expected = tf.matMul(a, b);
      expect(out.shape).toEqual(expected.shape);
      expect(Array.from(out.dataSync())).toEqual(Array.from(expected.dataSync()));
      tf.dispose([a, b, out, expected]);
    }
  });

  test('nested products: the gradient of a product of products', () => {
    const [a, b, c] = [[2, 4, 3], [2, 3, 5], [2, 5, 2]].map((s, i) => randn(s, 300 + i));
    const f = (mm: (x: tf.Tensor, y: tf.Tensor, p?: boolean, q?: boolean) => tf.Tensor) =>
      tf.grads((x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => tf.sum(tf.square(mm(mm(x, y), z))))([a, b, c]);
    const got = f(matMul);
    const want = f(tf.matMul);
    got.forEach((g, i) => expectClose(g, want[i], 1e-5));
    tf.dispose([a, b, c, ...got, ...want]);
  });
});

describe(title('matMul path setting'), () => {
  afterEach(() => { setMatMulPath('auto'); });

  test(`'auto' splits on wasm only, and only under tfjs's own product kernels (this project runs on ${BACKEND})`, () => {
    setMatMulPath('auto');
    expect(splitsProducts()).toBe(false); // on wasm the library's product kernels are in place
    expect(tilesAttention()).toBe(BACKEND === 'wasm');
    const previous = setLibraryKernels('tfjs');
    try {
      expect(splitsProducts()).toBe(BACKEND === 'wasm');
    } finally {
      setLibraryKernels(previous);
    }
    setMatMulPath('split');
    expect(splitsProducts()).toBe(true);
    setMatMulPath('batched');
    expect(splitsProducts()).toBe(false);
  });

  test('setMatMulPath returns the previous setting and rejects unknown paths', () => {
    expect(setMatMulPath('split')).toBe('auto');
    expect(setMatMulPath('batched')).toBe('split');
    expect(getMatMulPath()).toBe('batched');
    expectError(() => setMatMulPath('fast' as never), 'INVALID_CONFIG', /auto, split, batched, received 'fast'/);
    expect(getMatMulPath()).toBe('batched');
  });

  test("'batched' is tf.matMul itself (same values, no custom gradient)", () => {
    setMatMulPath('batched');
    const a = randn([2, 3, 4], 1);
    const b = randn([2, 5, 4], 2);
    const got = matMul(a, b, false, true);
    const want = tf.matMul(a, b, false, true);
    expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
    tf.dispose([a, b, got, want]);
  });
});
