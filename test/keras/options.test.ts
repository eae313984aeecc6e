// loadKerasModel on Keras 3.15 attention layers with sliding_window and use_gate
// (test/fixtures/keras/option_cases.ts): each loads as this library's MultiHeadAttention with
// slidingWindow / outputGate 'elementwise', holds the stored bytes (the gate's in gate/kernel,
// gate/bias, after the projections), equals the float64 Keras reference
// (test/support/keras_options_reference.ts), saves and reloads with equal outputs, and leaks
// nothing. The Keras spellings given to the constructors point to the options.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {attentionLayer, loadKerasModel, MultiHeadAttention} from '../../src';
import {KERAS_OPTION_FIXTURES, KerasOptionFixture} from '../fixtures/keras/option_cases';
import {KerasMhaWeights} from '../support/reference';
import {KerasGateWeights, kerasOptionsReference} from '../support/keras_options_reference';
import {expectError, title} from '../support/helpers';
import {arr3, inputsFor, relError, StoredWeights, storedWeights} from './fixture_files';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'keras');
const urlOf = (dir: string) => `file://${path.join(dir, 'model.json')}`;
const fixture = (name: string) => KERAS_OPTION_FIXTURES.find((f) => f.name === name) as KerasOptionFixture;

/** The fixture's attention weights, from its files, as the references take them. */
function weightsOf(f: KerasOptionFixture, stored: StoredWeights): {w: KerasMhaWeights; gate: KerasGateWeights | null} {
  const values = f.attentionWeights.map((n) => {
    const w = stored.get(n);
    if (w == null) throw new Error(`${f.name} has no weight ${n}`);
    return w.values;
  });
  const per = f.options.useBias ? 2 : 1; // kernel (and bias) per sublayer, in our order
  const at = (i: number) => ({kernel: values[i * per], bias: f.options.useBias ? values[i * per + 1] : null});
  const [q, k, v, o] = [0, 1, 2, 3].map(at);
  const w = {queryKernel: q.kernel, queryBias: q.bias, keyKernel: k.kernel, keyBias: k.bias, valueKernel: v.kernel,
    valueBias: v.bias, outputKernel: o.kernel, outputBias: o.bias};
  const g = f.options.useGate ? at(4) : null;
  return {w, gate: g == null ? null : {gateKernel: g.kernel, gateBias: g.bias}};
}

/** The attention layer's inputs and output on `xs` (through a probe of the loaded graph), as nested arrays. */
function called(model: tf.LayersModel, layer: tf.layers.Layer, xs: tf.Tensor[]) {
  const calledOn = layer.inboundNodes[0].inputTensors; // [x] (self-attention), [q, v] or [q, v, k]
  const probe = tf.model({inputs: model.inputs, outputs: [...calledOn, layer.output as tf.SymbolicTensor]});
  const outs = probe.predict(xs.length === 1 ? xs[0] : xs) as tf.Tensor[];
  const [q, v = q, k = v] = outs.slice(0, calledOn.length).map(arr3);
  const got = arr3(outs[outs.length - 1]);
  tf.dispose(outs);
  return {q, v, k, got};
}

describe(title('loadKerasModel: sliding_window and use_gate'), () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keras-options-')); });
  afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));

  test.each(KERAS_OPTION_FIXTURES.map((f) => ({label: f.name, f})))(
    '$label: loads with the options, holds the stored bytes, equals the Keras reference, round-trips, no leaks',
    async ({f}) => {
      const before = tf.memory().numTensors;
      const dir = path.join(FIXTURES, f.name);
      const model = await loadKerasModel(urlOf(dir));
      const stored = storedWeights(dir);
      const layer = model.getLayer(f.attention.layer);
      expect(layer).toBeInstanceOf(MultiHeadAttention);
      const config = layer.getConfig() as Record<string, unknown>;
      expect([config.numHeads, config.numKvHeads, config.headDim, config.valueDim ?? config.headDim])
        .toEqual([f.attention.numHeads, f.attention.numKvHeads, f.attention.headDim, f.attention.valueDim]);
      expect(config.slidingWindow ?? null).toBe(f.options.slidingWindow);
      expect(config.outputGate ?? null).toBe(f.options.useGate ? 'elementwise' : null);

      // Our getWeights() order: query, key, value, attention_output, then gate/kernel, gate/bias; the stored bytes.
      const local = layer.weights.map((w) => w.originalName.slice(layer.name.length + 1));
      const sub = ['query', 'key', 'value', 'attention_output', ...(f.options.useGate ? ['gate'] : [])];
      expect(local).toEqual(sub.flatMap((s) => (f.options.useBias ? [`${s}/kernel`, `${s}/bias`] : [`${s}/kernel`])));
      const held = layer.getWeights().map((t) => Array.from(t.dataSync()));
      expect(held).toEqual(f.attentionWeights.map((n) => Array.from(stored.get(n)?.values ?? [])));

      // Its output equals Keras's, on both of Keras's paths (every query row sees a key).
      const xs = inputsFor(f.inputs);
      const {q, v, k, got} = called(model, layer, xs);
      const {w, gate} = weightsOf(f, stored);
      const {numHeads, numKvHeads, headDim, valueDim, useCausalMask} = f.attention;
      const {slidingWindow} = f.options;
      const opts = {numHeads, numKvHeads, headDim, valueDim, useCausalMask, slidingWindow, gate};
      expect(relError(got, kerasOptionsReference(q, v, k, w, opts))).toBeLessThan(1e-5);
      expect(relError(got, kerasOptionsReference(q, v, k, w, {...opts, path: 'softmaxLayer'}))).toBeLessThan(1e-5);
      // ... and the options changed it: without them the output is another.
      expect(relError(got, kerasOptionsReference(q, v, k, w, {...opts, slidingWindow: null, gate: null})))
        .toBeGreaterThan(1e-3);

      // Saved as an ordinary tfjs model (our option names), read back with equal outputs.
      const y = model.predict(xs.length === 1 ? xs[0] : xs) as tf.Tensor;
      expect(tf.tidy(() => tf.all(tf.isFinite(y)).dataSync()[0])).toBe(1);
      const out = path.join(tmp, f.name);
      await model.save(`file://${out}`);
      const saved = fs.readFileSync(path.join(out, 'model.json'), 'utf8');
      expect(saved).not.toMatch(/"use_gate"|GroupedQueryAttention/);
      if (f.options.useGate) expect(saved).toMatch(/"output_gate":"elementwise"/);
      if (f.options.slidingWindow != null) expect(saved).toMatch(new RegExp(`"sliding_window":${f.options.slidingWindow}`));
      const back = await tf.loadLayersModel(urlOf(out));
      const y2 = back.predict(xs.length === 1 ? xs[0] : xs) as tf.Tensor;
      expect(tf.tidy(() => tf.max(tf.abs(tf.sub(y, y2))).dataSync()[0])).toBeLessThanOrEqual(1e-6);

      tf.dispose([...xs, y, y2]);
      model.dispose();
      back.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });

  test('sliding_window with use_causal_mask and T < S is Keras\'s top-left band, not bottom-right', async () => {
    // keras3_window_causal_cross: 5 queries, 7 keys, W = 3. Keras keeps 0 <= i - j < 3; a
    // bottom-right band (0 <= i + 2 - j < 3) would be another answer.
    const f = fixture('keras3_window_causal_cross');
    const dir = path.join(FIXTURES, f.name);
    const model = await loadKerasModel(urlOf(dir));
    const xs = inputsFor(f.inputs);
    const {q, v, got} = called(model, model.getLayer(f.attention.layer), xs);
    const {w} = weightsOf(f, storedWeights(dir));
    const [B, T, S] = [q.length, q[0].length, v[0].length];
    const bottomRight = Array.from({length: B}, () => Array.from({length: T}, (_, i) =>
      Array.from({length: S}, (_, j) => i + S - T - j >= 0 && i + S - T - j < 3)));
    const opts = {numHeads: 2, headDim: 3, valueDim: 5};
    expect(relError(got, kerasOptionsReference(q, v, null, w, {...opts, useCausalMask: true, slidingWindow: 3})))
      .toBeLessThan(1e-5);
    expect(relError(got, kerasOptionsReference(q, v, null, w, {...opts, attentionMask: bottomRight})))
      .toBeGreaterThan(1e-2);
    tf.dispose(xs);
    model.dispose();
  });

  test('the gate kernel is [E_q, H, value_dim]: Keras\'s value_dim, not key_dim', async () => {
    const f = fixture('keras3_gate'); // key_dim 4, value_dim 3
    const model = await loadKerasModel(urlOf(path.join(FIXTURES, f.name)));
    const gate = model.getLayer('gated').weights.filter((w) => /gate\//.test(w.originalName));
    expect(gate.map((w) => [w.originalName, w.shape])).toEqual([['gated/gate/kernel', [8, 2, 3]], ['gated/gate/bias', [2, 3]]]);
    model.dispose();
  });
});

describe(title('Keras spellings of the options given to the constructors'), () => {
  test('useGate points to outputGate; useGate: false and slidingWindow: null ask for nothing', () => {
    expectError(() => new MultiHeadAttention({numHeads: 2, useGate: true} as never), 'INVALID_CONFIG',
      /does not take 'useGate' \(received true\): gated attention is outputGate: 'elementwise' here \(Keras's use_gate/);
    expectError(() => attentionLayer('flash', {numHeads: 2, useGate: true} as never), 'INVALID_CONFIG', /outputGate/);
    const layer = new MultiHeadAttention({numHeads: 2, useGate: false, slidingWindow: null} as never);
    expect(layer.getConfig().outputGate ?? null).toBeNull(); // not built: nothing to dispose
  });

  test('slidingWindow is taken by MultiHeadAttention and FlashAttention; a kind without it says which do', () => {
    for (const kind of ['mha', 'flash'] as const) {
      const layer = attentionLayer(kind, {numHeads: 2, slidingWindow: 4} as never);
      expect(layer.getConfig().slidingWindow).toBe(4);
    }
    expectError(() => attentionLayer('linear', {numHeads: 2, slidingWindow: 4} as never), 'UNSUPPORTED',
      /does not take 'slidingWindow' \(received 4\): slidingWindow \(Keras's sliding_window\) is an option of MultiHeadAttention/);
  });
});
