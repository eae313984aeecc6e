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
import {POINT_NEIGHBOURS, POINT_WORKLOADS} from './geometric_workloads';
import {BenchMeta} from './meta';
import {AttentionShape, Pass} from './measure';

/** Bytes in MiB; null stays null (a failed row). */
export function toMiB(bytes: number | null): number | null {
  return bytes == null ? null : bytes / 2 ** 20;
}

/** "12.3 MiB" */
export const formatMiB = (bytes: number): string => `${toMiB(bytes)!.toFixed(1)} MiB`;

export interface BenchRow extends AttentionShape {
  impl: string;
  pass: Pass;
  backend: string;
  /** Median wall time of one pass, milliseconds. */
  msMedian: number | null;
  /** Peak tensor bytes above the bytes in use before the pass (tf.profile's accounting). */
  peakBytes: number | null;
  /**
   * Real memory: the wasm heap's growth over one pass in a fresh process, inputs included
   * (heap.ts); null when not measured.
   */
  heapBytes: number | null;
  /** What any implementation must hold: inputs, outputs and, for fwd+bwd, dOut and the forward output (heap.ts). */
  floorBytes: number;
  /** FLOPs (see meta.flops) / time, in 1e9 per second. */
  gflops: number | null;
  /**
   * The FLOPs of the products the row actually computes / time (rows that count them: linear,
   * local-global), else null.
   */
  performedGflops?: number | null;
  /** The share of the T x S tiles the row computes (rows with a block mask), else null. */
  computed?: number | null;
  /** Timed runs behind msMedian (the time budget can stop a row before `reps`). */
  runs: number;
  /** First line of the error when the pass threw. */
  error?: string;
  /** First line of the error when the heap measurement failed (the row's timing stands). */
  heapError?: string;
}

/** heapBytes / floorBytes, or null. */
export const floorRatio = (r: BenchRow): number | null => (r.heapBytes == null ? null : r.heapBytes / r.floorBytes);

export interface BenchReport {
  meta: BenchMeta;
  rows: BenchRow[];
}

/** x with `digits` decimals; null (a failed row) as '-'. */
export const fixedOrDash = (x: number | null, digits: number): string => (x == null ? '-' : x.toFixed(digits));

/** A markdown table with padded columns, readable in a terminal too. */
export function markdownTable(header: readonly string[], body: readonly string[][]): string {
  const cells = [header, ...body];
  const widths = header.map((_, c) => Math.max(...cells.map((row) => row[c].length)));
  const line = (row: readonly string[]) => `| ${row.map((x, c) => x.padEnd(widths[c])).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n') + '\n';
}

/** The rows as a markdown table. */
export function formatTable(rows: readonly BenchRow[]): string {
  const header = ['impl', 'pass', 'B', 'H', 'G', 'T', 'S', 'D', 'ms', 'runs', 'peak MiB', 'heap MiB', 'x floor',
    'GFLOP/s', 'tiles', 'error'];
  return markdownTable(header, rows.map((r) => [
    r.impl, r.pass, r.B, r.H, r.G, r.T, r.S, r.D,
    fixedOrDash(r.msMedian, 2),
    r.runs,
    fixedOrDash(toMiB(r.peakBytes), 1),
    fixedOrDash(toMiB(r.heapBytes), 1),
    fixedOrDash(floorRatio(r), 1),
    fixedOrDash(r.gflops, 2),
    r.computed != null ? `${(100 * r.computed).toFixed(1)}%` : '',
    r.error ?? (r.heapError != null ? `heap: ${r.heapError}` : ''),
  ].map(String)));
}

export function formatMeta(meta: BenchMeta): string {
  return `backend ${meta.backend}, tfjs ${meta.tfjsVersion}, tfjs-attention ${meta.packageVersion}, ` +
    `node ${meta.nodeVersion}, ${meta.cpuCount} cpus, ${meta.threads ?? 1} thread${(meta.threads ?? 1) === 1 ? '' : 's'}, ` +
    `${meta.date}; suite ${meta.suite}, matMul path ` +
    `${meta.matmulPath} (${meta.splitProducts ? 'split into 2-D products' : 'tf.matMul as is'}); median of up to ` +
    `${meta.reps} runs after up to ${meta.warmup} warm-up, ${meta.budgetMs / 1000} s budget per row`;
}

/** Writes results.json and results.md into `dir` (created if missing); returns their paths. */
export function writeReport(dir: string, report: BenchReport): string[] {
  fs.mkdirSync(dir, {recursive: true});
  const json = path.join(dir, 'results.json');
  const md = path.join(dir, 'results.md');
  fs.writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
  const notes = `FLOPs: ${report.meta.flops}.\n\nPeak bytes: ${report.meta.peakBytes}.\n\nHeap: ${report.meta.heap}.\n`;
  const summary = summarize(report.rows);
  fs.writeFileSync(md, `# tfjs-attention bench\n\n${formatMeta(report.meta)}\n\n` +
    `${formatTable(report.rows)}\n${summary.length > 0 ? `${summary.map((l) => `- ${l}`).join('\n')}\n\n` : ''}${notes}`);
  return [json, md];
}

/** The rows on point clouds, whose size is N (T) alone. */
const POINT_ROWS = Object.keys(POINT_WORKLOADS);

/** Rows that are not attention implementations on (q, k, v). */
export const NOT_ATTENTION_ROWS: readonly string[] = ['matmul', 'mha-layer', 'mha-layer-naive', ...POINT_ROWS];

const findRow = (rows: readonly BenchRow[], impl: string, pass: string, shape: Partial<AttentionShape> = {}) =>
  rows.find((r) => r.impl === impl && r.pass === pass && r.error == null &&
    (Object.keys(shape) as (keyof AttentionShape)[]).every((key) => r[key] === shape[key]));

/**
 * The comparisons the suite exists for, in words, from whatever rows are there:
 * mha-layer vs mha-layer-naive, sdpa's GFLOP/s as a share of matmul's, each attention
 * shape's real memory (heap growth against the floor) where measured, each point row's
 * time and real memory against N, and at each length where naive ran, every other
 * implementation's time and peak against it.
 */
export function summarize(rows: readonly BenchRow[]): string[] {
  const out: string[] = [];
  for (const layer of rows.filter((r) => r.impl === 'mha-layer' && r.error == null)) {
    const {B, H, G, T, D} = layer;
    const naive = findRow(rows, 'mha-layer-naive', layer.pass, {B, H, G, T, D});
    if (naive == null) continue;
    out.push(`mha-layer ${layer.pass} (B=${B}, T=${T}, E=${H * D}, H=${H}, G=${G}): ${layer.msMedian!.toFixed(1)} ms vs ` +
      `mha-layer-naive ${naive.msMedian!.toFixed(1)} ms: ${(naive.msMedian! / layer.msMedian!).toFixed(2)}x faster`);
  }
  const ceiling = rows.find((r) => r.impl === 'matmul' && r.error == null);
  if (ceiling != null) {
    for (const r of rows.filter((x) => x.impl === 'sdpa' && x.pass === 'fwd+bwd' && x.error == null)) {
      out.push(`sdpa fwd+bwd (B=${r.B}, H=${r.H}, G=${r.G}, T=${r.T}, D=${r.D}): ${r.gflops!.toFixed(2)} GFLOP/s = ` +
        `${(100 * r.gflops! / ceiling.gflops!).toFixed(0)}% of matmul (n=${ceiling.T}) ` +
        `${ceiling.gflops!.toFixed(2)} GFLOP/s`);
    }
    // The rows that count the products they perform, at their longest T.
    const counted = rows.filter((x) => x.pass === 'fwd+bwd' && x.error == null && x.performedGflops != null);
    for (const impl of [...new Set(counted.map((x) => x.impl))]) {
      const r = counted.filter((x) => x.impl === impl).reduce((a, b) => (b.T > a.T ? b : a));
      out.push(`${impl} fwd+bwd (B=${r.B}, H=${r.H}, G=${r.G}, T=${r.T}, D=${r.D}): ${r.performedGflops!.toFixed(2)} ` +
        `GFLOP/s in the products it performs = ${(100 * r.performedGflops! / ceiling.gflops!).toFixed(0)}% of matmul`);
    }
  }
  out.push(...flexSummary(rows));
  const seen = new Set<string>();
  for (const r of rows.filter((x) => x.pass === 'fwd+bwd' && x.heapBytes != null && !NOT_ATTENTION_ROWS.includes(x.impl))) {
    const {B, H, G, T, S, D} = r;
    const key = `${B},${H},${G},${T},${S},${D}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const group = rows.filter((x) => x.pass === 'fwd+bwd' && x.heapBytes != null && !NOT_ATTENTION_ROWS.includes(x.impl) &&
      x.B === B && x.H === H && x.G === G && x.T === T && x.S === S && x.D === D);
    out.push(`real memory, fwd+bwd at B=${B}, H=${H}, G=${G}, T=${T}, D=${D} (floor ${formatMiB(r.floorBytes)}): ` +
      group.map((x) => `${x.impl} ${formatMiB(x.heapBytes!)} (${floorRatio(x)!.toFixed(1)}x)`).join('; '));
  }
  for (const impl of POINT_ROWS) {
    for (const pass of ['fwd', 'fwd+bwd']) {
      const done = rows.filter((r) => r.impl === impl && r.pass === pass && r.error == null).sort((a, b) => a.T - b.T);
      if (done.length === 0) continue;
      out.push(`${impl} ${pass} against N (k = ${POINT_NEIGHBOURS}, D=${done[0].D}): ` + done.map((r) =>
        `N=${r.T} ${r.msMedian!.toFixed(1)} ms` + (r.heapBytes != null ? `, heap ${formatMiB(r.heapBytes)}` : '')).join('; '));
    }
  }
  for (const naive of rows.filter((r) => r.impl === 'naive' && r.pass === 'fwd+bwd' && r.error == null)) {
    const {B, H, G, T, S, D} = naive;
    const others = rows.filter((r) => r.pass === 'fwd+bwd' && r.error == null && r.impl !== 'naive' &&
      r.B === B && r.H === H && r.G === G && r.T === T && r.S === S && r.D === D);
    if (others.length === 0) continue;
    out.push(`fwd+bwd at B=${B}, H=${H}, G=${G}, T=${T}, D=${D}, against naive (${naive.msMedian!.toFixed(1)} ms, ` +
      `peak ${formatMiB(naive.peakBytes!)}): ` + others.map((r) =>
      `${r.impl} ${(naive.msMedian! / r.msMedian!).toFixed(2)}x faster, peak ${formatMiB(r.peakBytes!)} ` +
      `(${(r.peakBytes! / naive.peakBytes!).toFixed(2)}x)`).join('; '));
  }
  return out;
}

/**
 * The flex rows against full attention at each shape (fwd+bwd): flex with no mod against the
 * fastest of sdpa and flash, and each flex row with a block mask against the fastest full
 * attention's time scaled by the share of tiles it computes.
 */
function flexSummary(rows: readonly BenchRow[]): string[] {
  const out: string[] = [];
  const ok = rows.filter((r) => r.pass === 'fwd+bwd' && r.error == null);
  for (const flex of ok.filter((r) => r.impl === 'flex')) {
    const {B, H, G, T, S, D} = flex;
    const at = (impl: string) => findRow(ok, impl, 'fwd+bwd', {B, H, G, T, S, D});
    const full = ['sdpa', 'flash'].map(at).filter((r) => r != null) as BenchRow[];
    const shape = `B=${B}, H=${H}, G=${G}, T=${T}, D=${D}`;
    if (full.length > 0) {
      const best = full.reduce((a, b) => (b.msMedian! < a.msMedian! ? b : a));
      out.push(`flex fwd+bwd (${shape}): ${flex.msMedian!.toFixed(1)} ms = ${(flex.msMedian! / best.msMedian!).toFixed(2)}x ` +
        `the fastest full attention (${best.impl} ${best.msMedian!.toFixed(1)} ms)`);
    }
    const fullMs = Math.min(flex.msMedian!, ...full.map((r) => r.msMedian!));
    const masked = ok.filter((r) => r.impl.startsWith('flex-') && r.computed != null &&
      r.B === B && r.H === H && r.G === G && r.T === T && r.S === S && r.D === D);
    if (masked.length > 0) {
      out.push(`flex block masks fwd+bwd (${shape}), time / (full ${fullMs.toFixed(1)} ms x tiles computed): ` +
        masked.map((r) => `${r.impl} ${r.msMedian!.toFixed(1)} ms at ${(100 * r.computed!).toFixed(1)}% = ` +
          `${(r.msMedian! / (fullMs * r.computed!)).toFixed(2)}`).join('; '));
    }
  }
  return out;
}
