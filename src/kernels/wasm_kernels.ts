/**
 * The library's kernels for the wasm backend of tfjs 4.22: which it adds, which it replaces,
 * when they are registered, and how setLibraryKernels swaps tfjs's back.
 *
 * Added (tfjs-backend-wasm 4.22 lacks it; a later tfjs that ships its own keeps it):
 * - UnsortedSegmentSum (segment_sum.ts): the gradient of `gather`, so `tf.layers.embedding`
 *   can train. Computed in plain TypeScript on the values read from the wasm heap: it runs
 *   once per embedding per step on [B*T, E] rows, which costs far less than the model.
 *
 * Replaced (each only while the registered kernel behaves as tfjs's: wasm_replacement.ts):
 * Slice (wasm_slice.ts), the products BatchMatMul and _FusedMatMul (wasm_matmul.ts), Tile
 * (wasm_tile.ts), Identity (wasm_identity.ts) and GatherV2 (wasm_gather.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {WasmBackend} from './backend_types';
import {LibraryKernels, followLibraryKernels, libraryKernelsInUse} from './kernel_setting';
import {segmentSumKernel} from './segment_sum';
import {GATHER_FROM_HEAP, installGatherFromHeap, restoredGather} from './wasm_gather';
import {SHARED_IDENTITY, installSharedIdentity, restoredIdentity} from './wasm_identity';
import {PRODUCT_KERNELS, PRODUCT_NAMES, installFastProducts, restoredProduct} from './wasm_matmul';
import {replacementState, swapKernel} from './wasm_replacement';
import {SLICE_FROM_HEAP, installSliceFromHeap, restoredSlice} from './wasm_slice';
import {TILE_FROM_HEAP, installTileFromHeap, restoredTile} from './wasm_tile';

const unsortedSegmentSumConfig = segmentSumKernel('wasm', (backend, shape, dtype, values) =>
  (backend as unknown as WasmBackend).makeOutput(shape, dtype, undefined, values));

/** What registerMissingWasmKernels did, as the kernel registry holds it now. */
export interface WasmKernelStatus {
  /** 'replaced': ours is registered; 'kept': another kernel is (not recognised as tfjs's); 'absent': none. */
  Slice: 'replaced' | 'kept' | 'absent';
  /** 'added': ours is registered; 'kept': another kernel is (a later tfjs's own); 'absent': none. */
  UnsortedSegmentSum: 'added' | 'kept' | 'absent';
  /** The product kernels (wasm_matmul.ts): 'replaced', 'kept' or 'absent' as for Slice. */
  BatchMatMul: 'replaced' | 'kept' | 'absent';
  _FusedMatMul: 'replaced' | 'kept' | 'absent';
  /** Tile (tileValues on the heap): 'replaced', 'kept' or 'absent' as for Slice. */
  Tile: 'replaced' | 'kept' | 'absent';
  /** Identity (shares the buffer instead of copying it): 'replaced', 'kept' or 'absent'. */
  Identity: 'replaced' | 'kept' | 'absent';
  /** GatherV2 (slices copied whole from the heap, wasm_gather.ts): 'replaced', 'kept' or 'absent'. */
  GatherV2: 'replaced' | 'kept' | 'absent';
}

/** Which of the library's wasm kernels are registered now. */
export function wasmKernelStatus(): WasmKernelStatus {
  const segment = replacementState(unsortedSegmentSumConfig);
  return {
    Slice: replacementState(SLICE_FROM_HEAP),
    UnsortedSegmentSum: segment === 'replaced' ? 'added' : segment,
    BatchMatMul: replacementState(PRODUCT_KERNELS.BatchMatMul),
    _FusedMatMul: replacementState(PRODUCT_KERNELS._FusedMatMul),
    Tile: replacementState(TILE_FROM_HEAP),
    Identity: replacementState(SHARED_IDENTITY),
    GatherV2: replacementState(GATHER_FROM_HEAP),
  };
}

/** True once tfjs-backend-wasm has registered its kernels (so the replacements can take their place). */
let backendKernelsRegistered = false;

/**
 * Registers the kernels tfjs-backend-wasm lacks (UnsortedSegmentSum) for 'wasm' unless a
 * kernel of that name is already there: at once, whether or not the wasm backend is imported
 * yet (it registers none of that name), so an embedding trains on wasm whatever the import
 * order. Then installs the replacements (`installSliceFromHeap`, ...) once tfjs-backend-wasm
 * has registered its kernels (those would replace the replacements): when the library is
 * imported after it, or when selectBackend imports it.
 */
export function registerMissingWasmKernels(): void {
  if (tf.getKernel('UnsortedSegmentSum', 'wasm') == null) tf.registerKernel(unsortedSegmentSumConfig);
  if (backendKernelsRegistered || tf.getKernel('Slice', 'wasm') == null) return;
  backendKernelsRegistered = true;
  if (libraryKernelsInUse() === 'library') installReplacements(); // else setLibraryKernels('library') does
}

function installReplacements(): void {
  installSliceFromHeap();
  installFastProducts();
  installTileFromHeap();
  installSharedIdentity();
  installGatherFromHeap();
}

/**
 * setLibraryKernels for wasm: tfjs's kernels back in place of the replacements ('tfjs'), or
 * the replacements again ('library', installing those never installed under 'tfjs').
 */
function followSetting(which: LibraryKernels): void {
  const pairs: [tf.KernelConfig, tf.KernelConfig | null][] = [
    [SLICE_FROM_HEAP, restoredSlice()],
    [SHARED_IDENTITY, restoredIdentity()],
    [TILE_FROM_HEAP, restoredTile()],
    [GATHER_FROM_HEAP, restoredGather()],
    ...PRODUCT_NAMES.map((name): [tf.KernelConfig, tf.KernelConfig | null] =>
      [PRODUCT_KERNELS[name], restoredProduct(name)]),
  ];
  for (const [ours, theirs] of pairs) {
    if (theirs != null) swapKernel(ours, theirs, which);
  }
  if (which === 'library' && backendKernelsRegistered) installReplacements();
}

followLibraryKernels(followSetting);
