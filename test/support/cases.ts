// Attention test cases shared by the op tests: seeded masks, input grids, gradients.
import * as tf from '@tensorflow/tfjs';
import {uniform} from '../../src/ops/random_features';
import {randn} from './helpers';

/** A small seeded PRNG (mulberry32, the library's own) for masks built in JS. */
export const rng = uniform;

export type MaskKind = 'none' | 'padding' | 'btS' | 'perHead';

/**
 * padding: [B, 1, 1, S] key padding, batch b keeps its first S - 2b keys (at least 1).
 * btS:     [B, T, S] random 0/1 (about 75% kept), the same for every head.
 * perHead: [B, H, T, S] random 0/1, different per head.
 */
export function makeMask(kind: MaskKind, B: number, H: number, T: number, S: number,
    seed: number): tf.Tensor | undefined {
  const r = rng(seed);
  if (kind === 'none') return undefined;
  if (kind === 'padding') {
    const data: boolean[] = [];
    for (let b = 0; b < B; b++) for (let j = 0; j < S; j++) data.push(j < Math.max(1, S - 2 * b - 1));
    return tf.tensor4d(data, [B, 1, 1, S], 'bool');
  }
  const shape = kind === 'btS' ? [B, T, S] : [B, H, T, S];
  const n = shape.reduce((x, y) => x * y, 1);
  const data = Array.from({length: n}, () => r() < 0.75);
  return tf.tensor(data, shape, 'bool');
}

export interface Case {
  B: number; H: number; G: number; T: number; S: number; D: number; Dv: number;
  causal: boolean; mask: MaskKind; scale?: number;
}

export function caseName(c: Case): string {
  const parts = [`T=${c.T}`, `S=${c.S}`, `H=${c.H}`, `G=${c.G}`, `D=${c.D}`];
  if (c.Dv !== c.D) parts.push(`Dv=${c.Dv}`);
  if (c.causal) parts.push('causal');
  if (c.mask !== 'none') parts.push(c.mask === 'padding' ? 'padding [B,1,1,S]' : c.mask === 'btS' ? 'mask [B,T,S]' : 'mask [B,H,T,S]');
  if (c.scale != null) parts.push(`scale=${c.scale}`);
  return parts.join(', ');
}

export function inputs(c: Case, seed: number): {q: tf.Tensor; k: tf.Tensor; v: tf.Tensor; cot: tf.Tensor} {
  return {
    q: randn([c.B, c.H, c.T, c.D], seed),
    k: randn([c.B, c.G, c.S, c.D], seed + 1),
    v: randn([c.B, c.G, c.S, c.Dv], seed + 2),
    cot: randn([c.B, c.H, c.T, c.Dv], seed + 3),
  };
}

/** Gradients of sum(f(q, k, v) * cot) with respect to q, k and v. */
export function gradsOf(f: (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor,
                 q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, cot: tf.Tensor): tf.Tensor[] {
  return tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(f(a, b, c), cot)))([q, k, v]);
}

export function maxAbs(t: tf.Tensor): number {
  return Array.from(t.dataSync()).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
}

export function allFinite(t: tf.Tensor): boolean {
  return t.dataSync().every((x) => Number.isFinite(x));
}

/**
 * q [1, 2, 7, 12], k [1, 1, 8, 12] whose logits (scale 1) are integers near +-1e4, a
 * cotangent, and a [7, 8] mask hiding the keys with the two largest logits. Call it
 * inside tf.tidy: it leaves intermediate tensors behind.
 */
export function largeLogitCase(): {q: tf.Tensor; k: tf.Tensor; v: tf.Tensor; cot: tf.Tensor; mask: tf.Tensor} {
  // Logits exact in float32 in any summation order: column 0 holds q0 = +-1024 and
  // k0 = n / 1024 with integer n near +-1e4, the other columns small integers, so each
  // logit is an integer near +-1e4 and several visible keys lie within a few units
  // (the softmax is not one-hot). The large factor sits in q, not k: with k0 ~ 1e4,
  // dq = sum_j dlogit_j k_j cancels a common 1e4 offset and float32 loses ~1e-3 of it
  // in any implementation (measured: src and reference both ~1e-3 from float64).
  const r = rng(3);
  const ints = (n: number, lo: number, hi: number) =>
    Array.from({length: n}, () => lo + Math.floor(r() * (hi - lo + 1)));
  const q0 = tf.tensor4d(ints(14, 0, 2).map((x) => (x === 0 ? -1024 : 1024)), [1, 2, 7, 1]);
  const q = tf.concat([q0, tf.tensor4d(ints(14 * 11, -1, 1), [1, 2, 7, 11])], 3);
  const n0 = [10000, 9999, 9998, 9996, -10000, 5000, 10003, 10001];
  const k0 = tf.tensor4d(n0.map((n) => n / 1024), [1, 1, 8, 1]);
  const k = tf.concat([k0, tf.tensor4d(ints(8 * 11, -1, 1), [1, 1, 8, 11])], 3);
  const v = randn([1, 1, 8, 12], 51);
  const cot = randn([1, 2, 7, 12], 52);
  // The mask hides the two keys with the largest logits (10003, 10001), so for q0 = 1
  // the visible max lies below hidden logits.
  const mask = tf.tensor2d(Array.from({length: 7 * 8}, (_, n) => n % 8 < 6), [7, 8], 'bool');
  return {q, k, v, cot, mask};
}
