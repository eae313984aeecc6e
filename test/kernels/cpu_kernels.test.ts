// The cpu backend's UnsortedSegmentSum, which the library replaces: tfjs 4.22's kernel works
// one segment at a time (numSegments x size(x)), so the graph op summing E edges into N
// nodes cost O(N * E) on cpu. The replacement must give the same sums, be recognised
// apart from the shipped one by what it does, and leave any other kernel alone.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {setLibraryKernels} from '../../src';
import {cpuKernelStatus, installLinearSegmentSum, isPerSegmentSum} from '../../src/internals';
import {replacedSegmentSumKernel} from '../../src/kernels/cpu_kernels';
import {expectNoLeaks, title} from '../support/helpers';

interface CpuBackend extends tf.KernelBackend {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
}

const cpu = () => tf.findBackend('cpu') as CpuBackend;

/** Runs `kernel` on the cpu backend for x (shape) and ids (idsShape); returns shape and values. */
function run(kernel: tf.KernelFunc, x: number[], shape: number[], dtype: 'float32' | 'int32' | 'bool',
             ids: number[], idsShape: number[],
             numSegments: number): {shape: number[]; dtype: string; values: number[]} {
  const b = cpu();
  const xi = b.makeTensorInfo(shape, dtype,
    dtype === 'float32' ? new Float32Array(x) : dtype === 'bool' ? Uint8Array.from(x) : new Int32Array(x));
  const ii = b.makeTensorInfo(idsShape, 'int32', new Int32Array(ids));
  const out = kernel({inputs: {x: xi, segmentIds: ii} as unknown as tf.NamedTensorInfoMap,
    attrs: {numSegments}, backend: b}) as tf.TensorInfo;
  const result = {shape: out.shape, dtype: out.dtype, values: Array.from(b.readSync(out.dataId) as Float32Array)};
  for (const t of [xi, ii, out]) b.disposeData(t.dataId, true);
  return result;
}

describe(title('cpu kernels'), () => {
  test("the cpu UnsortedSegmentSum is the library's; the shipped one is kept to compare", () => {
    expect(cpuKernelStatus()).toEqual({UnsortedSegmentSum: 'replaced'});
    expect(replacedSegmentSumKernel()).not.toBeNull();
    expect(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc).not.toBe(replacedSegmentSumKernel());
  });

  const cases: [string, number[], number[], number][] = [
    // name, x shape, ids shape, segments
    ['rows into segments', [6, 3], [6], 4],
    ['a rank-3 x', [5, 2, 3], [5], 3],
    ['more segments than rows', [3, 2], [3], 9],
  ];
  for (const dtype of ['float32', 'int32', 'bool'] as const) {
    test.each(cases)(`${dtype}, %s: equals the shipped kernel, ids out of range dropped; ${dtype === 'float32' ? 'float32' : 'int32'} out`, (_, shape, idsShape, n) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const x = Array.from({length: size}, (_, i) =>
        (dtype === 'int32' ? (i * 5) % 11 - 4 : dtype === 'bool' ? (i % 3 === 0 ? 1 : 0) : Math.sin(i + 1) * 3));
      const rows = idsShape.reduce((a, b) => a * b, 1);
      const ids = Array.from({length: rows},
        (_, i) => (i === 1 ? -1 : i === 2 ? n : (i * 3) % n)); // -1 and n are dropped
      const ours = run(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc, x, shape, dtype, ids, idsShape, n);
      const shipped = run(replacedSegmentSumKernel()!, x, shape, dtype, ids, idsShape, n);
      expect(ours.shape).toEqual([n, ...shape.slice(idsShape.length)]);
      expect(ours.shape).toEqual(shipped.shape);
      // Integers sum to integers, as on wasm and TensorFlow (the shipped kernel gives float32).
      expect(ours.dtype).toBe(dtype === 'float32' ? 'float32' : 'int32');
      if (dtype !== 'float32') expect(ours.values).toEqual(shipped.values);
      else ours.values.forEach((v, i) => expect(Math.abs(v - shipped.values[i])).toBeLessThan(1e-5));
      expect(ours.values.some((v) => v !== 0)).toBe(true);
    });
  }

  test("setLibraryKernels('tfjs') puts the shipped kernel back, and installing again keeps it until 'library'", () => {
    const shipped = replacedSegmentSumKernel()!;
    expect(cpuKernelStatus().UnsortedSegmentSum).toBe('replaced');
    try {
      expect(setLibraryKernels('tfjs')).toBe('library');
      expect(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc).toBe(shipped);
      expect(installLinearSegmentSum()).toBe('kept'); // what selectBackend runs: the opt-out holds
      expect(cpuKernelStatus().UnsortedSegmentSum).toBe('kept');
    } finally {
      expect(setLibraryKernels('library')).toBe('tfjs');
    }
    expect(cpuKernelStatus().UnsortedSegmentSum).toBe('replaced');
    expect(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc).not.toBe(shipped);
  });

  test('through tf ops on cpu: the sums and the gradient (gather of dy), no leaks', async () => {
    const previous = tf.getBackend();
    await tf.setBackend('cpu');
    try {
      const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
      const ids = tf.tensor1d([2, 0, 2, -1], 'int32');
      expectNoLeaks(() => {
        const y = tf.unsortedSegmentSum(x, ids, 3);
        expect(y.arraySync()).toEqual([[3, 4], [0, 0], [6, 8]]);
        const w = tf.tensor2d([[1, 10], [2, 20], [3, 30]]);
        const [g] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(tf.unsortedSegmentSum(t, ids, 3), w)))([x]);
        expect(g.arraySync()).toEqual([[3, 30], [1, 10], [3, 30], [0, 0]]);
        tf.dispose([y, w, g]);
      });
      tf.dispose([x, ids]);
    } finally {
      await tf.setBackend(previous);
    }
  });

  test('the shipped kernel is recognised by what it does (work per segment), under any name; ours and broken ones are not', () => {
    const shipped = replacedSegmentSumKernel()!;
    const renamed = {Qa: (a: Parameters<tf.KernelFunc>[0]) => shipped(a)}.Qa;
    expect(isPerSegmentSum(renamed, cpu())).toBe(true);
    expect(isPerSegmentSum(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc, cpu())).toBe(false);
    expect(isPerSegmentSum(() => { throw new Error('nope'); }, cpu())).toBe(false);
    // Makes a tensor per segment but sums wrongly: not tfjs's kernel either.
    const wrong: tf.KernelFunc = (args) => {
      const out = shipped(args) as tf.TensorInfo;
      const b = args.backend as CpuBackend;
      const values = (b.readSync(out.dataId) as Float32Array).map((v) => v + 1);
      b.disposeData(out.dataId, true);
      return b.makeTensorInfo(out.shape, out.dtype, values);
    };
    expect(isPerSegmentSum(wrong, cpu())).toBe(false);
  });

  test('an unknown kernel is left alone; the shipped one is replaced, quietly, and only once', () => {
    const ours = tf.getKernel('UnsortedSegmentSum', 'cpu')!;
    const shipped = replacedSegmentSumKernel()!;
    const users: tf.KernelFunc = (args) => ours.kernelFunc(args); // a user's kernel: one pass, not per segment
    const backend = cpu() as unknown as {firstUse?: unknown};
    const firstUse = backend.firstUse;
    try {
      tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
      tf.registerKernel({kernelName: 'UnsortedSegmentSum', backendName: 'cpu', kernelFunc: users});
      expect(installLinearSegmentSum()).toBe('kept');
      expect(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc).toBe(users);
      expect(cpuKernelStatus().UnsortedSegmentSum).toBe('kept');
      tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
      tf.registerKernel({kernelName: 'UnsortedSegmentSum', backendName: 'cpu', kernelFunc: shipped});
      backend.firstUse = true; // as in a process that has not computed on cpu yet
      expect(installLinearSegmentSum()).toBe('replaced');
      expect(backend.firstUse).toBe(true); // the probe did not spend the backend's first-use notice
      expect(tf.getKernel('UnsortedSegmentSum', 'cpu')!.kernelFunc).toBe(ours.kernelFunc);
      expect(installLinearSegmentSum()).toBe('replaced'); // idempotent
    } finally {
      backend.firstUse = firstUse;
      if (tf.getKernel('UnsortedSegmentSum', 'cpu')?.kernelFunc !== ours.kernelFunc) {
        tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
        tf.registerKernel(ours);
      }
    }
  });
});
