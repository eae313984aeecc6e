/**
 * tfjs-attention: differentiable attention layers for TensorFlow.js.
 *
 * This is the core entry: what a model builder needs (layers, ops, masks, the kind factory,
 * the transformer builder and `generate`, the model and Keras loaders, errors,
 * `selectBackend`). It only re-exports. Importing it registers the library's layer classes,
 * its own kernels and the kernel and gradient fixes for tfjs's cpu (and wasm, once that
 * backend is imported), which change only speed, missing gradients and a few tfjs 4.22 bugs
 * (docs/backends.md lists them; `setLibraryKernels('tfjs')` puts tfjs's own back); it never
 * registers or selects a backend. It imports in a browser: the functions that read or write files reach Node's fs
 * lazily and throw UNSUPPORTED elsewhere (runtime.ts). In Node, the package's `node` export
 * condition loads node.ts instead, which adds the `file://` router.
 *
 * The rule for this entry: a name belongs here when a user builds, trains by hand, saves,
 * loads or runs a model with it, and we promise to keep it. Training harness and toy tasks are
 * on `tfjs-attention/train`; kernels, engines, tuning constants and the pieces the layers are
 * made of on `tfjs-attention/internals` (no stability promise); the CLI and the bench are not
 * exported.
 */
import './kernels/backend'; // the kernel and gradient fixes (no backend is registered)

export {AttentionError, AttentionErrorCode} from './core/errors';
export {selectBackend, BackendChoice, BackendName, BackendOptions} from './kernels/backend';
export {wasmThreads, ThreadsArg} from './kernels/wasm_threads';
export {setLibraryKernels, LibraryKernels} from './kernels/kernel_setting';

// ops
export {scaledDotProductAttention, SdpaOptions, AttentionWithWeights} from './ops/sdpa';
export {flashAttention, FlashOptions} from './ops/flash';
export {linearAttention, LinearOptions} from './ops/linear';
export {FeatureKernel} from './ops/linear_features';
export {orthogonalProjection} from './ops/random_features';
export {localGlobalAttention, LocalGlobalOptions} from './ops/local_global';
export {graphAttention, GraphWeights, GraphOptions, GraphAttentionWithScores, GraphVersion} from './ops/graph';
export {
  equivariantAttention, EquivariantWeights, EquivariantOptions, CoordinateAggregation, COORDINATE_AGGREGATIONS,
} from './ops/equivariant';
export {radiusGraph, knnGraph, RadiusGraphOptions, KnnGraphOptions} from './ops/neighbours';
export {
  geometricAttention, GeometricWeights, GeometricOptions, GeometricAttentionWithScores,
} from './ops/geometric';
export {distanceAttention, DistanceOptions} from './ops/distance';
export {rotaryEmbedding, RopeOptions} from './ops/rope';
export {causalMask, CausalAlignment, CausalArg} from './ops/causal';
export {flexAttention, FlexOptions, FlexWithLse} from './ops/flex';
export {createBlockMask, createBlockMaskAsync, BlockMask, BlockMaskOptions} from './ops/block_mask';
export {
  slidingWindow, prefixLm, documentMask, andMasks, orMasks, alibi, alibiSlopes, softcap, relativePositionBias,
  capturing, chainScores,
} from './ops/flex_mods';
export {MaskMod, ScoreMod, ModContext, ModSpec} from './ops/flex_types';
export {SparseMask, HnswMask, HnswMaskOptions} from './ops/sparse_masks';

// layers
export {AttentionLayerBase} from './layers/base_attention';
export {AttentionLayerArgs, AttentionCallArgs, PositionEncoding} from './layers/attention_args';
export {AttentionCache} from './layers/decoding';
export {
  AttentionOptionArgs, AttentionOptions, DEFAULT_QK_NORM_EPSILON, OUTPUT_GATES, OutputGate, QK_NORMS, QkNorm,
} from './layers/attention_options';
export {AttentionCapabilities} from './layers/capabilities';
export {WeightShape} from './core/limits';
export {MultiHeadAttention, MultiHeadAttentionArgs, MhaImplementation} from './layers/multi_head_attention';
export {FlashAttention, FlashAttentionArgs} from './layers/flash_attention';
export {LinearAttention, LinearAttentionArgs} from './layers/linear_attention';
export {LocalGlobalAttention, LocalGlobalAttentionArgs} from './layers/local_global_attention';
export {GraphAttention, GraphAttentionArgs} from './layers/graph_attention';
export {EquivariantAttention, EquivariantAttentionArgs} from './layers/equivariant_attention';
export {GeometricAttention, GeometricAttentionArgs} from './layers/geometric_attention';
export {FusedDense, FusedDenseArgs} from './layers/fused_dense';
export {DenseActivation} from './ops/dense';
export {FusedLayerNormalization, FusedLayerNormalizationArgs} from './layers/fused_layer_norm';
export {attentionLayer} from './layers/factory';
export {ATTENTION_KINDS, AttentionKind, AnyAttentionArgs} from './layers/kinds';
export {registerAttentionLayers} from './layers/register';
export {withAttentionMods, FlexLayerArgs, FlexCallArgs, FlexConfig} from './layers/flex_layer';

// models: build, decode, save and load
export {buildTransformer, TransformerOptions, TransformerPositions} from './train/model';
export {PositionEmbedding, PositionEmbeddingArgs} from './layers/position_embedding';
export {generate, GenerateOptions} from './train/generate';
export {loadModel, ModelLoadOptions} from './train/checkpoint';
export {fileSystem, FileSystemOptions} from './io/file_system';
export {loadKerasModel, KerasLoadOptions} from './keras/load';
export {VERSION} from './core/version';
