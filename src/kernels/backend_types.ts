/**
 * The parts of tfjs's backend classes that the library's kernels use, typed once: the wasm
 * backend (tfjs-backend-wasm 4.x's BackendWasm and its Emscripten module) and the cpu backend
 * (tfjs-backend-cpu 4.x's MathBackendCPU). tfjs exports neither shape, so kernels cast the
 * `backend` they are handed to these.
 */
import * as tf from '@tensorflow/tfjs';

/** A WebAssembly.Memory (the library's TypeScript settings carry no WebAssembly types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}

/** A tensor's values as a view of the wasm heap. */
export type HeapArray = Float32Array | Int32Array | Uint8Array;

/** The parts of tfjs-backend-wasm's Emscripten module that the library's product kernel needs (wasm_native.ts). */
export interface NativeHost {
  /** The threaded build's memory. */
  wasmMemory?: WasmMemory;
  /** The one-thread builds' exports, their memory among them. */
  asm?: {memory?: WasmMemory};
  _malloc(bytes: number): number;
  _free(offset: number): void;
  /** The threads XNNPACK runs (tfjs-backend-wasm's bridge). */
  tfjs?: {getThreadsCount?(): number};
}

/** A worker of the threaded build's pool (Node's Worker there). */
interface PooledWorker {
  unref?(): void;
}

/** tfjs-backend-wasm's Emscripten module: the parts of it the library uses. */
export interface WasmModule extends NativeHost {
  cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
  /** tfjs-backend-wasm's bridge to its native side. */
  tfjs: {
    registerTensor(id: number, size: number, offset: number): void;
    disposeData(id: number): void;
    getThreadsCount?(): number;
  };
  /** The threaded build's pool of pthread workers. */
  PThread?: {runningWorkers?: PooledWorker[]; unusedWorkers?: PooledWorker[]};
}

/** tfjs-backend-wasm's backend (`tf.backend()` while 'wasm' runs): the parts of it the library uses. */
export interface WasmBackend {
  wasm: WasmModule;
  /** The native id the backend gives its next tensor. */
  dataIdNextNumber: number;
  /** Each tensor's native id and byte offset on the heap. */
  dataIdMap: {get(dataId: tf.DataId): {id: number; memoryOffset: number}};
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
  /** A new tensor on the heap (or at `memoryOffset`, or holding `values`). */
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number,
             values?: tf.backend_util.BackendValues): tf.TensorInfo;
  /** A view of t's values on the heap: valid until the heap grows (a later makeOutput may grow it). */
  typedArrayFromHeap(t: tf.TensorInfo): HeapArray;
  incRef(dataId: tf.DataId): void;
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
}

/** tfjs-backend-cpu's backend: the parts of it the library uses. */
export interface CpuBackend {
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): tf.TensorInfo;
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
}
