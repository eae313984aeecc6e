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
 * and in both formats an attention layer's tensors given by keyword become its positional
 * inputs (layer_calls.ts), and Keras's MultiHeadAttention / GroupedQueryAttention configs
 * become this library's (layer_config.ts, attention.ts). Keys tfjs-layers would silently
 * misread (a LoRA rank, RMS scaling, grouped convolutions, keepdims pooling, masks passed
 * as model inputs or dropped by tfjs: mask_checks.ts) are refused with
 * AttentionError('UNSUPPORTED') naming the layer, and so are KerasHub models and layers
 * (keras_hub.ts says why); a topology that is not a Keras model at all is
 * AttentionError('IO'). This module walks the model: layers, their calls, inputs
 * and outputs; it also records the names a `.keras` weights file gives the layers
 * (weights.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {kerasHubModel, kerasHubModelError} from './keras_hub';
import {inputLayerShape, layerConfig} from './layer_config';
import {nodeData, tensorRef} from './layer_calls';
import {Call, checkMasks} from './mask_checks';
import {Dict, isDict, Json, MODEL_CLASSES, TopologyRewrite} from './topology_json';
import {recordSavedKey, WeightNaming} from './weights';

/** [[name, node, tensor], ...] from Keras 3's flat [name, node, tensor] for one input or output. */
function endpoints(v: Json, key: string, rewrite: TopologyRewrite): Json[] {
  if (tensorRef(v) != null) return [v];
  if (Array.isArray(v) && v.every((e) => tensorRef(e) != null)) return v;
  // Keras flattens dicts by key
  if (isDict(v)) return Object.keys(v).sort().map((k) => endpoints(v[k], key, rewrite)[0]);
  throw rewrite.io(`${key} must list [layer, node, tensor] entries, received ${show(v)}`);
}

/** The config of a Functional / Sequential model, rewritten. */
function modelConfig(className: string, config: Json, rewrite: TopologyRewrite): Dict {
  if (className === 'Sequential') {
    const layers = Array.isArray(config) ? config :
      isDict(config) && Array.isArray(config.layers) ? config.layers : null;
    if (layers == null) throw rewrite.io(`a Sequential config needs a layers list, received ${show(config)}`);
    const out = layers.map((l) => {
      if (!isDict(l)) throw rewrite.io(`a layer entry must be an object, received ${show(l)}`);
      return layerConfig(l, rewrite) as unknown as Dict;
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
    throw rewrite.io(`a ${className} config needs a layers list, received ${show(config)}`);
  }
  const used = new Map<string, number>();
  // tfjs counts a nested model's own node first: Keras's call n of a model used as a layer is tfjs's n + 1.
  const models = new Set(config.layers.filter((l) => isDict(l) && MODEL_CLASSES.includes(String(l.class_name)))
    .map((l) => String((l as Dict).name ?? (isDict((l as Dict).config) ? ((l as Dict).config as Dict).name : ''))));
  const shift = (ref: Json): Json => Array.isArray(ref) && models.has(String(ref[0]))
    ? [ref[0], (ref[1] as number) + 1, ...ref.slice(2)] : ref;
  const calls: Call[] = [];
  const layers = config.layers.map((l) => {
    if (!isDict(l)) throw rewrite.io(`a layer entry must be an object, received ${show(l)}`);
    const {class_name: cls, config: c} = layerConfig(l, rewrite);
    const name = typeof l.name === 'string' ? l.name : typeof c.name === 'string' ? c.name : null;
    if (name == null) throw rewrite.io(`a layer entry has no name: ${show(l)}`);
    recordSavedKey(String(l.class_name), name, used, rewrite.naming);
    if (cls === 'InputLayer') inputLayerShape(c);
    const nodes = Array.isArray(l.inbound_nodes) ? l.inbound_nodes : [];
    const keras = typeof l.class_name === 'string' ? l.class_name : cls;
    const inbound = nodes.map((n, i) => {
      const data = nodeData(n, name, keras, rewrite).map((d) => shift(d));
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
    input_layers: endpoints(config.input_layers, 'input_layers', rewrite).map(shift),
    output_layers: endpoints(config.output_layers, 'output_layers', rewrite).map(shift),
  };
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
  const rewrite = new TopologyRewrite(source, modelConfig);
  if (!isDict(modelTopology)) throw rewrite.io(`modelTopology must be an object, received ${show(modelTopology)}`);
  const top = isDict(modelTopology.model_config) ? modelTopology.model_config : modelTopology;
  const hub = kerasHubModel(top);
  if (hub != null) throw kerasHubModelError(source, hub);
  if (typeof top.class_name !== 'string' || !MODEL_CLASSES.includes(top.class_name)) {
    throw rewrite.io(`the topology is not a Keras model (class_name ${show(top.class_name)}; expected one of ` +
      `${MODEL_CLASSES.join(', ')})`);
  }
  const rewritten = {class_name: top.class_name, config: modelConfig(top.class_name, top.config, rewrite)};
  const registered = (tf.serialization.SerializationMap.getMap() as unknown as {classNameMap: Record<string, unknown>})
    .classNameMap;
  for (const name of classNames(rewritten)) {
    if (!(name in registered) && !known.includes(name)) {
      throw new AttentionError('UNSUPPORTED', `${source}: the class '${name}' has no tfjs equivalent (a Keras layer or ` +
        'object tfjs-layers does not implement); register one with tf.serialization.registerClass and pass it in customObjects');
    }
  }
  return {topology: rewritten, naming: rewrite.naming};
}
