/**
 * Block masks (FlexAttention's create_block_mask): a mask mod evaluated once, block by block,
 * into which (query block, key block) tiles are empty (never computed), full (computed without
 * a mask) or partial (computed with the mod applied). Built once per shape and reused across
 * layers and steps; it holds no tensor.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt, assertPositiveInt, checkArgNames} from '../core/validate';
import {maskOf} from './flex_mods';
import {MaskMod, ModContext} from './flex_types';
import {blocks} from './tile_plan';

/** Block size of createBlockMask when none is given (PyTorch's default). */
export const DEFAULT_FLEX_BLOCK = 128;

/** What a tile of a block mask is. */
export const EMPTY = 0;
export const PARTIAL = 1;
export const FULL = 2;

export interface BlockMaskOptions {
  /** Query positions and keys per block: one number for both, or [queries, keys]. Default 128. */
  blockSize?: number | readonly [number, number];
}

/**
 * Which tiles of the attention a mask mod leaves empty, full or partial, for each batch entry
 * and head it was built for (1 of either: the same for every one). Built by createBlockMask.
 */
export class BlockMask {
  /** Per (b, h) pair (index b * heads + h), per tile (i * numKeyBlocks + j): EMPTY, PARTIAL or FULL. */
  private readonly states: Uint8Array[];

  constructor(readonly maskMod: MaskMod, readonly batch: number, readonly heads: number,
              readonly queryLength: number, readonly keyLength: number,
              readonly queryBlockSize: number, readonly keyBlockSize: number, states: Uint8Array[]) {
    this.states = states;
  }

  get numQueryBlocks(): number { return Math.ceil(this.queryLength / this.queryBlockSize); }
  get numKeyBlocks(): number { return Math.ceil(this.keyLength / this.keyBlockSize); }

  /** The state of tile (i, j) for batch entry b and head h (taken as 0 where the mask has one). */
  state(b: number, h: number, i: number, j: number): number {
    const pair = (this.batch === 1 ? 0 : b) * this.heads + (this.heads === 1 ? 0 : h);
    return this.states[pair][i * this.numKeyBlocks + j];
  }

  /** The key blocks query block i sees wholly (full) and in part (partial), in order. */
  keyBlocks(b: number, h: number, i: number): {full: number[]; partial: number[]} {
    const out = {full: [] as number[], partial: [] as number[]};
    for (let j = 0; j < this.numKeyBlocks; j++) {
      const s = this.state(b, h, i, j);
      if (s === FULL) out.full.push(j);
      else if (s === PARTIAL) out.partial.push(j);
    }
    return out;
  }

  /** The transposed lists: the query blocks that see key block j wholly and in part, in order. */
  queryBlocks(b: number, h: number, j: number): {full: number[]; partial: number[]} {
    const out = {full: [] as number[], partial: [] as number[]};
    for (let i = 0; i < this.numQueryBlocks; i++) {
      const s = this.state(b, h, i, j);
      if (s === FULL) out.full.push(i);
      else if (s === PARTIAL) out.partial.push(i);
    }
    return out;
  }

  /**
   * For a range of batch entries and heads worked at once: the state of tile (i, j) for all of
   * them together (EMPTY when empty for each, FULL when full for each, else PARTIAL).
   */
  unionState(b0: number, nb: number, h0: number, nh: number, i: number, j: number): number {
    const bs = this.batch === 1 ? [0] : range(b0, nb);
    const hs = this.heads === 1 ? [0] : range(h0, nh);
    let empty = true;
    let full = true;
    for (const b of bs) {
      for (const h of hs) {
        const s = this.states[b * this.heads + h][i * this.numKeyBlocks + j];
        if (s !== EMPTY) empty = false;
        if (s !== FULL) full = false;
      }
    }
    return empty ? EMPTY : full ? FULL : PARTIAL;
  }

  /** The share of tiles computed (full or partial), over every (b, h) pair, tile area weighted. */
  computedFraction(): number {
    const rows = blocks(this.queryLength, this.queryBlockSize);
    const cols = blocks(this.keyLength, this.keyBlockSize);
    let computed = 0;
    for (const st of this.states) {
      rows.forEach(([, n], i) => cols.forEach(([, m], j) => {
        if (st[i * cols.length + j] !== EMPTY) computed += n * m;
      }));
    }
    const total = this.states.length * this.queryLength * this.keyLength;
    return total === 0 ? 0 : computed / total;
  }

  /** A picture of the tiles of batch entry 0, head 0: '█' full, '▒' partial, '·' empty (at most 64 x 64). */
  toString(): string {
    let out = `BlockMask(B=${this.batch}, H=${this.heads}, T=${this.queryLength}, S=${this.keyLength}, ` +
      `blocks ${this.queryBlockSize}x${this.keyBlockSize}, ${(100 * this.computedFraction()).toFixed(1)}% computed)\n`;
    for (let i = 0; i < Math.min(this.numQueryBlocks, 64); i++) {
      for (let j = 0; j < Math.min(this.numKeyBlocks, 64); j++) out += '·▒█'[this.state(0, 0, i, j)];
      out += '\n';
    }
    return out;
  }
}

function range(start: number, n: number): number[] {
  return Array.from({length: n}, (_, i) => start + i);
}

/**
 * Evaluates `maskMod` block row by block row (a [B, H, blockSize, S] tensor at a time, never
 * [T, S]) and sorts each tile of blockSize queries x blockSize keys into empty, full and
 * partial. B or H of 1 builds one mask shared by every batch entry or head (the mod is then
 * evaluated at b = 0 or h = 0 only). Reads the counts back synchronously (dataSync).
 */
export function createBlockMask(maskMod: MaskMod, B: number | null, H: number | null, T: number, S: number,
                                options: BlockMaskOptions = {}): BlockMask {
  if (typeof maskMod !== 'function') {
    throw new AttentionError('INVALID_CONFIG', `createBlockMask takes a mask mod function, received ${show(maskMod)}`);
  }
  const Bm = B ?? 1;
  const Hm = H ?? 1;
  assertPositiveInt('B', Bm);
  assertPositiveInt('H', Hm);
  assertNonNegativeInt('T', T);
  assertNonNegativeInt('S', S);
  checkArgNames('createBlockMask', options, ['blockSize']);
  const size = options?.blockSize ?? DEFAULT_FLEX_BLOCK;
  const [bq, bk] = typeof size === 'number' ? [size, size] : Array.isArray(size) && size.length === 2 ? size : [NaN, NaN];
  if (!Number.isInteger(bq) || !Number.isInteger(bk) || bq < 1 || bk < 1) {
    throw new AttentionError('INVALID_CONFIG',
      `blockSize must be a positive integer or [queryBlock, keyBlock] of them, received ${show(size)}`);
  }
  const rows = blocks(T, bq);
  const cols = blocks(S, bk);
  const nK = cols.length;
  const states = Array.from({length: Bm * Hm}, () => new Uint8Array(rows.length * nK));
  if (rows.length > 0 && nK > 0) {
    const context: ModContext = {batch: Bm, heads: Hm, queryLength: T, keyLength: S};
    const counts = tf.tidy(() => {
      const b = tf.reshape(tf.range(0, Bm, 1, 'int32'), [Bm, 1, 1, 1]);
      const h = tf.reshape(tf.range(0, Hm, 1, 'int32'), [1, Hm, 1, 1]);
      const kv = tf.reshape(tf.range(0, S, 1, 'int32'), [1, 1, 1, S]);
      // Per block row: the visible pairs of each tile, [Bm, Hm, nK], stacked to [rows, Bm, Hm, nK].
      return tf.stack(rows.map(([t0, n]) => tf.tidy(() => {
        const q = tf.reshape(tf.range(t0, t0 + n, 1, 'int32'), [1, 1, n, 1]);
        const m = tf.cast(tf.broadcastTo(maskOf(maskMod, b, h, q, kv, context), [Bm, Hm, n, S]), 'int32');
        const padded = nK * bk === S ? m : tf.pad(m, [[0, 0], [0, 0], [0, 0], [0, nK * bk - S]]);
        return tf.sum(tf.reshape(padded, [Bm, Hm, n, nK, bk]), [2, 4]);                  // [Bm, Hm, nK]
      })));
    });
    const c = counts.dataSync();
    counts.dispose();
    rows.forEach(([, n], i) => {
      for (let p = 0; p < Bm * Hm; p++) {
        cols.forEach(([, w], j) => {
          const x = c[(i * Bm * Hm + p) * nK + j];
          states[p][i * nK + j] = x === 0 ? EMPTY : x === n * w ? FULL : PARTIAL;
        });
      }
    });
  }
  return new BlockMask(maskMod, Bm, Hm, T, S, bq, bk, states);
}
