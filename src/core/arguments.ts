/**
 * The names that no argument object of the library may silently ignore: what tfjs' own
 * Layer takes, what tfjs passes to `apply`, and the names users bring from Keras and
 * PyTorch, each with what to say when it is passed here (see validate.checkArgNames).
 */
import {ForeignName, NULL_OR_FALSE} from './validate';

/**
 * tf.layers.Layer's own constructor arguments (LayerArgs), accepted by every layer, and
 * `customObjects`, which tfjs' deserialization adds to every config it builds a layer from.
 */
export const LAYER_ARGS = [
  'name', 'trainable', 'dtype', 'inputShape', 'batchInputShape', 'batchSize', 'weights', 'inputDType', 'customObjects',
] as const;

/** Keyword arguments that tfjs itself passes to `apply` / `call` (the executor and wrappers). */
export const TFJS_KWARGS = ['mask', 'training'] as const;

const nullish = (value: unknown): boolean => value == null;
const sequenceAxis = (value: unknown): boolean =>
  value == null || value === 1 || value === -2 ||
    (Array.isArray(value) && value.length === 1 && [1, -2].includes(value[0]));

/** Call arguments given to a constructor: where they belong. */
function callArgument(name: string, extra = ''): ForeignName {
  return {code: 'INVALID_CONFIG', advice: `'${name}' is an argument of apply(), not of the constructor${extra}`};
}

/** Keras / PyTorch names that users pass to attention layer constructors. */
export const KERAS_LAYER_NAMES: Readonly<Record<string, ForeignName>> = {
  keyDim: {code: 'INVALID_CONFIG', advice: "did you mean 'headDim' (Keras's key_dim)?"},
  numQueryHeads: {code: 'INVALID_CONFIG', advice: "did you mean 'numHeads' (Keras's num_query_heads)?"},
  numKeyValueHeads: {code: 'INVALID_CONFIG', advice: "did you mean 'numKvHeads' (Keras's num_key_value_heads)?"},
  outputShape: {code: 'INVALID_CONFIG', advice: "did you mean 'outputDim' (Keras's output_shape, an integer here)?"},
  isCausal: {code: 'INVALID_CONFIG', advice: "use causal: 'top-left' (PyTorch's is_causal) or causal: true (bottom-right)"},
  flashAttention: {code: 'INVALID_CONFIG', inert: NULL_OR_FALSE,
    advice: "use implementation: 'flash' on MultiHeadAttention, or the FlashAttention layer"},
  attentionAxes: {code: 'UNSUPPORTED', inert: sequenceAxis,
    advice: 'attention runs over axis 1 (the sequence) of [batch, length, features] inputs; other attention ' +
      'axes are not supported: move the attended axis to axis 1 and fold the others into the batch'},
  useGate: {code: 'INVALID_CONFIG', inert: NULL_OR_FALSE,
    advice: "gated attention is outputGate: 'elementwise' here (Keras's use_gate: a sigmoid gate on each head's " +
      "output, from the query; 'headwise' for one gate per head), on MultiHeadAttention and FlashAttention"},
  // MultiHeadAttention and FlashAttention take slidingWindow themselves; other kinds land here.
  slidingWindow: {code: 'UNSUPPORTED', inert: nullish,
    advice: "slidingWindow (Keras's sliding_window) is an option of MultiHeadAttention and FlashAttention; " +
      'this kind has none: use one of those (LocalGlobalAttention has its own windowSize)'},
  lora: {code: 'UNSUPPORTED', inert: NULL_OR_FALSE,
    advice: 'LoRA is not implemented: train the full weights, or freeze the layer with trainable: false'},
  loraRank: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 0,
    advice: 'LoRA is not implemented: train the full weights, or freeze the layer with trainable: false'},
  loraAlpha: {code: 'UNSUPPORTED', inert: nullish,
    advice: 'LoRA is not implemented: train the full weights, or freeze the layer with trainable: false'},
  seed: {code: 'UNSUPPORTED', inert: nullish,
    advice: 'attention dropout here draws a fresh mask on every call and takes no seed'},
  activityRegularizer: {code: 'UNSUPPORTED', inert: nullish,
    advice: 'activity regularizers are not supported on attention layers; add the penalty to your loss'},
  attentionMask: callArgument('attentionMask'),
  returnAttentionScores: callArgument('returnAttentionScores'),
  useCausalMask: callArgument('useCausalMask', "; for a causal layer pass causal: 'top-left' (or true) here"),
  training: callArgument('training'),
  queryMask: callArgument('queryMask'),
  valueMask: callArgument('valueMask'),
  keyMask: callArgument('keyMask'),
};

/** Names users pass to an attention layer's apply() that it does not take. */
export const KERAS_CALL_NAMES: Readonly<Record<string, ForeignName>> = {
  causal: {code: 'INVALID_CONFIG', advice: "'causal' is a constructor argument; at call time pass useCausalMask: true (top-left)"},
  isCausal: {code: 'INVALID_CONFIG', advice: "use useCausalMask: true (top-left, as PyTorch's is_causal)"},
  attnMask: {code: 'INVALID_CONFIG', advice: 'use attentionMask (bool or 0/1, 1 = may attend)'},
  returnWeights: {code: 'INVALID_CONFIG', advice: 'layers call it returnAttentionScores'},
  cacheUpdateIndex: {code: 'INVALID_CONFIG', advice: 'use cacheIndex (the position of the first new row)'},
  pastKeyValues: {code: 'INVALID_CONFIG', advice: 'use cache: layer.createCache(batchSize, maxLength)'},
};

/** Names users pass to the ops (PyTorch's scaled_dot_product_attention and the layers' names). */
export const OP_NAMES: Readonly<Record<string, ForeignName>> = {
  attnMask: {code: 'INVALID_CONFIG', advice: 'use mask: bool or 0/1, 1 = may attend (an additive float mask is not read as one)'},
  attentionMask: {code: 'INVALID_CONFIG', advice: 'the ops call it mask (bool or 0/1, 1 = may attend)'},
  isCausal: {code: 'INVALID_CONFIG', advice: "use causal: 'top-left' (PyTorch's is_causal) or causal: true (bottom-right)"},
  useCausalMask: {code: 'INVALID_CONFIG', advice: "use causal: 'top-left'"},
  dropoutP: {code: 'INVALID_CONFIG', advice: 'use dropout (scaledDotProductAttention only)'},
  enableGqa: {code: 'INVALID_CONFIG', inert: (v) => v == null || v === true,
    advice: 'grouped-query attention is automatic: give k and v G heads, G dividing the H heads of q'},
  returnAttentionScores: {code: 'INVALID_CONFIG', advice: 'the ops call it returnWeights (scaledDotProductAttention only)'},
};

/** For the ops that never form the attention probabilities: asking for them is unsupported. */
export function noProbabilities(op: string): Readonly<Record<string, ForeignName>> {
  const why = `${op} never forms the attention probabilities; use scaledDotProductAttention for`;
  return {
    ...OP_NAMES,
    dropout: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 0, advice: `${why} attention dropout`},
    dropoutP: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 0, advice: `${why} attention dropout`},
    returnWeights: {code: 'UNSUPPORTED', inert: NULL_OR_FALSE, advice: `${why} the weights`},
    seed: {code: 'UNSUPPORTED', inert: nullish, advice: `${why} seeded dropout`},
    // No dropout, so training changes nothing: a boolean asks for nothing.
    training: {code: 'INVALID_CONFIG', inert: (v) => v == null || typeof v === 'boolean',
      advice: 'training must be a boolean (it changes nothing here: there is no dropout)'},
  };
}
