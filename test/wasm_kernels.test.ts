// The kernels the library registers for the wasm backend (tfjs 4.22 lacks them).
import * as tf from '@tensorflow/tfjs';
import '../src';
import {unsortedSegmentSumValues} from '../src/wasm_kernels';
import {BACKEND, expectNoLeaks, title} from './helpers';

describe(title('wasm kernels'), () => {
  test('UnsortedSegmentSum is registered for wasm', () => {
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
  });

  test('unsortedSegmentSum equals a plain loop (float and int)', () => {
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
    const ids = tf.tensor1d([2, 0, 2, 1], 'int32');
    expect(tf.unsortedSegmentSum(x, ids, 3).arraySync()).toEqual([[3, 4], [7, 8], [6, 8]]);
    const xi = tf.tensor2d([[1], [2], [3], [4]], undefined, 'int32');
    const ids2 = tf.tensor1d([1, 1, 0, 1], 'int32');
    const want = new Int32Array(2);
    unsortedSegmentSumValues([1, 2, 3, 4], [1, 1, 0, 1], 2, 1, want);
    expect(Array.from(want)).toEqual([3, 7]);
    const got = tf.unsortedSegmentSum(xi, ids2, 2);
    expect(got.arraySync()).toEqual([[3], [7]]);
    tf.dispose([x, ids, xi, ids2, got]);
  });

  test(`gather's gradient (embedding rows used twice add up) on ${BACKEND}`, () => {
    const table = tf.tensor2d([[1, 1], [2, 2], [3, 3]]);
    const idx = tf.tensor1d([2, 0, 2], 'int32');
    expectNoLeaks(() => {
      const [g] = tf.grads((t: tf.Tensor) => tf.sum(tf.gather(t, idx)))([table]);
      expect(g.arraySync()).toEqual([[1, 1], [0, 0], [2, 2]]);
      g.dispose();
    });
    tf.dispose([table, idx]);
  });
});
