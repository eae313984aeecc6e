// loadKerasModel on the Keras fixtures (test/fixtures/keras: hand-written Keras 3 and
// tf.keras 2 model.json files, and a real Keras 3.13 conversion): each loads, its
// attention layer holds the fixture's bytes and equals the plain-loop Keras reference
// (test/support/reference.ts), the model predicts finite values, saves as an ordinary tfjs model
// that tf.loadLayersModel reads back with equal outputs, and leaks no tensor.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {loadKerasModel, MultiHeadAttention} from '../../src';
import {denseValues} from '../fixtures/dense';
import {KERAS_FIXTURES, KerasFixture} from '../fixtures/keras/cases';
import {kerasMhaReference, KerasMhaWeights} from '../support/reference';
import {title} from '../support/helpers';
import {arr3, inputsFor, relError, storedWeights} from './fixture_files';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'keras');
const REAL = path.join(FIXTURES, 'real', 'smartfood');
const urlOf = (dir: string) => `file://${path.join(dir, 'model.json')}`;

/** The attention layer's stored weights in Keras order, from the fixture's files. */
function kerasWeights(stored: ReturnType<typeof storedWeights>, names: string[]): KerasMhaWeights {
  const v = names.map((n) => {
    const w = stored.get(n);
    if (w == null) throw new Error(`fixture has no weight ${n}`);
    return w.values;
  });
  return {queryKernel: v[0], queryBias: v[1], keyKernel: v[2], keyBias: v[3], valueKernel: v[4], valueBias: v[5],
    outputKernel: v[6], outputBias: v[7]};
}

interface Case {
  label: string;
  dir: string;
  inputs: {shape: number[]; dtype: 'float32' | 'int32'}[];
  attentionLayer: string;
  attentionWeights: string[];
  fixture: KerasFixture | null;
}

const CASES: Case[] = [
  ...KERAS_FIXTURES.map((f) => ({label: `${f.name} (${f.writer})`, dir: path.join(FIXTURES, f.name), inputs: f.inputs,
    attentionLayer: f.attention?.layer ?? '',
    attentionWeights: f.attentionWeights, fixture: f})),
  {label: 'real/smartfood (Keras 3.13.1 + tensorflowjs 4.22 converter)', dir: REAL, inputs: [{shape: [2, 14, 9], dtype: 'float32'}],
    attentionLayer: 'attention', fixture: null,
    attentionWeights: ['query/kernel', 'query/bias', 'key/kernel', 'key/bias', 'value/kernel', 'value/bias',
      'attention_output/kernel', 'attention_output/bias'].map((n) => `attention/${n}`)},
];

/**
 * The checks of a fixture's attention layer: this library's class, the stored bytes in
 * Keras order, and its output equal to the Keras reference on the tensors it is called
 * on. Returns the tensors it made (to dispose).
 */
function checkAttention(model: tf.LayersModel, c: Case, stored: ReturnType<typeof storedWeights>,
    xs: tf.Tensor[]): tf.Tensor[] {
  const feed = xs.length === 1 ? xs[0] : xs;
  // The attention layer is this library's, with the stored bytes in Keras order.
  const layer = model.getLayer(c.attentionLayer);
  expect(layer).toBeInstanceOf(MultiHeadAttention);
  const w = kerasWeights(stored, c.attentionWeights);
  const held = layer.getWeights().map((t) => new Uint8Array(t.dataSync().buffer.slice(0)));
  const want = [w.queryKernel, w.queryBias, w.keyKernel, w.keyBias, w.valueKernel, w.valueBias, w.outputKernel,
    w.outputBias].map((x) => new Uint8Array((x as Float32Array).buffer.slice(0)));
  expect(held).toEqual(want);

  // Its output equals the reference on the tensors it is called on.
  const node = layer.inboundNodes[0];
  const calledOn = node.inputTensors; // [x] (self-attention), [q, v] or [q, v, k]
  const probe = tf.model({inputs: model.inputs, outputs: [...calledOn, layer.output as tf.SymbolicTensor]});
  const outs = probe.predict(feed) as tf.Tensor[];
  const [q, v = q, k = v] = outs.slice(0, calledOn.length).map(arr3);
  const got = arr3(outs[outs.length - 1]);
  const config = layer.getConfig() as {numHeads: number; numKvHeads: number; headDim: number; valueDim: number | null};
  const f = c.fixture;
  const padding = f?.attention?.paddingFrom != null ? (xs[f.attention.paddingFrom].arraySync() as number[][])
    .map((row) => row.map((id) => id !== 0)) : undefined;
  const opts = {numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim,
    valueDim: config.valueDim ?? config.headDim, useCausalMask: f?.attention?.useCausalMask ?? false,
    queryMask: padding, valueMask: padding};
  if (f?.attention != null) {
    expect([opts.numHeads, opts.numKvHeads, opts.headDim, opts.valueDim])
      .toEqual([f.attention.numHeads, f.attention.numKvHeads, f.attention.headDim, f.attention.valueDim]);
  }
  // Keras's default path (dropout 0, no scores) gives a query with no visible key the
  // mean of all values, its Softmax-layer path (and this library) zeros: so padded
  // queries are compared with the latter, every other row with both.
  expect(relError(got, kerasMhaReference(q, v, k, w, opts), padding)).toBeLessThan(1e-5);
  expect(relError(got, kerasMhaReference(q, v, k, w, {...opts, path: 'softmaxLayer'}))).toBeLessThan(1e-5);
  if (padding != null) expect(padding.flat().some((p) => !p)).toBe(true); // the test did mask something
  return outs;
}

describe(title('loadKerasModel: fixtures'), () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keras-load-')); });
  afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));

  test.each(CASES)('$label: loads, holds the stored bytes, equals the Keras reference, predicts finite values, no leaks',
    async (c) => {
      const before = tf.memory().numTensors;
      const model = await loadKerasModel(urlOf(c.dir));
      const stored = storedWeights(c.dir);

      // Every stored weight went into a model weight of equal values (none left over).
      expect(model.weights.length).toBe(stored.size);
      const heldValues = model.weights.map((w) => Array.from(w.read().dataSync()).join(',')).sort();
      const storedValues = [...stored.values()].map((w) => Array.from(w.values).join(',')).sort();
      expect(heldValues).toEqual(storedValues);

      const xs = inputsFor(c.inputs);
      const feed = xs.length === 1 ? xs[0] : xs;
      const outs = c.attentionLayer === '' ? [] : checkAttention(model, c, stored, xs);

      // The whole model predicts finite values.
      const y = model.predict(feed);
      for (const t of Array.isArray(y) ? y : [y]) expect(tf.tidy(() => tf.all(tf.isFinite(t)).dataSync()[0])).toBe(1);

      // Round trip: saved as an ordinary tfjs model, read back by tf.loadLayersModel.
      const out = path.join(tmp, path.basename(c.dir));
      await model.save(`file://${out}`);
      const saved = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
      expect(JSON.stringify(saved.modelTopology)).not.toMatch(/__keras_tensor__|DTypePolicy|"key_dim"|GroupedQueryAttention/);
      const back = await tf.loadLayersModel(urlOf(out));
      const y2 = back.predict(feed);
      const [a, b] = [Array.isArray(y) ? y : [y], Array.isArray(y2) ? y2 : [y2]];
      expect(b.length).toBe(a.length);
      a.forEach((t, i) =>
        expect(tf.tidy(() => tf.max(tf.abs(tf.sub(t, b[i]))).dataSync()[0])).toBeLessThanOrEqual(1e-6));

      tf.dispose([...xs, ...outs, ...a, ...b]);
      model.dispose();
      back.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });

  test('the real model: its Bidirectional weights, named without the wrapper, land in the wrapper', async () => {
    const model = await loadKerasModel(urlOf(REAL));
    const stored = storedWeights(REAL);
    const forward = model.getLayer('bilstm_1').weights.find((w) => w.originalName === 'bilstm_1/forward_lstm/kernel');
    expect(forward).toBeDefined();
    expect(Array.from((forward as tf.LayerVariable).read().dataSync()))
      .toEqual(Array.from(stored.get('forward_lstm/lstm_cell/kernel')?.values ?? []));
    const second = model.getLayer('bilstm_2').weights.find((w) => w.originalName === 'bilstm_2/backward_lstm_1/bias');
    expect(Array.from((second as tf.LayerVariable).read().dataSync()))
      .toEqual(Array.from(stored.get('backward_lstm_1/lstm_cell/bias')?.values ?? []));
    model.dispose();
  });
});

describe(title('loadKerasModel: browser-safe'), () => {
  test('src/keras reaches no Node module, CLI, bench or training code through its imports', () => {
    const src = path.join(__dirname, '..', '..', 'src');
    const seen = new Set<string>();
    const external = new Set<string>();
    const walk = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/^(?:import|export)[^;]*?from '([^']+)'|^import '([^']+)'/gm)) {
        const spec = m[1] ?? m[2];
        if (!spec.startsWith('.')) external.add(spec);
        else walk(path.join(path.dirname(file), `${spec}.ts`));
      }
      expect(text).not.toMatch(/require\(|requireModule/);
    };
    walk(path.join(src, 'keras', 'load.ts'));
    expect([...external]).toEqual(['@tensorflow/tfjs']);
    const reached = [...seen].map((f) => path.relative(src, f));
    expect(reached).toContain('layers/multi_head_attention.ts');
    expect(reached.filter((f) => /^(cli|bench|train)\/|^node\.ts$|^io\/(file_system|folder)\.ts$|^backend\.ts$/.test(f)))
      .toEqual([]);
  });
});

describe(title('loadKerasModel: call forms'), () => {
  test('a Keras 3 call with return_attention_scores=True: the model outputs [output, scores] like Keras', async () => {
    const dir = path.join(FIXTURES, 'keras3_self');
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    const config = json.modelTopology.model_config.config;
    config.layers[1].inbound_nodes[0].kwargs.return_attention_scores = true;
    config.output_layers = [['mha', 0, 0], ['mha', 0, 1]];
    const bytes = fs.readFileSync(path.join(dir, 'weights.bin'));
    const model = await loadKerasModel(tf.io.fromMemory({modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest[0].weights,
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)}));
    const x = tf.tensor(denseValues(5, 2 * 6 * 8), [2, 6, 8]);
    const [out, scores] = model.predict(x) as tf.Tensor[];
    expect(out.shape).toEqual([2, 6, 8]);
    expect(scores.shape).toEqual([2, 2, 6, 6]); // [B, H, T, S], as Keras returns them
    const sums = tf.tidy(() => Array.from(tf.sum(scores, -1).dataSync()));
    sums.forEach((s) => expect(Math.abs(s - 1)).toBeLessThan(1e-5));
    tf.dispose([x, out, scores]);
    model.dispose();
  });

  test('use_causal_mask keeps Keras\'s top-left meaning when queries and keys differ in length', async () => {
    // The reference comparison of keras3_causal (T=4, S=6) checks the values; here: the
    // layer's own setting, and that bottom-right would have been different.
    const model = await loadKerasModel(urlOf(path.join(FIXTURES, 'keras3_causal')));
    const layer = model.getLayer('causal_mha') as MultiHeadAttention;
    const q = tf.tensor(denseValues(1, 2 * 4 * 8), [2, 4, 8]);
    const v = tf.tensor(denseValues(2, 2 * 6 * 8), [2, 6, 8]);
    const graph = model.predict([q, v]) as tf.Tensor;
    const topLeft = layer.apply([q, v], {useCausalMask: true}) as tf.Tensor;
    const other = new MultiHeadAttention({numHeads: 2, headDim: 4, causal: true, weights: layer.getWeights()});
    const bottomRight = other.apply([q, v]) as tf.Tensor;
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(graph, topLeft))).dataSync()[0])).toBeLessThan(1e-6);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(graph, bottomRight))).dataSync()[0])).toBeGreaterThan(1e-3);
    tf.dispose([q, v, graph, topLeft, bottomRight]);
    other.dispose();
    model.dispose();
  });
});

describe(title('loadKerasModel: models as layers'), () => {
  test('a Keras 3 functional model used as a layer inside another (tfjs numbers its calls from 1) loads and predicts as the inner one', async () => {
    const dir = path.join(FIXTURES, 'keras3_self');
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    const inner = json.modelTopology.model_config;
    const kt = (layer: string) => ({class_name: '__keras_tensor__', config: {shape: [null, 6, 8], dtype: 'float32', keras_history: [layer, 0, 0]}});
    const outer = {keras_version: '3.13.1', backend: 'tensorflow', model_config: {class_name: 'Functional', config: {
      name: 'outer', trainable: true, layers: [
        {class_name: 'InputLayer', config: {batch_shape: [null, 6, 8], dtype: 'float32', sparse: false, name: 'outer_x'},
          name: 'outer_x', inbound_nodes: []},
        {...inner, config: {...inner.config, name: 'block'}, name: 'block', inbound_nodes: [{args: [kt('outer_x')], kwargs: {}}]},
      ], input_layers: ['outer_x', 0, 0], output_layers: ['block', 0, 0]}}};
    const bytes = fs.readFileSync(path.join(dir, 'weights.bin'));
    const model = await loadKerasModel(tf.io.fromMemory({modelTopology: outer,
      weightSpecs: json.weightsManifest[0].weights,
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)}));
    const plain = await loadKerasModel(urlOf(dir));
    const x = tf.tensor(denseValues(9, 2 * 6 * 8), [2, 6, 8]);
    const [a, b] = [model.predict(x) as tf.Tensor, plain.predict(x) as tf.Tensor];
    expect(model.layers.map((l) => l.name)).toEqual(['outer_x', 'block']);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0])).toBe(0);
    tf.dispose([x, a, b]);
    model.dispose();
    plain.dispose();
  });
});
