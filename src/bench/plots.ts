/**
 * SVG plots of a benchmark report, drawn with Vega-Lite (compiled to Vega and rendered
 * headless: no browser, no canvas): time vs T and peak memory vs T, log-log, one line
 * per implementation, a panel per pass. Written beside results.json as time.svg and
 * memory.svg.
 *
 * The plotted rows are the attention rows of the sweep: of the groups of rows sharing
 * B, H, G and D (with T = S), the one with the most lengths. Failed rows are left out.
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as vl from 'vega-lite';
import {BenchReport, BenchRow, toMiB} from './report';

/** Rows that are not attention implementations on (q, k, v). */
const NOT_ATTENTION = new Set(['matmul', 'mha-layer', 'mha-layer-naive']);

/** The attention rows of the group (B, H, G, D, T = S) with the most distinct lengths; [] when none. */
export function sweepRows(rows: readonly BenchRow[]): BenchRow[] {
  const groups = new Map<string, BenchRow[]>();
  for (const r of rows) {
    if (NOT_ATTENTION.has(r.impl) || r.error != null || r.T !== r.S || r.msMedian == null) continue;
    const key = `${r.B},${r.H},${r.G},${r.D}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  let best: BenchRow[] = [];
  let lengths = 0;
  for (const group of groups.values()) {
    const n = new Set(group.map((r) => r.T)).size;
    if (n > lengths) {
      best = group;
      lengths = n;
    }
  }
  return best;
}

/** A Vega-Lite spec: `field` vs T, log-log, a line per impl, a panel per pass. */
function spec(rows: BenchRow[], field: 'ms' | 'peakMiB', yTitle: string, title: string): vl.TopLevelSpec {
  const values = rows.map((r) => ({
    impl: r.impl, pass: r.pass, T: r.T, ms: r.msMedian, peakMiB: toMiB(r.peakBytes),
  })).filter((v) => v[field] != null && (v[field] as number) > 0);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: {values},
    facet: {column: {field: 'pass', type: 'nominal', title: null, sort: ['fwd', 'fwd+bwd']}},
    spec: {
      width: 360,
      height: 300,
      mark: {type: 'line', point: true},
      encoding: {
        x: {field: 'T', type: 'quantitative', title: 'T = S (tokens)', scale: {type: 'log', base: 2},
          axis: {values: [...new Set(values.map((v) => v.T))]}},
        y: {field, type: 'quantitative', title: yTitle, scale: {type: 'log'}},
        color: {field: 'impl', type: 'nominal', title: 'implementation'},
        tooltip: [{field: 'impl'}, {field: 'T'}, {field, format: '.1f'}],
      },
    },
    resolve: {scale: {y: 'shared'}},
    config: {font: 'sans-serif'},
  };
}

async function render(s: vl.TopLevelSpec): Promise<string> {
  // Loaded here, not at the top: every CLI command imports this module, only bench draws.
  const [vega, vlc] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vlc.compile(s).spec), {renderer: 'none'});
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export const PLOT_FILES = ['time.svg', 'memory.svg'] as const;

/** Removes the plots of an earlier run from `dir` (a run starts with this, so a run that dies shows none). */
export function removePlots(dir: string): void {
  for (const name of PLOT_FILES) fs.rmSync(path.join(dir, name), {force: true});
}

/**
 * Writes time.svg and memory.svg into `dir`; returns their paths. With nothing to plot
 * it writes none and removes those of an earlier run, so the folder never shows plots
 * of other results.
 */
export async function writePlots(dir: string, report: BenchReport): Promise<string[]> {
  const rows = sweepRows(report.rows);
  if (rows.length === 0) {
    removePlots(dir);
    return [];
  }
  const {B, H, G, D} = rows[0];
  const where = `${report.meta.backend}, B=${B} H=${H} G=${G} D=${D}`;
  const files: [string, vl.TopLevelSpec][] = [
    ['time.svg', spec(rows, 'ms', 'median time (ms)', `Time vs length (${where})`)],
    ['memory.svg', spec(rows, 'peakMiB', 'peak tensor memory (MiB)', `Peak memory vs length (${where})`)],
  ];
  fs.mkdirSync(dir, {recursive: true});
  const written: string[] = [];
  for (const [name, s] of files) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, await render(s));
    written.push(file);
  }
  return written;
}
