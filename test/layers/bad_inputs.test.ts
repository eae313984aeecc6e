// Every bad input gets a coded AttentionError or a sensible result, never a raw error or
// a corrupted backend: after each case below, the same process still computes a fixed
// attention exactly as before (on wasm, a heap overrun would break every later op).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, causalMask, FlashAttention, flashAttention, HnswMask, LinearAttention, linearAttention, LocalGlobalAttention, localGlobalAttention, MultiHeadAttention, orthogonalProjection, scaledDotProductAttention, SparseMask} from '../../src';
import {main} from '../../src/cli/main';
import {maxDiff, randn, title} from '../support/helpers';

type Outcome = {code: string; message: RegExp} | {check: (result: unknown) => void};

/** A tensor result (or the first of a list, or the output of {output, weights}). */
function tensorOf(result: unknown): tf.Tensor {
  if (result instanceof tf.Tensor) return result;
  if (Array.isArray(result) && result[0] instanceof tf.Tensor) return result[0];
  return (result as {output: tf.Tensor}).output;
}

/** An empty or all-zero result of `shape`. */
function zerosOf(shape: number[]): (result: unknown) => void {
  return (result) => {
    const t = tensorOf(result);
    expect(t.shape).toEqual(shape);
    expect(Array.from(t.dataSync()).every((x) => x === 0)).toBe(true);
  };
}

const r = (shape: number[], seed = 1) => randn(shape, seed);
const proj = () => orthogonalProjection(6, 4, 1);
const gate = () => tf.zeros([2, 4]);

/** The gradients of sum(op(q, k, v)) for empty inputs: zeros of each input's shape. */
function emptyGrads(op: (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor, shapes: number[][]): unknown {
  const [q, k, v] = shapes.map((s, i) => r(s, i + 1));
  const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(op(a, b, c)))([q, k, v]);
  grads.forEach((g, i) => {
    expect(g.shape).toEqual(shapes[i]);
    expect(Array.from(g.dataSync()).every((x) => x === 0)).toBe(true);
  });
  return grads;
}

const OPS: [string, (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor][] = [
  ['sdpa', (q, k, v) => scaledDotProductAttention(q, k, v)],
  ['sdpa causal', (q, k, v) => scaledDotProductAttention(q, k, v, {causal: true})],
  ['flash', (q, k, v) => flashAttention(q, k, v, {causal: 'top-left'})],
  ['linear', (q, k, v) => linearAttention(q, k, v, {projection: proj()})],
  ['linear causal', (q, k, v) => linearAttention(q, k, v, {projection: proj(), causal: true})],
];

// [B, H, T, D] q, [B, G, S, D] k, [B, G, S, Dv] v with an empty batch, queries or keys.
const EMPTY: [string, number[][], number[]][] = [
  ['B = 0', [[0, 2, 3, 4], [0, 1, 3, 4], [0, 1, 3, 4]], [0, 2, 3, 4]],
  ['T = 0', [[1, 2, 0, 4], [1, 1, 3, 4], [1, 1, 3, 4]], [1, 2, 0, 4]],
  ['S = 0 (zero rows)', [[1, 2, 3, 4], [1, 1, 0, 4], [1, 1, 0, 4]], [1, 2, 3, 4]],
  ['Dv = 0', [[1, 2, 3, 4], [1, 1, 3, 4], [1, 1, 3, 0]], [1, 2, 3, 0]],
];

const LAYERS: [string, () => tf.layers.Layer][] = [
  ['MultiHeadAttention', () => new MultiHeadAttention({numHeads: 2})],
  ["MultiHeadAttention 'flash'", () => new MultiHeadAttention({numHeads: 2, implementation: 'flash'})],
  ['FlashAttention', () => new FlashAttention({numHeads: 2})],
  ['LinearAttention', () => new LinearAttention({numHeads: 2, seed: 1, causal: true})],
  ['LocalGlobalAttention', () => new LocalGlobalAttention({numHeads: 2, windowSize: 2, globalIndices: [0]})],
];

/** A local-global layer of window W on x, and the same weights with W = T - 1 (which sees every key). */
function bigWindow(T: number, W: number): unknown {
  const x = r([2, T, 8], 3);
  const big = new LocalGlobalAttention({numHeads: 2, windowSize: W, globalIndices: [0]});
  const out = big.apply(x) as tf.Tensor;
  const grads = tf.grads((a: tf.Tensor) => tf.sum(big.apply(a) as tf.Tensor))([x]);
  const full = new LocalGlobalAttention({numHeads: 2, windowSize: Math.max(1, T - 1), globalIndices: [0]});
  tf.dispose(full.apply(x) as tf.Tensor);
  full.setWeights(big.getWeights());
  expect(maxDiff(out, full.apply(x) as tf.Tensor)).toBeLessThanOrEqual(1e-6);
  expect(maxDiff(grads[0], tf.grads((a: tf.Tensor) => tf.sum(full.apply(a) as tf.Tensor))([x])[0]))
    .toBeLessThanOrEqual(1e-5);
  big.dispose();
  full.dispose();
  return out;
}

const CASES: [string, () => unknown, Outcome][] = [
  // Names and values that used to be accepted without a word.
  ['a misspelt layer argument', () => new MultiHeadAttention({numHeads: 4, numHead: 2} as never),
    {code: 'INVALID_CONFIG', message: /did you mean 'numHeads'\?/}],
  ['a misspelt op option', () => flashAttention(r([1, 1, 4, 4]), r([1, 1, 4, 4]), r([1, 1, 4, 4]), {blokSize: 64} as never),
    {code: 'INVALID_CONFIG', message: /did you mean 'blockSize'\?/}],
  ['causal as the string "false" in an op', () => scaledDotProductAttention(r([1, 1, 4, 4]), r([1, 1, 4, 4]), r([1, 1, 4, 4]),
    {causal: 'false' as never}), {code: 'INVALID_CONFIG', message: /causal must be true, false, 'top-left' or 'bottom-right'/}],
  ['a non-integer dropout seed', () => scaledDotProductAttention(r([1, 1, 4, 4]), r([1, 1, 4, 4]), r([1, 1, 4, 4]),
    {seed: 1.5, dropout: 0.1, training: true}), {code: 'INVALID_CONFIG', message: /seed must be an integer, received 1.5/}],
  ['a float mask value of 0.5', () => scaledDotProductAttention(r([1, 1, 4, 4]), r([1, 1, 4, 4]), r([1, 1, 4, 4]),
    {mask: tf.fill([4, 4], 0.5)}), {code: 'INVALID_MASK', message: /must hold only 0 and 1 .* received a value of 0.5/}],
  ['an additive (-inf) mask', () => flashAttention(r([1, 1, 2, 4]), r([1, 1, 2, 4]), r([1, 1, 2, 4]),
    {mask: tf.tensor2d([[0, -Infinity], [0, 0]])}), {code: 'INVALID_MASK', message: /received a value of -Infinity: an additive/}],
  ['a mask that is not a tensor', () => scaledDotProductAttention(r([1, 1, 2, 4]), r([1, 1, 2, 4]), r([1, 1, 2, 4]),
    {mask: [[1, 0], [1, 1]] as never}), {code: 'INVALID_MASK', message: /mask must be a tf.Tensor/}],
  ['a layer attentionMask of 0.5', () => new MultiHeadAttention({numHeads: 2}).apply(r([1, 3, 4]),
    {attentionMask: tf.fill([1, 3, 3], 0.5)}), {code: 'INVALID_MASK', message: /attentionMask must hold only 0 and 1/}],
  ['an HNSW edge outside the sequence', () => HnswMask.fromEdges(4, [[0, 9]]),
    {code: 'INVALID_CONFIG', message: /edges\[0\] holds node 9, outside the sequence \[0, 4\)/}],
  ['an HNSW layer node outside the sequence', () => HnswMask.fromLayers(4, [[0, 1, 7]]),
    {code: 'INVALID_CONFIG', message: /layers\[0\] holds node 7/}],
  // Errors that had no code.
  ...OPS.flatMap(([name, op]) => EMPTY.map(([what, shapes, out]) => [
    `${name} with ${what}: zeros of the output shape`, () => op(r(shapes[0], 1), r(shapes[1], 2), r(shapes[2], 3)),
    {check: zerosOf(out)}] as [string, () => unknown, Outcome])),
  ...OPS.flatMap(([name, op]) => EMPTY.slice(0, 3).map(([what, shapes]) => [
    `${name} gradients with ${what}: zeros of each input's shape`, () => emptyGrads(op, shapes),
    {check: () => undefined}] as [string, () => unknown, Outcome])),
  ['local-global with T = 0', () => localGlobalAttention(r([1, 2, 0, 4]), r([1, 1, 0, 4]), r([1, 1, 0, 4]),
    {windowSize: 2, gate: gate()}), {check: zerosOf([1, 2, 0, 4])}],
  ['local-global with B = 0', () => localGlobalAttention(r([0, 2, 5, 4]), r([0, 1, 5, 4]), r([0, 1, 5, 4]),
    {windowSize: 2, gate: gate(), globalIndices: [1]}), {check: zerosOf([0, 2, 5, 4])}],
  ['local-global gradients with B = 0, the gate included', () => {
    const g = gate();
    return tf.grads((a: tf.Tensor, w: tf.Tensor) => tf.sum(localGlobalAttention(a, r([0, 1, 5, 4]), r([0, 1, 5, 4]),
      {windowSize: 2, gate: w})))([r([0, 2, 5, 4]), g])[1];
  }, {check: zerosOf([2, 4])}],
  ...LAYERS.flatMap(([name, make]) => [
    [`${name} on an empty batch`, () => make().apply(r([0, 3, 8])), {check: zerosOf([0, 3, 8])}],
    [`${name} on an empty sequence`, () => make().apply(r([2, 0, 8])), {check: zerosOf([2, 0, 8])}],
    [`${name} gradients on an empty batch`, () => {
      const layer = make();
      const x = r([0, 3, 8]);
      tf.dispose(layer.apply(x) as tf.Tensor);
      const {grads} = tf.variableGrads(() => tf.sum(layer.apply(x) as tf.Tensor) as tf.Scalar);
      Object.values(grads).forEach((g) => expect(Array.from(g.dataSync()).every((v) => v === 0)).toBe(true));
      return tf.grads((a: tf.Tensor) => tf.sum(layer.apply(a) as tf.Tensor))([x]);
    }, {check: zerosOf([0, 3, 8])}],
  ] as [string, () => unknown, Outcome][]),
  ...LAYERS.filter(([name]) => name !== 'LocalGlobalAttention').map(([name, make]) =>
    [`${name} with no keys (cross-attention, S = 0)`, () => {
      const layer = make();
      const out = layer.apply([r([2, 3, 8]), r([2, 0, 8])]) as tf.Tensor;
      // The output bias only: zero attention, projected. (Zero-initialised biases: zeros.)
      return out;
    }, {check: zerosOf([2, 3, 8])}] as [string, () => unknown, Outcome]),
  ['a huge numHeads with headDim', () => new MultiHeadAttention({numHeads: 1e9, headDim: 4}).apply(r([1, 2, 8])),
    {code: 'INVALID_CONFIG', message: /MultiHeadAttention's weight 'query\/kernel' of shape \[8, 1000000000, 4\] would hold .* GiB/}],
  ['a huge numFeatures', () => new LinearAttention({numHeads: 2, numFeatures: 1e9, seed: 1}).apply(r([1, 2, 8])),
    {code: 'INVALID_CONFIG', message: /LinearAttention's weight 'projection' of shape \[1000000000, 4\] would hold/}],
  ['a causal mask one tensor cannot hold', () => causalMask(70000, 70000),
    {code: 'UNSUPPORTED', message: /causalMask would form a \[T, S\] mask of shape \[70000, 70000\]/}],
  ['causalMask with alignment false', () => causalMask(3, 3, false as never),
    {code: 'INVALID_CONFIG', message: /alignment must be one of 'top-left', 'bottom-right'/}],
  ['setWeights with int32 tensors', () => {
    const layer = new MultiHeadAttention({numHeads: 2});
    tf.dispose(layer.apply(r([1, 3, 4])) as tf.Tensor);
    layer.setWeights(layer.getWeights().map((w) => tf.zeros(w.shape, 'int32')));
  }, {code: 'INVALID_CONFIG', message: /weight 0 \('query\/kernel'\) must be float32, received dtype int32/}],
  ['a propagated mask that is not a tensor', () => new MultiHeadAttention({numHeads: 2}).apply(r([1, 3, 4]),
    {mask: 'abc' as never}), {code: 'INVALID_MASK', message: /the query padding mask must be a tf.Tensor, received 'abc'/}],
  ['a huge numHeads without headDim', () => new MultiHeadAttention({numHeads: 2 ** 40}).apply(r([1, 2, 8])),
    {code: 'INVALID_CONFIG', message: /not divisible by numHeads/}],
  ['attention weights one tensor cannot hold', () => scaledDotProductAttention(r([1, 1, 50000, 2]), r([1, 1, 50000, 2]),
    r([1, 1, 50000, 2])), {code: 'UNSUPPORTED', message: /\[B, H, T, S\] attention weights of shape \[1, 1, 50000, 50000\]/}],
  ['a dense mask of T = 100000', () => SparseMask.localWindow(100000, 2),
    {code: 'UNSUPPORTED', message: /a \[T, T\] mask of T=100000 .* use LocalGlobalAttention or LinearAttention/}],
  ...(['sdpa', 'flash', 'linear', 'local-global'] as const).flatMap((op) => {
    const call = (q: unknown, k: unknown, v: unknown) => {
      const [a, b, c] = [q, k, v] as tf.Tensor[];
      if (op === 'sdpa') return scaledDotProductAttention(a, b, c);
      if (op === 'flash') return flashAttention(a, b, c);
      if (op === 'linear') return linearAttention(a, b, c, {projection: proj()});
      return localGlobalAttention(a, b, c, {windowSize: 1, gate: gate()});
    };
    return [
      [`${op} with q = null`, () => call(null, r([1, 1, 3, 4]), r([1, 1, 3, 4])),
        {code: 'INVALID_CONFIG', message: /^q must be a tf.Tensor, received null$/}],
      [`${op} with an array for k`, () => call(r([1, 2, 3, 4]), [[1]], r([1, 1, 3, 4])),
        {code: 'INVALID_CONFIG', message: /^k must be a tf.Tensor, received \[\[1\]\]$/}],
      [`${op} with D = 0`, () => call(r([1, 2, 3, 0]), r([1, 1, 3, 0]), r([1, 1, 3, 4])),
        {code: 'DIMENSION_MISMATCH', message: /the head dim of q and k \(their last dim\) must be at least 1, received 0/}],
      [`${op} with int32 q`, () => call(tf.zeros([1, 2, 3, 4], 'int32'), r([1, 1, 3, 4]), r([1, 1, 3, 4])),
        {code: 'INVALID_CONFIG', message: /q must be float32, received dtype int32/}],
    ] as [string, () => unknown, Outcome][];
  }),
  ['a layer called with null', () => new FlashAttention({numHeads: 2}).apply(null as never),
    {code: 'INVALID_CONFIG', message: /takes x, \[query, value\] or \[query, value, key\]/}],
  ['a layer called on int32 tensors', () => new MultiHeadAttention({numHeads: 2}).apply(tf.zeros([1, 3, 4], 'int32')),
    {code: 'INVALID_CONFIG', message: /query must be float32, received dtype int32/}],
  // The one that corrupted the wasm heap: a window longer than the sequence is clamped to it.
  ['a local-global window of 3000 on 5 tokens', () => bigWindow(5, 3000), {check: (o) => expect(tensorOf(o).shape).toEqual([2, 5, 8])}],
  ['a local-global window of 1e5 on 10 tokens', () => bigWindow(10, 1e5), {check: (o) => expect(tensorOf(o).shape).toEqual([2, 10, 8])}],
  ['a local-global window of 1e7 on 1 token', () => bigWindow(1, 1e7), {check: (o) => expect(tensorOf(o).shape).toEqual([2, 1, 8])}],
  ['a local-global blockSize of 1e6 on 7 tokens', () => localGlobalAttention(r([1, 2, 7, 4]), r([1, 2, 7, 4]), r([1, 2, 7, 4]),
    {windowSize: 3, blockSize: 1e6, gate: gate()}), {check: (o) => {
    const same = localGlobalAttention(r([1, 2, 7, 4]), r([1, 2, 7, 4]), r([1, 2, 7, 4]),
      {windowSize: 3, blockSize: 7, gate: gate()});
    expect(maxDiff(tensorOf(o), same)).toBeLessThanOrEqual(1e-6);
  }}],
];

describe(title('bad inputs'), () => {
  // A fixed computation whose result must not change after any case below.
  let canary: () => tf.Tensor;
  let expected: Float32Array;
  beforeAll(() => {
    const layer = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, causal: true});
    const x = randn([2, 6, 8], 42);
    tf.dispose(layer.apply(x) as tf.Tensor);
    layer.setWeights(layer.weights.map((w, i) => randn(w.shape as number[], 100 + i, 0.3)));
    canary = () => tf.tidy(() => tf.concat([
      tf.reshape(layer.apply(x) as tf.Tensor, [-1]),
      tf.reshape(tf.grads((a: tf.Tensor) => tf.sum(layer.apply(a) as tf.Tensor))([x])[0], [-1])]));
    const c = canary();
    expected = c.dataSync() as Float32Array;
    c.dispose();
  });

  test.each(CASES)('%s', (_name, run, outcome) => {
    tf.tidy(() => {
      let result: unknown;
      let error: unknown = null;
      try {
        result = run();
      } catch (e) {
        error = e;
      }
      if ('code' in outcome) {
        expect(error).toBeInstanceOf(AttentionError);
        expect((error as AttentionError).code).toBe(outcome.code);
        expect((error as Error).message).toMatch(outcome.message);
      } else {
        if (error != null) throw error;
        outcome.check(result);
      }
    });
    const c = canary();
    expect(Array.from(c.dataSync())).toEqual(Array.from(expected));
    c.dispose();
  });

  test('train --attention local-global --window 10000000 trains (the window is clamped), exit 0', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-window-'));
    let out = '';
    let err = '';
    const io = {stdout: {write: (s: string) => (out += s)}, stderr: {write: (s: string) => (err += s)}};
    const code = await main(['train', '--attention', 'local-global', '--window', '10000000', '--length', '3', '--vocab-size', '5',
      '--model-dim', '8', '--heads', '2', '--layers', '1', '--steps', '2', '--batch-size', '2', '--eval-batches', '1',
      '--quiet', '--backend', tf.getBackend(), '--out', path.join(dir, 'm')], io);
    fs.rmSync(dir, {recursive: true, force: true});
    expect([code, err.split('\n').filter((l) => l.startsWith('error'))]).toEqual([0, []]);
    expect(out).toMatch(/^trained local-global on reverse/);
    const c = canary();
    expect(Array.from(c.dataSync())).toEqual(Array.from(expected));
    c.dispose();
  });
});
