/**
 * Timing, peak memory and FLOP counts for one attention pass.
 *
 * - Time: wall clock from the call until every output's data has arrived
 *   (`await t.data()`), so asynchronous backends are charged in full. The median of
 *   up to `reps` runs after up to `warmup` untimed runs, the first of which measures
 *   the peak; a row that has run for half its time budget takes no more warm-up runs,
 *   and one that has used all of it no more timed runs (one at least), so the long
 *   rows of a sweep are timed once or twice instead of five times.
 * - Peak bytes: tfjs's `tf.profile(...).peakBytes` (the most tensor bytes the engine
 *   held after any kernel of the pass) minus `tf.memory().numBytes` just before the
 *   pass, so q, k, v and the cotangent are not counted. Measured in the first, untimed
 *   run. This is tfjs's accounting: every live tensor counts its full size, reshape
 *   views included although they share their input's buffer, and tensors made inside a
 *   `tidy` count until it ends. So it is an upper bound on buffer memory that charges
 *   code for each large reshape it keeps alive.
 * - FLOPs: the two attention matmuls only. Forward: q k^T and p v, 2*B*H*T*S*D each,
 *   so 4*B*H*T*S*D (D = Dv here). Backward: dV, dP, dQ and dK are four more such
 *   matmuls, so forward+backward = 12*B*H*T*S*D = 3x forward. Softmax, scaling and
 *   head repeats are not counted. The same count is used for every implementation,
 *   so GFLOP/s compares implementations by time alone.
 */
import * as tf from '@tensorflow/tfjs';

export type Pass = 'fwd' | 'fwd+bwd';
export const PASSES: readonly Pass[] = ['fwd', 'fwd+bwd'];

/** Builds the outputs of one pass; runs inside tf.tidy, so intermediates are freed. */
export type PassFn = () => tf.Tensor[];

export interface AttentionShape {
  B: number; H: number; G: number; T: number; S: number; D: number;
}

export function attentionFlops(shape: AttentionShape, pass: Pass): number {
  const {B, H, T, S, D} = shape;
  const fwd = 4 * B * H * T * S * D;
  return pass === 'fwd' ? fwd : 3 * fwd;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs `fn` once, waits for its outputs' data, frees them; returns milliseconds. */
export async function timeOnce(fn: PassFn): Promise<number> {
  const start = performance.now();
  const outs = tf.tidy(fn);
  await Promise.all(outs.map((t) => t.data()));
  const ms = performance.now() - start;
  tf.dispose(outs);
  return ms;
}

/** Median milliseconds of `reps` runs after `warmup` runs. */
export async function timePass(fn: PassFn, warmup: number, reps: number): Promise<number> {
  for (let i = 0; i < warmup; i++) await timeOnce(fn);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) times.push(await timeOnce(fn));
  return median(times);
}

/** Peak tensor bytes of one run above the bytes in use before it (see the file comment). */
export async function peakBytes(fn: PassFn): Promise<number> {
  const before = tf.memory().numBytes;
  const info = await tf.profile(() => tf.tidy(fn));
  tf.dispose(info.result);
  return Math.max(0, info.peakBytes - before);
}

export interface PassMeasurement {
  msMedian: number;
  /** Timed runs behind the median. */
  runs: number;
  peakBytes: number;
}

/**
 * The peak run (which also warms up), up to warmup - 1 more untimed runs while under
 * half of `budgetMs`, then up to `reps` timed runs while under `budgetMs` (at least one).
 */
export async function measurePass(fn: PassFn, warmup: number, reps: number, budgetMs: number): Promise<PassMeasurement> {
  const start = performance.now();
  const elapsed = () => performance.now() - start;
  const peak = await peakBytes(fn);
  for (let i = 1; i < warmup && elapsed() < budgetMs / 2; i++) await timeOnce(fn);
  const times: number[] = [];
  while (times.length < reps && (times.length === 0 || elapsed() < budgetMs)) times.push(await timeOnce(fn));
  return {msMedian: median(times), runs: times.length, peakBytes: peak};
}
