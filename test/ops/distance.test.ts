// distanceAttention: geometricAttention over radiusGraph's edges, forward and gradients alike;
// the radius and maxNeighbors decide who attends to whom; options checked; no leaks.
import * as tf from '@tensorflow/tfjs';
import {distanceAttention} from '../../src/ops/distance';
import {geometricAttention, GeometricWeights} from '../../src/ops/geometric';
import {radiusGraph} from '../../src/ops/neighbours';
import {expectClose, expectError, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';

const B = 2, N = 9, F = 3, C = 4, d = 3;

function weights(): GeometricWeights {
  return {kernel: randn([F, C], 1, 0.6), sourceKernel: randn([F, C], 2, 0.6), targetKernel: randn([F, C], 3, 0.6),
    positionKernels: [randn([d, C], 4, 0.6)], positionBiases: [randn([C], 5, 0.3)], bias: randn([C], 6, 0.3)};
}

describe(title('distanceAttention'), () => {
  test('== geometricAttention over radiusGraph(positions, r, {maxNeighbors}): output and every gradient', () => {
    const x = randn([B, N, F], 11);
    const p = randn([B, N, d], 12);
    const w = weights();
    const edges = radiusGraph(p, 1.2, {maxNeighbors: 3});
    expect(edges.shape[1]).toBeGreaterThan(0);
    const ours = distanceAttention(p, x, 1.2, w, {maxNeighbors: 3});
    const theirs = geometricAttention(x, p, edges, w);
    expectClose(ours, theirs, 0);
    const names = ['kernel', 'sourceKernel', 'targetKernel', 'bias'] as const;
    const inputs = [x, p, ...names.map((n) => w[n] as tf.Tensor), w.positionKernels[0]];
    const loss = (f: (xx: tf.Tensor, pp: tf.Tensor, ws: tf.Tensor[]) => tf.Tensor) =>
      tf.grads((xx: tf.Tensor, pp: tf.Tensor, k: tf.Tensor, s: tf.Tensor, t: tf.Tensor, b: tf.Tensor, pk: tf.Tensor) =>
        tf.sum(tf.square(f(xx, pp, [k, s, t, b, pk]))))(inputs);
    const asW = (ws: tf.Tensor[]): GeometricWeights => ({kernel: ws[0], sourceKernel: ws[1], targetKernel: ws[2],
      bias: ws[3], positionKernels: [ws[4]], positionBiases: w.positionBiases});
    const g1 = loss((xx, pp, ws) => distanceAttention(pp, xx, 1.2, asW(ws), {maxNeighbors: 3}));
    const g2 = loss((xx, pp, ws) => geometricAttention(xx, pp, edges, asW(ws)));
    g1.forEach((g, i) => expectClose(g, g2[i], 0));
    expect(maxDiff(g1[1], tf.zerosLike(g1[1]))).toBeGreaterThan(0); // positions do get a gradient
  });

  test('a radius that holds no neighbour leaves each point its self loop alone: x\'_i = W x_i + h(0) + bias', () => {
    const x = randn([1, 4, F], 21);
    const p = tf.tensor3d([[[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]]]);
    const w = weights();
    const out = distanceAttention(p, x, 1, w);
    const expected = tf.add(tf.add(tf.matMul(tf.reshape(x, [4, F]), w.kernel), w.positionBiases[0]), w.bias!);
    expectClose(tf.reshape(out, [4, C]), expected);
  });

  test('options: unknown names and bad radius or maxNeighbors are refused with codes; no leaks', () => {
    const x = randn([1, 4, F], 31);
    const p = randn([1, 4, d], 32);
    const w = weights();
    expectError(() => distanceAttention(p, x, 1, w, {maxNeighbours: 2} as never), 'INVALID_CONFIG', /maxNeighbors/);
    expectError(() => distanceAttention(p, x, -1, w), 'INVALID_CONFIG', /-1/);
    expectError(() => distanceAttention(p, x, 1, w, {maxNeighbors: 0}), 'INVALID_CONFIG', /maxNeighbors/);
    expectNoLeaks(() => {
      distanceAttention(p, x, 1, w, {addSelfLoops: false}).dispose();
      const r = distanceAttention(p, x, 2, w, {returnAttentionScores: true, loop: true});
      tf.dispose([r.output, r.scores]);
    });
  });
});
