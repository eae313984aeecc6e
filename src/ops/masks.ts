/**
 * User masks as the ops take them: checked (bool or 0/1), brought to a rank-4 tensor that
 * broadcasts to [B, H, T, S], combined with a causal mask, or read as the keep of each key
 * (key padding). Convention: 1 (or true) = may attend.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {CausalAlignment, causalMask} from './causal';

/**
 * Added to the logits of masked keys. Finite, so a row with no key left stays finite
 * (it is zeroed afterwards), and far below any logit a float32 model produces.
 */
export const MASKED_LOGIT = -1e9;

/**
 * Masks are read synchronously to check their values (0 or 1) only where a tensor's data
 * already sits in CPU memory; on GPU backends (webgl, webgpu) a synchronous read would
 * stall or crash the page, so the values of numeric masks are not checked there.
 */
const HOST_MEMORY_BACKENDS = ['cpu', 'wasm', 'tensorflow'];

/** Throws INVALID_MASK unless `mask` is a tensor whose numeric values (if checked here) are 0 or 1. */
export function checkMaskValues(mask: unknown, name: string): asserts mask is tf.Tensor {
  if (!(mask instanceof tf.Tensor)) {
    throw new AttentionError('INVALID_MASK', `${name} must be a tf.Tensor (bool or 0/1), received ${show(mask)}`);
  }
  if (mask.dtype === 'string' || mask.dtype === 'complex64') {
    throw new AttentionError('INVALID_MASK', `${name} must be bool or numeric, received dtype ${mask.dtype}`);
  }
  if (mask.dtype === 'bool' || mask.size === 0 || !HOST_MEMORY_BACKENDS.includes(tf.getBackend())) return;
  const bad = tf.tidy(() => tf.any(tf.logicalAnd(tf.notEqual(mask, 0), tf.notEqual(mask, 1))).dataSync()[0]);
  if (bad) {
    const values = mask.dataSync();
    const first = values.find((x) => x !== 0 && x !== 1);
    throw new AttentionError('INVALID_MASK',
      `${name} must hold only 0 and 1 (or be bool; 1 = may attend), received a value of ${first}: ` +
      'an additive float mask (0 = attend, -inf = blocked) is not read as one here; pass tf.equal(mask, 0)');
  }
}

/**
 * Brings a user mask to a boolean rank-4 tensor that broadcasts to [B, H, T, S].
 * Accepts [T, S], [B, T, S] (one mask for every head, as Keras' attention_mask) or
 * [B|1, H|1, T|1, S|1]; bool or numeric 0/1 (1 = may attend).
 */
export function normalizeMask(mask: tf.Tensor, target: [number, number, number, number],
                              name = 'mask'): tf.Tensor4D {
  checkMaskValues(mask, name);
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
export function combineMasks(mask: tf.Tensor | undefined | null, causal: CausalAlignment | null,
                             target: [number, number, number, number]): tf.Tensor4D | null {
  if (mask == null && causal == null) return null;
  return tf.tidy(() => {
    let m: tf.Tensor4D | null = mask != null ? normalizeMask(mask, target) : null;
    if (causal != null) {
      const c = tf.reshape(causalMask(target[2], target[3], causal), [1, 1, target[2], target[3]]) as tf.Tensor4D;
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
