/**
 * A Keras model topology, as Keras 3 or tf.keras 2 writes it into a converted model.json,
 * rewritten in memory into the form tfjs-layers 4.22 deserializes (tf.keras 2's, which
 * tfjs-layers was written against). What changes:
 *
 *   Keras 3                                        tfjs-layers
 *   InputLayer {batch_shape}                       {batch_input_shape}
 *   Sequential [InputLayer, first, ...]            [first {batch_input_shape}, ...]
 *   inbound_nodes [{args, kwargs}] holding         inbound_nodes [[[layer, node, tensor, kwargs], ...]]
 *     {__keras_tensor__: keras_history}
 *   {module, class_name, config, registered_name}  {class_name, config}
 *   dtype: {class_name: 'DTypePolicy', ...}        dtype: 'float32'
 *   L1 / L2 regularizers                           L1L2
 *   input_layers [name, 0, 0] (one input)          [[name, 0, 0]]
 *
 * and in both formats an attention layer's tensors given by keyword (tf.keras 2 writes
 * `[["q", 0, 0, {"value": ["v", 0, 0]}]]`) become its positional inputs [query, value,
 * key], and Keras's MultiHeadAttention / GroupedQueryAttention configs become this
 * library's (attention.ts). Keys tfjs-layers would silently misread (a LoRA rank, RMS
 * scaling, grouped convolutions, keepdims pooling, masks passed as model inputs) are
 * refused with AttentionError('UNSUPPORTED') naming the layer; a topology that is not a
 * Keras model at all is AttentionError('IO').
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {MultiHeadAttention} from '../layers/multi_head_attention';
import {attentionConfigFromKeras, isOwnAttentionConfig, KERAS_ATTENTION_CLASSES} from './attention';
import {WeightNaming} from './weights';

type Json = null | boolean | number | string | Json[] | {[key: string]: Json};
type Dict = {[key: string]: Json};

const isDict = (v: unknown): v is Dict => v != null && typeof v === 'object' && !Array.isArray(v);

/** Keras 3's serialized-object bookkeeping, dropped everywhere. */
const BOOKKEEPING = ['module', 'registered_name', 'build_config', 'compile_config', 'shared_object_id'];

/** Keys tfjs has no use for and that change nothing when their companion key is off (refused below when it is on). */
const IGNORED_KEYS = ['lora_alpha', 'synchronized', 'renorm_clipping', 'renorm_momentum'];

/** The model classes whose config is itself a topology. */
const MODEL_CLASSES = ['Functional', 'Model', 'Sequential'];

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

/** The Keras MultiHeadAttention call's parameters, in order (positional arguments map onto them). */
const ATTENTION_PARAMS = ['query', 'value', 'key', 'query_mask', 'value_mask', 'key_mask', 'attention_mask',
  'return_attention_scores', 'training', 'use_causal_mask'];
const ATTENTION_TENSORS = ['query', 'value', 'key'];

/** Layers whose output carries their first input's padding mask in tfjs (supportsMasking, default computeMask). */
const PASS_MASK = ['Dropout', 'Dense', 'Activation', 'LayerNormalization', 'BatchNormalization', 'TimeDistributed',
  'LeakyReLU', 'ReLU', 'PReLU', 'ELU', 'ThresholdedReLU', 'Softmax', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
  'SpatialDropout1D', 'MultiHeadAttention', 'GroupedQueryAttention'];
/** Merges: the output is masked where any input is. */
const MERGE_MASK = ['Add', 'Multiply', 'Average', 'Maximum', 'Minimum', 'Concatenate'];
/** Recurrent layers: the mask goes on only with return_sequences. */
const RNN_MASK = ['LSTM', 'GRU', 'SimpleRNN', 'Bidirectional'];

/** Whether a layer call's output carries a padding mask in tfjs, from its inputs' (a static view of computeMask). */
function outputMasked(className: string, config: Dict, inputsMasked: boolean[]): boolean {
  if (className === 'Embedding') return config.mask_zero === true;
  if (className === 'Masking') return true;
  if (PASS_MASK.includes(className)) return inputsMasked[0] === true;
  if (MERGE_MASK.includes(className)) return inputsMasked.some((m) => m);
  if (RNN_MASK.includes(className)) {
    const sequences = className === 'Bidirectional' && isDict(config.layer) && isDict(config.layer.config)
      ? config.layer.config.return_sequences : config.return_sequences;
    return sequences === true && inputsMasked[0] === true;
  }
  return false;
}

/** Where in the topology a problem is, for messages. */
class Where {
  /** Layer names the stored weights use for layers tfjs names otherwise. */
  readonly naming: WeightNaming = {wrapped: {}, saved: {}};
  constructor(readonly source: string) {}
  io(message: string): AttentionError {
    return new AttentionError('IO', `${this.source}: ${message}`);
  }
}

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
function dropDefault(config: Dict, key: string, inert: (v: Json) => boolean, layer: string, className: string, why: string) {
  if (!(key in config)) return;
  if (!inert(config[key])) {
    throw new AttentionError('UNSUPPORTED',
      `Keras layer '${layer}' (${className}): ${key} ${show(config[key])} is not supported: ${why}`);
  }
  delete config[key];
}

/** A layer's {class_name, config} in tfjs form (wrapped layers and attention configs included). */
function layerConfig(entry: Dict, where: Where): {class_name: string; config: Dict} {
  const className = entry.class_name;
  const raw = entry.config;
  if (typeof className !== 'string' || !isDict(raw)) {
    throw where.io(`a layer entry needs a class_name and a config object, received ${show(entry)}`);
  }
  const name = typeof raw.name === 'string' ? raw.name : typeof entry.name === 'string' ? entry.name : className;
  if (MODEL_CLASSES.includes(className)) return {class_name: className, config: modelConfig(className, raw, where)};
  const config: Dict = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'layer' || k === 'backward_layer') continue; // wrappers, below
    config[k] = k === 'dtype' ? dtypeOf(v, name) : plain(v, name);
  }
  if ((KERAS_ATTENTION_CLASSES as readonly string[]).includes(className) && !isOwnAttentionConfig(className, raw)) {
    // Naming the class (not its string) keeps it, and its registration, in a tree-shaken bundle.
    return {class_name: MultiHeadAttention.className, config: attentionConfigFromKeras(className, config, name) as Dict};
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
    const inner = layerConfig(raw.layer, where);
    // tfjs names a TimeDistributed's weights after the wrapper, Keras after the inner layer.
    if (className === 'TimeDistributed' && typeof inner.config.name === 'string') where.naming.wrapped[inner.config.name] = name;
    // Keras 3 writes a Bidirectional's forward layer, already named 'forward_<name>'; tfjs
    // names the layers it builds 'forward_' + and 'backward_' + the wrapped layer's name.
    if (className === 'Bidirectional' && typeof inner.config.name === 'string' && inner.config.name.startsWith('forward_')) {
      inner.config.name = inner.config.name.slice('forward_'.length);
    }
    config.layer = inner as unknown as Dict;
    if (isDict(raw.backward_layer)) checkBackwardLayer(inner, layerConfig(raw.backward_layer, where), name);
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

/** A tensor reference [layer, node, tensor] in either format, or null when `v` is not one. */
function tensorRef(v: Json): [string, number, number] | null {
  if (isDict(v) && v.class_name === '__keras_tensor__' && isDict(v.config)) {
    const h = v.config.keras_history;
    if (Array.isArray(h) && typeof h[0] === 'string' && typeof h[1] === 'number' && typeof h[2] === 'number') {
      return [h[0], h[1], h[2]];
    }
    return null;
  }
  if (Array.isArray(v) && v.length === 3 && typeof v[0] === 'string' && Number.isInteger(v[1]) &&
      Number.isInteger(v[2])) {
    return [v[0], v[1] as number, v[2] as number];
  }
  return null;
}

/** The tensor references in `v`, in order (lists flattened), or null when `v` holds none. */
function tensorRefs(v: Json): [string, number, number][] | null {
  const one = tensorRef(v);
  if (one != null) return [one];
  if (Array.isArray(v) && v.length > 0) {
    const all = v.map(tensorRefs);
    if (all.every((r) => r != null)) return ([] as [string, number, number][]).concat(...all as [string, number, number][][]);
  }
  return null;
}

/** One call of a layer as tfjs's node data: [[layer, node, tensor, kwargs], ...]. */
function nodeData(node: Json, layer: string, className: string, where: Where): Json[] {
  let args: Json[];
  let kwargs: Dict;
  if (isDict(node) && ('args' in node || 'kwargs' in node)) { // Keras 3
    args = Array.isArray(node.args) ? node.args : [];
    kwargs = isDict(node.kwargs) ? node.kwargs : {};
  } else if (Array.isArray(node)) { // tf.keras 2: [[layer, node, tensor, kwargs?], ...]
    args = [];
    kwargs = {};
    for (const entry of node) {
      if (!Array.isArray(entry) || tensorRef(entry.slice(0, 3)) == null) {
        throw where.io(`layer '${layer}': an inbound node entry must be [layer, node, tensor, kwargs?], received ${show(entry)}`);
      }
      args.push(entry.slice(0, 3));
      if (isDict(entry[3])) kwargs = {...kwargs, ...entry[3]};
    }
    args = [args.length === 1 ? args[0] : args];
  } else {
    throw where.io(`layer '${layer}': an inbound node must be a list or {args, kwargs}, received ${show(node)}`);
  }
  let inputs: [string, number, number][];
  const rest: Dict = {};
  const unsupportedTensor = (key: string) => new AttentionError('UNSUPPORTED', `Keras layer '${layer}' (${className}): ` +
    `its call takes the tensor '${key}' by keyword, which tfjs graphs cannot pass` +
    (key.endsWith('mask') ? '; use padding masks that propagate (Embedding(mask_zero=True)) or use_causal_mask' : ''));
  if (className === 'MultiHeadAttention' || className === 'GroupedQueryAttention') {
    const named: Dict = {};
    const flat = args.length === 1 && tensorRefs(args[0]) != null && tensorRef(args[0]) == null ? args[0] as Json[] : args;
    flat.forEach((a, i) => { named[ATTENTION_PARAMS[i] ?? `argument ${i}`] = a; });
    Object.assign(named, kwargs);
    inputs = [];
    for (const key of ATTENTION_TENSORS) {
      if (named[key] == null) continue;
      const ref = tensorRef(named[key]);
      if (ref == null) throw where.io(`layer '${layer}': its '${key}' is not a tensor reference: ${show(named[key])}`);
      inputs.push(ref);
    }
    if (inputs.length === 0) throw where.io(`layer '${layer}': its call has no query`);
    if (named.key != null && named.value == null) throw where.io(`layer '${layer}': its call has a key but no value`);
    for (const [key, value] of Object.entries(named)) {
      if (ATTENTION_TENSORS.includes(key) || value == null) continue;
      if (tensorRefs(value) != null) throw unsupportedTensor(key);
      if (!ATTENTION_PARAMS.includes(key)) throw where.io(`layer '${layer}': unknown call argument '${key}'`);
      rest[key] = value;
    }
  } else {
    inputs = [];
    for (const a of args) {
      const refs = tensorRefs(a);
      if (refs == null) throw where.io(`layer '${layer}': a positional call argument is not a tensor: ${show(a)}`);
      inputs.push(...refs);
    }
    for (const [key, value] of Object.entries(kwargs)) {
      if (value == null) continue;
      if (tensorRefs(value) != null) throw unsupportedTensor(key);
      rest[key] = value;
    }
  }
  return inputs.map(([l, n, t]) => [l, n, t, rest]);
}

/** [[name, node, tensor], ...] from Keras 3's flat [name, node, tensor] for one input or output. */
function endpoints(v: Json, key: string, where: Where): Json[] {
  if (tensorRef(v) != null) return [v];
  if (Array.isArray(v) && v.every((e) => tensorRef(e) != null)) return v;
  if (isDict(v)) return Object.keys(v).sort().map((k) => endpoints(v[k], key, where)[0]); // Keras flattens dicts by key
  throw where.io(`${key} must list [layer, node, tensor] entries, received ${show(v)}`);
}

/** The config of a Functional / Sequential model, rewritten. */
function modelConfig(className: string, config: Json, where: Where): Dict {
  if (className === 'Sequential') {
    const layers = Array.isArray(config) ? config : isDict(config) && Array.isArray(config.layers) ? config.layers : null;
    if (layers == null) throw where.io(`a Sequential config needs a layers list, received ${show(config)}`);
    const out = layers.map((l) => {
      if (!isDict(l)) throw where.io(`a layer entry must be an object, received ${show(l)}`);
      return layerConfig(l, where) as unknown as Dict;
    });
    // Keras 3 starts with an InputLayer; tf.keras 2 (and tfjs) put its shape on the first layer.
    if (out.length > 0 && out[0].class_name === 'InputLayer') {
      const input = (out.shift() as {config: Dict}).config;
      if (out.length > 0) {
        const first = out[0].config as Dict;
        if (first.batch_input_shape == null) first.batch_input_shape = input.batch_input_shape ?? input.batch_shape;
        if (input.dtype != null && first.dtype == null) first.dtype = input.dtype;
      }
    }
    for (const l of out) inputLayerShape(l.config as Dict);
    const name = isDict(config) && typeof config.name === 'string' ? config.name : 'sequential';
    return {name, layers: out};
  }
  if (!isDict(config) || !Array.isArray(config.layers)) {
    throw where.io(`a ${className} config needs a layers list, received ${show(config)}`);
  }
  const used = new Map<string, number>();
  // tfjs counts a nested model's own node first: Keras's call n of a model used as a layer is tfjs's n + 1.
  const models = new Set(config.layers.filter((l) => isDict(l) && MODEL_CLASSES.includes(String(l.class_name)))
    .map((l) => String((l as Dict).name ?? (isDict((l as Dict).config) ? ((l as Dict).config as Dict).name : ''))));
  const shift = (ref: Json): Json => Array.isArray(ref) && models.has(String(ref[0]))
    ? [ref[0], (ref[1] as number) + 1, ...ref.slice(2)] : ref;
  const calls: Call[] = [];
  const layers = config.layers.map((l) => {
    if (!isDict(l)) throw where.io(`a layer entry must be an object, received ${show(l)}`);
    const {class_name: cls, config: c} = layerConfig(l, where);
    const name = typeof l.name === 'string' ? l.name : typeof c.name === 'string' ? c.name : null;
    if (name == null) throw where.io(`a layer entry has no name: ${show(l)}`);
    savedName(String(l.class_name), name, used, where.naming);
    if (cls === 'InputLayer') inputLayerShape(c);
    const nodes = Array.isArray(l.inbound_nodes) ? l.inbound_nodes : [];
    const keras = typeof l.class_name === 'string' ? l.class_name : cls;
    const inbound = nodes.map((n, i) => {
      const data = nodeData(n, name, keras, where).map((d) => shift(d));
      calls.push({layer: name, className: keras, config: isDict(l.config) ? l.config : {},
        output: `${name}/${models.has(name) ? i + 1 : i}/0`, inputs: data.map((d) => (d as Json[]).slice(0, 3).join('/'))});
      return data;
    });
    return {class_name: cls, config: c, name, inbound_nodes: inbound} as Dict;
  });
  checkMasks(calls);
  return {
    name: typeof config.name === 'string' ? config.name : 'model',
    layers,
    input_layers: endpoints(config.input_layers, 'input_layers', where).map(shift),
    output_layers: endpoints(config.output_layers, 'output_layers', where).map(shift),
  };
}

/** One layer call of a functional model, for the mask analysis: tensors as 'layer/node/tensor'. */
interface Call {
  layer: string;
  className: string;
  config: Dict;
  output: string;
  inputs: string[];
}

/** Keras layers that use an input mask where tfjs' layer of the same name ignores it. */
const MASK_IGNORED = ['GlobalAveragePooling1D'];

/**
 * Refuses what would make a padding mask silently differ from Keras: tfjs' executor gives
 * a layer only its first input's mask (so an attention value or key that carries its own
 * mask would have its padded keys attended), and some tfjs layers ignore a mask Keras
 * uses. Which tensors carry masks is found over the whole graph (a shared layer's later
 * calls may read layers listed after it), to a fixed point.
 */
function checkMasks(calls: Call[]): void {
  const masked = new Set<string>();
  for (let changed = true; changed;) {
    changed = false;
    for (const c of calls) {
      if (!masked.has(c.output) && outputMasked(c.className, c.config, c.inputs.map((t) => masked.has(t)))) {
        masked.add(c.output);
        changed = true;
      }
    }
  }
  for (const c of calls) {
    const who = `Keras layer '${c.layer}' (${c.className})`;
    if ((KERAS_ATTENTION_CLASSES as readonly string[]).includes(c.className)) {
      c.inputs.forEach((t, i) => {
        if (i > 0 && t !== c.inputs[0] && masked.has(t)) {
          throw new AttentionError('UNSUPPORTED', `${who}: its ${ATTENTION_TENSORS[i]} carries a padding mask, which ` +
            'tfjs-layers\' predict / fit would not pass on (a layer gets only its first input\'s mask), so padded keys ' +
            'would be attended');
        }
      });
    }
    if (MASK_IGNORED.includes(c.className) && masked.has(c.inputs[0])) {
      throw new AttentionError('UNSUPPORTED', `${who}: its input carries a padding mask, which Keras uses (a mean over ` +
        'the unpadded steps) and tfjs ignores (a mean over all steps)');
    }
  }
}

/** Keras's to_snake_case of a class name: MultiHeadAttention -> multi_head_attention, Conv1D -> conv1d. */
function snakeCase(className: string): string {
  return className.replace(/\W+/g, '').replace(/(.)([A-Z][a-z]+)/g, '$1_$2').replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

/** Records the key a `.keras` weights file gives this layer: its snake-case class name, then _1, _2, ... */
function savedName(className: string, name: string, used: Map<string, number>, naming: WeightNaming) {
  const base = snakeCase(className);
  const n = used.get(base);
  used.set(base, n == null ? 0 : n + 1);
  naming.saved[n == null ? base : `${base}_${n + 1}`] = name;
}

/** Keras 3's InputLayer batch_shape as tfjs's batch_input_shape (in place). */
function inputLayerShape(config: Dict) {
  if (config.batch_shape != null && config.batch_input_shape == null) config.batch_input_shape = config.batch_shape;
  delete config.batch_shape;
  delete config.ragged;
  delete config.optional;
}

/** Every class name in a rewritten topology (layers, wrapped layers, initializers, ...). */
function classNames(v: Json, out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) v.forEach((e) => classNames(e, out));
  else if (isDict(v)) {
    if (typeof v.class_name === 'string') out.add(v.class_name);
    Object.values(v).forEach((e) => classNames(e, out));
  }
  return out;
}

/** A rewritten topology, and the layer names its stored weights use in place of tfjs's. */
export interface Rewritten {
  /** The model config, {class_name, config}, in the form tfjs-layers deserializes. */
  topology: Dict;
  naming: WeightNaming;
}

/**
 * A converted Keras model's `modelTopology` rewritten for tfjs-layers. `known` lists
 * class names the caller registers (customObjects); any other class tfjs does not have
 * is UNSUPPORTED.
 */
export function rewriteTopology(modelTopology: unknown, source: string, known: readonly string[] = []): Rewritten {
  const where = new Where(source);
  if (!isDict(modelTopology)) throw where.io(`modelTopology must be an object, received ${show(modelTopology)}`);
  const top = isDict(modelTopology.model_config) ? modelTopology.model_config : modelTopology;
  if (typeof top.class_name !== 'string' || !MODEL_CLASSES.includes(top.class_name)) {
    throw where.io(`the topology is not a Keras model (class_name ${show(top.class_name)}; expected one of ` +
      `${MODEL_CLASSES.join(', ')})`);
  }
  const rewritten = {class_name: top.class_name, config: modelConfig(top.class_name, top.config, where)};
  const registered = (tf.serialization.SerializationMap.getMap() as unknown as {classNameMap: Record<string, unknown>})
    .classNameMap;
  for (const name of classNames(rewritten)) {
    if (!(name in registered) && !known.includes(name)) {
      throw new AttentionError('UNSUPPORTED', `${source}: the class '${name}' has no tfjs equivalent (a Keras layer or ` +
        'object tfjs-layers does not implement); register one with tf.serialization.registerClass and pass it in customObjects');
    }
  }
  return {topology: rewritten, naming: where.naming};
}
