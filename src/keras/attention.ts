/**
 * Keras attention layer configs onto this library's MultiHeadAttention.
 *
 *   MultiHeadAttention (Keras 3, tf.keras 2)      GroupedQueryAttention (Keras 3)
 *     num_heads        -> numHeads                  num_query_heads     -> numHeads
 *     key_dim          -> headDim                   num_key_value_heads -> numKvHeads
 *     value_dim        -> valueDim                  head_dim            -> headDim
 *     output_shape     -> outputDim (an integer, or a list of one)
 *   both: use_bias, dropout, the kernel / bias initializer, regularizer and constraint.
 *
 * Accepted only with the value Keras gives them by default: `attention_axes` (null, 1 or
 * [1]: the sequence axis of [batch, length, features] inputs), `use_gate` (false),
 * `sliding_window` (null), `lora_rank` (null), `activity_regularizer` (null); any other
 * value is AttentionError('UNSUPPORTED') naming the layer and the key.
 * Ignored on purpose: `seed` (Keras's dropout seed; dropout here draws a fresh mask each
 * call), `flash_attention` (Keras's choice of kernel, same math), `query_shape` /
 * `key_shape` / `value_shape` (tf.keras 2's record of the build shapes; the graph gives
 * them again), and the bookkeeping keys `name`, `trainable`, `dtype` (passed on).
 * A key not listed here is UNSUPPORTED too: nothing is dropped silently.
 */
import {KERAS_LAYER_NAMES} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {ForeignName} from '../core/validate';

/** The Keras classes read here. */
export const KERAS_ATTENTION_CLASSES = ['MultiHeadAttention', 'GroupedQueryAttention'] as const;

type Config = Record<string, unknown>;

const PASSED_ON = ['name', 'trainable', 'dtype'];
const WEIGHT_OPTIONS = ['kernel_initializer', 'bias_initializer', 'kernel_regularizer', 'bias_regularizer',
  'kernel_constraint', 'bias_constraint'];
const IGNORED = ['seed', 'flash_attention', 'query_shape', 'key_shape', 'value_shape'];

/**
 * Keys accepted only with their "off" value: the constructor's own table of Keras names
 * (arguments.ts) says which values are off and what to do instead, so the loader and
 * `new MultiHeadAttention({useGate: true})` refuse the same things.
 */
const DEFAULT_ONLY: Record<string, ForeignName> = {
  attention_axes: KERAS_LAYER_NAMES.attentionAxes, use_gate: KERAS_LAYER_NAMES.useGate,
  sliding_window: KERAS_LAYER_NAMES.slidingWindow, lora_rank: KERAS_LAYER_NAMES.loraRank,
  activity_regularizer: KERAS_LAYER_NAMES.activityRegularizer,
};

/** Each Keras class: its own keys and how they map (null: a key read by `special`). */
const MAPPINGS: Record<string, Record<string, string | null>> = {
  MultiHeadAttention: {num_heads: 'num_heads', key_dim: 'head_dim', value_dim: 'value_dim', output_shape: null,
    use_bias: 'use_bias', dropout: 'dropout'},
  GroupedQueryAttention: {num_query_heads: 'num_heads', num_key_value_heads: 'num_kv_heads', head_dim: 'head_dim',
    use_bias: 'use_bias', dropout: 'dropout', output_shape: null},
};

/** True when a MultiHeadAttention config was written by this library (it has head_dim, not key_dim). */
export function isOwnAttentionConfig(className: string, config: Config): boolean {
  return className === 'MultiHeadAttention' && !('key_dim' in config) && 'head_dim' in config;
}

/** Keras's output_shape as an integer outputDim (null when absent). */
function outputDim(value: unknown, who: string): number | null {
  if (value == null) return null;
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 1 && Number.isInteger(list[0]) && (list[0] as number) > 0) return list[0] as number;
  throw new AttentionError('UNSUPPORTED', `${who}: output_shape ${show(value)} is not supported: the output ` +
    'here is [batch, length, outputDim], so output_shape must be one positive integer (or a list of one)');
}

/**
 * The pythonic config (snake_case, as a model.json holds it) of this library's
 * MultiHeadAttention for a Keras `className` config of layer `layerName`.
 */
export function attentionConfigFromKeras(className: string, config: Config, layerName: string): Config {
  const who = `Keras layer '${layerName}' (${className})`;
  const mapping = MAPPINGS[className];
  if (mapping == null) throw new AttentionError('UNSUPPORTED', `${who}: not an attention class read here`);
  const out: Config = {};
  for (const [key, value] of Object.entries(config)) {
    if (PASSED_ON.includes(key) || WEIGHT_OPTIONS.includes(key)) {
      if (value != null) out[key] = value;
    } else if (key in mapping) {
      const to = mapping[key];
      if (to != null && value != null) out[to] = value;
    } else if (key in DEFAULT_ONLY) {
      if (!(DEFAULT_ONLY[key].inert?.(value) ?? false)) {
        throw new AttentionError('UNSUPPORTED', `${who}: ${key} ${show(value)} is not supported: ${DEFAULT_ONLY[key].advice}`);
      }
    } else if (!IGNORED.includes(key)) {
      throw new AttentionError('UNSUPPORTED', `${who}: the config key '${key}' (${show(value)}) is not one this ` +
        'loader knows; it is refused rather than dropped');
    }
  }
  const dim = outputDim(config.output_shape, who);
  if (dim != null) out.output_dim = dim;
  for (const required of Object.keys(mapping).filter((k) => mapping[k] === 'num_heads' || mapping[k] === 'head_dim')) {
    if (config[required] == null) {
      throw new AttentionError('IO', `${who}: the config has no '${required}'`);
    }
  }
  return out;
}
