/**
 * attentionLayer(kind, args): one entry point that builds any attention layer of the
 * library by name and checks that the arguments make sense for that kind: an argument
 * the kind does not take is refused, naming the kinds that take it.
 */
import {KERAS_LAYER_NAMES, LAYER_ARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {assertOneOf, nearestName} from '../core/validate';
import {ATTENTION_LAYER_ARGS} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {AnyAttentionArgs, ATTENTION_KIND_TABLE, ATTENTION_KINDS, AttentionKind} from './kinds';

export {ATTENTION_KINDS, AttentionKind, AnyAttentionArgs} from './kinds';

/** The arguments shared by all kinds (AttentionLayerArgs and tfjs' LayerArgs). */
const SHARED: readonly string[] = [...ATTENTION_LAYER_ARGS, ...LAYER_ARGS];

/** The arguments only some kinds take: each layer class lists its own. */
const ownArgs = (kind: AttentionKind) => ATTENTION_KIND_TABLE[kind].layer.ownArgs;

/**
 * A new attention layer of `kind`:
 *   'mha'          MultiHeadAttention with numKvHeads = numHeads (numKvHeads, if given, must equal it);
 *   'gqa'          MultiHeadAttention with grouped-query heads: numKvHeads required, dividing
 *                  numHeads and smaller than it;
 *   'flash'        FlashAttention;
 *   'linear'       LinearAttention;
 *   'local-global' LocalGlobalAttention (windowSize required).
 * Throws AttentionError('INVALID_CONFIG') for an unknown kind, an argument that kind does
 * not take (naming the kinds that do), or a bad value (from the layer's own checks).
 */
export function attentionLayer(kind: AttentionKind, args: AnyAttentionArgs): AttentionLayerBase {
  assertOneOf('kind', kind, ATTENTION_KINDS);
  if (args == null || typeof args !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `attentionLayer('${kind}', args): args must be an object, received ${show(args)}`);
  }
  const allowed = [...SHARED, ...ownArgs(kind)];
  for (const key of Object.keys(args)) {
    if ((args as unknown as Record<string, unknown>)[key] === undefined || allowed.includes(key)) continue;
    // Keras and PyTorch names: the layer's constructor accepts their "off" values and says what to use.
    if (Object.prototype.hasOwnProperty.call(KERAS_LAYER_NAMES, key)) continue;
    const takers = ATTENTION_KINDS.filter((k) => ownArgs(k).includes(key));
    const near = takers.length === 0 ? nearestName(key, allowed) : null;
    throw new AttentionError('INVALID_CONFIG',
      `attention kind '${kind}' does not take '${key}'` +
      (takers.length > 0 ? ` (${takers.map((k) => `'${k}'`).join(', ')} does)` : ' (no attention kind does)') +
      (near != null ? `; did you mean '${near}'?` : ''));
  }
  return ATTENTION_KIND_TABLE[kind].create(args);
}
