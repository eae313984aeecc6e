/**
 * flexAttention with a block mask on the wasm backend as two kernels of the library's own
 * (native/flex.ts, in the module of wasm_native.ts): the forward and the backward of every
 * tile the block mask leaves, each tile's products, mask and softmax in one native loop.
 *
 * Through tfjs ops each tile costs some twenty kernels, and its products (128 query rows by a
 * few hundred keys) run at half the rate of full attention's large ones: a document mask at
 * T = 4096 issued about 10,000 kernels a step. Here a call is one kernel: the forward works
 * query blocks (one per work item, shared with the product kernel's worker threads), the
 * backward (batch entry, key/value group) pairs, so no two threads write one gradient row.
 *
 * Inputs are named q, k, v (forward) and q, k, v, o, lse, dy and optionally dLse (backward),
 * then the block mask's kept tiles t0, t1, ... in tileTensors() order; the attributes give the
 * shapes and each row's (and column's) list of tiles (FlexKernelAttrs). Registered for wasm
 * when the library loads; `flexKernelRuns()` tells ops/flex.ts whether a call can take it.
 */
import * as tf from '@tensorflow/tfjs';
import {NativeHost, WasmBackend} from './backend_types';
import {nativeProducts} from './wasm_native';

export const FLEX_FORWARD_KERNEL = 'TfjsAttentionFlexForward';
export const FLEX_BACKWARD_KERNEL = 'TfjsAttentionFlexBackward';

/** The shapes of a call and its tile lists. */
export interface FlexKernelAttrs {
  B: number; H: number; G: number; T: number; S: number; D: number; Dv: number;
  /** Query positions and keys per block. */
  bq: number; bk: number;
  /** The block mask's batch entries and heads (1 or B, 1 or H). */
  maskBatch: number; maskHeads: number;
  scale: number;
  /** Kept tiles given as inputs t0 .. t(tiles - 1). */
  tiles: number;
  /**
   * Per mask pair (b * maskHeads + h) and query block i (slot pair * nQ + i): `rowStarts` has
   * nPairs * nQ + 1 offsets into `rowEntries`, whose entries are (key block, tile input or -1
   * for a full tile) pairs. The same by key block for the backward: `colStarts`, `colEntries`
   * of (query block, tile) pairs.
   */
  rowStarts: number[]; rowEntries: number[];
  colStarts: number[]; colEntries: number[];
}

// The parameter block's slots (native/flex.ts's P_*).
const SLOTS = {q: 0, k: 1, v: 2, o: 3, lse: 4, dy: 5, dLse: 6, dq: 7, dk: 8, dv: 9, B: 10, H: 11, G: 12, T: 13,
  S: 14, D: 15, Dv: 16, bq: 17, bk: 18, maskBatch: 19, maskHeads: 20, scale: 21, rows: 22, cols: 23} as const;
const PARAM_SLOTS = 24;

function memoryOf(host: NativeHost): ArrayBuffer | SharedArrayBuffer {
  return (host.wasmMemory ?? host.asm!.memory!).buffer;
}

/**
 * Lays a list out as native/flex.ts reads it, at `base` (i32 slots from `at`): its starts table,
 * then its entries, entry e at slots 2e and 2e + 1 of the whole list (so starts are offset by
 * the table's length), tiles as byte addresses (0: full).
 */
function writeList(ints: Int32Array, at: number, starts: number[], entries: number[], tileAddress: number[]): number {
  const first = Math.ceil(starts.length / 2);
  for (let x = 0; x < starts.length; x++) ints[at + x] = starts[x] + first;
  for (let e = 0; e < entries.length; e += 2) {
    ints[at + 2 * first + e] = entries[e];
    ints[at + 2 * first + e + 1] = entries[e + 1] < 0 ? 0 : tileAddress[entries[e + 1]];
  }
  return 2 * first + entries.length;
}

/**
 * Runs one of the two kernels: makes the parameter block (shapes, addresses of `buffers` and
 * of the tiles, the lists) on the heap, runs the items and frees it.
 */
function runFlex(backend: WasmBackend, backward: boolean, a: FlexKernelAttrs, inputs: tf.NamedTensorInfoMap,
                 outputs: Record<string, tf.TensorInfo>): void {
  const native = nativeProducts(backend.wasm);
  if (native == null) throw new Error(`${backward ? FLEX_BACKWARD_KERNEL : FLEX_FORWARD_KERNEL}: no native kernel`);
  const address = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId).memoryOffset;
  const tiles = Array.from({length: a.tiles}, (_, x) => address(inputs[`t${x}`] as tf.TensorInfo));
  const rowLength = 2 * Math.ceil(a.rowStarts.length / 2) + a.rowEntries.length;
  const colLength = 2 * Math.ceil(a.colStarts.length / 2) + a.colEntries.length;
  const length = PARAM_SLOTS + (backward ? colLength : rowLength);
  const host = backend.wasm;
  const params = host._malloc(4 * length) >>> 0;
  if (params === 0) throw new Error('the wasm backend\'s memory could not hold flexAttention\'s tile lists');
  try {
    const ints = new Int32Array(memoryOf(host), params, length);
    const floats = new Float32Array(ints.buffer, params, length);
    const buffers: Record<string, tf.TensorInfo | undefined> = {...inputs, ...outputs} as Record<string, tf.TensorInfo>;
    for (const name of ['q', 'k', 'v', 'o', 'lse', 'dy', 'dLse', 'dq', 'dk', 'dv'] as const) {
      const t = buffers[name];
      ints[SLOTS[name]] = t == null ? 0 : address(t);
    }
    for (const name of ['B', 'H', 'G', 'T', 'S', 'D', 'Dv', 'bq', 'bk', 'maskBatch', 'maskHeads'] as const) {
      ints[SLOTS[name]] = a[name];
    }
    floats[SLOTS.scale] = a.scale;
    const list = params + 4 * PARAM_SLOTS;
    ints[SLOTS.rows] = backward ? 0 : list;
    ints[SLOTS.cols] = backward ? list : 0;
    if (backward) writeList(ints, PARAM_SLOTS, a.colStarts, a.colEntries, tiles);
    else writeList(ints, PARAM_SLOTS, a.rowStarts, a.rowEntries, tiles);
    const items = backward ? a.B * a.G : a.B * a.H * Math.ceil(a.T / a.bq);
    native.flex(backward, params, items, a, tilesComputed(a, backward));
  } finally {
    host._free(params);
  }
}

/** The tiles a call computes: each (batch entry, head) pair's list lengths (its mask pair's). */
function tilesComputed(a: FlexKernelAttrs, backward: boolean): number {
  const [starts, n] = backward ? [a.colStarts, Math.ceil(a.S / a.bk)] : [a.rowStarts, Math.ceil(a.T / a.bq)];
  let count = 0;
  for (let b = 0; b < a.B; b++) {
    for (let h = 0; h < a.H; h++) {
      const pair = (a.maskBatch === 1 ? 0 : b) * a.maskHeads + (a.maskHeads === 1 ? 0 : h);
      count += starts[(pair + 1) * n] - starts[pair * n];
    }
  }
  return count;
}

function floatInput(inputs: tf.NamedTensorInfoMap, name: string, size: number): tf.TensorInfo {
  const t = inputs[name] as tf.TensorInfo;
  if (t == null || t.dtype !== 'float32' || tf.util.sizeFromShape(t.shape) !== size) {
    throw new Error(`flexAttention's kernel takes ${name} of ${size} float32 values, received ` +
      `${t == null ? 'none' : `${t.dtype} [${t.shape}]`}`);
  }
  return t;
}

/** Both kernels' attributes and backend, once q, k and v are checked against the shapes. */
function checkedCall(inputs: tf.NamedTensorInfoMap, backend: unknown, attrs: tf.NamedAttrMap | undefined):
    {a: FlexKernelAttrs; b: WasmBackend} {
  const a = attrs as unknown as FlexKernelAttrs;
  const {B, H, G, T, S, D, Dv} = a;
  floatInput(inputs, 'q', B * H * T * D);
  floatInput(inputs, 'k', B * G * S * D);
  floatInput(inputs, 'v', B * G * S * Dv);
  return {a, b: backend as WasmBackend};
}

const FORWARD: tf.KernelConfig = {
  kernelName: FLEX_FORWARD_KERNEL,
  backendName: 'wasm',
  kernelFunc: ({inputs, backend, attrs}) => {
    const {a, b} = checkedCall(inputs, backend, attrs);
    const {B, H, T, Dv} = a;
    const o = b.makeOutput([B * H, T, Dv], 'float32');
    const lse = b.makeOutput([B * H, T], 'float32');
    try {
      runFlex(b, false, a, inputs, {o, lse});
    } catch (e) {
      b.disposeData(o.dataId);
      b.disposeData(lse.dataId);
      throw e;
    }
    return [o, lse];
  },
};

const BACKWARD: tf.KernelConfig = {
  kernelName: FLEX_BACKWARD_KERNEL,
  backendName: 'wasm',
  kernelFunc: ({inputs, backend, attrs}) => {
    const {a, b} = checkedCall(inputs, backend, attrs);
    const {B, H, G, T, S, D, Dv} = a;
    floatInput(inputs, 'o', B * H * T * Dv);
    floatInput(inputs, 'lse', B * H * T);
    floatInput(inputs, 'dy', B * H * T * Dv);
    if (inputs.dLse != null) floatInput(inputs, 'dLse', B * H * T);
    const outs = {dq: b.makeOutput([B * H, T, D], 'float32'), dk: b.makeOutput([B * G, S, D], 'float32'),
      dv: b.makeOutput([B * G, S, Dv], 'float32')};
    try {
      // Each item adds its tiles' parts into its own rows.
      for (const t of Object.values(outs)) (b.typedArrayFromHeap(t) as Float32Array).fill(0);
      runFlex(b, true, a, inputs, outs);
    } catch (e) {
      for (const t of Object.values(outs)) b.disposeData(t.dataId);
      throw e;
    }
    return [outs.dq, outs.dk, outs.dv];
  },
};

/** Registers the two kernels for wasm (idempotent). */
export function registerFlexKernels(): void {
  for (const config of [FORWARD, BACKWARD]) {
    if (tf.getKernel(config.kernelName, config.backendName) == null) tf.registerKernel(config);
  }
}

let enabled = true;

/** Whether flexAttention takes these kernels where it can (setLibraryKernels: 'library' on, 'tfjs' off). */
export function useFlexKernels(on: boolean): void {
  enabled = on;
}

/** True when the active backend is wasm with these kernels registered and the native module running. */
export function flexKernelRuns(): boolean {
  if (!enabled || tf.getBackend() !== 'wasm') return false;
  if (tf.getKernel(FLEX_FORWARD_KERNEL, 'wasm')?.kernelFunc !== FORWARD.kernelFunc) return false;
  const backend = tf.backend() as unknown as WasmBackend;
  return backend.wasm != null && nativeProducts(backend.wasm) != null;
}
