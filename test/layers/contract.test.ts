// The contract every attention kind keeps, run for each entry of the kind table (as Keras's
// run_layer_test does for its layers): constructor and config round trip, unknown arguments
// refused, weight names and shapes, save -> load, an Adam step that moves every trainable
// weight, no leaks, refusals of what the kind's capabilities rule out, and cached decoding
// equal to recomputing the whole sequence. A kind added to the table gets all of it; the
// compiler asks for its entry in CONTRACT_ARGS. Per-kind files keep only what is particular.
import * as tf from '@tensorflow/tfjs';
import {AttentionKind, attentionLayer, AttentionLayerBase} from '../../src';
import {attentionKinds, AttentionKindEntry, CAUSAL_ALIGNMENTS} from '../../src/internals';
import {AttentionCache} from '../../src/layers/decoding';
import {adamTrainer, expectError, expectLayerNoLeaks, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';

/** What each kind needs beyond numHeads (a kind's required arguments, or ones that make its cases small). */
const CONTRACT_ARGS: Record<AttentionKind, Record<string, unknown>> = {
  'mha': {},
  'gqa': {numKvHeads: 2},
  'flash': {blockSize: 4},
  'linear': {seed: 1},
  'local-global': {windowSize: 2, globalIndices: [0, 5]},
};

const [B, T, E, H] = [2, 7, 8, 4];
const D = E / H;

function make(kind: AttentionKind, extra: Record<string, unknown> = {}): AttentionLayerBase {
  return attentionLayer(kind, {numHeads: H, ...CONTRACT_ARGS[kind], ...extra} as never);
}

/** x [B, T, E] -> the layer -> [B, T, E], as a functional model. */
function modelOf(layer: AttentionLayerBase): tf.LayersModel {
  const x = tf.input({shape: [T, E]});
  return tf.model({inputs: x, outputs: layer.apply(x) as tf.SymbolicTensor});
}

/** The model's save artifacts, kept in memory. */
async function saved(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let artifacts: tf.io.ModelArtifacts | null = null;
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return {modelArtifactsInfo: {dateSaved: new Date(), modelTopologyType: 'JSON'}};
  }));
  return artifacts!;
}

/**
 * A config as model.json holds it, without null entries: tfjs reads an initializer's absent
 * seed back as null.
 */
function plain(config: tf.serialization.ConfigDict): unknown {
  return JSON.parse(JSON.stringify(config, (_, v) => (v === null ? undefined : v)));
}

const KINDS = attentionKinds().map((entry) => [entry.kind, entry] as [AttentionKind, AttentionKindEntry]);

describe.each(KINDS)(title('contract: %s'), (kind, entry) => {
  test('the factory builds the entry\'s class; fromConfig(getConfig()) has the same config and, with the same ' +
    'weights, the same output', () => {
    const layer = make(kind, {causal: true, name: 'att'});
    expect(layer).toBeInstanceOf(entry.layer);
    expect(layer).toBeInstanceOf(AttentionLayerBase);
    const x = randn([B, T, E], 1);
    const y = layer.apply(x) as tf.Tensor;
    const config = layer.getConfig();
    expect(JSON.parse(JSON.stringify(config))).toEqual(config); // plain JSON, as model.json stores it
    // What tfjs does with a layer of model.json: the class's static fromConfig.
    const cls = entry.layer as unknown as typeof tf.layers.Layer;
    const copy = cls.fromConfig(cls as never, config) as AttentionLayerBase;
    expect(copy).toBeInstanceOf(entry.layer);
    expect(copy.getConfig()).toEqual(config);
    tf.dispose(copy.apply(x) as tf.Tensor);
    copy.setWeights(layer.getWeights());
    const y2 = copy.apply(x) as tf.Tensor;
    expect(maxDiff(y, y2)).toBeLessThanOrEqual(1e-6);
    tf.dispose([x, y, y2]);
    [layer, copy].forEach((l) => l.dispose());
  });

  test('unknown arguments are refused, naming them; Keras and PyTorch names get the tfjs name', () => {
    expectError(() => make(kind, {notAnArgument: 1}), 'INVALID_CONFIG', /notAnArgument/);
    expectError(() => make(kind, {num_heads: H}), 'INVALID_CONFIG', /num_heads.*numHeads/);
    expectError(() => make(kind, {useBias: 'yes'}), 'INVALID_CONFIG', /useBias must be a boolean/);
  });

  test('weights: the Keras projections first, then the kind\'s own; weightShapes() lists them before build', () => {
    const layer = make(kind, {name: 'att'});
    const planned = layer.weightShapes([B, T, E]);
    tf.dispose(layer.apply(randn([B, T, E], 2)) as tf.Tensor);
    const G = layer.numKvHeads;
    const built = layer.weights.map((w) => [w.name.replace(/^att\//, '').replace(/_\d+$/, ''), w.shape]);
    expect(built.slice(0, 8)).toEqual([
      ['query/kernel', [E, H, D]], ['query/bias', [H, D]], ['key/kernel', [E, G, D]], ['key/bias', [G, D]],
      ['value/kernel', [E, G, D]], ['value/bias', [G, D]], ['attention_output/kernel', [H, D, E]],
      ['attention_output/bias', [E]],
    ]);
    expect(planned.map((w) => [w.name, w.shape])).toEqual(built);
    layer.dispose();
  });

  test('save -> load of a model gives the same class, config and output (1e-6)', async () => {
    const model = modelOf(make(kind, {causal: true, name: 'att'}));
    const x = randn([B, T, E], 3);
    const before = model.predict(x) as tf.Tensor;
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(await saved(model)));
    const after = loaded.predict(x) as tf.Tensor;
    expect(maxDiff(before, after)).toBeLessThanOrEqual(1e-6);
    expect(loaded.getLayer('att')).toBeInstanceOf(entry.layer);
    expect(plain(loaded.getLayer('att').getConfig())).toEqual(plain(model.getLayer('att').getConfig()));
    expect(loaded.getWeights().map((w) => w.shape)).toEqual(model.getWeights().map((w) => w.shape));
    tf.dispose([x, before, after]);
    [model, loaded].forEach((m) => m.dispose());
  });

  test('an Adam step moves every trainable weight and no other; the loss falls; steps leave no tensor behind', () => {
    const model = modelOf(make(kind, {causal: true, name: 'att'}));
    const x = randn([4, T, E], 4);
    const y = randn([4, T, E], 5);
    const {optimizer, step} = adamTrainer(model, x, y);
    const before = model.weights.map((w) => w.read().clone());
    const first = step(); // also creates the optimizer's slots
    model.weights.forEach((w, i) => {
      const moved = maxDiff(w.read(), before[i]);
      // The key bias adds the same logit to every key of a query: softmax ignores it, its gradient is 0.
      if (!w.trainable) expect([w.name, moved]).toEqual([w.name, 0]);
      else if (!/key\/bias/.test(w.name)) expect([w.name, moved > 0]).toEqual([w.name, true]);
    });
    expect(model.trainableWeights.length).toBeGreaterThanOrEqual(8);
    expectNoLeaks(() => { for (let i = 0; i < 3; i++) step(); });
    expect(step()).toBeLessThan(first);
    tf.dispose([x, y, before]);
    optimizer.dispose();
    model.dispose();
  });

  test('no leaked tensors after a forward pass, tf.grads and tf.variableGrads', () => {
    const layer = make(kind);
    const x = randn([B, T, E], 6);
    // Key padding: a mask every kind takes.
    const mask = tf.tensor3d([[[1, 1, 1, 1, 1, 0, 0]], [[1, 1, 1, 1, 1, 1, 1]]]);
    tf.dispose(layer.apply(x) as tf.Tensor);
    expectLayerNoLeaks(layer, x, mask);
    tf.dispose([x, mask]);
    layer.dispose();
  });

  test('padding masks: padded keys change no other row; a padded query gives the output bias alone', () => {
    tf.tidy(() => {
      // headDim 4: linear's default features for D = 2 would be one, which no query changes.
      const layer = make(kind, {headDim: 4, biasInitializer: 'randomNormal'});
      const x = randn([2, 6, E], 11);
      const keys = tf.tensor3d([[[1, 1, 1, 1, 1, 1]], [[1, 1, 1, 1, 0, 0]]]); // [B, 1, S]: batch 1 pads 4, 5
      const out = layer.apply(x, {attentionMask: keys}) as tf.Tensor;
      // Other inputs at batch 1's padded positions change only its rows 4, 5 (as queries).
      const changed = tf.concat([x.slice([0, 0, 0], [1, 6, E]),
        tf.concat([x.slice([1, 0, 0], [1, 4, E]), randn([1, 2, E], 12)], 1)], 0);
      const out2 = layer.apply(changed, {attentionMask: keys}) as tf.Tensor;
      expect(maxDiff(out2.slice([0, 0, 0], [2, 4, E]), out.slice([0, 0, 0], [2, 4, E]))).toBeLessThan(1e-5);
      expect(maxDiff(out2, out)).toBeGreaterThan(1e-3);
      expect(maxDiff(layer.apply(x) as tf.Tensor, out)).toBeGreaterThan(1e-4); // the mask matters at all
      const queries = tf.tensor3d([[[1], [1], [1], [0], [1], [1]], [[1], [1], [1], [1], [1], [1]]]); // [B, T, 1]
      const q = layer.apply(x, {attentionMask: queries}) as tf.Tensor;
      const bias = layer.weights.find((w) => /attention_output\/bias/.test(w.name))!.read();
      expect(maxDiff(q.slice([0, 3, 0], [1, 1, E]).reshape([E]), bias)).toBeLessThan(1e-6);
      expect(maxDiff(bias, tf.zerosLike(bias))).toBeGreaterThan(1e-3); // a bias that is not 0
      layer.dispose();
    });
  });

  test('what the capabilities rule out is refused (UNSUPPORTED); what they allow works', () => {
    const layer = make(kind);
    const caps = layer.capabilities;
    const x = randn([1, 5, E], 7);
    tf.dispose(layer.apply(x) as tf.Tensor);
    expectNoLeaks(() => {
      if (!caps.scores) {
        expectError(() => layer.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED', /cannot return attention scores/);
      } else {
        const out = layer.apply(x, {returnAttentionScores: true}) as tf.Tensor[];
        expect(out[1].shape).toEqual([1, H, 5, 5]);
        tf.dispose(out);
      }
      const mask = tf.ones([1, 5, 5], 'bool');
      if (!caps.fullMasks) {
        expectError(() => layer.apply(x, {attentionMask: mask}), 'UNSUPPORTED',
          new RegExp(`${entry.layer.className} takes only key padding .* received one of shape \\[1, 1, 5, 5\\]`));
      } else {
        tf.dispose(layer.apply(x, {attentionMask: mask}) as tf.Tensor);
      }
      mask.dispose();
      const v = randn([1, 3, E], 8);
      if (!caps.crossLengths) {
        expectError(() => layer.apply([x, v]), 'UNSUPPORTED', /same length.*T=5 and S=3/);
      } else {
        const out = layer.apply([x, v]) as tf.Tensor;
        expect(out.shape).toEqual([1, 5, E]);
        out.dispose();
      }
      v.dispose();
    });
    if (!caps.dropout) {
      expectError(() => make(kind, {dropout: 0.1}), 'UNSUPPORTED', /does not support dropout \(received 0\.1\)/);
    } else {
      expect(make(kind, {dropout: 0.1}).dropout).toBe(0.1);
    }
    for (const align of CAUSAL_ALIGNMENTS) {
      if (caps.causalAlignments.includes(align)) expect(make(kind, {causal: align}).getConfig().causal).toBe(align);
      else expectError(() => make(kind, {causal: align}), 'UNSUPPORTED', new RegExp(align));
    }
    x.dispose();
    layer.dispose();
  });

  for (const rope of [false, true]) {
    test(`cached decoding == the whole sequence${rope ? ' (rope)' : ''}: pieces 3+1+2+1+4, every output (1e-4)`, () => {
      const layer = make(kind, {causal: true, ...(rope ? {positionEncoding: 'rope'} : {})});
      const x = randn([B, 11, E], 9);
      const full = layer.apply(x) as tf.Tensor;
      let cache: AttentionCache = layer.createCache(B, 16);
      const outs: tf.Tensor[] = [];
      let pos = 0;
      for (const t of [3, 1, 2, 1, 4]) {
        const piece = tf.slice(x, [0, pos, 0], [B, t, E]);
        const [y, next] = layer.apply(piece, {cache}) as unknown as [tf.Tensor, AttentionCache];
        tf.dispose([piece, Object.values(cache.tensors)]);
        outs.push(y);
        cache = next;
        pos += t;
      }
      expect(cache.length).toBe(11);
      const cached = tf.concat(outs, 1);
      expect(maxDiff(cached, full)).toBeLessThan(1e-4);
      if (layer.capabilities.appendOnlyCache) {
        const one = tf.slice(x, [0, 0, 0], [B, 1, E]);
        expectError(() => layer.apply(one, {cache, cacheIndex: 5}), 'INVALID_CACHE', /cacheIndex/);
        one.dispose();
      }
      tf.dispose([x, full, cached, outs, Object.values(cache.tensors)]);
      layer.dispose();
    });
  }
});
