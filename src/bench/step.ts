/**
 * The training-step rows of `tfjs-attention bench --suite step`: one full step of a model
 * as a user trains it (forward, backward with `tf.variableGrads`, an Adam update), timed
 * and counted. The models (step_models.ts):
 *
 * - `transformer-small`: buildTransformer mha, vocab 100, T=128, E=128, 4 heads, 4 layers,
 *   causal (819k parameters), batch 8; the trainer's loss.
 * - `transformer-large`: T=512, E=256, 8 heads, 6 layers, causal, batch 4.
 * - `mlp`: plain tfjs, no attention: Dense 512 -> 1024 relu -> 1024 relu -> 10, batch 512,
 *   softmax cross-entropy.
 * - `layernorm`: plain tfjs: x [8, 128, 128] through 4 x (Dense 128 relu, LayerNormalization),
 *   mean square loss.
 *
 * Each row runs with the library's kernels and gradients (`kernels: 'library'`) and, for the
 * plain rows, also with tfjs's own (`'tfjs'`): what a tfjs model gains from the library being
 * loaded. Per row: the median ms of a step, kernels per step (`tf.profile`), the step's FLOPs
 * (model FLOPs: 6 x tokens x the weights used in products, plus 12 x B x H x T^2 x D per
 * attention layer, the whole T x T counted even where causal attention skips it), their
 * rate, that rate against the 2-D [1024, 1024] x [1024, 1024] matMul timed right after each
 * timed step (the medians of both: on a shared machine whose speed drifts, the two are
 * measured under the same conditions), and the step's peak `tf.memory().numBytes` (weights
 * and Adam's state included).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice, selectBackend} from '../kernels/backend';
import {ThreadsArg} from '../kernels/wasm_threads';
import {AttentionError, show} from '../core/errors';
import {assertPositiveInt} from '../core/validate';
import {fusedAdam} from '../train/adam';
import {LibraryKernels, setLibraryKernels} from '../kernels/kernel_setting';
import {median, profilePeak} from './measure';
import {fixedOrDash, markdownTable} from './report';
import {collectMeta, BenchMeta} from './meta';
import {STEP_MODELS, STEP_ROWS, StepModel, StepRowName} from './step_models';

/** The rows' kernel settings by default: both for the plain tfjs rows, the library's for the transformers. */
const DEFAULT_KERNELS: Readonly<Record<StepRowName, readonly LibraryKernels[]>> = {
  'transformer-small': ['library'], 'transformer-large': ['library'], 'transformer-options': ['library'],
  mlp: ['library', 'tfjs'], layernorm: ['library', 'tfjs'],
};

export interface StepRow {
  row: StepRowName;
  kernels: LibraryKernels;
  backend: string;
  shape: string;
  /** Median ms of one step. */
  msMedian: number | null;
  runs: number;
  /** Kernels the engine ran in one step (tf.profile). */
  kernelsPerStep: number | null;
  /** Model FLOPs of one step (see the file comment). */
  flops: number | null;
  /** flops / msMedian, 1e9 per second. */
  gflops: number | null;
  /** Median GFLOP/s of the 2-D matMul timed after each timed step. */
  matmulGflops: number | null;
  /** gflops / matmulGflops. */
  ofMatMul: number | null;
  /** The most tensor bytes alive during a step (weights and optimizer state included). */
  peakBytes: number | null;
  error?: string;
}

export interface StepReport {
  meta: BenchMeta;
  /** n of the run's 2-D [n, n] x [n, n] matMul. */
  matmulSize: number;
  /** Its GFLOP/s before the rows (median of 5; each row also times it beside its steps). */
  matmulGflops: number;
  rows: StepRow[];
}

export interface StepBenchOptions {
  rows?: readonly StepRowName[];
  /** Which kernel settings to run each row with. Default: DEFAULT_KERNELS. */
  kernels?: readonly LibraryKernels[];
  backend?: BackendChoice;
  threads?: ThreadsArg;
  /** Timed steps per row. Default 5. */
  reps?: number;
  /** Untimed steps first (the first makes Adam's state). Default 1. */
  warmup?: number;
  /** A row stops timing after this many ms (one run at least). Default 60000. */
  budgetMs?: number;
  /** n of the 2-D [n, n] x [n, n] matMul the rows are compared with. Default 1024. */
  matmulSize?: number;
  outDir?: string;
  log?: (line: string) => void;
}

/** The random [n, n] operands of the reference product. */
function matmulOperands(n: number): [tf.Tensor, tf.Tensor] {
  return [tf.randomNormal([n, n], 0, 1, 'float32', 1), tf.randomNormal([n, n], 0, 1, 'float32', 2)];
}

/** Ms of one product a b. */
async function timeMatMul([a, b]: [tf.Tensor, tf.Tensor]): Promise<number> {
  const t0 = performance.now();
  const c = tf.matMul(a, b);
  try {
    await c.data();
    return performance.now() - t0;
  } finally {
    c.dispose();
  }
}

/** GFLOP/s of the 2-D [n, n] x [n, n] product, median of 5 after 2 untimed. */
async function matmulRate(n: number): Promise<number> {
  const operands = matmulOperands(n);
  const times: number[] = [];
  try {
    for (let i = 0; i < 7; i++) {
      const ms = await timeMatMul(operands);
      if (i >= 2) times.push(ms);
    }
  } finally {
    tf.dispose(operands);
  }
  return 2 * n ** 3 / median(times) / 1e6;
}

async function measureStep(name: StepRowName, kernels: LibraryKernels, backend: string, matmulSize: number,
                           o: {reps: number; warmup: number; budgetMs: number}): Promise<StepRow> {
  const row: StepRow = {row: name, kernels, backend, shape: '', msMedian: null, runs: 0, kernelsPerStep: null, flops: null,
    gflops: null, matmulGflops: null, ofMatMul: null, peakBytes: null};
  const previous = setLibraryKernels(kernels);
  let m: StepModel | null = null;
  let operands: [tf.Tensor, tf.Tensor] | null = null;
  let optimizer: tf.Optimizer | null = null;
  try {
    m = STEP_MODELS[name]();
    optimizer = m.trainer && kernels === 'library' ? fusedAdam(1e-4) : tf.train.adam(1e-4);
    const opt = optimizer;
    row.shape = m.shape;
    row.flops = m.flops;
    const vars = m.model.trainableWeights.map((w) => w.read() as tf.Variable);
    const step = (): tf.Scalar => tf.tidy(() => {
      const {value, grads} = tf.variableGrads(m!.loss, vars);
      opt.applyGradients(grads as tf.NamedTensorMap as Parameters<typeof opt.applyGradients>[0]);
      return value;
    });
    const timeStep = async () => {
      const t0 = performance.now();
      const loss = step();
      await loss.data();
      loss.dispose();
      return performance.now() - t0;
    };
    const start = performance.now();
    for (let i = 0; i < Math.max(1, o.warmup); i++) await timeStep();
    const profile = await profilePeak(() => tf.dispose(step()));
    [row.kernelsPerStep, row.peakBytes] = [profile.kernels, profile.peak];
    const times: number[] = [];
    const products: number[] = [];
    operands = matmulOperands(matmulSize);
    await timeMatMul(operands); // untimed
    while (times.length < o.reps && (times.length === 0 || performance.now() - start < o.budgetMs)) {
      times.push(await timeStep());
      products.push(await timeMatMul(operands));
    }
    row.msMedian = median(times);
    row.runs = times.length;
    row.gflops = m.flops / row.msMedian / 1e6;
    row.matmulGflops = 2 * matmulSize ** 3 / median(products) / 1e6;
    row.ofMatMul = row.gflops / row.matmulGflops;
  } catch (e) {
    row.error = String((e as Error)?.message ?? e).split('\n')[0];
  } finally {
    m?.dispose();
    if (operands != null) tf.dispose(operands);
    optimizer?.dispose();
    setLibraryKernels(previous);
  }
  return row;
}

/** Runs the step rows; writes DIR/step.json and DIR/step.md when outDir is given. */
export async function runStepBench(options: StepBenchOptions = {}): Promise<StepReport> {
  const rows = options.rows ?? STEP_ROWS;
  const bad = rows.filter((r) => !(STEP_ROWS as readonly string[]).includes(r));
  if (rows.length === 0 || bad.length > 0) {
    throw new AttentionError('INVALID_CONFIG',
      `step rows must be among ${STEP_ROWS.join(', ')}, received ${show([...rows])}`);
  }
  const o = {reps: options.reps ?? 5, warmup: options.warmup ?? 1, budgetMs: options.budgetMs ?? 60_000};
  assertPositiveInt('reps', o.reps);
  const backend = await selectBackend(options.backend, {threads: options.threads});
  const meta = collectMeta(backend, o.warmup, o.reps, {suite: 'step', budgetMs: o.budgetMs, maxT: {}, heap: false});
  const n = options.matmulSize ?? 1024;
  assertPositiveInt('matmulSize', n);
  const matmulGflops = await matmulRate(n);
  options.log?.(`2-D matMul [${n}, ${n}] x [${n}, ${n}]: ${matmulGflops.toFixed(2)} GFLOP/s`);
  const report: StepReport = {meta, matmulSize: n, matmulGflops, rows: []};
  for (const name of rows) {
    for (const kernels of options.kernels ?? DEFAULT_KERNELS[name]) {
      const r = await measureStep(name, kernels, backend, n, o);
      options.log?.(`${r.row} (${r.kernels} kernels) ${r.shape}: ` + (r.error != null ? `error: ${r.error}`
        : `${r.msMedian!.toFixed(1)} ms, ${r.kernelsPerStep} kernels, ${(r.flops! / 1e9).toFixed(2)} GFLOP, ` +
          `${r.gflops!.toFixed(2)} GFLOP/s = ${(100 * r.ofMatMul!).toFixed(0)}% of matMul ` +
          `(${r.matmulGflops!.toFixed(2)}), peak ${fixedOrDash(r.peakBytes! / 2 ** 20, 1)} MiB`));
      report.rows.push(r);
      if (options.outDir != null) writeStepReport(options.outDir, report);
    }
  }
  return report;
}

/** The rows as a padded markdown table. */
export function formatStepTable(rows: readonly StepRow[]): string {
  const header = ['row', 'kernels', 'shape', 'ms/step', 'runs', 'kernels/step', 'GFLOP', 'GFLOP/s', 'matMul GFLOP/s',
    '% of matMul', 'peak MiB', 'error'];
  return markdownTable(header, rows.map((r) => [r.row, r.kernels, r.shape, fixedOrDash(r.msMedian, 1), r.runs,
    r.kernelsPerStep ?? '-', fixedOrDash(r.flops == null ? null : r.flops / 1e9, 2), fixedOrDash(r.gflops, 2),
    fixedOrDash(r.matmulGflops, 2), fixedOrDash(r.ofMatMul == null ? null : 100 * r.ofMatMul, 0),
    fixedOrDash(r.peakBytes == null ? null : r.peakBytes / 2 ** 20, 1), r.error ?? ''].map(String)));
}

/** The speed-up of the library's kernels over tfjs's, per plain row run both ways. */
export function summarizeSteps(rows: readonly StepRow[]): string[] {
  const out: string[] = [];
  for (const name of STEP_ROWS) {
    const [lib, own] = (['library', 'tfjs'] as const).map((k) => rows.find((r) => r.row === name && r.kernels === k &&
      r.msMedian != null));
    if (lib != null && own != null) {
      out.push(`${name}: ${(own.msMedian! / lib.msMedian!).toFixed(2)}x faster with the library's kernels ` +
        `(${own.kernelsPerStep} -> ${lib.kernelsPerStep} kernels per step)`);
    }
  }
  return out;
}

export function writeStepReport(dir: string, report: StepReport): void {
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'step.json'), JSON.stringify(report, null, 2) + '\n');
  const summary = summarizeSteps(report.rows).map((l) => `- ${l}`).join('\n');
  fs.writeFileSync(path.join(dir, 'step.md'), `# tfjs-attention bench --suite step\n\nbackend ${report.meta.backend}, ` +
    `tfjs ${report.meta.tfjsVersion}, ${report.meta.cpuCount} cpus, ${report.meta.date}; 2-D matMul ` +
    `[${report.matmulSize}]^2 x [${report.matmulSize}]^2: ${report.matmulGflops.toFixed(2)} GFLOP/s\n\n` +
    `${formatStepTable(report.rows)}\n${summary}\n`);
}
