/**
 * Scaled dot-product attention: softmax(q k^T * scale + mask) v, with grouped-query
 * heads, boolean masks, causal masking (aligned bottom-right or top-left) and dropout on the probabilities.
 */
import * as tf from '@tensorflow/tfjs';
import {OP_NAMES} from '../arguments';
import {AttentionError, show} from '../errors';
import {assertBoolean, assertInteger, assertRate, checkArgNames} from '../validate';
import {AttentionDims, assertFits, attentionDims, groupHeads, isEmptyAttention, ungroupHeads, zeroAttention} from './heads';
import {CausalArg, causalAlignment, combineMasks, normalizeMask} from './masks';
import {entry, matMul, splitsProducts, swapLast} from './matmul';

/**
 * Added to the logits of masked keys. Finite, so a row with no key left stays finite
 * (it is zeroed afterwards), and far below any logit a float32 model produces.
 */
export const MASKED_LOGIT = -1e9;

export interface SdpaOptions {
  /** Bool or 0/1, 1 = may attend; [T, S], [B, T, S] or broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor | null;
  /**
   * true or 'bottom-right': query i sees key j iff j <= i + (S - T); 'top-left': iff j <= i
   * (PyTorch's is_causal, Keras' use_causal_mask). The same when T == S. Default false.
   */
  causal?: CausalArg;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /** Dropout rate on the attention probabilities, applied only when `training`. Default 0. */
  dropout?: number;
  /** Enables dropout. Default false. */
  training?: boolean;
  /** Integer seed for the dropout pattern. */
  seed?: number;
  /** Also return the attention probabilities [B, H, T, S] (before dropout). */
  returnWeights?: boolean;
}

/** The option names scaledDotProductAttention takes. */
export const SDPA_OPTIONS = ['mask', 'causal', 'scale', 'dropout', 'training', 'seed', 'returnWeights'] as const;

export interface AttentionWithWeights {
  /** [B, H, T, Dv] */
  output: tf.Tensor4D;
  /** [B, H, T, S]; rows with no visible key are all zero. */
  weights: tf.Tensor4D;
}

/**
 * Exact attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] with G dividing H;
 * query head h reads key/value head floor(h / (H / G)).
 *
 * Returns the output [B, H, T, Dv], or `{output, weights}` with `returnWeights`.
 * A query row with no key it may attend to gives zeros, not NaN.
 */
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: SdpaOptions & {returnWeights: true}): AttentionWithWeights;
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options?: SdpaOptions): tf.Tensor4D;
export function scaledDotProductAttention(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: SdpaOptions = {}): tf.Tensor4D | AttentionWithWeights {
  options = options ?? {};
  checkArgNames('scaledDotProductAttention', options, SDPA_OPTIONS, OP_NAMES);
  const dims = attentionDims(q, k, v);
  const {B, H, T, S, D} = dims;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new AttentionError('INVALID_CONFIG', `scale must be a finite number, received ${show(options.scale)}`);
  }
  const rate = options.dropout ?? 0;
  assertRate('dropout', rate);
  const causal = causalAlignment(options.causal);
  const training = options.training ?? false;
  assertBoolean('training', training);
  const returnWeights = options.returnWeights ?? false;
  assertBoolean('returnWeights', returnWeights);
  if (options.seed != null) assertInteger('seed', options.seed);

  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(normalizeMask(options.mask, [B, H, T, S])); // still checked
    const output = zeroAttention(q, k, v, dims);
    return returnWeights ? {output, weights: tf.zeros([B, H, T, S]) as tf.Tensor4D} : output;
  }
  assertFits('scaledDotProductAttention', 'the [B, H, T, S] attention weights', [B, H, T, S]);
  const dropping = training && rate > 0;
  const fast = splitsProducts() && !returnWeights && !dropping;

  return tf.tidy(() => {
    const allowed = combineMasks(options.mask, causal, [B, H, T, S]);
    if (fast) return splitAttention(q, k, v, allowed, scale, dims);

    // 1. Logits, with the query heads of each kv group folded into rows.
    const qg = groupHeads(tf.mul(q, scale), dims);                 // [B, G, R*T, D]
    let logits = ungroupHeads(matMul(qg, k, false, true), dims, T); // [B, H, T, S]

    // 2. Masked keys get a large negative logit; probabilities are zeroed there
    //    afterwards, which also turns rows with no visible key into zeros.
    let keep: tf.Tensor | null = null;
    if (allowed != null) {
      keep = tf.cast(allowed, 'float32');                         // broadcastable to [B, H, T, S]
      logits = tf.add(logits, tf.mul(tf.sub(1, keep), MASKED_LOGIT));
    }
    let weights = tf.softmax(logits);                              // [B, H, T, S]
    if (keep != null) weights = tf.mul(weights, keep);

    // 3. Dropout on the probabilities, then the weighted sum of values.
    const dropped = dropping ? tf.dropout(weights, rate, undefined, options.seed) : weights;
    const out = matMul(groupHeads(dropped, dims), v);           // [B, G, R*T, Dv]
    const output = ungroupHeads(out, dims, T) as tf.Tensor4D;      // [B, H, T, Dv]
    return returnWeights ? {output, weights: weights as tf.Tensor4D} : output;
  });
}

/**
 * The mask of kv group g of batch entry b, broadcastable to that group's logits viewed
 * as [R, T, S], from a rank-4 mask broadcastable to [B, H, T, S].
 */
function groupMask(m: tf.Tensor, b: number, g: number, dims: AttentionDims): tf.Tensor {
  const [Bm, Hm, Tm, Sm] = m.shape as number[];
  const heads = Hm === 1 ? [0, 1] : [g * dims.R, dims.R];
  return tf.reshape(tf.slice(m, [Bm === 1 ? 0 : b, heads[0], 0, 0], [1, heads[1], Tm, Sm]), [heads[1], Tm, Sm]);
}

/**
 * Exact attention for backends that want 2-D, non-transposed products: one tf.customGrad
 * whose forward and backward work one key/value group at a time ([R*T, D] x [D, S]
 * products), with the transposes done once on the small operands (k, v, q, dO) and the
 * backward's dK and dV computed transposed ([D, R*T] x [R*T, S]) so no T x S matrix is
 * ever transposed. Saves the probabilities of each group (one T x S matrix per query
 * head, as autograd of the general path does) and nothing else of size T x S.
 * No dropout (the caller takes the general path for it).
 */
function splitAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, allowed: tf.Tensor | null, scale: number,
                        dims: AttentionDims): tf.Tensor4D {
  const {B, H, G, R, T, S, D, Dv} = dims;
  const N = B * G;
  const keep = allowed != null ? tf.cast(allowed, 'float32') : null;                      // [Bm, Hm, Tm, Sm]
  const penalty = keep != null ? tf.mul(tf.sub(1, keep), MASKED_LOGIT) : null;

  const f = tf.customGrad(((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor, save: tf.GradSaveFunc) => {
    const qs = tf.reshape(tf.mul(qq, scale), [N, R * T, D]);                              // [N, R*T, D]
    const kT = swapLast(tf.reshape(kk, [N, S, D]));                                       // [N, D, S]
    const v3 = tf.reshape(vv, [N, S, Dv]);                                                // [N, S, Dv]
    const probs: tf.Tensor[] = [];
    const outs: tf.Tensor[] = [];
    for (let n = 0; n < N; n++) {
      const [p, o] = tf.tidy(() => {
        let logits = tf.matMul(entry(qs, n), entry(kT, n));                              // [R*T, S]
        const b = Math.floor(n / G);
        const g = n % G;
        if (penalty != null) logits = tf.add(tf.reshape(logits, [R, T, S]), groupMask(penalty, b, g, dims));
        let p = tf.softmax(logits);                                                       // [R, T, S] or [R*T, S]
        if (keep != null) p = tf.mul(p, groupMask(keep, b, g, dims));
        p = tf.reshape(p, [R * T, S]);
        return [p, tf.matMul(p, entry(v3, n))];                                           // [R*T, S], [R*T, Dv]
      });
      probs.push(p);
      outs.push(o);
    }
    save([qq, kk, vv, ...probs]);
    const out = tf.reshape(tf.concat(outs, 0), [B, H, T, Dv]);
    tf.dispose([qs, kT, v3, ...probs, ...outs]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => {
        const [sq, sk, sv, ...sp] = saved;
        const dO = tf.reshape(dy, [N, R * T, Dv]);                                        // [N, R*T, Dv]
        const dOT = swapLast(dO);                                                         // [N, Dv, R*T]
        const vT = swapLast(tf.reshape(sv, [N, S, Dv]));                                  // [N, Dv, S]
        const k3 = tf.reshape(sk, [N, S, D]);                                             // [N, S, D]
        const qsT = swapLast(tf.reshape(tf.mul(sq, scale), [N, R * T, D]));               // [N, D, R*T]
        const dQ: tf.Tensor[] = [];
        const dKT: tf.Tensor[] = [];
        const dVT: tf.Tensor[] = [];
        for (let n = 0; n < N; n++) {
          const [dq, dkT, dvT] = tf.tidy(() => {
            const p = sp[n];                                                              // [R*T, S]
            const dvT = tf.matMul(entry(dOT, n), p);                                      // [Dv, S] = (P^T dO)^T
            const dP = tf.matMul(entry(dO, n), entry(vT, n));                             // [R*T, S]
            const dS = tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), -1, true)));            // softmax backward
            const dq = tf.mul(tf.matMul(dS, entry(k3, n)), scale);                        // [R*T, D]
            const dkT = tf.matMul(entry(qsT, n), dS);                                     // [D, S] = (dS^T Q)^T
            return [dq, dkT, dvT];
          });
          dQ.push(dq);
          dKT.push(dkT);
          dVT.push(dvT);
        }
        return [
          tf.reshape(tf.concat(dQ, 0), [B, H, T, D]),
          tf.reshape(swapLast(tf.stack(dKT)), [B, G, S, D]),
          tf.reshape(swapLast(tf.stack(dVT)), [B, G, S, Dv]),
        ];
      }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor;
  return f(q, k, v) as tf.Tensor4D;
}
