// MultiHeadAttention inside models: training moves every weight, loss falls,
// save -> load round trips, graph-mode attention scores, no leaks over optimizer steps,
// and embedding + attention training with model.fit (the wasm kernel registration).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, MultiHeadAttention} from '../../src';
import {expectNoLeaks, randn, title} from '../support/helpers';

/** A functional model with a GQA self-attention and an MHA cross-attention layer. */
function twoAttentionModel(): tf.LayersModel {
  const x = tf.input({shape: [6, 8]});
  const ctx = tf.input({shape: [4, 5]});
  const self = new MultiHeadAttention({numHeads: 4, numKvHeads: 2, causal: true, name: 'gqa'}).apply(x) as tf.SymbolicTensor;
  const h = tf.layers.add().apply([x, self]) as tf.SymbolicTensor;
  const cross = new MultiHeadAttention({numHeads: 2, headDim: 3, outputDim: 8, name: 'mha'}).apply([h, ctx]) as tf.SymbolicTensor;
  const out = tf.layers.dense({units: 2}).apply(cross) as tf.SymbolicTensor;
  return tf.model({inputs: [x, ctx], outputs: out});
}

describe(title('MultiHeadAttention in models'), () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-')); });
  afterEach(() => fs.rmSync(dir, {recursive: true, force: true}));

  test('save -> load of a functional model with GQA and MHA layers gives equal outputs (1e-6)', async () => {
    const model = twoAttentionModel();
    const x = randn([3, 6, 8], 1);
    const ctx = randn([3, 4, 5], 2);
    const before = model.predict([x, ctx]) as tf.Tensor;
    await model.save(`file://${dir}/m`);
    expect(fs.readdirSync(`${dir}/m`).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await tf.loadLayersModel(`file://${dir}/m/model.json`);
    const after = loaded.predict([x, ctx]) as tf.Tensor;
    const diff = tf.max(tf.abs(tf.sub(before, after))).dataSync()[0];
    expect(diff).toBeLessThanOrEqual(1e-6);
    expect(loaded.layers.filter((l) => l instanceof MultiHeadAttention).map((l) => l.name)).toEqual(['gqa', 'mha']);
    const gqa = loaded.getLayer('gqa') as MultiHeadAttention;
    expect([gqa.numHeads, gqa.numKvHeads, gqa.causal]).toEqual([4, 2, true]);
    expect(loaded.getWeights().map((w) => w.shape)).toEqual(model.getWeights().map((w) => w.shape));
    tf.dispose([x, ctx, before, after]);
    model.dispose();
    loaded.dispose();
  });

  test('a training step changes every trainable weight; gradients are non-zero except the key bias', () => {
    const model = twoAttentionModel();
    const x = randn([4, 6, 8], 3);
    const ctx = randn([4, 4, 5], 4);
    const y = randn([4, 6, 2], 5);
    const loss = () => tf.losses.meanSquaredError(y, model.apply([x, ctx]) as tf.Tensor) as tf.Scalar;
    const {value, grads} = tf.variableGrads(loss);
    for (const w of model.trainableWeights) {
      const g = grads[w.originalName ?? w.name] ?? grads[(w as unknown as {val: tf.Variable}).val.name];
      const norm = tf.norm(g).dataSync()[0];
      if (/key\/bias(_\d+)?$/.test(w.name)) {
        // Adding b to every key adds q.b to a whole row of logits: softmax ignores it.
        expect(norm).toBeLessThan(1e-6);
      } else {
        if (!(norm > 1e-6)) throw new Error(`${w.name}: gradient norm ${norm}`);
      }
    }
    tf.dispose([value, Object.values(grads)]);
    const before = model.trainableWeights.map((w) => w.read().clone());
    const optimizer = tf.train.adam(0.01);
    tf.dispose(optimizer.minimize(loss, true)!);
    model.trainableWeights.forEach((w, i) => {
      const moved = tf.max(tf.abs(tf.sub(w.read(), before[i]))).dataSync()[0];
      expect(moved).toBeGreaterThan(0);
    });
    tf.dispose([x, ctx, y, before]);
    optimizer.dispose();
    model.dispose();
  });

  test('loss falls over 30 Adam steps on a small fixed problem, with no leaked tensors after 10 steps', () => {
    const model = twoAttentionModel();
    const x = randn([8, 6, 8], 6);
    const ctx = randn([8, 4, 5], 7);
    // A target the model can fit: a fixed linear map of the mean of the context.
    const y = tf.tidy(() => tf.tile(tf.expandDims(tf.matMul(tf.mean(ctx, 1), randn([5, 2], 8)), 1), [1, 6, 1]));
    const optimizer = tf.train.adam(0.01);
    const step = () => {
      const l = optimizer.minimize(
        () => tf.losses.meanSquaredError(y, model.apply([x, ctx]) as tf.Tensor) as tf.Scalar, true)!;
      const v = l.dataSync()[0];
      l.dispose();
      return v;
    };
    const first = step(); // creates the optimizer's slots
    expectNoLeaks(() => { for (let i = 0; i < 10; i++) step(); });
    let last = first;
    for (let i = 0; i < 19; i++) last = step();
    expect(last).toBeLessThan(first * 0.5);
    tf.dispose([x, ctx, y]);
    optimizer.dispose();
    model.dispose();
  });

  test('returnAttentionScores in a graph: predict gives [output, scores], and it survives save -> load', async () => {
    const x = tf.input({shape: [5, 8]});
    const [out, scores] = new MultiHeadAttention({numHeads: 2, name: 'att'}).apply(x, {returnAttentionScores: true}) as tf.SymbolicTensor[];
    const model = tf.model({inputs: x, outputs: [out, scores]});
    const data = randn([2, 5, 8], 9);
    const [o, s] = model.predict(data) as tf.Tensor[];
    expect(o.shape).toEqual([2, 5, 8]);
    expect(s.shape).toEqual([2, 2, 5, 5]);
    await model.save(`file://${dir}/scores`);
    const loaded = await tf.loadLayersModel(`file://${dir}/scores/model.json`);
    const [o2, s2] = loaded.predict(data) as tf.Tensor[];
    expect(tf.max(tf.abs(tf.sub(s, s2))).dataSync()[0]).toBeLessThanOrEqual(1e-6);
    expect(tf.max(tf.abs(tf.sub(o, o2))).dataSync()[0]).toBeLessThanOrEqual(1e-6);
    tf.dispose([data, o, s, o2, s2]);
    model.dispose();
    loaded.dispose();
  });

  // tfjs' executor frees a tensor once per listed input but counts its consumers once per
  // layer: a node listing x twice used to free x before the Add below read it
  // ("Tensor is disposed"), and passed the padding mask as the query's only.
  test('apply([x, x]) in a graph is self-attention on x: x stays alive for other layers, its mask reaches the keys', () => {
    const tokens = tf.input({shape: [5], dtype: 'int32'});
    const x = tf.layers.embedding({inputDim: 9, outputDim: 8, maskZero: true}).apply(tokens) as tf.SymbolicTensor;
    const mha = new MultiHeadAttention({numHeads: 2, headDim: 4});
    const a = mha.apply([x, x]) as tf.SymbolicTensor;
    expect(mha.inboundNodes[0].inputTensors).toEqual([x]);
    const model = tf.model({inputs: tokens, outputs: tf.layers.add().apply([x, a]) as tf.SymbolicTensor});
    const ids = tf.tensor2d([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], [2, 5], 'int32');
    const embedded = tf.tidy(() => (model.layers[1].apply(ids) as tf.Tensor).clone()); // no kerasMask on the clone
    const keep = tf.notEqual(ids, 0);
    const want = tf.tidy(() => tf.add(embedded, mha.apply(embedded, {queryMask: keep, valueMask: keep}) as tf.Tensor));
    const unmasked = tf.tidy(() => tf.add(embedded, mha.apply(embedded) as tf.Tensor));
    const got = model.predict(ids) as tf.Tensor;
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(got, want))).dataSync()[0])).toBeLessThan(1e-6);
    // Without the key mask the padded keys would be attended: the outputs would differ.
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(unmasked, want))).dataSync()[0])).toBeGreaterThan(1e-4);
    tf.dispose([ids, embedded, keep, want, unmasked, got]);
    model.dispose();
  });

  test('apply([x, x, y]) in a graph: the value (the query tensor itself) keeps x\'s padding mask in predict', () => {
    const tokens = tf.input({shape: [5], dtype: 'int32'});
    const other = tf.input({shape: [5, 8]});
    const embedding = tf.layers.embedding({inputDim: 9, outputDim: 8, maskZero: true});
    const x = embedding.apply(tokens) as tf.SymbolicTensor;
    const mha = new MultiHeadAttention({numHeads: 2, headDim: 4});
    const model = tf.model({inputs: [tokens, other], outputs: mha.apply([x, x, other]) as tf.SymbolicTensor});
    const ids = tf.tensor2d([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], [2, 5], 'int32');
    const y = randn([2, 5, 8], 3);
    const embedded = tf.tidy(() => (embedding.apply(ids) as tf.Tensor).clone());
    const keep = tf.notEqual(ids, 0);
    // Keras: query_mask and value_mask from x; the key has none.
    const want = mha.apply([embedded, embedded, y], {queryMask: keep, valueMask: keep}) as tf.Tensor;
    const got = model.predict([ids, y]) as tf.Tensor;
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(got, want))).dataSync()[0])).toBeLessThan(1e-6);
    tf.dispose([ids, y, embedded, keep, want, got]);
    model.dispose();
  });

  test('attentionMask on symbolic inputs is refused with UNSUPPORTED', () => {
    const x = tf.input({shape: [5, 8]});
    const mask = tf.ones([1, 5, 5]);
    expect(() => new MultiHeadAttention({numHeads: 2}).apply(x, {attentionMask: mask}))
      .toThrow(/attentionMask cannot be given when building a model graph/);
    try { new MultiHeadAttention({numHeads: 2}).apply(x, {attentionMask: mask}); } catch (e) {
      expect(e).toBeInstanceOf(AttentionError);
      expect((e as AttentionError).code).toBe('UNSUPPORTED');
    }
    mask.dispose();
  });

  test('model.fit trains an embedding + attention model (embedding gradients on this backend)', async () => {
    const T = 6;
    const ids = tf.input({shape: [T], dtype: 'int32'});
    const emb = tf.layers.embedding({inputDim: 12, outputDim: 8, maskZero: true, name: 'emb'});
    const att = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, name: 'att'}).apply(emb.apply(ids)) as tf.SymbolicTensor;
    const pooled = tf.layers.globalAveragePooling1d().apply(att) as tf.SymbolicTensor;
    const out = tf.layers.dense({units: 3, activation: 'softmax'}).apply(pooled) as tf.SymbolicTensor;
    const model = tf.model({inputs: ids, outputs: out});
    model.compile({optimizer: tf.train.adam(0.02), loss: 'sparseCategoricalCrossentropy'});
    // Label = which of the tokens 1, 2, 3 the sequence contains (the rest is noise or padding).
    const rows: number[][] = [];
    const labels: number[] = [];
    for (let i = 0; i < 48; i++) {
      const label = i % 3;
      const len = 3 + (i % 4);
      const row = Array.from({length: T}, (_, t) => (t < len ? 4 + ((i * 7 + t * 5) % 8) : 0));
      row[i % len] = label + 1;
      rows.push(row);
      labels.push(label);
    }
    const xs = tf.tensor2d(rows, undefined, 'int32');
    const ys = tf.tensor2d(labels, [labels.length, 1]);
    const embBefore = emb.getWeights()[0].clone();
    const history = await model.fit(xs, ys, {epochs: 25, batchSize: 16, verbose: 0});
    const losses = history.history.loss as number[];
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.5);
    const moved = tf.max(tf.abs(tf.sub(emb.getWeights()[0], embBefore))).dataSync()[0];
    expect(moved).toBeGreaterThan(0);
    tf.dispose([xs, ys, embBefore]);
    model.dispose();
  });
});
