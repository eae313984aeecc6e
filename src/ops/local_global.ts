/**
 * Local-global attention: every query attends (a) to the keys within `windowSize` W
 * positions of it and (b) to a few global positions; the two are softmaxed separately
 * and blended per head and channel by a gate,
 *   out = sigmoid(g[h, c]) * local + (1 - sigmoid(g[h, c])) * global.
 * (Sliding windows as in Longformer, Beltagy et al. 2020; the gated blend of a local and
 * a global branch as in the seeds' LocalGlobalAttention.)
 *
 * Local branch in blocks of b >= W rows: query block n attends to key blocks n-1, n and
 * n+1 (pad, slice, concat), with the exact band |i - j| <= W (and j <= i when causal)
 * masked inside, so time and memory are O(T*b), never O(T*S). Global branch: the global
 * keys and values are gathered ([Ng, D]) and attended to (only those j <= i when causal).
 * No tensor of T x S entries is formed.
 */
import * as tf from '@tensorflow/tfjs';
import {matMul} from './matmul';
import {noProbabilities} from '../arguments';
import {AttentionError, show} from '../errors';
import {assertIndexList, assertPositiveInt, checkArgNames, ForeignName} from '../validate';
import {assertFits, attentionDims, groupHeads, isEmptyAttention, repeatHeads, ungroupHeads, zeroAttention} from './heads';
import {CausalArg, causalAlignment, keyPaddingKeep} from './masks';
import {MASKED_LOGIT} from './sdpa';

export interface LocalGlobalOptions {
  /** W >= 1: query i sees local keys j with |i - j| <= W. */
  windowSize: number;
  /** Positions every query also attends to; those >= the sequence length are ignored. Default []. */
  globalIndices?: readonly number[];
  /** [H, Dv] gate logits g: out = sigmoid(g) * local + (1 - sigmoid(g)) * global. */
  gate: tf.Tensor;
  /**
   * Query i sees keys j <= i only, in both branches. Queries and keys share positions
   * (T == S), so true, 'top-left' and 'bottom-right' all mean this. Default false.
   */
  causal?: CausalArg;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
  /**
   * Key padding mask, bool or 0/1, 1 = may attend, broadcastable to [B, 1, 1, S]
   * ([B, 1, 1, S], [B, 1, S] or [1, S]); applied in both branches. Other masks throw
   * UNSUPPORTED: they would need the T x S matrix this op avoids.
   */
  mask?: tf.Tensor | null;
  /** Rows per local block, >= windowSize. Default localBlockSize(windowSize). */
  blockSize?: number;
}

/** The option names localGlobalAttention takes. */
export const LOCAL_GLOBAL_OPTIONS = ['windowSize', 'globalIndices', 'gate', 'causal', 'scale', 'mask', 'blockSize'] as const;

const LOCAL_GLOBAL_NAMES: Readonly<Record<string, ForeignName>> = {
  ...noProbabilities('localGlobalAttention'),
  window: {code: 'INVALID_CONFIG', advice: "use windowSize"},
  slidingWindow: {code: 'INVALID_CONFIG', advice: "use windowSize"},
  globals: {code: 'INVALID_CONFIG', advice: "use globalIndices"},
};

/**
 * The default local block: W itself, but at least MIN_LOCAL_BLOCK rows, since tiny
 * blocks mean many tiny products (each block costs 3b keys per query whatever W is).
 */
export const MIN_LOCAL_BLOCK = 16;
export function localBlockSize(windowSize: number): number {
  return Math.max(windowSize, MIN_LOCAL_BLOCK);
}

/**
 * The valid global positions for a length S: integers in [0, S), sorted, without
 * repeats. Throws INVALID_CONFIG for negative or non-integer entries.
 */
export function validGlobalIndices(indices: readonly number[], S: number): number[] {
  checkGlobalIndices(indices);
  return [...new Set(indices)].filter((g) => g < S).sort((a, b) => a - b);
}

/** Throws INVALID_CONFIG unless `indices` is an array of non-negative integers. */
export function checkGlobalIndices(indices: unknown): asserts indices is number[] {
  assertIndexList('globalIndices', indices);
}

/** Softmax over the last axis where keep = 1; rows with no kept entry give zeros. */
function maskedSoftmax(logits: tf.Tensor, keep: tf.Tensor): tf.Tensor {
  const p = tf.softmax(tf.add(logits, tf.mul(tf.sub(1, keep), MASKED_LOGIT)));
  return tf.mul(p, keep);
}

/**
 * 0/1 [nb, b, 3b]: query i of block n (position n*b + i) may see entry j of its window
 * (position (n-1)*b + j) iff that position is in [0, T), within W, and not later when causal.
 */
function bandMask(T: number, nb: number, b: number, W: number, causal: boolean): tf.Tensor3D {
  const data = new Float32Array(nb * b * 3 * b);
  for (let n = 0; n < nb; n++) {
    for (let i = 0; i < b; i++) {
      const p = n * b + i;
      for (let j = 0; j < 3 * b; j++) {
        const pk = (n - 1) * b + j;
        const ok = pk >= 0 && pk < T && Math.abs(p - pk) <= W && (!causal || pk <= p);
        if (ok) data[(n * b + i) * 3 * b + j] = 1;
      }
    }
  }
  return tf.tensor3d(data, [nb, b, 3 * b]);
}

/** x [N, Tp, X] (Tp = nb*b) padded by one block each side -> windows [N*nb, 3b, X] of blocks n-1, n, n+1. */
function windows(x: tf.Tensor, nb: number, b: number): tf.Tensor {
  const [N, Tp, X] = x.shape as number[];
  const padded = tf.pad(x, [[0, 0], [b, b], [0, 0]]); // [N, Tp + 2b, X]
  const shifted = [0, b, 2 * b].map((s) =>
    tf.reshape(tf.slice(padded, [0, s, 0], [N, Tp, X]), [N * nb, b, X])); // [N*nb, b, X] each
  return tf.concat(shifted, 1); // [N*nb, 3b, X]
}

/**
 * Local-global attention over q [B, H, T, D], k [B, G, T, D], v [B, G, T, Dv] (self-
 * attention: queries and keys share positions, so T == S) with G dividing H. Returns
 * [B, H, T, Dv].
 */
export function localGlobalAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: LocalGlobalOptions): tf.Tensor4D {
  if (options == null) throw new AttentionError('INVALID_CONFIG', 'localGlobalAttention needs options {windowSize, gate}');
  checkArgNames('localGlobalAttention', options, LOCAL_GLOBAL_OPTIONS, LOCAL_GLOBAL_NAMES);
  const dims = attentionDims(q, k, v);
  const {B, H, R, T, S, D, Dv} = dims;
  assertPositiveInt('windowSize', options.windowSize);
  if (T !== S) {
    throw new AttentionError('UNSUPPORTED',
      `local-global attention needs queries and keys of the same length (positions are shared), ` +
      `received T=${T} and S=${S}`);
  }
  const gate = options.gate;
  if (!(gate instanceof tf.Tensor) || gate.rank !== 2 || gate.shape[0] !== H || gate.shape[1] !== Dv) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `gate must be a [heads, valueDim] = ${show([H, Dv])} tensor, received ` +
      (gate instanceof tf.Tensor ? `shape ${show(gate.shape)}` : show(gate)));
  }
  if (options.blockSize != null) {
    assertPositiveInt('blockSize', options.blockSize);
    if (options.blockSize < options.windowSize) {
      throw new AttentionError('INVALID_CONFIG',
        `blockSize (${options.blockSize}) must be at least windowSize (${options.windowSize})`);
    }
  }
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new AttentionError('INVALID_CONFIG', `scale must be a finite number, received ${show(options.scale)}`);
  }
  const causal = causalAlignment(options.causal) != null;
  const globals = validGlobalIndices(options.globalIndices ?? [], S);
  if (isEmptyAttention(dims)) {
    if (options.mask != null) tf.dispose(keyPaddingKeep(options.mask, [B, H, T, S], 'local-global attention')); // still checked
    return zeroAttention(q, k, v, dims, gate);
  }
  // A window or block longer than the sequence changes nothing: clamp both before allocating.
  // (|i - j| <= T - 1 already holds for every pair; one block of T rows holds the sequence.)
  const W = Math.min(options.windowSize, T - 1);
  const b = Math.min(options.blockSize ?? localBlockSize(W), T);
  assertFits('localGlobalAttention', 'the [B*H, blocks, blockSize, 3*blockSize] local scores',
    [B * H, Math.ceil(T / b), b, 3 * b]);

  return tf.tidy(() => {
    const keyKeep = options.mask != null                                                  // [B, S]
      ? tf.broadcastTo(keyPaddingKeep(options.mask, [B, H, T, S], 'local-global attention'), [B, S]) : null;

    // 1. Local branch, per query head, in blocks of b rows.
    const nb = Math.ceil(T / b);
    const Tp = nb * b;
    const padRows = (x: tf.Tensor) => (Tp === T ? x : tf.pad(x, [[0, 0], [0, Tp - T], [0, 0]]));
    const qb = tf.reshape(padRows(tf.reshape(tf.mul(q, scale), [B * H, T, D])), [B * H * nb, b, D]); // [B*H*nb, b, D]
    const kw = windows(padRows(tf.reshape(repeatHeads(k, R), [B * H, T, D])), nb, b);               // [B*H*nb, 3b, D]
    const vw = windows(padRows(tf.reshape(repeatHeads(v, R), [B * H, T, Dv])), nb, b);              // [B*H*nb, 3b, Dv]
    let keep: tf.Tensor = tf.reshape(bandMask(T, nb, b, W, causal), [1, nb, b, 3 * b]);            // [1, nb, b, 3b]
    if (keyKeep != null) {
      const kwin = windows(padRows(tf.reshape(keyKeep, [B, T, 1])), nb, b);                      // [B*nb, 3b, 1]
      const perHead = tf.tile(tf.reshape(kwin, [B, 1, nb * 3 * b]), [1, H, 1]);                  // [B, H, nb*3b]
      keep = tf.mul(keep, tf.reshape(perHead, [B * H, nb, 1, 3 * b]));                            // [B*H, nb, b, 3b]
    }
    const scores = tf.reshape(matMul(qb, kw, false, true), [B * H, nb, b, 3 * b]);             // [B*H, nb, b, 3b]
    const probs = tf.reshape(maskedSoftmax(scores, keep), [B * H * nb, b, 3 * b]);
    const local = tf.reshape(tf.slice(tf.reshape(matMul(probs, vw), [B * H, Tp, Dv]), [0, 0, 0], [B * H, T, Dv]),
      [B, H, T, Dv]);                                                                               // [B, H, T, Dv]

    // 2. Global branch: attend to the gathered global keys and values.
    let global: tf.Tensor | null = null;
    if (globals.length > 0) {
      const idx = tf.tensor1d(globals, 'int32');
      const kg = tf.gather(k, idx, 2);                                                        // [B, G, Ng, D]
      const vg = tf.gather(v, idx, 2);                                                        // [B, G, Ng, Dv]
      const gl = ungroupHeads(matMul(groupHeads(tf.mul(q, scale), dims), kg, false, true), dims, T); // [B, H, T, Ng]
      let gkeep: tf.Tensor | null = null;
      if (causal) {
        const rows = Array.from({length: T}, (_, i) => globals.map((g) => (g <= i ? 1 : 0)));
        gkeep = tf.reshape(tf.tensor2d(rows, [T, globals.length]), [1, 1, T, globals.length]); // [1, 1, T, Ng]
      }
      if (keyKeep != null) {
        const kg01 = tf.reshape(tf.gather(keyKeep, idx, 1), [B, 1, 1, globals.length]);      // [B, 1, 1, Ng]
        gkeep = gkeep == null ? kg01 : tf.mul(gkeep, kg01);                                   // [B, 1, T|1, Ng]
      }
      const gp = gkeep == null ? tf.softmax(gl) : maskedSoftmax(gl, gkeep);                 // [B, H, T, Ng]
      global = ungroupHeads(matMul(groupHeads(gp, dims), vg), dims, T);                    // [B, H, T, Dv]
    }

    // 3. The gate blend; with no valid global index the global branch is zero.
    const s = tf.reshape(tf.sigmoid(gate), [1, H, 1, Dv]); // [1, H, 1, Dv]
    const out = global == null ? tf.mul(s, local) : tf.add(tf.mul(s, local), tf.mul(tf.sub(1, s), global));
    return out as tf.Tensor4D;
  });
}
