/**
 * The benchmark's outputs. results.json is
 *
 *   {meta: BenchMeta, rows: BenchRow[]}
 *
 * with one row per implementation, shape and pass. A row that failed (out of memory,
 * unsupported op, ...) has msMedian, peakBytes and gflops null and an `error` message.
 * results.md holds the same table as the terminal, under a line of meta data.
 */
import * as fs from 'fs';
import * as path from 'path';
import {BenchMeta} from './meta';
import {AttentionShape, Pass} from './measure';

export interface BenchRow extends AttentionShape {
  impl: string;
  pass: Pass;
  backend: string;
  /** Median wall time of one pass, milliseconds. */
  msMedian: number | null;
  /** Peak tensor bytes above the bytes in use before the pass. */
  peakBytes: number | null;
  /** Attention FLOPs / time, in 1e9 per second. */
  gflops: number | null;
  /** First line of the error when the pass threw. */
  error?: string;
}

export interface BenchReport {
  meta: BenchMeta;
  rows: BenchRow[];
}

const fixed = (x: number | null, digits: number) => (x == null ? '-' : x.toFixed(digits));

/** A markdown table with padded columns, readable in a terminal too. */
export function formatTable(rows: readonly BenchRow[]): string {
  const header = ['impl', 'pass', 'B', 'H', 'G', 'T', 'S', 'D', 'ms', 'peak MiB', 'GFLOP/s', 'error'];
  const body = rows.map((r) => [
    r.impl, r.pass, r.B, r.H, r.G, r.T, r.S, r.D,
    fixed(r.msMedian, 2),
    fixed(r.peakBytes == null ? null : r.peakBytes / 2 ** 20, 1),
    fixed(r.gflops, 2),
    r.error ?? '',
  ].map(String));
  const cells = [header, ...body];
  const widths = header.map((_, c) => Math.max(...cells.map((row) => row[c].length)));
  const line = (row: string[]) => `| ${row.map((x, c) => x.padEnd(widths[c])).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n') + '\n';
}

export function formatMeta(meta: BenchMeta): string {
  return `backend ${meta.backend}, tfjs ${meta.tfjsVersion}, tfjs-attention ${meta.packageVersion}, ` +
    `node ${meta.nodeVersion}, ${meta.cpuCount} cpus, ${meta.date}; median of ${meta.reps} runs ` +
    `after ${meta.warmup} warm-up`;
}

/** Writes results.json and results.md into `dir` (created if missing); returns their paths. */
export function writeReport(dir: string, report: BenchReport): string[] {
  fs.mkdirSync(dir, {recursive: true});
  const json = path.join(dir, 'results.json');
  const md = path.join(dir, 'results.md');
  fs.writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
  const notes = `FLOPs: ${report.meta.flops}.\n\nPeak bytes: ${report.meta.peakBytes}.\n`;
  fs.writeFileSync(md, `# tfjs-attention bench\n\n${formatMeta(report.meta)}\n\n` +
    `${formatTable(report.rows)}\n${notes}`);
  return [json, md];
}
