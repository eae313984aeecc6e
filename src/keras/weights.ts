/**
 * Which stored weight goes into which weight of a model built from a Keras topology.
 *
 * Three writers name the same weight three ways:
 *
 *   tf.keras 2 converter     mha/query/kernel            lstm/lstm_cell/kernel
 *   Keras 3 converter        mha/query/kernel            forward_lstm/lstm_cell/kernel (a
 *                            Bidirectional's inner layers without the wrapper's name)
 *   Keras 3 `.keras` paths   layers/mha/_query_dense/vars/0   (a layer's n-th variable)
 *
 * and the converters list weights in path order, not layer order. So weights are matched
 * by name, never by position in the manifest:
 *
 *   1. Both sides are normalised to tokens: `:0` dropped, leading `_` stripped, the
 *      bookkeeping tokens (`layers`, `vars`, `layer_checkpoint_dependencies`) and RNN cell
 *      tokens (`lstm_cell`, `cell`, ...) dropped, and Keras 3's attention attribute names
 *      (`query_dense`, ..., `output_dense`, use_gate's `_gate_dense`) read as the sublayer
 *      names (`query`, ..., `attention_output`, `gate`). The topology says what else to
 *      rename (WeightNaming): a `.keras` path names a layer by its class
 *      (`layers/multi_head_attention_1/...`), and tfjs names a TimeDistributed's weights
 *      after the wrapper, Keras after the inner layer. A `.keras` Bidirectional's
 *      `forward_layer` / `backward_layer` is the tfjs layer named `forward_<name>` /
 *      `backward_<name>`.
 *   2. A stored name whose last token is a number n names the n-th variable of a group
 *      (a layer, or an attention sublayer): the model weights whose other tokens end with
 *      the stored prefix, in the order the layer creates them (which is Keras's order).
 *   3. Any other stored name matches the model weight with equal tokens, or else the one
 *      model weight whose tokens end with the stored ones (or the reverse); shapes
 *      settle a tie.
 *
 * A stored weight with no target, a model weight left without one, two stored weights for
 * one target, and a shape that differs are each an AttentionError('IO') naming the weight.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';

const BOOKKEEPING = new Set(['layers', 'vars', 'layer_checkpoint_dependencies']);
const CELL = /^(lstm_cell|gru_cell|simple_rnn_cell|cell)(_\d+)?$/;
const ATTENTION_ATTRIBUTES: Record<string, string> = {
  query_dense: 'query', key_dense: 'key', value_dense: 'value', output_dense: 'attention_output',
  gate_dense: 'gate', // use_gate's EinsumDense: `_gate_dense` (no public property), named `gate`
};

/** Layer names the stored weights use for layers the model names otherwise, from the topology. */
export interface WeightNaming {
  /** A wrapped layer's name -> the wrapper's (tfjs names a TimeDistributed's weights after the wrapper). */
  wrapped: Record<string, string>;
  /** A `.keras` path's layer key (the snake-case class name, made unique: dense, dense_1, ...) -> the layer's name. */
  saved: Record<string, string>;
}

const NO_NAMING: WeightNaming = {wrapped: {}, saved: {}};

/** Keras's to_snake_case of a class name: MultiHeadAttention -> multi_head_attention, Conv1D -> conv1d. */
function snakeCase(className: string): string {
  return className.replace(/\W+/g, '').replace(/(.)([A-Z][a-z]+)/g, '$1_$2').replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

/** Records the key a `.keras` weights file gives this layer: its snake-case class name, then _1, _2, ... */
export function recordSavedKey(className: string, name: string, used: Map<string, number>, naming: WeightNaming): void {
  const base = snakeCase(className);
  const n = used.get(base);
  used.set(base, n == null ? 0 : n + 1);
  naming.saved[n == null ? base : `${base}_${n + 1}`] = name;
}

/** A weight name as comparable tokens (see the module comment, step 1). */
export function weightTokens(name: string, naming: WeightNaming = NO_NAMING): string[] {
  const raw = name.replace(/:\d+$/, '').split('/');
  // `.keras` paths: layers/<snake class name>/...
  const dotKeras = raw[0] === 'layers';
  if (dotKeras && raw.length > 1 && naming.saved[raw[1]] != null) raw[1] = naming.saved[raw[1]];
  const tokens = raw.filter((t, i) => !(dotKeras && i > 1 && t === 'layer')) // a wrapper's `layer` attribute
    .map((t) => t.replace(/^_+/, ''))
    .map((t) => ATTENTION_ATTRIBUTES[t] ?? naming.wrapped[t] ?? t)
    .filter((t) => t !== '' && !BOOKKEEPING.has(t) && !CELL.test(t));
  return tokens.filter((t, i) => i === 0 || t !== tokens[i - 1]); // wrapper/inner -> wrapper, once
}

/** Token equality, with a `.keras` Bidirectional's forward_layer / backward_layer for the tfjs layer names. */
function sameToken(stored: string, model: string): boolean {
  if (stored === model) return true;
  const side = /^(forward|backward)_layer$/.exec(stored);
  return side != null && model.startsWith(`${side[1]}_`);
}

/** True when the model tokens `a` end with the stored tokens `b`, or (reverse) the stored `a` with the model's `b`. */
function endsWith(a: string[], b: string[], storedFirst = false): boolean {
  return b.length > 0 && b.length <= a.length && b.every((t, i) => {
    const x = a[a.length - b.length + i];
    return storedFirst ? sameToken(x, t) : sameToken(t, x);
  });
}

const sameShape = (a: readonly (number | null)[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

interface Target {
  weight: tf.LayerVariable;
  tokens: string[];
  /** The tokens of its group (all but the last), and its place in the group. */
  group: string;
  index: number;
}

/** The model's weights as match targets, each with its group and its place in that group. */
function targetsOf(model: tf.LayersModel): Target[] {
  const counts = new Map<string, number>();
  return model.weights.map((weight) => {
    const tokens = weightTokens(weight.originalName);
    const group = tokens.slice(0, -1).join('/');
    const index = counts.get(group) ?? 0;
    counts.set(group, index + 1);
    return {weight, tokens, group, index};
  });
}

/** The targets a stored name may fill (steps 2 and 3), before shapes are compared. */
function candidates(name: string, targets: Target[], naming: WeightNaming): Target[] {
  const tokens = weightTokens(name, naming);
  const last = tokens[tokens.length - 1];
  if (tokens.length >= 2 && /^\d+$/.test(last)) {
    const prefix = tokens.slice(0, -1);
    const groups = [...new Set(targets.map((t) => t.group))]
      .filter((g) => { const gt = g.split('/'); return endsWith(gt, prefix) || endsWith(prefix, gt, true); });
    if (groups.length !== 1) return [];
    return targets.filter((t) => t.group === groups[0] && t.index === Number(last));
  }
  const exact = targets.filter((t) => t.tokens.join('/') === tokens.join('/'));
  if (exact.length > 0) return exact;
  return targets.filter((t) => tokens.length >= 2 && (endsWith(t.tokens, tokens) || endsWith(tokens, t.tokens, true)));
}

/**
 * The model weight (originalName) each stored weight (a manifest entry) fills, by stored name; throws
 * AttentionError('IO') unless every stored weight fills exactly one model weight of its
 * dtype and shape and every model weight is filled. `source` names the model in messages.
 */
export function matchWeights(model: tf.LayersModel, stored: readonly tf.io.WeightsManifestEntry[], source: string,
                             naming: WeightNaming = NO_NAMING): Map<string, string> {
  const targets = targetsOf(model);
  const filled = new Map<tf.LayerVariable, string>();
  const out = new Map<string, string>();
  for (const {name, ...spec} of stored) {
    let found = candidates(name, targets, naming);
    if (found.length > 1) found = found.filter((t) => sameShape(t.weight.shape, spec.shape));
    if (found.length === 0) {
      throw new AttentionError('IO', `${source}: the stored weight '${name}' ${show(spec.shape)} matches no weight ` +
        `of the model (its weights: ${show(targets.map((t) => t.weight.originalName))})`);
    }
    if (found.length > 1) {
      throw new AttentionError('IO', `${source}: the stored weight '${name}' could go into any of ` +
        `${show(found.map((t) => t.weight.originalName))}; rename the layers so that their names differ`);
    }
    const {weight} = found[0];
    if (weight.dtype !== spec.dtype) {
      throw new AttentionError('IO', `${source}: the stored weight '${name}' is ${spec.dtype}, but the model's ` +
        `weight '${weight.originalName}' is ${weight.dtype}`);
    }
    if (!sameShape(weight.shape, spec.shape)) {
      throw new AttentionError('IO', `${source}: the stored weight '${name}' has shape ${show(spec.shape)}, ` +
        `but the model's weight '${weight.originalName}' has shape ${show(weight.shape)}`);
    }
    const before = filled.get(weight);
    if (before != null) {
      throw new AttentionError('IO',
        `${source}: the stored weights '${before}' and '${name}' both go into '${weight.originalName}'`);
    }
    filled.set(weight, name);
    out.set(name, weight.originalName);
  }
  const missing = targets.filter((t) => !filled.has(t.weight)).map((t) => t.weight.originalName);
  if (missing.length > 0) {
    throw new AttentionError('IO', `${source}: no stored weight for ${missing.length === 1 ? 'the weight' : 'the weights'} ` +
      `${show(missing)} of the model (stored: ${show(stored.map((w) => w.name))})`);
  }
  return out;
}
