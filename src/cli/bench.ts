/** `tfjs-attention bench`: times every attention implementation; see src/bench/run.ts. */
import * as fs from 'fs';
import * as path from 'path';
import {Command, Option} from './command';
import {BackendChoice, NODE_BACKEND_CHOICES} from '../kernels/backend';
import {AttentionError} from '../core/errors';
import {IMPLS, IMPL_NAMES} from '../bench/impls';
import {runBench} from '../bench/run';
import {DENSE_IMPLS, DENSE_MAX_T, FULL_PRESET, QUICK_PRESET, SUITES, SUITE_NAMES, SuiteName, overrideShapes}
  from '../bench/suites';
import {formatMeta, formatTable, summarize} from '../bench/report';
import {DECODE_CONTEXTS, DECODE_ROWS, DecodeRowName, formatDecodeTable, runDecodeBench, summarizeDecode}
  from '../bench/decode';
import {formatStepTable, runStepBench, summarizeSteps} from '../bench/step';
import {STEP_ROWS, StepRowName} from '../bench/step_models';
import {LibraryKernels} from '../kernels/kernel_setting';
import {WORKLOADS} from '../bench/workloads';
import {MATMUL_PATHS, MatMulPath} from '../ops/matmul';
import {CliIO, intArg, intListArg, namesArg, threadsOption} from './shared';
import {ThreadsArg} from '../kernels/wasm_threads';

const ROW_NAMES = [...IMPL_NAMES, ...Object.keys(WORKLOADS)];
const rowDescription = (n: string) => (IMPLS[n] ?? WORKLOADS[n]).description;

/** The suites: the attention and layer rows (quick, full), the decode rows, or the training-step rows. */
const ALL_SUITES = [...SUITE_NAMES, 'decode', 'step'] as const;

interface BenchFlags {
  only?: string[];
  backend?: BackendChoice;
  suite: SuiteName | 'decode' | 'step';
  kernels?: string[];
  quick: boolean;
  budget?: number;
  matmulPath?: MatMulPath;
  warmup?: number;
  reps?: number;
  out: string;
  seq?: number[];
  batch?: number;
  heads?: number;
  kvHeads?: number;
  dim?: number;
  graphEdges?: number[];
  points?: number[];
  heap: boolean;
  threads: ThreadsArg;
}

const shapesText = (shapes: typeof FULL_PRESET.shapes) =>
  shapes.map((s) => `B=${s.B} H=${s.H} G=${s.G} T=S=${s.T} D=${s.D}`).join('; ');
const suiteText = (name: SuiteName) => {
  const p = SUITES[name];
  return `  ${name}: attention rows at ${shapesText(p.shapes)}\n    layer rows at ${shapesText(p.layerShapes)}; ` +
    `matmul n=${p.matmulSizes.join(',')}; graph E=${p.graphEdges.join(',')}; point rows N=${p.points.join(',')}; ` +
    `up to ${p.warmup} warm-up and ${p.reps} timed runs, ` +
    `${p.budgetMs / 1000} s budget per row`;
};

export function registerBench(program: Command, io: CliIO): void {
  const width = Math.max(...ROW_NAMES.map((n) => n.length));
  const implList = ROW_NAMES.map((n) => `  ${n.padEnd(width)}  ${rowDescription(n)}`).join('\n');
  program.command('bench')
    .description('time the attention implementations, the MultiHeadAttention layer and the backend\'s matMul, ' +
      'forward and forward+backward, and write DIR/results.json, DIR/results.md and the plots DIR/time.svg, ' +
      'DIR/memory.svg')
    .addOption(new Option('--only <names>', `comma-separated rows to run: ${ROW_NAMES.join(', ')}; ` +
      `with --suite decode: ${DECODE_ROWS.join(', ')}; with --suite step: ${STEP_ROWS.join(', ')}`)
      .argParser(namesArg([...new Set([...ROW_NAMES, ...DECODE_ROWS, ...STEP_ROWS])], 'row')))
    .addOption(new Option('--backend <name>', 'tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)')
      .choices(NODE_BACKEND_CHOICES))
    .addOption(threadsOption())
    .addOption(new Option('--suite <name>', 'which shapes and how many runs (see below)').choices(ALL_SUITES)
      .default('full'))
    .option('--quick', 'the same as --suite quick', false)
    .option('--warmup <n>', 'untimed runs before timing, the first also measures peak memory; 0 counts as 1, ' +
      "as the peak run always happens (default: the suite's)", intArg(0))
    .option('--reps <n>', 'timed runs, the median is reported (default: the suite\'s)', intArg(1))
    .option('--budget <seconds>', 'per row, no more warm-up runs after half of this and no more timed runs after ' +
      'all of it (at least one); default: the suite\'s', intArg(0))
    .addOption(new Option('--matmul-path <path>', 'how the library computes products: auto (split into 2-D ' +
      "products on wasm while tfjs's own product kernels are registered), split (always), batched (plain " +
      'tf.matMul); default auto').choices(MATMUL_PATHS))
    .option('--out <dir>', 'folder for results.json, results.md, time.svg and memory.svg', 'bench-results')
    .option('--graph-edges <list>', 'comma-separated edge counts E of the graph rows (N = E/10 nodes; default: the ' +
      "suite's)", intListArg(1))
    .option('--points <list>', 'comma-separated point counts N of the point rows (knn-graph, geometric, equivariant: ' +
      "N random 3-D points, k = 16 nearest; T = N, S = E = 16 N edges; default: the suite's)", intListArg(1))
    .option('--seq <list>', 'comma-separated lengths T (= S), e.g. 512,2048,4096: one multi-head shape ' +
      'per length (B=1, H=8, D=64 unless set below) instead of the suite\'s attention shapes; with --suite ' +
      `decode, the contexts (default ${DECODE_CONTEXTS.join(',')})`, intListArg(1))
    .option('--batch <n>', 'batch size B for every shape', intArg(1))
    .option('--heads <n>', 'query heads H for every shape', intArg(1))
    .option('--kv-heads <n>', 'key/value heads G for every shape (default: H for multi-head shapes); ' +
      'must divide H', intArg(1))
    .option('--dim <n>', 'head dim D for every shape', intArg(1))
    .option('--kernels <list>', "with --suite step: run each row with the library's kernels and gradients " +
      "(library), tfjs's own (tfjs), or both (library,tfjs); default: both for the plain tfjs rows",
      namesArg(['library', 'tfjs'], 'kernel setting'))
    .option('--no-heap', 'skip the real-memory measurement (on wasm, each row\'s heap growth over one pass, ' +
      'measured in a fresh child process: about 2 s more per row)')
    .addHelpText(`\nRows:\n${implList}\n\nSuites:\n${SUITE_NAMES.map(suiteText).join('\n')}\n` +
      '  decode: per-token time of one causal layer of each kind (B=1, H=8, D=64) from a cache holding c ' +
      `positions and by recomputing all c + 1, c in ${DECODE_CONTEXTS.join(', ')}; writes decode.json, decode.md\n` +
      '  step: one training step (forward, backward, Adam) of buildTransformer presets and plain tfjs models (an MLP, a ' +
      'LayerNormalization stack): ms, kernels per step, FLOP rate against the run\'s 2-D matMul, peak memory; ' +
      'writes step.json, step.md\n' +
      `  ${DENSE_IMPLS.join(', ')} (which hold T x S matrices) skip lengths above ${DENSE_MAX_T}.\n` +
      'Example: bench --only sdpa,flash --seq 512,2048,4096 --heads 4 --dim 64\n')
    .action(async (flags: BenchFlags) => {
      if (flags.suite === 'step') {
        const bad = (flags.only ?? []).filter((n) => !(STEP_ROWS as readonly string[]).includes(n));
        const badKernels = (flags.kernels ?? []).filter((k) => k !== 'library' && k !== 'tfjs');
        if (bad.length > 0 || badKernels.length > 0) {
          throw new AttentionError('INVALID_CONFIG', bad.length > 0
            ? `--suite step rows are ${STEP_ROWS.join(', ')}; received ${bad.join(', ')}`
            : `--kernels takes library and/or tfjs; received ${badKernels.join(', ')}`);
        }
        const report = await runStepBench({
          rows: flags.only as StepRowName[] | undefined, kernels: flags.kernels as LibraryKernels[] | undefined,
          backend: flags.backend, threads: flags.threads, reps: flags.reps, warmup: flags.warmup,
          budgetMs: flags.budget != null ? flags.budget * 1000 : undefined, outDir: flags.out,
          log: (line) => io.stderr.write(`${line}\n`),
        });
        const summary = summarizeSteps(report.rows).map((l) => `- ${l}\n`).join('');
        io.stdout.write(`\n2-D matMul: ${report.matmulGflops.toFixed(2)} GFLOP/s\n\n` +
          `${formatStepTable(report.rows)}\n${summary}` +
          `wrote ${path.join(flags.out, 'step.json')}, ${path.join(flags.out, 'step.md')}\n`);
        return;
      }
      if (flags.suite === 'decode') {
        const bad = (flags.only ?? []).filter((n) => !(DECODE_ROWS as readonly string[]).includes(n));
        if (bad.length > 0) {
          throw new AttentionError('INVALID_CONFIG',
            `--suite decode rows are ${DECODE_ROWS.join(', ')}; received ${bad.join(', ')}`);
        }
        const report = await runDecodeBench({
          rows: flags.only as DecodeRowName[] | undefined, contexts: flags.seq, backend: flags.backend,
          threads: flags.threads,
          reps: flags.reps, warmup: flags.warmup, budgetMs: flags.budget != null ? flags.budget * 1000 : undefined,
          outDir: flags.out, log: (line) => io.stderr.write(`${line}\n`),
        });
        const summary = summarizeDecode(report.rows).map((l) => `- ${l}\n`).join('');
        io.stdout.write(`\n${formatDecodeTable(report.rows)}\n${summary}wrote ${path.join(flags.out, 'decode.json')}, ` +
          `${path.join(flags.out, 'decode.md')}\n`);
        return;
      }
      const only = flags.only ?? [...ROW_NAMES];
      const bad = only.filter((n) => !ROW_NAMES.includes(n));
      if (bad.length > 0) {
        throw new AttentionError('INVALID_CONFIG', `${bad.join(', ')}: rows of --suite decode only`);
      }
      const suite: SuiteName = flags.quick ? 'quick' : flags.suite;
      const preset = suite === 'quick' ? QUICK_PRESET : FULL_PRESET;
      // Checked before the backend is switched, so a bad shape is a usage error (exit 2).
      const shapes = overrideShapes(preset.shapes, {seq: flags.seq, batch: flags.batch, heads: flags.heads,
        kvHeads: flags.kvHeads, dim: flags.dim});
      const report = await runBench({
        impls: only,
        backend: flags.backend,
        threads: flags.threads,
        suite,
        shapes,
        warmup: flags.warmup,
        reps: flags.reps,
        budgetMs: flags.budget != null ? flags.budget * 1000 : undefined,
        matmulPath: flags.matmulPath,
        graphEdges: flags.graphEdges,
        points: flags.points,
        heap: flags.heap,
        outDir: flags.out,
        log: (line) => io.stderr.write(`${line}\n`),
      });
      const summary = summarize(report.rows).map((l) => `- ${l}\n`).join('');
      io.stdout.write(`\n${formatMeta(report.meta)}\n\n${formatTable(report.rows)}\n${summary}`);
      const files = ['results.json', 'results.md', 'time.svg', 'memory.svg']
        .map((f) => path.join(flags.out, f)).filter((f) => fs.existsSync(f));
      io.stdout.write(`wrote ${files.join(', ')}\n`);
    });
}
