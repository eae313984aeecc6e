/**
 * KerasHub models and layers: recognised, and refused with the reason.
 *
 * A KerasHub model (GemmaBackbone, GemmaCausalLM, Qwen3Backbone, GptOssBackbone, ...) saves
 * the hyperparameters of its constructor, not a layer graph (keras_hub/src/models/backbone.py,
 * Backbone.get_config: "Don't chain to super here"); its attention layers are built in Python
 * from them and never appear in a model.json. So there is no config to map here, only a model
 * to rebuild. The attention classes that carry options this library has (keras-team/keras-hub
 * 0.32.0.dev0, keras_hub/src/models/; Apache-2.0), and what each would map to:
 *
 *   CachedGemmaAttention (gemma/gemma_attention.py, Gemma 1 and 2)
 *     logit_soft_cap c: scaled logits l -> c tanh(l / c), before the mask     softcap c
 *     use_sliding_window_attention, sliding_window_size W: |i + cache_update_index - j| < W,
 *       ANDed with the decoder's causal mask                                  slidingWindow W (causal)
 *     query_head_dim_normalize false: scale 1 / sqrt(hidden_dim / H)          none (no scale option)
 *   CachedGemma3Attention (gemma3/gemma3_attention.py): the same, and
 *     use_query_key_norm: RMSNormalization (gemma3_layers.py) of q and k per head before
 *       RoPE, x / sqrt(mean(x^2) + eps) * (1 + scale), eps layer_norm_epsilon  qkNorm 'rms', gamma = 1 + scale
 *   Qwen3Attention (qwen3/qwen3_attention.py)
 *     query_dense_layernorm / key_dense_layernorm (Qwen3LayerNorm: RMS times `scale`,
 *       eps layer_norm_epsilon, default 1e-6) per head before RoPE           qkNorm 'rms', gamma = scale
 *     sliding_window_size: as Gemma's                                         slidingWindow (causal)
 *   GptOssAttention (gpt_oss/gpt_oss_attention.py)
 *     weight `sinks` [H]: softmax over [logits, sink_h], the sink column dropped  attentionSinks, sinks
 *     sliding_window W: keys j >= i - W, so W + 1 keys                       slidingWindow W + 1 (causal)
 *
 * Apart from that scale, the math of each matches ours; reading them would need a builder per
 * KerasHub model (its embedding, decoder blocks, norms, RoPE variant: Gemma's interleaved
 * halves, gpt-oss's YaRN) and its weight names, not a config mapping. KerasHub's exported
 * layers (keras_hub.layers.CachedMultiHeadAttention, TransformerDecoder, ...) appear in a
 * functional model as `keras_hub>Name` (legacy h5, registered name) or with a `keras_hub.`
 * module (.keras); they are refused the same way.
 */
import {AttentionError} from '../core/errors';
import {Dict, isDict, Json} from './topology_json';

const PACKAGES = /^(keras_hub|keras_nlp)[>.]/;

/** True when `v` or a serialized object inside it names a KerasHub class or module. */
function mentionsKerasHub(v: Json, depth = 0): boolean {
  if (depth > 4) return false; // a backbone's nested config lies one or two levels down
  if (Array.isArray(v)) return v.some((e) => mentionsKerasHub(e, depth + 1));
  if (!isDict(v)) return false;
  for (const key of ['class_name', 'registered_name', 'module']) {
    if (typeof v[key] === 'string' && PACKAGES.test(v[key] as string)) return true;
  }
  return Object.values(v).some((e) => mentionsKerasHub(e, depth + 1));
}

/**
 * The class name of a KerasHub model topology (legacy h5 writes its Python class name, its
 * backbone nested with a `keras_hub.` module; a bare backbone is a `...Backbone` with no
 * layers), or null.
 */
export function kerasHubModel(top: Dict): string | null {
  const cls = typeof top.class_name === 'string' ? top.class_name : null;
  if (cls == null) return null;
  const layers = isDict(top.config) && Array.isArray(top.config.layers);
  if (PACKAGES.test(cls) || (!layers && (mentionsKerasHub(top) || /Backbone$/.test(cls)))) return cls;
  return null;
}

/** True when a layer entry is a KerasHub layer (its class, registered name or module say so). */
export function isKerasHubLayer(entry: Dict): boolean {
  return [entry.class_name, entry.registered_name, entry.module]
    .some((v) => typeof v === 'string' && PACKAGES.test(v));
}

const WHY = 'KerasHub builds its attention (CachedGemmaAttention, Qwen3Attention, GptOssAttention, ...) in Python ' +
  'from hyperparameters, so the file holds no layer graph to read; this loader reads Keras MultiHeadAttention and ' +
  'GroupedQueryAttention. Build the model with MultiHeadAttention({softcap, slidingWindow, attentionSinks, qkNorm}) ' +
  'and load its weights with setWeights';

/** UNSUPPORTED for a KerasHub model topology. */
export function kerasHubModelError(source: string, cls: string): AttentionError {
  return new AttentionError('UNSUPPORTED', `${source}: '${cls}' is a KerasHub model, which this loader does not ` +
    `read: ${WHY}`);
}

/** UNSUPPORTED for a KerasHub layer inside a Keras model. */
export function kerasHubLayerError(layer: string, cls: string): AttentionError {
  const name = cls.replace(PACKAGES, '');
  const hint = name === 'CachedMultiHeadAttention' ? ' (its config is MultiHeadAttention\'s plus a cache: save the ' +
    'model with keras.layers.MultiHeadAttention in its place)' : '';
  return new AttentionError('UNSUPPORTED', `Keras layer '${layer}' (${name}) is a KerasHub layer, which this loader ` +
    `does not read${hint}: ${WHY}`);
}
