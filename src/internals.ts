/**
 * tfjs-attention/internals: the parts the layers and the training step are made of, for
 * tests, benchmarks and power users: kernel replacements and their status, product paths,
 * decoding steps, the base layer class and kind table, tuning constants. Nothing here is
 * promised to stay: names may change in any release. What users build with is in the core
 * entry (index.ts) and in `tfjs-attention/train`.
 */
import './kernels/backend'; // the kernel and gradient fixes, as the core entry
import './train/checkpoint_format'; // saves into a folder spare its checkpoint files, as through the core entry

export {
  autoBackends, BACKEND_CHOICES, NODE_BACKEND_CHOICES, BACKEND_ENV_VAR, loadTfjsNode, loadWasmBackend,
} from './kernels/backend';
export {MAX_WASM_THREADS, KNOWN_WASM_VERSION} from './kernels/wasm_threads';
export {wasmKernelStatus, WasmKernelStatus} from './kernels/wasm_kernels';
export {flexKernelRuns} from './kernels/wasm_flex';
export {installSliceFromHeap, isCopyingSlice} from './kernels/wasm_slice';
export {installFastProducts, ProductName} from './kernels/wasm_matmul';
export {installTileFromHeap} from './kernels/wasm_tile';
export {installGatherFromHeap} from './kernels/wasm_gather';
export {gradientStatus, GradientStatus, GradientState, GradName} from './kernels/gradients';
export {cpuKernelStatus, CpuKernelStatus, installLinearSegmentSum, isPerSegmentSum} from './kernels/cpu_kernels';
export {isNode} from './core/runtime';
export {registerFileRouter} from './io/file_system';
export {MAX_JSON_BYTES} from './io/load_limits';
export {DEFAULT_MAX_BYTES} from './core/limits';
export {SDPA_TILE_SCORES} from './ops/sdpa';
export {DEFAULT_BLOCK_SIZE, FLASH_TILE_SCORES} from './ops/flash';
export {linearAttentionFromFeatures} from './ops/linear';
export {favorFeatures, FeatureOptions, FEATURE_KERNELS, SOFTMAX_STABILIZER, RELU_STABILIZER} from './ops/linear_features';
export {DEFAULT_CHUNK_SIZE} from './ops/linear_prefix_sums';
export {defaultNumFeatures} from './ops/random_features';
export {
  matMul, setMatMulPath, getMatMulPath, splitsProducts, MatMulPath, MATMUL_PATHS, SPLIT_BACKENDS,
} from './ops/matmul';
export {localBlockSize, validGlobalIndices, MIN_LOCAL_BLOCK} from './ops/local_global';
export {keyPaddingKeep} from './ops/masks';
export {CAUSAL_ALIGNMENTS} from './ops/causal';
export {AttendOptions, ATTENTION_LAYER_ARGS, ATTENTION_CALL_ARGS, POSITION_ENCODINGS} from './layers/attention_args';
export {MaskParts, paddingOnly, zeroPaddedQueries} from './layers/call_masks';
export {FULL_CAPABILITIES} from './layers/capabilities';
export {
  cacheBytes, DECODE_DENSE_SCORES, CacheStrategy, CachedStep, keyValueCache, KeyValueLayer,
} from './layers/decoding';
export {DEFAULT_ROPE_BASE} from './ops/rope';
export {GRAPH_VERSIONS, GRAPH_OPTIONS} from './ops/graph';
export {appendRows, decodeAttention, DECODE_BROADCAST_MAX_ROWS} from './ops/kv_cache';
export {linearStateStep, LinearState} from './ops/linear_decode';
export {localGlobalStep, LocalGlobalState} from './ops/local_global_decode';
export {MHA_IMPLEMENTATIONS, FLASH_AUTO_MIN_SCORES} from './layers/multi_head_attention';
export {GRAPH_LAYER_ARGS, GRAPH_CALL_ARGS} from './layers/graph_attention';
export {dense, layerNorm, DENSE_ACTIVATIONS} from './ops/dense';
export {ATTENTION_KIND_TABLE, AttentionKindEntry, AttentionLayerClass, attentionKinds} from './layers/kinds';
export {LAYER_CLASSES} from './layers/register';
export {TRANSFORMER_POSITIONS} from './train/model';
export {
  GENERATE_OPTIONS, sampleToken, transformerDecoder, TransformerDecoder, DecoderCache, disposeDecoderCache,
} from './train/generate';
export {KERAS_LOAD_OPTIONS} from './keras/load';
