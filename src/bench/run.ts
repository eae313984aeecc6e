/**
 * The benchmark suite behind `tfjs-attention bench`: the backend's own matMul, the
 * MultiHeadAttention layer against the same layer written naively, graph attention, the
 * point-cloud rows (kNN graph, geometric and equivariant attention), and every attention
 * implementation in IMPLS, forward and forward+backward, over a list of shapes. See
 * suites.ts for the shapes, measure.ts for what is measured, report.ts and plots.ts for the
 * files written.
 */
import {BackendChoice, selectBackend} from '../kernels/backend';
import {ThreadsArg} from '../kernels/wasm_threads';
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt, assertPositiveInt} from '../core/validate';
import {releaseFlexMasks} from './flex_impls';
import {BenchImpl, IMPLS} from './impls';
import {MatMulPath, getMatMulPath, setMatMulPath} from '../ops/matmul';
import {isNode} from '../core/runtime';
import {measureHeap} from './heap';
import {attentionWorkload} from './attention_workload';
import {AttentionShape, Pass, measurePass} from './measure';
import {collectMeta} from './meta';
import {removePlots, writePlots} from './plots';
import {BenchReport, BenchRow, formatMiB, writeReport} from './report';
import {DENSE_IMPLS, DENSE_MAX_T, SUITE_NAMES, SUITES, SuiteName} from './suites';
import {Prepared, WORKLOADS, Workload, graphShape, matmulShape} from './workloads';
import {POINT_SHAPES} from './geometric_workloads';

export interface BenchOptions {
  /** Names from the registry and the workloads. Default: all, attention rows in table order, then the workloads. */
  impls?: readonly string[];
  /** The table of attention implementations to draw from. Default IMPLS. */
  registry?: Readonly<Record<string, BenchImpl>>;
  /** The other rows (matmul, layers). Default WORKLOADS. */
  workloads?: Readonly<Record<string, Workload>>;
  /** Where the defaults below come from. Default 'full'. */
  suite?: SuiteName;
  /** Shapes of the attention rows. Default: the suite's. */
  shapes?: readonly AttentionShape[];
  /** Shapes of the layer rows. Default: the suite's. */
  layerShapes?: readonly AttentionShape[];
  /** Sizes of the matmul row. Default: the suite's. */
  matmulSizes?: readonly number[];
  /** Edges of the graph rows. Default: the suite's. */
  graphEdges?: readonly number[];
  /** Points N of the point rows (knn-graph, geometric, equivariant; POINT_SHAPES). Default: the suite's. */
  points?: readonly number[];
  /** Longest T per implementation; longer shapes are skipped. Default DENSE_MAX_T for DENSE_IMPLS. */
  maxT?: Readonly<Record<string, number>>;
  /** Passed to selectBackend: default TFJS_ATTENTION_BACKEND, else 'auto'. */
  backend?: BackendChoice;
  /** Passed to selectBackend: the wasm backend's threads in Node. Default: tfjs's (one). */
  threads?: ThreadsArg;
  /** How the library computes its products (see ops/matmul). Default: the current setting ('auto'). */
  matmulPath?: MatMulPath;
  /** Untimed runs before timing (the first also measures peak memory). Default: the suite's. */
  warmup?: number;
  /** Timed runs; the median is reported. Default: the suite's. */
  reps?: number;
  /** Time budget per row in ms (see BenchPreset). Default: the suite's. */
  budgetMs?: number;
  /** Folder for results.json, results.md and the plots; nothing is written when absent. */
  outDir?: string;
  /** Receives one progress line per measured row. */
  log?: (line: string) => void;
  /** Seed of the random inputs. Default 0. */
  seed?: number;
  /**
   * Also measure each row's real memory, the wasm heap's growth in a fresh child process
   * (heap.ts). Default: true on the wasm backend in Node. Rows from other registries or
   * workloads than the built-in ones, and other backends, get heapBytes null.
   */
  heap?: boolean;
}

/** One row to measure: a name and the shape it runs at. */
interface Job {
  name: string;
  shape: AttentionShape;
  workload: Workload;
}

/** Runs the suite and returns `{meta, rows}`, the content of results.json. */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const suite = SUITES[options.suite ?? 'full'];
  if (suite == null) {
    throw new AttentionError('INVALID_CONFIG',
      `suite must be one of ${SUITE_NAMES.join(', ')}, received ${show(options.suite)}`);
  }
  const registry = options.registry ?? IMPLS;
  const workloads = options.workloads ?? WORKLOADS;
  const known = [...Object.keys(registry), ...Object.keys(workloads)];
  const names = options.impls ?? known;
  if (names.length === 0 || names.some((n) => !known.includes(n))) {
    throw new AttentionError('INVALID_CONFIG',
      `impls must name implementations from ${known.join(', ')}, received ${show([...names])}`);
  }
  const warmup = options.warmup ?? suite.warmup;
  const reps = options.reps ?? suite.reps;
  const budgetMs = options.budgetMs ?? suite.budgetMs;
  assertNonNegativeInt('warmup', warmup);
  assertPositiveInt('reps', reps);
  if (typeof budgetMs !== 'number' || !(budgetMs >= 0)) {
    throw new AttentionError('INVALID_CONFIG', `budgetMs must be a number >= 0, received ${show(budgetMs)}`);
  }
  const points = options.points ?? suite.points;
  if (points.length === 0) throw new AttentionError('INVALID_CONFIG', 'points must list at least one count');
  points.forEach((N) => assertPositiveInt('points', N));
  const maxT = options.maxT ?? Object.fromEntries(DENSE_IMPLS.map((n) => [n, DENSE_MAX_T]));
  const jobs = planJobs(names, registry, workloads, options.shapes ?? suite.shapes, {
    layers: options.layerShapes ?? suite.layerShapes, matmul: options.matmulSizes ?? suite.matmulSizes,
    graph: options.graphEdges ?? suite.graphEdges, points}, maxT);

  const backend = await selectBackend(options.backend, {threads: options.threads});
  const previousPath = options.matmulPath != null ? setMatMulPath(options.matmulPath) : null;
  try {
    const heap = (options.heap ?? true) && backend === 'wasm' && isNode();
    const meta = collectMeta(backend, warmup, reps, {suite: options.suite ?? 'full', budgetMs, maxT, heap});
    const log = options.log ?? (() => undefined);
    const rows: BenchRow[] = [];
    const write = () => {
      if (options.outDir != null) writeReport(options.outDir, {meta, rows});
    };
    if (options.outDir != null) removePlots(options.outDir);
    for (const job of jobs) {
      const tooLarge = backend === 'wasm' && job.shape.T > (job.workload.wasmMaxT ?? Infinity);
      if (tooLarge) {
        for (const pass of job.workload.passes) {
          const row = {...rowStart(job, pass, backend), error: `not run: T=${job.shape.T} needs more than the 4 GiB ` +
            `wasm heap (this row runs up to T=${job.workload.wasmMaxT} there)`};
          log(progressLine(row));
          rows.push(row);
        }
        write();
        continue;
      }
      let prepared: Prepared | null = null;
      try {
        prepared = job.workload.prepare(job.shape, options.seed ?? 0);
        for (const pass of job.workload.passes) {
          const row = await benchPass(job, prepared, pass, backend, warmup, reps, budgetMs);
          if (heap && row.error == null && isBuiltIn(job, registry, workloads)) {
            await measureRowHeap(row, job, pass, options.seed ?? 0);
          }
          log(progressLine(row));
          rows.push(row);
          // Rewritten after every row: a run that dies (the wasm heap aborts the process when
          // it runs out, which no catch can stop) keeps the rows it finished.
          write();
        }
      } catch (e) {
        // prepare() failed: one error row per pass.
        for (const pass of job.workload.passes.filter((p) => !rows.some((r) => sameJob(r, job) && r.pass === p))) {
          rows.push({...rowStart(job, pass, backend), error: firstLine(e)});
        }
        write();
      } finally {
        prepared?.dispose();
      }
    }
    const report = {meta, rows};
    if (options.outDir != null) {
      writeReport(options.outDir, report);
      await writePlots(options.outDir, report, options.log);
    }
    return report;
  } finally {
    if (previousPath != null) setMatMulPath(previousPath);
    releaseFlexMasks(); // the flex rows' block masks, kept across a row's runs
  }
}

/** The sizes of the workload rows: layer shapes, matmul n, graph edges E, points N. */
interface WorkloadSizes {
  layers: readonly AttentionShape[];
  matmul: readonly number[];
  graph: readonly number[];
  points: readonly number[];
}

/** Workload rows first (matmul, layers, graph, points: in `names`' order), then each attention shape's rows. */
function planJobs(names: readonly string[], registry: Readonly<Record<string, BenchImpl>>,
                  workloads: Readonly<Record<string, Workload>>, shapes: readonly AttentionShape[],
                  sizes: WorkloadSizes, maxT: Readonly<Record<string, number>>): Job[] {
  const jobs: Job[] = [];
  for (const name of names.filter((n) => n in workloads)) {
    const list = name === 'matmul' ? sizes.matmul.map(matmulShape)
      : name === 'graph' ? sizes.graph.map(graphShape)
        : name in POINT_SHAPES ? sizes.points.map(POINT_SHAPES[name]) : sizes.layers;
    for (const shape of list) jobs.push({name, shape, workload: workloads[name]});
  }
  for (const shape of shapes) {
    for (const name of names.filter((n) => n in registry)) {
      if (shape.T > (maxT[name] ?? Infinity)) continue;
      jobs.push({name, shape, workload: attentionWorkload(registry[name])});
    }
  }
  return jobs;
}

/** True when the row is the built-in one of that name (the heap's child process finds it by name). */
function isBuiltIn(job: Job, registry: Readonly<Record<string, BenchImpl>>,
    workloads: Readonly<Record<string, Workload>>): boolean {
  return job.name in registry ? registry[job.name] === IMPLS[job.name] : workloads[job.name] === WORKLOADS[job.name];
}

/** Fills row.heapBytes from a child process, or row.heapError when that fails. */
async function measureRowHeap(row: BenchRow, job: Job, pass: Pass, seed: number): Promise<void> {
  try {
    const m = await measureHeap({impl: job.name, shape: job.shape, pass, seed, matmulPath: getMatMulPath()});
    row.heapBytes = m.heapBytes;
  } catch (e) {
    row.heapError = firstLine(e);
  }
}

const sameJob = (r: BenchRow, job: Job) => r.impl === job.name &&
  (['B', 'H', 'G', 'T', 'S', 'D'] as const).every((key) => r[key] === job.shape[key]);

const firstLine = (e: unknown) => String((e as Error)?.message ?? e).split('\n')[0];

function rowStart(job: Job, pass: Pass, backend: string): BenchRow {
  const {B, H, G, T, S, D} = job.shape; // in this order in results.json
  return {impl: job.name, pass, backend, B, H, G, T, S, D, msMedian: null, peakBytes: null, heapBytes: null,
    floorBytes: job.workload.floorBytes(job.shape, pass), gflops: null, performedGflops: null, computed: null, runs: 0};
}

async function benchPass(job: Job, prepared: Prepared, pass: Pass, backend: string, warmup: number, reps: number,
                         budgetMs: number): Promise<BenchRow> {
  const row = rowStart(job, pass, backend);
  try {
    const fn = prepared.pass(pass);
    if (fn == null) throw new Error(`${job.name} has no ${pass} pass`);
    const m = await measurePass(fn, warmup, reps, budgetMs);
    row.msMedian = m.msMedian;
    row.peakBytes = m.peakBytes;
    row.runs = m.runs;
    const flops = job.workload.flops(job.shape, pass);
    row.gflops = flops != null ? flops / m.msMedian / 1e6 : null;
    if (job.workload.computedFraction != null) row.computed = job.workload.computedFraction(job.shape);
    if (job.workload.performedFlops != null) {
      row.performedGflops = job.workload.performedFlops(job.shape, pass) / m.msMedian / 1e6;
    }
  } catch (e) {
    row.error = firstLine(e);
  }
  return row;
}

function progressLine(r: BenchRow): string {
  const shape = `B=${r.B} H=${r.H} G=${r.G} T=${r.T} S=${r.S} D=${r.D}`;
  const result = r.error != null ? `error: ${r.error}`
    : `${r.msMedian!.toFixed(2)} ms, ${r.gflops != null ? `${r.gflops.toFixed(2)} GFLOP/s, ` : ''}` +
      `peak ${formatMiB(r.peakBytes!)}` +
      (r.heapBytes != null ? `, heap ${formatMiB(r.heapBytes)} (${(r.heapBytes / r.floorBytes).toFixed(1)}x floor)` : '') +
      (r.heapError != null ? `, heap: ${r.heapError}` : '');
  return `${r.impl} ${r.pass} ${shape}: ${result}`;
}
