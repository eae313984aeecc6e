/**
 * tfjs-attention: differentiable attention layers for TensorFlow.js.
 * This file is the public API; it only re-exports. It imports in a browser: the functions
 * that read or write files reach Node's fs lazily and throw UNSUPPORTED elsewhere
 * (runtime.ts); `tfjs-attention/node` is the same API for Node with fs imported statically.
 */
import './backend'; // registers the wasm backend and the kernels it lacks

export {AttentionError, AttentionErrorCode} from './errors';
export {
  selectBackend, autoBackends, BackendChoice, BackendName, BackendOptions, BACKEND_CHOICES, NODE_BACKEND_CHOICES,
  BACKEND_ENV_VAR,
} from './backend';
export {wasmThreads, ThreadsArg, MAX_WASM_THREADS, KNOWN_WASM_VERSION} from './wasm_threads';
export {wasmKernelStatus, WasmKernelStatus, installSliceFromHeap, isCopyingSlice, installFastProducts, installTileFromHeap,
  setLibraryKernels, LibraryKernels} from './wasm_kernels';
export {installGatherFromHeap} from './wasm_gather';
export {gradientStatus, GradientStatus, GradientState} from './gradients';
export {cpuKernelStatus, CpuKernelStatus, installLinearSegmentSum, isPerSegmentSum} from './cpu_kernels';
export {isNode} from './runtime';
export {registerFileRouter, fileSystem, FileSystemOptions} from './io/file_system';
export {MAX_JSON_BYTES} from './io/load_limits';
export {DEFAULT_MAX_BYTES, WeightShape} from './limits';
export {scaledDotProductAttention, SdpaOptions, AttentionWithWeights, SDPA_TILE_SCORES} from './ops/sdpa';
export {flashAttention, FlashOptions, DEFAULT_BLOCK_SIZE, FLASH_TILE_SCORES} from './ops/flash';
export {
  linearAttention, linearAttentionFromFeatures, favorFeatures, LinearOptions, FeatureOptions, FeatureKernel,
  FEATURE_KERNELS, DEFAULT_CHUNK_SIZE, SOFTMAX_STABILIZER, RELU_STABILIZER,
} from './ops/linear';
export {orthogonalProjection, defaultNumFeatures} from './ops/random_features';
export {
  matMul, setMatMulPath, getMatMulPath, splitsProducts, MatMulPath, MATMUL_PATHS, SPLIT_BACKENDS,
} from './ops/matmul';
export {
  localGlobalAttention, LocalGlobalOptions, localBlockSize, validGlobalIndices, MIN_LOCAL_BLOCK,
} from './ops/local_global';
export {
  causalMask, SparseMask, HnswMask, HnswMaskOptions, keyPaddingKeep, CAUSAL_ALIGNMENTS, CausalAlignment, CausalArg,
} from './ops/masks';
export {
  AttentionLayerArgs, AttentionCallArgs, AttentionLayerBase, AttendOptions, MaskParts, paddingOnly, zeroPaddedQueries,
  ATTENTION_LAYER_ARGS, ATTENTION_CALL_ARGS, AttentionCapabilities, FULL_CAPABILITIES, AttentionCache, cacheBytes,
  DECODE_DENSE_SCORES,
  POSITION_ENCODINGS, PositionEncoding,
} from './layers/base_attention';
export {rotaryEmbedding, RopeOptions, DEFAULT_ROPE_BASE} from './ops/rope';
export {
  graphAttention, GraphWeights, GraphOptions, GraphAttentionWithScores, GraphVersion, GRAPH_VERSIONS, GRAPH_OPTIONS,
} from './ops/graph';
export {appendRows, decodeAttention, DECODE_BROADCAST_MAX_ROWS} from './ops/kv_cache';
export {linearStateStep, LinearState} from './ops/linear_decode';
export {localGlobalStep, LocalGlobalState} from './ops/local_global_decode';
export {
  MultiHeadAttention, MultiHeadAttentionArgs, MhaImplementation, MHA_IMPLEMENTATIONS, FLASH_AUTO_MIN_SCORES,
} from './layers/multi_head_attention';
export {FlashAttention, FlashAttentionArgs} from './layers/flash_attention';
export {LinearAttention, LinearAttentionArgs} from './layers/linear_attention';
export {LocalGlobalAttention, LocalGlobalAttentionArgs} from './layers/local_global_attention';
export {
  GraphAttention, GraphAttentionArgs, GRAPH_LAYER_ARGS, GRAPH_CALL_ARGS,
} from './layers/graph_attention';
export {attentionLayer} from './layers/factory';
export {FusedDense, FusedDenseArgs} from './layers/fused_dense';
export {FusedLayerNormalization, FusedLayerNormalizationArgs} from './layers/fused_layer_norm';
export {dense, layerNorm, DENSE_ACTIVATIONS, DenseActivation} from './ops/dense';
export {
  ATTENTION_KINDS, AttentionKind, AnyAttentionArgs, ATTENTION_KIND_TABLE, AttentionKindEntry, KindFlag, attentionKinds,
} from './layers/kinds';
export {registerAttentionLayers, LAYER_CLASSES} from './register';
export {
  makeToyTask, makeTask, TASK_NAMES, ALL_TASK_NAMES, TaskName, AnyTaskName, TaskOptions, AnyTaskOptions, Task, ToyTask,
  TaskBatch, Split, SPLITS, BLANK, SEP, FIRST_SYMBOL, TEXT_TASK,
} from './train/tasks';
export {
  makeTextTask, encodeText, decodeText, unigramEntropy, readTextFile, sampleTextPath, SAMPLE_TEXT, TextTask,
  TextTaskOptions, TextSourceOptions,
} from './train/text';
export {FusedAdamOptimizer, fusedAdam} from './train/adam';
export {
  buildTransformer, TransformerOptions, PositionEmbedding, PositionEmbeddingArgs, TRANSFORMER_POSITIONS,
  TransformerPositions,
} from './train/model';
export {
  generate, GenerateOptions, GENERATE_OPTIONS, sampleToken, transformerDecoder, TransformerDecoder, DecoderCache,
  disposeDecoderCache,
} from './train/generate';
export {
  makeGraphTask, GraphTask, GraphTaskOptions, GRAPH_TASK, GRAPH_TASK_OPTIONS, graphBaselines, buildGraphNetwork,
  GraphNetworkOptions, GRAPH_NETWORK_OPTIONS,
} from './train/graph_task';
export {
  train, evaluate, maskedLoss, sparseCrossEntropy, logitsOf, batchInputs, TrainOptions, TrainResult, Metrics, StepInfo, learningRateAt, ResumeFrom,
} from './train/trainer';
export {
  saveCheckpoint, loadCheckpoint, loadModel, readTrainingRecord, TrainingRecord, ModelLoadOptions,
} from './train/checkpoint';
export {loadKerasModel, KerasLoadOptions, KERAS_LOAD_OPTIONS} from './keras/load';
export {VERSION} from './version';

import {registerFileRouter} from './io/file_system';
registerFileRouter(); // file:// saving and loading in Node; nothing elsewhere
