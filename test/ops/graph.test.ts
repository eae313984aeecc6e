// graphAttention (GATConv semantics) against the one-node-at-a-time reference: forward, the
// attention scores and every gradient, for GAT and GATv2, with and without edge features,
// concatenated and averaged heads, on both product paths; then bad edges and leaks.
import * as tf from '@tensorflow/tfjs';
import {graphAttention, GraphWeights} from '../../src/ops/graph';
import {segmentMax} from '../../src/ops/segments';
import {setMatMulPath} from '../../src/ops/matmul';
import {expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';
import {GraphReferenceWeights, referenceGraph} from '../support/reference';

const B = 2, N = 5, F = 3, H = 2, C = 4, D = 2, E = 8;
// Graph 0: duplicate edge 1 -> 0, a self loop 2 -> 2 (dropped, replaced), node 4 with no
// incoming edge, two padding edges. Graph 1: a chain and a padding edge in the middle.
const EDGES: number[][][] = [
  [[1, 0], [1, 0], [2, 0], [2, 2], [0, 3], [3, 1], [-1, -1], [-1, -1]],
  [[0, 1], [1, 2], [-1, -1], [2, 3], [3, 4], [4, 0], [0, 2], [3, 1]],
];

function weightsFor(version: 'gat' | 'gatv2', edgeDim: number, concat: boolean): Record<string, tf.Tensor> {
  const w: Record<string, tf.Tensor> = {kernel: randn([F, H, C], 1, 0.7), bias: randn([concat ? H * C : C], 2, 0.3)};
  if (version === 'gat') {
    w.attentionSource = randn([H, C], 3);
    w.attentionTarget = randn([H, C], 4);
  } else {
    w.targetKernel = randn([F, H, C], 5, 0.7);
    w.attention = randn([H, C], 6);
  }
  if (edgeDim > 0) {
    w.edgeKernel = randn([edgeDim, H, C], 7, 0.7);
    if (version === 'gat') w.attentionEdge = randn([H, C], 8);
  }
  return w;
}

describe(title('graphAttention against the reference'), () => {
  const cases: [string, 'gat' | 'gatv2', boolean, boolean][] = [];
  for (const version of ['gat', 'gatv2'] as const) {
    for (const withAttr of [false, true]) for (const concat of [true, false]) cases.push([`${version}, ${withAttr ? 'edge features' : 'no edge features'}, ${concat ? 'concat' : 'mean'}`, version, withAttr, concat]);
  }
  for (const path of ['split', 'batched'] as const) {
    test.each(cases)(`%s (${path} products): output, scores and gradients within 1e-4`, (_name, version, withAttr, concat) => {
      const previous = setMatMulPath(path);
      try {
        const x = randn([B, N, F], 11);
        const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
        const attr = withAttr ? randn([B, E, D], 12) : null;
        const w = weightsFor(version, withAttr ? D : 0, concat);
        const names = Object.keys(w);
        const cot = randn([B, N, concat ? H * C : C], 13);
        const opts = {version, negativeSlope: 0.2, concatHeads: concat, ...(attr != null ? {edgeAttr: attr} : {})};
        const ours = graphAttention(x, edges, w as unknown as GraphWeights, {...opts, returnAttentionScores: true});
        const ref = referenceGraph(x, EDGES, w as unknown as GraphReferenceWeights, attr,
          {version, slope: 0.2, selfLoops: true, concat});
        expectClose(ours.output, ref.output);
        // Scores: row e of graph b for its input edge e (0 when padding or a dropped self
        // loop), row E + i for node i's self loop.
        const scores = ours.scores.arraySync() as number[][][];
        expect(ours.scores.shape).toEqual([B, E + N, H]);
        for (let b = 0; b < B; b++) {
          for (let i = 0; i < N; i++) {
            let k = 0;
            EDGES[b].forEach(([s, t], e) => {
              if (t !== i || s === t || s === -1) return;
              for (let h = 0; h < H; h++) expect(Math.abs(scores[b][e][h] - ref.alpha[b][i][k][h])).toBeLessThan(1e-5);
              k++;
            });
            for (let h = 0; h < H; h++) {
              expect(Math.abs(scores[b][E + i][h] - ref.alpha[b][i][k][h])).toBeLessThan(1e-5);
            }
            expect(ref.alpha[b][i]).toHaveLength(k + 1); // the reference lists exactly these edges and the self loop
          }
          EDGES[b].forEach(([s, t], e) => {
            if (s === -1 || s === t) for (let h = 0; h < H; h++) expect(scores[b][e][h]).toBe(0);
          });
        }
        // Gradients for the nodes, every weight and the edge attributes.
        const inputs = [x, ...names.map((n) => w[n]), ...(attr != null ? [attr] : [])];
        const split = (args: tf.Tensor[]) => {
          const ws: Record<string, tf.Tensor> = {};
          names.forEach((n, i) => { ws[n] = args[1 + i]; });
          return {xx: args[0], ws, aa: attr != null ? args[args.length - 1] : null};
        };
        const g1 = tf.grads((...args: tf.Tensor[]) => {
          const {xx, ws, aa} = split(args);
          return tf.sum(tf.mul(graphAttention(xx, edges, ws as unknown as GraphWeights,
            {...opts, ...(aa != null ? {edgeAttr: aa} : {})}), cot));
        })(inputs);
        const g2 = tf.grads((...args: tf.Tensor[]) => {
          const {xx, ws, aa} = split(args);
          return tf.sum(tf.mul(referenceGraph(xx, EDGES, ws as unknown as GraphReferenceWeights, aa,
            {version, slope: 0.2, selfLoops: true, concat}).output, cot));
        })(inputs);
        g1.forEach((g, i) => expectClose(g, g2[i]));
        // Every gradient carries signal (a test that could not fail on zeros otherwise).
        g1.forEach((g) => expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0));
        tf.dispose([x, edges, attr, ...Object.values(w), cot, ours.output, ours.scores, ref.output,
          ...g1, ...g2] as tf.Tensor[]);
      } finally {
        setMatMulPath(previous);
      }
    });
  }

  test('without self loops: a node with no incoming edge gives zeros (plus the bias) and its scores stay E long', () => {
    const x = randn([B, N, F], 21);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const w = weightsFor('gat', 0, true);
    const ours = graphAttention(x, edges, w as unknown as GraphWeights,
      {addSelfLoops: false, returnAttentionScores: true});
    const ref = referenceGraph(x, EDGES, w as unknown as GraphReferenceWeights, null, {version: 'gat', slope: 0.2, selfLoops: false, concat: true});
    expectClose(ours.output, ref.output);
    expect(ours.scores.shape).toEqual([B, E, H]);
    // Graph 0, node 4 has no incoming edge: its row is the bias.
    const row = tf.tidy(() => tf.reshape(tf.slice(ours.output, [0, 4, 0], [1, 1, H * C]), [H * C]));
    expectClose(row, w.bias);
    tf.dispose([x, edges, ...Object.values(w), ours.output, ours.scores, ref.output, row]);
  });
});

describe(title('graphAttention: the segment softmax'), () => {
  // Graph 0: node 0 has 37 incoming edges (its maximum takes 6 scan steps), nodes 1-3 a few,
  // the rest none; graph 1: a ring plus padding. Scores spread over hundreds: an unshifted
  // exp would overflow, a shift other than each node's own maximum would underflow.
  const N2 = 40, E2 = 45;
  const edges2: number[][][] = [[], []];
  for (let j = 1; j <= 37; j++) edges2[0].push([j, 0]);
  edges2[0].push([0, 1], [2, 1], [5, 1], [0, 2], [7, 3], [9, 3], [11, 3], [-1, -1]);
  for (let i = 0; i < 40; i++) edges2[1].push([i, (i + 1) % 40]);
  while (edges2[1].length < E2) edges2[1].push([-1, -1]);

  test.each(['gat', 'gatv2'] as const)('%s: a 37-edge node and scores in the hundreds equal the reference, finite, alpha summing to 1', (version) => {
    const x = randn([B, N2, F], 41, 3);
    const edges = tf.tensor3d(edges2, [B, E2, 2], 'int32');
    const w = weightsFor(version, 0, true);
    const scale = (t: tf.Tensor) => tf.tidy(() => tf.mul(t, 60));
    const big: Record<string, tf.Tensor> = {...w};
    for (const name of ['attentionSource', 'attentionTarget', 'attention']) if (w[name] != null) big[name] = scale(w[name]);
    const ours = graphAttention(x, edges, big as unknown as GraphWeights, {version, returnAttentionScores: true});
    const ref = referenceGraph(x, edges2, big as unknown as GraphReferenceWeights, null,
      {version, slope: 0.2, selfLoops: true, concat: true});
    // The scores really are large: the spread of one node's incoming scores exceeds exp's range.
    const spread = tf.tidy(() => {
      const xp = tf.reshape(tf.matMul(tf.reshape(x, [B * N2, F]), tf.reshape(big.kernel, [F, H * C])), [B * N2, H, C]);
      const a = version === 'gat' ? big.attentionSource : big.attention;
      const s = tf.sum(tf.mul(tf.slice(xp, [1, 0, 0], [37, H, C]), a), -1); // node 0's sources, per head
      return tf.sub(tf.max(s, 0), tf.min(s, 0)).dataSync();
    });
    expect(Math.max(...Array.from(spread))).toBeGreaterThan(200);
    const out = ours.output.dataSync();
    expect(out.every(Number.isFinite)).toBe(true);
    expectClose(ours.output, ref.output);
    const scores = ours.scores.arraySync() as number[][][];
    for (let h = 0; h < H; h++) {
      let sum = scores[0][E2][h]; // node 0's self loop
      for (let e = 0; e < 37; e++) {
        sum += scores[0][e][h];
        expect(Math.abs(scores[0][e][h] - ref.alpha[0][0][e][h])).toBeLessThan(1e-5);
      }
      expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
    }
    tf.dispose([x, edges, ...Object.values(w), ...Object.values(big), ours.output, ours.scores, ref.output]);
  });

  test('segmentMax: every row gets its segment\'s exact maximum, for segments of 0 to 70 rows in any order', () => {
    // Around each power of two (the scan's step sizes), and empty segments.
    const lengths = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 0, 31, 32, 33, 63, 64, 65, 70, 0, 6, 11, 1, 2];
    const segments = lengths.length;
    const dst: number[] = [];
    lengths.forEach((n, i) => { for (let r = 0; r < n; r++) dst.push(i); });
    for (let k = dst.length - 1; k > 0; k--) { // shuffled
      const j = (k * 7919) % (k + 1);
      [dst[k], dst[j]] = [dst[j], dst[k]];
    }
    const H2 = 3;
    // Each segment's largest score sits on its first row (in the rows' order), the one the
    // last row reaches only after the final scan step.
    const noise = randn([dst.length, H2], 44, 50);
    const first = dst.map((i, k) => dst.indexOf(i) === k);
    const scores = tf.tidy(() =>
      tf.add(noise, tf.mul(tf.tensor2d(first.map((f) => [f ? 500 : 0]), [dst.length, 1]), tf.ones([1, H2]))));
    noise.dispose();
    expectNoLeaks(() => {
      const got = segmentMax(scores, Int32Array.from(dst), segments);
      expect(got.shape).toEqual([dst.length, H2]);
      const values = scores.arraySync() as number[][];
      const want = dst.map((i) => Array.from({length: H2}, (_, h) =>
        Math.max(...dst.flatMap((j, k) => (j === i ? [values[k][h]] : [])))));
      expect(got.arraySync()).toEqual(want);
      got.dispose();
    });
    expect(Math.max(...lengths)).toBe(70);
    expect(lengths.filter((n) => n === 0).length).toBeGreaterThan(0);
    scores.dispose();
  });

  test('segmentMax with every segment of one length (a kNN graph with self loops): the exact maxima, [K, 2, 3] rows', () => {
    const segments = 12, L = 5;
    const dst = Array.from({length: segments * L}, (_, k) => (k * 7) % segments); // every segment L rows, interleaved
    const scores = randn([dst.length, 2, 3], 45, 10);
    expectNoLeaks(() => {
      const got = segmentMax(scores, Int32Array.from(dst), segments);
      expect(got.shape).toEqual([dst.length, 2, 3]);
      const values = scores.arraySync() as number[][][];
      const want = dst.map((i) => [0, 1].map((a) => [0, 1, 2].map((b) =>
        Math.max(...dst.flatMap((j, k) => (j === i ? [values[k][a][b]] : []))))));
      expect(got.arraySync()).toEqual(want);
      got.dispose();
    });
    scores.dispose();
  });

  test('forward and backward read nothing back from a tensor but the edges (the scores\' maxima are tf ops)', () => {
    const x = randn([B, N2, F], 42);
    const edges = tf.tensor3d(edges2, [B, E2, 2], 'int32');
    const attr = randn([B, E2, D], 43);
    const w = weightsFor('gat', D, true);
    const proto = tf.Tensor.prototype as unknown as Record<string, (this: tf.Tensor, ...a: unknown[]) => unknown>;
    const read: tf.Tensor[] = [];
    const saved = {dataSync: proto.dataSync, arraySync: proto.arraySync, bufferSync: proto.bufferSync};
    for (const name of Object.keys(saved) as (keyof typeof saved)[]) {
      const original = saved[name];
      proto[name] = function (this: tf.Tensor, ...a: unknown[]) { read.push(this); return original.apply(this, a); };
    }
    let grads: tf.Tensor[];
    try {
      grads = tf.grads((xx: tf.Tensor, ww: tf.Tensor) =>
        tf.sum(graphAttention(xx, edges, {...w, kernel: ww} as unknown as GraphWeights,
          {edgeAttr: attr})))([x, w.kernel]);
    } finally {
      Object.assign(proto, saved);
    }
    expect(read.length).toBeGreaterThan(0);
    expect(read.filter((t) => t !== edges)).toEqual([]);
    grads.forEach((g) => expect(g.dataSync().every(Number.isFinite)).toBe(true));
    tf.dispose([x, edges, attr, ...Object.values(w), ...grads]);
  });
});

describe(title('graphAttention: bad inputs and leaks'), () => {
  const x = () => randn([1, 3, F], 31);
  const w = () => weightsFor('gat', 0, true) as unknown as GraphWeights;

  test('an edge index >= N, or a half-padded edge, is refused with DIMENSION_MISMATCH naming it', () => {
    const xs = x();
    const ws = w();
    const bad = tf.tensor3d([[[0, 1], [1, 3]]], [1, 2, 2], 'int32');
    expectError(() => graphAttention(xs, bad, ws), 'DIMENSION_MISMATCH', /edges\[0\]\[1\] is \[1, 3\].*\[0, 3\)/);
    const half = tf.tensor3d([[[0, -1]]], [1, 1, 2], 'int32');
    expectError(() => graphAttention(xs, half, ws), 'DIMENSION_MISMATCH', /edges\[0\]\[0\] is \[0, -1\]/);
    tf.dispose([xs, bad, half, ...Object.values(ws)]);
  });

  test('wrong dtypes and shapes are refused with codes', () => {
    const xs = x();
    const ws = w();
    const fl = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'float32');
    expectError(() => graphAttention(xs, fl, ws), 'INVALID_CONFIG', /edges must be int32/);
    const flat = tf.tensor2d([[0, 1]], [1, 2], 'int32');
    expectError(() => graphAttention(xs, flat, ws), 'DIMENSION_MISMATCH', /edges must have shape \[1, E, 2\]/);
    const ok = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'int32');
    const x2 = tf.zeros([1, 3, F + 1]);
    expectError(() => graphAttention(x2, ok, ws), 'DIMENSION_MISMATCH', /weights.kernel must be a \[4, heads, units\]/);
    const attr = tf.zeros([1, 2, 2]);
    expectError(() => graphAttention(xs, ok, ws, {edgeAttr: attr}), 'DIMENSION_MISMATCH', /edgeAttr must have shape \[1, 1, edgeDim\]/);
    expectError(() => graphAttention(xs, ok, ws, {negativeSlop: 0.1} as never), 'INVALID_CONFIG', /did you mean 'negativeSlope'/);
    tf.dispose([xs, fl, flat, ok, x2, attr, ...Object.values(ws)]);
  });

  test('weights: a missing kernel, and any weight the version or inputs would not use, are refused (INVALID_CONFIG)', () => {
    const xs = x();
    const ok = tf.tensor3d([[[0, 1]]], [1, 1, 2], 'int32');
    const gat = w() as unknown as Record<string, tf.Tensor>;
    const v2 = weightsFor('gatv2', 0, true);
    const extra = tf.zeros([H, C]);
    const ek = tf.zeros([D, H, C]);
    const {kernel: _k, ...noKernel} = gat;
    expectError(() => graphAttention(xs, ok, noKernel as never), 'INVALID_CONFIG', /weights.kernel must be a tf.Tensor/);
    expectError(() => graphAttention(xs, ok, {...gat, edgeKernel: ek} as never), 'INVALID_CONFIG',
      /does not take 'edgeKernel'.*pass options.edgeAttr/);
    expectError(() => graphAttention(xs, ok, {...gat, attentionEdge: extra} as never), 'INVALID_CONFIG',
      /does not take 'attentionEdge'.*pass options.edgeAttr/);
    expectError(() => graphAttention(xs, ok, {...v2, attentionSource: extra} as never, {version: 'gatv2'}), 'INVALID_CONFIG',
      /does not take 'attentionSource'.*version 'gatv2' uses kernel, targetKernel, attention, bias/);
    expectError(() => graphAttention(xs, ok, {...gat, targetKernel: ek} as never), 'INVALID_CONFIG',
      /does not take 'targetKernel'.*version 'gat' uses kernel, attentionSource, attentionTarget, bias/);
    expectError(() => graphAttention(xs, ok, {...gat, kernal: ek} as never), 'INVALID_CONFIG', /unknown argument 'kernal'.*'kernel'/);
    const attr = tf.zeros([1, 1, D]);
    expectError(() => graphAttention(xs, ok, {...v2, edgeKernel: tf.zeros([D, H, C]), attentionEdge: extra} as never,
      {version: 'gatv2', edgeAttr: attr}), 'INVALID_CONFIG', /does not take 'attentionEdge'.*version 'gatv2' uses .*edgeKernel/);
    tf.dispose([xs, ok, extra, ek, attr, ...Object.values(gat), ...Object.values(v2)]);
  });

  test('empty batches, graphs without nodes and lists without edges: the right shapes, the bias, zero gradients, on every backend', () => {
    const cases: [string, number, number, number, boolean][] = [
      // name, B, N, E, edge attributes
      ['B = 0', 0, 3, 2, true],
      ['N = 0 (only padding edges)', 2, 0, 2, false],
      ['E = 0', 2, 3, 0, false],
      ['E = 0 with edge attributes', 2, 3, 0, true],
    ];
    for (const [name, b, n, e, withAttr] of cases) {
      for (const version of ['gat', 'gatv2'] as const) {
        const xs = randn([b, n, F], 51);
        const edges = tf.fill([b, e, 2], -1, 'int32') as tf.Tensor3D;
        const attr = withAttr ? randn([b, e, D], 52) : undefined;
        const ws = weightsFor(version, withAttr ? D : 0, true);
        const opts = {version, ...(attr != null ? {edgeAttr: attr} : {})};
        expectNoLeaks(() => {
          const {output, scores} = graphAttention(xs, edges, ws as unknown as GraphWeights,
            {...opts, returnAttentionScores: true});
          expect([name, version, output.shape]).toEqual([name, version, [b, n, H * C]]);
          expect(scores.shape).toEqual([b, e + n, H]);
          // Every node has only its self loop: alpha 1 on it, the output its own x W plus the bias.
          const want = tf.tidy(() => tf.add(tf.reshape(
            tf.matMul(tf.reshape(xs, [b * n, F]), tf.reshape(ws.kernel, [F, H * C])), [b, n, H * C]), ws.bias));
          expectClose(output, want);
          if (b * n > 0) {
            const [loops, ones] = [tf.slice(scores, [0, e, 0], [b, n, H]), tf.ones([b, n, H])];
            expectClose(loops, ones);
            tf.dispose([loops, ones]);
          }
          const g = tf.grads((a: tf.Tensor, k: tf.Tensor) =>
            tf.sum(graphAttention(a, edges, {...ws, kernel: k} as unknown as GraphWeights, opts)))([xs, ws.kernel]);
          expect(g[0].shape).toEqual([b, n, F]);
          expect(g[1].shape).toEqual([F, H, C]);
          expect(g.every((t) => t.dataSync().every(Number.isFinite))).toBe(true);
          tf.dispose([output, scores, want, ...g]);
        });
        tf.dispose([xs, edges, attr, ...Object.values(ws)] as tf.Tensor[]);
      }
    }
  });

  test('dropout on alpha: only while training, the same seed gives the same output, the scores are before it', () => {
    const xs = randn([B, N, F], 61);
    const edges = tf.tensor3d(EDGES, [B, E, 2], 'int32');
    const ws = weightsFor('gat', 0, true) as unknown as GraphWeights;
    expectNoLeaks(() => {
      const plain = graphAttention(xs, edges, ws, {returnAttentionScores: true});
      const notTraining = graphAttention(xs, edges, ws, {dropout: 0.5, seed: 3});
      const a = graphAttention(xs, edges, ws, {dropout: 0.5, training: true, seed: 3, returnAttentionScores: true});
      const again = graphAttention(xs, edges, ws, {dropout: 0.5, training: true, seed: 3});
      const other = graphAttention(xs, edges, ws, {dropout: 0.5, training: true, seed: 4});
      expectClose(notTraining, plain.output);
      expectClose(again, a.output);
      expectClose(a.scores, plain.scores);
      const diff = (p: tf.Tensor, q: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(p, q))).dataSync()[0]);
      expect(diff(a.output, plain.output)).toBeGreaterThan(0.01);
      expect(diff(other, a.output)).toBeGreaterThan(0.01);
      tf.dispose([plain.output, plain.scores, notTraining, a.output, a.scores, again, other]);
    });
    tf.dispose([xs, edges, ...Object.values(ws)]);
  });

  test('forward and gradients leave no tensors behind', () => {
    const xs = x();
    const ws = w();
    const edges = tf.tensor3d([[[0, 1], [1, 2], [2, 0], [-1, -1]]], [1, 4, 2], 'int32');
    expectNoLeaks(() => {
      tf.dispose(graphAttention(xs, edges, ws, {returnAttentionScores: true}) as never);
      const g = tf.grads((a: tf.Tensor, k: tf.Tensor) =>
        tf.sum(graphAttention(a, edges, {...ws, kernel: k})))([xs, ws.kernel]);
      tf.dispose(g);
    });
    tf.dispose([xs, edges, ...Object.values(ws)]);
  });
});
