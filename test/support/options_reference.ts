/**
 * A plain float64 reference of a whole MultiHeadAttention / FlashAttention forward pass with
 * the attention options (softcap, slidingWindow, attentionSinks, qkNorm, outputGate, alibi),
 * and gradients of L = sum(cot * y) by central finite differences. Loops over one
 * (b, h, i, j) at a time on Float64Arrays; no tf op and nothing shared with src/.
 *
 * The forward, with q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] the per-head projections
 * (Keras layout: kernel [E, N, X], bias [N, X]) and query head h reading kv head
 * floor(h / (H / G)):
 *   1. qkNorm, each q and k vector over D: 'rms' x * gamma / sqrt(mean(x^2) + eps),
 *      'layer' (x - mean) * gamma / sqrt(var + eps) (population variance, no beta).
 *   2. RoPE (halves convention, positions 0 .. T - 1 and 0 .. S - 1).
 *   3. s = q.k / sqrt(D).  4. softcap: s = c tanh(s / c).
 *   5. alibi: s -= slope_h |i' - j|, i' = i + S - T for bottom-right causal, else i.
 *   6. visible: key and attention masks, causal (j <= i'), sliding window (causal:
 *      0 <= i' - j < W; not causal: |i - j| < W). A padded query sees no key.
 *   7. p_ij = exp(s_ij) / (sum over visible j of exp(s_ij) + exp(sink_h)); no sink term
 *      without attentionSinks. A row with no visible key gives zeros.
 *   8. O = p v.  9. outputGate from the query input: O *= sigmoid(x_q Wg + bg), one gate
 *      per head ('headwise', Wg [Eq, H]) or per channel ('elementwise', Wg [Eq, H, Dv]).
 *  10. y = sum_h O_h Wo_h + bo.
 */
import * as tf from '@tensorflow/tfjs';
import {seededValues} from './helpers';

// Math's functions by their short names, for the loops below.
const {abs, cos, exp, floor, max, pow, sin, sqrt, tanh} = Math;

/** The weights in the order getWeights() lists those that exist. */
export const OPTION_WEIGHT_NAMES = [
  'query/kernel', 'query/bias', 'key/kernel', 'key/bias', 'value/kernel', 'value/bias',
  'attention_output/kernel', 'attention_output/bias',
  'sinks', 'query_norm/gamma', 'key_norm/gamma', 'gate/kernel', 'gate/bias', 'alibi/slopes',
] as const;
export type OptionWeightName = typeof OPTION_WEIGHT_NAMES[number];
/** Flat row-major float64 weights by name; a missing bias means useBias false. */
export type OptionWeights = Partial<Record<OptionWeightName, Float64Array>>;

export interface OptionDims {
  B: number; T: number; S: number; Eq: number; Ev: number; Ek: number;
  H: number; G: number; D: number; Dv: number; Eout: number;
}

/** query [B, T, Eq], value [B, S, Ev], key [B, S, Ek], flat row-major. */
export interface OptionInputs {query: Float64Array; value: Float64Array; key: Float64Array}

export type CausalSetting = false | 'top-left' | 'bottom-right';

export interface OptionSettings {
  causal?: CausalSetting;
  softcap?: number | null;
  slidingWindow?: number | null;
  attentionSinks?: boolean;
  qkNorm?: 'rms' | 'layer' | null;
  qkNormEpsilon?: number;
  outputGate?: 'headwise' | 'elementwise' | null;
  alibi?: boolean | 'learned';
  /** RoPE on q and k (after qkNorm); null: none. */
  rope?: {base?: number; dim?: number} | null;
}

/** Nonzero or true = kept. */
export type MaskValue = number | boolean;

export interface OptionMasks {
  /** [B][T]: queries that are not padding. */
  queryMask?: ArrayLike<MaskValue>[] | null;
  /** [B][S]: keys that are not padding. */
  keyMask?: ArrayLike<MaskValue>[] | null;
  /** [B][T][S]: 1 = may attend. */
  attentionMask?: ArrayLike<MaskValue>[][] | null;
}

export interface OptionForward {
  /** [B, T, Eout] */
  y: Float64Array;
  /** [B, H, T, S]: the attention probabilities (without the sink's share); null when not asked for. */
  probs: Float64Array | null;
}

export const DEFAULT_QK_NORM_EPSILON = 1e-6;

/** ALiBi's slopes (Press et al. 2022): 2^(-8k/H) for a power of two, else interleaved from 2H. */
export function referenceAlibiSlopes(H: number): number[] {
  const geometric = (n: number) => Array.from({length: n}, (_, k) => pow(2, -8 * (k + 1) / n));
  let p = 1;
  while (p * 2 <= H) p *= 2;
  if (p === H) return geometric(H);
  const extra = geometric(2 * p).filter((_, k) => k % 2 === 0).slice(0, H - p);
  return [...geometric(p), ...extra];
}

function need(w: OptionWeights, name: OptionWeightName, n: number): Float64Array {
  const a = w[name];
  if (a == null) throw new Error(`optionsReference: weight ${name} is missing`);
  if (a.length !== n) throw new Error(`optionsReference: ${name} has ${a.length} values, expected ${n}`);
  return a;
}

function maybe(w: OptionWeights, name: OptionWeightName, n: number): Float64Array | null {
  return w[name] == null ? null : need(w, name, n);
}

/** x [B, L, E] with kernel [E, N, X] and bias [N, X] (or null) -> [B, N, L, X]. */
function project(x: Float64Array, B: number, L: number, E: number, W: Float64Array, bias: Float64Array | null,
                 N: number, X: number): Float64Array {
  const y = new Float64Array(B * N * L * X);
  for (let b = 0; b < B; b++) {
    for (let l = 0; l < L; l++) {
      const xAt = (b * L + l) * E;
      for (let n = 0; n < N; n++) {
        for (let d = 0; d < X; d++) {
          let acc = bias == null ? 0 : bias[n * X + d];
          for (let e = 0; e < E; e++) acc += x[xAt + e] * W[(e * N + n) * X + d];
          y[((b * N + n) * L + l) * X + d] = acc;
        }
      }
    }
  }
  return y;
}

/** Each D-vector of x normalised in place ('rms' or 'layer'), times gamma [D]. */
function normalize(x: Float64Array, D: number, kind: 'rms' | 'layer', gamma: Float64Array, eps: number): void {
  for (let at = 0; at < x.length; at += D) {
    let mean = 0;
    if (kind === 'layer') {
      for (let d = 0; d < D; d++) mean += x[at + d];
      mean /= D;
    }
    let sq = 0;
    for (let d = 0; d < D; d++) sq += (x[at + d] - mean) ** 2;
    const inv = 1 / sqrt(sq / D + eps);
    for (let d = 0; d < D; d++) x[at + d] = (x[at + d] - mean) * inv * gamma[d];
  }
}

/**
 * x [N, L, D] rotated in place at positions 0 .. L - 1: channel pair (c, c + dim/2) by the
 * angle p * base^(-2c / dim), x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin; channels past dim kept.
 */
function rotate(x: Float64Array, L: number, D: number, base: number, dim: number): void {
  const half = dim / 2;
  for (let at = 0; at < x.length; at += D) {
    const p = (at / D) % L;
    for (let c = 0; c < half; c++) {
      const angle = p * pow(base, -2 * c / dim);
      const [x1, x2] = [x[at + c], x[at + c + half]];
      x[at + c] = x1 * cos(angle) - x2 * sin(angle);
      x[at + c + half] = x2 * cos(angle) + x1 * sin(angle);
    }
  }
}

/** rows [R][C] of mask values as a flat [R, C] table, 1 where kept (nonzero or true). */
function keepTable(rows: ArrayLike<ArrayLike<MaskValue>>, R: number, C: number): Uint8Array {
  const out = new Uint8Array(R * C);
  for (let r = 0; r < R; r++) {
    const row = rows[r];
    if (row.length !== C) throw new Error(`optionsReference: a mask row holds ${row.length} values, not ${C}`);
    for (let c = 0; c < C; c++) out[r * C + c] = row[c] ? 1 : 0;
  }
  return out;
}

const sigmoid = (z: number) => 1 / (1 + exp(-z));

/** The whole layer forward pass; see the file comment. `probs`: also return the probabilities. */
export function optionsReference(dims: OptionDims, x: OptionInputs, w: OptionWeights, s: OptionSettings = {},
                                 masks: OptionMasks = {}, probs = true): OptionForward {
  const {B, T, S, Eq, Ev, Ek, H, G, D, Dv, Eout} = dims;
  if (H % G !== 0) throw new Error(`optionsReference: H (${H}) must be a multiple of G (${G})`);
  const causal = s.causal ?? false;

  // 1. Projections [B, H, T, D], [B, G, S, D], [B, G, S, Dv].
  const q = project(x.query, B, T, Eq, need(w, 'query/kernel', Eq * H * D), maybe(w, 'query/bias', H * D), H, D);
  const k = project(x.key, B, S, Ek, need(w, 'key/kernel', Ek * G * D), maybe(w, 'key/bias', G * D), G, D);
  const v = project(x.value, B, S, Ev, need(w, 'value/kernel', Ev * G * Dv), maybe(w, 'value/bias', G * Dv), G, Dv);
  const Wo = need(w, 'attention_output/kernel', H * Dv * Eout);
  const bo = maybe(w, 'attention_output/bias', Eout);

  // 2. qkNorm, then RoPE.
  if (s.qkNorm != null) {
    const eps = s.qkNormEpsilon ?? DEFAULT_QK_NORM_EPSILON;
    normalize(q, D, s.qkNorm, need(w, 'query_norm/gamma', D), eps);
    normalize(k, D, s.qkNorm, need(w, 'key_norm/gamma', D), eps);
  }
  if (s.rope != null) {
    const dim = s.rope.dim ?? D;
    rotate(q, T, D, s.rope.base ?? 10000, dim);
    rotate(k, S, D, s.rope.base ?? 10000, dim);
  }

  // The per-head extras.
  const sinks = s.attentionSinks ? need(w, 'sinks', H) : null;
  const slopes = s.alibi === 'learned' ? need(w, 'alibi/slopes', H)
    : s.alibi === true ? Float64Array.from(referenceAlibiSlopes(H)) : null;
  const gateN = s.outputGate === 'headwise' ? 1 : s.outputGate === 'elementwise' ? Dv : 0;
  const Wg = gateN > 0 ? need(w, 'gate/kernel', Eq * H * gateN) : null;
  const bg = gateN > 0 ? maybe(w, 'gate/bias', H * gateN) : null;

  // The masks as flat 0/1 tables (1 where kept).
  const qKeep = masks.queryMask == null ? null : keepTable(masks.queryMask, B, T);
  const kKeep = masks.keyMask == null ? null : keepTable(masks.keyMask, B, S);
  let aKeep: Uint8Array | null = null;
  if (masks.attentionMask != null) {
    aKeep = new Uint8Array(B * T * S);
    for (let b = 0; b < B; b++) aKeep.set(keepTable(masks.attentionMask[b], T, S), b * T * S);
  }

  const scale = 1 / sqrt(D);
  const offset = causal === 'bottom-right' ? S - T : 0; // i' = i + offset
  const W = s.slidingWindow ?? null;
  const y = new Float64Array(B * T * Eout);
  const p = probs ? new Float64Array(B * H * T * S) : null;
  const z = new Float64Array(S);
  const seen = new Uint8Array(S);
  const o = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      const yAt = (b * T + i) * Eout;
      if (bo != null) for (let e = 0; e < Eout; e++) y[yAt + e] = bo[e];
      // A padded query row: zeros before the output projection.
      if (qKeep != null && !qKeep[b * T + i]) continue;
      const ii = i + offset;
      for (let h = 0; h < H; h++) {
        const g = floor(h / (H / G));
        const qAt = ((b * H + h) * T + i) * D;
        // 3-6. Scores of the visible keys and their max (the sink counts as one more logit).
        let top = sinks == null ? -Infinity : sinks[h];
        let any = false;
        for (let j = 0; j < S; j++) {
          let ok = kKeep == null || kKeep[b * S + j] === 1;
          if (aKeep != null && !aKeep[(b * T + i) * S + j]) ok = false;
          if (causal !== false && j > ii) ok = false;
          if (W != null && (causal !== false ? ii - j >= W : abs(i - j) >= W)) ok = false;
          seen[j] = ok ? 1 : 0;
          if (!ok) continue;
          any = true;
          const kAt = ((b * G + g) * S + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qAt + d] * k[kAt + d];
          let sc = scale * dot;
          if (s.softcap != null) sc = s.softcap * tanh(sc / s.softcap);
          if (slopes != null) sc -= slopes[h] * abs(ii - j);
          z[j] = sc;
          if (sc > top) top = sc;
        }
        if (!any) continue; // no visible key: O = 0
        // 7. Softmax over [visible scores, sink], the sink's column dropped.
        let den = sinks == null ? 0 : exp(sinks[h] - top);
        for (let j = 0; j < S; j++) {
          if (!seen[j]) continue;
          z[j] = exp(z[j] - top);
          den += z[j];
        }
        // 8. O = p v.
        o.fill(0);
        for (let j = 0; j < S; j++) {
          if (!seen[j]) continue;
          const pj = z[j] / den;
          if (p != null) p[((b * H + h) * T + i) * S + j] = pj;
          const vAt = ((b * G + g) * S + j) * Dv;
          for (let e = 0; e < Dv; e++) o[e] += pj * v[vAt + e];
        }
        // 9. The output gate, from the query input.
        if (Wg != null) {
          const xAt = (b * T + i) * Eq;
          for (let n = 0; n < gateN; n++) {
            let a = bg == null ? 0 : bg[h * gateN + n];
            for (let e = 0; e < Eq; e++) a += x.query[xAt + e] * Wg[(e * H + h) * gateN + n];
            const gate = sigmoid(a);
            if (gateN === 1) for (let e = 0; e < Dv; e++) o[e] *= gate;
            else o[n] *= gate;
          }
        }
        // 10. y += O_h Wo_h.
        for (let d = 0; d < Dv; d++) {
          for (let e = 0; e < Eout; e++) y[yAt + e] += o[d] * Wo[(h * Dv + d) * Eout + e];
        }
      }
    }
  }
  return {y, probs: p};
}

/** sum(cot * y) of the forward pass. */
export function optionsLoss(dims: OptionDims, x: OptionInputs, w: OptionWeights, s: OptionSettings,
                            masks: OptionMasks, cot: Float64Array): number {
  const {y} = optionsReference(dims, x, w, s, masks, false);
  let L = 0;
  for (let n = 0; n < y.length; n++) L += cot[n] * y[n];
  return L;
}

// ---------------------------------------------------------------------------------------
// Central finite differences in float64. With eps = 1e-5 the truncation error (eps^2 f''')
// and the rounding error (1e-16 |L| / eps) both sit near 1e-10, far below float32's 1e-7.
// ---------------------------------------------------------------------------------------

export const FD_EPS = 1e-5;
/** Tensors with at most this many entries get every entry differenced; larger ones random directions. */
export const FD_MAX_ENTRIES = 32;
export const FD_DIRECTIONS = 3;

/** (L(w + eps r) - L(w - eps r)) / (2 eps) for a direction r, or entry r; w is restored. */
export function centralDifference(loss: () => number, w: Float64Array, r: Float64Array | number,
                                  eps = FD_EPS): number {
  const saved = Float64Array.from(w);
  const step = (sign: number) => {
    if (typeof r === 'number') w[r] = saved[r] + sign * eps;
    else for (let n = 0; n < w.length; n++) w[n] = saved[n] + sign * eps * r[n];
    const L = loss();
    w.set(saved);
    return L;
  };
  return (step(1) - step(-1)) / (2 * eps);
}

/**
 * Central differences of a loss for one float64 array: `values[n]` is dL/dw_n for every
 * entry ('entries'), or the directional derivative along `directions[n]` ('directions').
 */
export interface FdGradient {
  mode: 'entries' | 'directions';
  directions: Float64Array[];
  values: Float64Array;
}

/**
 * The central differences of `loss` for w (perturbed in place, where the loss's closure reads
 * it, then restored): every entry when w has at most `maxEntries`, else `directions` seeded
 * random directions (entries uniform in [-1, 1)).
 */
export function fdGradient(loss: () => number, w: Float64Array,
                           opts: {seed?: number; maxEntries?: number; directions?: number} = {}): FdGradient {
  if (w.length <= (opts.maxEntries ?? FD_MAX_ENTRIES)) {
    return {mode: 'entries', directions: [], values: Float64Array.from(w, (_, n) => centralDifference(loss, w, n))};
  }
  const directions = Array.from({length: opts.directions ?? FD_DIRECTIONS},
    (_, t) => Float64Array.from(seededValues(w.length, (opts.seed ?? 1) * 131 + t)));
  return {mode: 'directions', directions, values: Float64Array.from(directions, (r) => centralDifference(loss, w, r))};
}

/** The largest |value|: the scale of an 'entries' gradient, the largest directional derivative otherwise. */
export function fdSize(fd: FdGradient): number {
  return fd.values.reduce((m, x) => max(m, abs(x)), 0);
}

/**
 * How far a gradient (the layer's, any precision) is from the central differences, relative:
 *   entries:    max_n |g_n - fd_n| / max(max_n |fd_n|, minScale)
 *   directions: max_r |<g, r> - fd_r| / max(sum_n |g_n r_n|, minScale)
 * (the denominators are the scale that float rounding of g, or of <g, r>, is relative to).
 */
export function gradientError(grad: ArrayLike<number>, fd: FdGradient, minScale = 0): number {
  if (fd.mode === 'entries') {
    if (grad.length !== fd.values.length) {
      throw new Error(`gradientError: ${grad.length} gradient values for ${fd.values.length} entries`);
    }
    let worst = 0;
    for (let n = 0; n < grad.length; n++) worst = max(worst, abs(grad[n] - fd.values[n]));
    return worst / max(fdSize(fd), minScale, 1e-30);
  }
  let error = 0;
  fd.directions.forEach((r, t) => {
    if (grad.length !== r.length) throw new Error(`gradientError: ${grad.length} gradient values for ${r.length} entries`);
    let dot = 0;
    let scale = 0;
    for (let n = 0; n < r.length; n++) {
      dot += grad[n] * r[n];
      scale += abs(grad[n] * r[n]);
    }
    error = max(error, abs(dot - fd.values[t]) / max(scale, minScale, 1e-30));
  });
  return error;
}

// ---------------------------------------------------------------------------------------
// Reading a layer.
// ---------------------------------------------------------------------------------------

/** A tensor's values as float64. */
export function float64Of(t: tf.Tensor): Float64Array {
  return Float64Array.from(t.dataSync());
}

/**
 * The weight name a variable name ends with ('layer/query/kernel' or '.../query/kernel_1'
 * -> 'query/kernel'); null for a name that is none of OPTION_WEIGHT_NAMES.
 */
export function optionWeightName(variableName: string): OptionWeightName | null {
  const bare = variableName.replace(/_\d+$/, '');
  return [...OPTION_WEIGHT_NAMES].sort((a, b) => b.length - a.length)
    .find((n) => bare === n || bare.endsWith(`/${n}`)) ?? null;
}

/**
 * The layer's weights (getWeights(), which hands out the variables themselves: nothing to
 * dispose) by name, as float64; throws on a name it does not know.
 */
export function layerWeights(layer: tf.layers.Layer): OptionWeights {
  const values = layer.getWeights();
  const out: OptionWeights = {};
  layer.weights.forEach((v, n) => {
    const name = optionWeightName(v.name);
    if (name == null) throw new Error(`layerWeights: unknown weight ${v.name}`);
    if (out[name] != null) throw new Error(`layerWeights: two weights named ${name}`);
    out[name] = float64Of(values[n]);
  });
  return out;
}
