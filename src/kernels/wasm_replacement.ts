/**
 * How a library kernel takes the place of tfjs-backend-wasm's kernel of the same name, and
 * gives it back: shared by every wasm replacement (wasm_slice.ts, wasm_tile.ts,
 * wasm_identity.ts, wasm_gather.ts, wasm_matmul.ts).
 *
 * A replacement is installed only while the registered kernel behaves as tfjs's (a probe run
 * on a stand-in backend: unlike a function's name, it survives minification); any other
 * kernel (a later tfjs's, a user's) is left alone.
 */
import * as tf from '@tensorflow/tfjs';
import {LibraryKernels} from './kernel_setting';

/** 'replaced': the library's kernel is registered; 'kept': another kernel is; 'absent': none. */
export type ReplacementState = 'replaced' | 'kept' | 'absent';

/** What the registry holds for the wasm kernel of `ours`' name. */
export function replacementState(ours: tf.KernelConfig): ReplacementState {
  const k = tf.getKernel(ours.kernelName, 'wasm');
  return k == null ? 'absent' : k.kernelFunc === ours.kernelFunc ? 'replaced' : 'kept';
}

/**
 * Registers `ours` in place of the wasm kernel of its name when `recognises` says that one
 * is tfjs's, handing a copy of the replaced config to `keep` first. Idempotent. Returns what
 * the registry holds afterwards.
 */
export function replaceRecognised(ours: tf.KernelConfig, recognises: (current: tf.KernelConfig) => boolean,
                                  keep: (replaced: tf.KernelConfig) => void): ReplacementState {
  const current = tf.getKernel(ours.kernelName, 'wasm');
  if (current == null) return 'absent';
  if (current.kernelFunc === ours.kernelFunc) return 'replaced';
  if (!recognises(current)) return 'kept';
  keep({...current} as tf.KernelConfig);
  tf.unregisterKernel(ours.kernelName, 'wasm');
  tf.registerKernel(ours);
  return 'replaced';
}

/**
 * One replacement: the library's kernel `ours`, how tfjs's kernel is recognised, and tfjs's
 * kernel once replaced (for the inputs ours hands back to it, and for setLibraryKernels('tfjs')).
 */
export class KernelReplacement {
  private theirs: tf.KernelConfig | null = null;
  private restoredConfig: tf.KernelConfig | null = null;

  constructor(readonly ours: tf.KernelConfig, private readonly recognises: (current: tf.KernelConfig) => boolean) {}

  /** Registers ours in place of tfjs's kernel (see replaceRecognised). */
  install(): ReplacementState {
    return replaceRecognised(this.ours, this.recognises, (replaced) => { this.theirs = replaced; });
  }

  /** tfjs's kernel that ours took the place of; null until it has. */
  get replaced(): tf.KernelConfig | null {
    return this.theirs;
  }

  /** tfjs's kernel as setLibraryKernels('tfjs') registers it again, or null before the replacement. */
  restored(): tf.KernelConfig | null {
    if (this.theirs == null) return null;
    return this.restoredConfig ??= this.theirs.setupFunc == null
      ? {kernelName: this.theirs.kernelName, backendName: 'wasm', kernelFunc: this.theirs.kernelFunc}
      : setUpOnFirstUse(this.theirs);
  }
}

/**
 * tfjs's kernel `original` registered again after its backend started (setLibraryKernels('tfjs')):
 * tfjs runs a kernel's setup only when its backend starts, so this one sets itself up on
 * first use with each backend.
 */
export function setUpOnFirstUse(original: tf.KernelConfig): tf.KernelConfig {
  const ready = new WeakSet<object>();
  return {
    kernelName: original.kernelName, backendName: original.backendName, setupFunc: original.setupFunc,
    kernelFunc: (args) => {
      if (!ready.has(args.backend)) {
        ready.add(args.backend);
        original.setupFunc?.(args.backend);
      }
      return original.kernelFunc(args);
    },
  };
}

/**
 * Registers `theirs` (tfjs's kernel) for 'tfjs' where `ours` is registered, or `ours` for
 * 'library' where `theirs` is; any other registered kernel (a later tfjs's, one of yours)
 * is left alone.
 */
export function swapKernel(ours: tf.KernelConfig, theirs: tf.KernelConfig, which: LibraryKernels): void {
  const [from, to] = which === 'tfjs' ? [ours, theirs] : [theirs, ours];
  if (tf.getKernel(ours.kernelName, 'wasm')?.kernelFunc !== from.kernelFunc) return;
  tf.unregisterKernel(ours.kernelName, 'wasm');
  tf.registerKernel(to);
}

/**
 * True when `kernelFunc`, run on a stand-in backend with `inputs` and `attrs`, makes one
 * output of shape `shape` and then asks for that output's native id (to hand it to a native
 * call, which the probe never reaches: it stops the kernel there). What tfjs-backend-wasm
 * 4.x's natively computed kernels do; a minifier renames them but keeps this. `reads` gives
 * the values of the inputs the kernel must read with readSync first (each once; any other
 * read fails the probe).
 */
export function stopsAtNativeOutput(kernelFunc: tf.KernelFunc, inputs: Record<string, {shape: number[]}>,
                                    attrs: tf.NamedAttrMap, shape: number[],
                                    reads: Record<string, tf.backend_util.BackendValues> = {}): boolean {
  const stop = new Error('probe');
  const made: number[][] = [];
  const outId = {};
  let next = 1;
  const infos = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, {dataId: {}, shape: v.shape,
    dtype: k in reads ? 'int32' : 'float32'}]));
  const readCount = new Map<unknown, number>();
  const backend = {
    readSync: (dataId: unknown) => {
      const name = Object.keys(reads).find((k) => infos[k]?.dataId === dataId);
      if (name == null) throw new Error('unexpected read');
      readCount.set(name, (readCount.get(name) ?? 0) + 1);
      return reads[name];
    },
    incRef: () => undefined,
    disposeData: () => true,
    makeOutput: (s: number[], dtype: string) => {
      made.push(s);
      return {dataId: outId, shape: s, dtype};
    },
    dataIdMap: {
      get: (dataId: unknown) => {
        if (dataId === outId) throw stop;
        return {id: next++, memoryOffset: 0};
      },
    },
  };
  try {
    kernelFunc({inputs: infos as unknown as tf.NamedTensorInfoMap,
      backend: backend as unknown as tf.KernelBackend, attrs});
  } catch (e) {
    return e === stop && made.length === 1 && made[0].join() === shape.join() &&
      Object.keys(reads).every((k) => readCount.get(k) === 1);
  }
  return false;
}
