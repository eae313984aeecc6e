/**
 * SVG plots of a benchmark report, drawn with Vega-Lite (compiled to Vega and rendered
 * headless: no browser, no canvas): time vs T and peak memory vs T, log-log, one line
 * per implementation, a panel per pass. Written beside results.json as time.svg and
 * memory.svg; memory.svg has a row of panels for tf.profile's peak and one for the wasm
 * heap's growth (heap.ts), which is empty when the heap was not measured.
 *
 * The plotted rows are the attention rows of the sweep: of the groups of rows sharing
 * B, H, G and D (with T = S), the one with the most lengths. Failed rows are left out.
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as vl from 'vega-lite';
import {BenchReport, BenchRow, NOT_ATTENTION_ROWS, toMiB} from './report';

/** The attention rows of the group (B, H, G, D, T = S) with the most distinct lengths; [] when none. */
export function sweepRows(rows: readonly BenchRow[]): BenchRow[] {
  const groups = new Map<string, BenchRow[]>();
  for (const r of rows) {
    if (NOT_ATTENTION_ROWS.includes(r.impl) || r.error != null || r.T !== r.S || r.msMedian == null) continue;
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

/** The two memory measures, as memory.svg's rows of panels name them. */
export const MEMORY_MEASURES = ['tf.profile peak', 'wasm heap growth'] as const;

interface PlotValue {
  impl: string;
  pass: string;
  T: number;
  /** For memory.svg: which of MEMORY_MEASURES. */
  measure?: string;
  y: number | null;
}

/** time.svg's values: the median ms of each row. */
function timeValues(rows: BenchRow[]): PlotValue[] {
  return rows.map((r) => ({impl: r.impl, pass: r.pass, T: r.T, y: r.msMedian}));
}

/** memory.svg's values: tf.profile's peak of each row and, where measured, its heap growth (MiB). */
function memoryValues(rows: BenchRow[]): PlotValue[] {
  return rows.flatMap((r) => [
    {impl: r.impl, pass: r.pass, T: r.T, measure: MEMORY_MEASURES[0], y: toMiB(r.peakBytes)},
    {impl: r.impl, pass: r.pass, T: r.T, measure: MEMORY_MEASURES[1], y: toMiB(r.heapBytes)},
  ]);
}

/**
 * A Vega-Lite spec: y vs T, log-log, a line per impl, a column of panels per pass and,
 * when the values have a measure, a row of panels per measure.
 */
function plotSpec(all: PlotValue[], yTitle: string, title: string): vl.TopLevelSpec {
  const values = all.filter((v) => v.y != null && v.y > 0);
  const byMeasure = values.some((v) => v.measure != null);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: {values},
    facet: {
      column: {field: 'pass', type: 'nominal', title: null, sort: ['fwd', 'fwd+bwd']},
      ...(byMeasure ? {row: {field: 'measure', type: 'nominal' as const, title: null, sort: [...MEMORY_MEASURES]}} : {}),
    },
    spec: {
      width: 360,
      height: 300,
      mark: {type: 'line', point: true},
      encoding: {
        x: {field: 'T', type: 'quantitative', title: 'T = S (tokens)', scale: {type: 'log', base: 2},
          axis: {values: [...new Set(values.map((v) => v.T))]}},
        y: {field: 'y', type: 'quantitative', title: yTitle, scale: {type: 'log'}},
        color: {field: 'impl', type: 'nominal', title: 'implementation'},
        tooltip: [{field: 'impl'}, {field: 'T'}, {field: 'y', format: '.1f'}],
      },
    },
    resolve: {scale: {y: 'shared'}},
    config: {font: 'sans-serif'},
  };
}

/** Said once (by `bench`) when vega or vega-lite is not installed: the plots are skipped. */
export const PLOTS_NEED_VEGA = 'plots skipped: time.svg and memory.svg need vega and vega-lite ' +
  '(npm install vega vega-lite); the tables are written';

type Vega = typeof import('vega');
type VegaLite = typeof import('vega-lite');

/**
 * vega and vega-lite, or null when they are not installed. They are optional peers of the
 * package: only `bench` draws, so an app that installs the library does not pay for them.
 */
async function loadVega(): Promise<[Vega, VegaLite] | null> {
  try {
    return await Promise.all([import('vega'), import('vega-lite')]);
  } catch (e) {
    const code = (e as {code?: string})?.code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') return null;
    throw e;
  }
}

/** The spec drawn as an SVG document. */
async function renderSvg([vega, vlc]: [Vega, VegaLite], s: vl.TopLevelSpec): Promise<string> {
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
 * Writes time.svg and memory.svg into `dir`; returns their paths. With nothing to plot, or
 * without vega (then `log` says so in one line), it writes none and removes those of an
 * earlier run, so the folder never shows plots of other results.
 */
export async function writePlots(dir: string, report: BenchReport,
    log: (line: string) => void = () => {}): Promise<string[]> {
  const rows = sweepRows(report.rows);
  const vega = rows.length > 0 ? await loadVega() : null;
  if (rows.length === 0 || vega == null) {
    if (rows.length > 0) log(PLOTS_NEED_VEGA);
    removePlots(dir);
    return [];
  }
  const {B, H, G, D} = rows[0];
  const where = `${report.meta.backend}, B=${B} H=${H} G=${G} D=${D}`;
  const files: [string, vl.TopLevelSpec][] = [
    ['time.svg', plotSpec(timeValues(rows), 'median time (ms)', `Time vs length (${where})`)],
    ['memory.svg', plotSpec(memoryValues(rows), 'MiB',
      `Memory vs length: tf.profile's peak and the wasm heap's growth (${where})`)],
  ];
  fs.mkdirSync(dir, {recursive: true});
  const written: string[] = [];
  for (const [name, s] of files) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, await renderSvg(vega, s));
    written.push(file);
  }
  return written;
}
