// The attention options of MultiHeadAttention ('standard' and 'flash') and FlashAttention
// (softcap, slidingWindow, attentionSinks, qkNorm, outputGate, alibi), alone and together,
// against the float64 reference of support/options_reference.ts: the forward pass, and the
// gradients of sum(cot * y) for the inputs and every weight against central differences.
import * as tf from '@tensorflow/tfjs';
import {AttentionOptionArgs, FlashAttention, MultiHeadAttention, MultiHeadAttentionArgs} from '../../src';
import {seededValues, title} from '../support/helpers';
import {
  CausalSetting, FdGradient, fdGradient, fdSize, gradientError, layerWeights, OptionDims, OptionInputs,
  optionsLoss, OptionMasks, optionsReference, OptionSettings, OptionWeightName, optionWeightName, OptionWeights,
  referenceAlibiSlopes,
} from '../support/options_reference';

const TOL = 1e-4;
const [B, Eq, H, D] = [2, 8, 4, 4];

/**
 * padding: embedding maskZero style, the last 3 positions of batch 1 are padding (queries
 * and keys alike; queryMask and valueMask); attention: a seeded [B, T, S] attentionMask
 * (about 60% kept) whose row (0, 0) hides every key; emptyBatch: every key of batch 1 is
 * padding (valueMask; queryMask given too, all ones), so batch 1 sees nothing.
 */
type Padding = 'none' | 'padding' | 'attention' | 'emptyBatch';

interface OptionCase {
  T: number;
  /** Cross-attention: [query, value, key] with S keys (Ev = 6, Ek = 10). Default: self-attention. */
  S?: number;
  G: number;
  causal: CausalSetting;
  options?: AttentionOptionArgs;
  rope?: boolean;
  useBias?: boolean;
  padding?: Padding;
  /** FlashAttention's blockSize (its tiles), to cross tile edges at small T. */
  blockSize?: number;
}

function caseName(c: OptionCase): string {
  const o = c.options ?? {};
  const parts = [`T=${c.T}`];
  if (c.S != null) parts.push(`S=${c.S}`);
  parts.push(`G=${c.G}`, c.causal === false ? 'not causal' : `causal ${c.causal}`);
  if (o.softcap != null) parts.push(`softcap ${o.softcap}`);
  if (o.slidingWindow != null) parts.push(`slidingWindow ${o.slidingWindow}`);
  if (o.attentionSinks) parts.push('sinks');
  if (o.qkNorm != null) parts.push(`qkNorm ${o.qkNorm}${o.qkNormEpsilon != null ? ` eps ${o.qkNormEpsilon}` : ''}`);
  if (o.outputGate != null) parts.push(`gate ${o.outputGate}`);
  if (o.alibi) parts.push(o.alibi === 'learned' ? 'alibi learned' : 'alibi');
  if (c.rope) parts.push('rope');
  if (c.useBias === false) parts.push('no bias');
  if ((c.padding ?? 'none') !== 'none') parts.push(c.padding!);
  if (c.blockSize != null) parts.push(`blockSize ${c.blockSize}`);
  return parts.join(', ');
}

const IMPLEMENTATIONS: {name: string; make: (args: MultiHeadAttentionArgs, c: OptionCase) => tf.layers.Layer}[] = [
  {name: "MultiHeadAttention 'standard'", make: (args) => new MultiHeadAttention({...args, implementation: 'standard'})},
  {name: "MultiHeadAttention 'flash'", make: (args) => new MultiHeadAttention({...args, implementation: 'flash'})},
  {name: 'FlashAttention', make: (args, c) => new FlashAttention({...args, blockSize: c.blockSize ?? null})},
];

/** Everything a case's tests share: float64 data, the reference and its central differences. */
interface CaseData {
  dims: OptionDims;
  x: OptionInputs;
  w: OptionWeights;
  /** The weight names getWeights() must list, in order. */
  names: OptionWeightName[];
  shapes: Record<string, number[]>;
  settings: OptionSettings;
  masks: OptionMasks;
  /** 0/1 tensors' data for the layer: queryMask [B, T], valueMask [B, S], attentionMask [B, T, S]. */
  maskData: {queryMask?: number[]; valueMask?: number[]; attentionMask?: number[]};
  cot: Float64Array;
  y: Float64Array;
  probs: Float64Array | null;
  /** Central differences for each input ('query', 'value', 'key') and weight. */
  fd: Map<string, FdGradient>;
  /**
   * The least scale of an entrywise comparison: 1e-2 of the case's largest entry gradient, so a
   * gradient that is zero in exact arithmetic (the key bias's, where softmax ignores a shift of
   * every logit of a row) is held to 1e-6 of that, not to its own float32 noise.
   */
  floor: number;
}

/** The weights the layer must have, in getWeights() order, with their shapes. */
function expectedWeights(c: OptionCase, dims: OptionDims): [OptionWeightName, number[]][] {
  const {Ev, Ek, G, Dv, Eout} = dims;
  const o = c.options ?? {};
  const bias = c.useBias ?? true;
  const list: [OptionWeightName, number[], boolean][] = [
    ['query/kernel', [Eq, H, D], true], ['query/bias', [H, D], bias],
    ['key/kernel', [Ek, G, D], true], ['key/bias', [G, D], bias],
    ['value/kernel', [Ev, G, Dv], true], ['value/bias', [G, Dv], bias],
    ['attention_output/kernel', [H, Dv, Eout], true], ['attention_output/bias', [Eout], bias],
    ['sinks', [H], o.attentionSinks === true],
    ['query_norm/gamma', [D], o.qkNorm != null], ['key_norm/gamma', [D], o.qkNorm != null],
    ['gate/kernel', o.outputGate === 'elementwise' ? [Eq, H, Dv] : [Eq, H], o.outputGate != null],
    ['gate/bias', o.outputGate === 'elementwise' ? [H, Dv] : [H], o.outputGate != null && bias],
    ['alibi/slopes', [H], o.alibi === 'learned'],
  ];
  return list.filter(([, , on]) => on).map(([name, shape]) => [name, shape]);
}

/** Seeded values for a weight, on a scale that keeps every option's effect visible. */
function weightValues(name: OptionWeightName, n: number, seed: number): Float64Array {
  const u = Float64Array.from(seededValues(n, seed));
  const map = (f: (x: number) => number) => u.map(f);
  if (name.endsWith('/kernel')) return map((x) => (name === 'gate/kernel' ? 0.6 : 1) * x);
  if (name === 'sinks') return map((x) => 0.5 + x);
  if (name.endsWith('/gamma')) return map((x) => 1 + 0.4 * x);
  if (name === 'alibi/slopes') return map((x) => 0.05 + 0.12 * (x + 1));
  return map((x) => 0.3 * x); // biases
}

function prepare(c: OptionCase, seed: number): CaseData {
  const cross = c.S != null;
  const S = c.S ?? c.T;
  const [Ev, Ek] = cross ? [6, 10] : [Eq, Eq];
  const dims: OptionDims = {B, T: c.T, S, Eq, Ev, Ek, H, G: c.G, D, Dv: D, Eout: Eq};
  const query = Float64Array.from(seededValues(B * c.T * Eq, seed), (x) => 1.5 * x);
  // Self-attention: one array, so perturbing the query perturbs value and key too.
  const x: OptionInputs = cross
    ? {query, value: Float64Array.from(seededValues(B * S * Ev, seed + 1), (v) => 1.5 * v),
      key: Float64Array.from(seededValues(B * S * Ek, seed + 2), (v) => 1.5 * v)}
    : {query, value: query, key: query};
  const expected = expectedWeights(c, dims);
  const w: OptionWeights = {};
  const shapes: Record<string, number[]> = {};
  expected.forEach(([name, shape], n) => {
    w[name] = weightValues(name, shape.reduce((a, b) => a * b, 1), seed * 17 + n);
    shapes[name] = shape;
  });
  const o = c.options ?? {};
  const settings: OptionSettings = {causal: c.causal, ...o, rope: c.rope ? {} : null};

  const masks: OptionMasks = {};
  const maskData: CaseData['maskData'] = {};
  const padding = c.padding ?? 'none';
  if (padding === 'padding') {
    const keep = (L: number) => Array.from({length: B}, (_, b) => Array.from({length: L},
      (_, i) => (b === 1 && i >= L - 3 ? 0 : 1)));
    masks.queryMask = keep(c.T);
    masks.keyMask = keep(S);
  } else if (padding === 'emptyBatch') {
    masks.queryMask = Array.from({length: B}, () => Array.from({length: c.T}, () => 1));
    masks.keyMask = Array.from({length: B}, (_, b) => Array.from({length: S}, () => (b === 1 ? 0 : 1)));
  } else if (padding === 'attention') {
    const u = seededValues(B * c.T * S, seed + 5);
    masks.attentionMask = Array.from({length: B}, (_, b) => Array.from({length: c.T}, (_, i) =>
      Array.from({length: S}, (_, j) => (b === 0 && i === 0 ? 0 : u[(b * c.T + i) * S + j] < 0.6 ? 1 : 0))));
  }
  if (masks.queryMask != null) maskData.queryMask = (masks.queryMask as number[][]).flat();
  if (masks.keyMask != null) maskData.valueMask = (masks.keyMask as number[][]).flat();
  if (masks.attentionMask != null) maskData.attentionMask = (masks.attentionMask as number[][][]).flat(2);

  const cot = Float64Array.from(seededValues(B * c.T * Eq, seed + 9));
  const {y, probs} = optionsReference(dims, x, w, settings, masks);
  const loss = () => optionsLoss(dims, x, w, settings, masks, cot);
  const fd = new Map<string, FdGradient>();
  const inputs: [string, Float64Array][] = cross ? [['query', x.query], ['value', x.value], ['key', x.key]]
    : [['query', x.query]];
  for (const [name, a] of inputs) fd.set(name, fdGradient(loss, a, {seed: seed + name.length}));
  for (const [name] of expected) fd.set(name, fdGradient(loss, w[name]!, {seed: seed + name.length}));
  const floor = 1e-2 * Math.max(...[...fd.values()].filter((g) => g.mode === 'entries').map(fdSize), 0);
  return {dims, x, w, names: expected.map(([n]) => n), shapes, settings, masks, maskData, cot, y, probs, fd, floor};
}

/** max |a - e| / max(max |e|, 1e-6). */
function relError(a: ArrayLike<number>, e: Float64Array): number {
  if (a.length !== e.length) return Infinity;
  let scale = 1e-6;
  for (const v of e) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let n = 0; n < e.length; n++) {
    const d = Math.abs(a[n] - e[n]);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  return worst / scale;
}

/**
 * Builds the layer, sets the case's weights by name, and checks forward and gradients
 * (inputs and every weight). Returns the list of what is off, with the errors.
 */
function checkLayer(c: OptionCase, data: CaseData, make: (args: MultiHeadAttentionArgs) => tf.layers.Layer): string[] {
  const {dims, x} = data;
  const cross = c.S != null;
  const args: MultiHeadAttentionArgs = {numHeads: H, numKvHeads: c.G, headDim: D, causal: c.causal,
    useBias: c.useBias ?? true, positionEncoding: c.rope ? 'rope' : 'none', ...c.options};
  const layer = make(args);
  const input = (a: Float64Array, L: number, E: number) => tf.tensor3d(Float32Array.from(a), [B, L, E]);
  const query = tf.variable(input(x.query, dims.T, Eq));
  const value = cross ? tf.variable(input(x.value, dims.S, dims.Ev)) : null;
  const key = cross ? tf.variable(input(x.key, dims.S, dims.Ek)) : null;
  const inputs = cross ? [query, value!, key!] : query;
  const kwargs: Record<string, tf.Tensor> = {};
  const {queryMask, valueMask, attentionMask} = data.maskData;
  if (queryMask != null) kwargs.queryMask = tf.tensor2d(queryMask, [B, dims.T]);
  if (valueMask != null) kwargs.valueMask = tf.tensor2d(valueMask, [B, dims.S]);
  if (attentionMask != null) kwargs.attentionMask = tf.tensor3d(attentionMask, [B, dims.T, dims.S]);
  const cot = tf.tensor3d(Float32Array.from(data.cot), [B, dims.T, Eq]);
  const off: string[] = [];
  try {
    tf.dispose(layer.apply(inputs, kwargs) as tf.Tensor); // build
    const names = layer.weights.map((v) => optionWeightName(v.name));
    expect(names).toEqual(data.names);
    expect(layer.weights.map((v) => v.shape)).toEqual(data.names.map((n) => data.shapes[n]));
    const set = layer.weights.map((v) => tf.tensor(Float32Array.from(data.w[optionWeightName(v.name)!]!),
      v.shape as number[]));
    layer.setWeights(set);
    tf.dispose(set);
    // The weights read back are the ones set (to float32 precision).
    const back = layerWeights(layer);
    for (const n of data.names) {
      const e = relError(back[n]!, data.w[n]!);
      if (!(e <= 1e-6)) off.push(`${n} read back with error ${e.toExponential(2)}`);
    }

    const before = tf.memory().numTensors;
    // Forward.
    const y = layer.apply(inputs, kwargs) as tf.Tensor;
    const fwd = relError(y.dataSync(), data.y);
    if (!(fwd <= TOL)) off.push(`forward: relative error ${fwd.toExponential(3)}`);
    tf.dispose(y);
    // The attention probabilities, where the path forms them.
    if (layer instanceof MultiHeadAttention && layer.implementation === 'standard') {
      const [out, scores] = layer.apply(inputs, {...kwargs, returnAttentionScores: true}) as tf.Tensor[];
      const e = relError(scores.dataSync(), data.probs!);
      if (!(e <= TOL)) off.push(`attention scores: relative error ${e.toExponential(3)}`);
      tf.dispose([out, scores]);
    }
    // Gradients for the inputs and every weight.
    const weightVars = layer.trainableWeights.map((v) => v.read() as tf.Variable);
    const inputVars: [string, tf.Variable][] = cross ? [['query', query], ['value', value!], ['key', key!]]
      : [['query', query]];
    let result: {value: tf.Scalar; grads: tf.NamedTensorMap};
    try {
      result = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(inputs, kwargs) as tf.Tensor, cot)) as tf.Scalar,
        [...inputVars.map(([, v]) => v), ...weightVars]);
    } catch (e) {
      return [...off, `gradients threw ${(e as Error).name}: ${(e as Error).message}`];
    }
    const {value: lossValue, grads} = result;
    const checks: [string, tf.Variable][] = [...inputVars,
      ...layer.trainableWeights.map((v, n) => [optionWeightName(v.name)!, weightVars[n]] as [string, tf.Variable])];
    for (const [name, v] of checks) {
      const g = grads[v.name];
      const values = g == null ? new Float32Array(v.size) : g.dataSync();
      const fd = data.fd.get(name)!;
      const e = gradientError(values, fd, fd.mode === 'entries' ? data.floor : 0);
      if (g == null) off.push(`d${name}: no gradient`);
      if (!(e <= TOL)) off.push(`d${name} (${fd.mode}): relative error ${e.toExponential(3)}, |fd| ${fdSize(fd).toPrecision(3)}`);
    }
    tf.dispose([lossValue, Object.values(grads)]);
    const leaked = tf.memory().numTensors - before;
    if (leaked !== 0) off.push(`${leaked} tensors leaked`);
  } finally {
    tf.dispose([query, value, key, cot, Object.values(kwargs)].filter((t) => t != null) as tf.Tensor[]);
    layer.dispose();
  }
  return off;
}

/** Options off: the reference against the layer as it was before the options. */
const BASELINE: OptionCase[] = [
  {T: 1, G: 2, causal: 'bottom-right'},
  {T: 7, G: 4, causal: false, padding: 'padding'},
  {T: 7, S: 5, G: 2, causal: 'bottom-right', rope: true}, // rows 0 and 1 see no key
  {T: 7, S: 9, G: 1, causal: 'top-left', padding: 'attention', useBias: false},
  {T: 97, G: 1, causal: 'top-left', rope: true, padding: 'padding', blockSize: 16},
  {T: 130, G: 2, causal: 'bottom-right', padding: 'emptyBatch'},
];

/** Each option alone (T = 7), over head groupings and causal settings. */
const ALONE: OptionCase[] = [
  {T: 7, G: 4, causal: false, options: {softcap: 2}},
  {T: 7, G: 2, causal: 'bottom-right', options: {slidingWindow: 3}},
  {T: 7, G: 2, causal: false, options: {slidingWindow: 3}},
  {T: 7, G: 1, causal: 'top-left', options: {attentionSinks: true}},
  {T: 7, G: 2, causal: 'bottom-right', options: {qkNorm: 'rms'}},
  {T: 7, G: 2, causal: false, options: {qkNorm: 'layer', qkNormEpsilon: 1e-2}},
  {T: 7, G: 2, causal: 'bottom-right', options: {outputGate: 'headwise'}},
  {T: 7, G: 4, causal: 'top-left', options: {outputGate: 'elementwise'}},
  {T: 7, G: 2, causal: 'bottom-right', options: {alibi: true}},
  {T: 7, G: 1, causal: false, options: {alibi: 'learned'}},
];

/** Every option at once, and several together, with padding, empty rows and both alignments. */
const TOGETHER: OptionCase[] = [
  // Batch 1's only query and key are padding.
  {T: 1, G: 2, causal: 'bottom-right', rope: true, padding: 'padding', options: {softcap: 2, slidingWindow: 4,
    attentionSinks: true, qkNorm: 'rms', outputGate: 'elementwise', alibi: 'learned'}},
  // Bottom-right with T > S: queries 0 and 1 see no key.
  {T: 7, S: 5, G: 2, causal: 'bottom-right', rope: true, options: {softcap: 2, slidingWindow: 3,
    attentionSinks: true, qkNorm: 'layer', outputGate: 'headwise', alibi: true}},
  // Row (0, 0) of the attention mask hides every key.
  {T: 7, S: 9, G: 1, causal: 'top-left', padding: 'attention', options: {softcap: 3, slidingWindow: 4,
    attentionSinks: true, alibi: 'learned'}},
  // A score mod on the tiled path with a batch whose queries see no key.
  {T: 7, G: 2, causal: false, padding: 'emptyBatch', options: {softcap: 2, alibi: true}},
  {T: 7, S: 9, G: 2, causal: false, useBias: false, options: {slidingWindow: 3, attentionSinks: true,
    outputGate: 'elementwise', alibi: true, qkNorm: 'rms'}},
  {T: 97, G: 1, causal: 'top-left', rope: true, padding: 'padding', blockSize: 16, options: {softcap: 3,
    slidingWindow: 16, attentionSinks: true, qkNorm: 'rms', outputGate: 'headwise', alibi: true}},
  // Batch 1 sees no key at all.
  {T: 97, G: 2, causal: false, padding: 'emptyBatch', blockSize: 32, options: {slidingWindow: 20,
    attentionSinks: true, qkNorm: 'layer', alibi: 'learned'}},
  {T: 130, G: 2, causal: 'bottom-right', rope: true, padding: 'padding', options: {softcap: 3, slidingWindow: 50,
    attentionSinks: true, qkNorm: 'layer', outputGate: 'elementwise', alibi: 'learned'}},
  {T: 130, G: 4, causal: false, padding: 'attention', options: {softcap: 2, slidingWindow: 40, attentionSinks: true,
    outputGate: 'headwise', alibi: true}},
];

const CASES: OptionCase[] = [...BASELINE, ...ALONE, ...TOGETHER];

describe(title('attention options: initial weights'), () => {
  for (const [name, make] of [['MultiHeadAttention', (a: MultiHeadAttentionArgs) => new MultiHeadAttention(a)],
    ['FlashAttention', (a: MultiHeadAttentionArgs) => new FlashAttention(a)]] as const) {
    test(`${name}: sinks 0, norm gammas 1, gate bias 0, learned ALiBi slopes the standard ones`, () => {
      const layer = make({numHeads: H, numKvHeads: 2, headDim: D, attentionSinks: true, qkNorm: 'rms',
        outputGate: 'elementwise', alibi: 'learned'});
      const x = tf.zeros([1, 3, Eq]);
      tf.dispose(layer.apply(x) as tf.Tensor);
      const w = layerWeights(layer);
      expect(Array.from(w.sinks!)).toEqual([0, 0, 0, 0]);
      expect(Array.from(w['query_norm/gamma']!)).toEqual([1, 1, 1, 1]);
      expect(Array.from(w['key_norm/gamma']!)).toEqual([1, 1, 1, 1]);
      expect(Array.from(w['gate/bias']!).every((v) => v === 0)).toBe(true);
      expect(relError(w['alibi/slopes']!, Float64Array.from(referenceAlibiSlopes(H)))).toBeLessThan(1e-7);
      tf.dispose(x);
      layer.dispose();
    });
  }
});

describe(title('attention options == float64 reference'), () => {
  CASES.forEach((c, n) => {
    describe(caseName(c), () => {
      let data: CaseData;
      beforeAll(() => {
        data = prepare(c, 100 + 10 * n);
      });
      for (const impl of IMPLEMENTATIONS) {
        test(`${impl.name} == reference, forward and gradients`, () => {
          expect(checkLayer(c, data, (args) => impl.make(args, c))).toEqual([]);
        });
      }
    });
  });
});
