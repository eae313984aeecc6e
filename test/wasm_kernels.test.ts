// The kernels the library registers for the wasm backend (tfjs 4.22 lacks them).
import * as tf from '@tensorflow/tfjs';
import '../src';
import {installSliceFromHeap, isCopyingSlice, wasmKernelStatus} from '../src';
import {replacedSliceKernel, unsortedSegmentSumValues} from '../src/wasm_kernels';
import {BACKEND, expectNoLeaks, title} from './helpers';

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
    expect(wasmKernelStatus()).toEqual({Slice: 'replaced', UnsortedSegmentSum: 'added'});
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
