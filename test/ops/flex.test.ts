// flexAttention against a plain float64 reference (test/support/flex_reference.ts, itself checked
// against central differences): every built-in mask and score mod, custom mods capturing a
// tf.Variable and a plain tensor, and combinations; output, logsumexp and gradients (q, k, v and
// each captured tensor) over awkward lengths, S != T, GQA / MQA, both causal alignments, rows that
// see no key, and block masks with kept tiles or the mod run at call time. Then createBlockMask's
// tiles against a plain-JS classification, the products counted on cpu (empty tiles are never
// computed), no T x S tensor, sdpa without mods, leaks and errors.
import * as tf from '@tensorflow/tfjs';
import {flexAttention} from '../../src/ops/flex';
import {BlockMask, createBlockMask} from '../../src/ops/block_mask';
import {
  alibi, andMasks, capturing, documentMask, orMasks, prefixLm, relativePositionBias, slidingWindow, softcap,
} from '../../src/ops/flex_mods';
import {MaskMod, ScoreMod} from '../../src/ops/flex_types';
import {causalMask} from '../../src/ops/causal';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {allFinite} from '../support/cases';
import {BACKEND, expectClose, expectError, expectNoLeaks, randn, seededValues, title} from '../support/helpers';
import {
  asTensor, FlexDims, FlexForward, FlexGrads, flexForwardReference, flexGradsReference, FlexInputs, flexInputs,
  forEachScore, FlexReferenceMods, ScalarMod,
} from '../support/flex_reference';

type Alignment = 'bottom-right' | 'top-left';
type Visible = (b: number, h: number, i: number, j: number) => boolean;

/** A mask mod with its plain-JS predicate; the block mask is built with maskB x maskH pairs (1 = shared). */
interface Masked {maskMod: MaskMod; visible: Visible; maskB?: number; maskH?: number}

/** A score mod with its scalar twin, and the tensors it captures with their float64 gradients. */
interface Scored {
  scoreMod: ScoreMod;
  score: ScalarMod;
  params?: tf.Tensor[];
  paramGrads?: (f: FlexForward, g: FlexGrads) => Float64Array[];
}

interface FlexCase extends FlexDims {
  what: string;
  blockSize?: number | [number, number];
  scale?: number;
  /** The case has rows that see no key (checked: the reference finds some). */
  emptyRows?: boolean;
  /** The block mask is disposed before use: its kept tiles freed, the engine runs the mask mod on partial tiles. */
  modAtCall?: boolean;
  build: (c: FlexCase) => Partial<Masked> & Partial<Scored>;
}

/** Where query i sits on the keys' axis: i + (S - T) bottom-right, i top-left. */
function offset(c: FlexDims, a: Alignment): number {
  return a === 'top-left' ? 0 : c.S - c.T;
}

const values = (t: tf.Tensor) => Array.from(t.dataSync());

// Masks: the mod and the same rule written as a JS predicate.
function causal(c: FlexDims, a: Alignment = 'bottom-right'): Masked {
  const o = offset(c, a);
  return {maskMod: causalMask(a), visible: (_b, _h, i, j) => j <= i + o};
}

function window(c: FlexDims, w: number, a: Alignment = 'bottom-right'): Masked {
  const o = offset(c, a);
  return {maskMod: slidingWindow(w, a), visible: (_b, _h, i, j) => i + o - j >= 0 && i + o - j < w};
}

function prefix(c: FlexDims, n: number, a: Alignment = 'bottom-right'): Masked {
  const o = offset(c, a);
  return {maskMod: prefixLm(n, a), visible: (_b, _h, i, j) => j < n || j <= i + o};
}

/** Document ids from run lengths, one list per batch row ([S] ids when one list). */
function documents(c: FlexDims, lengths: number[][]): Masked {
  const ids = lengths.map((row) => row.flatMap((n, d) => Array<number>(n).fill(d)));
  ids.forEach((row) => expect(row.length).toBe(c.S));
  const docIds = ids.length === 1 ? tf.tensor1d(ids[0], 'int32') : tf.tensor2d(ids, [ids.length, c.S], 'int32');
  const o = c.S - c.T;
  return {maskMod: documentMask(docIds), maskB: ids.length,
    visible: (b, _h, i, j) => ids[ids.length === 1 ? 0 : b][i + o] === ids[ids.length === 1 ? 0 : b][j]};
}

function both(...ms: Masked[]): Masked {
  return {maskMod: andMasks(...ms.map((m) => m.maskMod)), maskB: Math.max(...ms.map((m) => m.maskB ?? 1)),
    visible: (b, h, i, j) => ms.every((m) => m.visible(b, h, i, j))};
}

function either(...ms: Masked[]): Masked {
  return {maskMod: orMasks(...ms.map((m) => m.maskMod)), maskB: Math.max(...ms.map((m) => m.maskB ?? 1)),
    visible: (b, h, i, j) => ms.some((m) => m.visible(b, h, i, j))};
}

// Score mods: the mod, the same score on one number with its derivative, and the gradients of
// the captured tensors as sums of dz times the mod's derivative in them.
const additive = (bias: (b: number, h: number, i: number, j: number) => number): ScalarMod =>
  ({value: (s, b, h, i, j) => s + bias(b, h, i, j), ds: () => 1});

/** ALiBi with slopes given as numbers (or the defaults, written out here) or as a learned tensor. */
function alibiMod(c: FlexDims, slopes: number[], how: 'default' | 'numbers' | 'tensor',
                  a: Alignment = 'bottom-right'): Scored {
  const o = offset(c, a);
  const score = additive((_b, h, i, j) => slopes[h] * (j - i - o));
  if (how !== 'tensor') return {scoreMod: how === 'default' ? alibi(null, a) : alibi(slopes, a), score};
  const t = tf.tensor1d(slopes);
  return {scoreMod: alibi(t, a), score, params: [t], paramGrads: (f, g) => {
    const d = new Float64Array(c.H);
    forEachScore(c, f, g, (dz, _s, _b, h, i, j) => { d[h] += dz * (j - i - o); });
    return [d];
  }};
}

function softcapMod(cap: number): Scored {
  const score: ScalarMod = {value: (s) => cap * Math.tanh(s / cap), ds: (s) => 1 - Math.tanh(s / cap) ** 2};
  return {scoreMod: softcap(cap), score};
}

/** A relative position bias table [rows, 2M + 1] of seeded values, its scalar twin and gradient. */
function relativeBias(c: FlexDims, rows: number, M: number, a: Alignment, seed: number): Scored {
  const table = randn([rows, 2 * M + 1], seed, 0.5);
  const w = values(table);
  const o = offset(c, a);
  const at = (h: number, i: number, j: number) =>
    (rows === 1 ? 0 : h) * (2 * M + 1) + Math.min(M, Math.max(-M, j - i - o)) + M;
  return {scoreMod: relativePositionBias(table, a), score: additive((_b, h, i, j) => w[at(h, i, j)]), params: [table],
    paramGrads: (f, g) => {
      const d = new Float64Array(w.length);
      forEachScore(c, f, g, (dz, _s, _b, h, i, j) => { d[at(h, i, j)] += dz; });
      return [d];
    }};
}

/** softcap(cap) of the relative bias: a custom mod composing two built-ins, the table captured. */
function softcapOfBias(c: FlexDims, cap: number, M: number, seed: number): Scored {
  const inner = relativeBias(c, c.H, M, 'bottom-right', seed);
  const outer = softcapMod(cap);
  const mod = inner.scoreMod;
  const scoreMod = capturing([inner.params![0]], (s, b, h, q, kv, ctx) => outer.scoreMod(mod(s, b, h, q, kv, ctx),
    b, h, q, kv, ctx));
  const z = (s: number, b: number, h: number, i: number, j: number) => inner.score.value(s, b, h, i, j);
  const score: ScalarMod = {value: (s, b, h, i, j) => outer.score.value(z(s, b, h, i, j), b, h, i, j),
    ds: (s, b, h, i, j) => outer.score.ds(z(s, b, h, i, j), b, h, i, j)};
  const o = offset(c, 'bottom-right');
  return {scoreMod, score, params: inner.params, paramGrads: (f, g) => {
    const d = new Float64Array((2 * M + 1) * c.H);
    forEachScore(c, f, g, (dz, s, b, h, i, j) => {
      d[h * (2 * M + 1) + Math.min(M, Math.max(-M, j - i - o)) + M] += dz * score.ds(s, b, h, i, j);
    });
    return [d];
  }};
}

/** s * w[h] + 0.1 * (j - i) with w [H] a tf.Variable (a multiplicative mod: d/ds = w[h]). */
function variableMod(c: FlexDims): Scored {
  const init = [0.5, 1.5, -1, 2].slice(0, c.H);
  const w = tf.tidy(() => tf.variable(tf.tensor1d(init)));
  const scoreMod = capturing([w], (s, _b, h, q, kv) => {
    const wh = tf.reshape(tf.gather(w, tf.reshape(h, [-1])), [1, h.size, 1, 1]);   // [1, heads, 1, 1]
    return tf.add(tf.mul(s, wh), tf.mul(tf.cast(tf.sub(kv, q), 'float32'), 0.1));
  });
  return {scoreMod, score: {value: (s, _b, h, i, j) => s * init[h] + 0.1 * (j - i), ds: (_s, _b, h) => init[h]},
    params: [w], paramGrads: (f, g) => {
      const d = new Float64Array(c.H);
      forEachScore(c, f, g, (dz, s, _b, h) => { d[h] += dz * s; });
      return [d];
    }};
}

/** s + bias[b, i] * (-1)^j with bias [B, T] a plain captured tensor. */
function biasTensorMod(c: FlexDims, seed: number): Scored {
  const bias = randn([c.B, c.T], seed);
  const w = values(bias);
  const sign = (j: number) => (j % 2 === 0 ? 1 : -1);
  const scoreMod = capturing([bias], (s, b, _h, q, kv) => {
    const rows = tf.gather(bias, tf.reshape(b, [-1]));                                      // [nb, T]
    const at = tf.reshape(tf.gather(rows, tf.reshape(q, [-1]), 1), [b.size, 1, q.size, 1]); // [nb, 1, bq, 1]
    const signs = tf.cast(tf.sub(1, tf.mul(2, tf.mod(kv, 2))), 'float32');                  // [1, 1, 1, n]
    return tf.add(s, tf.mul(at, signs));
  });
  return {scoreMod, score: additive((b, _h, i, j) => w[b * c.T + i] * sign(j)), params: [bias],
    paramGrads: (f, g) => {
      const d = new Float64Array(c.B * c.T);
      forEachScore(c, f, g, (dz, _s, b, _h, i, j) => { d[b * c.T + i] += dz * sign(j); });
      return [d];
    }};
}

/** Per batch entry and head: query i sees key j iff j <= i + 4h - 6b (a block mask of B x H pairs). */
function perPairMask(): Masked {
  const maskMod: MaskMod = (b, h, q, kv) =>
    tf.lessEqual(kv, tf.sub(tf.add(q, tf.mul(h, 4)), tf.mul(b, 6)));
  return {maskMod, maskB: 2, maskH: 4, visible: (b, h, i, j) => j <= i + 4 * h - 6 * b};
}

const dims = (B: number, H: number, G: number, T: number, S: number, D = 8, Dv = D) => ({B, H, G, T, S, D, Dv});

// T = 1, 7, 97, 130 with blocks of 64 (T, S not multiples), S != T, MHA / GQA / MQA.
const CASES: FlexCase[] = [
  {what: 'causal', ...dims(2, 4, 2, 97, 97, 12), build: (c) => causal(c)},
  {what: 'causal bottom-right, T > S: rows 0..32 see no key', ...dims(1, 4, 1, 130, 97, 8, 6), emptyRows: true,
    build: (c) => causal(c)},
  {what: 'causal top-left, T < S', ...dims(2, 2, 2, 7, 20, 12), build: (c) => causal(c, 'top-left')},
  {what: 'causal top-left, T > S', ...dims(1, 4, 2, 130, 97), build: (c) => causal(c, 'top-left')},
  {what: 'slidingWindow(16) bottom-right, S < T: rows 0..59 see no key', ...dims(1, 2, 1, 130, 70), emptyRows: true,
    build: (c) => window(c, 16)},
  {what: 'slidingWindow(5, top-left), S > T', ...dims(2, 4, 2, 7, 20), build: (c) => window(c, 5, 'top-left')},
  {what: 'prefixLm(10)', ...dims(1, 4, 4, 97, 97), build: (c) => prefix(c, 10)},
  {what: 'prefixLm(10, top-left), S > T', ...dims(1, 2, 1, 97, 130, 8, 5), build: (c) => prefix(c, 10, 'top-left')},
  {what: 'documentMask [S], 4 documents', ...dims(1, 2, 1, 130, 130), build: (c) => documents(c, [[20, 50, 1, 59]])},
  {what: 'andMasks(causal, documentMask [B, S])', ...dims(2, 4, 2, 97, 97),
    build: (c) => both(causal(c), documents(c, [[30, 30, 37], [5, 70, 22]]))},
  {what: 'andMasks(causal top-left, documentMask), S > T: rows before their document\'s start see no key',
    ...dims(1, 2, 2, 40, 100), emptyRows: true, build: (c) => both(causal(c, 'top-left'), documents(c, [[30, 70]]))},
  {what: 'orMasks(prefixLm(5), slidingWindow(8)), blocks 16 (rows of two runs)', ...dims(2, 4, 2, 97, 97),
    blockSize: 16, build: (c) => either(prefix(c, 5), window(c, 8))},
  {what: 'orMasks(prefixLm(5), slidingWindow(8)), S > T', ...dims(1, 4, 1, 97, 130),
    build: (c) => either(prefix(c, 5), window(c, 8))},
  {what: 'alibi() (default slopes) + causal block mask', ...dims(1, 4, 2, 97, 97),
    build: (c) => ({...causal(c), ...alibiMod(c, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8], 'default')})},
  {what: 'alibi(learned slopes tensor) + slidingWindow(24), S < T', ...dims(1, 4, 1, 130, 100),
    build: (c) => ({...window(c, 24), ...alibiMod(c, [0.5, -0.25, 0.1, 0.05], 'tensor')})},
  {what: 'alibi(number[], top-left), no block mask, S > T', ...dims(2, 2, 1, 7, 13),
    build: (c) => alibiMod(c, [0.3, 0.7], 'numbers', 'top-left')},
  {what: 'softcap(1.5) + causal, scale 1', ...dims(2, 2, 1, 97, 97), scale: 1,
    build: (c) => ({...causal(c), ...softcapMod(1.5)})},
  {what: 'relativePositionBias(table [H, 17]) + causal', ...dims(1, 4, 2, 130, 130),
    build: (c) => ({...causal(c), ...relativeBias(c, c.H, 8, 'bottom-right', 71)})},
  {what: 'relativePositionBias(table [1, 9], top-left), no block mask, S > T', ...dims(2, 2, 2, 7, 30),
    build: (c) => relativeBias(c, 1, 4, 'top-left', 72)},
  {what: 'custom softcap(relativePositionBias) capturing the table + documentMask', ...dims(1, 4, 4, 97, 97),
    scale: 1, build: (c) => ({...documents(c, [[40, 57]]), ...softcapOfBias(c, 2, 6, 73)})},
  {what: 'custom mod capturing a tf.Variable, s * w[h] + 0.1 (j - i), + prefixLm(6), S < T', ...dims(1, 4, 2, 97, 50),
    build: (c) => ({...prefix(c, 6), ...variableMod(c)})},
  {what: 'custom mod capturing a plain tensor bias[b, i] (-1)^j + a mask per (b, h), blocks [8, 4]',
    ...dims(2, 4, 2, 33, 40), blockSize: [8, 4], emptyRows: true,
    build: (c) => ({...perPairMask(), ...biasTensorMod(c, 74)})},
  // The block mask disposed: its partial tiles' masks come from the mod at every call.
  {what: 'mask mod at call time: orMasks(prefixLm(5), slidingWindow(8)), blocks 16', ...dims(1, 4, 2, 60, 60),
    blockSize: 16, modAtCall: true, build: (c) => either(prefix(c, 5), window(c, 8))},
  {what: 'mask mod at call time: a mask per (b, h) + bias[b, i] (-1)^j, blocks [8, 4]', ...dims(2, 4, 2, 33, 40),
    blockSize: [8, 4], modAtCall: true, emptyRows: true, build: (c) => ({...perPairMask(), ...biasTensorMod(c, 75)})},
  {what: 'mask mod at call time: causal bottom-right, T > S, blocks 16', ...dims(2, 2, 1, 40, 25), blockSize: 16,
    modAtCall: true, emptyRows: true, build: (c) => causal(c)},
  {what: 'T=1: alibi() over 3 heads (slopes 2^-4, 2^-8, 2^-2) + causal', ...dims(2, 3, 1, 1, 130),
    build: (c) => ({...causal(c), ...alibiMod(c, [2 ** -4, 2 ** -8, 2 ** -2], 'default')})},
  {what: 'T=1, S=1, no mods', ...dims(2, 2, 2, 1, 1), build: () => ({})},
];

function caseName(c: FlexCase): string {
  const blocks = Array.isArray(c.blockSize) ? `[${c.blockSize}]` : c.blockSize ?? 64;
  return `${c.what}; B=${c.B}, H=${c.H}, G=${c.G}, T=${c.T}, S=${c.S}, D=${c.D}, Dv=${c.Dv}, blocks ${blocks}`;
}

/** lse: -Infinity exactly where the reference's row sees no key, the rest within 1e-4. */
function expectLse(lse: tf.Tensor, want: Float64Array): void {
  const got = lse.dataSync();
  expect(Array.from(got, (x) => x === -Infinity)).toEqual(Array.from(want, (x) => x === -Infinity));
  const finite = (a: ArrayLike<number>) => Float64Array.from(Array.from(a).filter((x) => x !== -Infinity));
  const g = finite(got);
  expectClose(asTensor(g, [g.length]), asTensor(finite(want), [g.length]));
}

describe(title('the float64 flex reference'), () => {
  test('its analytic gradients == its own central differences, for q, k, v and a mod parameter (softcap of ALiBi ' +
      'with learned slopes, causal with T > S: row 0 sees no key; B=1, H=2, G=1, T=5, S=4, D=3, Dv=2)', () => {
    const d: FlexDims = dims(1, 2, 1, 5, 4, 3, 2);
    const f64 = (n: number, seed: number) => Float64Array.from(seededValues(n, seed));
    const x: FlexInputs = {dims: d, q: f64(30, 1), k: f64(12, 2), v: f64(8, 3)};
    const [dO, dLse] = [f64(20, 4), f64(10, 5)];
    const cap = 0.8;
    const modsOf = (slopes: Float64Array): FlexReferenceMods => {
      const z = (s: number, h: number, i: number, j: number) => (s + slopes[h] * (j - i + 1)) / cap;
      const score: ScalarMod = {value: (s, _b, h, i, j) => cap * Math.tanh(z(s, h, i, j)),
        ds: (s, _b, h, i, j) => 1 - Math.tanh(z(s, h, i, j)) ** 2};
      return {scale: 2, visible: (_b, _h, i, j) => j <= i - 1, score};
    };
    const slopes = Float64Array.from([0.7, -1.3]);
    const loss = (y: FlexInputs, sl: Float64Array) => {
      const f = flexForwardReference(y, modsOf(sl));
      let sum = 0;
      f.out.forEach((o, n) => { sum += o * dO[n]; });
      f.lse.forEach((l, n) => { if (l !== -Infinity) sum += l * dLse[n]; });
      return sum;
    };
    const fwd = flexForwardReference(x, modsOf(slopes));
    expect(fwd.lse[0]).toBe(-Infinity);
    const g = flexGradsReference(x, modsOf(slopes), fwd, dO, dLse);
    const dSlopes = new Float64Array(2);
    const ds = modsOf(slopes).score!.ds;
    forEachScore(d, fwd, g, (dz, s, _b, h, i, j) => { dSlopes[h] += dz * ds(s, 0, h, i, j) * (j - i + 1); });
    const eps = 1e-6;
    const central = (bump: (e: number) => number) => (bump(eps) - bump(-eps)) / (2 * eps);
    const within = (a: Float64Array, b: number[]) => a.forEach((y, n) => expect(Math.abs(y - b[n])).toBeLessThan(1e-7));
    for (const name of ['q', 'k', 'v'] as const) {
      within(g[`d${name}`], Array.from(x[name], (_, n) => central((e) => {
        const y = {...x, [name]: Float64Array.from(x[name], (t, m) => (m === n ? t + e : t))};
        return loss(y, slopes);
      })));
    }
    const bumped = (n: number, e: number) => Float64Array.from(slopes, (t, m) => (m === n ? t + e : t));
    within(dSlopes, [0, 1].map((n) => central((e) => loss(x, bumped(n, e)))));
    expect(Math.max(...Array.from(dSlopes, Math.abs))).toBeGreaterThan(1e-3);
  });
});

describe(title('flexAttention'), () => {
  // Every other case differentiates the logsumexp too (d lse / d z = P adds cotLse * P to dz).
  CASES.forEach((c, n) => {
    const withLseGrad = n % 2 === 1;
    const loss = withLseGrad ? 'sum(O * cot) + sum(lse * cotLse)' : 'sum(O * cot)';
    test(`flex == float64 reference: output, lse, gradients of ${loss} for q, k, v and captured tensors ` +
        `(${caseName(c)})`, () => {
      const owned: {dispose(): void}[] = []; // what the tidy does not free: captured tensors, the block mask
      tf.tidy(() => {
        const {B, H, T, S, D, Dv} = c;
        const built = c.build(c);
        owned.push(...built.params ?? []);
        const q = randn([B, H, T, D], 300 + 10 * n);
        const k = randn([B, c.G, S, D], 301 + 10 * n);
        const v = randn([B, c.G, S, Dv], 302 + 10 * n);
        const cot = randn([B, H, T, Dv], 303 + 10 * n);
        const cotLse = randn([B, H, T], 304 + 10 * n);
        const blockMask = built.maskMod == null ? null : createBlockMask(built.maskMod, built.maskB ?? 1,
          built.maskH ?? 1, T, S, {blockSize: c.blockSize ?? 64});
        if (blockMask != null) owned.push(blockMask);
        if (c.modAtCall) blockMask!.dispose();
        const opts = {blockMask, scoreMod: built.scoreMod, scale: c.scale};
        const mods: FlexReferenceMods = {scale: c.scale, score: built.score, visible: built.visible};
        const x = flexInputs(q, k, v);
        const ref = flexForwardReference(x, mods);

        // 1. Forward, with and without the logsumexp.
        const out = flexAttention(q, k, v, opts);
        expectClose(out, asTensor(ref.out, [B, H, T, Dv]));
        const withLse = flexAttention(q, k, v, {...opts, returnLse: true});
        expectClose(withLse.output, asTensor(ref.out, [B, H, T, Dv]));
        expectLse(withLse.lse, ref.lse);

        // 2. Rows that see no key: exactly zero (and lse -Infinity, above).
        const empty = Array.from(ref.lse.keys()).filter((r) => ref.lse[r] === -Infinity);
        if (c.emptyRows) expect(empty.length).toBeGreaterThan(0);
        const o = out.dataSync();
        for (const r of empty) for (let e = 0; e < Dv; e++) expect(o[r * Dv + e]).toBe(0);

        // 3. Gradients for q, k, v and the captured tensors, all finite; rows with no key get dq = 0.
        const caps = built.params ?? [];
        const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => {
          if (!withLseGrad) return tf.sum(tf.mul(flexAttention(a, b, d, opts), cot));
          const r = flexAttention(a, b, d, {...opts, returnLse: true});
          return tf.add(tf.sum(tf.mul(r.output, cot)), tf.sum(tf.mul(r.lse, cotLse)));
        };
        const got = tf.grads(f)([q, k, v, ...caps]);
        const want = flexGradsReference(x, mods, ref, Float64Array.from(values(cot)),
          withLseGrad ? Float64Array.from(values(cotLse)) : null);
        const wantCaps = built.paramGrads?.(ref, want) ?? [];
        expect(got.length).toBe(3 + wantCaps.length);
        [want.dq, want.dk, want.dv, ...wantCaps].forEach((w, i) => {
          expect(allFinite(got[i])).toBe(true);
          expectClose(got[i], asTensor(w, got[i].shape));
        });
        const dq = got[0].dataSync();
        for (const r of empty) for (let d = 0; d < D; d++) expect(dq[r * D + d]).toBe(0);
      });
      owned.forEach((x) => x.dispose());
    });
  });
});

/** The tiles of a visibility rule, classified in JS: [pair][i * nK + j] = 0 empty, 1 partial, 2 full. */
function tilesOf(visible: Visible, Bm: number, Hm: number, T: number, S: number, bq: number, bk: number): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < Bm; b++) {
    for (let h = 0; h < Hm; h++) {
      const states: number[] = [];
      for (let i0 = 0; i0 < T; i0 += bq) {
        for (let j0 = 0; j0 < S; j0 += bk) {
          let seen = 0;
          let all = 0;
          for (let i = i0; i < Math.min(T, i0 + bq); i++) {
            for (let j = j0; j < Math.min(S, j0 + bk); j++) {
              all++;
              if (visible(b, h, i, j)) seen++;
            }
          }
          states.push(seen === 0 ? 0 : seen === all ? 2 : 1);
        }
      }
      out.push(states);
    }
  }
  return out;
}

/** Sum of the areas of the tiles that are not empty, over every pair. */
function computedArea(tiles: number[][], T: number, S: number, bq: number, bk: number): number {
  const nK = Math.ceil(S / bk);
  let area = 0;
  for (const states of tiles) {
    states.forEach((st, x) => {
      const [i, j] = [Math.floor(x / nK), x % nK];
      if (st !== 0) area += (Math.min(T, (i + 1) * bq) - i * bq) * (Math.min(S, (j + 1) * bk) - j * bk);
    });
  }
  return area;
}

/** Multiply-adds of the BatchMatMul kernels of a profile: batch * m * n * k each, k read from a's shape. */
function productWork(kernels: Awaited<ReturnType<typeof tf.profile>>['kernels']): number {
  let work = 0;
  for (const kernel of kernels) {
    if (kernel.name !== 'BatchMatMul') continue;
    const a = kernel.inputShapes[0] as number[];
    const c = kernel.outputShapes[0] as number[];
    const [m, n] = c.slice(-2);
    const [a1, a2] = a.slice(-2);
    const k = a1 === m ? a2 : a1; // a is [m, k], or [k, m] transposed
    work += c.slice(0, -2).reduce((x, y) => x * y, 1) * m * n * k;
  }
  return work;
}

describe(title('createBlockMask'), () => {
  const SHAPES: {what: string; T: number; S: number; blockSize: number | [number, number]; Bm: number; Hm: number;
    make: (c: FlexDims) => Masked;}[] = [
    {what: 'causal bottom-right, T > S', T: 130, S: 97, blockSize: 64, Bm: 1, Hm: 1, make: (c) => causal(c)},
    {what: 'causal top-left, T < S', T: 40, S: 100, blockSize: 16, Bm: 1, Hm: 1, make: (c) => causal(c, 'top-left')},
    {what: 'slidingWindow(10), blocks [16, 8]', T: 97, S: 97, blockSize: [16, 8], Bm: 1, Hm: 1, make: (c) => window(c, 10)},
    {what: 'andMasks(causal, documentMask [B, S])', T: 96, S: 96, blockSize: 16, Bm: 2, Hm: 1,
      make: (c) => both(causal(c), documents(c, [[20, 30, 10, 36], [50, 46]]))},
    {what: 'orMasks(prefixLm(5), slidingWindow(8))', T: 97, S: 130, blockSize: 16, Bm: 1, Hm: 1,
      make: (c) => either(prefix(c, 5), window(c, 8))},
    {what: 'a mask per (b, h): j <= i + 4h - 6b, blocks [8, 4]', T: 33, S: 40, blockSize: [8, 4], Bm: 2, Hm: 4,
      make: () => perPairMask()},
  ];
  SHAPES.forEach((c) => {
    test(`tiles, block lists and computed fraction == a plain-JS classification (${c.what}, T=${c.T}, S=${c.S}, ` +
        `blocks ${c.blockSize}, B=${c.Bm}, H=${c.Hm})`, () => {
      tf.tidy(() => {
        const d = dims(c.Bm, c.Hm, 1, c.T, c.S);
        const m = c.make(d);
        const bm = createBlockMask(m.maskMod, c.Bm, c.Hm, c.T, c.S, {blockSize: c.blockSize});
        const [bq, bk] = typeof c.blockSize === 'number' ? [c.blockSize, c.blockSize] : c.blockSize;
        const [nQ, nK] = [Math.ceil(c.T / bq), Math.ceil(c.S / bk)];
        expect([bm.numQueryBlocks, bm.numKeyBlocks]).toEqual([nQ, nK]);
        const want = tilesOf(m.visible, c.Bm, c.Hm, c.T, c.S, bq, bk);
        // Every kind of tile occurs, so a classifier that confused two of them would fail.
        expect(new Set(want.flat())).toEqual(new Set([0, 1, 2]));
        for (let b = 0; b < c.Bm; b++) {
          for (let h = 0; h < c.Hm; h++) {
            const states = want[b * c.Hm + h];
            const got = Array.from({length: nQ * nK}, (_, x) => bm.state(b, h, Math.floor(x / nK), x % nK));
            expect(got).toEqual(states);
            const of = (xs: number[], s: number) => xs.map((x, n) => (x === s ? n : -1)).filter((n) => n >= 0);
            for (let i = 0; i < nQ; i++) {
              const row = states.slice(i * nK, (i + 1) * nK);
              expect(bm.keyBlocks(b, h, i)).toEqual({full: of(row, 2), partial: of(row, 1)});
            }
            for (let j = 0; j < nK; j++) {
              const col = Array.from({length: nQ}, (_, i) => states[i * nK + j]);
              expect(bm.queryBlocks(b, h, j)).toEqual({full: of(col, 2), partial: of(col, 1)});
            }
          }
        }
        const area = computedArea(want, c.T, c.S, bq, bk);
        expect(bm.computedFraction()).toBeCloseTo(area / (c.Bm * c.Hm * c.T * c.S), 12);
        // The picture: a header with the fraction, then one row of '·▒█' per query block of pair (0, 0).
        const lines = bm.toString().trimEnd().split('\n');
        expect(lines[0]).toBe(`BlockMask(B=${c.Bm}, H=${c.Hm}, T=${c.T}, S=${c.S}, blocks ${bq}x${bk}, ` +
          `${(100 * area / (c.Bm * c.Hm * c.T * c.S)).toFixed(1)}% computed)`);
        expect(lines.slice(1)).toEqual(Array.from({length: nQ}, (_, i) =>
          want[0].slice(i * nK, (i + 1) * nK).map((s) => '·▒█'[s]).join('')));
        bm.dispose();
      });
    });
  });

  test('a mask shared by every batch entry and head (B = H = 1) reads as the same tiles for any (b, h)', () => {
    tf.tidy(() => {
      const bm = createBlockMask(causalMask(), 1, 1, 40, 40, {blockSize: 16});
      expect(bm.state(3, 5, 0, 2)).toBe(bm.state(0, 0, 0, 2));
      expect(bm.state(3, 5, 2, 2)).toBe(1);
      expect(bm.keyBlocks(1, 7, 2)).toEqual({full: [0, 1], partial: [2]});
      bm.dispose();
    });
  });
});

describe(title('flexAttention without mods, products and memory'), () => {
  const SDPA = [dims(2, 4, 2, 97, 50, 12, 12), dims(1, 2, 1, 260, 40, 8, 6)];
  SDPA.forEach((c, n) => {
    test('no block mask and no score mod == scaledDotProductAttention within 1e-5, forward and gradients ' +
        `(B=${c.B}, H=${c.H}, G=${c.G}, T=${c.T}, S=${c.S}, D=${c.D}, Dv=${c.Dv})`, () => {
      tf.tidy(() => {
        const q = randn([c.B, c.H, c.T, c.D], 400 + n);
        const k = randn([c.B, c.G, c.S, c.D], 410 + n);
        const v = randn([c.B, c.G, c.S, c.Dv], 420 + n);
        const cot = randn([c.B, c.H, c.T, c.Dv], 430 + n);
        expectClose(flexAttention(q, k, v), scaledDotProductAttention(q, k, v), 1e-5);
        expectClose(flexAttention(q, k, v, {scale: 0.3}), scaledDotProductAttention(q, k, v, {scale: 0.3}), 1e-5);
        const loss = (f: (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => tf.Tensor) =>
          tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(f(a, b, d), cot)))([q, k, v]);
        const got = loss((a, b, d) => flexAttention(a, b, d));
        const want = loss((a, b, d) => scaledDotProductAttention(a, b, d));
        got.forEach((g, i) => expectClose(g, want[i], 1e-5));
      });
    });
  });

  // Counting products needs tfjs's own BatchMatMul on every product: the cpu backend (on wasm the
  // library's products may be split or run in its own kernels).
  if (BACKEND === 'cpu') {
    const COUNTED: {what: string; make: (c: FlexDims) => Masked | null}[] = [
      {what: 'no block mask (every tile)', make: () => null},
      {what: 'causal', make: (c) => causal(c)},
      {what: 'documentMask of 4 documents', make: (c) => documents(c, [[20, 30, 10, 36]])},
    ];
    COUNTED.forEach(({what, make}) => {
      test('forward + backward multiply exactly the non-empty tiles: 2 products forward, 5 backward, over their area ' +
          `(${what}, B=2, H=2, G=1, T=S=96, blocks 16, D=8, Dv=4)`, async () => {
        const c = dims(2, 2, 1, 96, 96, 8, 4);
        const {B, H, T, S, D, Dv} = c;
        const q = randn([B, H, T, D], 1);
        const k = randn([B, 1, S, D], 2);
        const v = randn([B, 1, S, Dv], 3);
        const cot = randn([B, H, T, Dv], 4);
        const m = make(c);
        const blockMask = m == null ? null : createBlockMask(m.maskMod, 1, 1, T, S, {blockSize: 16});
        const area = m == null ? T * S : computedArea(tilesOf(m.visible, 1, 1, T, S, 16, 16), T, S, 16, 16);
        if (m != null) expect(area).toBeLessThan(0.6 * T * S);
        const info = await tf.profile(() => tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
          tf.sum(tf.mul(flexAttention(a, b, d, {blockMask}), cot)))([q, k, v]));
        tf.dispose(info.result as tf.Tensor[]);
        expect(info.kernels.filter((x) => /MatMul/i.test(x.name)).every((x) => x.name === 'BatchMatMul')).toBe(true);
        // q k^T and P v forward; q k^T again, dO v^T, P^T dO, dS k, dS^T q backward: per score
        // 4 D + 3 Dv multiply-adds; and rowsum(dO * O) as one [B*H*T, 1, Dv] x [B*H*T, Dv, 1] product.
        const rows = B * H * T * Dv;
        expect((productWork(info.kernels) - rows) / (B * H * (4 * D + 3 * Dv))).toBe(area);
        tf.dispose([q, k, v, cot]);
        blockMask?.dispose();
      });
    });
  }

  test('no T x S tensor: each mask mod call covers at most a block row, the engine\'s only partial tiles, and no ' +
      'kernel output reaches B*H*T*S (andMasks(causal, documentMask) + alibi, T=S=256, blocks 32, B=1, H=2)', async () => {
    const [B, H, T, S, D] = [1, 2, 256, 256, 8];
    const ids = tf.tensor1d([50, 100, 6, 100].flatMap((n, d) => Array<number>(n).fill(d)), 'int32');
    const inner = andMasks(causalMask(), documentMask(ids));
    const maskSizes: number[] = [];
    const scoreSizes: number[] = [];
    const recorded: MaskMod = (b, h, qi, kv, ctx) => {
      maskSizes.push(b.size * h.size * qi.size * kv.size);
      return inner(b, h, qi, kv, ctx);
    };
    const slopes = alibi([0.5, 0.25]);
    const scoreMod: ScoreMod = (s, b, h, qi, kv, ctx) => {
      scoreSizes.push(s.size);
      return slopes(s, b, h, qi, kv, ctx);
    };
    const blockMask = createBlockMask(recorded, 1, 1, T, S, {blockSize: 32});
    expect(maskSizes).toEqual(Array<number>(T / 32).fill(32 * S));               // one block row [32, S] at a time
    const q = randn([B, H, T, D], 1);
    const k = randn([B, 1, S, D], 2);
    const v = randn([B, 1, S, D], 3);
    const largest = async () => {
      const info = await tf.profile(() => tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
        tf.sum(flexAttention(a, b, d, {blockMask, scoreMod})))([q, k, v]));
      tf.dispose(info.result as tf.Tensor[]);
      const sizes = info.kernels.flatMap((x) => x.outputShapes.map((s) => (s as number[]).reduce((p, y) => p * y, 1)));
      return Math.max(...sizes);
    };
    // With the partial tiles' masks kept, and with them freed (the engine then runs the mod on partial tiles).
    expect(await largest()).toBeLessThan(T * S);
    blockMask.dispose();
    const built = maskSizes.length;
    expect(await largest()).toBeLessThan(T * S);
    expect(maskSizes.length).toBeGreaterThan(built);
    expect(Math.max(...maskSizes, ...scoreSizes)).toBeLessThan(T * S);
    tf.dispose([q, k, v, ids]);
  });
});

describe(title('flexAttention leaks and errors'), () => {
  test('the backward needs neither the block mask nor its mod once the forward is done, even where no tile of any ' +
      'one batch entry is partial (entry 1 sees no key; the units join both entries); with and without a score mod', () => {
    const [B, H, T, S] = [2, 2, 5, 6];
    const q = randn([B, H, T, 4], 1);
    const k = randn([B, H, S, 4], 2);
    const v = randn([B, H, S, 4], 3);
    const dy = randn([B, H, T, 4], 4);
    for (const scoreMod of [softcap(2), null]) {
      const f = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
        // Entry 0 sees every key (its tiles full), entry 1 none (empty): the call's own mask and mod, freed here.
        const keep = tf.tensor2d([[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]);
        const mod: MaskMod = (b) => tf.reshape(tf.gather(keep, tf.reshape(b, [-1])), [-1, 1, 1, S]);
        const blockMask = createBlockMask(mod, B, 1, T, S, {blockSize: 4});
        const out = flexAttention(qq, kk, vv, {blockMask, scoreMod});
        blockMask.dispose();
        keep.dispose();
        return out;
      };
      const grads = tf.grads((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => tf.sum(tf.mul(f(qq, kk, vv), dy)))(
        [q, k, v]);
      const expected = tf.grads((qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
        const mask = tf.tensor4d([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [B, 1, 1, S]);
        const s = scoreMod == null ? null : scoreMod;
        const out = s == null ? scaledDotProductAttention(qq, kk, vv, {mask})
          : flexAttention(qq, kk, vv, {scoreMod: s, blockMask: createBlockMask(
            (b) => tf.reshape(tf.gather(tf.tensor1d([1, 0]), tf.reshape(b, [-1])), [-1, 1, 1, 1]), B, 1, T, S)});
        return tf.sum(tf.mul(out, dy));
      })([q, k, v]);
      grads.forEach((g, i) => expectClose(g, expected[i], 1e-5));
      tf.dispose([grads, expected]);
    }
    tf.dispose([q, k, v, dy]);
  });

  test('createBlockMask leaves no tensor once disposed, nor when its mask mod throws (outside any tidy; T=9, S=11, ' +
      'blocks 4)', () => {
    expectNoLeaks(() => createBlockMask(causalMask(), 1, 1, 9, 11, {blockSize: 4}).dispose());
    expectNoLeaks(() => expect(() => createBlockMask(() => tf.ones([2, 7], 'bool'), 1, 1, 9, 11)).toThrow());
  });

  test('no leaked tensors: forward, forward with lse, tf.grads for q, k, v and a captured tf.Variable, with a ' +
      'block mask keeping its tiles, then freed, then none (andMasks(causal, documentMask), blocks 4)', () => {
    const c = dims(2, 4, 2, 9, 11);
    const q = randn([2, 4, 9, 8], 1);
    const k = randn([2, 2, 11, 8], 2);
    const v = randn([2, 2, 11, 8], 3);
    const ids = tf.tensor1d([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 'int32');
    // Built in a tidy: what createBlockMask itself may leave is the test above's.
    let blockMask!: BlockMask;
    const maskMod = andMasks(causalMask(), documentMask(ids));
    tf.tidy(() => { blockMask = createBlockMask(maskMod, 1, 1, 9, 11, {blockSize: 4}); });
    const {scoreMod, params} = variableMod(c);
    for (const bm of [blockMask, blockMask, null]) {
      const opts = {blockMask: bm, scoreMod};
      expectNoLeaks(() => tf.dispose(flexAttention(q, k, v, opts)));
      expectNoLeaks(() => {
        const {output, lse} = flexAttention(q, k, v, {...opts, returnLse: true});
        tf.dispose([output, lse]);
      });
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) =>
        tf.sum(flexAttention(a, b, d, opts)))([q, k, v, ...params!])));
      expectNoLeaks(() => tf.dispose(tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => {
        const r = flexAttention(a, b, d, {...opts, returnLse: true});
        return tf.add(tf.sum(r.output), tf.sum(tf.where(tf.isFinite(r.lse), r.lse, 0)));
      })([q, k, v, ...params!])));
      // Then with the kept tiles freed (the mod runs at call time), then without a block mask.
      blockMask.dispose();
    }
    tf.dispose([q, k, v, ids, ...params!]);
  });

  describe('errors', () => {
    let q: tf.Tensor;
    let k: tf.Tensor;
    beforeAll(() => { q = tf.zeros([1, 4, 3, 8]); k = tf.zeros([1, 2, 5, 8]); });
    afterAll(() => tf.dispose([q, k]));

    test('a block mask built for other dims is DIMENSION_MISMATCH; anything else than a BlockMask is INVALID_CONFIG', () => {
      for (const [B, H, T, S] of [[1, 1, 3, 6], [1, 1, 4, 5], [1, 2, 3, 5], [2, 1, 3, 5]]) {
        const bm = createBlockMask(causalMask(), B, H, T, S);
        expectError(() => flexAttention(q, k, k, {blockMask: bm}), 'DIMENSION_MISMATCH',
          new RegExp(`block mask was built for \\[B, H, T, S\\] = \\[${B}, ${H}, ${T}, ${S}\\], the attention is \\[1, 4, 3, 5\\]`));
        bm.dispose();
      }
      const dense = causalMask(3, 5);
      for (const bad of [dense, {state: () => 2}, causalMask()]) {
        expectError(() => flexAttention(q, k, k, {blockMask: bad as never}), 'INVALID_CONFIG',
          /blockMask must be a BlockMask from createBlockMask\(maskMod, B, H, T, S\), received/);
      }
      dense.dispose();
    });

    test('options of other ops are refused with what to give instead; a misspelt one with the nearest name', () => {
      const mask = tf.ones([3, 5], 'bool');
      expectError(() => flexAttention(q, k, k, {mask} as never), 'INVALID_CONFIG',
        /flexAttention does not take 'mask' .*give a blockMask: createBlockMask\(maskMod, B, H, T, S\)/);
      expectError(() => flexAttention(q, k, k, {causal: true} as never), 'INVALID_CONFIG', /createBlockMask\(causalMask\(\)/);
      expectError(() => flexAttention(q, k, k, {blockSize: 16} as never), 'INVALID_CONFIG', /createBlockMask\(\.\.\., \{blockSize\}\)/);
      expectError(() => flexAttention(q, k, k, {scoreMods: softcap(1)} as never), 'INVALID_CONFIG',
        /unknown argument 'scoreMods' for flexAttention; did you mean 'scoreMod'\?/);
      expectError(() => flexAttention(q, k, k, {scoreMod: 3} as never), 'INVALID_CONFIG', /scoreMod must be a function, received 3/);
      mask.dispose();
    });

    test('a score mod that changes the score\'s shape or dtype throws, naming the shape, and leaks nothing', () => {
      const shrink: ScoreMod = (s) => tf.sum(s, -1);
      expectError(() => flexAttention(q, k, k, {scoreMod: shrink}), 'DIMENSION_MISMATCH',
        /a score mod must return a float32 tensor of the score's shape \[1, 4, 3, 5\], received a float32 tensor of shape \[1, 4, 3\]/);
      const toInt: ScoreMod = (s) => tf.cast(s, 'int32');
      expectError(() => flexAttention(q, k, k, {scoreMod: toInt}), 'DIMENSION_MISMATCH',
        /received an? int32 tensor of shape \[1, 4, 3, 5\]/);
      expectNoLeaks(() => expect(() => flexAttention(q, k, k, {scoreMod: shrink})).toThrow());
    });

    test('a mask mod whose result does not broadcast to its tile, or is no tensor, is INVALID_MASK', () => {
      expectError(() => createBlockMask(() => tf.ones([2, 7], 'bool'), 1, 1, 3, 5), 'INVALID_MASK',
        /a mask mod must return a bool tensor broadcastable to the tile \[1, 1, 3, 5\] of its index tensors, received a bool tensor of shape \[2, 7\]/);
      expectError(() => createBlockMask((() => true) as never, 1, 1, 3, 5), 'INVALID_MASK', /received true/);
    });

    test('documentMask ids that do not cover the keys or the batch are DIMENSION_MISMATCH; ids not int32 INVALID_CONFIG', () => {
      const ids = tf.tensor1d([0, 0, 1, 1, 1], 'int32');
      expectError(() => createBlockMask(documentMask(ids), 1, 1, 8, 8), 'DIMENSION_MISMATCH',
        /documentMask's docIds cover 5 positions, but the keys have 8/);
      const rows = tf.tensor2d([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]], [2, 5], 'int32');
      expectError(() => createBlockMask(documentMask(rows), 1, 1, 5, 5), 'DIMENSION_MISMATCH',
        /docIds have 2 rows, but the batch has 1 entries \(pass the batch size to createBlockMask\)/);
      const floats = tf.tensor1d([0, 0, 1, 1, 1]);
      expectError(() => documentMask(floats), 'INVALID_CONFIG', /docIds must be an int32 tensor of shape \[S\] or \[B, S\]/);
      tf.dispose([ids, rows, floats]);
    });

    test('createBlockMask with a bad blockSize or an unknown option is INVALID_CONFIG', () => {
      for (const [size, shown] of [[0, '0'], [2.5, '2\\.5'], [[16], '\\[16\\]'], [[16, 0], '\\[16, 0\\]'],
        ['16', "'16'"]] as const) {
        expectError(() => createBlockMask(causalMask(), 1, 1, 8, 8, {blockSize: size as never}), 'INVALID_CONFIG',
          new RegExp(`blockSize must be a positive integer or \\[queryBlock, keyBlock\\] of them, received ${shown}$`));
      }
      expectError(() => createBlockMask(causalMask(), 1, 1, 8, 8, {block: 16} as never), 'INVALID_CONFIG',
        /unknown argument 'block' for createBlockMask/);
    });
  });
});
