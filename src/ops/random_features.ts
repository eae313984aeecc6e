/**
 * Orthogonal random projections for FAVOR+ ("Rethinking Attention with Performers",
 * Choromanski et al. 2021, section 2.4): M rows of dimension D, drawn as Gaussian D x D
 * blocks whose rows are made orthonormal (Gram-Schmidt), then rescaled to the norms of
 * independent Gaussian vectors, so each row is marginally N(0, I_D) while the rows of
 * one block are exactly orthogonal. Orthogonal features lower the variance of the
 * softmax-kernel estimate compared with independent ones.
 *
 * Plain TypeScript in float64 with a seeded generator, so a seed gives the same matrix
 * on every backend and every run.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertPositiveInt} from '../core/validate';
import {assertFits} from './heads';

/** mulberry32: a small, fast 32-bit generator; uniform numbers in [0, 1) from a seed. */
export function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal numbers from a seed (Box-Muller on mulberry32). */
export function gaussian(seed: number): () => number {
  const u = uniform(seed);
  let spare: number | null = null;
  return () => {
    if (spare != null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u1 = 1 - u(); // (0, 1]: log stays finite
    const u2 = u();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

/** Rows of a D x D Gaussian matrix, made orthonormal by modified Gram-Schmidt. */
function orthonormalBlock(D: number, next: () => number): Float64Array[] {
  const rows: Float64Array[] = [];
  while (rows.length < D) {
    const r = Float64Array.from({length: D}, next);
    for (const u of rows) {
      let dot = 0;
      for (let i = 0; i < D; i++) dot += r[i] * u[i];
      for (let i = 0; i < D; i++) r[i] -= dot * u[i];
    }
    let norm = 0;
    for (let i = 0; i < D; i++) norm += r[i] * r[i];
    norm = Math.sqrt(norm);
    // A draw (numerically) in the span of the rows so far: draw again. Has probability ~0.
    if (!(norm > 1e-6)) continue;
    for (let i = 0; i < D; i++) r[i] /= norm;
    rows.push(r);
  }
  return rows;
}

/**
 * The [M, D] projection of FAVOR+: ceil(M / D) independent orthogonal blocks (the last
 * one cut to the rows still needed), each row scaled to the norm of a fresh D-dim
 * Gaussian vector (a chi-distributed length with D degrees of freedom). Deterministic
 * for a seed (an integer; it is used modulo 2^32).
 */
export function orthogonalProjection(M: number, D: number, seed: number): tf.Tensor2D {
  assertPositiveInt('numFeatures (M)', M);
  assertPositiveInt('head dim (D)', D);
  if (typeof seed !== 'number' || !Number.isInteger(seed)) {
    throw new AttentionError('INVALID_CONFIG', `seed must be an integer, received ${show(seed)}`);
  }
  assertFits('orthogonalProjection', 'the projection', [M, D]);
  const next = gaussian(seed);
  const out = new Float32Array(M * D);
  let row = 0;
  while (row < M) {
    const block = orthonormalBlock(D, next);
    for (const r of block) {
      if (row === M) break;
      let len = 0;
      for (let i = 0; i < D; i++) {
        const g = next();
        len += g * g;
      }
      len = Math.sqrt(len);
      for (let i = 0; i < D; i++) out[row * D + i] = r[i] * len;
      row++;
    }
  }
  return tf.tensor2d(out, [M, D]);
}

/** The default number of random features for head dim D: round(D ln D), at least 1 (Performer). */
export function defaultNumFeatures(D: number): number {
  return Math.max(1, Math.round(D * Math.log(D)));
}
