/**
 * Block masks (FlexAttention's create_block_mask): a mask mod evaluated once, block by block,
 * into which (query block, key block) tiles are empty (never computed), full (computed without
 * a mask) or partial (computed with the mask applied). Built once per shape and reused across
 * layers and steps. The partial tiles' masks are kept from that evaluation (as additive
 * MASKED_LOGIT / 0 tiles, up to MAX_KEPT_MASK_ENTRIES in all), so calls apply them without
 * running the mod again; past that budget the engine runs the mod on each partial tile.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt, assertPositiveInt, checkArgNames} from '../core/validate';
import {maskValuesOf} from './flex_mods';
import {MASKED_LOGIT} from './masks';
import {MaskMod, ModContext} from './flex_types';
import {untaped} from './tape';
import {blocks} from './tile_plan';

/** Block size of createBlockMask when none is given (PyTorch's default). */
export const DEFAULT_FLEX_BLOCK = 128;

/**
 * Entries of the partial tiles a block mask keeps (2^24: 64 MiB of float32); a mask with more
 * keeps none, and the mod is evaluated on each partial tile at every call instead.
 */
export const MAX_KEPT_MASK_ENTRIES = 2 ** 24;

/** What a tile of a block mask is. */
export const EMPTY = 0;
export const PARTIAL = 1;
export const FULL = 2;

export interface BlockMaskOptions {
  /** Query positions and keys per block: one number for both, or [queries, keys]. Default 128. */
  blockSize?: number | readonly [number, number];
  /**
   * The most entries of partial tiles to keep (Infinity: all). A mask with more keeps none and
   * runs the mod on every partial tile at each call, backward included: the tensors the mod
   * reads must then live until the backward is done. Default MAX_KEPT_MASK_ENTRIES.
   */
  maxKeptEntries?: number;
}

/**
 * Which tiles of the attention a mask mod leaves empty, full or partial, for each batch entry
 * and head it was built for (1 of either: the same for every one). Built by createBlockMask.
 */
export class BlockMask {
  /** Per (b, h) pair (index b * heads + h), per tile (i * numKeyBlocks + j): EMPTY, PARTIAL or FULL. */
  private readonly states: Uint8Array[];
  /** Per pair, per query block: 1 when a query of the block sees no key at all. */
  private readonly keyless: Uint8Array[];
  /** Per pair, per tile: the partial tile's additive mask [bq, bk] (MASKED_LOGIT where masked), when kept. */
  private tiles: Map<number, tf.Tensor>[] | null;
  /** Per pair, the tiles kept when built (in order), remembered after dispose() for withTiles. */
  private readonly tileKeys: number[][] | null;

  constructor(readonly maskMod: MaskMod, readonly batch: number, readonly heads: number,
              readonly queryLength: number, readonly keyLength: number,
              readonly queryBlockSize: number, readonly keyBlockSize: number, states: Uint8Array[],
              keyless: Uint8Array[], tiles: Map<number, tf.Tensor>[] | null) {
    this.states = states;
    this.keyless = keyless;
    this.tiles = tiles;
    this.tileKeys = tiles?.map((m) => [...m.keys()].sort((a, b) => a - b)) ?? null;
  }

  /** True when the partial tiles' masks are kept (calls then never run the mod). */
  get keepsTiles(): boolean { return this.tiles != null; }

  /**
   * The kept additive mask of partial tile (i, j) for batch entry b and head h: [bq, bk]
   * (the block's own sizes at the edges), MASKED_LOGIT where masked, else 0. Null when not kept.
   */
  tileMask(b: number, h: number, i: number, j: number): tf.Tensor | null {
    return this.tiles?.[this.pair(b, h)].get(i * this.numKeyBlocks + j) ?? null;
  }

  /** True when some query of block i sees no key, for any of batch entries [b0, b0 + nb) and heads [h0, h0 + nh). */
  hasKeylessRows(b0: number, nb: number, h0: number, nh: number, i: number): boolean {
    const bs = this.batch === 1 ? [0] : range(b0, nb);
    const hs = this.heads === 1 ? [0] : range(h0, nh);
    return bs.some((b) => hs.some((h) => this.keyless[b * this.heads + h][i] === 1));
  }

  /** The kept tiles in a fixed order (pairs, then tiles in order), for withTiles. Empty when none are kept. */
  tileTensors(): tf.Tensor[] {
    const tiles = this.tiles;
    return tiles == null ? [] : this.tileKeys!.flatMap((keys, p) => keys.map((key) => tiles[p].get(key)!));
  }

  /**
   * The same mask over `tiles`, tensors with the values of tileTensors() in its order (the
   * copies a gradient saved), when it kept its tiles at the forward (`kept`; else it is itself,
   * running its mod as the forward did): what flexAttention's backward reads, whatever became
   * of this mask's own tiles since the forward.
   */
  withTiles(tiles: readonly tf.Tensor[], kept: boolean): BlockMask {
    // `kept`: whether the mask kept its tiles when the forward saved them. One that kept none (no
    // tile partial for any one pair, though a unit's union of pairs may be) still keeps its tiles
    // here, empty maps: the backward must not run the mod, whose tensors may be gone by now.
    if (this.tileKeys == null || !kept) return this;
    let at = 0;
    const maps = this.tileKeys.map((keys) => new Map(keys.map((key) => [key, tiles[at++]])));
    return new BlockMask(this.maskMod, this.batch, this.heads, this.queryLength, this.keyLength, this.queryBlockSize,
      this.keyBlockSize, this.states, this.keyless, maps);
  }

  /** Frees the kept tiles; the mask still works after, running the mod on partial tiles. */
  dispose(): void {
    if (this.tiles == null) return;
    for (const m of this.tiles) for (const t of m.values()) t.dispose();
    this.tiles = null;
  }

  private pair(b: number, h: number): number {
    return (this.batch === 1 ? 0 : b) * this.heads + (this.heads === 1 ? 0 : h);
  }

  get numQueryBlocks(): number { return Math.ceil(this.queryLength / this.queryBlockSize); }
  get numKeyBlocks(): number { return Math.ceil(this.keyLength / this.keyBlockSize); }

  /** The state of tile (i, j) for batch entry b and head h (taken as 0 where the mask has one). */
  state(b: number, h: number, i: number, j: number): number {
    return this.states[this.pair(b, h)][i * this.numKeyBlocks + j];
  }

  /** The key blocks query block i sees wholly (full) and in part (partial), in order. */
  keyBlocks(b: number, h: number, i: number): {full: number[]; partial: number[]} {
    return sortedBlocks(this.numKeyBlocks, (j) => this.state(b, h, i, j));
  }

  /** The transposed lists: the query blocks that see key block j wholly and in part, in order. */
  queryBlocks(b: number, h: number, j: number): {full: number[]; partial: number[]} {
    return sortedBlocks(this.numQueryBlocks, (i) => this.state(b, h, i, j));
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

/** Blocks 0 .. n - 1 by their state: the full ones and the partial ones, in order. */
function sortedBlocks(n: number, stateOf: (x: number) => number): {full: number[]; partial: number[]} {
  const out = {full: [] as number[], partial: [] as number[]};
  for (let x = 0; x < n; x++) {
    const s = stateOf(x);
    if (s === FULL) out.full.push(x);
    else if (s === PARTIAL) out.partial.push(x);
  }
  return out;
}

function range(start: number, n: number): number[] {
  return Array.from({length: n}, (_, i) => start + i);
}

/** Backends whose tensors sit in CPU memory: a synchronous read there costs a copy, elsewhere a GPU stall. */
const HOST_BACKENDS = ['cpu', 'wasm', 'tensorflow'];

/** True when createBlockMask (a synchronous read) may run on the active backend (started here if need be). */
export function readsSynchronously(): boolean {
  tf.backend(); // before any tensor, tfjs has not picked its backend yet: getBackend() would be undefined
  return HOST_BACKENDS.includes(tf.getBackend());
}

/**
 * Evaluates `maskMod` block row by block row (a [B, H, blockSize, S] tensor at a time, never
 * [T, S]) and sorts each tile of blockSize queries x blockSize keys into empty, full and
 * partial, keeping the partial tiles' masks (up to MAX_KEPT_MASK_ENTRIES entries). B or H of 1
 * builds one mask shared by every batch entry or head (the mod is then evaluated at b = 0 or
 * h = 0 only). Reads each row's counts back synchronously, so on cpu, wasm and tensorflow
 * only: on webgl and webgpu (a synchronous read stalls or crashes the page) it throws
 * UNSUPPORTED; use createBlockMaskAsync there. The mask holds tensors (its kept tiles):
 * dispose() it when done.
 */
export function createBlockMask(maskMod: MaskMod, B: number | null, H: number | null, T: number, S: number,
                                options: BlockMaskOptions = {}): BlockMask {
  if (!readsSynchronously()) {
    throw new AttentionError('UNSUPPORTED', 'createBlockMask reads the mask\'s block counts synchronously, which the ' +
      `${tf.getBackend()} backend cannot do without stalling the page: use await createBlockMaskAsync(...)`);
  }
  const build = blockMaskBuilder(maskMod, B, H, T, S, options);
  let step = untaped(() => build.next());
  try {
    while (!step.done) {
      const reads = step.value.map((t) => t.dataSync());
      step = untaped(() => build.next(reads));
    }
  } catch (e) {
    untaped(() => build.return(null as unknown as BlockMask)); // frees what it made
    throw e;
  }
  return step.value;
}

/** createBlockMask on any backend: the block counts are read asynchronously. */
export async function createBlockMaskAsync(maskMod: MaskMod, B: number | null, H: number | null, T: number, S: number,
                                           options: BlockMaskOptions = {}): Promise<BlockMask> {
  const build = blockMaskBuilder(maskMod, B, H, T, S, options);
  let step = untaped(() => build.next());
  try {
    while (!step.done) {
      const reads = await Promise.all(step.value.map((t) => t.data()));
      step = untaped(() => build.next(reads));
    }
  } catch (e) {
    untaped(() => build.return(null as unknown as BlockMask)); // frees what it made
    throw e;
  }
  return step.value;
}

/**
 * The block mask, built row by row: each step yields the tensors whose values it needs (the
 * row's mask) and takes their values back, so one builder serves the synchronous and the
 * asynchronous read. Every step runs off the gradient tape (inside a training step the tape
 * would hold every block row until the backward ends).
 */
function* blockMaskBuilder(maskMod: MaskMod, B: number | null, H: number | null, T: number, S: number,
                           options: BlockMaskOptions): Generator<tf.Tensor[], BlockMask, ArrayLike<number>[]> {
  if (typeof maskMod !== 'function') {
    throw new AttentionError('INVALID_CONFIG', `createBlockMask takes a mask mod function, received ${show(maskMod)}`);
  }
  const Bm = B ?? 1;
  const Hm = H ?? 1;
  assertPositiveInt('B', Bm);
  assertPositiveInt('H', Hm);
  assertNonNegativeInt('T', T);
  assertNonNegativeInt('S', S);
  checkArgNames('createBlockMask', options, ['blockSize', 'maxKeptEntries']);
  const maxKept = options?.maxKeptEntries ?? MAX_KEPT_MASK_ENTRIES;
  if (typeof maxKept !== 'number' || !(maxKept >= 0)) {
    throw new AttentionError('INVALID_CONFIG', `maxKeptEntries must be a number >= 0 (or Infinity), received ${show(maxKept)}`);
  }
  const size = options?.blockSize ?? DEFAULT_FLEX_BLOCK;
  const [bq, bk] = typeof size === 'number' ? [size, size] : Array.isArray(size) && size.length === 2 ? size : [NaN, NaN];
  if (!Number.isInteger(bq) || !Number.isInteger(bk) || bq < 1 || bk < 1) {
    throw new AttentionError('INVALID_CONFIG',
      `blockSize must be a positive integer or [queryBlock, keyBlock] of them, received ${show(size)}`);
  }
  const rows = blocks(T, bq);
  const cols = blocks(S, bk);
  const nK = cols.length;
  const P = Bm * Hm;
  const states = Array.from({length: P}, () => new Uint8Array(rows.length * nK));
  const keyless = Array.from({length: P}, () => new Uint8Array(rows.length));
  let tiles: Map<number, tf.Tensor>[] | null = Array.from({length: P}, () => new Map<number, tf.Tensor>());
  let kept = 0;
  const drop = () => {
    tiles?.forEach((m) => m.forEach((t) => t.dispose()));
    tiles = null;
  };
  if (rows.length === 0 || nK === 0) return new BlockMask(maskMod, Bm, Hm, T, S, bq, bk, states, keyless, tiles);
  const context: ModContext = {batch: Bm, heads: Hm, queryLength: T, keyLength: S};
  const [b, h, kv] = [[Bm, 1, 1, 1], [1, Hm, 1, 1], [1, 1, 1, S]].map((shape) =>
    tf.tidy(() => tf.reshape(tf.range(0, shape.reduce((x, y) => x * y), 1, 'int32'), shape)));
  let done = false;
  // On cpu, wasm and tensorflow the tiles are counted on the device and only the counts read
  // back; on webgl and webgpu the block row is read back whole and counted in JavaScript (their
  // int32 reductions gave wrong counts on webgpu).
  const onDevice = readsSynchronously();
  try {
    for (const [i, [t0, n]] of rows.entries()) {
      // 1 where visible, else 0 (float32: on wasm comparisons and logical ops are slow, see mask_values.ts).
      const row = tf.tidy(() => {
        const q = tf.reshape(tf.range(t0, t0 + n, 1, 'int32'), [1, 1, n, 1]);
        return tf.broadcastTo(maskValuesOf(maskMod, b, h, q, kv, context), [Bm, Hm, n, S]);
      });                                                                            // [Bm, Hm, n, S]
      const additive: {row: tf.Tensor | null} = {row: null};                        // the row's MASKED_LOGIT / 0, once
      let rowCounts: (p: number) => {counts: ArrayLike<number>; fewest: number};
      let tileOf: (p: number, s0: number, w: number) => tf.Tensor;
      try {
        if (onDevice) {
          // Per tile the visible pairs [Bm, Hm, nK], and per pair the fewest keys a row sees [Bm, Hm].
          const reads = tf.tidy(() => {
            const padded = nK * bk === S ? row : tf.pad(row, [[0, 0], [0, 0], [0, 0], [0, nK * bk - S]]);
            // Summed along the keys first (the last axis: no transpose), then the rows.
            return [tf.sum(tf.sum(tf.reshape(padded, [Bm, Hm, n, nK, bk]), 4), 2), tf.min(tf.sum(row, 3), 2)];
          });
          let c: ArrayLike<number>;
          let f: ArrayLike<number>;
          try {
            [c, f] = yield reads;
          } finally {
            tf.dispose(reads);
          }
          rowCounts = (p) => ({counts: Array.from({length: nK}, (_, j) => c[p * nK + j]), fewest: f[p]});
          tileOf = (p, s0, w) => {
            additive.row ??= tf.tidy(() => tf.mul(tf.sub(1, row), MASKED_LOGIT));
            return tf.tidy(() => tf.reshape(tf.slice(additive.row!, [Math.floor(p / Hm), p % Hm, 0, s0], [1, 1, n, w]),
              [n, w]));                                                              // [n, w]
          };
        } else {
          const [values] = yield [row];
          rowCounts = (p) => countRow(values, p * n * S, n, S, bk, nK);
          tileOf = (p, s0, w) => {
            const add = new Float32Array(n * w);                                     // [n, w]
            for (let t = 0; t < n; t++) {
              for (let x = 0; x < w; x++) if (!values[p * n * S + t * S + s0 + x]) add[t * w + x] = MASKED_LOGIT;
            }
            return tf.tensor2d(add, [n, w]);
          };
        }
        for (let p = 0; p < P; p++) {
          const {counts, fewest} = rowCounts(p);
          keyless[p][i] = fewest === 0 ? 1 : 0;
          cols.forEach(([s0, w], j) => {
            const count = counts[j];
            states[p][i * nK + j] = count === 0 ? EMPTY : count === n * w ? FULL : PARTIAL;
            if (states[p][i * nK + j] !== PARTIAL || tiles == null) return;
            if (kept + n * w > maxKept) {
              drop();
              return;
            }
            kept += n * w;
            // Kept: the mask owns its tiles, even when built inside a caller's tidy.
            tiles[p].set(i * nK + j, tf.keep(tileOf(p, s0, w)));
          });
        }
      } finally {
        row.dispose();
        additive.row?.dispose();
      }
    }
    done = true;
  } finally {
    tf.dispose([b, h, kv]);
    if (!done) drop(); // a mod or a read that threw: nothing made is kept
  }
  return new BlockMask(maskMod, Bm, Hm, T, S, bq, bk, states, keyless, tiles);
}

/** The visible pairs of each tile of a block row read back (a pair's from `base`), and the fewest keys a query sees. */
function countRow(values: ArrayLike<number>, base: number, n: number, S: number, bk: number,
                  nK: number): {counts: Float64Array; fewest: number} {
  const counts = new Float64Array(nK);
  let fewest = S;
  for (let t = 0; t < n; t++) {
    let seen = 0;
    for (let j = 0, at = base + t * S; j < S; j++, at++) {
      if (values[at]) {
        seen++;
        counts[Math.floor(j / bk)]++;
      }
    }
    fewest = Math.min(fewest, seen);
  }
  return {counts, fewest};
}
