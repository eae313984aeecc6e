/**
 * Refusals of what would make a padding mask silently differ from Keras in a functional
 * model: which tensors carry a mask is worked out statically, from each layer's class and
 * config (a static view of tfjs' computeMask), and a call that tfjs would run with a mask
 * missing or ignored is AttentionError('UNSUPPORTED') naming the layer.
 */
import {AttentionError} from '../core/errors';
import {KERAS_ATTENTION_CLASSES} from './attention';
import {ATTENTION_TENSORS} from './layer_calls';
import {Dict, isDict} from './topology_json';

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

/** One layer call of a functional model, for the mask analysis: tensors as 'layer/node/tensor'. */
export interface Call {
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
export function checkMasks(calls: Call[]): void {
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
