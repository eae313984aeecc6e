/**
 * Causal masking: where the diagonal sits when T != S (the alignment), the offset it puts
 * between query and key positions, and the [T, S] mask itself.
 */
import * as tf from '@tensorflow/tfjs';
import {positive, withMaskValues} from './mask_values';
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt, assertOneOf} from '../core/validate';
import {assertFits} from './heads';
import {MaskMod, ModContext} from './flex_types';

export const CAUSAL_ALIGNMENTS = ['top-left', 'bottom-right'] as const;
/**
 * Where the causal diagonal sits when T != S: 'top-left' lets query i see key j iff j <= i
 * (Keras' use_causal_mask, PyTorch SDPA's is_causal); 'bottom-right' iff j <= i + (S - T)
 * (FlashAttention-2; what decoding new queries against a longer history needs). The same
 * lower triangle when T == S.
 */
export type CausalAlignment = typeof CAUSAL_ALIGNMENTS[number];
/** `causal` as the ops and layers take it: true = 'bottom-right', false = not causal. */
export type CausalArg = boolean | CausalAlignment;

/** The alignment a `causal` value asks for, or null when not causal. Throws INVALID_CONFIG for anything else. */
export function causalAlignment(value: unknown, name = 'causal'): CausalAlignment | null {
  if (value == null || value === false) return null;
  if (value === true) return 'bottom-right';
  if (typeof value === 'string' && (CAUSAL_ALIGNMENTS as readonly string[]).includes(value)) return value as CausalAlignment;
  throw new AttentionError('INVALID_CONFIG',
    `${name} must be true, false, 'top-left' or 'bottom-right' (true = 'bottom-right'), received ${show(value)}`);
}

/** Query i sees key j iff j <= i + offset: S - T bottom-right, 0 top-left. */
export function causalOffset(alignment: CausalAlignment, T: number, S: number): number {
  return alignment === 'top-left' ? 0 : S - T;
}

/**
 * Both causal constraints at once (each null = none): the one with the smaller offset, as
 * j <= i + a and j <= i + b hold together iff j <= i + min(a, b).
 */
export function strictestCausal(a: CausalAlignment | null, b: CausalAlignment | null, T: number,
                                S: number): CausalAlignment | null {
  if (a == null || b == null) return a ?? b;
  return causalOffset(a, T, S) <= causalOffset(b, T, S) ? a : b;
}

/**
 * Causal mask [T, S] (bool): query i sees key j iff j <= i + offset, with offset S - T for
 * 'bottom-right' (the default, as FlashAttention-2 aligns it) and 0 for 'top-left'.
 *
 * Called without the lengths (`causalMask()`, `causalMask('top-left')`), the same rule as a
 * mask mod for flexAttention and createBlockMask, which never forms the [T, S] tensor.
 */
export function causalMask(T: number, S: number, alignment?: CausalAlignment): tf.Tensor2D;
export function causalMask(alignment?: CausalAlignment | boolean): MaskMod;
export function causalMask(T?: number | CausalAlignment | boolean, S?: number,
                           alignment: CausalAlignment = 'bottom-right'): tf.Tensor2D | MaskMod {
  if (typeof T !== 'number') return causalMod(T ?? 'bottom-right');
  assertNonNegativeInt('T', T);
  assertNonNegativeInt('S', S);
  assertOneOf('alignment', alignment, CAUSAL_ALIGNMENTS);
  assertFits('causalMask', 'a [T, S] mask', [T, S]);
  const offset = causalOffset(alignment, T, S);
  return tf.tidy(() => {
    const i = tf.reshape(tf.range(offset, T + offset, 1, 'int32'), [T, 1]); // [T, 1], already shifted
    const j = tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]);               // [1, S]
    return tf.lessEqual(j, i) as tf.Tensor2D;                               // [T, S]
  });
}

/** Query positions of a mod's tile on the keys' axis: qIdx, shifted by S - T when aligned bottom-right. */
export function alignedQueries(qIdx: tf.Tensor, context: ModContext, alignment: CausalAlignment): tf.Tensor {
  const offset = causalOffset(alignment, context.queryLength, context.keyLength);
  return offset === 0 ? qIdx : tf.add(qIdx, tf.scalar(offset, 'int32'));
}

/**
 * a - b as float32 over their broadcast shape (index tensors: exact below 2^24). The built-in
 * mods compare this difference with a scalar: on wasm a broadcasting comparison or int32
 * subtraction runs a scalar loop some 50x slower than float32 arithmetic.
 */
export function indexDifference(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.sub(tf.cast(a, 'float32'), tf.cast(b, 'float32'));
}

/** The causal rule as a mask mod: key j visible from query i iff j <= i + offset (as causalMask). */
function causalMod(alignment: CausalAlignment | boolean): MaskMod {
  const a = causalAlignment(alignment, 'alignment') ?? 'bottom-right';
  const mod: MaskMod = (_b, _h, q, kv, context) => tf.lessEqual(indexDifference(kv, alignedQueries(q, context, a)), 0);
  mod.spec = {name: 'causal', alignment: a};
  // j - i' <= 0 for integer positions: 0.5 - (j - i') > 0.
  return withMaskValues(mod, (_b, _h, q, kv, context) =>
    positive(tf.sub(0.5, indexDifference(kv, alignedQueries(q, context, a)))));
}
