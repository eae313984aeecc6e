/**
 * Keras attention layer configs onto this library's MultiHeadAttention.
 *
 *   MultiHeadAttention (Keras 3, tf.keras 2)      GroupedQueryAttention (Keras 3)
 *     num_heads        -> numHeads                  num_query_heads     -> numHeads
 *     key_dim          -> headDim                   num_key_value_heads -> numKvHeads
 *     value_dim        -> valueDim                  head_dim            -> headDim
 *     output_shape     -> outputDim (an integer, or a list of one)
 *   both: use_bias, dropout, the kernel / bias initializer, regularizer and constraint, and
 *     sliding_window -> slidingWindow       (Keras >= 3.15)
 *     use_gate true  -> outputGate 'elementwise' (Keras >= 3.14; false or null: no gate)
 *
 * What Keras computes for the last two (keras-team/keras 3.16,
 * keras/src/layers/attention/multi_head_attention.py and grouped_query_attention.py,
 * identical in both classes; Apache-2.0):
 *   sliding_window W: `_compute_sliding_window_mask` builds |i - j| < W over query rows i and
 *     key columns j, both counted from 0 (so aligned top-left when T != S), and ANDs it with
 *     the other masks in `_compute_attention_mask`; with use_causal_mask=True (j <= i) this is
 *     0 <= i - j < W. Ours: a non-causal layer sees |i - j| < W, and a call with
 *     useCausalMask: true (top-left, the only causal a Keras call makes) 0 <= i - j < W.
 *   use_gate: an EinsumDense named `gate` on the query input, kernel [E_q, H, value_dim]
 *     (GroupedQueryAttention: [E_q, H, head_dim]), bias [H, value_dim] only when use_bias,
 *     activation sigmoid; `attention_output(o * gate)` with o [B, T, H, value_dim], i.e. before
 *     the output projection. It is built after `key` and before `value` (Keras's weights list:
 *     query, key, gate, value, attention_output), stored as `<layer>/gate/kernel` and
 *     `/gate/bias` (a `.keras` file: `_gate_dense/vars/0` and `/1`); weights are matched by
 *     name (weights.ts), so our order (gate after attention_output) does not matter.
 * The one difference is the one every Keras mask has (docs/keras.md): a query row that sees
 * no key (a band with T > S + W - 1, or padding) gives zeros here before the gate and the
 * output projection, and the mean of all values on Keras's default fused path.
 *
 * Accepted only with the value Keras gives them by default: `attention_axes` (null, 1 or
 * [1]: the sequence axis of [batch, length, features] inputs), `lora_rank` (null),
 * `activity_regularizer` (null); any other value is AttentionError('UNSUPPORTED') naming the
 * layer and the key.
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
 * `new MultiHeadAttention({attentionAxes: [2]})` refuse the same things.
 */
const DEFAULT_ONLY: Record<string, ForeignName> = {
  attention_axes: KERAS_LAYER_NAMES.attentionAxes, lora_rank: KERAS_LAYER_NAMES.loraRank,
  activity_regularizer: KERAS_LAYER_NAMES.activityRegularizer,
};

/** Keys both classes map the same way (null: a key read below). */
const SHARED: Record<string, string | null> = {use_bias: 'use_bias', dropout: 'dropout', output_shape: null,
  sliding_window: null, use_gate: null};

/** Each Keras class: its own keys and how they map (null: a key read below). */
const MAPPINGS: Record<string, Record<string, string | null>> = {
  MultiHeadAttention: {num_heads: 'num_heads', key_dim: 'head_dim', value_dim: 'value_dim', ...SHARED},
  GroupedQueryAttention: {num_query_heads: 'num_heads', num_key_value_heads: 'num_kv_heads', head_dim: 'head_dim',
    ...SHARED},
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
  const window = config.sliding_window;
  if (window != null) {
    // Keras's own constructor refuses anything else, so another value is a damaged file.
    if (!Number.isInteger(window) || (window as number) <= 0) {
      throw new AttentionError('IO', `${who}: sliding_window must be null or a positive integer, received ${show(window)}`);
    }
    out.sliding_window = window;
  }
  const gate = config.use_gate;
  if (gate != null && typeof gate !== 'boolean') {
    throw new AttentionError('IO', `${who}: use_gate must be a boolean, received ${show(gate)}`);
  }
  if (gate === true) out.output_gate = 'elementwise'; // sigmoid(x_q W_g + b_g) [B, T, H, Dv], as Keras's `gate`
  for (const required of Object.keys(mapping).filter((k) => mapping[k] === 'num_heads' || mapping[k] === 'head_dim')) {
    if (config[required] == null) {
      throw new AttentionError('IO', `${who}: the config has no '${required}'`);
    }
  }
  return out;
}
