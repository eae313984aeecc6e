/**
 * The plan of linear attention's FAVOR+ engine (linear_engine.ts): the query chunks and key
 * blocks of a call, the units of (batch, group) pairs worked at once, the rows of a unit,
 * its key keep, and the masks of the products inside a chunk.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionDims} from './heads';
import {FeatureKernel, FeatureMap} from './linear_features';
import {disposeAfter, unitsAtOnce} from './units';

/**
 * Queries [t0, t0 + nq) of a chunk and their key block [s0, s0 + nb): query t0 + a sees
 * every key before s0 (the state) and block key s0 + b iff b - a <= d.
 */
export interface Chunk {t0: number; nq: number; s0: number; nb: number; d: number}

/**
 * Query rows per chunk when not causal (the features of one chunk exist at a time): on wasm
 * the size of the pieces barely changes the time, and 512 rows hold less heap than larger ones.
 */
export const QUERY_PIECE = 512;

/** A call of the engine: its dimensions, its feature map and its chunks. */
export interface FavorPlan extends AttentionDims, FeatureMap {
  /** Keys [0, first) start every state: all keys when not causal. */
  first: number;
  /** The query chunks in order; their key blocks tile [first, end of the last block). */
  chunks: Chunk[];
}

/**
 * The chunks of a call. Not causal: pieces of QUERY_PIECE queries over a state of all keys
 * and no block. Causal (query i sees key j iff j <= i + offset): chunks of `chunk` queries,
 * the block of [t0, t0 + nq) being keys clamp([t0 + offset, t0 + nq + offset), 0, S).
 */
export function favorPlan(dims: AttentionDims, M: number, kernel: FeatureKernel, scale: number, offset: number | null,
                          chunk: number): FavorPlan {
  const {T, S} = dims;
  const chunks: Chunk[] = [];
  if (offset == null) {
    for (let t0 = 0; t0 < T; t0 += QUERY_PIECE) {
      chunks.push({t0, nq: Math.min(QUERY_PIECE, T - t0), s0: S, nb: 0, d: 0});
    }
    return {...dims, M, kernel, scale, first: S, chunks};
  }
  const clamp = (x: number) => Math.min(Math.max(x, 0), S);
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const nq = Math.min(chunk, T - t0);
    const s0 = clamp(t0 + offset);
    chunks.push({t0, nq, s0, nb: clamp(t0 + nq + offset) - s0, d: t0 + offset - s0});
  }
  return {...dims, M, kernel, scale, first: clamp(offset), chunks};
}

/** The (batch, group) pairs [i, i + N) worked at once. */
export interface Unit {i: number; N: number}

/**
 * Elements of a unit's largest intermediate (its key features, a chunk's query features or
 * products) that a batch of units may hold on wasm (2 MiB of float32): long sequences go one
 * unit at a time, short ones together.
 */
export const LINEAR_UNIT_ELEMENTS = 2 ** 19;

/** Runs of consecutive pairs as `unitsAtOnce` allows: single pairs where products are split, all B*G elsewhere. */
export function favorUnits(p: FavorPlan): Unit[] {
  const total = p.B * p.G;
  const rows = Math.max(1, ...p.chunks.map((c) => c.nq));
  const cols = Math.max(1, ...p.chunks.map((c) => c.nb));
  const n = unitsAtOnce(total, Math.max(p.S * p.M, p.R * rows * p.M, p.R * rows * cols), LINEAR_UNIT_ELEMENTS);
  const out: Unit[] = [];
  for (let i = 0; i < total; i += n) out.push({i, N: Math.min(n, total - i)});
  return out;
}

/**
 * A [B*G, R*L, C] tensor (the R query heads of a group stacked along rows; R = 1 for keys)
 * to cut into pieces of rows. (On wasm the library's Slice kernel reads the heap in place, so
 * a piece costs its own size, not the source's: see wasm_kernels.ts.)
 */
export interface GroupRows {x: tf.Tensor; R: number}

/** x3 [B*G, R*L, C] as the rows of the R heads of each group. */
export function groupRows(x3: tf.Tensor, R: number): GroupRows {
  return {x: x3, R};
}

/** Rows [start, start + n) of each of the R heads of the unit: [N, R*n, C]. */
export function unitRows(s: GroupRows, u: Unit, start: number, n: number): tf.Tensor {
  const [U, RL, C] = s.x.shape as number[];
  const L = RL / s.R;
  if (u.N === U && start === 0 && n === L) return tf.reshape(s.x, s.x.shape); // a view (tf.clone copies on wasm)
  const x4 = tf.reshape(s.x, [U, s.R, L, C]);                                    // [U, R, L, C]
  const piece = tf.slice(x4, [u.i, 0, start, 0], [u.N, s.R, n, C]);               // [N, R, n, C]
  x4.dispose();
  return disposeAfter(piece, (t) => tf.reshape(t, [u.N, s.R * n, C]));            // [N, R*n, C]
}

/** The key keep of the unit, [N or 1, S, 1], from keep [Bm, S]; null without a mask. */
export function unitKeep(p: FavorPlan, u: Unit, keep: tf.Tensor | null): tf.Tensor | null {
  if (keep == null) return null;
  const {B, G, S} = p;
  if (keep.shape[0] === 1) return tf.reshape(keep, [1, S, 1]);
  if (u.N === 1) return tf.reshape(tf.slice(keep, [Math.floor(u.i / G), 0], [1, S]), [1, S, 1]);
  const all = tf.reshape(tf.broadcastTo(tf.reshape(keep, [B, 1, S]), [B, G, S]), [B * G, S, 1]); // [B*G, S, 1]
  return u.N === B * G ? all : disposeAfter(all, (t) => tf.slice(t, [u.i, 0, 0], [u.N, S, 1]));
}

/** The chunk masks of a plan by shape: [nq, nb] and its transpose as [nb, 1, nq], 0/1. */
export function chunkMasks(p: FavorPlan): Map<string, tf.Tensor[]> {
  const masks = new Map<string, tf.Tensor[]>();
  for (const {nq, nb, d} of p.chunks) {
    const key = `${nq},${nb},${d}`;
    if (nb === 0 || masks.has(key)) continue;
    const m = new Float32Array(nq * nb);
    const mT = new Float32Array(nq * nb);
    for (let a = 0; a < nq; a++) {
      for (let b = 0; b < nb && b - a <= d; b++) {
        m[a * nb + b] = 1;
        mT[b * nq + a] = 1;
      }
    }
    masks.set(key, [tf.tensor2d(m, [nq, nb]), tf.tensor3d(mT, [nb, 1, nq])]);
  }
  return masks;
}

/** The masks of chunk c: [nq, nb] and its transpose [nb, 1, nq] (see chunkMasks). */
export function chunkMask(masks: Map<string, tf.Tensor[]>, c: Chunk): tf.Tensor[] {
  return masks.get(`${c.nq},${c.nb},${c.d}`)!;
}

/** s [N, R*nq, nb] (each head's query rows against the block) times the mask [nq, nb]. */
export function maskRows(p: FavorPlan, s: tf.Tensor, mask: tf.Tensor): tf.Tensor {
  const [N, rows, nb] = s.shape as number[];
  const m = disposeAfter(disposeAfter(s, (x) => tf.reshape(x, [N, p.R, rows / p.R, nb])), // [N, R, nq, nb]
    (x) => tf.mul(x, mask));
  return disposeAfter(m, (x) => tf.reshape(x, [N, rows, nb]));
}

/** sT [N, nb, R*nq] (the block against each head's query rows) times the transposed mask [nb, 1, nq]. */
export function maskCols(p: FavorPlan, sT: tf.Tensor, maskT: tf.Tensor): tf.Tensor {
  const [N, nb, cols] = sT.shape as number[];
  const m = disposeAfter(disposeAfter(sT, (x) => tf.reshape(x, [N, nb, p.R, cols / p.R])), // [N, nb, R, nq]
    (x) => tf.mul(x, maskT));
  return disposeAfter(m, (x) => tf.reshape(x, [N, nb, cols]));
}
