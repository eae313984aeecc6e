// The LocalGlobalAttention layer: weights (the gate [H, Dv] last, zeros), the layer ==
// projections + localGlobalAttention, global indices (set, saved, validated), masks,
// save -> load, training (the gate included), no leaks, errors.
import * as tf from '@tensorflow/tfjs';
import {LocalGlobalAttention} from '../../src';
import {localGlobalAttention} from '../../src/ops/local_global';
import {expectClose, expectError, headsOf, maxDiff, randn, title} from '../support/helpers';

describe(title('LocalGlobalAttention layer'), () => {
  test('weights: the Keras projections, then the trainable gate [H, Dv] initialised to zeros; config', () => {
    const layer = new LocalGlobalAttention({numHeads: 4, numKvHeads: 2, headDim: 3, valueDim: 5, windowSize: 2,
      globalIndices: [0, 4], name: 'lg'});
    const x = tf.zeros([1, 6, 8]);
    const out = layer.apply(x) as tf.Tensor;
    expect(out.shape).toEqual([1, 6, 8]);
    expect(layer.weights.map((w) => [w.name, w.shape, w.trainable])).toEqual([
      ['lg/query/kernel', [8, 4, 3], true], ['lg/query/bias', [4, 3], true],
      ['lg/key/kernel', [8, 2, 3], true], ['lg/key/bias', [2, 3], true],
      ['lg/value/kernel', [8, 2, 5], true], ['lg/value/bias', [2, 5], true],
      ['lg/attention_output/kernel', [4, 5, 8], true], ['lg/attention_output/bias', [8], true],
      ['lg/gate', [4, 5], true],
    ]);
    expect(Array.from(layer.getWeights()[8].dataSync()).every((g) => g === 0)).toBe(true);
    expect(layer.getClassName()).toBe('LocalGlobalAttention');
    expect(layer.getConfig()).toMatchObject({numHeads: 4, windowSize: 2, globalIndices: [0, 4], blockSize: null});
    tf.dispose([x, out]);
    layer.dispose();
  });

  test('output == projections, then localGlobalAttention with the layer gate, then the output projection', () => {
    tf.tidy(() => {
      const layer = new LocalGlobalAttention({numHeads: 4, numKvHeads: 2, headDim: 6, windowSize: 3,
        globalIndices: [2, 9, 40], causal: true, biasInitializer: 'randomNormal'});
      const x = randn([2, 11, 8], 1);
      tf.dispose(layer.apply(x) as tf.Tensor);
      const weights = layer.getWeights();
      layer.setWeights([...weights.slice(0, 8), randn([4, 6], 2)]); // a gate that is not an even blend
      const out = layer.apply(x) as tf.Tensor;
      const [wq, bq, wk, bk, wv, bv, wo, bo, gate] = layer.getWeights();
      const o = localGlobalAttention(headsOf(x, wq, bq), headsOf(x, wk, bk), headsOf(x, wv, bv),
        {windowSize: 3, globalIndices: [2, 9, 40], gate, causal: true, blockSize: 5}); // [B, H, T, Dv]
      const want = tf.add(tf.reshape(tf.matMul(tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [22, 24]),
        tf.reshape(wo, [24, 8])), [2, 11, 8]), bo);
      expectClose(out, want, 1e-5);
    });
  });

  test('setGlobalIndices changes the output from the next call; bad indices throw and change nothing', () => {
    tf.tidy(() => {
      const layer = new LocalGlobalAttention({numHeads: 2, windowSize: 1, globalIndices: [0]});
      const x = randn([1, 8, 4], 1);
      const first = layer.apply(x) as tf.Tensor;
      expect(maxDiff(layer.apply(x) as tf.Tensor, first)).toBe(0);
      layer.setGlobalIndices([5, 6, 100]);
      expect(layer.globalIndices).toEqual([5, 6, 100]);
      const second = layer.apply(x) as tf.Tensor;
      expect(maxDiff(second, first)).toBeGreaterThan(1e-4);
      expectError(() => layer.setGlobalIndices([1, -1]), 'INVALID_CONFIG', /non-negative integers, received \[1, -1\]/);
      expectError(() => layer.setGlobalIndices([2.5]), 'INVALID_CONFIG', /non-negative integers, received \[2\.5\]/);
      expect(layer.globalIndices).toEqual([5, 6, 100]);
      expect(layer.getConfig().globalIndices).toEqual([5, 6, 100]);
      expect(maxDiff(layer.apply(x) as tf.Tensor, second)).toBe(0);
    });
  });

  describe('errors', () => {
    test.each([
      [{numHeads: 2, windowSize: 0}, /windowSize must be a positive integer, received 0/],
      [{numHeads: 2, windowSize: 2.5}, /windowSize must be a positive integer, received 2\.5/],
      [{numHeads: 2}, /windowSize must be a positive integer, received undefined/],
      [{numHeads: 2, windowSize: 2, globalIndices: [-1]}, /globalIndices must be an array of non-negative integers, received \[-1\]/],
      [{numHeads: 2, windowSize: 2, globalIndices: [1.5]}, /globalIndices must be an array of non-negative integers/],
      [{numHeads: 2, windowSize: 4, blockSize: 2}, /blockSize \(2\) must be at least windowSize \(4\)/],
    ])('constructor rejects %j with INVALID_CONFIG', (args, message) => {
      expectError(() => new LocalGlobalAttention(args as never), 'INVALID_CONFIG', message);
    });

    test('dropout > 0 and returnAttentionScores are UNSUPPORTED', () => {
      expectError(() => new LocalGlobalAttention({numHeads: 2, windowSize: 1, dropout: 0.1}), 'UNSUPPORTED',
        /LocalGlobalAttention does not support dropout \(received 0\.1\)/);
      const layer = new LocalGlobalAttention({numHeads: 2, windowSize: 1});
      const x = randn([1, 3, 4], 1);
      tf.dispose(layer.apply(x) as tf.Tensor);
      expectError(() => layer.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED', /cannot return attention scores/);
      expectError(() => new LocalGlobalAttention({numHeads: 2, windowSize: 1}).apply(tf.input({shape: [3, 4]}),
        {returnAttentionScores: true}), 'UNSUPPORTED', /cannot return attention scores/);
      x.dispose();
      layer.dispose();
    });

    test('cross-attention with different lengths is UNSUPPORTED', () => {
      const layer = new LocalGlobalAttention({numHeads: 2, windowSize: 1});
      expectError(() => layer.apply([randn([1, 3, 4], 1), randn([1, 5, 4], 2)]), 'UNSUPPORTED', /T=3 and S=5/);
      layer.dispose();
    });
  });
});
