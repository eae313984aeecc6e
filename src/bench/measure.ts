/**
 * Timing, peak memory and FLOP counts for one attention pass.
 *
 * - Time: wall clock from the call until every output's data has arrived
 *   (`await t.data()`), so asynchronous backends are charged in full. The median of
 *   up to `reps` runs after up to `warmup` untimed runs, the first of which measures
 *   the peak; a row that has run for half its time budget takes no more warm-up runs,
 *   and one that has used all of it no more timed runs (one at least), so the long
 *   rows of a sweep are timed once or twice instead of five times.
 * - Peak bytes: tfjs's `tf.profile(...).peakBytes` (see profilePeak; the most tensor bytes the engine
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

/**
 * q, k, v and the output (Dv = D); fwd+bwd also dOut, dq, dk and dv: twice that. What any
 * exact implementation must hold (float32), the floor of heap.ts.
 */
export function attentionFloorBytes({B, H, G, T, S, D}: AttentionShape, pass: Pass): number {
  const fwd = 4 * (2 * B * H * T * D + 2 * B * G * S * D);
  return pass === 'fwd' ? fwd : 2 * fwd;
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

/** The part of tfjs's engine state that `tf.profile` uses. */
interface ProfilingState {
  profiling: boolean;
  activeProfile: {kernels: {totalBytesSnapshot: number}[]};
}

function profilingState(): ProfilingState | null {
  const state = (tf.engine() as unknown as {state?: Partial<ProfilingState>}).state;
  const ok = state != null && typeof state.profiling === 'boolean' && state.activeProfile != null &&
    Array.isArray(state.activeProfile.kernels);
  return ok ? state as ProfilingState : null;
}

/**
 * The most tensor bytes the engine held after any kernel of `fn`: what
 * `tf.profile(fn).peakBytes` reports; and how many kernels `fn` ran. tfjs 4.22 computes that as
 * `Math.max(...kernels.map(...))`, which overflows the call stack once a pass runs more
 * than about 10^5 kernels (a long flash forward+backward can), so this switches
 * the engine's profiling on itself, as tf.profile does, and takes the maximum in a loop.
 * Falls back to tf.profile where the engine's state has another form.
 */
export async function profilePeak(fn: () => tf.TensorContainer):
    Promise<{peak: number; kernels: number; result: tf.TensorContainer}> {
  const state = profilingState();
  if (state == null || state.profiling) {
    const info = await tf.profile(fn);
    return {peak: info.peakBytes, kernels: info.kernels.length, result: info.result};
  }
  state.activeProfile.kernels = [];
  state.profiling = true;
  let result: tf.TensorContainer;
  try {
    result = fn();
  } finally {
    state.profiling = false;
  }
  let peak = -Infinity; // what Math.max() of no kernels gives
  for (const k of state.activeProfile.kernels) peak = Math.max(peak, k.totalBytesSnapshot);
  const kernels = state.activeProfile.kernels.length;
  state.activeProfile.kernels = [];
  return {peak, kernels, result};
}

/** Peak tensor bytes of one run above the bytes in use before it (see the file comment). */
export async function peakBytes(fn: PassFn): Promise<number> {
  const before = tf.memory().numBytes;
  const {peak, result} = await profilePeak(() => tf.tidy(fn));
  tf.dispose(result);
  return Math.max(0, peak - before);
}

export interface PassMeasurement {
  msMedian: number;
  /** Timed runs behind the median. */
  runs: number;
  peakBytes: number;
}

/**
 * The peak run (which also warms up, and happens even when warmup is 0), up to
 * warmup - 1 more untimed runs while under half of `budgetMs`, then up to `reps` timed runs
 * while under `budgetMs` (at least one).
 */
export async function measurePass(fn: PassFn, warmup: number, reps: number,
    budgetMs: number): Promise<PassMeasurement> {
  const start = performance.now();
  const elapsed = () => performance.now() - start;
  const peak = await peakBytes(fn);
  for (let i = 1; i < warmup && elapsed() < budgetMs / 2; i++) await timeOnce(fn);
  const times: number[] = [];
  while (times.length < reps && (times.length === 0 || elapsed() < budgetMs)) times.push(await timeOnce(fn));
  return {msMedian: median(times), runs: times.length, peakBytes: peak};
}
