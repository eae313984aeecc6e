/**
 * The random feature maps of linear attention (see ops/linear.ts for the formula and the
 * stabilisers): favorFeatures over whole [B, N, L, D] tensors, the key logits a decoding
 * cache shifts itself, and the same map over the rows of one unit as the FAVOR+ engine
 * (linear_engine.ts) computes it in both passes, with its gradient.
 */
import * as tf from '@tensorflow/tfjs';
import {OP_NAMES} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {assertOneOf, assertPositiveNumber, checkArgNames} from '../core/validate';
import {assertFits} from './heads';
import {matMul} from './matmul';
import {disposeAfter, unitMatMul} from './units';
import {zerosWithZeroGrads} from './zeros';

export const FEATURE_KERNELS = ['softmax', 'relu'] as const;
/** 'softmax': FAVOR+ positive random features; 'relu': relu(w.x') / sqrt(M) (a different kernel). */
export type FeatureKernel = typeof FEATURE_KERNELS[number];

/** Added to every softmax feature (before the 1/sqrt(M) factor), as the Performer reference does. */
export const SOFTMAX_STABILIZER = 1e-6;
/** Added to every relu feature, as the Performer reference does. */
export const RELU_STABILIZER = 1e-3;

/** The option names of favorFeatures. */
export const FEATURE_OPTIONS = ['role', 'kernel', 'scale'] as const;

export interface FeatureOptions {
  /**
   * 'query': the stabilising max is taken per row; 'key': over all rows and features of
   * each batch and head (per-row shifts would not cancel across keys).
   */
  role: 'query' | 'key';
  /** Default 'softmax'. */
  kernel?: FeatureKernel;
  /** The attention scale; the data is multiplied by sqrt(scale). Default 1 / sqrt(D). */
  scale?: number;
}

/**
 * phi = exp(wx - diag - c) / sqrt(M) + eps / sqrt(M) as [B, N, L, M], from wx [B*N*L, M]
 * and diag [B*N*L, 1], with c = max(wx - diag) per row ('query') or per (batch, head)
 * ('key'), a constant for autograd. One custom gradient instead of a chain of
 * elementwise ops keeps the backward pass to two [.., M] tensors rather than one per op:
 * with phi' = phi - eps / sqrt(M), d wx = dphi * phi' and d diag = -rowsum(dphi * phi').
 */
function positiveFeatures(wx: tf.Tensor, diag: tf.Tensor, role: 'query' | 'key', shape: number[]): tf.Tensor4D {
  const [B, N, L, M] = shape;
  const floor = SOFTMAX_STABILIZER / Math.sqrt(M);
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [a, d, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    // Step by step, freeing each [.., M] intermediate as soon as the next exists.
    const logits = tf.tidy(() => tf.reshape(tf.sub(a, d), [B * N, L, M]));   // [B*N, L, M]
    const axes = role === 'query' ? [2] : [1, 2];
    const shift = tf.tidy(() => tf.add(tf.max(logits, axes, true), 0.5 * Math.log(M))); // folds in 1 / sqrt(M)
    const e = tf.tidy(() => tf.exp(tf.sub(logits, shift)));
    logits.dispose();
    const phi = tf.tidy(() => tf.reshape(tf.add(e, floor), shape));          // [B, N, L, M]
    e.dispose();
    save([phi]);
    return {
      value: phi,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dwx = tf.reshape(tf.mul(dy, tf.sub(saved[0], floor)), [B * N * L, M]); // [B*N*L, M]
        return [dwx, tf.neg(tf.sum(dwx, -1, true))];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(wx, diag) as tf.Tensor4D;
}

/**
 * Random features phi(x) [B, N, L, M] of x [B, N, L, D] (queries or keys) for the
 * projection [M, D]. See ops/linear.ts's file comment for the formula and the stabilisers.
 */
export function favorFeatures(x: tf.Tensor, projection: tf.Tensor, options: FeatureOptions): tf.Tensor4D {
  if (options == null) throw new AttentionError('INVALID_CONFIG', "favorFeatures needs options {role: 'query' | 'key'}");
  checkArgNames('favorFeatures', options, FEATURE_OPTIONS, OP_NAMES);
  const kernel = options.kernel ?? 'softmax';
  assertOneOf('kernel', kernel, FEATURE_KERNELS);
  assertOneOf('role', options.role, ['query', 'key'] as const);
  if (!(x instanceof tf.Tensor) || x.rank !== 4) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `x must be a rank-4 tensor ([batch, heads, length, dim]), received ${x instanceof tf.Tensor ? `shape ${show(x.shape)}` : show(x)}`);
  }
  const [B, N, L, D] = x.shape as number[];
  checkProjection(projection, D);
  const scale = options.scale ?? 1 / Math.sqrt(D);
  assertPositiveNumber('scale', scale);
  const M = projection.shape[0] as number;
  if (x.size === 0) return zerosWithZeroGrads([B, N, L, M], [x, projection]) as tf.Tensor4D; // nothing to map
  assertFits('favorFeatures', 'the features', [B, N, L, M]);
  return tf.tidy(() => {
    const xs = tf.mul(x, Math.sqrt(scale));        // [B, N, L, D]
    // relu(w.x') / sqrt(M) = relu(w.(x' / sqrt(M))): the factor goes on the small side.
    const xw = kernel === 'relu' ? tf.div(xs, Math.sqrt(M)) : xs;
    const x2 = tf.reshape(xw, [B * N * L, D]);           // [B*N*L, D]
    const wx = matMul(x2, projection, false, true); // [B*N*L, M]
    if (kernel === 'relu') return tf.reshape(tf.add(tf.relu(wx), RELU_STABILIZER), [B, N, L, M]) as tf.Tensor4D;
    const diag = tf.div(tf.sum(tf.square(x2), -1, true), 2); // [B*N*L, 1]
    return positiveFeatures(wx, diag, options.role, [B, N, L, M]);
  });
}

/** Throws DIMENSION_MISMATCH unless `projection` is a [numFeatures, D] tensor with numFeatures >= 1. */
export function checkProjection(projection: tf.Tensor, D: number): void {
  if (!(projection instanceof tf.Tensor) || projection.rank !== 2 || projection.shape[1] !== D ||
      projection.shape[0] === 0) {
    const got = projection instanceof tf.Tensor ? `shape ${show(projection.shape)}` : show(projection);
    throw new AttentionError('DIMENSION_MISMATCH',
      `projection must be a [numFeatures, ${D}] tensor (its last dim the head dim), received ${got}`);
  }
}

/**
 * The key logits a = w.k' - |k'|^2 / 2 [B, G, S, M] (k' = k sqrt(scale)), before the shift
 * and the exp of the softmax features: phi(k) = exp(a - c) + SOFTMAX_STABILIZER / sqrt(M)
 * for a shift c shared by the keys of a batch and head (favorFeatures takes c = max a +
 * log(M) / 2). A decoding cache keeps its own c as keys arrive.
 */
export function softmaxKeyLogits(k: tf.Tensor, projection: tf.Tensor, scale?: number): tf.Tensor4D {
  const [B, G, S, D] = k.shape as number[];
  checkProjection(projection, D);
  const M = projection.shape[0] as number;
  const sc = scale ?? 1 / Math.sqrt(D);
  return tf.tidy(() => {
    const x2 = tf.reshape(tf.mul(k, Math.sqrt(sc)), [B * G * S, D]);           // [B*G*S, D]
    const wx = matMul(x2, projection, false, true);                            // [B*G*S, M]
    const diag = tf.div(tf.sum(tf.square(x2), -1, true), 2);                    // [B*G*S, 1]
    return tf.reshape(tf.sub(wx, diag), [B, G, S, M]) as tf.Tensor4D;
  });
}

/** What the feature map of the engine's rows depends on: the kernel, the feature count M and the scale. */
export interface FeatureMap {
  kernel: FeatureKernel;
  M: number;
  scale: number;
}

/** x [N, L, D] scaled: the rows xw that multiply the projection (with relu's 1 / sqrt(M) on this small side). */
export function scaledRows(p: FeatureMap, x: tf.Tensor): tf.Tensor {
  const xs = tf.mul(x, Math.sqrt(p.scale));                                         // [N, L, D]
  return p.kernel === 'relu' ? disposeAfter(xs, (t) => tf.div(t, Math.sqrt(p.M))) : xs;
}

/**
 * The softmax shift of key rows xw [N, L, D] with logits wx [N, L, M]: the max over all
 * their rows and features of w.k' - |k'|^2 / 2, plus log(M) / 2 (the 1 / sqrt(M) factor),
 * as [N, 1, 1], taken row by row.
 */
export function keyShift(p: FeatureMap, xw: tf.Tensor, wx: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const diag = tf.div(tf.sum(tf.square(xw), -1, true), 2);                        // [N, L, 1]
    return tf.add(tf.max(tf.sub(tf.max(wx, -1, true), diag), 1, true), 0.5 * Math.log(p.M)); // [N, 1, 1]
  });
}

/**
 * The features phi [N, L, M] of rows x [N, L, D] and xw [N, L, D], the scaled rows that
 * multiply the projection (PT = projection^T [D, M]): favorFeatures' map. The softmax
 * shift: 'row' for queries, each row's max (a row's |x'|^2 / 2 cancels in it); for keys,
 * 'all' when x holds all the unit's keys, else the unit's key shift [N, 1, 1]. Keys are
 * multiplied by their keep [N or 1, L, 1] when given.
 */
export function unitFeatures(p: FeatureMap, x: tf.Tensor, PT: tf.Tensor, shift: 'row' | 'all' | tf.Tensor,
                             keep: tf.Tensor | null): {phi: tf.Tensor; xw: tf.Tensor} {
  return tf.tidy(() => {
    const xw = scaledRows(p, x);                                                    // [N, L, D]
    const wx = unitMatMul(xw, PT);                                                  // [N, L, M]
    let phi: tf.Tensor;
    if (p.kernel === 'relu') {
      phi = disposeAfter(disposeAfter(wx, tf.relu), (t) => tf.add(t, RELU_STABILIZER));
    } else {
      const rows = shift === 'row' ? tf.add(tf.max(wx, -1, true), 0.5 * Math.log(p.M))   // [N, L, 1]
        : tf.add(tf.div(tf.sum(tf.square(xw), -1, true), 2), shift === 'all' ? keyShift(p, xw, wx) : shift);
      const floor = SOFTMAX_STABILIZER / Math.sqrt(p.M);
      phi = disposeAfter(disposeAfter(disposeAfter(wx, (t) => tf.sub(t, rows)), tf.exp), (t) => tf.add(t, floor));
    }
    if (keep != null) phi = disposeAfter(phi, (t) => tf.mul(t, keep));
    return {phi, xw};
  });
}

/**
 * Back through `unitFeatures`, the shift a constant: dx [N, L, D] and the rows' share of
 * d projection^T [D, M], from dphi [N, L, M] (disposed), the features phi and the scaled rows xw:
 *   softmax: d wx = dphi * (phi - eps / sqrt(M)),  d xw = d wx P - rowsum(d wx) * xw;
 *   relu:    d wx = dphi * (wx > 0),               d xw = d wx P;
 * and d P^T = xw^T d wx. (Masked keys have dphi = 0, so a phi multiplied by keep serves.)
 */
export function unitFeatureGrad(p: FeatureMap, dphi: tf.Tensor, phi: tf.Tensor, xw: tf.Tensor,
                                P: tf.Tensor): {dx: tf.Tensor; dPT: tf.Tensor} {
  return tf.tidy(() => {
    const [N, L, D] = xw.shape as number[];
    // wx > 0 read from the features: relu(wx) + eps > eps (they differ only for wx below an ulp of eps).
    const factor = p.kernel === 'relu' ? tf.cast(tf.greater(phi, RELU_STABILIZER), 'float32')
      : tf.sub(phi, SOFTMAX_STABILIZER / Math.sqrt(p.M));
    const dwx = tf.mul(dphi, factor);                                              // [N, L, M]
    tf.dispose([dphi, factor]);
    let dxw = unitMatMul(dwx, P);                                                   // [N, L, D]
    if (p.kernel === 'softmax') dxw = tf.sub(dxw, tf.mul(tf.sum(dwx, -1, true), xw));
    const xT = tf.transpose(tf.reshape(xw, [N * L, D]));                            // [D, N*L]
    const dPT = tf.matMul(xT, tf.reshape(dwx, [N * L, p.M]));                       // [D, M]
    const c = Math.sqrt(p.scale) / (p.kernel === 'relu' ? Math.sqrt(p.M) : 1);
    return {dx: tf.mul(dxw, c), dPT};
  });
}
