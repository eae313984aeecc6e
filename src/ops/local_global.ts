/**
 * Local-global attention: every query attends (a) to the keys within `windowSize` W
 * positions of it and (b) to a few global positions; the two are softmaxed separately
 * and blended per head and channel by a gate,
 *   out = sigmoid(g[h, c]) * local + (1 - sigmoid(g[h, c])) * global.
 * (Sliding windows as in Longformer, Beltagy et al. 2020.)
 *
 * Both branches run in ops/tiled.ts's engine, inside one tf.customGrad: the forward keeps
 * each branch's output and per-row logsumexp, the backward recomputes the probabilities tile
 * by tile, so neither pass holds more than a few tiles of scores and memory is O(T*D).
 * Local branch: blocks of b >= W queries; a query block sees the keys within W of it as one
 * tile (one softmax; the backward adds its dK, dV into fixed key tiles of b), with the exact
 * band |i - j| <= W (and j <= i when causal) masked inside, never padded copies of q, k or v. Global branch: the
 * global keys and values are gathered ([Ng, D]) and attended to (only those j <= i when
 * causal). The gate's gradient and each branch's output gradient come straight from dOut.
 * No tensor of T x S entries is formed.
 */
import * as tf from '@tensorflow/tfjs';
import {noProbabilities} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {assertIndexList, assertPositiveInt, checkArgNames, ForeignName} from '../core/validate';
import {assertFits, attentionDims, isEmptyAttention, zeroAttention, attentionScale} from './heads';
import {CausalArg, causalAlignment} from './causal';
import {keyPaddingKeep} from './masks';
import {TilePlan} from './tile_plan';
import {tiledBackward, tiledForward} from './tiled';

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
  window: {code: 'INVALID_CONFIG', advice: 'use windowSize'},
  slidingWindow: {code: 'INVALID_CONFIG', advice: 'use windowSize'},
  globals: {code: 'INVALID_CONFIG', advice: 'use globalIndices'},
};

/**
 * The default local block (queries per tile): W itself, but at least MIN_LOCAL_BLOCK rows. A
 * block of b queries sees b + 2W keys in one tile (one softmax), so small blocks waste fewer
 * products but pay more per-op overhead: 128 was the fastest of 64 to 512 on wasm (docs/benchmarks.md).
 */
export const MIN_LOCAL_BLOCK = 128;
/** Queries per block of the global branch (each block's tile holds R * GLOBAL_BLOCK x Ng scores). */
const GLOBAL_BLOCK = 1024;
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

/**
 * Local-global attention over q [B, H, T, D], k [B, G, T, D], v [B, G, T, Dv] (self-
 * attention: queries and keys share positions, so T == S) with G dividing H. Returns
 * [B, H, T, Dv].
 */
export function localGlobalAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor,
    options: LocalGlobalOptions): tf.Tensor4D {
  if (options == null) throw new AttentionError('INVALID_CONFIG', 'localGlobalAttention needs options {windowSize, gate}');
  checkArgNames('localGlobalAttention', options, LOCAL_GLOBAL_OPTIONS, LOCAL_GLOBAL_NAMES);
  const dims = attentionDims(q, k, v);
  const {B, H, R, T, S, D, Dv} = dims;
  assertPositiveInt('windowSize', options.windowSize);
  if (T !== S) {
    throw new AttentionError('UNSUPPORTED',
      'local-global attention needs queries and keys of the same length (positions are shared), ' +
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
  const scale = attentionScale(options.scale, D);
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
  assertFits('localGlobalAttention', 'the scores of a local tile', [R * b, b]);
  const Ng = globals.length;
  // The local branch: tiles of b queries and b keys, the window as a band; the global branch:
  // attention to the Ng gathered global keys, in blocks of GLOBAL_BLOCK queries.
  const localPlan: TilePlan = {...dims, scale, causal, offset: 0, bq: b, bk: b, window: W};
  const globalPlan: TilePlan = {...dims, S: Ng, scale, causal: false, offset: 0, bq: Math.min(GLOBAL_BLOCK, T), bk: Ng};

  // The masks enter as (non-differentiated) inputs so they are saved for the backward pass:
  // the key keep [B, 1, 1, S] for the local branch, and for the global branch which global
  // keys each query may see ([B|1, 1, T|1, Ng]: causality and the key keep).
  const localKeep = options.mask == null ? null : tf.tidy(() => tf.reshape(tf.cast(tf.broadcastTo(   // [B, 1, 1, S]
    keyPaddingKeep(options.mask!, [B, H, T, S], 'local-global attention'), [B, S]), 'float32'), [B, 1, 1, S]));
  const globalKeep = Ng === 0 || (!causal && localKeep == null) ? null : tf.tidy(() => {
    let gk: tf.Tensor | null = null;
    if (causal) {
      const rows = new Float32Array(T * Ng);
      for (let i = 0; i < T; i++) globals.forEach((g, x) => { if (g <= i) rows[i * Ng + x] = 1; });
      gk = tf.tensor4d(rows, [1, 1, T, Ng]);
    }
    if (localKeep != null) {
      const kg01 = tf.gather(localKeep, tf.tensor1d(globals, 'int32'), 3);               // [B, 1, 1, Ng]
      gk = gk == null ? kg01 : tf.mul(gk, kg01);
    }
    return gk!;
  });

  const withLocal = localKeep != null;
  const withGlobal = globalKeep != null;
  const gatherGlobals = (x: tf.Tensor) => tf.tidy(() => tf.gather(x, tf.tensor1d(globals, 'int32'), 2));
  const run = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [qq, kk, vv, gg] = args as tf.Tensor[];
    const lk = withLocal ? args[4] as tf.Tensor : null;
    const gk = withGlobal ? args[withLocal ? 5 : 4] as tf.Tensor : null;
    const local = tiledForward(localPlan, qq, kk, vv, lk);                          // O, M, LL
    let global: tf.Tensor[] = [];
    if (Ng > 0) {
      const kg = gatherGlobals(kk);                                                 // [B, G, Ng, D]
      const vg = gatherGlobals(vv);                                                 // [B, G, Ng, Dv]
      global = tiledForward(globalPlan, qq, kg, vg, gk);
      tf.dispose([kg, vg]);
    }
    // The gate blend; with no valid global index the global branch is zero.
    const out = tf.tidy(() => {
      const sg = tf.reshape(tf.sigmoid(gg), [1, H, 1, Dv]);
      return Ng === 0 ? tf.mul(sg, local[0]) : tf.add(tf.mul(sg, local[0]), tf.mul(tf.sub(1, sg), global[0]));
    });
    const masks = [...(lk != null ? [lk] : []), ...(gk != null ? [gk] : [])];
    save([qq, kk, vv, gg, ...local, ...global, ...masks]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sgate, Ol, Ml, LLl] = saved;
        const [Og, Mg, LLg] = Ng > 0 ? saved.slice(7, 10) : [];
        const rest = saved.slice(Ng > 0 ? 10 : 7);
        const slk = withLocal ? rest[0] : null;
        const sgk = withGlobal ? rest[withLocal ? 1 : 0] : null;
        const sg = tf.tidy(() => tf.reshape(tf.sigmoid(sgate), [1, H, 1, Dv]));
        // d gate = sum over batch and positions of dy * (local - global) * s (1 - s).
        const dgate = tf.tidy(() => {
          const diff = Ng > 0 ? tf.mul(dy, tf.sub(Ol, Og)) : tf.mul(dy, Ol);
          return tf.reshape(tf.mul(tf.sum(diff, [0, 2], true), tf.mul(sg, tf.sub(1, sg))), [H, Dv]);
        });
        const dOl = tf.mul(dy, sg);
        let [dq, dk, dv] = tiledBackward(localPlan, dOl, sq, sk, sv, Ol, Ml, LLl, slk);
        dOl.dispose();
        if (Ng > 0) {
          const kg = gatherGlobals(sk);
          const vg = gatherGlobals(sv);
          const dOg = tf.tidy(() => tf.mul(dy, tf.sub(1, sg)));
          const [dqg, dkg, dvg] = tiledBackward(globalPlan, dOg, sq, kg, vg, Og, Mg, LLg, sgk);
          tf.dispose([kg, vg, dOg]);
          const addAt = (full: tf.Tensor, part: tf.Tensor) => {
            const sum = tf.tidy(() => tf.add(full, scatterGlobals(part, globals, S)));
            tf.dispose([full, part]);
            return sum;
          };
          const dqSum = tf.add(dq, dqg);
          tf.dispose([dq, dqg]);
          dq = dqSum;
          dk = addAt(dk, dkg);
          dv = addAt(dv, dvg);
        }
        sg.dispose();
        const maskGrads = [...(slk != null ? [tf.zerosLike(slk)] : []), ...(sgk != null ? [tf.zerosLike(sgk)] : [])];
        return [dq, dk, dv, dgate, ...maskGrads];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);

  const inputs = [q, k, v, gate, ...(localKeep != null ? [localKeep] : []),
    ...(globalKeep != null ? [globalKeep] : [])];
  const out = run(...inputs);
  tf.dispose([localKeep, globalKeep].filter((t) => t != null) as tf.Tensor[]);
  return out as tf.Tensor4D;
}

/** x [B, G, Ng, X] written at the global positions of a [B, G, S, X] tensor of zeros. */
function scatterGlobals(x: tf.Tensor, globals: readonly number[], S: number): tf.Tensor {
  const [B, G, Ng, X] = x.shape as number[];
  const idx: number[] = [];
  for (let b = 0; b < B; b++) for (let g = 0; g < G; g++) for (const p of globals) idx.push(b, g, p);
  return tf.scatterND(tf.tensor2d(idx, [B * G * Ng, 3], 'int32'), tf.reshape(x, [B * G * Ng, X]), [B, G, S, X]);
}
