/**
 * Mask helpers. Convention: 1 (or true) = may attend. Masks broadcast to [B, H, T, S].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../errors';

/**
 * Bottom-right aligned causal mask [T, S] (bool): query i sees key j iff j <= i + (S - T),
 * as FlashAttention-2 aligns it; the usual lower triangle when T == S.
 */
export function causalMask(T: number, S: number): tf.Tensor2D {
  return tf.tidy(() => {
    const i = tf.reshape(tf.range(S - T, S, 1, 'int32'), [T, 1]); // [T, 1], already shifted by S - T
    const j = tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]);     // [1, S]
    return tf.lessEqual(j, i) as tf.Tensor2D;                     // [T, S]
  });
}

/**
 * Brings a user mask to a boolean rank-4 tensor that broadcasts to [B, H, T, S].
 * Accepts [T, S], [B, T, S] (one mask for every head, as Keras' attention_mask) or
 * [B|1, H|1, T|1, S|1]; bool or numeric (non-zero = may attend).
 */
export function normalizeMask(mask: tf.Tensor, target: [number, number, number, number],
                              name = 'mask'): tf.Tensor4D {
  if (mask.dtype === 'string' || mask.dtype === 'complex64') {
    throw new AttentionError('INVALID_MASK', `${name} must be bool or numeric, received dtype ${mask.dtype}`);
  }
  let shape: number[];
  if (mask.rank === 2) shape = [1, 1, ...mask.shape];
  else if (mask.rank === 3) shape = [mask.shape[0], 1, mask.shape[1], mask.shape[2]] as number[];
  else if (mask.rank === 4) shape = mask.shape;
  else {
    throw new AttentionError('INVALID_MASK',
      `${name} must have rank 2, 3 or 4 (broadcastable to [B, H, T, S] = ${show(target)}), ` +
      `received shape ${show(mask.shape)}`);
  }
  for (let a = 0; a < 4; a++) {
    if (shape[a] !== 1 && shape[a] !== target[a]) {
      throw new AttentionError('INVALID_MASK',
        `${name} of shape ${show(mask.shape)} is not broadcastable to [B, H, T, S] = ${show(target)}`);
    }
  }
  return tf.tidy(() => {
    const m = tf.reshape(mask, shape);
    return (m.dtype === 'bool' ? m : tf.notEqual(m, 0)) as tf.Tensor4D;
  });
}

/**
 * The combined boolean mask (user mask AND causal), rank 4, or null when neither is given.
 */
export function combineMasks(mask: tf.Tensor | undefined | null, causal: boolean,
                             target: [number, number, number, number]): tf.Tensor4D | null {
  if (mask == null && !causal) return null;
  return tf.tidy(() => {
    let m: tf.Tensor4D | null = mask != null ? normalizeMask(mask, target) : null;
    if (causal) {
      const c = tf.reshape(causalMask(target[2], target[3]), [1, 1, target[2], target[3]]) as tf.Tensor4D;
      m = m == null ? c : tf.logicalAnd(m, c) as tf.Tensor4D;
    }
    return m as tf.Tensor4D;
  });
}

/**
 * The 0/1 float keep of each key, [Bm, S] (Bm = B or 1), from a key padding mask
 * broadcastable to [B, 1, 1, S]. Ops that never form the T x S matrix (`who` names the
 * op) accept only such masks: anything that depends on the query or the head throws
 * UNSUPPORTED.
 */
export function keyPaddingKeep(mask: tf.Tensor, target: [number, number, number, number], who: string): tf.Tensor2D {
  const m = normalizeMask(mask, target); // [Bm, Hm, Tm, Sm]
  const [Bm, Hm, Tm, Sm] = m.shape;
  if (Hm !== 1 || Tm !== 1) {
    m.dispose();
    throw new AttentionError('UNSUPPORTED',
      `${who} takes key padding masks only (broadcastable to [B, 1, 1, S] = ` +
      `${show([target[0], 1, 1, target[3]])}), received shape ${show(mask.shape)}: the attention ` +
      'matrix is never formed, so a mask that differs per query or per head cannot be applied');
  }
  return tf.tidy(() => {
    const keep = tf.reshape(tf.cast(m, 'float32'), [Bm, Sm]);
    m.dispose();
    return (Sm === target[3] ? keep : tf.broadcastTo(keep, [Bm, target[3]])) as tf.Tensor2D; // [Bm, S]
  });
}
