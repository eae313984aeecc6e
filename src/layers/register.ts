/**
 * Every layer class of the library, and one call that registers them all for
 * `tf.loadLayersModel` / `tf.models.modelFromJSON`.
 *
 * Each class registers itself when its module runs. A bundler keeps only the modules an app
 * uses, so an app that loads saved models by class name (not through `loadModel`, which
 * calls this) and does not use every class calls `registerAttentionLayers()` once.
 */
import * as tf from '@tensorflow/tfjs';
import {FlashAttention} from './flash_attention';
import {FusedDense} from './fused_dense';
import {FusedLayerNormalization} from './fused_layer_norm';
import {EquivariantAttention} from './equivariant_attention';
import {GeometricAttention} from './geometric_attention';
import {GraphAttention} from './graph_attention';
import {LinearAttention} from './linear_attention';
import {LocalGlobalAttention} from './local_global_attention';
import {MultiHeadAttention} from './multi_head_attention';
import {PositionEmbedding} from './position_embedding';

/**
 * The serializable classes: the four attention layers, the graph and geometric layers, and
 * buildTransformer's PositionEmbedding, FusedDense and FusedLayerNormalization.
 */
export const LAYER_CLASSES = [MultiHeadAttention, FlashAttention, LinearAttention, LocalGlobalAttention, GraphAttention,
  GeometricAttention, EquivariantAttention, PositionEmbedding, FusedDense, FusedLayerNormalization];

/** Registers every class in LAYER_CLASSES (idempotent). */
export function registerAttentionLayers(): void {
  for (const cls of LAYER_CLASSES) tf.serialization.registerClass(cls);
}
