// flashAttention against the naive reference and scaledDotProductAttention: forward and
// gradients over awkward sizes, block sizes, head layouts and masks; peak memory; errors.
import * as tf from '@tensorflow/tfjs';
import {flashAttention} from '../../src/ops/flash';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {allFinite, Case, caseName, gradsOf, inputs, largeLogitCase, makeMask} from '../support/cases';
import {BACKEND, expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

type FlashCase = Case & {blockSize?: number; keyBlockSize?: number};

// T and S are not multiples of the block size; MHA, MQA and GQA; causal with T != S.
const GRID: FlashCase[] = [
  {B: 2, H: 2, G: 2, T: 1, S: 1, D: 12, Dv: 12, causal: false, mask: 'none', blockSize: 4},
  {B: 2, H: 3, G: 1, T: 1, S: 9, D: 12, Dv: 5, causal: true, mask: 'padding', blockSize: 4},
  {B: 2, H: 4, G: 2, T: 7, S: 7, D: 12, Dv: 12, causal: true, mask: 'none', blockSize: 4},
  {B: 2, H: 4, G: 4, T: 7, S: 13, D: 12, Dv: 8, causal: true, mask: 'padding', blockSize: 4},
  {B: 2, H: 2, G: 1, T: 7, S: 4, D: 12, Dv: 12, causal: true, mask: 'none', blockSize: 4},
  {B: 2, H: 4, G: 1, T: 7, S: 10, D: 12, Dv: 6, causal: false, mask: 'perHead', blockSize: 4},
  {B: 1, H: 4, G: 2, T: 97, S: 97, D: 12, Dv: 12, causal: true, mask: 'padding', blockSize: 16},
  {B: 2, H: 4, G: 2, T: 97, S: 50, D: 12, Dv: 12, causal: true, mask: 'btS', blockSize: 16},
  {B: 1, H: 2, G: 1, T: 130, S: 130, D: 12, Dv: 12, causal: true, mask: 'none', blockSize: 64},
  {B: 1, H: 4, G: 2, T: 130, S: 97, D: 8, Dv: 8, causal: false, mask: 'perHead', blockSize: 64, scale: 0.5},
  {B: 1, H: 2, G: 2, T: 97, S: 130, D: 8, Dv: 8, causal: true, mask: 'btS', blockSize: 16},
  // Query and key tiles of different sizes, and the default tiles (one key tile per query block).
  {B: 2, H: 4, G: 2, T: 97, S: 97, D: 8, Dv: 8, causal: true, mask: 'none', blockSize: 16, keyBlockSize: 40},
  {B: 1, H: 4, G: 1, T: 33, S: 70, D: 8, Dv: 6, causal: true, mask: 'btS', blockSize: 8, keyBlockSize: 5},
  {B: 2, H: 4, G: 2, T: 130, S: 130, D: 8, Dv: 8, causal: true, mask: 'padding', keyBlockSize: 48},
  {B: 1, H: 4, G: 2, T: 300, S: 300, D: 8, Dv: 8, causal: false, mask: 'none'},
  {B: 1, H: 2, G: 1, T: 300, S: 260, D: 8, Dv: 8, causal: true, mask: 'perHead'},
];

describe(title('flashAttention'), () => {
  GRID.forEach((c, n) => {
    test(`flash == reference and sdpa, forward and gradients (${caseName(c)}, blockSize=${c.blockSize ?? 'default'}, ` +
        `keyBlockSize=${c.keyBlockSize ?? 'default'})`, () => {
      tf.tidy(() => {
        const {q, k, v, cot} = inputs(c, 100 + 10 * n);
        const mask = makeMask(c.mask, c.B, c.H, c.T, c.S, 7 + n);
        const opts = {causal: c.causal, mask, scale: c.scale};
        const flash = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
          flashAttention(a, b, d, {...opts, blockSize: c.blockSize, keyBlockSize: c.keyBlockSize});
        const out = flash(q, k, v);
        expectClose(out, referenceAttention(q, k, v, opts));
        expectClose(out, scaledDotProductAttention(q, k, v, opts));
        const got = gradsOf(flash, q, k, v, cot);
        const ref = gradsOf((a, b, d) => referenceAttention(a, b, d, opts), q, k, v, cot);
        const sdpa = gradsOf((a, b, d) => scaledDotProductAttention(a, b, d, opts), q, k, v, cot);
        got.forEach((g, i) => {
          expectClose(g, ref[i]);
          expectClose(g, sdpa[i]);
        });
      });
    });
  });

  test('a fully masked row and causal rows that see no key give zeros and zero gradients (T=9, S=5, blockSize=4)', () => {
    tf.tidy(() => {
      const q = randn([1, 2, 9, 8], 1);
      const k = randn([1, 1, 5, 8], 2);
      const v = randn([1, 1, 5, 8], 3);
      // Row 8 of every head is fully masked; with causal and S - T = -4, rows 0..3 see nothing.
      const mask = tf.tensor2d(Array.from({length: 9 * 5}, (_, i) => (i >= 8 * 5 ? 0 : 1)), [9, 5]);
      const opts = {mask, causal: true, blockSize: 4};
      const out = flashAttention(q, k, v, opts);
      expect(allFinite(out)).toBe(true);
      const rows = out.arraySync() as number[][][][];
      for (const h of [0, 1]) for (const i of [0, 1, 2, 3, 8]) expect(rows[0][h][i].every((x) => x === 0)).toBe(true);
      expectClose(out, referenceAttention(q, k, v, {mask, causal: true}));
      const [dq, dk, dv] = gradsOf((a, b, c) => flashAttention(a, b, c, opts), q, k, v, randn([1, 2, 9, 8], 4));
      const dqRows = dq.arraySync() as number[][][][];
      for (const h of [0, 1]) for (const i of [0, 1, 2, 3, 8]) expect(dqRows[0][h][i].every((x) => x === 0)).toBe(true);
      [dq, dk, dv].forEach((g) => expect(allFinite(g)).toBe(true));
    });
  });

  test('logits of magnitude 1e4: finite, == reference, forward and gradients (T=7, S=8, blockSize=4)', () => {
    tf.tidy(() => {
      const {q, k, v, cot, mask} = largeLogitCase();
      for (const opts of [{scale: 1}, {scale: 1, mask}]) {
        const out = flashAttention(q, k, v, {...opts, blockSize: 4});
        expect(allFinite(out)).toBe(true);
        expectClose(out, referenceAttention(q, k, v, opts));
        const got = gradsOf((a, b, c) => flashAttention(a, b, c, {...opts, blockSize: 4}), q, k, v, cot);
        const want = gradsOf((a, b, c) => referenceAttention(a, b, c, opts), q, k, v, cot);
        got.forEach((g, i) => {
          expect(allFinite(g)).toBe(true);
          expectClose(g, want[i]);
        });
      }
      // Random logits of 1e4 in several tiles: finite everywhere.
      const qb = randn([1, 2, 13, 12], 61, 100);
      const kb = randn([1, 2, 13, 12], 62, 100);
      const grads = gradsOf((a, b, c) => flashAttention(a, b, c, {causal: true, blockSize: 4}), qb, kb,
        randn([1, 2, 13, 12], 63), randn([1, 2, 13, 12], 64));
      grads.forEach((g) => expect(allFinite(g)).toBe(true));
    });
  });

  // Memory is the algorithm's, the same on every backend: checked once, on wasm (cpu takes 40 s here).
  const onWasm = BACKEND === 'wasm' ? test : test.skip;
  onWasm('peak bytes of forward+backward at T=1024 (B=1, H=2, D=32, blockSize 256) are below 1/4 of sdpa\'s', async () => {
    const [B, H, T, D] = [1, 2, 1024, 32];
    const q = randn([B, H, T, D], 1);
    const k = randn([B, H, T, D], 2);
    const v = randn([B, H, T, D], 3);
    const cot = randn([B, H, T, D], 4);
    const peak = async (f: (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor) => {
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => gradsOf(f, q, k, v, cot));
      tf.dispose(info.result as tf.Tensor[]);
      return info.peakBytes - before;
    };
    // The tile is set to a quarter of T: the default (512) would be half of T here, and the
    // promise is O(T * D + blockSize^2), not a fixed fraction of sdpa at every T.
    const flash = await peak((a, b, c) => flashAttention(a, b, c, {causal: true, blockSize: 256}));
    const sdpa = await peak((a, b, c) => scaledDotProductAttention(a, b, c, {causal: true}));
    // sdpa holds several [B, H, T, T] tensors (8 MiB each; 3.5 of them at its peak since its
    // backward frees each block's scores once it has their probabilities); flash only
    // O(T * D) ones and tiles.
    expect(sdpa).toBeGreaterThan(3 * B * H * T * T * 4);
    expect(flash).toBeLessThan(sdpa / 4);
    tf.dispose([q, k, v, cot]);
  });

  test('no leaked tensors after forward and after tf.grads (with a mask)', () => {
    const q = randn([1, 4, 9, 8], 1);
    const k = randn([1, 2, 9, 8], 2);
    const v = randn([1, 2, 9, 8], 3);
    const cot = randn([1, 4, 9, 8], 4);
    const mask = tf.ones([1, 1, 1, 9]);
    const opts = {mask, causal: true, blockSize: 4};
    expectNoLeaks(() => tf.dispose(flashAttention(q, k, v, opts)));
    expectNoLeaks(() => tf.dispose(gradsOf((a, b, c) => flashAttention(a, b, c, opts), q, k, v, cot)));
    tf.dispose([q, k, v, cot, mask]);
  });

  describe('errors', () => {
    let q: tf.Tensor;
    let k: tf.Tensor;
    beforeAll(() => { q = tf.zeros([1, 4, 3, 8]); k = tf.zeros([1, 2, 5, 8]); });
    afterAll(() => tf.dispose([q, k]));

    test('bad blockSize, shapes and masks throw AttentionError', () => {
      expectError(() => flashAttention(q, k, k, {blockSize: 0}), 'INVALID_CONFIG', /blockSize must be a positive integer, received 0/);
      expectError(() => flashAttention(q, k, k, {blockSize: 2.5}), 'INVALID_CONFIG', /blockSize must be a positive integer, received 2\.5/);
      const k3 = tf.zeros([1, 3, 5, 8]);
      expectError(() => flashAttention(q, k3, k3), 'DIMENSION_MISMATCH', /query heads \(4\) must be divisible by key\/value heads \(3\)/);
      const badMask = tf.ones([1, 1, 3, 4]);
      expectError(() => flashAttention(q, k, k, {mask: badMask}), 'INVALID_MASK', /not broadcastable to \[B, H, T, S\] = \[1, 4, 3, 5\]/);
      tf.dispose([k3, badMask]);
    });
  });
});
