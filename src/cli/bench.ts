/** `tfjs-attention bench`: times every attention implementation; see src/bench/run.ts. */
import * as path from 'path';
import {Command, Option} from 'commander';
import {BACKEND_CHOICES, BackendChoice} from '../backend';
import {IMPLS, IMPL_NAMES} from '../bench/impls';
import {FULL_PRESET, QUICK_PRESET, overrideShapes, runBench} from '../bench/run';
import {formatMeta, formatTable} from '../bench/report';
import {CliIO, intArg, intListArg, namesArg} from './shared';

interface BenchFlags {
  only: string[];
  backend?: BackendChoice;
  quick: boolean;
  warmup?: number;
  reps?: number;
  out: string;
  seq?: number[];
  batch?: number;
  heads?: number;
  kvHeads?: number;
  dim?: number;
}

const shapesText = (shapes: typeof FULL_PRESET.shapes) =>
  shapes.map((s) => `B=${s.B} H=${s.H} G=${s.G} T=S=${s.T} D=${s.D}`).join('; ');

export function registerBench(program: Command, io: CliIO): void {
  const width = Math.max(...IMPL_NAMES.map((n) => n.length));
  const implList = IMPL_NAMES.map((n) => `  ${n.padEnd(width)}  ${IMPLS[n].description}`).join('\n');
  program.command('bench')
    .description('time attention implementations, forward and forward+backward, and write ' +
      'DIR/results.json and DIR/results.md')
    .addOption(new Option('--only <names>', `comma-separated implementations to run: ${IMPL_NAMES.join(', ')}`)
      .argParser(namesArg(IMPL_NAMES, 'implementation')).default([...IMPL_NAMES], 'all'))
    .addOption(new Option('--backend <name>', `tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)`)
      .choices(BACKEND_CHOICES))
    .option('--quick', `fewer shapes and runs: ${QUICK_PRESET.warmup} warm-up, median of ${QUICK_PRESET.reps}, ` +
      `shapes with T <= 512 (--seq, when given, picks the shapes)`, false)
    .option('--warmup <n>', `untimed runs before timing (default: ${FULL_PRESET.warmup}, ` +
      `${QUICK_PRESET.warmup} with --quick)`, intArg(0))
    .option('--reps <n>', `timed runs, the median is reported (default: ${FULL_PRESET.reps}, ` +
      `${QUICK_PRESET.reps} with --quick)`, intArg(1))
    .option('--out <dir>', 'folder for results.json and results.md', 'bench-results')
    .option('--seq <list>', 'comma-separated lengths T (= S), e.g. 512,2048,4096: one multi-head shape ' +
      'per length (B=1, H=8, D=64 unless set below) instead of the preset shapes', intListArg(1))
    .option('--batch <n>', 'batch size B for every shape', intArg(1))
    .option('--heads <n>', 'query heads H for every shape', intArg(1))
    .option('--kv-heads <n>', 'key/value heads G for every shape (default: H for multi-head shapes); ' +
      'must divide H', intArg(1))
    .option('--dim <n>', 'head dim D for every shape', intArg(1))
    .addHelpText('after', `\nImplementations:\n${implList}\n\nShapes: ${shapesText(FULL_PRESET.shapes)}\n` +
      'Example: bench --only sdpa,flash --seq 512,2048,4096 --heads 4 --dim 64\n')
    .action(async (flags: BenchFlags) => {
      const preset = flags.quick ? QUICK_PRESET : FULL_PRESET;
      // Checked before the backend is switched, so a bad shape is a usage error (exit 2).
      const shapes = overrideShapes(preset.shapes, {seq: flags.seq, batch: flags.batch, heads: flags.heads,
        kvHeads: flags.kvHeads, dim: flags.dim});
      const report = await runBench({
        impls: flags.only,
        backend: flags.backend,
        shapes,
        warmup: flags.warmup ?? preset.warmup,
        reps: flags.reps ?? preset.reps,
        outDir: flags.out,
        log: (line) => io.stderr.write(`${line}\n`),
      });
      io.stdout.write(`\n${formatMeta(report.meta)}\n\n${formatTable(report.rows)}\n`);
      io.stdout.write(`wrote ${path.join(flags.out, 'results.json')} and ${path.join(flags.out, 'results.md')}\n`);
    });
}
