/**
 * Sparse mask builders: boolean [T, T] tensors (true = may attend) for the `mask` of
 * scaledDotProductAttention / flashAttention / MultiHeadAttention's attentionMask, from
 * rules (SparseMask: windows, global positions, blocks, strides, random keys) or from a
 * graph (HnswMask: the layers of an HNSW index, or its edges); where a rule leaves a case
 * open, the choice is noted. These masks are dense by nature (T * T entries): for long
 * sequences use the ops that never form them (localGlobalAttention).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, assertIndexList, assertNonNegativeInt, assertPositiveInt, checkArgNames} from '../core/validate';
import {MAX_TENSOR_ELEMENTS} from '../core/limits';
import {uniform} from './random_features';

function assertLength(T: unknown): asserts T is number {
  if (typeof T !== 'number' || !Number.isInteger(T) || T < 1) {
    throw new AttentionError('INVALID_CONFIG', `T (the sequence length) must be a positive integer, received ${show(T)}`);
  }
}

/** The zeroed entries of a [T, T] mask; refuses (UNSUPPORTED) a T whose T * T entries one tensor cannot hold. */
function maskData(T: number): Uint8Array {
  if (T * T > MAX_TENSOR_ELEMENTS) {
    throw new AttentionError('UNSUPPORTED',
      `a [T, T] mask of T=${T} would have ${(T * T).toExponential(2)} entries, more than one tensor can hold ` +
      `(${MAX_TENSOR_ELEMENTS}); for long sequences use LocalGlobalAttention or LinearAttention, which form no mask`);
  }
  return new Uint8Array(T * T);
}

/** A [T, T] bool tensor with entry (i, j) = rule(i, j). */
function fromRule(T: number, rule: (i: number, j: number) => boolean): tf.Tensor2D {
  const data = maskData(T);
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (rule(i, j)) data[i * T + j] = 1;
  return tf.tensor2d(data, [T, T], 'bool');
}

/** The entries of a [T, T] mask as a row-major 0/1 table (for combining in JS). */
function entries(mask: tf.Tensor2D): Uint8Array {
  return Uint8Array.from(mask.dataSync() as ArrayLike<number>, (x) => (x ? 1 : 0));
}

/** OR of masks of the same [T, T] shape; disposes them. */
function union(T: number, masks: tf.Tensor2D[]): tf.Tensor2D {
  const data = maskData(T);
  for (const m of masks) {
    entries(m).forEach((x, i) => { if (x) data[i] = 1; });
    m.dispose();
  }
  return tf.tensor2d(data, [T, T], 'bool');
}

export const SparseMask = {
  /** Query i sees key j iff |i - j| <= W (a band of 2W + 1 around the diagonal, clipped). */
  localWindow(T: number, W: number): tf.Tensor2D {
    assertLength(T);
    assertNonNegativeInt('W (the window)', W);
    return fromRule(T, (i, j) => Math.abs(i - j) <= W);
  },

  /**
   * Every query sees the keys at `indices` (whole columns; a global position's own row
   * gets nothing more). Indices >= T are ignored.
   */
  globalIndices(T: number, indices: readonly number[]): tf.Tensor2D {
    assertLength(T);
    assertIndexList('indices', indices);
    const global = new Set(indices.filter((g) => g < T));
    return fromRule(T, (_, j) => global.has(j));
  },

  /** localWindow(T, W) OR globalIndices(T, indices). */
  localGlobal(T: number, W: number, indices: readonly number[]): tf.Tensor2D {
    assertIndexList('indices', indices); // before the first mask exists, so a bad list leaks nothing
    return union(T, [SparseMask.localWindow(T, W), SparseMask.globalIndices(T, indices)]);
  },

  /** Blocks [k*block, (k+1)*block) attend within themselves; the last block may be shorter. */
  blockDiagonal(T: number, block: number): tf.Tensor2D {
    assertLength(T);
    assertPositiveInt('block', block);
    return fromRule(T, (i, j) => Math.floor(i / block) === Math.floor(j / block));
  },

  /** localWindow(T, W) OR every key j with j % stride == 0 (for every query). */
  strided(T: number, W: number, stride: number): tf.Tensor2D {
    assertLength(T);
    assertNonNegativeInt('W (the window)', W);
    assertPositiveInt('stride', stride);
    return fromRule(T, (i, j) => Math.abs(i - j) <= W || j % stride === 0);
  },

  /**
   * Each query sees floor(density * T) distinct keys drawn uniformly (the diagonal only
   * by chance), from a seeded generator: the same seed gives the same mask.
   */
  random(T: number, density: number, seed: number): tf.Tensor2D {
    assertLength(T);
    if (typeof density !== 'number' || !(density >= 0 && density <= 1)) {
      throw new AttentionError('INVALID_CONFIG', `density must be a number in [0, 1], received ${show(density)}`);
    }
    if (typeof seed !== 'number' || !Number.isInteger(seed)) {
      throw new AttentionError('INVALID_CONFIG', `seed must be an integer, received ${show(seed)}`);
    }
    const next = uniform(seed);
    const perRow = Math.floor(density * T);
    const data = maskData(T);
    for (let i = 0; i < T; i++) {
      let drawn = 0;
      while (drawn < perRow) {
        const j = Math.min(T - 1, Math.floor(next() * T));
        if (data[i * T + j] === 0) {
          data[i * T + j] = 1;
          drawn++;
        }
      }
    }
    return tf.tensor2d(data, [T, T], 'bool');
  },

  /**
   * The additive form: 0 where attended, -Infinity elsewhere (float32), to add to logits
   * before a softmax. A row with no attended key then softmaxes to NaN; the boolean mask
   * given to this library's ops avoids that (such rows give zeros).
   */
  toAdditive(mask: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const keep = mask.dtype === 'bool' ? mask : tf.notEqual(mask, 0);
      return tf.where(keep, tf.zerosLike(keep).toFloat(), tf.fill(keep.shape, -Infinity));
    });
  },

  /** The fraction of entries that are masked out (not attended), in [0, 1]. */
  sparsity(mask: tf.Tensor): number {
    return 1 - SparseMask.density(mask);
  },

  /** The fraction of entries that are attended: 1 - sparsity (`sparsity` is the fraction masked out). */
  density(mask: tf.Tensor): number {
    const values = mask.dataSync();
    if (values.length === 0) return 0;
    let attended = 0;
    for (let i = 0; i < values.length; i++) if (values[i]) attended++;
    return attended / values.length;
  },

  /**
   * The edge list of a mask, for GraphAttention: mask[i][j] (query i may attend key j) is
   * the edge j -> i, written [source j, target i], listed by target, then source. A [T, T]
   * mask (bool or 0/1) gives int32 [E, 2]; a batch [B, T, T] gives [B, E, 2], E the most
   * edges of any mask, the shorter lists padded with [-1, -1] (as GraphAttention skips).
   * Diagonal entries become self loops: GraphAttention's default addSelfLoops replaces them
   * with its own (one per node), addSelfLoops: false keeps them. O(T * T) time, the mask's.
   */
  toEdges(mask: tf.Tensor): tf.Tensor2D | tf.Tensor3D {
    if (!(mask instanceof tf.Tensor) || !(mask.rank === 2 || mask.rank === 3) ||
        mask.shape[mask.rank - 1] !== mask.shape[mask.rank - 2]) {
      throw new AttentionError('INVALID_MASK',
        'toEdges takes a square mask [T, T] or a batch [B, T, T] (positions are the graph\'s nodes), received ' +
        (mask instanceof tf.Tensor ? `shape ${show(mask.shape)}` : show(mask)));
    }
    const T = mask.shape[mask.rank - 1] as number;
    const B = mask.rank === 3 ? mask.shape[0] as number : 1;
    const values = mask.dataSync();
    const lists: number[][] = [];
    for (let b = 0; b < B; b++) {
      const list: number[] = [];
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) if (values[(b * T + i) * T + j]) list.push(j, i);
      }
      lists.push(list);
    }
    if (mask.rank === 2) return tf.tensor2d(Int32Array.from(lists[0]), [lists[0].length / 2, 2], 'int32');
    const E = Math.max(0, ...lists.map((l) => l.length / 2));
    const data = new Int32Array(B * E * 2).fill(-1);
    lists.forEach((l, b) => data.set(l, b * E * 2));
    return tf.tensor3d(data, [B, E, 2], 'int32');
  },

  /**
   * A text picture of the top-left (at most) 20 x 20 entries: '█' attended, '·' not,
   * one line per row, each ending in a newline.
   */
  visualize(mask: tf.Tensor): string {
    if (mask.rank !== 2) {
      throw new AttentionError('INVALID_MASK', `visualize takes a [T, S] mask, received shape ${show(mask.shape)}`);
    }
    const [T, S] = mask.shape as number[];
    const values = mask.dataSync();
    let out = '';
    for (let i = 0; i < Math.min(T, 20); i++) {
      for (let j = 0; j < Math.min(S, 20); j++) out += values[i * S + j] ? '█' : '·';
      out += '\n';
    }
    return out;
  },
};

function assertEdges(edges: unknown): asserts edges is [number, number][] {
  if (!Array.isArray(edges) || edges.some((e) => !Array.isArray(e) || e.length !== 2)) {
    throw new AttentionError('INVALID_CONFIG', `edges must be an array of [from, to] pairs, received ${show(edges)}`);
  }
  edges.forEach((e, n) => assertIndexList(`edges[${n}]`, e));
}

/** Options of the HNSW mask builders. */
export interface HnswMaskOptions {
  /**
   * Drop node ids >= T (an index built over a longer sequence, used for a prefix). Default
   * false: such an id throws INVALID_CONFIG, since it usually means the index and T disagree.
   */
  dropOutOfRange?: boolean;
}

/** Whether ids >= T are dropped; throws INVALID_CONFIG naming the first one otherwise. */
function dropsOutOfRange(T: number, options: HnswMaskOptions | undefined, ids: [string, readonly number[]][]): boolean {
  checkArgNames('HnswMask', options, ['dropOutOfRange']);
  const drop = options?.dropOutOfRange ?? false;
  assertBoolean('dropOutOfRange', drop);
  if (drop) return true;
  for (const [name, list] of ids) {
    const bad = list.find((i) => i >= T);
    if (bad != null) {
      throw new AttentionError('INVALID_CONFIG',
        `${name} holds node ${bad}, outside the sequence [0, ${T}); pass {dropOutOfRange: true} to ignore such nodes`);
    }
  }
  return false;
}

/** The checks of the layer builders: T, each layer a list of node ids, ids >= T as options say. */
function checkLayers(T: number, layers: readonly (readonly number[])[], options: HnswMaskOptions | undefined): void {
  assertLength(T);
  if (!Array.isArray(layers)) {
    throw new AttentionError('INVALID_CONFIG', `layers must be an array of node lists, received ${show(layers)}`);
  }
  layers.forEach((nodes, L) => assertIndexList(`layers[${L}]`, nodes));
  dropsOutOfRange(T, options, layers.map((nodes, L) => [`layers[${L}]`, nodes]));
}

export const HnswMask = {
  /**
   * layers[L] lists the nodes of HNSW layer L (layer 0 the densest). A node of layer L
   * sees every node of layers L, L+1, ... (its own layer and those above, so itself
   * too). A node >= T throws INVALID_CONFIG, unless options.dropOutOfRange drops it.
   */
  fromLayers(T: number, layers: readonly (readonly number[])[], options?: HnswMaskOptions): tf.Tensor2D {
    checkLayers(T, layers, options);
    const data = maskData(T);
    layers.forEach((nodes, L) => {
      for (const i of nodes) {
        if (i >= T) continue;
        for (let up = L; up < layers.length; up++) for (const j of layers[up]) if (j < T) data[i * T + j] = 1;
      }
    });
    return tf.tensor2d(data, [T, T], 'bool');
  },

  /**
   * The edges of fromLayers(T, layers, options) as GraphAttention's int32 [E, 2] list
   * ([source j, target i] for each node i and each node j it sees, by target then source,
   * as SparseMask.toEdges of that mask), built without the [T, T] mask: O(E) memory.
   */
  edgesFromLayers(T: number, layers: readonly (readonly number[])[], options?: HnswMaskOptions): tf.Tensor2D {
    checkLayers(T, layers, options);
    // A node sees every node of its lowest layer and those above: the union of layers L.. .
    const lowest = new Map<number, number>();
    layers.forEach((nodes, L) => nodes.forEach((i: number) => {
      if (i < T && !lowest.has(i)) lowest.set(i, L);
    }));
    const above: number[][] = [];
    const seen = new Set<number>();
    for (let L = layers.length - 1; L >= 0; L--) {
      for (const j of layers[L]) if (j < T) seen.add(j);
      above[L] = Array.from(seen).sort((a, b) => a - b);
    }
    const data: number[] = [];
    for (const i of Array.from(lowest.keys()).sort((a, b) => a - b)) {
      for (const j of above[lowest.get(i)!]) data.push(j, i);
    }
    return tf.tensor2d(Int32Array.from(data), [data.length / 2, 2], 'int32');
  },

  /**
   * Graph edges [from, to], made symmetric (both directions attend); no self loops are
   * added. An edge with an end >= T throws INVALID_CONFIG, unless options.dropOutOfRange
   * drops it.
   */
  fromEdges(T: number, edges: readonly (readonly [number, number])[], options?: HnswMaskOptions): tf.Tensor2D {
    assertLength(T);
    assertEdges(edges);
    dropsOutOfRange(T, options, edges.map((e, n) => [`edges[${n}]`, e]));
    const data = maskData(T);
    for (const [a, b] of edges) {
      if (a >= T || b >= T) continue;
      data[a * T + b] = 1;
      data[b * T + a] = 1;
    }
    return tf.tensor2d(data, [T, T], 'bool');
  },

  /** localWindow(T, W) OR fromEdges(T, edges, options). */
  adaptive(T: number, W: number, edges: readonly (readonly [number, number])[],
      options?: HnswMaskOptions): tf.Tensor2D {
    // Checked before the first mask exists, so bad edges leak nothing.
    assertLength(T);
    assertEdges(edges);
    dropsOutOfRange(T, options, edges.map((e, n) => [`edges[${n}]`, e]));
    return union(T, [SparseMask.localWindow(T, W), HnswMask.fromEdges(T, edges, options)]);
  },
};
