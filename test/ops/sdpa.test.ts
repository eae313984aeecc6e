// scaledDotProductAttention against the naive reference: forward, gradients, masks,
// weights, dropout, errors and leaks.
import * as tf from '@tensorflow/tfjs';
import {AttentionError, AttentionErrorCode} from '../../src/core/errors';
import {scaledDotProductAttention, SdpaOptions} from '../../src/ops/sdpa';
import {allFinite, Case, caseName, gradsOf, inputs, largeLogitCase, makeMask, maxAbs} from '../support/cases';
import {expectClose, expectNoLeaks, randn, title} from '../support/helpers';
import {referenceAttention, referenceWeights, ReferenceOptions} from '../support/reference';

const GRID: Case[] = [
  {B: 2, H: 2, G: 2, T: 1, S: 1, D: 12, Dv: 12, causal: false, mask: 'none'},
  {B: 2, H: 3, G: 1, T: 1, S: 9, D: 12, Dv: 5, causal: true, mask: 'none'},
  {B: 1, H: 2, G: 2, T: 1, S: 9, D: 12, Dv: 12, causal: true, mask: 'padding'},
  {B: 2, H: 4, G: 2, T: 7, S: 7, D: 12, Dv: 12, causal: true, mask: 'none'},
  {B: 2, H: 4, G: 4, T: 7, S: 13, D: 12, Dv: 8, causal: true, mask: 'padding'},
  {B: 2, H: 2, G: 1, T: 7, S: 4, D: 12, Dv: 12, causal: true, mask: 'none'},
  {B: 2, H: 4, G: 2, T: 7, S: 7, D: 12, Dv: 12, causal: true, mask: 'btS'},
  {B: 2, H: 4, G: 1, T: 7, S: 10, D: 12, Dv: 6, causal: false, mask: 'perHead'},
  {B: 2, H: 4, G: 2, T: 7, S: 7, D: 12, Dv: 12, causal: false, mask: 'none', scale: 0.37},
  {B: 1, H: 2, G: 2, T: 97, S: 97, D: 12, Dv: 12, causal: true, mask: 'padding'},
  {B: 2, H: 4, G: 2, T: 97, S: 50, D: 12, Dv: 12, causal: true, mask: 'padding'},
  {B: 2, H: 2, G: 1, T: 97, S: 50, D: 12, Dv: 7, causal: false, mask: 'btS'},
  {B: 1, H: 4, G: 2, T: 13, S: 97, D: 12, Dv: 12, causal: true, mask: 'btS', scale: 1.5},
];

function expectAttentionError(fn: () => unknown, code: AttentionErrorCode, message: RegExp): void {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttentionError);
  expect((caught as AttentionError).code).toBe(code);
  expect((caught as AttentionError).message).toMatch(message);
}

describe(title('scaledDotProductAttention'), () => {
  // On wasm the (batch, group) pairs of a longer sequence go in units of several whole batch
  // entries (B=14, G=1, T=S=256: two units of 7); their dk and dv must come back in batch order.
  test('gradients for each batch entry == that entry alone, when the tiled engine works several entries at once ' +
       '(B=14, H=2, G=1, T=S=256)', () => {
    tf.tidy(() => {
      const c: Case = {B: 14, H: 2, G: 1, T: 256, S: 256, D: 8, Dv: 8, causal: true, mask: 'none'};
      const {q, k, v, cot} = inputs(c, 41);
      const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => scaledDotProductAttention(a, b, d, {causal: true});
      const all = gradsOf(f, q, k, v, cot);
      const entry = (x: tf.Tensor, b: number) => tf.slice(x, [b, 0, 0, 0], [1, -1, -1, -1]);
      for (const b of [0, 3, 8, 13]) {
        const alone = gradsOf(f, entry(q, b), entry(k, b), entry(v, b), entry(cot, b));
        all.forEach((g, i) => expectClose(entry(g, b), alone[i], 1e-5));
      }
    });
  });

  describe('forward and gradients == reference', () => {
    GRID.forEach((c, n) => {
      test(`sdpa == reference (${caseName(c)})`, () => {
        tf.tidy(() => {
          const {q, k, v, cot} = inputs(c, 100 * n);
          const mask = makeMask(c.mask, c.B, c.H, c.T, c.S, 7 + n);
          const opts: ReferenceOptions = {mask, causal: c.causal, scale: c.scale};
          const out = scaledDotProductAttention(q, k, v, opts);
          const ref = referenceAttention(q, k, v, opts);
          expect(out.shape).toEqual([c.B, c.H, c.T, c.Dv]);
          expect(allFinite(out)).toBe(true);
          expectClose(out, ref);

          const got = gradsOf((a, b, d) => scaledDotProductAttention(a, b, d, opts), q, k, v, cot);
          const want = gradsOf((a, b, d) => referenceAttention(a, b, d, opts), q, k, v, cot);
          ['dq', 'dk', 'dv'].forEach((name, i) => {
            expect({name, finite: allFinite(got[i])}).toEqual({name, finite: true});
            expectClose(got[i], want[i]);
          });
        });
      });
    });

    test('causal with S < T: rows that see no key are zero (T=7, S=4, rows 0..2)', () => {
      tf.tidy(() => {
        const c: Case = {B: 1, H: 2, G: 1, T: 7, S: 4, D: 12, Dv: 12, causal: true, mask: 'none'};
        const {q, k, v} = inputs(c, 900);
        const out = scaledDotProductAttention(q, k, v, {causal: true});
        const blind = tf.slice(out, [0, 0, 0, 0], [1, 2, 3, 12]); // query i sees j <= i - 3
        expect(maxAbs(blind)).toBe(0);
        expect(maxAbs(tf.slice(out, [0, 0, 3, 0], [1, 2, 4, 12]))).toBeGreaterThan(0);
      });
    });

    test('GQA head mapping: query head h reads kv head floor(h / (H / G)) (H=4, G=2)', () => {
      tf.tidy(() => {
        // v of kv head g is the constant g + 1, so each output row is the kv head it read plus 1.
        const q = randn([1, 4, 3, 12], 1);
        const k = randn([1, 2, 5, 12], 2);
        const v = tf.mul(tf.ones([1, 2, 5, 1]), tf.reshape(tf.tensor1d([1, 2]), [1, 2, 1, 1]));
        const out = scaledDotProductAttention(q, k, v) as tf.Tensor;
        const perHead = tf.mean(out, [0, 2, 3]).arraySync() as number[];
        expect(perHead.map((x) => Math.round(x * 1e4) / 1e4)).toEqual([1, 1, 2, 2]);
      });
    });
  });

  describe('masks', () => {
    test('fully masked row gives zeros, not NaN, and zero dq for that row (T=5, S=6, row 2)', () => {
      tf.tidy(() => {
        const T = 5;
        const S = 6;
        const q = randn([2, 2, T, 12], 11);
        const k = randn([2, 2, S, 12], 12);
        const v = randn([2, 2, S, 12], 13);
        const cot = randn([2, 2, T, 12], 14);
        const rows = Array.from({length: T}, (_, i) => Array.from({length: S}, (_, j) => i !== 2 && (i + j) % 3 !== 0));
        const mask = tf.tensor2d(rows, [T, S], 'bool');
        const out = scaledDotProductAttention(q, k, v, {mask});
        expect(allFinite(out)).toBe(true);
        expect(maxAbs(tf.slice(out, [0, 0, 2, 0], [2, 2, 1, 12]))).toBe(0);
        expectClose(out, referenceAttention(q, k, v, {mask}));

        const [dq, dk, dv] = gradsOf((a, b, c) => scaledDotProductAttention(a, b, c, {mask}), q, k, v, cot);
        [dq, dk, dv].forEach((g) => expect(allFinite(g)).toBe(true));
        expect(maxAbs(tf.slice(dq, [0, 0, 2, 0], [2, 2, 1, 12]))).toBeLessThan(1e-6);
        expect(maxAbs(dq)).toBeGreaterThan(1e-3);
        const want = gradsOf((a, b, c) => referenceAttention(a, b, c, {mask}), q, k, v, cot);
        expectClose(dq, want[0]);
        expectClose(dk, want[1]);
        expectClose(dv, want[2]);
      });
    });

    test('fully masked row under causal + padding: all-padding batch is zero (T=4, S=4)', () => {
      tf.tidy(() => {
        const q = randn([2, 2, 4, 12], 21);
        const k = randn([2, 2, 4, 12], 22);
        const v = randn([2, 2, 4, 12], 23);
        // batch 1 hides every key
        const mask = tf.tensor4d([1, 1, 1, 0, 0, 0, 0, 0], [2, 1, 1, 4], 'bool');
        const out = scaledDotProductAttention(q, k, v, {mask, causal: true});
        expect(allFinite(out)).toBe(true);
        expect(maxAbs(tf.slice(out, [1, 0, 0, 0], [1, 2, 4, 12]))).toBe(0);
        expectClose(out, referenceAttention(q, k, v, {mask, causal: true}));
      });
    });

    test('numeric 0/1 masks (float32 and int32) == bool mask (T=7, S=9, causal)', () => {
      tf.tidy(() => {
        const q = randn([2, 4, 7, 12], 31);
        const k = randn([2, 2, 9, 12], 32);
        const v = randn([2, 2, 9, 12], 33);
        const boolMask = makeMask('btS', 2, 4, 7, 9, 5) as tf.Tensor;
        const want = scaledDotProductAttention(q, k, v, {mask: boolMask, causal: true});
        for (const dtype of ['float32', 'int32'] as const) {
          const out = scaledDotProductAttention(q, k, v, {mask: tf.cast(boolMask, dtype), causal: true});
          expectClose(out, want, 0);
        }
        expectClose(want, referenceAttention(q, k, v, {mask: boolMask, causal: true}));
      });
    });

    test('mask [T, S] applies to every batch and head == reference (T=7, S=9, G=1)', () => {
      tf.tidy(() => {
        const q = randn([2, 3, 7, 12], 41);
        const k = randn([2, 1, 9, 12], 42);
        const v = randn([2, 1, 9, 12], 43);
        const mask = tf.reshape(makeMask('btS', 1, 1, 7, 9, 6) as tf.Tensor, [7, 9]);
        expectClose(scaledDotProductAttention(q, k, v, {mask}), referenceAttention(q, k, v, {mask}));
      });
    });
  });

  describe('large logits and scale', () => {
    test('logits of magnitude 1e4: finite, == reference, forward and gradients (T=7, S=8, scale=1)', () => {
      tf.tidy(() => {
        const {q, k, v, cot, mask} = largeLogitCase();
        for (const opts of [{scale: 1}, {scale: 1, mask}]) {
          const logits = tf.matMul(tf.reshape(q, [14, 12]), tf.reshape(k, [8, 12]), false, true);
          expect(maxAbs(logits)).toBeGreaterThan(9e3);
          const out = scaledDotProductAttention(q, k, v, opts);
          expect(allFinite(out)).toBe(true);
          expectClose(out, referenceAttention(q, k, v, opts));
          const got = gradsOf((a, b, c) => scaledDotProductAttention(a, b, c, opts), q, k, v, cot);
          const want = gradsOf((a, b, c) => referenceAttention(a, b, c, opts), q, k, v, cot);
          got.forEach((g, i) => {
            expect(allFinite(g)).toBe(true);
            expectClose(g, want[i]);
          });
        }
      });
    });

    test('random logits of magnitude 1e4: finite output and gradients (T=7, S=7, causal)', () => {
      tf.tidy(() => {
        const q = randn([2, 2, 7, 12], 61, 100);
        const k = randn([2, 2, 7, 12], 62, 100);
        const v = randn([2, 2, 7, 12], 63);
        const out = scaledDotProductAttention(q, k, v, {causal: true});
        expect(allFinite(out)).toBe(true);
        const grads = gradsOf((a, b, c) => scaledDotProductAttention(a, b, c, {causal: true}), q, k, v,
          randn([2, 2, 7, 12], 64));
        grads.forEach((g) => expect(allFinite(g)).toBe(true));
      });
    });

    test('custom scale == reference with that scale, and differs from the default (scale=0.05)', () => {
      tf.tidy(() => {
        const q = randn([1, 2, 7, 12], 71);
        const k = randn([1, 2, 9, 12], 72);
        const v = randn([1, 2, 9, 12], 73);
        const out = scaledDotProductAttention(q, k, v, {scale: 0.05});
        expectClose(out, referenceAttention(q, k, v, {scale: 0.05}));
        expect(maxAbs(tf.sub(out, referenceAttention(q, k, v)))).toBeGreaterThan(1e-3);
      });
    });
  });

  describe('returnWeights', () => {
    test('weights == reference probabilities, rows sum to 1 or 0 (T=7, S=9, H=4, G=2, causal, mask [B,T,S])', () => {
      tf.tidy(() => {
        const q = randn([2, 4, 7, 12], 81);
        const k = randn([2, 2, 9, 12], 82);
        const v = randn([2, 2, 9, 5], 83);
        // Row 0 of batch 0 hides every key it could see (keys 0..2 under causal).
        const mask = tf.tensor3d(Array.from({length: 2 * 7 * 9}, (_, n) => !(n < 9 && n % 9 < 3) && n % 5 !== 0), [2, 7, 9], 'bool');
        const opts = {mask, causal: true};
        const {output, weights} = scaledDotProductAttention(q, k, v, {...opts, returnWeights: true});
        const want = referenceWeights(q, k, v, opts);
        expect(weights.shape).toEqual([2, 4, 7, 9]);
        expectClose(weights, want);
        expectClose(output, referenceAttention(q, k, v, opts));
        const sums = tf.sum(weights, 3).arraySync() as number[][][];
        const wantSums = tf.sum(want, 3).arraySync() as number[][][];
        expect(wantSums[0][0][0]).toBe(0);
        sums.flat(2).forEach((s, n) => {
          const expected = wantSums.flat(2)[n] === 0 ? 0 : 1;
          expect(Math.abs(s - expected)).toBeLessThan(1e-5);
        });
        expect(weights.dataSync().every((x) => x >= 0)).toBe(true);
      });
    });
  });

  describe('dropout', () => {
    const shape = {B: 2, H: 2, T: 16, S: 16, D: 12};

    /** v = identity per kv head, so the output rows are the (dropped) weights. */
    function identityInputs() {
      const {B, H, T, S, D} = shape;
      const q = randn([B, H, T, D], 91);
      const k = randn([B, H, S, D], 92);
      const v = tf.tile(tf.reshape(tf.eye(S), [1, 1, S, S]), [B, H, 1, 1]);
      return {q, k, v};
    }

    test('training false: dropout 0.5 output == no dropout', () => {
      tf.tidy(() => {
        const {q, k, v} = identityInputs();
        const plain = scaledDotProductAttention(q, k, v, {causal: true});
        expectClose(scaledDotProductAttention(q, k, v, {causal: true, dropout: 0.5}), plain, 0);
        expectClose(scaledDotProductAttention(q, k, v, {causal: true, dropout: 0.5, training: false, seed: 1}),
          plain, 0);
      });
    });

    test('training true, rate 0.5: about half the weights zeroed, survivors scaled by 2 (T=S=16)', () => {
      tf.tidy(() => {
        const {q, k, v} = identityInputs();
        const {output, weights} = scaledDotProductAttention(q, k, v,
          {dropout: 0.5, training: true, seed: 42, returnWeights: true});
        expectClose(weights, referenceWeights(q, k, v));
        const o = output.dataSync();
        const w = weights.dataSync();
        expect(o.length).toBe(w.length);
        let zeroed = 0;
        let worst = 0;
        for (let n = 0; n < w.length; n++) {
          expect(w[n]).toBeGreaterThan(0);
          if (o[n] === 0) zeroed++;
          else worst = Math.max(worst, Math.abs(o[n] - 2 * w[n]) / (2 * w[n]));
        }
        // 2048 Bernoulli(0.5) draws: mean 1024, sd ~23.
        expect(zeroed).toBeGreaterThan(0.4 * w.length);
        expect(zeroed).toBeLessThan(0.6 * w.length);
        expect(worst).toBeLessThan(1e-4);
      });
    });

    test('training true: a fixed seed is reproducible, another seed differs', () => {
      tf.tidy(() => {
        const {q, k, v} = identityInputs();
        const opts: SdpaOptions = {dropout: 0.5, training: true, seed: 7};
        const a = scaledDotProductAttention(q, k, v, opts);
        const b = scaledDotProductAttention(q, k, v, opts);
        const c = scaledDotProductAttention(q, k, v, {...opts, seed: 8});
        expectClose(a, b, 0);
        expect(maxAbs(tf.sub(a, c))).toBeGreaterThan(0);
      });
    });
  });

  describe('errors', () => {
    const q = () => tf.zeros([2, 4, 7, 12]);
    const kv = (B = 2, G = 2, S = 9, D = 12) => tf.zeros([B, G, S, D]);
    const call = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, o?: SdpaOptions) => () => tf.tidy(() => {
      scaledDotProductAttention(a, b, c, o);
    });

    test('rank != 4 throws DIMENSION_MISMATCH naming the tensor and its shape', () => {
      tf.tidy(() => {
        expectAttentionError(call(tf.zeros([4, 7, 12]), kv(), kv()), 'DIMENSION_MISMATCH', /q must have rank 4.*\[4, 7, 12\]/);
        expectAttentionError(call(q(), tf.zeros([2, 2, 9, 12, 1]), kv()), 'DIMENSION_MISMATCH', /k must have rank 4.*\[2, 2, 9, 12, 1\]/);
        expectAttentionError(call(q(), kv(), tf.zeros([9, 12])), 'DIMENSION_MISMATCH', /v must have rank 4.*\[9, 12\]/);
      });
    });

    test('batch mismatch throws DIMENSION_MISMATCH', () => {
      tf.tidy(() => {
        expectAttentionError(call(q(), kv(3), kv(3)), 'DIMENSION_MISMATCH', /batch size.*2, 3 and 3/);
        expectAttentionError(call(q(), kv(), kv(1)), 'DIMENSION_MISMATCH', /batch size.*2, 2 and 1/);
      });
    });

    test('k/v length mismatch throws DIMENSION_MISMATCH', () => {
      tf.tidy(() => {
        expectAttentionError(call(q(), kv(2, 2, 9), kv(2, 2, 8)), 'DIMENSION_MISMATCH', /same length.*9 and 8/);
      });
    });

    test('k/v heads mismatch throws DIMENSION_MISMATCH', () => {
      tf.tidy(() => {
        expectAttentionError(call(q(), kv(2, 2), kv(2, 1)), 'DIMENSION_MISMATCH', /same number of heads.*2 and 1/);
      });
    });

    test('head dim mismatch throws DIMENSION_MISMATCH', () => {
      tf.tidy(() => {
        expectAttentionError(call(q(), kv(2, 2, 9, 8), kv()), 'DIMENSION_MISMATCH', /last dim \(8\).*q's last dim \(12\)/);
      });
    });

    test('H not divisible by G throws DIMENSION_MISMATCH (H=4, G=3)', () => {
      tf.tidy(() => {
        expectAttentionError(call(q(), kv(2, 3), kv(2, 3)), 'DIMENSION_MISMATCH', /query heads \(4\).*divisible.*key\/value heads \(3\)/);
      });
    });

    test('mask not broadcastable throws INVALID_MASK', () => {
      tf.tidy(() => {
        const cases: [number[], RegExp][] = [
          [[8, 9], /\[8, 9\].*not broadcastable.*\[2, 4, 7, 9\]/],
          [[3, 7, 9], /\[3, 7, 9\].*not broadcastable/],
          [[2, 3, 7, 9], /\[2, 3, 7, 9\].*not broadcastable/],
          [[2, 1, 1, 10], /\[2, 1, 1, 10\].*not broadcastable/],
          [[9], /rank 2, 3 or 4.*\[9\]/],
          [[1, 2, 1, 7, 9], /rank 2, 3 or 4.*\[1, 2, 1, 7, 9\]/],
        ];
        for (const [shape, message] of cases) {
          expectAttentionError(call(q(), kv(), kv(), {mask: tf.ones(shape, 'bool')}), 'INVALID_MASK', message);
        }
      });
    });

    test('dropout outside [0, 1) throws INVALID_CONFIG', () => {
      tf.tidy(() => {
        for (const rate of [1, -0.1, 1.5, NaN]) {
          expectAttentionError(call(q(), kv(), kv(), {dropout: rate}), 'INVALID_CONFIG', /dropout must be a number in \[0, 1\).*received/);
        }
      });
    });
  });

  describe('no leaked tensors', () => {
    const c: Case = {B: 2, H: 4, G: 2, T: 7, S: 9, D: 12, Dv: 12, causal: true, mask: 'padding'};
    let q: tf.Tensor; let k: tf.Tensor; let v: tf.Tensor; let cot: tf.Tensor; let mask: tf.Tensor;
    beforeAll(() => {
      ({q, k, v, cot} = inputs(c, 1000));
      mask = makeMask('padding', c.B, c.H, c.T, c.S, 1) as tf.Tensor;
    });
    afterAll(() => tf.dispose([q, k, v, cot, mask]));

    const variants: [string, () => SdpaOptions][] = [
      ['plain', () => ({})],
      ['causal + padding mask', () => ({causal: true, mask})],
      ['dropout training', () => ({dropout: 0.3, training: true, seed: 3})],
    ];

    for (const [name, options] of variants) {
      test(`forward leaves numTensors unchanged (${name})`, () => {
        const opts = options();
        expectNoLeaks(() => scaledDotProductAttention(q, k, v, opts).dispose());
        expectNoLeaks(() => {
          const {output, weights} = scaledDotProductAttention(q, k, v, {...opts, returnWeights: true});
          tf.dispose([output, weights]);
        });
      });

      test(`tf.grads leaves numTensors unchanged (${name})`, () => {
        const opts = options();
        expectNoLeaks(() => tf.dispose(gradsOf((a, b, d) => scaledDotProductAttention(a, b, d, opts), q, k, v, cot)));
      });
    }

    test('a rejected mask leaks nothing', () => {
      const bad = tf.ones([3, 7, 9], 'bool');
      expectNoLeaks(() => expect(() => scaledDotProductAttention(q, k, v, {mask: bad})).toThrow(AttentionError));
      bad.dispose();
    });
  });
});
