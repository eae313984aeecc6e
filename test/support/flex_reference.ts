/**
 * A plain float64 flexAttention for the flex tests: loops over one (b, h, i, j) at a time, no
 * tf op, nothing shared with src/. The score mod and the mask are scalar JS functions the
 * test writes by hand (the mod with its derivative in the score), and the gradients are the
 * analytic ones of softmax attention:
 *
 *   z = mod(scale * q.k), P = softmax over the visible keys, O = P v, lse = log sum exp z;
 *   for the loss sum(O * dO) + sum(lse * dLse):
 *   dZ = P * (dO.v - rowsum(dO * O) + dLse), ds = dZ * mod'(s),
 *   dq = scale * ds k, dk = scale * ds^T q, dv = P^T dO.
 *
 * A row with no visible key has O = 0, lse = -Infinity and no gradient. The gradients of a
 * mod's own parameters are sums over the scores of dZ times the mod's derivative: the result
 * holds dZ and the pre-mod scores s for the test to form them.
 */
import * as tf from '@tensorflow/tfjs';

export interface FlexDims {B: number; H: number; G: number; T: number; S: number; D: number; Dv: number}

/** A score mod on one score: its value and its derivative in s. */
export interface ScalarMod {
  value: (s: number, b: number, h: number, i: number, j: number) => number;
  ds: (s: number, b: number, h: number, i: number, j: number) => number;
}

export interface FlexReferenceMods {
  /** Multiplies q.k. Default 1 / sqrt(D). */
  scale?: number;
  score?: ScalarMod | null;
  /** True where query i of head h in batch b may see key j. Default: every key. */
  visible?: ((b: number, h: number, i: number, j: number) => boolean) | null;
}

/** q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] as float64, row-major. */
export interface FlexInputs {dims: FlexDims; q: Float64Array; k: Float64Array; v: Float64Array}

export interface FlexForward {
  /** [B, H, T, Dv] */
  out: Float64Array;
  /** [B, H, T], -Infinity for rows with no visible key. */
  lse: Float64Array;
  /** [B, H, T, S], zero where a key is hidden. */
  probs: Float64Array;
  /** scale * q.k before the mod, [B, H, T, S] (every pair, hidden ones included). */
  scores: Float64Array;
  /** [B, H, T, S]: 1 where the key is visible. */
  visible: Uint8Array;
}

export interface FlexGrads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  /** The loss's gradient for the modded score z, [B, H, T, S] (zero where hidden). */
  dz: Float64Array;
}

/** The float64 inputs of tensors q, k, v. */
export function flexInputs(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor): FlexInputs {
  const [B, H, T, D] = q.shape as number[];
  const [, G, S] = k.shape as number[];
  const Dv = v.shape[3] as number;
  const f64 = (t: tf.Tensor) => Float64Array.from(Array.from(t.dataSync()));
  return {dims: {B, H, G, T, S, D, Dv}, q: f64(q), k: f64(k), v: f64(v)};
}

/** The kv head query head h reads. */
function group({H, G}: FlexDims, h: number): number {
  return Math.floor(h / (H / G));
}

export function flexForwardReference(x: FlexInputs, mods: FlexReferenceMods = {}): FlexForward {
  const {B, H, T, S, D, Dv} = x.dims;
  const G = x.dims.G;
  const scale = mods.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * T * Dv);
  const lse = new Float64Array(B * H * T);
  const probs = new Float64Array(B * H * T * S);
  const scores = new Float64Array(B * H * T * S);
  const visible = new Uint8Array(B * H * T * S);
  const z = new Float64Array(S);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = group(x.dims, h);
      for (let i = 0; i < T; i++) {
        const row = ((b * H + h) * T + i) * S;
        const qAt = ((b * H + h) * T + i) * D;
        // 1. Scores of the visible keys, modded; their max.
        let max = -Infinity;
        for (let j = 0; j < S; j++) {
          const kAt = ((b * G + g) * S + j) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += x.q[qAt + d] * x.k[kAt + d];
          const s = scale * dot;
          scores[row + j] = s;
          const seen = mods.visible == null || mods.visible(b, h, i, j);
          visible[row + j] = seen ? 1 : 0;
          if (!seen) continue;
          z[j] = mods.score == null ? s : mods.score.value(s, b, h, i, j);
          max = Math.max(max, z[j]);
        }
        const r = (b * H + h) * T + i;
        if (max === -Infinity) {
          lse[r] = -Infinity; // no visible key: output and probabilities stay zero
          continue;
        }
        // 2. Softmax over the visible keys.
        let sum = 0;
        for (let j = 0; j < S; j++) if (visible[row + j]) sum += Math.exp(z[j] - max);
        lse[r] = max + Math.log(sum);
        // 3. O = P v.
        for (let j = 0; j < S; j++) {
          if (!visible[row + j]) continue;
          const p = Math.exp(z[j] - max) / sum;
          probs[row + j] = p;
          const vAt = ((b * G + g) * S + j) * Dv;
          for (let e = 0; e < Dv; e++) out[r * Dv + e] += p * x.v[vAt + e];
        }
      }
    }
  }
  return {out, lse, probs, scores, visible};
}

/**
 * The gradients of sum(O * dO) + sum(lse * dLse) (dLse null: no logsumexp term) for q, k, v
 * and the modded scores, from the forward's probabilities.
 */
export function flexGradsReference(x: FlexInputs, mods: FlexReferenceMods, f: FlexForward, dO: Float64Array,
                                   dLse: Float64Array | null): FlexGrads {
  const {B, H, G, T, S, D, Dv} = x.dims;
  const scale = mods.scale ?? 1 / Math.sqrt(D);
  const dq = new Float64Array(x.q.length);
  const dk = new Float64Array(x.k.length);
  const dv = new Float64Array(x.v.length);
  const dz = new Float64Array(B * H * T * S);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const g = group(x.dims, h);
      for (let i = 0; i < T; i++) {
        const r = (b * H + h) * T + i;
        if (f.lse[r] === -Infinity) continue;
        // 1. rowsum(dO * O), less the logsumexp's cotangent (d lse / d z = P).
        let rowDot = 0;
        for (let e = 0; e < Dv; e++) rowDot += dO[r * Dv + e] * f.out[r * Dv + e];
        const shift = rowDot - (dLse == null ? 0 : dLse[r]);
        for (let j = 0; j < S; j++) {
          const at = r * S + j;
          if (!f.visible[at]) continue;
          const p = f.probs[at];
          const kAt = ((b * G + g) * S + j) * D;
          const vAt = ((b * G + g) * S + j) * Dv;
          // 2. dP = dO . v; dz = P (dP - shift); dv += P dO.
          let dP = 0;
          for (let e = 0; e < Dv; e++) {
            dP += dO[r * Dv + e] * x.v[vAt + e];
            dv[vAt + e] += p * dO[r * Dv + e];
          }
          dz[at] = p * (dP - shift);
          // 3. Through the mod: ds = dz * mod'(s); then dq, dk of s = scale * q.k.
          const ds = dz[at] * (mods.score == null ? 1 : mods.score.ds(f.scores[at], b, h, i, j));
          for (let d = 0; d < D; d++) {
            dq[r * D + d] += scale * ds * x.k[kAt + d];
            dk[kAt + d] += scale * ds * x.q[r * D + d];
          }
        }
      }
    }
  }
  return {dq, dk, dv, dz};
}

/** Calls fn(dz, s, b, h, i, j) for every visible score: for the gradients of a mod's parameters. */
export function forEachScore(dims: FlexDims, f: FlexForward, g: FlexGrads,
                             fn: (dz: number, s: number, b: number, h: number, i: number, j: number) => void): void {
  const {B, H, T, S} = dims;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < S; j++) {
          const at = ((b * H + h) * T + i) * S + j;
          if (f.visible[at]) fn(g.dz[at], f.scores[at], b, h, i, j);
        }
      }
    }
  }
}

/** A float64 array as a float32 tensor, to compare with expectClose. */
export function asTensor(a: Float64Array, shape: number[]): tf.Tensor {
  return tf.tensor(Float32Array.from(a), shape, 'float32');
}
