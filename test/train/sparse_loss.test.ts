// The trainer's loss: cross-entropy from the head's logits (logsumexp minus the target's
// logit), equal to the mean -log p of the softmax probabilities, with the same gradients,
// for buildTransformer's and the graph networks' heads; other models keep the probabilities.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {buildTransformer} from '../../src/train/model';
import {buildGraphNetwork} from '../../src/train/graph_network';
import {logitsOf, maskedLoss, sparseCrossEntropy} from '../../src/train/losses';
import {title} from '../support/helpers';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol: number) => {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-3 + Math.abs(b[i])));
  expect(worst).toBeLessThanOrEqual(tol);
};

describe(title('sparse cross-entropy from logits'), () => {
  test('equals maskedLoss of softmax(logits), gradients too; unscored positions (weight 0, any target) count nothing', () => {
    const [n, L, V] = [2, 3, 5];
    const logits = tf.randomNormal([n, L, V], 0, 3, 'float32', 1);
    const batch = {inputs: new Int32Array(n * L), targets: Int32Array.from([0, 4, 2, -1, 3, 1]),
      weights: Float32Array.from([1, 1, 0.5, 0, 1, 1]), n, L};
    const ours = tf.tidy(() => sparseCrossEntropy(logits, batch, V).dataSync()[0]);
    const theirs = tf.tidy(() => maskedLoss(tf.softmax(logits), batch, V).dataSync()[0]);
    expect(Math.abs(ours - theirs)).toBeLessThan(1e-5);
    const [g1] = tf.grads((z: tf.Tensor) => sparseCrossEntropy(z, batch, V))([logits]);
    const [g2] = tf.grads((z: tf.Tensor) => maskedLoss(tf.softmax(z), batch, V))([logits]);
    close(g1.dataSync(), g2.dataSync(), 1e-3);
    // Position 3 (weight 0) has no gradient at all.
    expect(Array.from(g1.slice([1, 0, 0], [1, 1, V]).dataSync()).every((x) => x === 0)).toBe(true);
    tf.dispose([logits, g1, g2]);
  });

  test('logitsOf: softmax of the logits is the model\'s output, for a transformer and a graph network', () => {
    const transformer = buildTransformer({attention: 'mha', vocabSize: 7, seqLength: 4, modelDim: 8, numHeads: 2,
      numLayers: 1, seed: 3});
    const tokens = tf.tensor2d([[1, 2, 3, 4], [4, 3, 2, 1]], [2, 4], 'int32');
    const graph = buildGraphNetwork({attention: 'graph', vocabSize: 6, seqLength: 5, edgesPerExample: 4, modelDim: 8,
      numHeads: 2, numLayers: 1});
    const edges = tf.tensor3d([[[0, 1], [1, 2], [2, 3], [3, 4]]], [1, 4, 2], 'int32');
    for (const [model, x] of [[transformer, tokens], [graph, [tf.tensor2d([[1, 2, 3, 4, 5]], [1, 5], 'int32'), edges]]] as
      [tf.LayersModel, tf.Tensor | tf.Tensor[]][]) {
      const logits = logitsOf(model);
      expect(logits).not.toBeNull();
      const viaLogits = tf.tidy(() => tf.softmax(logits!(x, false)).dataSync());
      const direct = tf.tidy(() => (model.apply(x) as tf.Tensor).dataSync());
      close(viaLogits, direct, 1e-4);
      model.dispose();
    }
    // A model whose output is not such a head: null.
    const input = tf.input({shape: [3]});
    const plain = tf.model({inputs: input, outputs: tf.layers.dense({units: 2, activation: 'softmax'}).apply(input) as
      tf.SymbolicTensor});
    expect(logitsOf(plain)).toBeNull();
    plain.dispose();
    tf.dispose([tokens, edges]);
  });
});
