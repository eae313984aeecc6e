// linearAttention (FAVOR+): the orthogonal projection, the feature map against its
// formula, the attention step against a naive per-prefix reference (forward and
// gradients), the approximation error against exact softmax attention, large inputs,
// errors and leaks.
import * as tf from '@tensorflow/tfjs';
import {linearAttention, linearAttentionFromFeatures} from '../../src/ops/linear';
import {favorFeatures, RELU_STABILIZER, SOFTMAX_STABILIZER} from '../../src/ops/linear_features';
import {defaultNumFeatures, orthogonalProjection} from '../../src/ops/random_features';
import {causalMask} from '../../src/ops/causal';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {allFinite, gradsOf, makeMask, MaskKind} from '../support/cases';
import {expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';
import {referenceLinear} from '../support/reference';

const rows2d = (t: tf.Tensor) => t.arraySync() as number[][];

describe(title('orthogonalProjection'), () => {
  test('rows within each D x D block are orthogonal to 1e-4 (M=20, D=8: blocks of 8, 8 and 4 rows)', () => {
    const p = orthogonalProjection(20, 8, 3);
    expect(p.shape).toEqual([20, 8]);
    const w = rows2d(p);
    const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
    let worst = 0;
    let checked = 0;
    for (let i = 0; i < 20; i++) {
      for (let j = i + 1; j < 20; j++) {
        if (Math.floor(i / 8) !== Math.floor(j / 8)) continue; // rows of different blocks are independent
        worst = Math.max(worst, Math.abs(dot(w[i], w[j])) / Math.sqrt(dot(w[i], w[i]) * dot(w[j], w[j])));
        checked++;
      }
    }
    expect(checked).toBe(28 + 28 + 6);
    expect(worst).toBeLessThan(1e-4);
    p.dispose();
  });

  test('row lengths are chi-distributed: mean |w|^2 ~ D, variance ~ 2D (M=1024, D=16)', () => {
    const p = orthogonalProjection(1024, 16, 11);
    const sq = rows2d(p).map((r) => r.reduce((s, x) => s + x * x, 0));
    const mean = sq.reduce((a, b) => a + b) / sq.length;
    const variance = sq.reduce((a, b) => a + (b - mean) ** 2, 0) / (sq.length - 1);
    // |w|^2 ~ chi^2(16): mean 16 (standard error 0.18 here), variance 32. Unit-norm rows would give variance 0.
    expect(Math.abs(mean - 16)).toBeLessThan(1.2);
    expect(variance).toBeGreaterThan(16);
    expect(variance).toBeLessThan(64);
    p.dispose();
  });

  test('deterministic for a seed; another seed gives another matrix', () => {
    const [a, b, c] = [5, 5, 6].map((seed) => orthogonalProjection(12, 4, seed));
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(tf.max(tf.abs(tf.sub(a, c))).dataSync()[0]).toBeGreaterThan(0.1);
    tf.dispose([a, b, c]);
  });

  test('defaultNumFeatures is round(D ln D), at least 1', () => {
    expect([1, 2, 16, 64].map(defaultNumFeatures)).toEqual([1, 1, 44, 266]);
  });

  test.each([
    [() => orthogonalProjection(0, 4, 1), /numFeatures \(M\) must be a positive integer, received 0/],
    [() => orthogonalProjection(4, 2.5, 1), /head dim \(D\) must be a positive integer, received 2\.5/],
    [() => orthogonalProjection(4, 4, 0.5), /seed must be an integer, received 0\.5/],
  ])('rejects bad arguments with INVALID_CONFIG (%#)', (fn, message) => {
    expectError(fn, 'INVALID_CONFIG', message);
  });
});

describe(title('favorFeatures'), () => {
  // x [1, 2, 3, 4] and a [5, 4] projection, small enough to write the formula out in JS.
  const D = 4;
  const M = 5;

  /** phi for every row, in float64 JS: the file comment of ops/linear.ts, written out. */
  function expected(x: number[][][][], w: number[][], role: 'query' | 'key', kernel: 'softmax' | 'relu', scale: number) {
    const c = Math.sqrt(scale);
    return x.map((batch) => batch.map((head) => {
      const logits = head.map((row) => {
        const xs = row.map((v) => v * c);
        const diag = xs.reduce((s, v) => s + v * v, 0) / 2;
        return w.map((wr) => {
          const wx = wr.reduce((s, v, i) => s + v * xs[i], 0);
          return kernel === 'relu' ? wx : wx - diag;
        });
      });
      if (kernel === 'relu') return logits.map((r) => r.map((v) => Math.max(v, 0) / Math.sqrt(M) + RELU_STABILIZER));
      const headMax = Math.max(...logits.flat());
      return logits.map((r) => {
        const shift = role === 'query' ? Math.max(...r) : headMax;
        return r.map((v) => (Math.exp(v - shift) + SOFTMAX_STABILIZER) / Math.sqrt(M));
      });
    }));
  }

  for (const kernel of ['softmax', 'relu'] as const) {
    for (const role of ['query', 'key'] as const) {
      test(`features == the formula (${kernel}, ${role}, scale 1/sqrt(D) and 0.3)`, () => {
        tf.tidy(() => {
          const x = randn([1, 2, 3, D], 1, 2);
          const w = randn([M, D], 2);
          for (const scale of [undefined, 0.3]) {
            const got = favorFeatures(x, w, {role, kernel, scale});
            const want = expected(x.arraySync() as number[][][][], rows2d(w), role, kernel, scale ?? 1 / Math.sqrt(D));
            expectClose(got, tf.tensor(want), 1e-5);
          }
        });
      });
    }
  }

  test('the stabilising max is a constant for autograd: gradients equal those with the max given as a number', () => {
    tf.tidy(() => {
      const x = randn([1, 2, 3, D], 3);
      const w = randn([M, D], 4);
      const cot = randn([1, 2, 3, M], 5);
      for (const role of ['query', 'key'] as const) {
        // The same features with the shift computed outside the traced function.
        const shiftOf = (xv: tf.Tensor) => tf.tidy(() => {
          const xs = tf.mul(xv, Math.sqrt(1 / Math.sqrt(D)));
          const logits = tf.sub(tf.matMul(tf.reshape(xs, [6, D]), w, false, true),
            tf.div(tf.sum(tf.square(tf.reshape(xs, [6, D])), -1, true), 2)); // [6, M]
          const l4 = tf.reshape(logits, [1, 2, 3, M]);
          return role === 'query' ? tf.max(l4, 3, true) : tf.max(l4, [2, 3], true);
        });
        const shift = shiftOf(x);
        const byHand = (xv: tf.Tensor) => {
          const xs = tf.mul(xv, Math.sqrt(1 / Math.sqrt(D)));
          const wx = tf.reshape(tf.matMul(tf.reshape(xs, [6, D]), w, false, true), [1, 2, 3, M]);
          const logits = tf.sub(wx, tf.div(tf.sum(tf.square(xs), -1, true), 2));
          return tf.div(tf.add(tf.exp(tf.sub(logits, shift)), SOFTMAX_STABILIZER), Math.sqrt(M));
        };
        const loss = (f: (xv: tf.Tensor) => tf.Tensor) => (xv: tf.Tensor) => tf.sum(tf.mul(f(xv), cot));
        const got = tf.grad(loss((xv) => favorFeatures(xv, w, {role})))(x);
        const want = tf.grad(loss(byHand))(x);
        expectClose(got, want, 1e-5);
        // ... and differ from the gradient through the max, so the check can fail.
        const through = tf.grad(loss((xv) => {
          const xs = tf.mul(xv, Math.sqrt(1 / Math.sqrt(D)));
          const wx = tf.reshape(tf.matMul(tf.reshape(xs, [6, D]), w, false, true), [1, 2, 3, M]);
          const logits = tf.sub(wx, tf.div(tf.sum(tf.square(xs), -1, true), 2));
          const m = role === 'query' ? tf.max(logits, 3, true) : tf.max(logits, [2, 3], true);
          return tf.div(tf.add(tf.exp(tf.sub(logits, m)), SOFTMAX_STABILIZER), Math.sqrt(M));
        }))(x);
        expect(tf.max(tf.abs(tf.sub(through, want))).dataSync()[0]).toBeGreaterThan(1e-3);
      }
    });
  });
});

interface LinearCase {
  B: number; H: number; G: number; T: number; S: number; M: number; Dv: number;
  causal: boolean; mask: MaskKind; chunkSize: number;
}

const name = (c: LinearCase) => [`T=${c.T}`, `S=${c.S}`, `H=${c.H}`, `G=${c.G}`, `M=${c.M}`, `Dv=${c.Dv}`,
  c.causal ? 'causal' : 'non-causal', c.mask === 'padding' ? 'key padding' : 'no mask', `chunk=${c.chunkSize}`].join(', ');

// Chunks shorter than, equal to and longer than T, not dividing it; T < S and T > S; MHA, MQA, GQA.
const GRID: LinearCase[] = [
  // (With a single key out = v, whose feature gradients are exactly 0: only float noise to compare.)
  {B: 2, H: 2, G: 2, T: 1, S: 3, M: 8, Dv: 4, causal: true, mask: 'none', chunkSize: 4},
  {B: 2, H: 2, G: 1, T: 3, S: 2, M: 8, Dv: 4, causal: true, mask: 'none', chunkSize: 2},
  {B: 2, H: 4, G: 2, T: 7, S: 7, M: 6, Dv: 5, causal: true, mask: 'none', chunkSize: 3},
  {B: 2, H: 3, G: 1, T: 13, S: 13, M: 9, Dv: 4, causal: true, mask: 'padding', chunkSize: 4},
  {B: 2, H: 4, G: 4, T: 7, S: 12, M: 8, Dv: 3, causal: true, mask: 'padding', chunkSize: 2},
  {B: 2, H: 4, G: 2, T: 12, S: 5, M: 8, Dv: 4, causal: true, mask: 'padding', chunkSize: 4},
  {B: 1, H: 4, G: 2, T: 97, S: 97, M: 16, Dv: 8, causal: true, mask: 'none', chunkSize: 16},
  {B: 1, H: 2, G: 1, T: 40, S: 40, M: 16, Dv: 8, causal: true, mask: 'none', chunkSize: 64},
  {B: 2, H: 4, G: 2, T: 7, S: 10, M: 6, Dv: 4, causal: false, mask: 'padding', chunkSize: 4},
  {B: 1, H: 2, G: 2, T: 9, S: 4, M: 8, Dv: 8, causal: false, mask: 'none', chunkSize: 4},
];

describe(title('linearAttention'), () => {
  GRID.forEach((c, n) => {
    test(`== naive per-prefix reference from the same features, forward and gradients (${name(c)})`, () => {
      tf.tidy(() => {
        // Features as favorFeatures makes them: positive, of varied size.
        const qf = tf.exp(randn([c.B, c.H, c.T, c.M], 10 + n));
        const kf = tf.exp(randn([c.B, c.G, c.S, c.M], 20 + n));
        const v = randn([c.B, c.G, c.S, c.Dv], 30 + n);
        const cot = randn([c.B, c.H, c.T, c.Dv], 40 + n);
        const mask = makeMask(c.mask, c.B, c.H, c.T, c.S, n);
        const opts = {causal: c.causal, mask};
        const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
          linearAttentionFromFeatures(a, b, d, {...opts, chunkSize: c.chunkSize});
        const ref = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => referenceLinear(a, b, d, opts);
        expectClose(f(qf, kf, v), ref(qf, kf, v));
        const got = gradsOf(f, qf, kf, v, cot);
        const want = gradsOf(ref, qf, kf, v, cot);
        got.forEach((g, i) => expectClose(g, want[i]));
      });
    });
  });

  for (const kernel of ['softmax', 'relu'] as const) {
    test(`the whole op == reference over favorFeatures, gradients for q, k, v (${kernel}, causal, GQA, T=S=11, chunk 4)`, () => {
      tf.tidy(() => {
        const [B, H, G, T, D, M] = [2, 4, 2, 11, 8, 12];
        const q = randn([B, H, T, D], 1);
        const k = randn([B, G, T, D], 2);
        const v = randn([B, G, T, D], 3);
        const cot = randn([B, H, T, D], 4);
        const projection = orthogonalProjection(M, D, 7);
        const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
          linearAttention(a, b, d, {projection, causal: true, kernel, chunkSize: 4});
        const ref = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => referenceLinear(
          favorFeatures(a, projection, {role: 'query', kernel}), favorFeatures(b, projection, {role: 'key', kernel}), d,
          {causal: true});
        expectClose(f(q, k, v), ref(q, k, v));
        const got = gradsOf(f, q, k, v, cot);
        gradsOf(ref, q, k, v, cot).forEach((g, i) => expectClose(got[i], g));
      });
    });
  }

  // The whole op (its own custom gradient, features recomputed unit by unit and chunk by chunk)
  // against autograd through favorFeatures and the naive reference, the projection's gradient
  // included. Chunks that do not divide T, T > S and T < S for both alignments (queries that
  // see no key, keys no query sees, queries past the last key), more queries than one
  // non-causal piece of 512, MHA / MQA / GQA, key padding.
  const WHOLE: {B: number; H: number; G: number; T: number; S: number; causal: false | 'bottom-right' | 'top-left';
    mask: MaskKind; kernel: 'softmax' | 'relu'; chunkSize: number;}[] = [
    {B: 2, H: 4, G: 2, T: 600, S: 37, causal: false, mask: 'padding', kernel: 'softmax', chunkSize: 64},
    {B: 1, H: 2, G: 2, T: 9, S: 4, causal: false, mask: 'none', kernel: 'relu', chunkSize: 64},
    {B: 2, H: 2, G: 2, T: 1, S: 3, causal: 'bottom-right', mask: 'none', kernel: 'softmax', chunkSize: 4},
    {B: 2, H: 4, G: 4, T: 7, S: 12, causal: 'bottom-right', mask: 'padding', kernel: 'relu', chunkSize: 3},
    {B: 2, H: 3, G: 1, T: 12, S: 5, causal: 'bottom-right', mask: 'padding', kernel: 'softmax', chunkSize: 5},
    {B: 1, H: 3, G: 1, T: 12, S: 5, causal: 'top-left', mask: 'none', kernel: 'softmax', chunkSize: 4},
    {B: 2, H: 4, G: 2, T: 5, S: 12, causal: 'top-left', mask: 'padding', kernel: 'softmax', chunkSize: 2},
    {B: 1, H: 4, G: 2, T: 97, S: 97, causal: 'bottom-right', mask: 'none', kernel: 'softmax', chunkSize: 16},
  ];
  WHOLE.forEach((c, n) => {
    const what = [`T=${c.T}`, `S=${c.S}`, `H=${c.H}`, `G=${c.G}`, c.causal === false ? 'non-causal' : c.causal,
      c.mask === 'padding' ? 'key padding' : 'no mask', c.kernel, `chunk=${c.chunkSize}`].join(', ');
    test(`the whole op == reference over favorFeatures, gradients for q, k, v and the projection (${what})`, () => {
      tf.tidy(() => {
        const [D, M] = [8, 12];
        const q = randn([c.B, c.H, c.T, D], 50 + n);
        const k = randn([c.B, c.G, c.S, D], 60 + n);
        const v = randn([c.B, c.G, c.S, 5], 70 + n);
        const cot = randn([c.B, c.H, c.T, 5], 80 + n);
        const projection = orthogonalProjection(M, D, 90 + n);
        const mask = makeMask(c.mask, c.B, c.H, c.T, c.S, n);
        // The reference's causal is bottom-right: top-left goes in as a mask.
        const topLeft = c.causal === 'top-left' ? causalMask(c.T, c.S, 'top-left') : null;
        const refMask = topLeft == null ? mask : mask == null ? topLeft : tf.logicalAnd(mask, topLeft);
        const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, p: tf.Tensor) =>
          linearAttention(a, b, d, {projection: p, causal: c.causal, mask, kernel: c.kernel, chunkSize: c.chunkSize});
        const ref = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, p: tf.Tensor) => referenceLinear(
          favorFeatures(a, p, {role: 'query', kernel: c.kernel}), favorFeatures(b, p, {role: 'key', kernel: c.kernel}), d,
          {causal: c.causal === 'bottom-right', mask: refMask ?? undefined});
        expectClose(f(q, k, v, projection), ref(q, k, v, projection));
        const grads = (fn: typeof f) => tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, p: tf.Tensor) =>
          tf.sum(tf.mul(fn(a, b, d, p), cot)))([q, k, v, projection]);
        const want = grads(ref);
        grads(f).forEach((g, i) => expectClose(g, want[i]));
      });
    });
  });

  test('query rows with no visible key give zeros and finite gradients (fully masked batch, causal T > S)', () => {
    tf.tidy(() => {
      const projection = orthogonalProjection(8, 4, 1);
      const q = randn([2, 2, 6, 4], 1);
      const k = randn([2, 1, 3, 4], 2);
      const v = randn([2, 1, 3, 4], 3);
      const mask = tf.tensor4d([0, 0, 0, 1, 1, 0], [2, 1, 1, 3]); // batch 0 sees no key
      for (const causal of [false, true]) {
        const out = linearAttention(q, k, v, {projection, causal, mask});
        const rows = out.arraySync() as number[][][][];
        expect(rows[0].flat(2).every((x) => x === 0)).toBe(true);
        // Causal, S - T = -3: queries 0..2 see no key; batch 1's queries 3.. see key 0 first.
        if (causal) expect(rows[1].every((head) => head.slice(0, 3).flat().every((x) => x === 0))).toBe(true);
        expect(rows[1].every((head) => head.slice(3).flat().some((x) => x !== 0))).toBe(true);
        const grads = gradsOf((a, b, d) => linearAttention(a, b, d, {projection, causal, mask}), q, k, v,
          tf.onesLike(out));
        expect(grads.every(allFinite)).toBe(true);
      }
    });
  });

  test('no keys at all (S = 0): what sdpa and flash give, zeros [B, H, T, Dv] with zero gradients, causal or not, masked or not', () => {
    tf.tidy(() => {
      const projection = orthogonalProjection(8, 4, 1);
      const [q, k, v] = [randn([2, 4, 3, 4], 1), randn([2, 2, 0, 4], 2), randn([2, 2, 0, 5], 3)];
      for (const causal of [false, true, 'top-left'] as const) {
        for (const mask of [undefined, tf.ones([2, 1, 1, 0])]) {
          const ops = [
            (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => linearAttention(a, b, d, {projection, causal, mask}),
            (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
              scaledDotProductAttention(a, b, d, {causal, mask}) as tf.Tensor,
          ];
          const [linear, sdpa] = ops.map((f) => f(q, k, v));
          expect(linear.shape).toEqual([2, 4, 3, 5]);
          expect(linear.arraySync()).toEqual(sdpa.arraySync());
          expect(Array.from(linear.dataSync()).every((x) => x === 0)).toBe(true);
          const [lg, sg] = ops.map((f) => gradsOf(f, q, k, v, tf.onesLike(linear)));
          lg.forEach((g, i) => {
            expect(g.shape).toEqual(sg[i].shape);
            expect(Array.from(g.dataSync()).every((x) => x === 0)).toBe(true);
          });
        }
      }
      // A mask that cannot broadcast to S = 0 is still refused, as with keys.
      expectError(() => linearAttention(q, k, v, {projection, mask: tf.ones([2, 1, 1, 3])}), 'INVALID_MASK', /./);
    });
  });

  test('approximation error vs exact softmax falls as M grows 16 -> 64 -> 256 and is below the bound at M=256', () => {
    // q, k ~ N(0, 1/sqrt(D)) (variance), so the scaled inputs x' = q D^(-1/4) have E|x'|^2 = 1.
    // The bound: FAVOR+'s relative mean squared error of one kernel value exp(x'.y') with M
    // iid positive features is (exp(|x'+y'|^2) - 1) / M (Performer, Lemma 2). Here
    // |x'+y'|^2 ~ (2/D) chi^2_D, whose exp has mean (1 - 4/D)^(-D/2), so the rms relative
    // error of a kernel estimate is sqrt(((1 - 4/D)^(-D/2) - 1) / M); an output row, a
    // weighted average of v under those estimates, inherits that relative error. Orthogonal
    // features only lower it. D=16, M=256: 0.187. Measured: about 0.43, 0.24, 0.14.
    const [B, H, T, D] = [2, 4, 64, 16];
    const std = D ** -0.25;
    const bound = (M: number) => Math.sqrt(((1 - 4 / D) ** (-D / 2) - 1) / M);
    const errors = tf.tidy(() => {
      const q = randn([B, H, T, D], 1, std);
      const k = randn([B, H, T, D], 2, std);
      const v = randn([B, H, T, D], 3);
      const exact = scaledDotProductAttention(q, k, v);
      const rowNorm = (t: tf.Tensor) => tf.norm(t, 'euclidean', -1);
      return [16, 64, 256].map((M) => {
        // Mean over rows of |approx - exact| / |exact|, averaged over 4 draws of the features.
        let sum = 0;
        for (let seed = 0; seed < 4; seed++) {
          const out = linearAttention(q, k, v, {projection: orthogonalProjection(M, D, 100 + seed)});
          sum += tf.mean(tf.div(rowNorm(tf.sub(out, exact)), rowNorm(exact))).dataSync()[0];
        }
        return sum / 4;
      });
    });
    expect(errors[1]).toBeLessThan(errors[0]);
    expect(errors[2]).toBeLessThan(errors[1]);
    expect(errors[2]).toBeLessThan(bound(256));
  });

  test('no NaN or Inf for inputs of magnitude 30, forward and gradients (softmax and relu, causal and not)', () => {
    tf.tidy(() => {
      const D = 16;
      const projection = orthogonalProjection(32, D, 2);
      const q = tf.mul(tf.sign(randn([1, 2, 9, D], 1)), 30);
      const k = tf.mul(randn([1, 2, 9, D], 2), 30);
      const v = tf.mul(randn([1, 2, 9, D], 3), 30);
      for (const kernel of ['softmax', 'relu'] as const) {
        for (const causal of [false, true]) {
          const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
            linearAttention(a, b, d, {projection, kernel, causal, chunkSize: 4});
          expect(allFinite(f(q, k, v))).toBe(true);
          expect(gradsOf(f, q, k, v, tf.onesLike(q)).every(allFinite)).toBe(true);
        }
      }
    });
  });

  test('no leaked tensors: forward, tf.grads, causal with a mask', () => {
    const projection = orthogonalProjection(8, 4, 1);
    const q = randn([2, 2, 9, 4], 1);
    const k = randn([2, 1, 7, 4], 2);
    const v = randn([2, 1, 7, 4], 3);
    const mask = tf.tensor2d([[1, 1, 1, 1, 1, 0, 0]]);
    for (const causal of [false, true]) {
      const opts = {projection, causal, mask, chunkSize: 4};
      expectNoLeaks(() => tf.dispose(linearAttention(q, k, v, opts)));
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        tf.sum(linearAttention(a, b, c, opts)))([q, k, v])));
    }
    tf.dispose([projection, q, k, v, mask]);
  });

  describe('errors', () => {
    const q = () => tf.zeros([1, 2, 3, 4]);
    const kv = () => tf.zeros([1, 2, 5, 4]);
    test.each([
      ['no projection', () => linearAttention(q(), kv(), kv(), {} as never), 'INVALID_CONFIG', /needs options\.projection/],
      ['projection of the wrong head dim', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 3])}),
        'DIMENSION_MISMATCH', /projection must be a \[numFeatures, 4\] tensor .* received shape \[6, 3\]/],
      ['a [B, T, S] mask', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 4]), mask: tf.ones([1, 3, 5])}),
        'UNSUPPORTED', /key padding masks only .*received shape \[1, 3, 5\]/],
      ['a per-head key mask', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 4]), mask: tf.ones([1, 2, 1, 5])}),
        'UNSUPPORTED', /key padding masks only/],
      ['kernel', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 4]), kernel: 'exp' as never}),
        'INVALID_CONFIG', /kernel must be one of 'softmax', 'relu', received 'exp'/],
      ['scale', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 4]), scale: -1}),
        'INVALID_CONFIG', /scale must be a positive finite number, received -1/],
      ['chunkSize', () => linearAttention(q(), kv(), kv(), {projection: tf.zeros([6, 4]), chunkSize: 0}),
        'INVALID_CONFIG', /chunkSize must be a positive integer, received 0/],
      ['k and v heads', () => linearAttention(q(), tf.zeros([1, 3, 5, 4]), tf.zeros([1, 3, 5, 4]), {projection: tf.zeros([6, 4])}),
        'DIMENSION_MISMATCH', /query heads \(2\) must be divisible by key\/value heads \(3\)/],
    ])('%s', (_, fn, code, message) => {
      tf.tidy(() => expectError(fn, code as string, message as RegExp));
    });
  });
});
