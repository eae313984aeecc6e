// localGlobalAttention against a reference built from dense masks (two masked softmax
// attentions and the gate blend): forward and gradients for q, k, v and the gate over
// awkward lengths and windows, causal or not, global indices in and out of range or none,
// head layouts and key padding; errors and leaks.
import * as tf from '@tensorflow/tfjs';
import {localGlobalAttention, localBlockSize, validGlobalIndices} from '../../src/ops/local_global';
import {allFinite} from '../support/cases';
import {expectClose, expectError, expectNoLeaks, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

interface LgCase {
  B: number; H: number; G: number; T: number; D: number; Dv: number; W: number;
  causal: boolean; globals: number[]; padding?: boolean; blockSize?: number;
}

const name = (c: LgCase) => [`T=${c.T}`, `W=${c.W}`, `H=${c.H}`, `G=${c.G}`, c.causal ? 'causal' : 'non-causal',
  `globals [${c.globals.join(', ')}]`, c.padding ? 'key padding' : '', c.blockSize != null ? `block ${c.blockSize}` : '']
  .filter((x) => x !== '').join(', ');

// T = 1, 7, 97, 130 against W = 1, 4, 5, 16 (T never a multiple of W); out-of-range globals and none.
const GRID: LgCase[] = [
  {B: 2, H: 2, G: 2, T: 1, D: 8, Dv: 8, W: 1, causal: true, globals: [0, 5]},
  {B: 2, H: 2, G: 1, T: 1, D: 8, Dv: 8, W: 4, causal: false, globals: []},
  {B: 2, H: 4, G: 2, T: 7, D: 8, Dv: 6, W: 1, causal: false, globals: [0, 3, 9]},
  {B: 2, H: 2, G: 2, T: 7, D: 8, Dv: 8, W: 4, causal: true, globals: [], padding: true},
  {B: 1, H: 3, G: 1, T: 7, D: 8, Dv: 8, W: 16, causal: false, globals: [6, 7, 100]},
  {B: 2, H: 4, G: 2, T: 97, D: 8, Dv: 8, W: 4, causal: true, globals: [5, 50, 200]},
  {B: 2, H: 2, G: 1, T: 97, D: 8, Dv: 8, W: 16, causal: false, globals: [96], padding: true},
  {B: 1, H: 2, G: 2, T: 97, D: 8, Dv: 8, W: 1, causal: true, globals: [0, 1, 2], blockSize: 1},
  {B: 1, H: 4, G: 4, T: 130, D: 8, Dv: 8, W: 16, causal: true, globals: [0, 64, 129, 130]},
  {B: 2, H: 2, G: 2, T: 130, D: 8, Dv: 8, W: 1, causal: false, globals: [], padding: true},
  {B: 1, H: 4, G: 2, T: 130, D: 8, Dv: 4, W: 4, causal: true, globals: [1, 1, 77], blockSize: 4, padding: true},
  // Blocks wider than the window but narrower than T (the default block of 256 holds these T
  // whole): a block sees parts of its neighbours' key tiles.
  {B: 2, H: 4, G: 2, T: 97, D: 8, Dv: 8, W: 5, causal: false, globals: [3, 50], blockSize: 16, padding: true},
  {B: 1, H: 2, G: 1, T: 130, D: 8, Dv: 8, W: 16, causal: true, globals: [7], blockSize: 32},
];

/** [B, T] 0/1: batch b keeps its first T - 3b positions (at least 1). */
function paddingRows(B: number, T: number): number[][] {
  return Array.from({length: B}, (_, b) => Array.from({length: T}, (_, j) => (j < Math.max(1, T - 3 * b) ? 1 : 0)));
}

/** Dense [B, T, T] masks of the two branches, by plain loops over the definition. */
function denseMasks(c: LgCase): {local: tf.Tensor; global: tf.Tensor} {
  const pad = c.padding ? paddingRows(c.B, c.T) : null;
  const build = (rule: (i: number, j: number) => boolean) => tf.tensor3d(Array.from({length: c.B}, (_, b) =>
    Array.from({length: c.T}, (_, i) => Array.from({length: c.T}, (_, j) =>
      (rule(i, j) && (!c.causal || j <= i) && (pad == null || pad[b][j] === 1) ? 1 : 0)))));
  return {
    local: build((i, j) => Math.abs(i - j) <= c.W),
    global: build((_, j) => c.globals.includes(j)),
  };
}

/** The reference: two masked softmax attentions blended by sigmoid(gate). */
function reference(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, gate: tf.Tensor, c: LgCase): tf.Tensor {
  const {local, global} = denseMasks(c);
  const s = tf.reshape(tf.sigmoid(gate), [1, c.H, 1, c.Dv]);
  return tf.add(tf.mul(s, referenceAttention(q, k, v, {mask: local})),
    tf.mul(tf.sub(1, s), referenceAttention(q, k, v, {mask: global})));
}

describe(title('localGlobalAttention'), () => {
  GRID.forEach((c, n) => {
    test(`== dense-mask reference, forward and gradients for q, k, v, gate (${name(c)})`, () => {
      tf.tidy(() => {
        const q = randn([c.B, c.H, c.T, c.D], 10 + n);
        const k = randn([c.B, c.G, c.T, c.D], 20 + n);
        const v = randn([c.B, c.G, c.T, c.Dv], 30 + n);
        const gate = randn([c.H, c.Dv], 40 + n);
        const cot = randn([c.B, c.H, c.T, c.Dv], 50 + n);
        const mask = c.padding ? tf.tensor4d(paddingRows(c.B, c.T).flat(), [c.B, 1, 1, c.T]) : undefined;
        const op = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, g: tf.Tensor) => localGlobalAttention(a, b, d,
          {windowSize: c.W, globalIndices: c.globals, gate: g, causal: c.causal, mask, blockSize: c.blockSize});
        const ref = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, g: tf.Tensor) => reference(a, b, d, g, c);
        expectClose(op(q, k, v, gate), ref(q, k, v, gate));
        const grads = (f: (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, g: tf.Tensor) => tf.Tensor) =>
          tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, g: tf.Tensor) =>
            tf.sum(tf.mul(f(a, b, d, g), cot)))([q, k, v, gate]);
        const want = grads(ref);
        grads(op).forEach((g, i) => expectClose(g, want[i]));
      });
    });
  });

  test('the gate blends: zeros = even blend, +-30 = local or global alone; no valid global = local * sigmoid(g)', () => {
    tf.tidy(() => {
      const [B, H, T, D] = [1, 2, 9, 4];
      const q = randn([B, H, T, D], 1);
      const k = randn([B, H, T, D], 2);
      const v = randn([B, H, T, D], 3);
      const run = (gate: tf.Tensor, globalIndices: number[]) =>
        localGlobalAttention(q, k, v, {windowSize: 2, globalIndices, gate});
      const localOnly = run(tf.fill([H, D], 30), [0, 4]);
      const globalOnly = run(tf.fill([H, D], -30), [0, 4]);
      expectClose(run(tf.zeros([H, D]), [0, 4]), tf.mul(tf.add(localOnly, globalOnly), 0.5), 1e-6);
      expectClose(localOnly, referenceAttention(q, k, v, {mask: tf.tensor2d(Array.from({length: T}, (_, i) =>
        Array.from({length: T}, (__, j) => (Math.abs(i - j) <= 2 ? 1 : 0))))}), 1e-5);
      // Globals all out of range: the global branch contributes zeros.
      const gate = randn([H, D], 4);
      expectClose(run(gate, [9, 50]),
        tf.mul(tf.reshape(tf.sigmoid(gate), [1, H, 1, D]), run(tf.fill([H, D], 30), [])), 1e-5);
    });
  });

  test('no NaN for causal rows that see no global key; their global part is zero', () => {
    tf.tidy(() => {
      const q = randn([1, 1, 6, 4], 1);
      const k = randn([1, 1, 6, 4], 2);
      const v = randn([1, 1, 6, 4], 3);
      const opts = {windowSize: 1, globalIndices: [3], causal: true};
      const globalOnly = localGlobalAttention(q, k, v, {...opts, gate: tf.fill([1, 4], -30)});
      const rows = globalOnly.arraySync() as number[][][][];
      expect(rows[0][0].slice(0, 3).flat().every((x) => Math.abs(x) < 1e-9)).toBe(true); // rows 0..2 see no global
      expect(rows[0][0].slice(3).flat().some((x) => Math.abs(x) > 1e-3)).toBe(true);
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
        tf.sum(localGlobalAttention(a, b, d, {...opts, gate: tf.zeros([1, 4])})))([q, k, v]);
      expect(grads.every(allFinite)).toBe(true);
    });
  });

  test('validGlobalIndices drops out-of-range and repeated indices and sorts; localBlockSize >= W', () => {
    expect(validGlobalIndices([7, 0, 3, 3, 12, 9], 9)).toEqual([0, 3, 7]);
    expect(validGlobalIndices([], 5)).toEqual([]);
    expect([1, 4, 16, 64].map(localBlockSize).every((b, i) => b >= [1, 4, 16, 64][i])).toBe(true);
  });

  test('no leaked tensors: forward and gradients, with globals, padding and causal', () => {
    const q = randn([2, 4, 11, 4], 1);
    const k = randn([2, 2, 11, 4], 2);
    const v = randn([2, 2, 11, 4], 3);
    const gate = tf.zeros([4, 4]);
    const mask = tf.tensor2d([[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]);
    const opts = {windowSize: 3, globalIndices: [0, 5, 20], causal: true, mask, gate};
    expectNoLeaks(() => tf.dispose(localGlobalAttention(q, k, v, opts)));
    expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, g: tf.Tensor) =>
      tf.sum(localGlobalAttention(a, b, c, {...opts, gate: g})))([q, k, v, gate])));
    tf.dispose([q, k, v, gate, mask]);
  });

  describe('errors', () => {
    const q = () => tf.zeros([1, 2, 5, 4]);
    const kv = () => tf.zeros([1, 2, 5, 4]);
    const gate = () => tf.zeros([2, 4]);
    test.each([
      ['windowSize 0', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 0, gate: gate()}),
        'INVALID_CONFIG', /windowSize must be a positive integer, received 0/],
      ['windowSize 1.5', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 1.5, gate: gate()}),
        'INVALID_CONFIG', /windowSize must be a positive integer, received 1\.5/],
      ['a negative global index', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 1, gate: gate(), globalIndices: [1, -2]}),
        'INVALID_CONFIG', /globalIndices must be an array of non-negative integers, received \[1, -2\]/],
      ['a fractional global index', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 1, gate: gate(), globalIndices: [0.5]}),
        'INVALID_CONFIG', /globalIndices must be an array of non-negative integers, received \[0\.5\]/],
      ['blockSize < windowSize', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 4, gate: gate(), blockSize: 2}),
        'INVALID_CONFIG', /blockSize \(2\) must be at least windowSize \(4\)/],
      ['a gate of the wrong shape', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 1, gate: tf.zeros([4, 2])}),
        'DIMENSION_MISMATCH', /gate must be a \[heads, valueDim\] = \[2, 4\] tensor, received shape \[4, 2\]/],
      ['T != S', () => localGlobalAttention(q(), tf.zeros([1, 2, 6, 4]), tf.zeros([1, 2, 6, 4]), {windowSize: 1, gate: gate()}),
        'UNSUPPORTED', /same length .*T=5 and S=6/],
      ['a [B, T, S] mask', () => localGlobalAttention(q(), kv(), kv(), {windowSize: 1, gate: gate(), mask: tf.ones([1, 5, 5])}),
        'UNSUPPORTED', /local-global attention takes key padding masks only .*received shape \[1, 5, 5\]/],
    ])('%s', (_, fn, code, message) => {
      tf.tidy(() => expectError(fn, code as string, message as RegExp));
    });
  });
});
