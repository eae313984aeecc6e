/**
 * The benchmark suite behind `tfjs-attention bench`: every implementation in IMPLS,
 * forward and forward+backward, over a list of shapes. See measure.ts for what is
 * measured and report.ts for the files written.
 */
import * as tf from '@tensorflow/tfjs';
import {BackendChoice, selectBackend} from '../backend';
import {AttentionError, show} from '../errors';
import {assertNonNegativeInt, assertPositiveInt} from '../validate';
import {BenchImpl, IMPLS} from './impls';
import {AttentionShape, Pass, PASSES, PassFn, attentionFlops, peakBytes, timePass} from './measure';
import {collectMeta} from './meta';
import {BenchReport, BenchRow, writeReport} from './report';

const base = {B: 1, H: 8, G: 8, D: 64};

/** B=1, H=8, D=64, T=S in {128, 512, 2048} with G=8 (multi-head), plus one GQA row (G=2). */
export const DEFAULT_SHAPES: readonly AttentionShape[] = [
  {...base, T: 128, S: 128},
  {...base, T: 512, S: 512},
  {...base, G: 2, T: 512, S: 512},
  {...base, T: 2048, S: 2048},
];

export interface BenchPreset {
  shapes: readonly AttentionShape[];
  warmup: number;
  reps: number;
}

/** The default run. */
export const FULL_PRESET: BenchPreset = {shapes: DEFAULT_SHAPES, warmup: 2, reps: 5};
/** `--quick`: the shapes with T <= 512, one warm-up run and median of 3. */
export const QUICK_PRESET: BenchPreset = {shapes: DEFAULT_SHAPES.filter((s) => s.T <= 512), warmup: 1, reps: 3};

/** What the CLI's --seq, --batch, --heads, --kv-heads and --dim change in a list of shapes. */
export interface ShapeOverrides {
  /** Lengths T (= S): one multi-head shape per length (B=1, H=8, D=64 unless overridden) replaces the list. */
  seq?: readonly number[];
  /** B */
  batch?: number;
  /** H */
  heads?: number;
  /** G. Default: H for multi-head shapes (G == H), the shape's own G otherwise. */
  kvHeads?: number;
  /** D (= Dv) */
  dim?: number;
}

/**
 * `shapes` with the overrides applied, duplicates dropped, in order. Throws
 * AttentionError('INVALID_CONFIG') for a value that is not a positive integer or
 * heads not divisible by the key/value heads.
 */
export function overrideShapes(shapes: readonly AttentionShape[], o: ShapeOverrides): AttentionShape[] {
  if (o.seq != null) {
    if (o.seq.length === 0) throw new AttentionError('INVALID_CONFIG', 'seq must list at least one length');
    o.seq.forEach((T) => assertPositiveInt('seq', T));
  }
  for (const [name, value] of [['batch', o.batch], ['heads', o.heads], ['kvHeads', o.kvHeads], ['dim', o.dim]] as const) {
    if (value != null) assertPositiveInt(name, value);
  }
  const start = o.seq != null ? o.seq.map((T) => ({...base, T, S: T})) : shapes;
  const out: AttentionShape[] = [];
  for (const s of start) {
    const H = o.heads ?? s.H;
    const G = o.kvHeads ?? (s.G === s.H ? H : s.G);
    if (H % G !== 0) {
      throw new AttentionError('INVALID_CONFIG',
        `heads (${H}) must be divisible by kvHeads (${G}) in the shape with T=${s.T}, S=${s.S}; ` +
        'set kvHeads (--kv-heads) to a divisor of heads');
    }
    const shape = {B: o.batch ?? s.B, H, G, T: s.T, S: s.S, D: o.dim ?? s.D};
    const same = (x: AttentionShape) => (['B', 'H', 'G', 'T', 'S', 'D'] as const).every((key) => x[key] === shape[key]);
    if (!out.some(same)) out.push(shape);
  }
  return out;
}

export interface BenchOptions {
  /** Names from the registry. Default: all, in table order. */
  impls?: readonly string[];
  /** The table of implementations to draw from. Default IMPLS. */
  registry?: Readonly<Record<string, BenchImpl>>;
  /** Default: FULL_PRESET.shapes. */
  shapes?: readonly AttentionShape[];
  /** Passed to selectBackend: default TFJS_ATTENTION_BACKEND, else 'auto'. */
  backend?: BackendChoice;
  /** Untimed runs before timing. Default FULL_PRESET.warmup. */
  warmup?: number;
  /** Timed runs; the median is reported. Default FULL_PRESET.reps. */
  reps?: number;
  /** Folder for results.json and results.md; nothing is written when absent. */
  outDir?: string;
  /** Receives one progress line per measured row. */
  log?: (line: string) => void;
  /** Seed of the random q, k, v and cotangent. Default 0. */
  seed?: number;
}

/** Runs the suite and returns `{meta, rows}`, the content of results.json. */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const registry = options.registry ?? IMPLS;
  const known = Object.keys(registry);
  const names = options.impls ?? known;
  if (names.length === 0 || names.some((n) => !known.includes(n))) {
    throw new AttentionError('INVALID_CONFIG',
      `impls must name implementations from ${known.join(', ')}, received ${show([...names])}`);
  }
  const warmup = options.warmup ?? FULL_PRESET.warmup;
  const reps = options.reps ?? FULL_PRESET.reps;
  assertNonNegativeInt('warmup', warmup);
  assertPositiveInt('reps', reps);
  const backend = await selectBackend(options.backend);
  const meta = collectMeta(backend, warmup, reps);
  const log = options.log ?? (() => undefined);

  const rows: BenchRow[] = [];
  for (const shape of options.shapes ?? FULL_PRESET.shapes) {
    const inputs = makeInputs(shape, options.seed ?? 0);
    try {
      for (const name of names) {
        for (const pass of PASSES) {
          const row = await benchPass(name, registry[name], pass, shape, inputs, backend, warmup, reps);
          log(progressLine(row));
          rows.push(row);
          // Rewritten after every row: a run that dies (the wasm heap aborts the process when
          // it runs out, which no catch can stop) keeps the rows it finished.
          if (options.outDir != null) writeReport(options.outDir, {meta, rows});
        }
      }
    } finally {
      tf.dispose(inputs);
    }
  }
  const report = {meta, rows};
  if (options.outDir != null && rows.length === 0) writeReport(options.outDir, report);
  return report;
}

/** q [B, H, T, D], k and v [B, G, S, D], and the cotangent dy [B, H, T, D]. */
function makeInputs({B, H, G, T, S, D}: AttentionShape, seed: number): tf.Tensor[] {
  const shapes = [[B, H, T, D], [B, G, S, D], [B, G, S, D], [B, H, T, D]];
  return shapes.map((s, i) => tf.randomNormal(s, 0, 1, 'float32', seed + i));
}

/** fwd: the output. fwd+bwd: d/d(q, k, v) of sum(output * dy), i.e. the gradients for cotangent dy. */
function passFn(impl: BenchImpl, pass: Pass, [q, k, v, dy]: tf.Tensor[]): PassFn {
  if (pass === 'fwd') return () => [impl.run(q, k, v, {})];
  const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(impl.run(a, b, c, {}), dy));
  return () => tf.grads(loss)([q, k, v]);
}

async function benchPass(name: string, impl: BenchImpl, pass: Pass, shape: AttentionShape,
    inputs: tf.Tensor[], backend: string, warmup: number, reps: number): Promise<BenchRow> {
  const {B, H, G, T, S, D} = shape; // in this order in results.json
  const row: BenchRow = {impl: name, pass, backend, B, H, G, T, S, D, msMedian: null, peakBytes: null, gflops: null};
  try {
    const fn = passFn(impl, pass, inputs);
    row.msMedian = await timePass(fn, warmup, reps);
    row.gflops = attentionFlops(shape, pass) / row.msMedian / 1e6;
    row.peakBytes = await peakBytes(fn);
  } catch (e) {
    row.error = String((e as Error)?.message ?? e).split('\n')[0];
  }
  return row;
}

function progressLine(r: BenchRow): string {
  const shape = `B=${r.B} H=${r.H} G=${r.G} T=${r.T} S=${r.S} D=${r.D}`;
  const result = r.error != null ? `error: ${r.error}` : `${r.msMedian!.toFixed(2)} ms`;
  return `${r.impl} ${r.pass} ${shape}: ${result}`;
}
