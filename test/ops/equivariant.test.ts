// equivariantAttention (EGNN with attention) against the float64 one-node-at-a-time
// reference: outputs, gates and the gradients of the features, positions, edge attributes,
// velocities and every weight (central differences of the reference), with and without
// edge attributes and velocities, mean and sum aggregation; graphs with padding, a node
// without incoming edges, input self loops, no edges at all and no nodes. Then E(n)
// equivariance (rotations and reflections, d = 3 and 2, translations), permutation
// equivariance, refusals and leaks.
import * as tf from '@tensorflow/tfjs';
import {equivariantAttention, equivariantWeightShapes, EquivariantWeights} from '../../src/ops/equivariant';
import {expectClose, expectError, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';
import {arr, ReferenceOptions, referenceEquivariant, referenceGradients} from '../support/equivariant_reference';

const B = 2, N = 5, F = 3, U = 4, A = 2, E = 8, D = 3;
// Graph 0: an input self loop 2 -> 2 (node 2's only edge), a duplicate edge 1 -> 0, node 4
// with no incoming edge, two padding edges. Graph 1: a ring with a chord, padding in the middle.
const EDGES: number[][][] = [
  [[1, 0], [2, 0], [2, 2], [-1, -1], [0, 3], [3, 1], [1, 0], [-1, -1]],
  [[0, 1], [1, 2], [-1, -1], [2, 3], [3, 4], [4, 0], [0, 2], [3, 1]],
];

function makeWeights(f: number, a: number, units: number, velocity: boolean, seed: number): Record<string, tf.Tensor> {
  const w: Record<string, tf.Tensor> = {};
  equivariantWeightShapes(f, U, a, units, velocity).forEach(([key, shape], k) => {
    w[key] = randn(shape, seed + k, 0.6);
  });
  return w;
}

const asWeights = (w: Record<string, tf.Tensor>) => w as unknown as EquivariantWeights;

/** expectClose against nested numbers (the reference's output). */
function expectCloseTo(actual: tf.Tensor, expected: number[][][]): void {
  const t = tf.tensor(expected);
  try {
    expectClose(actual, t);
  } finally {
    t.dispose();
  }
}

interface Case {
  name: string; attr: boolean; vel: boolean; units: number;
  opts: ReferenceOptions;
}

const base: ReferenceOptions = {coordsWeight: 1, aggregation: 'mean', activation: 'swish', residual: true};
const CASES: Case[] = [];
for (const attr of [false, true]) {
  for (const vel of [false, true]) {
    for (const aggregation of ['mean', 'sum'] as const) {
      CASES.push({name: `${attr ? 'edgeAttr' : 'no edgeAttr'}, ${vel ? 'velocities' : 'no velocities'}, ${aggregation}`,
        attr, vel, units: F, opts: {...base, aggregation}});
    }
  }
}
CASES.push({name: 'edgeAttr, velocities, tanh, no residual, units 5, coordsWeight 0.7', attr: true, vel: true, units: 5,
  opts: {coordsWeight: 0.7, aggregation: 'mean', activation: 'tanh', residual: false}});
CASES.push({name: 'relu, sum, no residual, units 2', attr: false, vel: false, units: 2,
  opts: {coordsWeight: 1, aggregation: 'sum', activation: 'relu', residual: false}});

describe(title('equivariantAttention against the float64 reference'), () => {
  test.each(CASES.map((c) => [c.name, c] as const))('%s: outputs, gates and every gradient within 1e-4', (_name, c) => {
    const h = randn([B, N, F], 11);
    const x = randn([B, N, D], 12);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const attr = c.attr ? randn([B, E, A], 13) : null;
    const vel = c.vel ? randn([B, N, D], 14) : null;
    const w = makeWeights(F, c.attr ? A : 0, c.units, c.vel, 20);
    const opts = {coordsWeight: c.opts.coordsWeight, coordinateAggregation: c.opts.aggregation,
      activation: c.opts.activation, residual: c.opts.residual};
    const extra = (a: tf.Tensor | null, v: tf.Tensor | null) => ({...(a != null ? {edgeAttr: a} : {}),
      ...(v != null ? {velocities: v} : {})});
    const [h1, x1, gate] = equivariantAttention(h, x, edges, asWeights(w),
      {...opts, ...extra(attr, vel), returnAttentionScores: true});
    const named: Record<string, tf.Tensor> = {features: h, positions: x, ...(attr != null ? {edgeAttr: attr} : {}),
      ...(vel != null ? {velocities: vel} : {}), ...w};
    const inp = Object.fromEntries(Object.entries(named).map(([k, t]) => [k, arr(t)]));
    const ref = referenceEquivariant(inp, EDGES, c.opts);
    expect(h1.shape).toEqual([B, N, c.units]);
    expect(x1.shape).toEqual([B, N, D]);
    expect(gate.shape).toEqual([B, E, 1]);
    expectCloseTo(h1, ref.h);
    expectCloseTo(x1, ref.x);
    expectCloseTo(gate, ref.gate.map((g) => g.map((v) => [v])));
    EDGES.forEach((list, b) => list.forEach(([s], e) => { if (s === -1) expect(ref.gate[b][e]).toBe(0); }));
    // The positions really move (a coordinate update the comparison could miss otherwise).
    expect(maxDiff(x1, x)).toBeGreaterThan(0.05);
    // Gradients of sum(cotH * h') + sum(cotX * x') for every input and weight.
    const cotH = randn([B, N, c.units], 15);
    const cotX = randn([B, N, D], 16);
    const names = Object.keys(named);
    const grads = tf.grads((...args: tf.Tensor[]) => {
      const t: Record<string, tf.Tensor> = {};
      names.forEach((n, k) => { t[n] = args[k]; });
      const ws = Object.fromEntries(Object.keys(w).map((k) => [k, t[k]]));
      const [hh, xx] = equivariantAttention(t.features, t.positions, edges, asWeights(ws),
        {...opts, ...extra(t.edgeAttr ?? null, t.velocities ?? null)});
      return tf.add(tf.sum(tf.mul(hh, cotH)), tf.sum(tf.mul(xx, cotX)));
    })(names.map((n) => named[n]));
    const want = referenceGradients(inp, EDGES, c.opts, arr(cotH), arr(cotX));
    grads.forEach((g, k) => {
      const expected = tf.tensor(Float32Array.from(want[names[k]]), g.shape, 'float32');
      try {
        expectClose(g, expected);
      } catch (e) {
        throw new Error(`gradient of ${names[k]}: ${(e as Error).message}`);
      }
      expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0);
      expected.dispose();
    });
    tf.dispose([h, x, edges, attr, vel, ...Object.values(w), h1, x1, gate, cotH, cotX, ...grads] as tf.Tensor[]);
  });

  test('a node with no incoming edge keeps its position; one with only an input self loop too, but its features get m_ii', () => {
    const h = randn([B, N, F], 31);
    const x = randn([B, N, D], 32);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const w = makeWeights(F, 0, F, false, 40);
    const [h1, x1] = equivariantAttention(h, x, edges, asWeights(w));
    const none = tf.tensor3d([[[-1, -1]], [[-1, -1]]], [B, 1, 2], 'int32');
    const [h2] = equivariantAttention(h, x, none, asWeights(w));
    const node = (t: tf.Tensor, i: number) => tf.slice(t, [0, i, 0], [1, 1, t.shape[2] as number]);
    tf.tidy(() => {
      for (const i of [2, 4]) expect(maxDiff(node(x1, i), node(x, i))).toBe(0);
      expect(maxDiff(node(h1, 4), node(h2, 4))).toBe(0); // no message: as with no edge at all
      expect(maxDiff(node(h1, 2), node(h2, 2))).toBeGreaterThan(1e-3); // the self loop's message
    });
    tf.dispose([h, x, edges, none, ...Object.values(w), h1, x1, h2]);
  });

  test.each([['E = 3, all padding', 3], ['E = 0', 0]] as const)('no edge (%s): x\' = x + phi_v(h) v and h\' = h + phi_h([h, 0]), gradients finite', (_n, e) => {
    const h = randn([B, N, F], 51);
    const x = randn([B, N, D], 52);
    const vel = randn([B, N, D], 53);
    const list = Array.from({length: B}, () => Array.from({length: e}, () => [-1, -1]));
    const edges = tf.tensor3d(list.flat(2), [B, e, 2], 'int32');
    const w = makeWeights(F, 0, F, true, 60);
    const [h1, x1, gate] = equivariantAttention(h, x, edges, asWeights(w),
      {velocities: vel, returnAttentionScores: true});
    const named = {features: h, positions: x, velocities: vel, ...w};
    const inp = Object.fromEntries(Object.entries(named).map(([k, t]) => [k, arr(t)]));
    const ref = referenceEquivariant(inp, list, base);
    expectCloseTo(h1, ref.h);
    expectCloseTo(x1, ref.x);
    expect(gate.shape).toEqual([B, e, 1]);
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
      const [hh, xx] = equivariantAttention(a, b, edges, asWeights(w), {velocities: vel});
      return tf.add(tf.sum(hh), tf.sum(xx));
    })([h, x]);
    expect(g[0].shape).toEqual([B, N, F]);
    expect(Array.from(g[1].dataSync())).toEqual(new Array(B * N * D).fill(1)); // x' = x + (no messages)
    tf.dispose([h, x, vel, edges, ...Object.values(w), h1, x1, gate, ...g]);
  });

  test('no nodes (N = 0): empty outputs of the right shapes, zero gradients of the inputs\' shapes', () => {
    const h = tf.zeros([B, 0, F]);
    const x = tf.zeros([B, 0, D]);
    const edges = tf.tensor3d([[[-1, -1]], [[-1, -1]]], [B, 1, 2], 'int32');
    const w = makeWeights(F, 0, F, false, 70);
    const [h1, x1, gate] = equivariantAttention(h, x, edges, asWeights(w), {returnAttentionScores: true});
    expect([h1.shape, x1.shape, gate.shape]).toEqual([[B, 0, F], [B, 0, D], [B, 1, 1]]);
    const g = tf.grads((a: tf.Tensor, k: tf.Tensor) =>
      tf.sum(equivariantAttention(a, x, edges, asWeights({...w, edgeKernel0: k}))[0]))([h, w.edgeKernel0]);
    expect(g.map((t) => t.shape)).toEqual([[B, 0, F], [2 * F + 1, U]]);
    expect(Array.from(g[1].dataSync()).every((v) => v === 0)).toBe(true);
    tf.dispose([h, x, edges, ...Object.values(w), h1, x1, gate, ...g]);
  });
});

/** a without row 0 and column c. */
const minor = (a: number[][], c: number) => a.slice(1).map((r) => r.filter((_, k) => k !== c));
const determinant = (a: number[][]): number => (a.length === 1 ? a[0][0]
  : a[0].reduce((s, x, c) => s + (c % 2 ? -1 : 1) * x * determinant(minor(a, c)), 0));

/** A random orthogonal d x d matrix (Gram-Schmidt of a seeded normal one) with determinant `det`. */
function orthogonal(d: number, det: 1 | -1, seed: number): number[][] {
  const m = tf.tidy(() => randn([d, d], seed).arraySync() as number[][]);
  const q: number[][] = [];
  for (const row of m) {
    const v = row.slice();
    for (const u of q) {
      const dot = v.reduce((s, x, k) => s + x * u[k], 0);
      u.forEach((x, k) => { v[k] -= dot * x; });
    }
    const n = Math.hypot(...v);
    q.push(v.map((x) => x / n));
  }
  if (Math.sign(determinant(q)) !== det) q[0] = q[0].map((x) => -x);
  return q;
}

describe(title('equivariantAttention: symmetries'), () => {
  const cases: [number, 1 | -1][] = [[3, 1], [3, -1], [2, 1], [2, -1]];
  const seeds = [80, 180, 280];
  test.each(cases.flatMap(([d, det]) => seeds.map((seed) => [d, det, seed] as const)))(
    'd = %i, det(Q) = %i, Q and t from seed %i: f(Q x + t, h, Q v) = (Q x\' + t, h\') within 1e-4 (float32)',
    (d, det, seed) => {
    const Q = orthogonal(d, det, seed + d);
    expect(determinant(Q)).toBeCloseTo(det, 10);
    const dot = (r: number[], c: number[]) => r.reduce((s, v, k) => s + v * c[k], 0);
    Q.forEach((r, a) => Q.forEach((c, b) => expect(dot(r, c)).toBeCloseTo(a === b ? 1 : 0, 10))); // Q Q^T = I
    const q = tf.tensor2d(Q);
    const t = tf.tensor1d(Array.from({length: d}, (_, k) => 2 - 1.5 * k + seed / 100));
    const move = (p: tf.Tensor, shift: boolean) => tf.tidy(() => { // rows p -> Q p (+ t)
      const r = tf.reshape(tf.matMul(tf.reshape(p, [B * N, d]), q, false, true), [B, N, d]);
      return shift ? tf.add(r, t) : r;
    });
    const h = randn([B, N, F], 81);
    const x = randn([B, N, d], 82);
    const vel = randn([B, N, d], 83);
    const attr = randn([B, E, A], 84);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const w = makeWeights(F, A, F, true, 90);
    const [h1, x1, g1] = equivariantAttention(h, x, edges, asWeights(w),
      {edgeAttr: attr, velocities: vel, returnAttentionScores: true});
    const xr = move(x, true);
    const vr = move(vel, false);
    const [h2, x2, g2] = equivariantAttention(h, xr, edges, asWeights(w),
      {edgeAttr: attr, velocities: vr, returnAttentionScores: true});
    const x1r = move(x1, true);
    // Absolute differences: positions are a few units, so a relative 1e-4 would allow more.
    expect(maxDiff(x2, x1r)).toBeLessThan(1e-4);
    expect(maxDiff(h2, h1)).toBeLessThan(1e-4);
    expect(maxDiff(g2, g1)).toBeLessThan(1e-4);
    // Not trivially so: the positions move, and Q is no identity.
    expect(maxDiff(x1, x)).toBeGreaterThan(0.05);
    expect(maxDiff(xr, x)).toBeGreaterThan(0.5);
    tf.dispose([q, t, h, x, vel, attr, edges, ...Object.values(w), h1, x1, g1, xr, vr, h2, x2, g2, x1r]);
  });

  test('permuting nodes (edges relabelled, edge rows reordered) permutes the outputs and the gates', () => {
    const perm = [3, 0, 4, 1, 2]; // old node i -> new node perm[i]
    const order = [5, 2, 7, 0, 3, 6, 1, 4]; // new edge row r is old row order[r]
    const h = randn([B, N, F], 101);
    const x = randn([B, N, D], 102);
    const vel = randn([B, N, D], 103);
    const attr = randn([B, E, A], 104);
    const w = makeWeights(F, A, F, true, 110);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const permEdges = EDGES.map((list) => order.map((r) => list[r].map((n) => (n === -1 ? -1 : perm[n]))));
    const inverse = perm.map((_, k) => perm.indexOf(k)); // new node k was old node inverse[k]
    const nodes = (t: tf.Tensor) => tf.gather(t, inverse, 1);
    const rows = (t: tf.Tensor) => tf.gather(t, order, 1);
    const out1 = equivariantAttention(h, x, edges, asWeights(w),
      {edgeAttr: attr, velocities: vel, returnAttentionScores: true});
    const [hp, xp, vp, ap] = [nodes(h), nodes(x), nodes(vel), rows(attr)];
    const ep = tf.tensor3d(permEdges, [B, E, 2], 'int32');
    const out2 = equivariantAttention(hp, xp, ep, asWeights(w),
      {edgeAttr: ap, velocities: vp, returnAttentionScores: true});
    const want = [nodes(out1[0]), nodes(out1[1]), rows(out1[2])];
    out2.forEach((o, k) => expectClose(o, want[k], 1e-5));
    tf.dispose([h, x, vel, attr, ...Object.values(w), edges, ...out1, hp, xp, vp, ap, ep, ...out2, ...want]);
  });
});

describe(title('equivariantAttention: refusals and leaks'), () => {
  const h = () => randn([1, 3, F], 121);
  const x = () => randn([1, 3, D], 122);
  const e = () => tf.tensor3d([[[0, 1], [2, 1]]], [1, 2, 2], 'int32');

  test('bad edges, shapes, dtypes, weights and options are refused with codes', () => {
    const [hs, xs, es] = [h(), x(), e()];
    const w = asWeights(makeWeights(F, 0, F, false, 130));
    const wv = asWeights(makeWeights(F, 0, F, true, 140));
    const fe = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'float32');
    const bad = tf.tensor3d([[[0, 3]]], [1, 1, 2], 'int32');
    const x2 = randn([2, 3, D], 123);
    const v2 = randn([1, 3, 2], 124);
    const attr = randn([1, 3, A], 125);
    const h4 = randn([1, 3, 4], 126);
    const run = (f: tf.Tensor, p: tf.Tensor, ed: tf.Tensor, ws: EquivariantWeights, o = {}) =>
      equivariantAttention(f, p, ed, ws, o);
    expectError(() => run(hs, xs, fe, w), 'INVALID_CONFIG', /edges must be int32/);
    expectError(() => run(hs, xs, bad, w), 'DIMENSION_MISMATCH', /edges\[0\]\[0\] is \[0, 3\].*\[0, 3\)/);
    expectError(() => run(hs, x2, es, w), 'DIMENSION_MISMATCH', /positions must have shape \[1, 3, d\]/);
    expectError(() => run(hs, xs, es, wv, {velocities: v2}), 'DIMENSION_MISMATCH', /velocities must have shape \[1, 3, 3\]/);
    expectError(() => run(hs, xs, es, w, {edgeAttr: attr}), 'DIMENSION_MISMATCH', /edgeAttr must have shape \[1, 2, A\]/);
    expectError(() => run(hs, xs, es, w, {velocities: xs}), 'INVALID_CONFIG', /velocityKernel0/);
    expectError(() => run(hs, xs, es, wv), 'INVALID_CONFIG', /'velocityKernel0'.*pass options.velocities/);
    expectError(() => run(h4, xs, es, w), 'DIMENSION_MISMATCH', /edgeKernel0 must be a \[9, hiddenUnits\]/);
    const w5 = asWeights(makeWeights(F, 0, 5, false, 150));
    expectError(() => run(hs, xs, es, w5), 'DIMENSION_MISMATCH', /with residual.*3 columns.*residual: false/);
    expectError(() => run(hs, xs, es, {...w, coordBias0: tf.zeros([U + 1])} as never), 'DIMENSION_MISMATCH',
      /weights.coordBias0 must have shape \[4\]/);
    expectError(() => run(hs, xs, es, w, {activation: 'silu'}), 'INVALID_CONFIG', /'swish'/);
    expectError(() => run(hs, xs, es, w, {activation: 'sigmoidal'}), 'INVALID_CONFIG', /activation must be one of/);
    expectError(() => run(hs, xs, es, w, {coordinateAggregation: 'max'}), 'INVALID_CONFIG', /coordinateAggregation/);
    expectError(() => run(hs, xs, es, w, {coordsAgg: 'sum'}), 'INVALID_CONFIG', /did you mean 'coordinateAggregation'/);
    expectError(() => run(hs, xs, es, w, {coords_agg: 'sum'}), 'INVALID_CONFIG', /did you mean 'coordinateAggregation'/);
    expectError(() => run(hs, xs, es, w, {normDiff: true}), 'UNSUPPORTED', /unnormalised/);
    expectError(() => run(hs, xs, es, w, {coordsWeight: NaN}), 'INVALID_CONFIG', /coordsWeight/);
    expectError(() => run(tf.zeros([1, 3]), xs, es, w), 'DIMENSION_MISMATCH', /features must be a float32 tensor \[batch/);
    tf.dispose([hs, xs, es, ...Object.values(w), ...Object.values(wv), ...Object.values(w5), fe, bad, x2, v2, attr,
      h4]);
  });

  test('forward and gradients leak nothing', () => {
    const [hs, xs, es] = [h(), x(), e()];
    const attr = randn([1, 2, A], 161);
    const w = makeWeights(F, A, F, true, 170);
    const o = {edgeAttr: attr, velocities: xs, returnAttentionScores: true as const};
    expectNoLeaks(() => tf.dispose(equivariantAttention(hs, xs, es, asWeights(w), o)));
    expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, k: tf.Tensor) => {
      const [hh, xx] = equivariantAttention(a, b, es, asWeights({...w, coordKernel1: k}), o);
      return tf.add(tf.sum(hh), tf.sum(xx));
    })([hs, xs, w.coordKernel1])));
    tf.dispose([hs, xs, es, attr, ...Object.values(w)]);
  });
});
