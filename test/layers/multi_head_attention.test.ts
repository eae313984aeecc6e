// MultiHeadAttention layer: equality with the naive reference (forward and gradients
// for inputs and every weight), weights, masks, sequential/functional graphs, errors.
import * as tf from '@tensorflow/tfjs';
import {AttentionError, MultiHeadAttention} from '../../src';
import {expectClose, expectError, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

/** Per-head plain projection: x [B, T, E] and kernel [E, N, X] -> [B, N, T, X], one 2-D product per head. */
function refProject(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor {
  const [B, T, E] = x.shape as number[];
  const [, N, X] = kernel.shape as number[];
  const heads: tf.Tensor[] = [];
  for (let n = 0; n < N; n++) {
    const w = tf.reshape(tf.slice(kernel, [0, n, 0], [E, 1, X]), [E, X]);
    let y = tf.matMul(tf.reshape(x, [B * T, E]), w);
    if (bias != null) y = tf.add(y, tf.reshape(tf.slice(bias, [n, 0], [1, X]), [X]));
    heads.push(tf.reshape(y, [B, T, X]));
  }
  return tf.stack(heads, 1);
}

/** o [B, H, T, Dv], kernel [H, Dv, E] -> sum over heads of o_h W_h + bias. */
function refOutput(o: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null): tf.Tensor {
  const [B, H, T, Dv] = o.shape as number[];
  const E = kernel.shape[2] as number;
  let y: tf.Tensor = tf.zeros([B * T, E]);
  for (let h = 0; h < H; h++) {
    const oh = tf.reshape(tf.slice(o, [0, h, 0, 0], [B, 1, T, Dv]), [B * T, Dv]);
    const w = tf.reshape(tf.slice(kernel, [h, 0, 0], [1, Dv, E]), [Dv, E]);
    y = tf.add(y, tf.matMul(oh, w));
  }
  if (bias != null) y = tf.add(y, bias);
  return tf.reshape(y, [B, T, E]);
}

/** The layer computed by hand from its weights (given in getWeights() order). */
function refLayer(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor, w: tf.Tensor[], useBias: boolean,
                  opts: {mask?: tf.Tensor; causal?: boolean}): tf.Tensor {
  const [qk, qb, kk, kb, vk, vb, ok, ob] = useBias ? w : [w[0], null, w[1], null, w[2], null, w[3], null];
  const q = refProject(query, qk!, qb);
  const k = refProject(key, kk!, kb);
  const v = refProject(value, vk!, vb);
  return refOutput(referenceAttention(q, k, v, opts), ok!, ob);
}

interface Case {
  name: string; H: number; G: number; T: number; S: number; E: number; headDim?: number;
  cross?: 'value' | 'key'; causal?: boolean; padding?: boolean; useBias?: boolean;
  /** Also mask every key of query 0 in batch 0. */
  fullRow?: boolean;
}

const cases: Case[] = [
  {name: 'MHA self T=7', H: 2, G: 2, T: 7, S: 7, E: 8},
  {name: 'MQA self T=1', H: 3, G: 1, T: 1, S: 1, E: 6},
  {name: 'GQA cross T=7 S=5 D=12 causal', H: 4, G: 2, T: 7, S: 5, E: 8, headDim: 12, cross: 'value', causal: true},
  {name: 'GQA [q, v, k] T=5 S=9 padding', H: 4, G: 2, T: 5, S: 9, E: 8, cross: 'key', padding: true},
  {name: 'MHA self T=7 causal x padding, fully masked row, no bias', H: 2, G: 2, T: 7, S: 7, E: 8, causal: true,
    padding: true, fullRow: true, useBias: false},
  {name: 'GQA self T=97 causal', H: 4, G: 2, T: 97, S: 97, E: 8, causal: true},
];

describe(title('MultiHeadAttention'), () => {
  for (const c of cases) {
    test(`layer == reference, forward and gradients (${c.name})`, () => {
      const B = 2;
      const layer = new MultiHeadAttention({numHeads: c.H, numKvHeads: c.G, headDim: c.headDim,
        causal: c.causal, useBias: c.useBias ?? true,
        biasInitializer: 'randomNormal'}); // non-zero biases so they are checked too
      const query = randn([B, c.T, c.E], 1);
      const value = c.cross ? randn([B, c.S, c.E + 2], 2) : query;
      const key = c.cross === 'key' ? randn([B, c.S, c.E - 2], 3) : value;
      const inputs = c.cross === 'key' ? [query, value, key] : c.cross === 'value' ? [query, value] : query;
      // Key padding: the last two keys of batch 1 are padding.
      const maskData = Array.from({length: B}, (_, b) =>
        Array.from({length: c.S}, (_, j) => (b === 1 && j >= c.S - 2 ? 0 : 1)));
      const attentionMask = c.padding ? tf.tensor3d(maskData.map((row, b) => Array.from({length: c.T},
        (_, i) => (c.fullRow && b === 0 && i === 0 ? row.map(() => 0) : row)))) : undefined;
      layer.apply(inputs, {attentionMask}); // build
      const weights = layer.trainableWeights.map((w) => w.read());
      const cot = randn([B, c.T, c.E], 4);

      const out = layer.apply(inputs, {attentionMask}) as tf.Tensor;
      const ref = refLayer(query, value, key, weights, c.useBias ?? true, {mask: attentionMask, causal: c.causal});
      expectClose(out, ref);

      // Gradients for every weight: through the layer's variables, and for the reference
      // through the same values passed as arguments.
      const {grads} = tf.variableGrads(
        () => tf.sum(tf.mul(layer.apply(inputs, {attentionMask}) as tf.Tensor, cot)) as tf.Scalar,
        layer.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val));
      const refGrads = tf.grads((...w: tf.Tensor[]) =>
        tf.sum(tf.mul(refLayer(query, value, key, w, c.useBias ?? true,
          {mask: attentionMask, causal: c.causal}), cot)))(weights);
      // The key bias shifts every logit of a query row by the same q.b, which softmax
      // ignores: its true gradient is zero, so both sides must be float noise around 0.
      const scale = Math.max(...refGrads.map((g) => tf.max(tf.abs(g)).dataSync()[0]));
      layer.trainableWeights.forEach((w, i) => {
        const g = grads[(w as unknown as {val: tf.Variable}).val.name];
        expect(g).toBeDefined();
        if (/key\/bias(_\d+)?$/.test(w.name)) {
          expect(tf.max(tf.abs(g)).dataSync()[0]).toBeLessThan(1e-5 * scale);
          expect(tf.max(tf.abs(refGrads[i])).dataSync()[0]).toBeLessThan(1e-5 * scale);
        } else {
          expectClose(g, refGrads[i]);
        }
      });

      // Gradients for the inputs.
      const xs = c.cross === 'key' ? [query, value, key] : c.cross === 'value' ? [query, value] : [query];
      const layerIn = (...x: tf.Tensor[]) =>
        tf.sum(tf.mul(layer.apply(x.length === 1 ? x[0] : x, {attentionMask}) as tf.Tensor, cot));
      const refIn = (...x: tf.Tensor[]) => {
        const [qq, vv = qq, kk = vv] = x;
        return tf.sum(tf.mul(refLayer(qq, vv, kk, weights, c.useBias ?? true,
          {mask: attentionMask, causal: c.causal}), cot));
      };
      const gl = tf.grads(layerIn)(xs);
      const gr = tf.grads(refIn)(xs);
      gl.forEach((g, i) => expectClose(g, gr[i]));
      tf.dispose([query, value, key, cot, out, ref, gl, gr, refGrads, Object.values(grads)]);
      if (attentionMask) attentionMask.dispose();
      layer.dispose();
    });
  }

  test('weights: names, shapes and order follow the Keras layout (GQA, valueDim, outputDim)', () => {
    const layer = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, headDim: 3, valueDim: 5, outputDim: 7, name: 'att'});
    const q = tf.zeros([1, 2, 8]);
    const v = tf.zeros([1, 3, 6]);
    const k = tf.zeros([1, 3, 10]);
    const out = layer.apply([q, v, k]) as tf.Tensor;
    expect(out.shape).toEqual([1, 2, 7]);
    expect(layer.weights.map((w) => [w.name, w.shape])).toEqual([
      ['att/query/kernel', [8, 4, 3]], ['att/query/bias', [4, 3]],
      ['att/key/kernel', [10, 2, 3]], ['att/key/bias', [2, 3]],
      ['att/value/kernel', [6, 2, 5]], ['att/value/bias', [2, 5]],
      ['att/attention_output/kernel', [4, 5, 7]], ['att/attention_output/bias', [7]],
    ]);
    const noBias = new MultiHeadAttention({numHeads: 2, useBias: false});
    noBias.apply(q);
    expect(noBias.weights.map((w) => w.name.split('/').slice(1).join('/')))
      .toEqual(['query/kernel', 'key/kernel', 'value/kernel', 'attention_output/kernel']);
    tf.dispose([q, v, k, out]);
    layer.dispose();
    noBias.dispose();
  });

  test('setWeights with Keras-layout arrays gives the reference output', () => {
    const layer = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4});
    const x = randn([1, 3, 6], 5);
    layer.apply(x);
    const w = [randn([6, 2, 4], 6), randn([2, 4], 7), randn([6, 1, 4], 8), randn([1, 4], 9),
      randn([6, 1, 4], 10), randn([1, 4], 11), randn([2, 4, 6], 12), randn([6], 13)];
    layer.setWeights(w);
    expectClose(layer.apply(x) as tf.Tensor, refLayer(x, x, x, w, true, {}));
    tf.dispose([x, ...w]);
    layer.dispose();
  });

  test('returnAttentionScores gives [output, scores [B, H, T, S]] with rows summing to 1 (or 0 when masked)', () => {
    const layer = new MultiHeadAttention({numHeads: 2, causal: true});
    const q = randn([2, 4, 8], 1);
    const v = randn([2, 6, 8], 2);
    const keyMask = tf.tensor3d([[[1, 1, 1, 1, 1, 1]], [[0, 0, 0, 1, 1, 1]]]); // [B, 1, S]: batch 1 sees keys 3..5 only
    const [out, scores] = layer.apply([q, v], {returnAttentionScores: true, attentionMask: keyMask}) as tf.Tensor[];
    expect(out.shape).toEqual([2, 4, 8]);
    expect(scores.shape).toEqual([2, 2, 4, 6]);
    const sums = tf.sum(scores, -1).arraySync() as number[][][];
    // Bottom-right causal with T=4, S=6: query i sees keys j <= i + 2. Batch 1, query 0 sees keys 0..2, all padded.
    expect(sums[0][0].every((s) => Math.abs(s - 1) < 1e-5)).toBe(true);
    expect(sums[1][0][0]).toBe(0);
    expect(sums[1][1].slice(1).every((s) => Math.abs(s - 1) < 1e-5)).toBe(true);
    const s = scores.arraySync() as number[][][][];
    expect(s[0][0][0][3]).toBe(0); // causal: query 0 cannot see key 3
    tf.dispose([q, v, keyMask, out, scores]);
    layer.dispose();
  });

  test('a fully masked query row gives the output bias only, without NaN', () => {
    const layer = new MultiHeadAttention({numHeads: 2, biasInitializer: 'ones'});
    const x = randn([1, 3, 4], 1);
    const mask = tf.tensor3d([[[0, 0, 0], [1, 1, 0], [1, 1, 1]]]);
    const out = layer.apply(x, {attentionMask: mask}) as tf.Tensor;
    const rows = out.arraySync() as number[][][];
    expect(rows[0][0]).toEqual([1, 1, 1, 1]);
    expect(rows.flat(2).every(Number.isFinite)).toBe(true);
    tf.dispose([x, mask, out]);
    layer.dispose();
  });

  test('propagated padding mask (embedding maskZero) keeps padded keys out, in a functional model', () => {
    const ids = tf.input({shape: [5], dtype: 'int32'});
    const emb = tf.layers.embedding({inputDim: 10, outputDim: 8, maskZero: true, name: 'emb'});
    const att = new MultiHeadAttention({numHeads: 2, name: 'att'});
    const out = att.apply(emb.apply(ids)) as tf.SymbolicTensor;
    const model = tf.model({inputs: ids, outputs: out});
    // Same tokens, different padding content must not change the non-padded outputs,
    // and equals the layer called with an explicit key-padding mask.
    const a = tf.tensor2d([[3, 4, 5, 0, 0]], undefined, 'int32');
    const ya = model.predict(a) as tf.Tensor;
    const x = emb.apply(a) as tf.Tensor;
    const keyMask = tf.tensor3d([[[1, 1, 1, 0, 0]]]);
    const queryMask = tf.tensor3d([[[1], [1], [1], [0], [0]]]);
    const explicit = att.apply(x, {attentionMask: tf.mul(keyMask, queryMask)}) as tf.Tensor;
    expectClose(ya, explicit, 1e-5);
    // Eager calls propagate masks too (x.kerasMask), so strip it to see the unmasked output.
    const bare = tf.clone(x);
    const unmasked = att.apply(bare) as tf.Tensor;
    expect(tf.max(tf.abs(tf.sub(ya, unmasked))).dataSync()[0]).toBeGreaterThan(1e-4);
    tf.dispose([a, ya, x, bare, keyMask, queryMask, explicit, unmasked]);
    model.dispose();
  });

  test('works in tf.sequential with computeOutputShape', () => {
    const model = tf.sequential({layers: [
      new MultiHeadAttention({numHeads: 2, numKvHeads: 1, outputDim: 6, inputShape: [5, 4]}),
      tf.layers.dense({units: 3}),
    ]});
    expect(model.outputs[0].shape).toEqual([null, 5, 3]);
    const x = randn([2, 5, 4], 1);
    const y = model.predict(x) as tf.Tensor;
    expect(y.shape).toEqual([2, 5, 3]);
    tf.dispose([x, y]);
    model.dispose();
  });

  test('computeOutputShape for x, [q, v], [q, v, k] and with scores', () => {
    const layer = new MultiHeadAttention({numHeads: 2, outputDim: 5});
    const q = tf.input({shape: [4, 6]});
    const v = tf.input({shape: [7, 3]});
    const k = tf.input({shape: [7, 2]});
    expect((layer.apply(q) as tf.SymbolicTensor).shape).toEqual([null, 4, 5]);
    expect((new MultiHeadAttention({numHeads: 2}).apply([q, v]) as tf.SymbolicTensor).shape).toEqual([null, 4, 6]);
    const withScores = new MultiHeadAttention({numHeads: 3, headDim: 2})
      .apply([q, v, k], {returnAttentionScores: true}) as tf.SymbolicTensor[];
    expect(withScores.map((s) => s.shape)).toEqual([[null, 4, 6], [null, 3, 4, 7]]);
  });

  describe('errors', () => {
    const config = (args: object) => () => new MultiHeadAttention(args as never);
    test.each([
      [{numHeads: 0}, /numHeads must be a positive integer, received 0/],
      [{numHeads: 2.5}, /numHeads must be a positive integer, received 2\.5/],
      [{numHeads: 8, numKvHeads: 3}, /numHeads \(8\) must be divisible by numKvHeads \(3\)/],
      [{numHeads: 2, dropout: 1}, /dropout must be a number in \[0, 1\), received 1/],
      [{numHeads: 2, dropout: -0.1}, /dropout must be a number in \[0, 1\), received -0\.1/],
      [{numHeads: 2, headDim: 0}, /headDim must be a positive integer, received 0/],
      [{numHeads: 2, valueDim: -3}, /valueDim must be a positive integer, received -3/],
      [{numHeads: 2, outputDim: 1.5}, /outputDim must be a positive integer, received 1\.5/],
      [{numHeads: 2, implementation: 'fast'}, /implementation must be one of 'standard', 'flash', 'auto', received 'fast'/],
      [{numHeads: 2, kernelInitializer: 'nope'}, /initializer must be one of .*received 'nope'/],
    ])('constructor rejects %j', (args, message) => {
      expect(config(args)).toThrow(AttentionError);
      expect(config(args)).toThrow(message);
      try { config(args)(); } catch (e) { expect((e as AttentionError).code).toBe('INVALID_CONFIG'); }
    });

    test('build rejects a query dim not divisible by numHeads without headDim', () => {
      const x = tf.zeros([1, 2, 10]);
      expectError(() => new MultiHeadAttention({numHeads: 4}).apply(x), 'INVALID_CONFIG',
        /query's last dim \(10\) is not divisible by numHeads \(4\); pass headDim/);
      x.dispose();
    });

    test('call rejects bad inputs and masks', () => {
      const layer = new MultiHeadAttention({numHeads: 2});
      const q = tf.zeros([2, 3, 4]);
      tf.dispose(layer.apply([q, q]) as tf.Tensor);
      const v1 = tf.zeros([1, 3, 4]);
      const k5 = tf.zeros([2, 5, 4]);
      const q6 = tf.zeros([2, 3, 6]);
      expectError(() => layer.apply([q, v1]), 'DIMENSION_MISMATCH', /batch size, received 2, 1 and 1/);
      expectError(() => layer.apply([q, q, k5]), 'DIMENSION_MISMATCH', /key and value must have the same length, received 5 and 3/);
      expectError(() => layer.apply([q6, q]), 'DIMENSION_MISMATCH', /query's last dim \(6\) differs from the one the layer was built with \(4\)/);
      const badMask = tf.ones([2, 3, 4]);
      expectError(() => layer.apply([q, q], {attentionMask: badMask}), 'INVALID_MASK',
        /attentionMask of shape \[2, 3, 4\] is not broadcastable to \[B, H, T, S\] = \[2, 2, 3, 3\]/);
      const badPadding = tf.ones([2, 4]);
      expectError(() => layer.call([q, q], {mask: [badPadding, null]}), 'INVALID_MASK',
        /query padding mask must have shape \[2, 3\], received \[2, 4\]/);
      tf.dispose([q, v1, k5, q6, badMask, badPadding]);
      layer.dispose();
    });
  });
});
