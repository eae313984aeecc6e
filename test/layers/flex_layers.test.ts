// Mask and score mods in the layers (MultiHeadAttention, FlashAttention): a layer's built-in
// maskMod equals the same weights given the dense attentionMask (forward, input and weight
// gradients); a scoreMod in the config against plain tf attention written here; the mods'
// specs saved, reloaded and rebuilt by fromConfig; call-time mods (captured tensors against
// central differences, documentMask, block masks); padding from embedding maskZero; cached
// decoding with the layer's mods == the full forward; refusals and leaks.
import * as tf from '@tensorflow/tfjs';
import {
  alibi, andMasks, AttentionCache, AttentionLayerBase, capturing, causalMask, chainScores, createBlockMask,
  documentMask, FlashAttention, LinearAttention, LocalGlobalAttention, MaskMod, MultiHeadAttention, orMasks, prefixLm,
  relativePositionBias, ScoreMod, slidingWindow, softcap,
} from '../../src';
import {
  asSaved, expectClose, expectError, expectNoLeaks, headsOf, maxDiff, randn, reloadedInMemory, title,
} from '../support/helpers';

const B = 2;
const T = 7;
const E = 8;

type Kwargs = Record<string, unknown>;
type Keep = (b: number, i: number, j: number) => boolean;
type LayerClass = typeof MultiHeadAttention | typeof FlashAttention;

/** A [B, T, S] 0/1 mask from a plain-JS rule (1 = may attend). */
function denseMask(keep: Keep, b = B, t = T, s = T): tf.Tensor3D {
  const rows = Array.from({length: b}, (_, bb) =>
    Array.from({length: t}, (_, i) => Array.from({length: s}, (_, j) => (keep(bb, i, j) ? 1 : 0))));
  return tf.tensor3d(rows);
}

/** Causal window of w positions: key j visible from query i iff 0 <= i - j < w (T = S). */
const windowOf = (w: number): Keep => (_b, i, j) => j <= i && i - j < w;

/** Applies the layer once to x (building it) and drops the output. */
function built<L extends AttentionLayerBase>(layer: L, x: tf.Tensor): L {
  tf.dispose(layer.apply(x) as tf.Tensor);
  return layer;
}

/** A built copy of `layer`'s kind with other arguments and the same weights. */
function twin<L extends AttentionLayerBase>(make: () => L, layer: AttentionLayerBase, x: tf.Tensor): L {
  const copy = built(make(), x);
  copy.setWeights(layer.getWeights());
  return copy;
}

function apply(layer: AttentionLayerBase, x: tf.Tensor, kwargs: Kwargs = {}): tf.Tensor {
  return layer.apply(x, kwargs) as tf.Tensor;
}

/**
 * The output and the gradients of sum(layer(x) * cot) for x and every trainable weight (in
 * trainableWeights order), from one tf.variableGrads.
 */
function outputAndGrads(layer: AttentionLayerBase, x: tf.Tensor, kwargs: Kwargs, cot: tf.Tensor): tf.Tensor[] {
  const xv = tf.variable(x, true, undefined, 'float32');
  const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  let y: tf.Tensor | null = null;
  const {value, grads} = tf.variableGrads(() => {
    y = tf.keep(apply(layer, xv, kwargs));
    return tf.sum(tf.mul(y, cot)) as tf.Scalar;
  }, [xv, ...weights]);
  const out = [y!, grads[xv.name], ...weights.map((w) => grads[w.name])];
  tf.dispose([value, xv]);
  return out;
}

/**
 * Asserts two lists of tensors are close, naming the entry that is not. The key bias's
 * gradient is zero (softmax ignores a shift shared by a row): both must be rounding noise
 * against the key kernel's gradient.
 */
function expectAllClose(actual: tf.Tensor[], expected: tf.Tensor[], tol: number, names: string[]): void {
  expect(actual.length).toBe(expected.length);
  const scale = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);
  actual.forEach((a, i) => {
    if (names[i].endsWith('/key/bias')) {
      const noise = tol * scale(expected[names.findIndex((n) => n.endsWith('/key/kernel'))]);
      expect(Math.max(scale(a), scale(expected[i]))).toBeLessThan(noise);
      return;
    }
    try { expectClose(a, expected[i], tol); } catch (e) { throw new Error(`${names[i]}: ${(e as Error).message}`); }
  });
}

describe(title('layers with maskMod == the dense attentionMask'), () => {
  const cases: {what: string; cls: LayerClass; args: Kwargs; padKeys?: boolean}[] = [
    {what: 'MultiHeadAttention H=2', cls: MultiHeadAttention, args: {numHeads: 2}},
    {what: 'MultiHeadAttention H=2, with a key-padding attentionMask too', cls: MultiHeadAttention,
      args: {numHeads: 2}, padKeys: true},
    {what: 'FlashAttention H=4 G=2 D=3 blockSize 3', cls: FlashAttention,
      args: {numHeads: 4, numKvHeads: 2, headDim: 3, blockSize: 3}},
    {what: 'FlashAttention H=4 G=2 D=3, with a key-padding attentionMask too', cls: FlashAttention,
      args: {numHeads: 4, numKvHeads: 2, headDim: 3}, padKeys: true},
  ];
  for (const c of cases) {
    test(`${c.what}, causal, maskMod slidingWindow(3): output and gradients (x, every weight) == no mods ` +
         'with the dense mask (1e-5)', () => {
      const x = randn([B, T, E], 1);
      const cot = randn([B, T, E], 2);
      const Cls = c.cls as unknown as new (args: Kwargs) => AttentionLayerBase;
      const flex = built(new Cls({...c.args, causal: true, maskMod: slidingWindow(3)}), x);
      const plain = twin(() => new Cls(c.args), flex, x);
      // Key 5 of batch entry 1 and key 0 of batch entry 0 are padding.
      const padded = (b: number, j: number) => c.padKeys === true && ((b === 1 && j === 5) || (b === 0 && j === 0));
      const keyMask = denseMask((b, _i, j) => !padded(b, j), B, 1, T);                  // [B, 1, S]
      const dense = denseMask((b, i, j) => windowOf(3)(b, i, j) && !padded(b, j));      // [B, T, S]
      const names = ['output', 'dx', ...flex.trainableWeights.map((w) => w.name)];
      const got = outputAndGrads(flex, x, c.padKeys === true ? {attentionMask: keyMask} : {}, cot);
      const want = outputAndGrads(plain, x, {attentionMask: dense}, cot);
      expect(got.length).toBe(10);
      expectAllClose(got, want, 1e-5, names);
      // The window matters here: the plain causal layer gives another output.
      const causalOnly = twin(() => new Cls({...c.args, causal: true}), flex, x);
      const y = apply(causalOnly, x);
      expect(maxDiff(y, got[0])).toBeGreaterThan(1e-3);
      tf.dispose([x, cot, keyMask, dense, y, ...got, ...want]);
      [flex, plain, causalOnly].forEach((l) => l.dispose());
    });
  }
});

/**
 * The attention of a causal layer with scoreMod softcap(cap), in plain tf from its weights
 * (getWeights order: query, key, value, output; kernel then bias): scores q.k / sqrt(D),
 * cap * tanh(s / cap), causal mask, softmax, values, output projection.
 */
function softcapReference(x: tf.Tensor, w: tf.Tensor[], H: number, G: number, cap: number): tf.Tensor {
  return tf.tidy(() => {
    const [qk, qb, kk, kb, vk, vb, ok, ob] = w;
    const [b, t, e] = x.shape as number[];
    const D = qk.shape[2] as number;
    const repeat = (heads: tf.Tensor) =>  // [B, G, T, X] -> [B, H, T, X]: head h reads kv head floor(h / (H / G))
      tf.gather(heads, Array.from({length: H}, (_, h) => Math.floor(h / (H / G))), 1);
    const q = headsOf(x, qk, qb);                                        // [B, H, T, D]
    const k = repeat(headsOf(x, kk, kb));                                // [B, H, T, D]
    const v = repeat(headsOf(x, vk, vb));                                // [B, H, T, Dv]
    const s = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(D));   // [B, H, T, T]
    const capped = tf.mul(tf.tanh(tf.div(s, cap)), cap);
    const lower = tf.reshape(tf.linalg.bandPart(tf.ones([t, t]), -1, 0), [1, 1, t, t]);
    const masked = tf.where(tf.cast(lower, 'bool'), capped, tf.fill(capped.shape, -1e9));
    const o = tf.matMul(tf.softmax(masked), v);                          // [B, H, T, Dv]
    const Dv = o.shape[3] as number;
    const flat = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [b * t, H * Dv]);
    return tf.reshape(tf.add(tf.matMul(flat, tf.reshape(ok, [H * Dv, e])), ob), [b, t, e]);
  });
}

describe(title('layers with scoreMod softcap == plain tf attention'), () => {
  const cases: {what: string; cls: LayerClass; H: number; G: number; cap: number}[] = [
    {what: 'MultiHeadAttention H=2', cls: MultiHeadAttention, H: 2, G: 2, cap: 0.5},
    {what: 'FlashAttention H=4 G=2 (GQA)', cls: FlashAttention, H: 4, G: 2, cap: 1},
  ];
  for (const c of cases) {
    test(`${c.what}, causal, scoreMod softcap(${c.cap}) == softmax(cap * tanh(q.k / sqrt(D) / cap)) by hand (1e-4)`,
      () => {
        const x = randn([B, T, E], 3, 2);
        const Cls = c.cls as unknown as new (args: Kwargs) => AttentionLayerBase;
        const layer = built(new Cls({numHeads: c.H, numKvHeads: c.G, headDim: 4, causal: true,
          scoreMod: softcap(c.cap)}), x);
        const w = layer.getWeights();
        expect(w.map((t) => t.shape)).toEqual([[E, c.H, 4], [c.H, 4], [E, c.G, 4], [c.G, 4], [E, c.G, 4], [c.G, 4],
          [c.H, 4, E], [E]]);
        const y = apply(layer, x);
        const ref = softcapReference(x, w, c.H, c.G, c.cap);
        expectClose(y, ref, 1e-4);
        // The cap matters at this scale: without it (a huge cap) the output moves.
        const uncapped = softcapReference(x, w, c.H, c.G, 1e6);
        expect(maxDiff(uncapped, ref)).toBeGreaterThan(1e-2);
        tf.dispose([x, y, ref, uncapped]);  // getWeights gives the layer's own variables
        layer.dispose();
      });
  }
});

describe(title('layer mods in the config: save, load, fromConfig'), () => {
  const maskMod = () => orMasks(prefixLm(2), slidingWindow(3));
  const scoreMod = () => chainScores(alibi(), softcap(2));
  const MASK_SPEC = {name: 'or', mods: [{name: 'prefixLm', prefix: 2, alignment: 'bottom-right'},
    {name: 'slidingWindow', window: 3, alignment: 'bottom-right'}]};
  const SCORE_SPEC = {name: 'chain', mods: [{name: 'alibi', alignment: 'bottom-right', slopes: null},
    {name: 'softcap', cap: 2}]};

  for (const cls of [MultiHeadAttention, FlashAttention] as LayerClass[]) {
    const Cls = cls as unknown as new (args: Kwargs) => AttentionLayerBase;
    test(`${cls.className} with maskMod or(prefixLm(2), slidingWindow(3)) and scoreMod chain(alibi(), ` +
         'softcap(2)): getConfig holds the specs; save -> tf.loadLayersModel predicts the same', async () => {
      const input = tf.input({shape: [T, E]});
      const layer = new Cls({numHeads: 2, causal: true, maskMod: maskMod(), scoreMod: scoreMod(), name: 'att'});
      const model = tf.model({inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor});
      const config = layer.getConfig();
      expect(config.maskMod).toEqual(MASK_SPEC);
      expect(config.scoreMod).toEqual(SCORE_SPEC);
      const loaded = await reloadedInMemory(model);
      expect(asSaved(loaded.getLayer('att').getConfig())).toEqual(asSaved(config));
      const x = randn([B, T, E], 4, 2);
      const y1 = model.predict(x) as tf.Tensor;
      const y2 = loaded.predict(x) as tf.Tensor;
      expect(maxDiff(y1, y2)).toBeLessThan(1e-6);
      // The mods change the output, so a reload that lost them would show.
      const plain = twin(() => new Cls({numHeads: 2, causal: true}), layer, x);
      const y0 = apply(plain, x);
      expect(maxDiff(y0, y1)).toBeGreaterThan(1e-3);
      tf.dispose([x, y0, y1, y2]);
      [model, loaded].forEach((m) => m.dispose());
      plain.dispose();
    });

    test(`${cls.className}: fromConfig(asSaved(getConfig())) rebuilds the mods (same config, same outputs); ` +
         'specs as arguments work as the mods; no maskMod / scoreMod keys without mods', () => {
      const x = randn([B, T, E], 5, 2);
      const layer = built(new Cls({numHeads: 2, causal: true, maskMod: slidingWindow(3), scoreMod: softcap(0.5)}), x);
      const config = layer.getConfig();
      expect(config.maskMod).toEqual({name: 'slidingWindow', window: 3, alignment: 'bottom-right'});
      expect(config.scoreMod).toEqual({name: 'softcap', cap: 0.5});
      const copy = built(cls.fromConfig(cls as never, asSaved(config) as tf.serialization.ConfigDict) as
        AttentionLayerBase, x);
      expect(asSaved(copy.getConfig())).toEqual(asSaved(config));
      copy.setWeights(layer.getWeights());
      const fromSpecs = twin(() => new Cls({numHeads: 2, causal: true, maskMod: {name: 'slidingWindow', window: 3},
        scoreMod: {name: 'softcap', cap: 0.5}}), layer, x);
      const [y, y1, y2] = [layer, copy, fromSpecs].map((l) => apply(l, x));
      expect(maxDiff(y, y1)).toBe(0);
      expect(maxDiff(y, y2)).toBe(0);
      const bare = new Cls({numHeads: 2, causal: true}).getConfig();
      expect(Object.keys(bare)).not.toContain('maskMod');
      expect(Object.keys(bare)).not.toContain('scoreMod');
      const onlyScore = new Cls({numHeads: 2, scoreMod: softcap(1)}).getConfig();
      expect(Object.keys(onlyScore)).not.toContain('maskMod');
      tf.dispose([x, y, y1, y2]);
      [layer, copy, fromSpecs].forEach((l) => l.dispose());
    });
  }
});

/** sum(y * cot) in float64, from the values. */
function weightedSum(y: tf.Tensor, cot: tf.Tensor): number {
  const a = y.dataSync();
  const c = cot.dataSync();
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * c[i];
  return s;
}

describe(title('call-time mods and block masks'), () => {
  // Each builds the call's score mod from a [H] tensor the test differentiates.
  const scored: {what: string; mod: (p: tf.Tensor) => ScoreMod; init: number[]}[] = [
    {what: 'alibi(slopes variable)', mod: (p) => alibi(p), init: [0.3, -0.2]},
    {what: 'capturing([temperature], score * t[h])', init: [1.3, 0.7], mod: (p) => capturing([p],
      (score, _b, h) => tf.mul(score, tf.reshape(tf.gather(p, tf.reshape(h, [-1])), [1, h.size, 1, 1])))},
  ];
  for (const s of scored) {
    test(`MultiHeadAttention (causal, layer scoreMod softcap(2)) with call-time ${s.what}: its gradient == ` +
         'central differences (1e-3)', () => {
      const x = randn([B, T, E], 6, 2);
      const cot = randn([B, T, E], 7);
      const layer = built(new MultiHeadAttention({numHeads: 2, causal: true, scoreMod: softcap(2)}), x);
      const p = tf.variable(tf.tensor1d(s.init), true, undefined, 'float32');
      const loss = (v: tf.Tensor) => tf.sum(tf.mul(apply(layer, x, {scoreMod: s.mod(v)}), cot)) as tf.Scalar;
      const [g] = tf.grads(loss)([p]);
      const {grads} = tf.variableGrads(() => loss(p), [p]);
      expectClose(grads[p.name], g, 1e-6);  // the same gradient for the variable read inside
      const eps = 1e-2;
      const fd = s.init.map((_, i) => {
        const at = (d: number) => tf.tidy(() => {
          const shifted = tf.tensor1d(s.init.map((v, k) => (k === i ? v + d : v)));
          return weightedSum(apply(layer, x, {scoreMod: s.mod(shifted)}), cot);
        });
        return (at(eps) - at(-eps)) / (2 * eps);
      });
      const numeric = tf.tensor1d(fd);
      expectClose(g, numeric, 1e-3);
      expect(Math.max(...fd.map(Math.abs))).toBeGreaterThan(1e-2);
      tf.dispose([x, cot, p, g, grads[p.name], numeric]);
      layer.dispose();
    });
  }

  test('a call-time scoreMod runs after the layer\'s: softcap layer + call alibi == plain layer + ' +
       'chainScores(softcap, alibi) != chainScores(alibi, softcap)', () => {
    const x = randn([B, T, E], 8, 2);
    const layer = built(new FlashAttention({numHeads: 2, causal: true, scoreMod: softcap(0.5)}), x);
    const plain = twin(() => new FlashAttention({numHeads: 2, causal: true}), layer, x);
    const slopes = [0.5, 0.25];
    const y = apply(layer, x, {scoreMod: alibi(slopes)});
    const after = apply(plain, x, {scoreMod: chainScores(softcap(0.5), alibi(slopes))});
    const before = apply(plain, x, {scoreMod: chainScores(alibi(slopes), softcap(0.5))});
    expectClose(y, after, 1e-6);
    expect(maxDiff(y, before)).toBeGreaterThan(1e-3);
    tf.dispose([x, y, after, before]);
    [layer, plain].forEach((l) => l.dispose());
  });

  test('call-time maskMod documentMask(ids [B, T], 2 documents per row) on a causal layer == the dense ' +
       'attentionMask from the ids (output and dx, 1e-5)', () => {
    const ids = [[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]];
    const idTensor = tf.tensor2d(ids, [B, T], 'int32');
    const x = randn([B, T, E], 9);
    const cot = randn([B, T, E], 10);
    for (const layer of [new MultiHeadAttention({numHeads: 2, causal: true}),
      new FlashAttention({numHeads: 4, numKvHeads: 1, causal: true})]) {
      built(layer, x);
      const dense = denseMask((b, i, j) => j <= i && ids[b][i] === ids[b][j]);
      const run = (kwargs: Kwargs) => (a: tf.Tensor) => tf.sum(tf.mul(apply(layer, a, kwargs), cot));
      const mod = documentMask(idTensor);
      const [y, yRef] = [apply(layer, x, {maskMod: mod}), apply(layer, x, {attentionMask: dense})];
      const [dx, dxRef] = [tf.grads(run({maskMod: mod}))([x])[0], tf.grads(run({attentionMask: dense}))([x])[0]];
      expectClose(y, yRef, 1e-5);
      expectClose(dx, dxRef, 1e-5);
      const causalOnly = apply(layer, x);
      expect(maxDiff(causalOnly, y)).toBeGreaterThan(1e-3);
      tf.dispose([dense, y, yRef, dx, dxRef, causalOnly]);
      layer.dispose();
    }
    tf.dispose([idTensor, x, cot]);
  });

  test('a call-time blockMask (createBlockMask, blockSize 3) == the dense mask, shared [1, 1, T, S] and per ' +
       'batch [B, 1, T, S]; it stays usable after the call', () => {
    const ids = [[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 1]];
    const idTensor = tf.tensor2d(ids, [B, T], 'int32');
    const x = randn([B, T, E], 11);
    const layer = built(new MultiHeadAttention({numHeads: 2, causal: true}), x);
    const masks: {mask: tf.Tensor; blockMask: ReturnType<typeof createBlockMask>}[] = [
      {mask: denseMask(windowOf(2)),
        blockMask: createBlockMask(slidingWindow(2), 1, 1, T, T, {blockSize: 3})},
      {mask: denseMask((b, i, j) => ids[b][i] === ids[b][j] && j <= i),
        blockMask: createBlockMask(documentMask(idTensor), B, 1, T, T, {blockSize: 3})},
      // Two sink keys or a window (a custom mod in it), and the layer's causal rule.
      {mask: denseMask((_b, i, j) => j <= i && (j < 2 || i - j < 2)),
        blockMask: createBlockMask(orMasks((_b, _h, _q, kv) => tf.less(kv, 2), slidingWindow(2)), 1, 1, T, T,
          {blockSize: [2, 3]})},
      // A band i - 2 <= j <= i + 1, not causal itself: the layer's causal rule cuts it to a window of 3.
      {mask: denseMask(windowOf(3)),
        blockMask: createBlockMask(andMasks((_b, _h, q, kv) => tf.lessEqual(kv, tf.add(q, 1)),
          (_b, _h, q, kv) => tf.less(tf.sub(q, kv), 3)), 1, 1, T, T)},
    ];
    for (const {mask, blockMask} of masks) {
      const y = apply(layer, x, {blockMask});
      const again = apply(layer, x, {blockMask});
      const ref = apply(layer, x, {attentionMask: mask});
      expectClose(y, ref, 1e-5);
      expect(maxDiff(y, again)).toBe(0);
      tf.dispose([mask, y, again, ref]);
      blockMask.dispose();
    }
    tf.dispose([idTensor, x]);
    layer.dispose();
  });

  test('a call-time blockMask built for another [B, H, T, S] throws DIMENSION_MISMATCH', () => {
    const x = randn([B, T, E], 12);
    const layer = built(new FlashAttention({numHeads: 2, causal: true}), x);
    const wrong: [number, number, number, number][] = [[1, 1, 5, 5], [1, 1, T, T + 1], [3, 1, T, T], [1, 4, T, T]];
    for (const [b, h, t, s] of wrong) {
      const blockMask = createBlockMask(causalMask(), b, h, t, s);
      expectError(() => apply(layer, x, {blockMask}), 'DIMENSION_MISMATCH',
        new RegExp(`built for \\[B, H, T, S\\] = \\[${b}, ${h}, ${t}, ${s}\\], the call is \\[2, 2, 7, 7\\]`));
      blockMask.dispose();
    }
    tf.dispose(x);
    layer.dispose();
  });
});

describe(title('padding masks with mods'), () => {
  // Row 0 is padded on the left (its queries at 2.. would see keys 0, 1 in the window), row 1 on the right.
  const TOKENS = [[0, 0, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 0, 0]];
  const V = 10;

  for (const cls of [MultiHeadAttention, FlashAttention] as LayerClass[]) {
    test(`${cls.className} (maskMod slidingWindow(3)) after embedding({maskZero}): padded keys are never ` +
         'attended, == no mods with the dense mask, == the mask kwarg', () => {
      const Cls = cls as unknown as new (args: Kwargs) => AttentionLayerBase;
      const ids = tf.input({shape: [T], dtype: 'int32'});
      const emb = tf.layers.embedding({inputDim: V, outputDim: E, maskZero: true});
      const layer = new Cls({numHeads: 2, maskMod: slidingWindow(3)});
      const model = tf.model({inputs: ids, outputs: layer.apply(emb.apply(ids)) as tf.SymbolicTensor});
      const tokens = tf.tensor2d(TOKENS, [B, T], 'int32');
      const y = model.predict(tokens) as tf.Tensor;
      // The same with the padding rows of the embedding changed: the non-padded outputs stay.
      const [table] = emb.getWeights();
      const moved = tf.tidy(() => tf.concat([randn([1, E], 13, 5), tf.slice(table, [1, 0], [V - 1, E])]));
      emb.setWeights([moved]);
      const y2 = model.predict(tokens) as tf.Tensor;
      const real = denseMask((b, i) => TOKENS[b][i] !== 0, B, T, 1);                   // [B, T, 1]
      const [kept, kept2] = [y, y2].map((t) => tf.mul(t, real));
      expect(maxDiff(kept, kept2)).toBeLessThan(1e-6);
      // Without the padding mask the new padding rows do reach the other outputs.
      const x = tf.clone(emb.apply(tokens) as tf.Tensor);  // a clone carries no kerasMask
      const unmasked = tf.mul(apply(layer, x), real);
      expect(maxDiff(unmasked, kept2)).toBeGreaterThan(1e-3);
      // No mods, the dense mask: window, keys and queries not padding (padded queries: the bias only).
      const plain = twin(() => new Cls({numHeads: 2}), layer, x);
      const dense = denseMask((b, i, j) => windowOf(3)(b, i, j) && TOKENS[b][i] !== 0 && TOKENS[b][j] !== 0);
      const ref = apply(plain, x, {attentionMask: dense});
      expectClose(y2, ref, 1e-5);
      // tfjs' mask kwarg, eagerly, is the same padding.
      const padding = tf.notEqual(tokens, 0);
      const viaKwarg = apply(layer, x, {mask: padding});
      expectClose(viaKwarg, ref, 1e-5);
      tf.dispose([tokens, y, y2, moved, real, kept, kept2, x, unmasked, dense, ref, padding, viaKwarg]);
      model.dispose();
      plain.dispose();
    });
  }
});

describe(title('padding masks with mods: training'), () => {
  test('MultiHeadAttention (causal, maskMod slidingWindow(3)) after embedding({maskZero}) in a model: the ' +
       'gradients of every weight == no mods with the dense mask (1e-5), and model.fit runs', async () => {
    const tokens = [[0, 0, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 0, 0]];
    const ids = tf.input({shape: [T], dtype: 'int32'});
    // Seeded: the key bias's zero gradient is checked against rounding noise, which depends on the values.
    const emb = tf.layers.embedding({inputDim: 10, outputDim: E, maskZero: true,
      embeddingsInitializer: tf.initializers.randomUniform({minval: -0.05, maxval: 0.05, seed: 5})});
    const layer = new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3),
      kernelInitializer: tf.initializers.glorotUniform({seed: 6})});
    const model = tf.model({inputs: ids, outputs: layer.apply(emb.apply(ids)) as tf.SymbolicTensor});
    const input = tf.tensor2d(tokens, [B, T], 'int32');
    const cot = randn([B, T, E], 17);
    const x = tf.clone(emb.apply(input) as tf.Tensor);
    const plain = twin(() => new MultiHeadAttention({numHeads: 2}), layer, x);
    const dense = denseMask((b, i, j) => windowOf(3)(b, i, j) && tokens[b][i] !== 0 && tokens[b][j] !== 0);
    const gradsOf = (l: AttentionLayerBase, f: () => tf.Tensor) => {
      const weights = l.trainableWeights.map((w) => w.read() as tf.Variable);
      const {value, grads} = tf.variableGrads(() => tf.sum(tf.mul(f(), cot)) as tf.Scalar, weights);
      value.dispose();
      return weights.map((w) => grads[w.name]);
    };
    const got = gradsOf(layer, () => model.apply(input) as tf.Tensor);
    const want = gradsOf(plain, () => apply(plain, x, {attentionMask: dense}));
    expectAllClose(got, want, 1e-5, layer.trainableWeights.map((w) => w.name));
    model.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const history = await model.fit(input, cot, {epochs: 1, verbose: 0});
    expect(Number.isFinite(history.history.loss[0] as number)).toBe(true);
    tf.dispose([input, cot, x, dense, ...got, ...want]);
    model.dispose();
    plain.dispose();
  });
});

/** One cached call; the old cache is disposed. */
function step(layer: AttentionLayerBase, x: tf.Tensor, cache: AttentionCache): [tf.Tensor, AttentionCache] {
  const [y, next] = layer.apply(x, {cache}) as unknown as [tf.Tensor, AttentionCache];
  tf.dispose(Object.values(cache.tensors));
  return [y, next];
}

/** Decodes x [B, L, E] in steps of the given sizes from an empty cache; the outputs concatenated. */
function decodeInSteps(layer: AttentionLayerBase, x: tf.Tensor, sizes: number[], maxLength: number): tf.Tensor {
  let cache = layer.createCache(B, maxLength);
  const ys: tf.Tensor[] = [];
  let at = 0;
  for (const n of sizes) {
    const xs = tf.slice(x, [0, at, 0], [B, n, E]);
    let y: tf.Tensor;
    [y, cache] = step(layer, xs, cache);
    ys.push(y);
    xs.dispose();
    at += n;
  }
  tf.dispose(Object.values(cache.tensors));
  const out = tf.concat(ys, 1);
  tf.dispose(ys);
  return out;
}

describe(title('cached decoding with the layer\'s mods'), () => {
  const L = 11;
  const cases: {what: string; cls: LayerClass; args: Kwargs}[] = [
    {what: 'MultiHeadAttention H=2', cls: MultiHeadAttention, args: {numHeads: 2}},
    {what: 'FlashAttention H=4 G=2, rope', cls: FlashAttention, args: {numHeads: 4, numKvHeads: 2,
      positionEncoding: 'rope'}},
  ];
  for (const c of cases) {
    test(`${c.what}, causal, maskMod slidingWindow(4), scoreMod softcap(3): token by token, and a prefill of 5 ` +
         'then steps of 1 and 2, == the full forward (1e-5)', () => {
      const Cls = c.cls as unknown as new (args: Kwargs) => AttentionLayerBase;
      const x = randn([B, L, E], 14, 3);
      const layer = built(new Cls({...c.args, causal: true, maskMod: slidingWindow(4), scoreMod: softcap(3)}), x);
      const full = apply(layer, x);
      const single = decodeInSteps(layer, x, Array(L).fill(1), L + 1);
      const prefill = decodeInSteps(layer, x, [5, 1, 2, 1, 2], L);
      expectClose(single, full, 1e-5);
      expectClose(prefill, full, 1e-5);
      // Each mod changes the full forward, so a step that dropped one would show.
      for (const other of [{scoreMod: softcap(3)}, {maskMod: slidingWindow(4)}]) {
        const without = twin(() => new Cls({...c.args, causal: true, ...other}), layer, x);
        const y = apply(without, x);
        expect(maxDiff(y, full)).toBeGreaterThan(1e-3);
        tf.dispose(y);
        without.dispose();
      }
      tf.dispose([x, full, single, prefill]);
      layer.dispose();
    });
  }
});

describe(title('mods: refusals and leaks'), () => {
  test('constructor: a custom mod, a mod holding tensors or a spec of the wrong kind is INVALID_CONFIG; ' +
       'MultiHeadAttention with mods and dropout > 0 is UNSUPPORTED', () => {
    const ids = tf.tensor1d([0, 0, 1], 'int32');
    const table = tf.zeros([2, 5]);
    const slopes = tf.tensor1d([0.5, 0.25]);
    const custom: MaskMod = (_b, _h, q, kv) => tf.lessEqual(kv, q);
    const customScore: ScoreMod = (s) => s;
    for (const cls of [MultiHeadAttention, FlashAttention] as LayerClass[]) {
      const Cls = cls as unknown as new (args: Kwargs) => AttentionLayerBase;
      const atCall = (name: string) => new RegExp(`layer's ${name} must be a built-in without tensors.*` +
        `give other mods at call time: layer\\.apply\\(x, \\{${name}\\}\\)`);
      expectError(() => new Cls({numHeads: 2, maskMod: custom}), 'INVALID_CONFIG', atCall('maskMod'));
      expectError(() => new Cls({numHeads: 2, maskMod: documentMask(ids)}), 'INVALID_CONFIG', atCall('maskMod'));
      expectError(() => new Cls({numHeads: 2, scoreMod: customScore}), 'INVALID_CONFIG', atCall('scoreMod'));
      expectError(() => new Cls({numHeads: 2, scoreMod: alibi(slopes)}), 'INVALID_CONFIG', atCall('scoreMod'));
      expectError(() => new Cls({numHeads: 2, scoreMod: relativePositionBias(table)}), 'INVALID_CONFIG',
        atCall('scoreMod'));
      expectError(() => new Cls({numHeads: 2, scoreMod: capturing([slopes], softcap(2))}), 'INVALID_CONFIG',
        atCall('scoreMod'));
      expectError(() => new Cls({numHeads: 2, maskMod: softcap(2)}), 'INVALID_CONFIG', /does not describe a mask mod/);
      expectError(() => new Cls({numHeads: 2, scoreMod: slidingWindow(2)}), 'INVALID_CONFIG',
        /does not describe a score mod/);
      expectError(() => new Cls({numHeads: 2, maskMod: {name: 'window', window: 2}}), 'INVALID_CONFIG',
        /does not describe a mask mod.*'causal', 'slidingWindow', 'prefixLm', 'and', 'or'/);
    }
    expectError(() => new MultiHeadAttention({numHeads: 2, dropout: 0.1, maskMod: slidingWindow(2)}), 'UNSUPPORTED',
      /no attention dropout \(received dropout 0\.1\)/);
    expectError(() => new MultiHeadAttention({numHeads: 2, dropout: 0.1, scoreMod: softcap(2)}), 'UNSUPPORTED',
      /no attention dropout/);
    tf.dispose([ids, table, slopes]);
  });

  test('call: mods on a symbolic apply, with returnAttentionScores, with a cache, on linear and local-global ' +
       'attention are UNSUPPORTED; a maskMod that is not a function is INVALID_CONFIG', () => {
    const x = randn([B, T, E], 15);
    const mha = built(new MultiHeadAttention({numHeads: 2, causal: true}), x);
    const withMods = built(new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3)}), x);
    const symbolic = tf.input({shape: [T, E]});
    expectError(() => mha.apply(symbolic, {maskMod: slidingWindow(2)}), 'UNSUPPORTED',
      /maskMod cannot be given when building a model graph/);
    expectError(() => mha.apply(symbolic, {scoreMod: softcap(2), maskMod: causalMask()}), 'UNSUPPORTED',
      /maskMod, scoreMod cannot be given when building a model graph/);
    expectError(() => withMods.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED',
      /never forms the attention scores: leave returnAttentionScores out/);
    expectError(() => mha.apply(x, {returnAttentionScores: true, scoreMod: softcap(2)}), 'UNSUPPORTED',
      /never forms the attention scores/);
    const dropping = built(new MultiHeadAttention({numHeads: 2, dropout: 0.2}), x);
    expectError(() => dropping.apply(x, {training: true, maskMod: slidingWindow(2)}), 'UNSUPPORTED',
      /no attention dropout \(the layer's dropout is 0\.2\): call with training false/);
    const cache = withMods.createCache(B, 4);
    const xs = tf.slice(x, [0, 0, 0], [B, 1, E]);
    expectError(() => withMods.apply(xs, {cache, scoreMod: softcap(2)}), 'UNSUPPORTED',
      /scoreMod cannot be given with a cache; a cached step applies the layer's own maskMod and scoreMod/);
    expectError(() => mha.apply(x, {maskMod: 3}), 'INVALID_CONFIG', /maskMod must be a function, received 3/);
    expectError(() => mha.apply(x, {scoreMod: {name: 'softcap', cap: 2}}), 'INVALID_CONFIG',
      /scoreMod must be a function/);
    expectError(() => mha.apply(x, {blockMask: {}}), 'INVALID_CONFIG', /blockMask must come from createBlockMask/);
    const others = [new LinearAttention({numHeads: 2, seed: 1}),
      new LocalGlobalAttention({numHeads: 2, windowSize: 2})];
    for (const other of others) {
      built(other, x);
      expectError(() => other.apply(x, {maskMod: slidingWindow(2)}), 'UNSUPPORTED',
        new RegExp(`${other.getClassName()} does not take maskMod: mask and score mods run in flexAttention`));
      expectError(() => other.apply(x, {scoreMod: softcap(2)}), 'UNSUPPORTED', /does not take scoreMod/);
      expectError(() => new (other.constructor as new (a: Kwargs) => AttentionLayerBase)({numHeads: 2,
        maskMod: slidingWindow(2)}), 'INVALID_CONFIG', /maskMod/);
      other.dispose();
    }
    tf.dispose([x, xs, Object.values(cache.tensors)]);
    [mha, withMods, dropping].forEach((l) => l.dispose());
  });

  test('no leaks: a call with layer and call-time mods (forward, dx, weight grads) and with a call-time ' +
       'blockMask', () => {
    const x = randn([B, T, E], 16);
    const ids = tf.tensor2d([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], [B, T], 'int32');
    const slopes = tf.variable(tf.tensor1d([0.5, 0.25]));
    for (const layer of [new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3),
      scoreMod: softcap(2)}), new FlashAttention({numHeads: 2, causal: true, scoreMod: softcap(2)})]) {
      built(layer, x);
      const kwargs = {maskMod: documentMask(ids), scoreMod: alibi(slopes)};
      expectNoLeaks(() => tf.dispose(apply(layer, x, kwargs)));
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(apply(layer, a, kwargs)))([x])));
      expectNoLeaks(() => {
        const {value, grads} = tf.variableGrads(() => tf.sum(apply(layer, x, kwargs)) as tf.Scalar,
          [slopes, ...layer.trainableWeights.map((w) => w.read() as tf.Variable)]);
        tf.dispose([value, Object.values(grads)]);
      });
      expectNoLeaks(() => {
        const blockMask = createBlockMask(documentMask(ids), B, 1, T, T, {blockSize: 4});
        tf.dispose(apply(layer, x, {blockMask}));
        tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(apply(layer, a, {blockMask})))([x]));
        blockMask.dispose();
      });
      expectNoLeaks(() => {
        let cache = layer.createCache(B, 3);
        for (let i = 0; i < 3; i++) {
          const xs = tf.slice(x, [0, i, 0], [B, 1, E]);
          let y: tf.Tensor;
          [y, cache] = step(layer, xs, cache);
          tf.dispose([xs, y]);
        }
        tf.dispose(Object.values(cache.tensors));
      });
      layer.dispose();
    }
    tf.dispose([x, ids, slopes]);
  });

  test('no leaks: gradients of a call with the layer\'s maskMod and an attentionMask or a padding mask', () => {
    const x = randn([B, T, E], 18);
    const keyMask = denseMask((b, _i, j) => !(b === 1 && j === 6), B, 1, T);
    const padding = tf.tensor2d([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]);
    const layer = built(new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3)}), x);
    for (const kwargs of [{attentionMask: keyMask}, {mask: padding}]) {
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(apply(layer, a, kwargs)))([x])));
      expectNoLeaks(() => {
        const {value, grads} = tf.variableGrads(() => tf.sum(apply(layer, x, kwargs)) as tf.Scalar,
          layer.trainableWeights.map((w) => w.read() as tf.Variable));
        tf.dispose([value, Object.values(grads)]);
      });
    }
    tf.dispose([x, keyMask, padding]);
    layer.dispose();
  });
});
