// Every op and layer must give the same results whether its products are split into
// 2-D non-transposed ones (the wasm fast path, forced here with setMatMulPath('split'))
// or left to tf.matMul ('batched'), forward and gradients, on both backends. With the
// reference tests of each op (which run the 'auto' path: split on wasm, batched on cpu)
// this ties both paths to the reference.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {MultiHeadAttention} from '../../src/layers/multi_head_attention';
import {LinearAttention} from '../../src/layers/linear_attention';
import {FlashAttention} from '../../src/layers/flash_attention';
import {LocalGlobalAttention} from '../../src/layers/local_global_attention';
import {flashAttention} from '../../src/ops/flash';
import {linearAttention} from '../../src/ops/linear';
import {localGlobalAttention} from '../../src/ops/local_global';
import {MatMulPath, setMatMulPath} from '../../src/ops/matmul';
import {orthogonalProjection} from '../../src/ops/random_features';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {expectClose, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';

type Op = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor;

/** Output and d/d(q, k, v) of sum(op * dy) under a product path. */
function run(path: MatMulPath, op: Op, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, dy: tf.Tensor): tf.Tensor[] {
  const previous = setMatMulPath(path);
  try {
    return tf.tidy(() => [op(q, k, v), ...tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
      tf.sum(tf.mul(op(a, b, c), dy)))([q, k, v])]);
  } finally {
    setMatMulPath(previous);
  }
}

/** q [B, H, T, D], k and v [B, G, S, D], dy [B, H, T, D]. */
function inputs(B: number, H: number, G: number, T: number, S: number, D: number, seed: number): tf.Tensor[] {
  return [[B, H, T, D], [B, G, S, D], [B, G, S, D], [B, H, T, D]].map((s, i) => randn(s, seed + i));
}

function expectSamePaths(op: Op, dims: [number, number, number, number, number, number], seed: number): void {
  const [q, k, v, dy] = inputs(...dims, seed);
  const batched = run('batched', op, q, k, v, dy);
  expectNoLeaks(() => {
    const split = run('split', op, q, k, v, dy);
    split.forEach((t, i) => expectClose(t, batched[i], 1e-4));
    tf.dispose(split);
  });
  tf.dispose([q, k, v, dy, ...batched]);
}

describe(title('split products == tf.matMul products'), () => {
  const keyPadding = () => tf.tensor4d([1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], [2, 1, 1, 7], 'bool');

  test('sdpa: MHA, GQA and MQA, T != S', () => {
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v), [2, 4, 4, 5, 7, 8], 1);
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v), [2, 4, 2, 5, 7, 8], 2);
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v), [1, 3, 1, 6, 4, 5], 3);
  });

  test('sdpa: causal, key padding, a [B, H, T, S] mask, rows with no visible key', () => {
    const padding = keyPadding();
    // A [B, H, T, S] mask that differs per head and query, where row (b=0, h=1, t=2) sees no key at all.
    const values = Array.from({length: 2 * 4 * 5 * 7}, (_, i) => {
      const [b, h, t] = [Math.floor(i / 140), Math.floor(i / 35) % 4, Math.floor(i / 7) % 5];
      return b === 0 && h === 1 && t === 2 ? 0 : (i * 37) % 11 < 8 ? 1 : 0;
    });
    const full = tf.tensor4d(values, [2, 4, 5, 7], 'bool');
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v, {causal: true}), [2, 4, 2, 5, 7, 8], 4);
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v, {mask: padding}), [2, 4, 2, 5, 7, 8], 5);
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v, {mask: full, causal: true}), [2, 4, 2, 5, 7, 8], 6);
    tf.dispose([padding, full]);
  });

  test('sdpa: the fast path also serves returnWeights and dropout callers (general path, split products)', () => {
    expectSamePaths((q, k, v) => {
      const {output, weights} = scaledDotProductAttention(q, k, v, {returnWeights: true});
      return tf.add(output, tf.sum(tf.square(weights), -1, true)); // the weights' gradients flow too
    }, [1, 4, 2, 5, 7, 8], 7);
    expectSamePaths((q, k, v) => scaledDotProductAttention(q, k, v, {dropout: 0.5, training: true, seed: 3}),
      [1, 2, 2, 6, 6, 4], 8);
  });

  test('flash: GQA, causal, masked, tiles that do not divide T', () => {
    const padding = keyPadding();
    expectSamePaths((q, k, v) => flashAttention(q, k, v, {blockSize: 3}), [2, 4, 2, 5, 7, 8], 10);
    expectSamePaths((q, k, v) => flashAttention(q, k, v, {blockSize: 4, causal: true, mask: padding}),
      [2, 4, 2, 5, 7, 8], 11);
    tf.dispose(padding);
  });

  test('linear: non-causal and causal (chunks of 3 over T = 7), GQA, key padding', () => {
    const projection = orthogonalProjection(12, 8, 0);
    const padding = keyPadding();
    expectSamePaths((q, k, v) => linearAttention(q, k, v, {projection, mask: padding}), [2, 4, 2, 5, 7, 8], 20);
    expectSamePaths((q, k, v) => linearAttention(q, k, v, {projection, causal: true, chunkSize: 3}),
      [2, 4, 2, 7, 7, 8], 21);
    tf.dispose([projection, padding]);
  });

  test('local-global: window, globals, causal, GQA', () => {
    const gate = randn([4, 8], 30);
    expectSamePaths((q, k, v) => localGlobalAttention(q, k, v, {windowSize: 3, globalIndices: [0, 9], gate}),
      [2, 4, 2, 20, 20, 8], 31);
    expectSamePaths((q, k, v) => localGlobalAttention(q, k, v, {windowSize: 5, globalIndices: [2], gate, causal: true}),
      [1, 4, 4, 20, 20, 8], 32);
    gate.dispose();
  });

  test('layers: MultiHeadAttention (GQA, standard and flash), FlashAttention, LinearAttention and LocalGlobalAttention, gradients for input and weights', () => {
    const x = randn([2, 6, 16], 40);
    const layers = [
      new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true}),
      new MultiHeadAttention({numHeads: 4, implementation: 'flash'}),
      new FlashAttention({numHeads: 4, numKvHeads: 2, causal: true, blockSize: 4}),
      new LinearAttention({numHeads: 2, seed: 1}),
      new LocalGlobalAttention({numHeads: 4, numKvHeads: 2, windowSize: 2, globalIndices: [0]}),
    ];
    for (const layer of layers) {
      layer.apply(x); // builds
      const pass = (path: MatMulPath) => {
        const previous = setMatMulPath(path);
        try {
          return tf.tidy(() => {
            const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
            const {value, grads} = tf.variableGrads(() => tf.sum(tf.square(layer.apply(x) as tf.Tensor)), weights);
            return [value, ...weights.map((w) => grads[w.name]),
              ...tf.grads((a: tf.Tensor) => tf.sum(tf.square(layer.apply(a) as tf.Tensor)))([x])];
          });
        } finally {
          setMatMulPath(previous);
        }
      };
      const a = pass('batched');
      const b = pass('split');
      // The key bias's gradient is zero in exact arithmetic (softmax ignores a constant
      // per query), so both paths give float noise around 1e-8 there: errors are taken
      // relative to max(1, the tensor's largest entry).
      b.forEach((t, i) => {
        const scale = Math.max(1, tf.tidy(() => tf.max(tf.abs(a[i])).dataSync()[0]));
        expect(t.shape).toEqual(a[i].shape);
        expect(maxDiff(t, a[i]) / scale).toBeLessThan(1e-4);
      });
      tf.dispose([...a, ...b]);
      layer.dispose();
    }
    x.dispose();
  });
});
