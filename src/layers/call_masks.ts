/**
 * The masks of one attention layer call, brought to rank-4 bool tensors that broadcast to
 * [B, H, T, S]: padding masks propagated by tfjs (`mask`, or the inputs' kerasMask), the
 * explicit Keras padding masks (`queryMask` [B, T], `valueMask` / `keyMask` [B, S]) and the
 * `attentionMask`. Layers whose op never forms the T x S matrix take them apart
 * (`paddingOnly`).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {checkMaskValues, normalizeMask} from '../ops/masks';

/** The masks of one call, kept apart for layers that cannot take a full [B, H, T, S] mask. */
export interface MaskParts {
  /** [B, 1, T, 1] bool: the queries that are not padding; null when no query padding mask. */
  query: tf.Tensor4D | null;
  /** [B, 1, 1, S] bool: the keys that are not padding (value and key masks); null when none. */
  key: tf.Tensor4D | null;
  /** The call's attentionMask as a rank-4 bool tensor broadcastable to [B, H, T, S]; null when none. */
  attention: tf.Tensor4D | null;
}

/** What a call passes about masks: tfjs' propagated `mask` and the user's explicit ones. */
export interface CallMasks {
  mask?: tf.Tensor | (tf.Tensor | null)[] | null;
  queryMask?: tf.Tensor | null;
  valueMask?: tf.Tensor | null;
  keyMask?: tf.Tensor | null;
  attentionMask?: tf.Tensor | null;
}

/**
 * For layers whose op never forms the [B, H, T, S] matrix and so takes padding masks
 * only: the call's masks as query padding [B, 1, T, 1] and key padding [B, 1, 1, S],
 * with the attentionMask folded into whichever of the two it is ([B, 1, S] or
 * [B, T, 1]). Any other attentionMask throws UNSUPPORTED; `who` names the layer.
 */
export function paddingOnly(parts: MaskParts, who: string): {query: tf.Tensor4D | null; key: tf.Tensor4D | null} {
  let {query, key} = parts;
  const attention = parts.attention;
  if (attention != null) {
    const [, Hm, Tm, Sm] = attention.shape;
    if (Hm === 1 && Tm === 1) key = key == null ? attention : tf.logicalAnd(key, attention) as tf.Tensor4D;
    else if (Hm === 1 && Sm === 1) query = query == null ? attention : tf.logicalAnd(query, attention) as tf.Tensor4D;
    else {
      throw new AttentionError('UNSUPPORTED',
        `${who} takes only key padding ([batch, 1, sourceLength]) or query padding ([batch, targetLength, 1]) ` +
        `attention masks, received one of shape ${show(attention.shape)}: it never forms the ` +
        '[batch, heads, targetLength, sourceLength] attention matrix that other masks need');
    }
  }
  return {query, key};
}

/**
 * The mask attend() receives and the query padding to zero after it: with `fullMasks`,
 * all the parts combined (and no query padding left to zero); without, paddingOnly's key
 * padding, and its query padding for zeroPaddedQueries. `who` names the layer.
 */
export function attendMask(parts: MaskParts, fullMasks: boolean,
    who: string): {mask: tf.Tensor4D | null; queryPadding: tf.Tensor4D | null} {
  if (!fullMasks) {
    const padding = paddingOnly(parts, who);
    return {mask: padding.key, queryPadding: padding.query};
  }
  const present = [parts.query, parts.key, parts.attention].filter((m): m is tf.Tensor4D => m != null);
  const mask = present.length === 0 ? null : present.reduce((a, b) => tf.logicalAnd(a, b) as tf.Tensor4D);
  return {mask, queryPadding: null};
}

/**
 * Throws UNSUPPORTED for the explicit masks of an apply to symbolic inputs: tfjs' model
 * executor does not pass them on in predict/fit, so they cannot be part of a graph.
 */
export function refuseMasksInGraph(args: CallMasks | undefined): void {
  for (const name of ['attentionMask', 'queryMask', 'valueMask', 'keyMask'] as const) {
    if (args?.[name] != null) {
      throw new AttentionError('UNSUPPORTED',
        `${name} cannot be given when building a model graph (tfjs does not pass it on in predict/fit); ` +
        'use padding masks (embedding({maskZero: true})) or call the layer on tensors');
    }
  }
}

/** o [B, H, T, Dv] with the rows of padded queries (query [B, 1, T, 1] false) set to zero. */
export function zeroPaddedQueries(o: tf.Tensor4D, query: tf.Tensor4D | null): tf.Tensor4D {
  return query == null ? o : tf.mul(o, tf.cast(query, 'float32')) as tf.Tensor4D;
}

function boolMask(m: tf.Tensor): tf.Tensor {
  return m.dtype === 'bool' ? m : tf.notEqual(m, 0);
}

/** [queryMask, valueMask, keyMask] from the propagated mask(s) or the inputs' kerasMask. */
function propagatedMasks(inputs: tf.Tensor | tf.Tensor[], mask: CallMasks['mask']): [tf.Tensor | null, tf.Tensor | null, tf.Tensor | null] {
  const list = Array.isArray(inputs) ? inputs : [inputs];
  let masks: (tf.Tensor | null | undefined)[];
  if (mask == null) {
    masks = list.map((x) => (x as tf.Tensor & {kerasMask?: tf.Tensor | null}).kerasMask ?? null);
  } else if (Array.isArray(mask)) {
    masks = mask;
  } else {
    // A single mask: for self-attention it masks queries and keys alike; tfjs'
    // model executor passes only the first input's mask, i.e. the query's, which is
    // also the mask of a value or key that is the query tensor itself.
    masks = list.map((x, i) => (i === 0 || x === list[0] ? mask : null));
  }
  if (list.length === 1) return [masks[0] ?? null, masks[0] ?? null, masks[0] ?? null];
  const value = masks[1] ?? null;
  return [masks[0] ?? null, value, list.length === 3 ? (masks[2] ?? null) : value];
}

/**
 * The call's padding masks ([B, T] for the query, [B, S] for value and key; propagated
 * and explicit ones combined) and attentionMask as rank-4 bool tensors that broadcast to
 * `target` = [B, H, T, S]. Masked queries get no keys (zero rows). Call inside a tidy.
 */
export function callMaskParts(inputs: tf.Tensor | tf.Tensor[], args: CallMasks,
                              target: [number, number, number, number]): MaskParts {
  const [B, , T, S] = target;
  const [qm, vm, km] = propagatedMasks(inputs, args.mask);
  const padding = (pairs: [tf.Tensor | null | undefined, string, boolean][], len: number,
                   shape: [number, number, number, number]) => {
    let out: tf.Tensor4D | null = null;
    for (const [m, name, explicit] of pairs) {
      if (m == null) continue;
      if (explicit) checkMaskValues(m, name);
      else if (!(m instanceof tf.Tensor)) {
        throw new AttentionError('INVALID_MASK', `the ${name} padding mask must be a tf.Tensor, received ${show(m)}`);
      }
      if (m.rank !== 2 || m.shape[0] !== B || m.shape[1] !== len) {
        throw new AttentionError('INVALID_MASK',
          `the ${name} padding mask must have shape [${B}, ${len}], received ${show(m.shape)}`);
      }
      const keep = tf.reshape(boolMask(m), shape) as tf.Tensor4D;
      out = out == null ? keep : tf.logicalAnd(out, keep) as tf.Tensor4D;
    }
    return out;
  };
  const query = padding([[qm, 'query', false], [args.queryMask, 'queryMask', true]], T, [B, 1, T, 1]);
  const key = padding([[vm, 'value', false], [km, 'key', false], [args.valueMask, 'valueMask', true],
    [args.keyMask, 'keyMask', true]], S, [B, 1, 1, S]);
  const attention = args.attentionMask != null ? normalizeMask(args.attentionMask, target, 'attentionMask') : null;
  return {query, key, attention};
}
