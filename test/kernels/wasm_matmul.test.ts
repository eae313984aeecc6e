// The product kernels that replace tfjs-wasm's BatchMatMul and _FusedMatMul: every
// combination of transposeA and transposeB, batch axes broadcast (batch 1 against B, both
// ways, and [2, 1] against [1, 3]), ranks 2 to 4, sizes 1, 7 and 97, empty axes, each
// fused bias shape and activation, forward and gradients, against products written out
// in plain JS. Run on both projects: on cpu they check tfjs's own kernels against the
// same oracle, on wasm the library's.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {loadWasmBackend, wasmKernelStatus} from '../../src/internals';
import {LibraryKernels, setLibraryKernels} from '../../src/kernels/kernel_setting';
import {PRODUCT_KERNELS, isTfjsWasmProduct, replacedProductKernel} from '../../src/kernels/wasm_matmul';
import {transposeMatrices} from '../../src/kernels/wasm_product_paths';
import {BACKEND, title, seededValues as values} from '../support/helpers';

type Act = 'linear' | 'relu' | 'relu6' | 'prelu' | 'leakyrelu' | 'sigmoid' | 'elu';
const ACTS: Act[] = ['linear', 'relu', 'relu6', 'prelu', 'leakyrelu', 'sigmoid', 'elu'];

function act(z: number, a: Act, w: number, alpha: number): number {
  switch (a) {
    case 'relu': return Math.max(0, z);
    case 'relu6': return Math.min(6, Math.max(0, z));
    case 'prelu': return z < 0 ? w * z : z;
    case 'leakyrelu': return z < 0 ? alpha * z : z;
    case 'sigmoid': return 1 / (1 + Math.exp(-z));
    case 'elu': return z < 0 ? Math.exp(z) - 1 : z;
    default: return z;
  }
}

interface Case {
  aShape: number[];
  bShape: number[];
  tA: boolean;
  tB: boolean;
  bias?: number[] | null;
  activation?: Act;
}

/** Index of a batch coordinate list into a tensor's batch axes (numpy broadcasting). */
function flatBatch(coords: number[], own: number[]): number {
  const pad = coords.length - own.length;
  let flat = 0;
  for (let d = 0; d < own.length; d++) flat = flat * own[d] + (own[d] === 1 ? 0 : coords[pad + d]);
  return flat;
}

/**
 * The product, its gradients for a, b and the bias with cotangent dy, written out:
 * z = op(a) op(b) + bias, y = act(z).
 */
function oracle(c: Case, a: Float32Array, b: Float32Array, bias: Float32Array | null, prelu: Float32Array | null,
                dy: Float32Array | null) {
  const [ra, rb] = [c.aShape.length, c.bShape.length];
  const M = c.tA ? c.aShape[ra - 1] : c.aShape[ra - 2];
  const K = c.tA ? c.aShape[ra - 2] : c.aShape[ra - 1];
  const N = c.tB ? c.bShape[rb - 2] : c.bShape[rb - 1];
  const aB = c.aShape.slice(0, -2);
  const bB = c.bShape.slice(0, -2);
  const rank = Math.max(aB.length, bB.length);
  const pa = [...Array(rank - aB.length).fill(1), ...aB];
  const pb = [...Array(rank - bB.length).fill(1), ...bB];
  const outB = pa.map((x, i) => Math.max(x, pb[i]));
  const count = outB.reduce((p, x) => p * x, 1);
  const y = new Float32Array(count * M * N);
  const da = new Float32Array(a.length);
  const db = new Float32Array(b.length);
  const dbias = bias != null ? new Float32Array(bias.length) : null;
  const aAt = (ia: number, m: number, k: number) => ia * M * K + (c.tA ? k * M + m : m * K + k);
  const bAt = (ib: number, k: number, n: number) => ib * K * N + (c.tB ? n * K + k : k * N + n);
  const biasShape = c.bias ?? [];
  const biasAt = (i: number, m: number, n: number) => {
    // The bias broadcast against [...outB, M, N].
    const full = [...outB, M, N];
    const coords = [...(() => {
      const cs: number[] = [];
      let r = i;
      for (let d = outB.length - 1; d >= 0; d--) {
        cs.unshift(r % outB[d]);
        r = Math.floor(r / outB[d]);
      }
      return cs;
    })(), m, n];
    const pad = full.length - biasShape.length;
    let flat = 0;
    for (let d = 0; d < biasShape.length; d++) flat = flat * biasShape[d] + (biasShape[d] === 1 ? 0 : coords[pad + d]);
    return flat;
  };
  for (let i = 0; i < count; i++) {
    const coords: number[] = [];
    let r = i;
    for (let d = rank - 1; d >= 0; d--) { coords.unshift(r % outB[d]); r = Math.floor(r / outB[d]); }
    const ia = flatBatch(coords, aB);
    const ib = flatBatch(coords, bB);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let z = 0;
        for (let k = 0; k < K; k++) z += a[aAt(ia, m, k)] * b[bAt(ib, k, n)];
        const bi = bias != null ? biasAt(i, m, n) : -1;
        if (bias != null) z += bias[bi];
        const w = prelu != null ? prelu[n] : 0;
        const o = i * M * N + m * N + n;
        y[o] = act(z, c.activation ?? 'linear', w, 0.3);
        if (dy != null) {
          // linear and relu: the activations tfjs differentiates through.
          const dz = dy[o] * (c.activation === 'relu' ? (y[o] > 0 ? 1 : 0) : 1);
          for (let k = 0; k < K; k++) {
            da[aAt(ia, m, k)] += dz * b[bAt(ib, k, n)];
            db[bAt(ib, k, n)] += dz * a[aAt(ia, m, k)];
          }
          if (dbias != null) dbias[bi] += dz;
        }
      }
    }
  }
  return {y, shape: [...outB, M, N], da, db, dbias};
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect({what, length: got.length}).toEqual({what, length: want.length});
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1 + Math.abs(want[i])));
  expect({what, worst: worst <= 1e-5}).toEqual({what, worst: true});
}

/** [a, b] physical shapes for batch axes, (M, K, N) and the transposes. */
function shapes(aBatch: number[], bBatch: number[], [M, K, N]: number[], tA: boolean,
    tB: boolean): [number[], number[]] {
  return [[...aBatch, ...(tA ? [K, M] : [M, K])], [...bBatch, ...(tB ? [N, K] : [K, N])]];
}

const TRANSPOSES: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];
/**
 * Batch axes of a and b: none, equal, 1 against B both ways, a matrix against a batch,
 * rank 4 with both broadcasting.
 */
const BATCHES: [number[], number[]][] = [[[], []], [[3], [3]], [[3], [1]], [[1], [3]], [[3], []], [[], [3]],
  [[2, 3], [2, 3]], [[2, 3], [3]],
  // tfjs-cpu 4.22's kernel pairs the batches of [2, 1] and [1, 3] wrongly (not the library's kernel): wasm only.
  ...(BACKEND === 'wasm' ? [[[2, 1], [1, 3]] as [number[], number[]]] : [])];
// Products of fewer than SMALL_PRODUCT multiply-adds per matrix in a batch go to tfjs's own
// kernel on wasm; [33, 17, 29] and above take the native path.
const SIZES: number[][] = [[1, 1, 1], [7, 97, 1], [97, 7, 7], [1, 7, 97], [33, 17, 29], [97, 97, 7]];
const EMPTY: {batches: [number[], number[]]; size: number[]}[] = [
  {batches: [[], []], size: [0, 3, 4]}, {batches: [[], []], size: [3, 0, 4]}, {batches: [[], []], size: [3, 4, 0]},
  {batches: [[0], [0]], size: [3, 4, 5]}, {batches: [[2], [2]], size: [3, 0, 5]}];

// The library imports the wasm backend when selectBackend first tries it, never at import; the
// cpu project never selects it, so it is imported here (registered, not selected).
beforeAll(async () => {
  expect(await loadWasmBackend()).toBe(true);
});

describe(title('products (BatchMatMul, _FusedMatMul)'), () => {
  test(`on wasm the library's product kernels are registered${BACKEND === 'wasm' ? '' : ' (checked on the wasm project)'}`, () => {
    const status = wasmKernelStatus();
    expect([status.BatchMatMul, status._FusedMatMul]).toEqual(['replaced', 'replaced']);
    // Recognised by behaviour: tfjs's kernels are, ours and another function are not.
    expect(isTfjsWasmProduct(replacedProductKernel('BatchMatMul')!.kernelFunc)).toBe(true);
    expect(isTfjsWasmProduct(replacedProductKernel('_FusedMatMul')!.kernelFunc)).toBe(true);
    expect(isTfjsWasmProduct(PRODUCT_KERNELS.BatchMatMul.kernelFunc)).toBe(false);
    expect(isTfjsWasmProduct(() => ({dataId: {}, shape: [2, 3, 5], dtype: 'float32'}))).toBe(false);
  });

  test('tf.matMul: every transpose, batch broadcast, rank 2-4 and size equals the written-out product; ' +
    'inputs unchanged, nothing leaked', () => {
    const before = tf.memory().numTensors;
    let seed = 1;
    for (const [tA, tB] of TRANSPOSES) {
      for (const [aBatch, bBatch] of BATCHES) {
        for (const size of SIZES) {
          const [aShape, bShape] = shapes(aBatch, bBatch, size, tA, tB);
          const av = values(tf.util.sizeFromShape(aShape), seed++);
          const bv = values(tf.util.sizeFromShape(bShape), seed++);
          const [a, b] = [tf.tensor(av, aShape), tf.tensor(bv, bShape)];
          const out = tf.matMul(a, b, tA, tB);
          const want = oracle({aShape, bShape, tA, tB}, av, bv, null, null, null);
          const what = `${aShape} x ${bShape} tA=${tA} tB=${tB}`;
          expect({what, shape: out.shape}).toEqual({what, shape: want.shape});
          expectClose(out.dataSync(), want.y, what);
          expect(Array.from(a.dataSync())).toEqual(Array.from(av));
          expect(Array.from(b.dataSync())).toEqual(Array.from(bv));
          tf.dispose([a, b, out]);
        }
      }
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  test('empty axes: the right shape, zeros where the inner axis is empty', () => {
    for (const [tA, tB] of TRANSPOSES) {
      for (const {batches: [aBatch, bBatch], size} of EMPTY) {
        const [aShape, bShape] = shapes(aBatch, bBatch, size, tA, tB);
        const out = tf.tidy(() => tf.matMul(tf.ones(aShape), tf.ones(bShape), tA, tB));
        const want = oracle({aShape, bShape, tA, tB}, new Float32Array(tf.util.sizeFromShape(aShape)).fill(1),
          new Float32Array(tf.util.sizeFromShape(bShape)).fill(1), null, null, null);
        expect(out.shape).toEqual(want.shape);
        expect(Array.from(out.dataSync())).toEqual(Array.from(want.y));
        out.dispose();
      }
    }
  });

  test('mismatched inner axes throw as tfjs does', () => {
    expect(() => tf.tidy(() => tf.matMul(tf.ones([2, 3]), tf.ones([4, 5])))).toThrow(/inner shapes \(3\) and \(4\)/);
  });

  test('tf.fused.matMul: each activation, bias of N values, of 1 and of [M, N], every transpose, batched and not, ' +
    'small and large', () => {
    let seed = 1000;
    for (const [tA, tB] of TRANSPOSES) {
      for (const [aBatch, bBatch] of [[[], []], [[3], [3]], [[3], [1]]] as [number[], number[]][]) {
        for (const activation of ACTS) {
          for (const [size, biasShape] of [[5, 9, 7], [40, 9, 30]].flatMap((sz) =>
            [null, [sz[2]], [1], [sz[0], sz[2]]].map((bs) => [sz, bs] as [number[], number[] | null]))) {
            const [aShape, bShape] = shapes(aBatch, bBatch, size, tA, tB);
            const av = values(tf.util.sizeFromShape(aShape), seed++);
            const bv = values(tf.util.sizeFromShape(bShape), seed++);
            const biasV = biasShape != null ? values(tf.util.sizeFromShape(biasShape), seed++) : null;
            const preluV = activation === 'prelu' ? values(size[2], seed++) : null;
            const out = tf.tidy(() => tf.fused.matMul({
              a: tf.tensor(av, aShape), b: tf.tensor(bv, bShape), transposeA: tA, transposeB: tB,
              bias: biasV != null ? tf.tensor(biasV, biasShape!) : undefined, activation,
              preluActivationWeights: preluV != null ? tf.tensor1d(preluV) : undefined, leakyreluAlpha: 0.3,
            }));
            const want = oracle({aShape, bShape, tA, tB, bias: biasShape, activation}, av, bv, biasV, preluV, null);
            const what = `${aShape} x ${bShape} tA=${tA} tB=${tB} bias ${biasShape} ${activation}`;
            expect({what, shape: out.shape}).toEqual({what, shape: want.shape});
            expectClose(out.dataSync(), want.y, what);
            out.dispose();
          }
        }
      }
    }
  });

  test('gradients of tf.matMul for every transpose and batch broadcast equal the written-out ones', () => {
    let seed = 5000;
    for (const [tA, tB] of TRANSPOSES) {
      for (const [aBatch, bBatch] of BATCHES) {
        const [aShape, bShape] = shapes(aBatch, bBatch, [7, 5, 3], tA, tB);
        const av = values(tf.util.sizeFromShape(aShape), seed++);
        const bv = values(tf.util.sizeFromShape(bShape), seed++);
        const want = oracle({aShape, bShape, tA, tB}, av, bv, null, null, null);
        const dyv = values(want.y.length, seed++);
        const full = oracle({aShape, bShape, tA, tB}, av, bv, null, null, dyv);
        const [da, db] = tf.tidy(() => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, tA, tB))(
          [tf.tensor(av, aShape), tf.tensor(bv, bShape)], tf.tensor(dyv, want.shape)));
        const what = `${aShape} x ${bShape} tA=${tA} tB=${tB}`;
        expect(da.shape).toEqual(aShape);
        expect(db.shape).toEqual(bShape);
        expectClose(da.dataSync(), full.da, `da ${what}`);
        expectClose(db.dataSync(), full.db, `db ${what}`);
        tf.dispose([da, db]);
      }
    }
  });

  // tfjs's fused op (its own custom gradient, not a kernel) does not reduce broadcast batch
  // axes in its gradient: batches here are equal.
  test('gradients of tf.fused.matMul with a bias, linear and relu (what tfjs differentiates)', () => {
    let seed = 9000;
    for (const [tA, tB] of TRANSPOSES) {
      for (const [aBatch, bBatch] of [[[], []], [[3], [3]]] as [number[], number[]][]) {
        for (const activation of ['linear', 'relu'] as Act[]) {
          const [aShape, bShape] = shapes(aBatch, bBatch, [6, 5, 4], tA, tB);
          const av = values(tf.util.sizeFromShape(aShape), seed++);
          const bv = values(tf.util.sizeFromShape(bShape), seed++);
          const biasV = values(4, seed++);
          const c = {aShape, bShape, tA, tB, bias: [4], activation};
          const want = oracle(c, av, bv, biasV, null, null);
          const dyv = values(want.y.length, seed++);
          const full = oracle(c, av, bv, biasV, null, dyv);
          const grads = tf.tidy(() => tf.grads((x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) =>
            tf.fused.matMul({a: x, b: y, transposeA: tA, transposeB: tB, bias: z, activation}))(
            [tf.tensor(av, aShape), tf.tensor(bv, bShape), tf.tensor1d(biasV)], tf.tensor(dyv, want.shape)));
          const what = `${aShape} x ${bShape} tA=${tA} tB=${tB} ${activation}`;
          expectClose(grads[0].dataSync(), full.da, `da ${what}`);
          expectClose(grads[1].dataSync(), full.db, `db ${what}`);
          expectClose(grads[2].dataSync(), full.dbias!, `dbias ${what}`);
          tf.dispose(grads);
        }
      }
    }
  });

  test('a weight used again reuses its packed form, and a new weight in the freed memory is not mistaken for it', () => {
    const x = tf.tensor(values(6 * 5, 1), [6, 5]);
    let seed = 50;
    for (let round = 0; round < 3; round++) {
      const wv = values(5 * 4, seed++);
      const bv = values(4, seed++);
      const w = tf.tensor(wv, [5, 4]);
      const bias = tf.tensor1d(bv);
      const want = oracle({aShape: [6, 5], bShape: [5, 4], tA: false, tB: false, bias: [4], activation: 'relu'},
        x.dataSync() as Float32Array, wv, bv, null, null).y;
      for (let call = 0; call < 2; call++) {
        const y = tf.fused.matMul({a: x, b: w, bias, activation: 'relu'});
        expectClose(y.dataSync(), want, `round ${round} call ${call}`);
        y.dispose();
      }
      tf.dispose([w, bias]); // the next round's weights may take this memory
    }
    x.dispose();
  });

  test("setLibraryKernels('tfjs') puts tfjs's product, Slice, Tile and Identity kernels back, and they still compute; 'library' ours again", () => {
    const a = tf.tensor(values(12, 1), [3, 4]);
    const b = tf.tensor(values(20, 2), [5, 4]);
    const want = oracle({aShape: [3, 4], bShape: [5, 4], tA: false, tB: true}, a.dataSync() as Float32Array,
      b.dataSync() as Float32Array, null, null, null).y;
    let previous: LibraryKernels | null = null;
    try {
      previous = setLibraryKernels('tfjs');
      const {BatchMatMul, _FusedMatMul, Slice, Tile, Identity, GatherV2} = wasmKernelStatus();
      expect({BatchMatMul, _FusedMatMul, Slice, Tile, Identity, GatherV2}).toEqual(
        {BatchMatMul: 'kept', _FusedMatMul: 'kept', Slice: 'kept', Tile: 'kept', Identity: 'kept', GatherV2: 'kept'});
      const out = tf.matMul(a, b, false, true);
      expectClose(out.dataSync(), want, 'tfjs kernels');
      out.dispose();
    } finally {
      setLibraryKernels(previous ?? 'library');
    }
    const {BatchMatMul, _FusedMatMul, Slice, Tile, Identity, GatherV2} = wasmKernelStatus();
    expect({BatchMatMul, _FusedMatMul, Slice, Tile, Identity, GatherV2}).toEqual(
      {BatchMatMul: 'replaced', _FusedMatMul: 'replaced', Slice: 'replaced', Tile: 'replaced', Identity: 'replaced',
        GatherV2: 'replaced'});
    const out = tf.matMul(a, b, false, true);
    expectClose(out.dataSync(), want, 'library kernels');
    tf.dispose([a, b, out]);
  });
});

describe(title('transposeMatrices (the product kernels\' transposes on the heap)'), () => {
  test('every matrix of a batch transposed, for row counts around the 8-row step and columns around the 64-column block', () => {
    for (const count of [1, 3]) {
      for (const R of [1, 7, 8, 9, 97]) {
        for (const C of [1, 7, 64, 65, 130]) {
          const src = values(count * R * C, R * 1000 + C);
          const dst = new Float32Array(count * R * C).fill(NaN);
          transposeMatrices(src, dst, count, R, C);
          let wrong = 0;
          for (let m = 0; m < count; m++) {
            for (let i = 0; i < R; i++) {
              for (let j = 0; j < C; j++) if (dst[m * R * C + j * R + i] !== src[m * R * C + i * C + j]) wrong++;
            }
          }
          expect([count, R, C, wrong]).toEqual([count, R, C, 0]);
        }
      }
    }
  });
});
