/**
 * A kernel of the cpu backend of tfjs 4.22 that the library replaces.
 *
 * - UnsortedSegmentSum: tfjs-backend-cpu 4.22 computes it one segment at a time (a mask
 *   of the ids equal to s, times x, summed), so it costs numSegments x size(x): for the
 *   graph op, which sums E edges into N nodes, that is O(N * E) time, and training an
 *   embedding (gather's gradient) costs vocabulary x rows. The replacement adds each row
 *   into its segment once (segment_sum.ts, as on wasm), O(size(x)). Its
 *   output is int32 for int32 and bool x, as on wasm and TensorFlow (the shipped kernel
 *   gave float32).
 *   Installed only while the registered kernel behaves as the per-segment one
 *   (`isPerSegmentSum`, a probe that survives minification); any other kernel (a later
 *   tfjs's, a user's) is kept.
 */
import * as tf from '@tensorflow/tfjs';
import {CpuBackend} from './backend_types';
import {followLibraryKernels, libraryKernelsInUse} from './kernel_setting';
import {segmentSumKernel} from './segment_sum';

const segmentSumConfig = segmentSumKernel('cpu', (backend, shape, dtype, values) =>
  (backend as unknown as CpuBackend).makeTensorInfo(shape, dtype, values));

/** The cpu kernel function this replaced (null until it has). */
let original: tf.KernelFunc | null = null;

/** The UnsortedSegmentSum kernel that the replacement took the place of (null until it has). */
export function replacedSegmentSumKernel(): tf.KernelFunc | null {
  return original;
}

/** The kernel function of ours, to tell it apart from any other registered later. */
const librarySegmentSum = segmentSumConfig.kernelFunc;

/** How many segments the probe asks for: the per-segment kernel makes at least one tensor for each. */
const PROBE_SEGMENTS = 8;

/**
 * True when `kernelFunc`, run on `backend` (the cpu backend) for 4 rows into 8 segments,
 * gives the right sums and makes at least one tensor per segment: the work of tfjs 4.22's
 * cpu kernel grows with the number of segments, which is what makes it slow. A kernel
 * whose work is one pass over its input makes one tensor and is not recognised; nor is
 * one that fails.
 */
export function isPerSegmentSum(kernelFunc: tf.KernelFunc, backend: tf.KernelBackend): boolean {
  const real = backend as unknown as CpuBackend;
  let made = 0;
  const counting = new Proxy(backend, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop === 'makeTensorInfo') {
        return (...args: Parameters<CpuBackend['makeTensorInfo']>) => { made++; return real.makeTensorInfo(...args); };
      }
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const x = real.makeTensorInfo([4], 'float32', new Float32Array([1, 2, 3, 4]));
  const ids = real.makeTensorInfo([4], 'int32', new Int32Array([5, 0, 5, 7])); // made on `real`: not counted
  let out: tf.TensorInfo | null = null;
  try {
    out = kernelFunc({inputs: {x, segmentIds: ids} as unknown as tf.NamedTensorInfoMap,
      attrs: {numSegments: PROBE_SEGMENTS}, backend: counting}) as tf.TensorInfo;
    const sums = Array.from(real.readSync(out.dataId) as Float32Array);
    return made >= PROBE_SEGMENTS && sums.join() === '2,0,0,0,0,4,0,4';
  } catch {
    return false;
  } finally {
    for (const t of [x, ids, out]) if (t != null) real.disposeData(t.dataId, true);
  }
}

/**
 * Runs the probe without the cpu backend's once-per-process "install tfjs-node" notice,
 * which it prints at its first write: a process that never computes on the cpu backend
 * should not see it because the library looked at a kernel. The notice still comes at
 * the user's own first use.
 */
function probeQuietly(backend: tf.KernelBackend, probe: () => boolean): boolean {
  const b = backend as unknown as {firstUse?: unknown};
  if (!('firstUse' in b)) return probe();
  const first = b.firstUse;
  b.firstUse = false;
  try {
    return probe();
  } finally {
    b.firstUse = first;
  }
}

/** What the registry holds for the cpu backend's UnsortedSegmentSum. */
export interface CpuKernelStatus {
  /**
   * 'replaced': ours is registered; 'kept': another kernel is (not recognised as the
   * per-segment one); 'absent': none.
   */
  UnsortedSegmentSum: 'replaced' | 'kept' | 'absent';
}

/** Which of the library's cpu kernels are registered now. */
export function cpuKernelStatus(): CpuKernelStatus {
  const kernel = tf.getKernel('UnsortedSegmentSum', 'cpu');
  return {UnsortedSegmentSum: kernel == null ? 'absent' : kernel.kernelFunc === librarySegmentSum ? 'replaced' : 'kept'};
}

/**
 * Puts the library's UnsortedSegmentSum in place of the cpu one when that one is
 * recognised as tfjs's per-segment kernel (`isPerSegmentSum`, no setup function); any
 * other kernel is left alone, as is everything when no cpu backend is registered.
 * Idempotent. Returns what the registry holds afterwards.
 */
export function installLinearSegmentSum(): CpuKernelStatus['UnsortedSegmentSum'] {
  const current = tf.getKernel('UnsortedSegmentSum', 'cpu');
  if (current == null) return 'absent';
  if (current.kernelFunc === librarySegmentSum) return 'replaced';
  if (libraryKernelsInUse() === 'tfjs') return 'kept'; // opted out (setLibraryKernels)
  if (current.setupFunc != null || tf.findBackendFactory('cpu') == null) return 'kept';
  const backend = tf.findBackend('cpu');
  if (backend == null || !probeQuietly(backend, () => isPerSegmentSum(current.kernelFunc, backend))) return 'kept';
  original = current.kernelFunc;
  tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
  tf.registerKernel(segmentSumConfig);
  return 'replaced';
}

// setLibraryKernels('tfjs') puts the per-segment kernel back, 'library' this one again.
followLibraryKernels((which) => {
  if (which === 'library') {
    installLinearSegmentSum();
    return;
  }
  const current = tf.getKernel('UnsortedSegmentSum', 'cpu');
  if (original == null || current?.kernelFunc !== librarySegmentSum) return;
  tf.unregisterKernel('UnsortedSegmentSum', 'cpu');
  tf.registerKernel({kernelName: 'UnsortedSegmentSum', backendName: 'cpu', kernelFunc: original});
});
