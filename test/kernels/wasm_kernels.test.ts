// The kernels the library registers for the wasm backend (tfjs 4.22 lacks them).
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {installSliceFromHeap, isCopyingSlice, loadWasmBackend, wasmKernelStatus} from '../../src/internals';
import {unsortedSegmentSumValues} from '../../src/kernels/segment_sum';
import {isCopyingIdentity} from '../../src/kernels/wasm_identity';
import {replacedSliceKernel} from '../../src/kernels/wasm_slice';
import {installTileFromHeap, isNativeTile, tileValues} from '../../src/kernels/wasm_tile';
import {BACKEND, expectNoLeaks, expectOtherKernelKept, title} from '../support/helpers';

// The library imports the wasm backend when selectBackend first tries it, never at import; the
// cpu project never selects it, so it is imported here (registered, not selected).
beforeAll(async () => {
  expect(await loadWasmBackend()).toBe(true);
});

describe(title('wasm kernels'), () => {
  test('UnsortedSegmentSum is registered for wasm', () => {
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
  });

  test('unsortedSegmentSum equals a plain loop (float and int)', () => {
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ids = tf.tensor1d([2, 0, 2, 1], 'int32');
    expect(tf.unsortedSegmentSum(x, ids, 3).arraySync()).toEqual([[3, 4], [7, 8], [6, 8]]);
    const xi = tf.tensor2d([[1], [2], [3], [4]], undefined, 'int32');
    const ids2 = tf.tensor1d([1, 1, 0, 1], 'int32');
    const want = new Int32Array(2);
    unsortedSegmentSumValues([1, 2, 3, 4], [1, 1, 0, 1], 2, 1, want);
    expect(Array.from(want)).toEqual([3, 7]);
    const got = tf.unsortedSegmentSum(xi, ids2, 2);
    expect(got.arraySync()).toEqual([[3], [7]]);
    tf.dispose([x, ids, xi, ids2, got]);
  });

  test(`gather's gradient (embedding rows used twice add up) on ${BACKEND}`, () => {
    const table = tf.tensor2d([[1, 1], [2, 2], [3, 3]]);
    const idx = tf.tensor1d([2, 0, 2], 'int32');
    expectNoLeaks(() => {
      const [g] = tf.grads((t: tf.Tensor) => tf.sum(tf.gather(t, idx)))([table]);
      expect(g.arraySync()).toEqual([[1, 1], [0, 0], [2, 2]]);
      g.dispose();
    });
    tf.dispose([table, idx]);
  });
});

// The replacement Slice kernel reads the wasm heap in place instead of copying the whole
// input per slice. It must give exactly what slicing means, for every case tfjs routes
// to it: contiguous and strided slices, ranks 1 to 4, float, int32 and bool; rank 5
// and strings go to the original kernel.
describe(title('Slice from the heap'), () => {
  /** The slice computed in plain JS from the input's values. */
  function sliceValues(values: ArrayLike<number>, shape: number[], begin: number[], size: number[]): number[] {
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const out: number[] = [];
    const walk = (axis: number, offset: number) => {
      if (axis === shape.length) { out.push(values[offset]); return; }
      for (let i = begin[axis]; i < begin[axis] + size[axis]; i++) walk(axis + 1, offset + i * strides[axis]);
    };
    walk(0, 0);
    return out;
  }

  test('the wasm Slice kernel is the library\'s replacement, UnsortedSegmentSum the library\'s own', () => {
    expect(wasmKernelStatus()).toMatchObject({Slice: 'replaced', UnsortedSegmentSum: 'added'});
    expect(tf.getKernel('Slice', 'wasm')?.kernelFunc).not.toBe(replacedSliceKernel());
  });

  test('on wasm, slices never read their whole input (readSync) any more', async () => {
    const previous = tf.getBackend();
    await tf.setBackend('wasm');
    const backend = tf.backend() as unknown as {readSync: (id: unknown) => unknown};
    const spy = jest.spyOn(backend, 'readSync');
    try {
      const x = tf.range(0, 64 * 1024, 1, 'float32').reshape([64, 1024]);
      const parts = Array.from({length: 64}, (_, i) => tf.slice(x, [i, 0], [1, 1024]));
      expect(spy).not.toHaveBeenCalled();
      expect((await parts[5].data())[3]).toBe(5 * 1024 + 3);
      tf.dispose([x, ...parts]);
    } finally {
      spy.mockRestore();
      await tf.setBackend(previous);
    }
  });

  test("tfjs's Slice is recognised by what it does, under any name (a minifier renames it)", () => {
    const shipped = replacedSliceKernel()!;
    expect(shipped).not.toBeNull();
    const renamed = {Ni: (a: Parameters<tf.KernelFunc>[0]) => shipped(a)}.Ni;
    expect(renamed.name).toBe('Ni');
    expect(isCopyingSlice(renamed)).toBe(true);
    expect(isCopyingSlice(tf.getKernel('Slice', 'wasm')!.kernelFunc)).toBe(false); // ours reads the heap
    expect(isCopyingSlice(() => { throw new Error('nope'); })).toBe(false);
  });

  test('an unknown Slice kernel is left alone; a recognised one is replaced', () => {
    const ours = tf.getKernel('Slice', 'wasm')!;
    const shipped = replacedSliceKernel()!;
    const users: tf.KernelFunc = (args) => ours.kernelFunc(args); // a user's kernel: not tfjs's copying one
    try {
      tf.unregisterKernel('Slice', 'wasm');
      tf.registerKernel({kernelName: 'Slice', backendName: 'wasm', kernelFunc: users});
      expect(installSliceFromHeap()).toBe('kept');
      expect(tf.getKernel('Slice', 'wasm')!.kernelFunc).toBe(users);
      expect(wasmKernelStatus().Slice).toBe('kept');
      tf.unregisterKernel('Slice', 'wasm');
      tf.registerKernel({kernelName: 'Slice', backendName: 'wasm', kernelFunc: shipped});
      expect(installSliceFromHeap()).toBe('replaced');
      expect(tf.getKernel('Slice', 'wasm')!.kernelFunc).toBe(ours.kernelFunc);
      expect(installSliceFromHeap()).toBe('replaced'); // idempotent
    } finally {
      if (tf.getKernel('Slice', 'wasm')?.kernelFunc !== ours.kernelFunc) {
        tf.unregisterKernel('Slice', 'wasm');
        tf.registerKernel(ours);
      }
    }
  });

  const cases: [number[], number[], number[]][] = [
    [[10], [3], [5]],
    [[4, 6], [1, 0], [2, 6]],             // contiguous rows
    [[4, 6], [1, 2], [3, 3]],             // strided
    [[3, 4, 5], [1, 0, 0], [1, 4, 5]],    // one batch entry (contiguous)
    [[3, 4, 5], [0, 1, 2], [3, 2, 3]],    // strided in every axis
    [[2, 3, 4, 5], [1, 1, 0, 1], [1, 2, 4, 3]],
    [[2, 3, 4, 5], [0, 0, 0, 0], [2, 3, 4, 5]], // the whole tensor
    [[2, 3, 4, 5], [1, 2, 3, 4], [0, 1, 1, 1]], // empty
    [[2, 2, 3, 2, 3], [1, 0, 1, 0, 1], [1, 2, 2, 2, 2]], // rank 5: the original kernel
  ];
  for (const dtype of ['float32', 'int32', 'bool'] as const) {
    test.each(cases)(`${dtype} %j from %j size %j equals slicing in JS`, (shape, begin, size) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const values = Array.from({length: n}, (_, i) => (dtype === 'bool' ? i % 3 === 0 ? 1 : 0 : (i * 7) % 23 - 11.5));
      const x = tf.tensor(dtype === 'int32' ? values.map(Math.floor) : values, shape, dtype);
      expectNoLeaks(() => {
        const y = tf.slice(x, begin, size);
        expect(y.shape).toEqual(size);
        expect(y.dtype).toBe(dtype);
        expect(Array.from(y.dataSync())).toEqual(sliceValues(x.dataSync(), shape, begin, size));
        y.dispose();
      });
      x.dispose();
    });
  }

  test('string slices still work (the original kernel)', () => {
    const x = tf.tensor2d([['a', 'b', 'c'], ['d', 'e', 'f']]);
    const y = tf.slice(x, [0, 1], [2, 2]);
    expect(y.arraySync()).toEqual([['b', 'c'], ['e', 'f']]);
    tf.dispose([x, y]);
  });

  test('many slices of one tensor after the heap has grown in between', () => {
    // makeOutput can grow the heap, which detaches old views: each slice must read afresh.
    const x = tf.range(0, 4096, 1, 'float32').reshape([64, 64]);
    const parts: tf.Tensor[] = [];
    for (let i = 0; i < 64; i++) {
      parts.push(tf.slice(x, [i, 0], [1, 64]));
      parts.push(tf.zeros([256, 1024])); // 1 MiB each, so the heap grows along the way
    }
    parts.filter((_, j) => j % 2 === 0).forEach((p, i) => {
      expect(p.dataSync()[0]).toBe(i * 64);
      expect(p.dataSync()[63]).toBe(i * 64 + 63);
    });
    tf.dispose([x, ...parts]);
  });
});

// The replacement Tile kernel writes the tiled values from views of the heap (tfjs-wasm 4.22's
// native loop takes about 80 ns per value): it must tile as tf.tile means, for every rank and
// dtype, repetitions of 1 and 0 included.
describe(title('Tile from the heap'), () => {
  /** x tiled, written out. */
  function tiled(values: ArrayLike<number>, shape: number[], reps: number[]): number[] {
    const out: number[] = [];
    const outShape = shape.map((s, i) => s * reps[i]);
    const walk = (axis: number, idx: number[]) => {
      if (axis === shape.length) {
        let flat = 0;
        idx.forEach((i, d) => { flat = flat * shape[d] + (i % shape[d]); });
        out.push(values[flat]);
        return;
      }
      for (let i = 0; i < outShape[axis]; i++) walk(axis + 1, [...idx, i]);
    };
    walk(0, []);
    return out;
  }

  test('tileValues writes what tiling means', () => {
    const cases: [number[], number[]][] = [[[], []], [[3], [4]], [[2, 3], [3, 2]], [[1, 1, 5], [4, 3, 1]],
      [[4, 3, 1], [1, 1, 5]], [[2, 1, 3, 2], [2, 3, 1, 2]], [[2, 2, 1, 2, 1], [1, 2, 3, 1, 2]]];
    for (const [shape, reps] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const xs = Float32Array.from({length: n}, (_, i) => i + 1);
      const out = new Float32Array(tiled(xs, shape, reps).length);
      tileValues(xs, shape, reps, out);
      expect({shape, reps, out: Array.from(out)}).toEqual({shape, reps, out: tiled(xs, shape, reps)});
    }
  });

  test(`tf.tile on ${BACKEND}: float32, int32 and bool, ranks 1 to 5, repetitions of 1 and 0`, () => {
    const cases: [number[], number[]][] = [[[3], [4]], [[2, 3], [1, 5]], [[8, 16, 1], [1, 1, 6]],
      [[1, 1, 6], [8, 16, 1]], [[2, 1, 3, 1], [1, 4, 2, 3]], [[2, 3], [0, 2]], [[2, 1, 2, 1, 2], [1, 3, 1, 2, 1]]];
    for (const [shape, reps] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const dtype of ['float32', 'int32', 'bool'] as const) {
        const vals = Array.from({length: n}, (_, i) => (dtype === 'bool' ? i % 2 : i * 3 - 5));
        const x = tf.tensor(vals, shape, dtype);
        const y = tf.tile(x, reps);
        expect({shape, reps, dtype, got: Array.from(y.dataSync())})
          .toEqual({shape, reps, dtype, got: tiled(vals, shape, reps)});
        expect(y.shape).toEqual(shape.map((s, i) => s * reps[i]));
        tf.dispose([x, y]);
      }
    }
  });

  test('the wasm Tile kernel is the library\'s, recognised by behaviour; another kernel is left alone', () => {
    expect(wasmKernelStatus().Tile).toBe('replaced');
    const ours = tf.getKernel('Tile', 'wasm')!;
    expect(isNativeTile(ours.kernelFunc)).toBe(false);
    expectOtherKernelKept('Tile', installTileFromHeap);
  });
});

// tfjs's engine clones every tensor it saves for the backward pass; tfjs-wasm 4.22's Identity
// copied it. The library's shares the buffer (as tfjs's cpu and webgl backends do).
describe(title('Identity shares its buffer'), () => {
  test(`clones on ${BACKEND} hold the same values, survive their source, and copy nothing on wasm`, () => {
    const x = tf.tensor([1, 2, 3, 4], [2, 2]);
    const y = tf.clone(x);
    const z = tf.clone(tf.cast(tf.tensor([true, false], [2], 'bool'), 'bool'));
    expect(y.arraySync()).toEqual([[1, 2], [3, 4]]);
    expect(z.arraySync()).toEqual([1, 0]);
    if (BACKEND === 'wasm') {
      const backend = tf.backend() as unknown as {getMemoryOffset(id: tf.DataId): number};
      expect(backend.getMemoryOffset(y.dataId)).toBe(backend.getMemoryOffset(x.dataId));
      expect(wasmKernelStatus().Identity).toBe('replaced');
    }
    x.dispose();
    expect(y.arraySync()).toEqual([[1, 2], [3, 4]]); // the buffer lives while a clone does
    const before = tf.memory().numTensors;
    tf.dispose([y, z]);
    expect(tf.memory().numTensors).toBe(before - 2);
    const s = tf.clone(tf.tensor(['a', 'b']));
    expect(s.arraySync()).toEqual(['a', 'b']);
    s.dispose();
  });

  test('tfjs-wasm\'s copying Identity is recognised by behaviour, the sharing one is not', () => {
    const copying: tf.KernelFunc = ({inputs, backend}) => {
      const b = backend as unknown as {makeOutput(s: number[], d: string): tf.TensorInfo;
        typedArrayFromHeap(t: tf.TensorInfo): Float32Array;};
      const x = inputs.x as tf.TensorInfo;
      const out = b.makeOutput(x.shape, x.dtype);
      b.typedArrayFromHeap(out).set(b.typedArrayFromHeap(x));
      return out;
    };
    expect(isCopyingIdentity(copying)).toBe(true);
    expect(isCopyingIdentity(tf.getKernel('Identity', 'wasm')!.kernelFunc)).toBe(false);
  });
});
