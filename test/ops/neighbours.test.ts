// radiusGraph and knnGraph against a brute-force O(N^2) reference written below: random clouds
// in d = 1, 2, 3, 5 with batches whose graphs differ in edge count, ties on an integer grid and
// duplicated points, truncation, loops, empty neighbourhoods and batches, exact row order,
// leaks and every refusal.
import * as tf from '@tensorflow/tfjs';
import {knnGraph, radiusGraph} from '../../src/ops/neighbours';
import {squaredLimit} from '../../src/ops/kd_tree';
import {expectError, expectNoLeaks, seededValues, title} from '../support/helpers';

/**
 * Every target i's sources j (j != i unless loop), all points within r (sqrt of the float64
 * squared distance <= r) or all of them (r null), sorted by (squared distance, j), the first
 * `cap` kept; rows [j, i] by target, each graph padded with [-1, -1] to the batch's most rows.
 */
function reference(points: number[][][], r: number | null, cap: number, loop: boolean): number[][][] {
  const graphs = points.map((cloud) => {
    const rows: number[][] = [];
    cloud.forEach((pi, i) => {
      const found: [number, number][] = [];
      cloud.forEach((pj, j) => {
        if (j === i && !loop) return;
        let d2 = 0;
        for (let c = 0; c < pi.length; c++) d2 += (pi[c] - pj[c]) * (pi[c] - pj[c]);
        if (r == null || Math.sqrt(d2) <= r) found.push([d2, j]);
      });
      found.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      for (const [, j] of found.slice(0, cap)) rows.push([j, i]);
    });
    return rows;
  });
  const E = Math.max(0, ...graphs.map((g) => g.length));
  return graphs.map((g) => [...g, ...Array.from({length: E - g.length}, () => [-1, -1])]);
}

/** B seeded clouds of N points in [-1, 1)^d, graph b scaled by 1 + b so their edge counts differ. */
function cloud(B: number, N: number, d: number, seed: number): number[][][] {
  const v = seededValues(B * N * d, seed);
  return Array.from({length: B}, (_, b) => Array.from({length: N}, (_, n) =>
    // Rounded to float32: the coordinates the op reads.
    Array.from(v.subarray((b * N + n) * d, (b * N + n + 1) * d), (x) => Math.fround(x * (1 + b)))));
}

function tensorOf(points: number[][][], d: number): tf.Tensor3D {
  return tf.tensor3d(points.flat(2), [points.length, points[0]?.length ?? 0, d], 'float32');
}

/** Runs op on the points and checks dtype, shape and every row against the reference. */
function expectGraph(op: (p: tf.Tensor) => tf.Tensor, points: number[][][], d: number, expected: number[][][]): void {
  const p = tensorOf(points, d);
  const edges = op(p);
  expect(edges.dtype).toBe('int32');
  const E = expected[0]?.length ?? 0;
  expect(edges.shape).toEqual([points.length, E, 2]);
  // (arraySync flattens a [B, 0, 2] tensor to [], so an empty result is checked by its shape.)
  if (E > 0) expect(edges.arraySync()).toEqual(expected);
  tf.dispose([p, edges]);
}

// A 4 x 3 integer grid (node 3 * y + x at (x, y)): each inner node has 4 neighbours at 1 and 4 at
// sqrt(2); nodes 12 and 13 duplicate node 4, node 14 lies far from everything.
const GRID = [...Array.from({length: 12}, (_, n) => [n % 3, Math.floor(n / 3)]), [1, 1], [1, 1], [50, 50]];

describe(title('radiusGraph and knnGraph equal the brute-force reference'), () => {
  const cases: [number, number, number][] = [[1, 1, 1], [2, 2, 7], [3, 2, 40], [2, 3, 150], [3, 5, 60], [1, 3, 300]];
  test.each(cases)('random clouds (B=%i, d=%i, N=%i): radius, knn, loop and truncation', (B, d, N) => {
    const points = cloud(B, N, d, 7 * N + d);
    const r = 0.6;
    for (const loop of [false, true]) {
      expectGraph((p) => radiusGraph(p, r, {loop}), points, d, reference(points, r, 32, loop));
      expectGraph((p) => radiusGraph(p, r, {loop, maxNeighbors: 3}), points, d, reference(points, r, 3, loop));
      for (const k of [1, 5, 16]) {
        expectGraph((p) => knnGraph(p, k, {loop}), points, d, reference(points, null, k, loop));
      }
    }
  });

  test('graphs of different edge counts: each padded with [-1, -1] to the largest', () => {
    const points = cloud(3, 30, 3, 5); // graph b spread 1 + b times as wide: fewer edges
    const expected = reference(points, 0.5, 32, false);
    const counts = expected.map((g) => g.filter(([j]) => j >= 0).length);
    expect(new Set(counts).size).toBe(3);
    expect(expected[2].slice(counts[2])).toEqual(Array.from({length: counts[0] - counts[2]}, () => [-1, -1]));
    expectGraph((p) => radiusGraph(p, 0.5), points, 3, expected);
  });

  test.each([[1, 400, 40], [2, 200, 5], [3, 150, 3]])('d=%i, N=%i on an integer grid of side %i: many ties and duplicates across cells', (d, N, side) => {
    const points = cloud(2, N, d, 11 * d).map((g) => g.map((p) => p.map((x) => Math.floor((x + 1) * side / 2) % side)));
    for (const r of [0, 1, 1.5]) {
      expectGraph((p) => radiusGraph(p, r, {maxNeighbors: 7}), points, d, reference(points, r, 7, false));
    }
    for (const loop of [false, true]) {
      expectGraph((p) => knnGraph(p, 6, {loop}), points, d, reference(points, null, 6, loop));
    }
  });
});

describe(title('radiusGraph and knnGraph: ties, duplicates and edge cases'), () => {
  test('integer grid: distance ties broken by the lower source index', () => {
    const grid = [GRID];
    for (const r of [1, Math.SQRT2, 2, 3]) {
      for (const cap of [1, 3, 5, 32]) {
        expectGraph((p) => radiusGraph(p, r, {maxNeighbors: cap}), grid, 2, reference(grid, r, cap, false));
      }
    }
    for (const k of [1, 2, 4, 6, 9]) {
      for (const loop of [false, true]) {
        expectGraph((p) => knnGraph(p, k, {loop}), grid, 2, reference(grid, null, k, loop));
      }
    }
  });

  test('ties across cells: lines and grids with indices in reverse order of position', () => {
    // Node i of the line sits at 59 - i: its neighbours i + 1 and i - 1 are at distance 1 on
    // either side, and the tie goes to i - 1, on the side the split often puts in the far cell.
    const line: number[][][] = [Array.from({length: 60}, (_, i) => [59 - i])];
    const grid: number[][][] = [Array.from({length: 64}, (_, i) => [(63 - i) % 8, Math.floor((63 - i) / 8)])];
    for (const [points, d] of [[line, 1], [grid, 2]] as const) {
      for (const k of [1, 2, 3, 5]) {
        expectGraph((p) => knnGraph(p, k), points, d, reference(points, null, k, false));
        expectGraph((p) => radiusGraph(p, 2, {maxNeighbors: k}), points, d, reference(points, 2, k, false));
      }
    }
  });

  test('zero padding: a third of each cloud duplicated at the origin', () => {
    const points = cloud(2, 90, 3, 21).map((g) => g.map((p, n) => (n % 3 === 1 ? [0, 0, 0] : p)));
    expectGraph((p) => knnGraph(p, 8), points, 3, reference(points, null, 8, false));
    expectGraph((p) => radiusGraph(p, 0.3, {maxNeighbors: 8, loop: true}), points, 3, reference(points, 0.3, 8, true));
  });

  test('exact rows: by target, then distance, then source; the isolated node 14 receives nothing', () => {
    const edges = radiusGraph(tf.tensor3d([GRID], [1, 15, 2]), 1, {maxNeighbors: 3});
    const rows = edges.arraySync()[0];
    // Node 0 at (0, 0): 1 and 3 at distance 1. Node 4 at (1, 1): its duplicates 12 and 13 at 0,
    // then 1 (of 1, 3, 5, 7 at distance 1). Node 12: 4 and 13 at 0, then 1.
    expect(rows.filter(([, i]) => i === 0)).toEqual([[1, 0], [3, 0]]);
    expect(rows.filter(([, i]) => i === 4)).toEqual([[12, 4], [13, 4], [1, 4]]);
    expect(rows.filter(([, i]) => i === 12)).toEqual([[4, 12], [13, 12], [1, 12]]);
    expect(rows.filter(([, i]) => i === 14)).toEqual([]);
    expect(rows.map(([, i]) => i)).toEqual([...rows.map(([, i]) => i)].sort((a, b) => a - b));
    edges.dispose();
  });

  test('r = 0 links only points at the same place; with loop every node also gets i -> i', () => {
    const grid = [GRID];
    expectGraph((p) => radiusGraph(p, 0), grid, 2, [[[12, 4], [13, 4], [4, 12], [13, 12], [4, 13], [12, 13]]]);
    expectGraph((p) => radiusGraph(p, 0, {loop: true}), grid, 2, reference(grid, 0, 32, true));
    expect(reference(grid, 0, 32, true)[0]).toHaveLength(15 + 6);
  });

  test('knn with loop: i at distance 0 counts among its k (a lower-index duplicate comes first)', () => {
    const edges = knnGraph(tf.tensor3d([GRID], [1, 15, 2]), 2, {loop: true});
    const rows = edges.arraySync()[0];
    expect(rows.filter(([, i]) => i === 0)).toEqual([[0, 0], [1, 0]]);
    expect(rows.filter(([, i]) => i === 13)).toEqual([[4, 13], [12, 13]]);
    edges.dispose();
  });

  test('every point identical: the k lowest other indices', () => {
    const same = [Array.from({length: 30}, () => [0.5, -2, 3])];
    expectGraph((p) => knnGraph(p, 4), same, 3, reference(same, null, 4, false));
    expectGraph((p) => radiusGraph(p, 0, {maxNeighbors: 5, loop: true}), same, 3, reference(same, 0, 5, true));
  });

  test('k larger than N - 1 gives every other point; N = 1 gives [B, 0, 2]', () => {
    const points = cloud(2, 4, 3, 9);
    expectGraph((p) => knnGraph(p, 10), points, 3, reference(points, null, 3, false));
    expectGraph((p) => knnGraph(p, 10, {loop: true}), points, 3, reference(points, null, 4, true));
    expect(reference(points, null, 10, false)[0]).toHaveLength(12);
    expectGraph((p) => knnGraph(p, 3), cloud(2, 1, 3, 1), 3, [[], []]);
    expectGraph((p) => knnGraph(p, 3, {loop: true}), cloud(2, 1, 3, 1), 3, [[[0, 0]], [[0, 0]]]);
  });

  test('no edge in the batch, B = 0 and N = 0 give [B, 0, 2] int32', () => {
    expectGraph((p) => radiusGraph(p, 0.1), [[[0, 0], [1, 0]], [[0, 5], [0, 0]]], 2, [[], []]);
    for (const shape of [[0, 5, 3], [2, 0, 3], [0, 0, 1]]) {
      for (const op of [(p: tf.Tensor) => radiusGraph(p, 1), (p: tf.Tensor) => knnGraph(p, 2, {loop: true})]) {
        const p = tf.zeros(shape);
        const edges = op(p);
        expect(edges.dtype).toBe('int32');
        expect(edges.shape).toEqual([shape[0], 0, 2]);
        tf.dispose([p, edges]);
      }
    }
  });

  test('squaredLimit(r) is the largest float64 whose square root is <= r', () => {
    for (const r of [0, 1e-30, 0.1, 0.6, 1, Math.SQRT2, 3, 1e200]) {
      const x = squaredLimit(r);
      expect(Math.sqrt(x)).toBeLessThanOrEqual(r);
      const next = new Float64Array([x]);
      new BigUint64Array(next.buffer)[0] += 1n;
      expect(Math.sqrt(next[0])).toBeGreaterThan(r);
    }
  });

  test('no leaked tensors', () => {
    const p = tensorOf(cloud(2, 50, 3, 4), 3);
    expectNoLeaks(() => tf.dispose(radiusGraph(p, 0.5)));
    expectNoLeaks(() => tf.dispose(knnGraph(p, 4)));
    expectNoLeaks(() => expectError(() => knnGraph(p, 0), 'INVALID_CONFIG', /k must be a positive integer/));
    p.dispose();
  });
});

describe(title('radiusGraph and knnGraph refusals'), () => {
  let p: tf.Tensor;
  beforeAll(() => { p = tf.zeros([2, 3, 2]); });
  afterAll(() => p.dispose());

  test('positions: not a tensor, not float32, not rank 3, d = 0', () => {
    expectError(() => radiusGraph([[[0, 0]]] as unknown as tf.Tensor, 1), 'INVALID_CONFIG', /positions must be a tf.Tensor/);
    const ints = tf.zeros([1, 3, 2], 'int32');
    expectError(() => knnGraph(ints, 2), 'INVALID_CONFIG', /positions must be float32, received dtype int32/);
    ints.dispose();
    const flat = tf.zeros([3, 2]);
    expectError(() => radiusGraph(flat, 1), 'DIMENSION_MISMATCH', /positions must have rank 3.*received shape \[3, 2\]/);
    flat.dispose();
    const none = tf.zeros([1, 3, 0]);
    expectError(() => knnGraph(none, 1), 'DIMENSION_MISMATCH', /at least one coordinate.*\[1, 3, 0\]/);
    none.dispose();
  });

  test('non-finite positions: the first bad point is named', () => {
    const bad = tf.tensor3d([[[0, 0], [1, 1]], [[2, 2], [NaN, 1]]]);
    expectError(() => radiusGraph(bad, 1), 'INVALID_CONFIG', /positions\[1\]\[1\] is \[NaN, 1\].*finite/);
    bad.dispose();
    const inf = tf.tensor3d([[[0, Infinity], [1, -Infinity]]]);
    expectError(() => knnGraph(inf, 1), 'INVALID_CONFIG', /positions\[0\]\[0\] is \[0, Infinity\]/);
    inf.dispose();
  });

  test('r, k and maxNeighbors out of range', () => {
    for (const r of [-0.5, NaN, Infinity, '1', null]) {
      expectError(() => radiusGraph(p, r as number), 'INVALID_CONFIG', /r must be a finite number >= 0, received/);
    }
    for (const k of [0, 2.5, -1, NaN, '3']) {
      expectError(() => knnGraph(p, k as number), 'INVALID_CONFIG', /k must be a positive integer/);
      expectError(() => radiusGraph(p, 1, {maxNeighbors: k as number}), 'INVALID_CONFIG', /maxNeighbors must be a positive integer/);
    }
    expectError(() => knnGraph(p, 2, {loop: 1 as unknown as boolean}), 'INVALID_CONFIG', /loop must be a boolean/);
    expectError(() => radiusGraph(p, 1, {loop: 'yes' as unknown as boolean}), 'INVALID_CONFIG', /loop must be a boolean/);
  });

  test("unknown options: the nearest name, and PyG's names mapped to ours", () => {
    expectError(() => radiusGraph(p, 1, {maxNeighbours: 4} as object), 'INVALID_CONFIG', /'maxNeighbours'.*did you mean 'maxNeighbors'/);
    for (const name of ['maxNumNeighbors', 'max_num_neighbors']) {
      expectError(() => radiusGraph(p, 1, {[name]: 4} as object), 'INVALID_CONFIG', new RegExp(`'${name}'.*did you mean 'maxNeighbors'`));
    }
    expectError(() => knnGraph(p, 2, {loops: true} as object), 'INVALID_CONFIG', /'loops'.*did you mean 'loop'/);
    expectError(() => knnGraph(p, 2, {maxNeighbors: 4} as object), 'INVALID_CONFIG', /'maxNeighbors'.*second argument/);
    expectError(() => radiusGraph(p, 1, {batch: [0, 0, 1]} as object), 'INVALID_CONFIG', /'batch'.*first dimension of positions/);
    expectError(() => knnGraph(p, 2, {flow: 'target_to_source'} as object), 'UNSUPPORTED', /'flow'.*source_to_target/);
    expectError(() => knnGraph(p, 2, {cosine: true} as object), 'UNSUPPORTED', /'cosine'.*Euclidean/);
    // PyG's defaults ask for nothing.
    const edges = knnGraph(p, 2, {flow: 'source_to_target', cosine: false} as object);
    expect(edges.shape).toEqual([2, 6, 2]);
    edges.dispose();
  });
});
