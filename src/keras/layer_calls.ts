/**
 * A layer call of a Keras topology as tfjs's node data. Keras 3 writes a call as {args,
 * kwargs} holding {__keras_tensor__: keras_history} objects, tf.keras 2 as [[layer, node,
 * tensor, kwargs?], ...]; tfjs-layers reads [[layer, node, tensor, kwargs], ...], every
 * input positional. An attention layer's tensors given by keyword (tf.keras 2 writes
 * `[["q", 0, 0, {"value": ["v", 0, 0]}]]`) become its positional inputs [query, value, key];
 * a tensor passed by any other keyword (a mask given as a model input, say) is refused with
 * AttentionError('UNSUPPORTED'), since tfjs graphs cannot pass it.
 */
import {AttentionError, show} from '../core/errors';
import {Dict, isDict, Json, TopologyRewrite} from './topology_json';

/** The Keras MultiHeadAttention call's parameters, in order (positional arguments map onto them). */
const ATTENTION_PARAMS = ['query', 'value', 'key', 'query_mask', 'value_mask', 'key_mask', 'attention_mask',
  'return_attention_scores', 'training', 'use_causal_mask'];
export const ATTENTION_TENSORS = ['query', 'value', 'key'];

/** A tensor reference [layer, node, tensor] in either format, or null when `v` is not one. */
export function tensorRef(v: Json): [string, number, number] | null {
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
export function tensorRefs(v: Json): [string, number, number][] | null {
  const one = tensorRef(v);
  if (one != null) return [one];
  if (Array.isArray(v) && v.length > 0) {
    const all = v.map(tensorRefs);
    if (all.every((r) => r != null)) {
      return ([] as [string, number, number][]).concat(...all as [string, number, number][][]);
    }
  }
  return null;
}

/** One call of a layer as tfjs's node data: [[layer, node, tensor, kwargs], ...]. */
export function nodeData(node: Json, layer: string, className: string, rewrite: TopologyRewrite): Json[] {
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
        throw rewrite.io(`layer '${layer}': an inbound node entry must be [layer, node, tensor, kwargs?], received ${show(entry)}`);
      }
      args.push(entry.slice(0, 3));
      if (isDict(entry[3])) kwargs = {...kwargs, ...entry[3]};
    }
    args = [args.length === 1 ? args[0] : args];
  } else {
    throw rewrite.io(`layer '${layer}': an inbound node must be a list or {args, kwargs}, received ${show(node)}`);
  }
  let inputs: [string, number, number][];
  const rest: Dict = {};
  const unsupportedTensor = (key: string) => new AttentionError('UNSUPPORTED', `Keras layer '${layer}' (${className}): ` +
    `its call takes the tensor '${key}' by keyword, which tfjs graphs cannot pass` +
    (key.endsWith('mask') ? '; use padding masks that propagate (Embedding(mask_zero=True)) or use_causal_mask' : ''));
  if (className === 'MultiHeadAttention' || className === 'GroupedQueryAttention') {
    const named: Dict = {};
    const flat = args.length === 1 && tensorRefs(args[0]) != null && tensorRef(args[0]) == null ?
      args[0] as Json[] : args;
    flat.forEach((a, i) => { named[ATTENTION_PARAMS[i] ?? `argument ${i}`] = a; });
    Object.assign(named, kwargs);
    inputs = [];
    for (const key of ATTENTION_TENSORS) {
      if (named[key] == null) continue;
      const ref = tensorRef(named[key]);
      if (ref == null) throw rewrite.io(`layer '${layer}': its '${key}' is not a tensor reference: ${show(named[key])}`);
      inputs.push(ref);
    }
    if (inputs.length === 0) throw rewrite.io(`layer '${layer}': its call has no query`);
    if (named.key != null && named.value == null) throw rewrite.io(`layer '${layer}': its call has a key but no value`);
    for (const [key, value] of Object.entries(named)) {
      if (ATTENTION_TENSORS.includes(key) || value == null) continue;
      if (tensorRefs(value) != null) throw unsupportedTensor(key);
      if (!ATTENTION_PARAMS.includes(key)) throw rewrite.io(`layer '${layer}': unknown call argument '${key}'`);
      rest[key] = value;
    }
  } else {
    inputs = [];
    for (const a of args) {
      const refs = tensorRefs(a);
      if (refs == null) throw rewrite.io(`layer '${layer}': a positional call argument is not a tensor: ${show(a)}`);
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
