// The sparse mask builders against plain loop translations of SparseMask and HNSWMask in the
// Rust sparse-attention design the project started from, that design's own test cases,
// seeding, the additive form, sparsity/density, the text picture, use as an sdpa mask,
// and errors.
import * as tf from '@tensorflow/tfjs';
import {HnswMask, SparseMask} from '../../src/ops/sparse_masks';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {GraphAttention} from '../../src/layers/graph_attention';
import {expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

type Grid = boolean[][];

/** The Rust design's loops, translated line by line (range ends exclusive, as Rust's `a..b`). */
const rustDesign = {
  localWindow(T: number, w: number): Grid {
    const m = grid(T);
    for (let i = 0; i < T; i++) {
      const start = Math.max(0, i - w);
      const end = Math.min(i + w + 1, T);
      for (let j = start; j < end; j++) m[i][j] = true;
    }
    return m;
  },
  globalIndices(T: number, idx: number[]): Grid {
    const m = grid(T);
    for (const g of idx) if (g < T) for (let i = 0; i < T; i++) m[i][g] = true;
    return m;
  },
  blockDiagonal(T: number, bs: number): Grid {
    const m = grid(T);
    const blocks = Math.ceil(T / bs);
    for (let b = 0; b < blocks; b++) {
      const start = b * bs;
      const end = Math.min((b + 1) * bs, T);
      for (let i = start; i < end; i++) for (let j = start; j < end; j++) m[i][j] = true;
    }
    return m;
  },
  strided(T: number, w: number, stride: number): Grid {
    const m = rustDesign.localWindow(T, w);
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j += stride) m[i][j] = true;
    return m;
  },
  fromLayers(T: number, layers: number[][]): Grid {
    const m = grid(T);
    layers.forEach((nodes, L) => {
      for (const i of nodes) {
        if (i >= T) continue;
        for (let up = L; up < layers.length; up++) for (const j of layers[up]) if (j < T) m[i][j] = true;
      }
    });
    return m;
  },
  fromEdges(T: number, edges: [number, number][]): Grid {
    const m = grid(T);
    for (const [a, b] of edges) {
      if (a < T && b < T) {
        m[a][b] = true;
        m[b][a] = true;
      }
    }
    return m;
  },
};

function grid(T: number): Grid {
  return Array.from({length: T}, () => Array.from({length: T}, () => false));
}
const or = (a: Grid, b: Grid): Grid => a.map((row, i) => row.map((x, j) => x || b[i][j]));

/** The mask as a boolean grid; checks it is a [T, T] bool tensor and disposes it. */
function read(mask: tf.Tensor, T: number): Grid {
  expect(mask.dtype).toBe('bool');
  expect(mask.shape).toEqual([T, T]);
  const rows = (mask.arraySync() as (number | boolean)[][]).map((r) => r.map((x) => Boolean(x)));
  mask.dispose();
  return rows;
}

describe(title('sparse mask builders'), () => {
  test("the Rust design's test cases: local window 5/1, global indices 5/[0,2], HNSW layers [[0,1,2,3],[0,2],[0]]", () => {
    const local = read(SparseMask.localWindow(5, 1), 5);
    expect([local[0][0], local[0][1], local[0][2]]).toEqual([true, true, false]);
    expect([local[2][1], local[2][2], local[2][3], local[2][4]]).toEqual([true, true, true, false]);
    const global = read(SparseMask.globalIndices(5, [0, 2]), 5);
    for (let i = 0; i < 5; i++) expect([global[i][0], global[i][2], global[i][1]]).toEqual([true, true, false]);
    const hnsw = read(HnswMask.fromLayers(4, [[0, 1, 2, 3], [0, 2], [0]]), 4);
    for (let j = 0; j < 4; j++) expect(hnsw[0][j]).toBe(true);
    expect([hnsw[1][0], hnsw[1][2]]).toEqual([true, true]);
  });

  const lengths = [1, 5, 7, 16, 23];
  test.each(lengths)('localWindow, globalIndices, localGlobal == the loops (T=%i, W = 0, 1, 3, 30)', (T) => {
    for (const W of [0, 1, 3, 30]) {
      expect(read(SparseMask.localWindow(T, W), T)).toEqual(rustDesign.localWindow(T, W));
      const idx = [0, 3, 3, 6, T, T + 4];
      expect(read(SparseMask.globalIndices(T, idx), T)).toEqual(rustDesign.globalIndices(T, idx));
      expect(read(SparseMask.localGlobal(T, W, idx), T))
        .toEqual(or(rustDesign.localWindow(T, W), rustDesign.globalIndices(T, idx)));
    }
    expect(read(SparseMask.globalIndices(T, []), T)).toEqual(grid(T));
  });

  test.each(lengths)('blockDiagonal and strided == the loops (T=%i)', (T) => {
    for (const block of [1, 2, 4, 5, 40]) {
      expect(read(SparseMask.blockDiagonal(T, block), T)).toEqual(rustDesign.blockDiagonal(T, block));
    }
    for (const [W, stride] of [[0, 1], [1, 2], [2, 3], [0, 7], [3, 50]]) {
      expect(read(SparseMask.strided(T, W, stride), T)).toEqual(rustDesign.strided(T, W, stride));
    }
  });

  // Nodes >= T are dropped, as the Rust design drops them, only when asked (dropOutOfRange); see below.
  test.each(lengths)('HnswMask.fromLayers, fromEdges, adaptive == the loops (T=%i)', (T) => {
    const drop = {dropOutOfRange: true};
    const layers = [[0, 1, 2, 3, 4, 5, 6, 30], [1, 4, 6], [4, 9]];
    expect(read(HnswMask.fromLayers(T, layers, drop), T)).toEqual(rustDesign.fromLayers(T, layers));
    const edges: [number, number][] = [[0, 3], [2, 2], [4, 1], [6, 0], [1, 99]];
    expect(read(HnswMask.fromEdges(T, edges, drop), T)).toEqual(rustDesign.fromEdges(T, edges));
    expect(read(HnswMask.adaptive(T, 1, edges, drop), T))
      .toEqual(or(rustDesign.localWindow(T, 1), rustDesign.fromEdges(T, edges)));
    expect(read(HnswMask.fromLayers(T, []), T)).toEqual(grid(T));
  });

  test('HnswMask: a node >= T throws INVALID_CONFIG naming it, unless dropOutOfRange', () => {
    expectError(() => HnswMask.fromEdges(4, [[0, 9]]), 'INVALID_CONFIG', /edges\[0\] holds node 9, outside the sequence \[0, 4\)/);
    expectError(() => HnswMask.fromLayers(4, [[0, 1], [4]]), 'INVALID_CONFIG', /layers\[1\] holds node 4/);
    expectError(() => HnswMask.adaptive(4, 1, [[5, 0]]), 'INVALID_CONFIG', /edges\[0\] holds node 5/);
    expectError(() => HnswMask.fromEdges(4, [[0, 1]], {dropOutOfRnage: true} as never), 'INVALID_CONFIG',
      /unknown argument 'dropOutOfRnage' for HnswMask; did you mean 'dropOutOfRange'\?/);
    expectError(() => HnswMask.fromEdges(4, [[0, 1]], {dropOutOfRange: 'yes'} as never), 'INVALID_CONFIG',
      /dropOutOfRange must be a boolean/);
    const before = tf.memory().numTensors;
    const m = HnswMask.fromEdges(4, [[0, 9], [1, 2]], {dropOutOfRange: true});
    expect(read(m, 4)).toEqual(rustDesign.fromEdges(4, [[1, 2]])); // (read disposes it)
    expect(tf.memory().numTensors).toBe(before);
  });

  test('random: floor(density * T) distinct keys per row, the same for a seed, another for another seed', () => {
    const T = 40;
    const a = read(SparseMask.random(T, 0.25, 7), T);
    const b = read(SparseMask.random(T, 0.25, 7), T);
    const c = read(SparseMask.random(T, 0.25, 8), T);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    for (const row of a) expect(row.filter((x) => x).length).toBe(10);
    // Spread over the columns, not stuck to a few: every column is drawn by some row.
    expect(a[0].map((_, j) => a.some((row) => row[j])).every((x) => x)).toBe(true);
    expect(read(SparseMask.random(T, 0, 1), T)).toEqual(grid(T));
    expect(read(SparseMask.random(T, 1, 1), T).every((row) => row.every((x) => x))).toBe(true);
  });

  test('toAdditive: 0 where attended, -Infinity elsewhere; sparsity and density', () => {
    const mask = SparseMask.localWindow(4, 1);
    const add = SparseMask.toAdditive(mask);
    expect(add.dtype).toBe('float32');
    expect(add.arraySync()).toEqual([[0, 0, -Infinity, -Infinity], [0, 0, 0, -Infinity], [-Infinity, 0, 0, 0],
      [-Infinity, -Infinity, 0, 0]]);
    expect(SparseMask.density(mask)).toBeCloseTo(10 / 16, 12);
    expect(SparseMask.sparsity(mask)).toBeCloseTo(6 / 16, 12);
    const numeric = tf.tensor2d([[1, 0], [0, 2]]);
    expect(SparseMask.toAdditive(numeric).arraySync()).toEqual([[0, -Infinity], [-Infinity, 0]]);
    tf.dispose([mask, add, numeric]);
  });

  test('visualize: at most 20 x 20, one line per row, the Rust design\'s characters', () => {
    const small = SparseMask.localWindow(3, 0);
    expect(SparseMask.visualize(small)).toBe('█··\n·█·\n··█\n');
    const big = SparseMask.localWindow(30, 1);
    const lines = SparseMask.visualize(big).split('\n');
    expect(lines).toHaveLength(21); // 20 rows and the empty string after the last newline
    expect(lines.slice(0, 20).every((l) => [...l].length === 20)).toBe(true);
    expect(lines[5]).toBe('····███·············');
    tf.dispose([small, big]);
  });

  test('a builder mask drives scaledDotProductAttention like the same mask written out (GQA, T=9)', () => {
    tf.tidy(() => {
      const q = randn([2, 4, 9, 8], 1);
      const k = randn([2, 2, 9, 8], 2);
      const v = randn([2, 2, 9, 8], 3);
      const mask = SparseMask.localGlobal(9, 2, [0, 5]);
      const out = scaledDotProductAttention(q, k, v, {mask});
      const plain = tf.tensor2d(or(rustDesign.localWindow(9, 2), rustDesign.globalIndices(9, [0, 5]))
        .map((r) => r.map(Number)));
      expectClose(out, referenceAttention(q, k, v, {mask: plain}));
    });
  });

  test('builders leak no tensors, also when they reject their arguments', () => {
    expectNoLeaks(() => expect(() => SparseMask.localGlobal(6, 1, [-1])).toThrow(/non-negative integers/));
    expectNoLeaks(() => expect(() => HnswMask.adaptive(6, 1, [[0, -1]])).toThrow(/non-negative integers/));
    const strided = SparseMask.strided(6, 1, 2);
    expectNoLeaks(() => tf.dispose([SparseMask.localGlobal(6, 1, [2]), HnswMask.adaptive(6, 1, [[0, 5]]),
      SparseMask.toAdditive(strided), HnswMask.fromLayers(6, [[0, 1], [1]]), SparseMask.random(6, 0.5, 1)]));
    expectNoLeaks(() => [SparseMask.density(strided), SparseMask.visualize(strided)]);
    strided.dispose();
  });

  test.each([
    [() => SparseMask.localWindow(0, 1), /T \(the sequence length\) must be a positive integer, received 0/],
    [() => SparseMask.localWindow(4, -1), /W \(the window\) must be a non-negative integer, received -1/],
    [() => SparseMask.globalIndices(4, [1, -2]), /indices must be an array of non-negative integers, received \[1, -2\]/],
    [() => SparseMask.blockDiagonal(4, 0), /block must be a positive integer, received 0/],
    [() => SparseMask.strided(4, 1, 0), /stride must be a positive integer, received 0/],
    [() => SparseMask.random(4, 1.5, 1), /density must be a number in \[0, 1\], received 1\.5/],
    [() => SparseMask.random(4, 0.5, 0.5), /seed must be an integer, received 0\.5/],
    [() => HnswMask.fromLayers(4, [[0], [1.5]]), /layers\[1\] must be an array of non-negative integers/],
    [() => HnswMask.fromEdges(4, [[0, 1, 2]] as never), /edges must be an array of \[from, to\] pairs/],
    [() => HnswMask.fromEdges(4, [[0, -1]]), /edges\[0\] must be an array of non-negative integers/],
  ])('rejects bad arguments with INVALID_CONFIG (%#)', (fn, message) => {
    expectError(fn, 'INVALID_CONFIG', message);
  });

  test('visualize rejects a mask that is not [T, S]', () => {
    expectError(() => SparseMask.visualize(tf.ones([1, 2, 2])), 'INVALID_MASK', /visualize takes a \[T, S\] mask/);
  });
});

describe(title('edge-list forms of the masks (for GraphAttention)'), () => {
  /** A [T, T] grid rebuilt from [source j, target i] edges: entry (i, j). */
  const gridOf = (edges: number[][], T: number): Grid => {
    const m = grid(T);
    for (const [j, i] of edges) if (j !== -1) m[i][j] = true;
    return m;
  };

  test('toEdges lists mask[i][j] as the edge [j, i], by target then source, and loses no entry', () => {
    const T = 9;
    for (const mask of [SparseMask.localWindow(T, 1), SparseMask.strided(T, 1, 4), SparseMask.random(T, 0.3, 7)]) {
      const edges = SparseMask.toEdges(mask);
      expect(edges.dtype).toBe('int32');
      const list = edges.arraySync() as number[][];
      expect(list.length).toBe(Math.round(SparseMask.density(mask) * T * T));
      expect(gridOf(list, T)).toEqual(mask.arraySync().map((r) => (r as number[]).map(Boolean)));
      const keys = list.map(([j, i]) => i * T + j);
      expect(keys).toEqual([...keys].sort((a, b) => a - b)); // sorted and without repeats
      expect(new Set(keys).size).toBe(keys.length);
      tf.dispose([mask, edges]);
    }
    // 0/1 float masks too; an empty mask gives [0, 2].
    const numeric = tf.tensor2d([[0, 1], [1, 1]]);
    expect(SparseMask.toEdges(numeric).arraySync()).toEqual([[1, 0], [0, 1], [1, 1]]);
    const none = SparseMask.toEdges(tf.zeros([3, 3]));
    expect(none.shape).toEqual([0, 2]);
    tf.dispose([numeric, none]);
  });

  test('toEdges of a batch [B, T, T] pads the shorter lists with [-1, -1]', () => {
    const a = SparseMask.localWindow(4, 0);     // 4 entries
    const b = SparseMask.blockDiagonal(4, 2);   // 8 entries
    const batch = tf.stack([a, b]);
    const edges = SparseMask.toEdges(batch);
    expect(edges.shape).toEqual([2, 8, 2]);
    const list = edges.arraySync() as number[][][];
    expect(list[0].slice(0, 4)).toEqual([[0, 0], [1, 1], [2, 2], [3, 3]]);
    expect(list[0].slice(4)).toEqual([[-1, -1], [-1, -1], [-1, -1], [-1, -1]]);
    expect(gridOf(list[1], 4)).toEqual(b.arraySync().map((r) => (r as number[]).map(Boolean)));
    tf.dispose([a, b, batch, edges]);
  });

  test('HnswMask.edgesFromLayers equals toEdges(fromLayers) without forming the mask', () => {
    const layers = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [2, 5, 8], [5]];
    for (const [T, ls, options] of [[10, layers, undefined], [7, layers, {dropOutOfRange: true}],
      [6, [[0, 1], [3, 0], [4]], undefined]] as const) {
      const mask = HnswMask.fromLayers(T, ls as number[][], options);
      const fromMask = SparseMask.toEdges(mask);
      const direct = HnswMask.edgesFromLayers(T, ls as number[][], options);
      expect(direct.shape).toEqual(fromMask.shape);
      expect(direct.arraySync()).toEqual(fromMask.arraySync());
      tf.dispose([mask, fromMask, direct]);
    }
    // Node 5 is in every layer: it sees what its lowest layer (0) sees, every node.
    const list = HnswMask.edgesFromLayers(10, layers);
    const edges = list.arraySync() as number[][];
    list.dispose();
    expect(edges.filter(([, i]) => i === 5).length).toBe(10);
    expect(edges.filter(([, i]) => i === 0).length).toBe(10);
  });

  test('one structure feeds both: GraphAttention over toEdges(mask) attends exactly where the mask allows', () => {
    const T = 6;
    const mask = HnswMask.adaptive(T, 1, [[0, 4], [2, 5]]);
    const edges = tf.expandDims(SparseMask.toEdges(mask), 0) as tf.Tensor3D;
    const x = randn([1, T, 3], 5);
    const layer = new GraphAttention({units: 2, numHeads: 2, addSelfLoops: false});
    const [out, scores] = layer.apply([x, edges], {returnAttentionScores: true}) as tf.Tensor[];
    const list = edges.arraySync()[0] as number[][];
    const alpha = scores.arraySync() as number[][][];
    const dense = Array.from({length: T}, () => new Array(T).fill(0));
    list.forEach(([j, i], e) => { dense[i][j] = alpha[0][e][0]; });
    const allowed = mask.arraySync() as unknown as boolean[][];
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) expect(dense[i][j] > 0).toBe(Boolean(allowed[i][j]));
      expect(dense[i].reduce((a, v) => a + v, 0)).toBeCloseTo(1, 5);
    }
    tf.dispose([mask, edges, x, out, scores]);
    layer.dispose();
  });

  test('bad input: a non-square mask and out-of-range layer nodes are refused; nothing leaks', () => {
    const wide = tf.ones([2, 3]);
    expectError(() => SparseMask.toEdges(wide), 'INVALID_MASK', /square mask \[T, T\].*\[2, 3\]/);
    expectError(() => SparseMask.toEdges([[1]] as never), 'INVALID_MASK', /square mask/);
    expectError(() => HnswMask.edgesFromLayers(4, [[0, 5]]), 'INVALID_CONFIG', /layers\[0\] holds node 5/);
    expectError(() => HnswMask.edgesFromLayers(4, [[0, -1]]), 'INVALID_CONFIG', /layers\[0\]/);
    const mask = SparseMask.localWindow(5, 1);
    expectNoLeaks(() => tf.dispose(SparseMask.toEdges(mask)), 0);
    expectNoLeaks(() => tf.dispose(HnswMask.edgesFromLayers(5, [[0, 1, 2, 3, 4], [2]])), 0);
    tf.dispose([wide, mask]);
  });
});
