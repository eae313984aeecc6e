// geometricAttention (PointTransformerConv semantics) against the float64 one-node-at-a-time
// reference: forward and the gradients of features, positions and every weight (against
// central differences of the reference), with and without self loops, per channel and with
// heads, with MLPs for h and gamma, in 2 and 3 dimensions; then translation invariance, the
// scores, empty inputs, coded errors and leaks.
import * as tf from '@tensorflow/tfjs';
import {geometricAttention, GeometricWeights} from '../../src/ops/geometric';
import {expectClose, expectError, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';
import {
  flat, GeometricReferenceInputs, inputList, referenceGeometric, referenceGradients, tensorOf,
} from '../support/geometric_reference';

const B = 2, N = 5, F = 3, C = 4, E = 8;
// Graph 0: a duplicate edge 1 -> 0, an input self loop 2 -> 2 (node 2's only incoming edge:
// dropped and replaced with self loops, kept without), node 4 with no incoming edge, two
// padding edges. Graph 1: a cycle with chords and a padding edge in the middle.
const EDGES: number[][][] = [
  [[1, 0], [1, 0], [2, 0], [2, 2], [0, 3], [3, 1], [-1, -1], [-1, -1]],
  [[0, 1], [1, 2], [-1, -1], [2, 3], [3, 4], [4, 0], [0, 2], [3, 1]],
];

interface Case {
  selfLoops: boolean;
  heads: number | null;
  /** gamma's hidden sizes; null: identity (or Linear(C -> H) with heads). */
  attentionUnits: number[] | null;
  /** h's hidden sizes. */
  positionUnits: number[];
  d: number;
  bias: boolean;
}

/** The weights of a case, in the reference's inputList order (after features and positions). */
function weightTensors(c: Case, seed: number, d = c.d): tf.Tensor[] {
  let s = seed;
  const w = (shape: number[], scale = 0.6) => randn(shape, s++, scale);
  const list = [w([F, C]), w([F, C]), w([F, C])];
  const mlp = (sizes: number[]) => sizes.slice(1).forEach((out, k) => list.push(w([sizes[k], out]), w([out], 0.3)));
  mlp([d, ...c.positionUnits, C]);
  const att = c.attentionUnits ?? (c.heads != null ? [] : null);
  if (att != null) mlp([C, ...att, c.heads ?? C]);
  if (c.bias) list.push(w([C], 0.3));
  return list;
}

/** The tensors of weightTensors as GeometricWeights. */
function asWeights(c: Case, list: tf.Tensor[]): GeometricWeights {
  const nPos = c.positionUnits.length + 1;
  const nAtt = c.attentionUnits != null ? c.attentionUnits.length + 1 : c.heads != null ? 1 : 0;
  const pick = (from: number, n: number, odd: number) =>
    Array.from({length: n}, (_, k) => list[from + 2 * k + odd]);
  const w: GeometricWeights = {kernel: list[0], sourceKernel: list[1], targetKernel: list[2],
    positionKernels: pick(3, nPos, 0), positionBiases: pick(3, nPos, 1)};
  if (nAtt > 0) {
    w.attentionKernels = pick(3 + 2 * nPos, nAtt, 0);
    w.attentionBiases = pick(3 + 2 * nPos, nAtt, 1);
  }
  if (c.bias) w.bias = list[list.length - 1];
  return w;
}

/** The reference's inputs from features, positions and weightTensors' list. */
function referenceInputs(c: Case, x: tf.Tensor, p: tf.Tensor, list: tf.Tensor[]): GeometricReferenceInputs {
  const w = asWeights(c, list);
  return {features: flat(x), positions: flat(p), kernel: flat(w.kernel), sourceKernel: flat(w.sourceKernel),
    targetKernel: flat(w.targetKernel), positionKernels: w.positionKernels.map(flat),
    positionBiases: w.positionBiases.map(flat), attentionKernels: (w.attentionKernels ?? []).map(flat),
    attentionBiases: (w.attentionBiases ?? []).map(flat), bias: w.bias != null ? flat(w.bias) : null};
}

const CASES: [string, Case][] = [
  ['self loops, per channel, h = Linear(d, C), gamma identity, d=3',
    {selfLoops: true, heads: null, attentionUnits: null, positionUnits: [], d: 3, bias: false}],
  ['no self loops, per channel, h hidden [6], gamma hidden [5], d=2, bias',
    {selfLoops: false, heads: null, attentionUnits: [5], positionUnits: [6], d: 2, bias: true}],
  ['self loops, H=2, gamma hidden [5], h hidden [4, 3], d=3, bias',
    {selfLoops: true, heads: 2, attentionUnits: [5], positionUnits: [4, 3], d: 3, bias: true}],
  ['no self loops, H=2, gamma = Linear(C, H), d=2',
    {selfLoops: false, heads: 2, attentionUnits: null, positionUnits: [], d: 2, bias: false}],
];

describe(title('geometricAttention against the float64 reference'), () => {
  test.each(CASES)('%s: output and every gradient within 1e-4', (_name, c) => {
    const x = randn([B, N, F], 11);
    const p = randn([B, N, c.d], 12);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const list = weightTensors(c, 20);
    const cot = randn([B, N, C], 13);
    const opts = {addSelfLoops: c.selfLoops, numHeads: c.heads};
    const ref = referenceInputs(c, x, p, list);
    const refOpts = {selfLoops: c.selfLoops, numHeads: c.heads};
    const ours = geometricAttention(x, p, edges, asWeights(c, list), opts);
    const expected = tensorOf(referenceGeometric(ref, EDGES, refOpts));
    expectClose(ours, expected);
    // Without self loops, graph 0's node 4 has no incoming edge: zeros, plus the bias.
    if (!c.selfLoops) {
      const row = tf.tidy(() => tf.reshape(tf.slice(ours, [0, 4, 0], [1, 1, C]), [C]));
      const bias = c.bias ? list[list.length - 1].dataSync() : new Float32Array(C);
      expect(Array.from(row.dataSync())).toEqual(Array.from(bias));
      row.dispose();
    }
    const grads = tf.grads((...a: tf.Tensor[]) =>
      tf.sum(tf.mul(geometricAttention(a[0], a[1], edges, asWeights(c, a.slice(2)), opts), cot)))([x, p, ...list]);
    const refGrads = referenceGradients(ref, EDGES, refOpts, flat(cot)).map(tensorOf);
    expect(grads).toHaveLength(inputList(ref).length);
    // A shift common to all of node i's logits cancels in the softmax: gamma's last bias, and
    // W_dst x_i when gamma is affine (identity or one Linear), get zero gradients, in PyG too.
    const affine = c.attentionUnits == null;
    const gamma = c.attentionUnits != null || c.heads != null;
    const inert = [...(affine ? [4] : []), ...(gamma ? [list.length - (c.bias ? 2 : 1) + 2] : [])];
    const maxAbs = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);
    grads.forEach((g, i) => {
      if (inert.includes(i)) {
        expect(maxAbs(g)).toBeLessThan(1e-5);
        expect(maxAbs(refGrads[i])).toBeLessThan(1e-5);
        return;
      }
      expectClose(g, refGrads[i]);
      expect(maxAbs(g)).toBeGreaterThan(1e-3); // every other gradient carries signal
    });
    tf.dispose([x, p, edges, ...list, cot, ours, expected, ...grads, ...refGrads]);
  });

  test('translating every position leaves the output unchanged (d=3, with heads); scaling them does not', () => {
    const c = CASES[2][1];
    const x = randn([B, N, F], 31);
    const p = randn([B, N, 3], 32);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const list = weightTensors(c, 40);
    const run = (q: tf.Tensor) => geometricAttention(x, q, edges, asWeights(c, list), {numHeads: 2});
    const moved = tf.add(p, tf.tensor1d([0.75, -1.5, 2.25]));
    const scaled = tf.mul(p, 2);
    const [y, yMoved, yScaled] = [run(p), run(moved), run(scaled)];
    expectClose(yMoved, y);
    expect(maxDiff(yScaled, y)).toBeGreaterThan(1e-2); // the output does depend on the positions
    tf.dispose([x, p, edges, ...list, moved, scaled, y, yMoved, yScaled]);
  });

  test.each([[null, C], [2, 2]] as const)('numHeads %s: scores [B, E + N, %s], 0 on padding and dropped self loops, summing to 1 per node',
    (heads, width) => {
      const c: Case = {selfLoops: true, heads, attentionUnits: heads != null ? [] : null, positionUnits: [], d: 2,
        bias: false};
      const x = randn([B, N, F], 51);
      const p = randn([B, N, 2], 52);
      const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
      const list = weightTensors(c, 60);
      const {output, scores} = geometricAttention(x, p, edges, asWeights(c, list),
        {numHeads: heads, returnAttentionScores: true});
      expect(scores.shape).toEqual([B, E + N, width]);
      const alpha = scores.arraySync() as number[][][];
      for (let b = 0; b < B; b++) {
        EDGES[b].forEach(([s, t], e) => {
          if (s === -1 || s === t) expect(alpha[b][e]).toEqual(new Array(width).fill(0));
        });
        for (let i = 0; i < N; i++) {
          const incoming = EDGES[b].map(([s, t], e) => (t === i && s !== -1 && s !== t ? e : -1)).filter((e) => e >= 0);
          const rows = [...incoming, E + i];
          for (let h = 0; h < width; h++) expect(rows.reduce((a, r) => a + alpha[b][r][h], 0)).toBeCloseTo(1, 5);
        }
      }
      tf.dispose([x, p, edges, ...list, output, scores]);
    });
});

describe(title('geometricAttention: nothing to aggregate'), () => {
  const c: Case = {selfLoops: false, heads: null, attentionUnits: [3], positionUnits: [], d: 2, bias: true};
  test.each([[0, N, E], [B, 0, 0], [B, N, E]])(
    'B=%s, N=%s, E=%s (all padding, no self loops): the bias, and zero gradients of every input\'s shape', (b, n, e) => {
      const x = randn([b, n, F], 71);
      const p = randn([b, n, 2], 72);
      const edges = tf.tensor3d(new Array(b * e * 2).fill(-1), [b, e, 2], 'int32');
      const list = weightTensors(c, 80);
      const bias = list[list.length - 1];
      const y = geometricAttention(x, p, edges, asWeights(c, list), {addSelfLoops: false});
      expect(y.shape).toEqual([b, n, C]);
      const expected = tf.tidy(() => tf.add(tf.zeros([b, n, C]), bias));
      expect(Array.from(y.dataSync())).toEqual(Array.from(expected.dataSync()));
      const grads = tf.grads((...a: tf.Tensor[]) =>
        tf.sum(geometricAttention(a[0], a[1], edges, asWeights(c, a.slice(2)), {addSelfLoops: false})))(
        [x, p, ...list]);
      grads.forEach((g, i) => expect(g.shape).toEqual([x, p, ...list][i].shape));
      grads.slice(0, -1).forEach((g) => expect(Array.from(g.dataSync()).every((v) => v === 0)).toBe(true));
      tf.dispose([x, p, edges, ...list, y, expected, ...grads]);
    });
});

describe(title('geometricAttention: refusals and leaks'), () => {
  const c: Case = {selfLoops: true, heads: null, attentionUnits: null, positionUnits: [], d: 3, bias: true};
  const x = () => randn([B, N, F], 91);
  const p = () => randn([B, N, 3], 92);
  const edges = () => tf.tensor3d(EDGES, [B, E, 2], 'int32');

  test('bad edges, positions and options are refused with codes', () => {
    const [xx, pp, ee] = [x(), p(), edges()];
    const list = weightTensors(c, 100);
    const w = asWeights(c, list);
    const run = (a: tf.Tensor, q: tf.Tensor, e: tf.Tensor, ws: unknown = w, o: unknown = {}) =>
      () => geometricAttention(a, q, e, ws as GeometricWeights, o as never);
    const bad = tf.tensor3d([[[0, 1], [1, N]], [[0, 1], [-1, -1]]], [B, 2, 2], 'int32');
    expectError(run(xx, pp, bad), 'DIMENSION_MISMATCH', /edges\[0\]\[1\] is \[1, 5\]: node indices must lie in \[0, 5\)/);
    const negative = tf.tensor3d([[[0, -1]], [[0, 1]]], [B, 1, 2], 'int32');
    expectError(run(xx, pp, negative), 'DIMENSION_MISMATCH', /edges\[0\]\[0\] is \[0, -1\]/);
    const floats = tf.tensor3d(EDGES, [B, E, 2], 'float32');
    expectError(run(xx, pp, floats), 'INVALID_CONFIG', /edges must be int32/);
    const triples = tf.zeros([B, E, 3], 'int32');
    expectError(run(xx, pp, triples), 'DIMENSION_MISMATCH', /edges must have shape \[2, E, 2\]/);
    const otherB = randn([1, N, 3], 93);
    expectError(run(xx, otherB, ee), 'DIMENSION_MISMATCH', /positions must have shape \[2, 5, d\].*received shape \[1, 5, 3\]/);
    const otherN = randn([B, N + 1, 3], 94);
    expectError(run(xx, otherN, ee), 'DIMENSION_MISMATCH', /positions must have shape \[2, 5, d\].*received shape \[2, 6, 3\]/);
    const plane = randn([B, N, 2], 95);
    expectError(run(xx, plane, ee), 'DIMENSION_MISMATCH', /positionKernels\[0\] must have 2 rows \(d, the positions' last dim\), received shape \[3, 4\]/);
    const intPositions = tf.zeros([B, N, 3], 'int32');
    expectError(run(xx, intPositions, ee), 'INVALID_CONFIG', /positions must be float32/);
    expectError(run(xx, pp, ee, w, {numHeads: 3}), 'INVALID_CONFIG', /units \(4\) must be divisible by numHeads \(3\)/);
    expectError(run(xx, pp, ee, w, {numHeads: 2}), 'INVALID_CONFIG', /numHeads \(2\) needs gamma.*attentionKernels/);
    expectError(run(xx, pp, ee, w, {selfLoops: false}), 'INVALID_CONFIG', /unknown argument 'selfLoops'.*'addSelfLoops'/);
    expectError(run(xx, pp, ee, w, {addSelfLoops: 1}), 'INVALID_CONFIG', /addSelfLoops must be a boolean/);
    tf.dispose([xx, pp, ee, ...list, bad, negative, floats, triples, otherB, otherN, plane, intPositions]);
  });

  test('every weight is checked: shape, dtype, MLP chains, names', () => {
    const [xx, pp, ee] = [x(), p(), edges()];
    const list = weightTensors(c, 110);
    const w = asWeights(c, list);
    const run = (ws: unknown, o: object = {}) => () => geometricAttention(xx, pp, ee, ws as GeometricWeights, o);
    const k35 = randn([3, 5], 111);
    const k43 = tf.zeros([4, 3], 'int32');
    const b3 = randn([3], 112);
    expectError(run({...w, kernel: randn([F + 1, C], 113)}), 'DIMENSION_MISMATCH', /weights.kernel must be a \[3, units\]/);
    expectError(run({...w, sourceKernel: k35}), 'DIMENSION_MISMATCH', /weights.sourceKernel must have shape \[3, 4\], received shape \[3, 5\]/);
    expectError(run({...w, targetKernel: tf.zeros([F, C], 'int32')}), 'INVALID_CONFIG', /weights.targetKernel must be float32/);
    expectError(run({...w, positionKernels: [k35]}), 'DIMENSION_MISMATCH', /last of weights.positionKernels must have 4 columns/);
    expectError(run({...w, positionBiases: []}), 'INVALID_CONFIG', /positionBiases must be an array of one bias per kernel \(1\)/);
    expectError(run({...w, positionKernels: []}), 'INVALID_CONFIG', /positionKernels must be a non-empty array/);
    expectError(run({...w, positionBiases: [b3]}), 'DIMENSION_MISMATCH', /positionBiases\[0\] must have shape \[4\]/);
    expectError(run({...w, attentionKernels: [k43], attentionBiases: [b3]}), 'DIMENSION_MISMATCH', /last of weights.attentionKernels must have 4 columns/);
    expectError(run({...w, attentionKernels: [k35], attentionBiases: [b3]}), 'DIMENSION_MISMATCH', /attentionKernels\[0\] must have 4 rows \(units, the logits\)/);
    expectError(run({...w, attentionKernels: [w.bias!], attentionBiases: [b3]}), 'DIMENSION_MISMATCH', /attentionKernels\[0\] must be a \[4, units\]/);
    expectError(run({...w, bias: b3}), 'DIMENSION_MISMATCH', /weights.bias must have shape \[4\]/);
    expectError(run({...w, valueKernel: b3}), 'INVALID_CONFIG', /unknown argument 'valueKernel' for geometricAttention weights/);
    expectError(run(null), 'INVALID_CONFIG', /needs weights/);
    tf.dispose([xx, pp, ee, ...list, k35, k43, b3]);
  });

  test('calls, scores and gradients leak nothing', () => {
    const cc = CASES[2][1];
    const [xx, pp, ee] = [x(), p(), edges()];
    const list = weightTensors(cc, 120);
    const opts = {numHeads: 2};
    expectNoLeaks(() => tf.dispose(geometricAttention(xx, pp, ee, asWeights(cc, list), opts)));
    expectNoLeaks(() => {
      const r = geometricAttention(xx, pp, ee, asWeights(cc, list), {...opts, returnAttentionScores: true});
      tf.dispose([r.output, r.scores]);
    });
    expectNoLeaks(() => tf.dispose(tf.grads((...a: tf.Tensor[]) =>
      tf.sum(geometricAttention(a[0], a[1], ee, asWeights(cc, a.slice(2)), opts)))([xx, pp, ...list])));
    tf.dispose([xx, pp, ee, ...list]);
  });
});
