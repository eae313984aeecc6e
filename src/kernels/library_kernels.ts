/**
 * Kernels of the library's own (names no tfjs kernel has), for the wasm and cpu backends,
 * where a tensor's values are plain memory that a loop in JS can read and write: one kernel
 * in place of many small ones, or of a product that packs a large operand for little work.
 *
 * - COLUMN_SUMS ([R, N] -> [N]): the bias and gain gradients of the library's dense, norm and
 *   projection ops (ops/dense.ts columnSums). As a product ones [1, R] x g, tfjs-wasm's fast
 *   path packs all of g, on one thread whatever the thread count; the loop here reads g once.
 * - ADAM (value, gradient, m, v, beta1^t, beta2^t -> value', m', v'): one Adam update of one
 *   variable (the powers are inputs, read where they lie: no synchronous read), the
 *   arithmetic of tfjs 4.22's AdamOptimizer in one pass instead of its fourteen kernels
 *   (train/adam.ts FusedAdamOptimizer).
 *
 * Registered when the library loads (`registerLibraryKernels`); `hasLibraryKernel` tells an
 * op whether the active backend has one, and the op takes its tf-op path where not.
 */
import * as tf from '@tensorflow/tfjs';
import {CpuBackend, WasmBackend} from './backend_types';

export const COLUMN_SUMS = 'TfjsAttentionColumnSums';
export const ADAM = 'TfjsAttentionAdam';

/** What a kernel here needs of a backend: a tensor's values as an array it may read, and new outputs to write. */
interface FloatAccess {
  /** A new float32 output of `shape`, with a writable view of its values. */
  output(shape: number[]): {info: tf.TensorInfo; values: Float32Array};
  /** A view (or the array) of t's float32 values, valid until the next output is made. */
  read(t: tf.TensorInfo): Float32Array;
}

const FLOAT_ACCESS: Readonly<Record<'wasm' | 'cpu', (backend: unknown) => FloatAccess>> = {
  wasm: (backend) => {
    const b = backend as WasmBackend;
    return {
      output: (shape) => {
        const info = b.makeOutput(shape, 'float32');
        return {info, values: b.typedArrayFromHeap(info) as Float32Array};
      },
      // Views of the heap taken after makeOutput (which may grow and so move the heap).
      read: (t) => b.typedArrayFromHeap(t) as Float32Array,
    };
  },
  cpu: (backend) => {
    const b = backend as CpuBackend;
    return {
      output: (shape) => {
        const values = new Float32Array(tf.util.sizeFromShape(shape));
        return {info: b.makeTensorInfo(shape, 'float32', values), values};
      },
      read: (t) => b.readSync(t.dataId) as Float32Array,
    };
  },
};

/** out[j] = the sum of g[i, j] over the R rows (out.length = C); four rows a pass. */
export function sumColumns(g: Float32Array, R: number, C: number, out: Float32Array): void {
  out.fill(0);
  let i = 0;
  for (; i + 3 < R; i += 4) {
    const r0 = i * C;
    const [r1, r2, r3] = [r0 + C, r0 + 2 * C, r0 + 3 * C];
    for (let j = 0; j < C; j++) out[j] += (g[r0 + j] + g[r1 + j]) + (g[r2 + j] + g[r3 + j]);
  }
  for (; i < R; i++) {
    const r = i * C;
    for (let j = 0; j < C; j++) out[j] += g[r + j];
  }
}

/** Adam's constants, the ADAM kernel's attributes. */
export interface AdamAttrs {
  beta1: number;
  beta2: number;
  epsilon: number;
  learningRate: number;
}

export interface AdamStep extends AdamAttrs {
  /** 1 - beta1^t and 1 - beta2^t: the bias corrections of step t. */
  correction1: number;
  correction2: number;
}

/**
 * One Adam update, tfjs 4.22's arithmetic in float64: m' = m b1 + g (1 - b1),
 * v' = v b2 + g^2 (1 - b2), w' = w - lr (m' / c1) / (sqrt(v' / c2) + eps), with the two bias
 * corrections applied as products by 1 / c (one division a value instead of three: the
 * results differ from tfjs's float32 ops by float32 rounding only).
 */
export function adamValues(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, s: AdamStep,
                           w1: Float32Array, m1: Float32Array, v1: Float32Array): void {
  const {beta1, beta2, epsilon} = s;
  const [a1, a2] = [1 - beta1, 1 - beta2];
  const step = -s.learningRate / s.correction1;
  const r2 = 1 / s.correction2;
  for (let i = 0; i < w.length; i++) {
    const gi = g[i];
    const mi = m[i] * beta1 + gi * a1;
    const vi = v[i] * beta2 + gi * gi * a2;
    m1[i] = mi;
    v1[i] = vi;
    w1[i] = w[i] + step * mi / (Math.sqrt(vi * r2) + epsilon);
  }
}

function columnSumsConfig(backendName: 'wasm' | 'cpu'): tf.KernelConfig {
  return {
    kernelName: COLUMN_SUMS,
    backendName,
    kernelFunc: ({inputs, backend}) => {
      const x = inputs.x as tf.TensorInfo;
      if (x.dtype !== 'float32' || x.shape.length !== 2) {
        throw new Error(`${COLUMN_SUMS} takes a float32 matrix, received ${x.dtype} [${x.shape}]`);
      }
      const [R, C] = x.shape;
      const io = FLOAT_ACCESS[backendName](backend);
      const out = io.output([C]);
      sumColumns(io.read(x), R, C, out.values);
      return out.info;
    },
  };
}

function adamConfig(backendName: 'wasm' | 'cpu'): tf.KernelConfig {
  return {
    kernelName: ADAM,
    backendName,
    kernelFunc: ({inputs, backend, attrs}) => {
      const {value, gradient, m, v, accBeta1, accBeta2} =
        inputs as Record<'value' | 'gradient' | 'm' | 'v' | 'accBeta1' | 'accBeta2', tf.TensorInfo>;
      for (const t of [accBeta1, accBeta2]) {
        if (t.dtype !== 'float32' || tf.util.sizeFromShape(t.shape) !== 1) {
          throw new Error(`${ADAM} takes the powers beta^t as float32 scalars, received ${t.dtype} [${t.shape}]`);
        }
      }
      for (const t of [gradient, m, v]) {
        if (t.dtype !== 'float32' || value.dtype !== 'float32' || !tf.util.arraysEqual(t.shape, value.shape)) {
          throw new Error(`${ADAM} takes float32 value, gradient and moments of one shape, received ` +
            `[${value.shape}] and [${t.shape}]`);
        }
      }
      const io = FLOAT_ACCESS[backendName](backend);
      const outs = [io.output(value.shape), io.output(value.shape), io.output(value.shape)];
      // Views of every input and output after the last output was made (see read).
      const views = [value, gradient, m, v].map((t) => io.read(t));
      const [w1, m1, v1] = outs.map((o) => io.read(o.info));
      // The bias corrections from the optimizer's float32 powers, as tfjs's update reads them.
      const step: AdamStep = {...(attrs as unknown as AdamAttrs), correction1: 1 - io.read(accBeta1)[0],
        correction2: 1 - io.read(accBeta2)[0]};
      adamValues(views[0], views[1], views[2], views[3], step, w1, m1, v1);
      return outs.map((o) => o.info);
    },
  };
}

/** The kernels above by backend, made once. */
const CONFIGS = (['wasm', 'cpu'] as const).flatMap((b) => [columnSumsConfig(b), adamConfig(b)]);

/**
 * Registers the kernels above for wasm and cpu where nothing holds their names, and the
 * column sums' gradient (dy broadcast over the rows, so a gradient of a gradient through the
 * library's dense and norm ops still runs). Idempotent.
 */
export function registerLibraryKernels(): void {
  for (const config of CONFIGS) {
    if (tf.getKernel(config.kernelName, config.backendName) == null) tf.registerKernel(config);
  }
  if (tf.getGradient(COLUMN_SUMS) == null) {
    tf.registerGradient({kernelName: COLUMN_SUMS, inputsToSave: ['x'], gradFunc: (dy, saved) => {
      const [x] = saved;
      return {x: () => tf.mul(tf.onesLike(x), dy as tf.Tensor)};
    }});
  }
}

let enabled = true;

/** Whether ops take the kernels above (setLibraryKernels: 'library' on, 'tfjs' off). */
export function useOwnKernels(on: boolean): void {
  enabled = on;
}

/** True when the active backend has the library's kernel `name` (one of the above) and they are in use. */
export function hasLibraryKernel(name: typeof COLUMN_SUMS | typeof ADAM): boolean {
  if (!enabled) return false;
  const registered = tf.getKernel(name, tf.getBackend())?.kernelFunc;
  return CONFIGS.some((c) => c.kernelName === name && registered === c.kernelFunc);
}
