/**
 * Identity on the wasm backend that shares its input's buffer (one more reference), as tfjs's
 * cpu and webgl backends do: tensors are immutable, so a clone need not copy. tfjs-wasm 4.22's
 * copies the whole tensor, and tfjs's engine clones every tensor it saves for the backward
 * pass, so on wasm training held every activation twice.
 */
import * as tf from '@tensorflow/tfjs';
import {WasmBackend} from './backend_types';
import {KernelReplacement} from './wasm_replacement';

/** The library's Identity kernel. */
export const SHARED_IDENTITY: tf.KernelConfig = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    if (x.dtype === 'string') return IDENTITY.replaced!.kernelFunc(args);
    (args.backend as unknown as WasmBackend).incRef(x.dataId);
    return {dataId: x.dataId, shape: x.shape, dtype: x.dtype};
  },
};

/**
 * True when `kernelFunc` behaves as tfjs-backend-wasm 4.x's Identity: on a stand-in backend
 * it makes a new output of x's shape and copies x's values into it.
 */
export function isCopyingIdentity(kernelFunc: tf.KernelFunc): boolean {
  const xId = {};
  const outId = {};
  const input = new Float32Array([1, 2, 3]);
  const output = new Float32Array(3);
  let made = 0;
  const backend = {
    makeOutput: (shape: number[], dtype: string) => {
      made++;
      return {dataId: outId, shape, dtype};
    },
    typedArrayFromHeap: (t: {dataId: unknown}) => (t.dataId === xId ? input : t.dataId === outId ? output : null),
    incRef: () => { throw new Error('shares'); },
  };
  try {
    kernelFunc({inputs: {x: {dataId: xId, shape: [3], dtype: 'float32'}} as unknown as tf.NamedTensorInfoMap,
      backend: backend as unknown as tf.KernelBackend, attrs: {}});
  } catch {
    return false;
  }
  return made === 1 && output.join() === '1,2,3';
}

/** Our Identity, in place of tfjs's copying one (no setup function). */
const IDENTITY = new KernelReplacement(SHARED_IDENTITY,
  (current) => current.setupFunc == null && isCopyingIdentity(current.kernelFunc));

/** Puts the sharing Identity in place of tfjs-wasm's copying one (`isCopyingIdentity`); any other is left alone. */
export function installSharedIdentity(): 'replaced' | 'kept' | 'absent' {
  return IDENTITY.install();
}

/** tfjs's Identity as setLibraryKernels('tfjs') registers it again, or null before the replacement. */
export function restoredIdentity(): tf.KernelConfig | null {
  return IDENTITY.restored();
}
