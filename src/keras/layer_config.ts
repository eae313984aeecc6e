/**
 * One Keras layer entry's {class_name, config} in the form tfjs-layers deserializes: Keras
 * 3's serialized objects reduced to {class_name, config}, DTypePolicy read as a dtype,
 * classes and activations renamed where tfjs names them otherwise, wrapped layers mapped
 * too, and Keras's attention configs turned into this library's (attention.ts). A key tfjs
 * would silently misread (a LoRA rank, RMS scaling, grouped convolutions, keepdims pooling,
 * ...) and a KerasHub layer (keras_hub.ts) are refused with AttentionError('UNSUPPORTED')
 * naming the layer.
 */
import {AttentionError, show} from '../core/errors';
import {MultiHeadAttention} from '../layers/multi_head_attention';
import {attentionConfigFromKeras, isOwnAttentionConfig, KERAS_ATTENTION_CLASSES} from './attention';
import {isKerasHubLayer, kerasHubLayerError} from './keras_hub';
import {Dict, isDict, Json, MODEL_CLASSES, TopologyRewrite} from './topology_json';

/** Keras 3's serialized-object bookkeeping, dropped everywhere. */
const BOOKKEEPING = ['module', 'registered_name', 'build_config', 'compile_config', 'shared_object_id'];

/** Keys tfjs has no use for and that change nothing when their companion key is off (refused below when it is on). */
const IGNORED_KEYS = ['lora_alpha', 'synchronized', 'renorm_clipping', 'renorm_momentum'];

/** Keras 3 class names that tfjs-layers knows by another name. */
const CLASS_ALIASES: Record<string, string> = {
  L1: 'L1L2', L2: 'L1L2', L1L2: 'L1L2', LecunNormal: 'LeCunNormal', LecunUniform: 'LeCunUniform',
};

/** Keras activation names tfjs computes the same way (under its own name when it differs). */
const ACTIVATIONS: Record<string, string> = {
  linear: 'linear', relu: 'relu', relu6: 'relu6', elu: 'elu', selu: 'selu', sigmoid: 'sigmoid', softplus: 'softplus',
  softsign: 'softsign', tanh: 'tanh', softmax: 'softmax', log_softmax: 'log_softmax', gelu: 'gelu', mish: 'mish',
  swish: 'swish', silu: 'swish',
};

/** A dtype, or Keras 3's DTypePolicy object, as the dtype tfjs computes in. */
function dtypeOf(value: Json, layer: string): Json {
  if (!isDict(value)) return value;
  const name = isDict(value.config) ? value.config.name : null;
  if (typeof name !== 'string') return 'float32';
  // mixed_float16 / mixed_bfloat16 keep float32 variables; tfjs computes in float32.
  if (name === 'float32' || name.startsWith('mixed_')) return 'float32';
  if (name === 'int32' || name === 'bool') return name;
  throw new AttentionError('UNSUPPORTED', `Keras layer '${layer}': dtype policy '${name}' is not supported ` +
    '(tfjs layers compute in float32)');
}

/**
 * A config value with Keras 3's serialized objects reduced to {class_name, config}
 * (recursively), regularizer classes renamed for tfjs and DTypePolicy read as a dtype.
 */
function plain(value: Json, layer: string): Json {
  if (Array.isArray(value)) return value.map((v) => plain(v, layer));
  if (!isDict(value)) return value;
  if (typeof value.class_name === 'string' && 'config' in value) {
    if (/DTypePolicy$/.test(value.class_name)) return dtypeOf(value, layer);
    const className = CLASS_ALIASES[value.class_name] ?? value.class_name;
    let config = plain(value.config, layer);
    if (className === 'L1L2' && isDict(config)) config = {l1: config.l1 ?? 0, l2: config.l2 ?? 0};
    // Keras 3's plain normal draw; tfjs has only the truncated one (an initializer matters only for re-initialising).
    if (isDict(config) && config.distribution === 'untruncated_normal') config = {...config, distribution: 'normal'};
    return {class_name: className, config};
  }
  const out: Dict = {};
  for (const [k, v] of Object.entries(value)) {
    if (!BOOKKEEPING.includes(k)) out[k] = plain(v, layer);
  }
  return out;
}

/** Throws UNSUPPORTED unless `config[key]` is absent or inert; the key is dropped either way. */
function dropDefault(config: Dict, key: string, inert: (v: Json) => boolean, layer: string,
    className: string, why: string) {
  if (!(key in config)) return;
  if (!inert(config[key])) {
    throw new AttentionError('UNSUPPORTED',
      `Keras layer '${layer}' (${className}): ${key} ${show(config[key])} is not supported: ${why}`);
  }
  delete config[key];
}

/** A layer's {class_name, config} in tfjs form (wrapped layers and attention configs included). */
export function layerConfig(entry: Dict, rewrite: TopologyRewrite): {class_name: string; config: Dict} {
  const className = entry.class_name;
  const raw = entry.config;
  if (typeof className !== 'string' || !isDict(raw)) {
    throw rewrite.io(`a layer entry needs a class_name and a config object, received ${show(entry)}`);
  }
  const name = typeof raw.name === 'string' ? raw.name : typeof entry.name === 'string' ? entry.name : className;
  if (isKerasHubLayer(entry)) throw kerasHubLayerError(name, className);
  if (MODEL_CLASSES.includes(className)) {
    return {class_name: className, config: rewrite.modelConfig(className, raw, rewrite)};
  }
  const config: Dict = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'layer' || k === 'backward_layer') continue; // wrappers, below
    config[k] = k === 'dtype' ? dtypeOf(v, name) : plain(v, name);
  }
  if ((KERAS_ATTENTION_CLASSES as readonly string[]).includes(className) && !isOwnAttentionConfig(className, raw)) {
    // Naming the class (not its string) keeps it, and its registration, in a tree-shaken bundle.
    return {class_name: MultiHeadAttention.className,
      config: attentionConfigFromKeras(className, config, name) as Dict};
  }
  for (const key of IGNORED_KEYS) delete config[key];
  dropDefault(config, 'lora_rank', (v) => v == null || v === 0, name, className, 'LoRA is not implemented; merge the LoRA weights first');
  dropDefault(config, 'rms_scaling', (v) => v == null || v === false, name, className, 'tfjs has no RMS normalization');
  dropDefault(config, 'groups', (v) => v == null || v === 1, name, className, 'tfjs has no grouped convolutions');
  dropDefault(config, 'keepdims', (v) => v == null || v === false, name, className, 'tfjs pooling always drops the axis');
  dropDefault(config, 'renorm', (v) => v == null || v === false, name, className, 'tfjs has no batch renormalization');
  dropDefault(config, 'quantization_config', (v) => v == null, name, className, 'quantized layers are not supported');
  for (const key of ['activation', 'recurrent_activation']) {
    const a = config[key];
    if (typeof a !== 'string') continue;
    if (!(a in ACTIVATIONS)) {
      throw new AttentionError('UNSUPPORTED', `Keras layer '${name}' (${className}): ${key} '${a}' has no tfjs ` +
        `equivalent (tfjs computes ${Object.keys(ACTIVATIONS).join(', ')} as Keras does)`);
    }
    config[key] = ACTIVATIONS[a];
  }
  if (config.padding === 'causal') {
    throw new AttentionError('UNSUPPORTED', `Keras layer '${name}' (${className}): padding 'causal' is not supported ` +
      'by tfjs convolutions');
  }
  if (className === 'LeakyReLU' && 'negative_slope' in config) {
    config.alpha = config.negative_slope; // Keras 3's name for tfjs' alpha
    delete config.negative_slope;
  }
  if (className === 'GRU') {
    dropDefault(config, 'reset_after', (v) => v == null || v === false, name, className,
      'tfjs GRU has only reset_after=False (Keras 3 defaults to True)');
  }
  if (className === 'ReLU') {
    dropDefault(config, 'negative_slope', (v) => v == null || v === 0, name, className, 'tfjs ReLU has no negative slope');
    dropDefault(config, 'threshold', (v) => v == null || v === 0, name, className, 'tfjs ReLU has no threshold');
  }
  if (isDict(raw.layer)) {
    const inner = layerConfig(raw.layer, rewrite);
    // tfjs names a TimeDistributed's weights after the wrapper, Keras after the inner layer.
    if (className === 'TimeDistributed' && typeof inner.config.name === 'string') {
      rewrite.naming.wrapped[inner.config.name] = name;
    }
    // Keras 3 writes a Bidirectional's forward layer, already named 'forward_<name>'; tfjs
    // names the layers it builds 'forward_' + and 'backward_' + the wrapped layer's name.
    if (className === 'Bidirectional' && typeof inner.config.name === 'string' && inner.config.name.startsWith('forward_')) {
      inner.config.name = inner.config.name.slice('forward_'.length);
    }
    config.layer = inner as unknown as Dict;
    if (isDict(raw.backward_layer)) checkBackwardLayer(inner, layerConfig(raw.backward_layer, rewrite), name);
  }
  return {class_name: className, config};
}

/**
 * tfjs' Bidirectional builds its backward layer from the forward one (go_backwards
 * flipped); Keras 3 writes it out. It must be that mirror, or it cannot be built here.
 */
function checkBackwardLayer(forward: {class_name: string; config: Dict}, backward: {class_name: string; config: Dict},
                            name: string) {
  const strip = (c: Dict) => {
    const {name: _n, go_backwards: _g, ...rest} = c;
    return JSON.stringify(rest, Object.keys(rest).sort());
  };
  if (forward.class_name !== backward.class_name || strip(forward.config) !== strip(backward.config) ||
      backward.config.go_backwards === forward.config.go_backwards) {
    throw new AttentionError('UNSUPPORTED', `Keras layer '${name}' (Bidirectional): its backward_layer differs from ` +
      'its forward layer run backwards; tfjs builds only that mirror');
  }
}

/** Keras 3's InputLayer batch_shape as tfjs's batch_input_shape (in place). */
export function inputLayerShape(config: Dict) {
  if (config.batch_shape != null && config.batch_input_shape == null) config.batch_input_shape = config.batch_shape;
  delete config.batch_shape;
  delete config.ragged;
  delete config.optional;
}
