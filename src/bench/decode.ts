/**
 * The decode rows of `tfjs-attention bench --suite decode`: the cost of one new token for
 * one causal attention layer of every kind in the kind table, at several contexts c (the
 * positions already decoded), two ways:
 *
 * - `cached`: one step from a cache that holds c positions (layer.apply(x [B, 1, E],
 *   {cache})), the cost decoding pays per token;
 * - `recompute`: the layer on all c + 1 positions (layer.apply(x [B, c + 1, E])), what a
 *   token costs without a cache.
 *
 * Plus, per cached row, the bytes its cache holds at that context (and per position), an
 * `mqa` row (grouped-query with one key/value head) beside 'mha' and 'gqa', a `gqa-window`
 * row ('gqa' with slidingWindow DECODE_WINDOW and implementation 'auto', so its prefill is tiled:
 * its cache holds the last W positions) and `gqa-window-sinks` (the same with attentionSinks,
 * gpt-oss's layer, whose steps take the dense path of the options). Layers:
 * B=1, H=8, D=64 (E=512), 'gqa' G=2, each kind's own arguments from DECODE_KIND_ARGS
 * (local-global: window 64 and 4 global positions). The first row is run once untimed
 * before the others, so the backend's warm-up is charged to no row.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice, selectBackend} from '../kernels/backend';
import {ThreadsArg} from '../kernels/wasm_threads';
import {AttentionError, show} from '../core/errors';
import {AttentionLayerBase} from '../layers/base_attention';
import {AttentionCache, cacheBytes} from '../layers/decoding';
import {attentionLayer} from '../layers/factory';
import {AnyAttentionArgs, ATTENTION_KIND_TABLE, ATTENTION_KINDS, AttentionKind} from '../layers/kinds';
import {assertPositiveInt} from '../core/validate';
import {median, timeOnce} from './measure';
import {fixedOrDash, markdownTable} from './report';
import {collectMeta, BenchMeta} from './meta';

/** The contexts of the decode rows by default. */
export const DECODE_CONTEXTS: readonly number[] = [128, 512, 1024, 4096];
/** The decode rows' layer: B=1, H=8, D=64; 'gqa' with G=2 (and 'mqa' G=1). */
export const DECODE_SHAPE = {B: 1, H: 8, D: 64, gqaKvHeads: 2};
/** The window of the `gqa-window` row. */
export const DECODE_WINDOW = 128;
/**
 * What a decode row is: a kind of the table, 'mqa' (grouped-query with one key/value head) or
 * 'gqa-window' (grouped-query with a sliding window of DECODE_WINDOW positions), 'gqa-window-sinks'
 * (and attention sinks).
 */
export const DECODE_ROWS = [...ATTENTION_KINDS, 'mqa', 'gqa-window', 'gqa-window-sinks'] as const;
export type DecodeRowName = typeof DECODE_ROWS[number];
/** Each kind's layer arguments in the decode rows, beyond heads and causal; every kind has an entry. */
export const DECODE_KIND_ARGS: Readonly<Record<AttentionKind, Partial<AnyAttentionArgs>>> = {
  'mha': {},
  'gqa': {},
  'flash': {},
  'linear': {seed: 0},
  'local-global': {windowSize: 64, globalIndices: [0, 1, 2, 3]},
};

export interface DecodeRow {
  row: DecodeRowName;
  mode: 'cached' | 'recompute';
  backend: string;
  B: number; H: number; G: number; D: number;
  /** Positions before the new token. */
  context: number;
  /** Median milliseconds per new token. */
  msPerToken: number | null;
  runs: number;
  /** Bytes of the cache holding `context` positions (cached rows). */
  cacheBytes: number | null;
  error?: string;
}

export interface DecodeReport {
  meta: BenchMeta;
  rows: DecodeRow[];
}

export interface DecodeBenchOptions {
  rows?: readonly DecodeRowName[];
  contexts?: readonly number[];
  backend?: BackendChoice;
  /** The wasm backend's threads in Node (selectBackend's). Default: tfjs's (one). */
  threads?: ThreadsArg;
  /** Timed steps per row (the median is reported). Default 20. */
  reps?: number;
  /** Untimed steps first. Default 3. */
  warmup?: number;
  /** A row stops timing after this many ms (one run at least). Default 20000. */
  budgetMs?: number;
  outDir?: string;
  log?: (line: string) => void;
}

/** One causal layer of the row's kind, built on [B, c, E], seeded. */
function decodeLayer(row: DecodeRowName, seed: number): AttentionLayerBase {
  const {H, D} = DECODE_SHAPE;
  const windowed = row === 'gqa-window' || row === 'gqa-window-sinks';
  const kind: AttentionKind = row === 'mqa' || windowed ? 'gqa' : row;
  const G = row === 'mqa' ? 1 : ATTENTION_KIND_TABLE[kind].kvHeads(H, kind === 'gqa' ? DECODE_SHAPE.gqaKvHeads : undefined);
  const layer = attentionLayer(kind, {
    numHeads: H, headDim: D, causal: true, ...(G !== H ? {numKvHeads: G} : {}),
    ...DECODE_KIND_ARGS[kind],
    ...(windowed ? {slidingWindow: DECODE_WINDOW, implementation: 'auto' as const} : {}),
    ...(row === 'gqa-window-sinks' ? {attentionSinks: true} : {}),
    kernelInitializer: tf.initializers.glorotUniform({seed}),
  });
  layer.build([DECODE_SHAPE.B, null, H * D]);
  return layer;
}

/** Median ms of up to `reps` runs of fn (tensors it returns are waited for and freed) after up to `warmup`. */
async function medianTime(fn: () => tf.Tensor[], warmup: number, reps: number, budgetMs: number):
    Promise<{ms: number; runs: number}> {
  const start = performance.now();
  for (let i = 0; i < warmup && performance.now() - start < budgetMs / 2; i++) await timeOnce(fn);
  const times: number[] = [];
  while (times.length < reps && (times.length === 0 || performance.now() - start < budgetMs)) {
    times.push(await timeOnce(fn));
  }
  return {ms: median(times), runs: times.length};
}

/** The runs and budget of every row: the options with their defaults filled in. */
type RowSettings = Required<Omit<DecodeBenchOptions, 'outDir' | 'log' | 'backend' | 'threads'>>;

/** Measures one row: the layer of `row`, one token after `context` positions, `mode`'s way. */
async function measureRow(row: DecodeRowName, mode: DecodeRow['mode'], context: number, backend: string,
                          o: RowSettings): Promise<DecodeRow> {
  const {B, H, D} = DECODE_SHAPE;
  const layer = decodeLayer(row, 1);
  const out: DecodeRow = {row, mode, backend, B, H, G: layer.numKvHeads, D, context, msPerToken: null, runs: 0,
    cacheBytes: null};
  const x = tf.randomNormal([B, context + 1, H * D], 0, 1, 'float32', 2);
  let cache: AttentionCache | null = null;
  try {
    if (mode === 'cached') {
      const empty = layer.createCache(B, context + 1);
      const [y, full] = layer.apply(tf.slice(x, [0, 0, 0], [B, context, H * D]), {cache: empty}) as unknown as
        [tf.Tensor, AttentionCache];
      tf.dispose([y, Object.values(empty.tensors)]);
      cache = full;
      out.cacheBytes = cacheBytes(full);
      const last = tf.slice(x, [0, context, 0], [B, 1, H * D]);
      const m = await medianTime(() => {
        const [step, next] = layer.apply(last, {cache: full}) as unknown as [tf.Tensor, AttentionCache];
        return [step, ...Object.values(next.tensors)];
      }, o.warmup, o.reps, o.budgetMs);
      last.dispose();
      [out.msPerToken, out.runs] = [m.ms, m.runs];
    } else {
      const m = await medianTime(() => [layer.apply(x) as tf.Tensor], Math.min(o.warmup, 1), Math.min(o.reps, 5),
        o.budgetMs);
      [out.msPerToken, out.runs] = [m.ms, m.runs];
    }
  } catch (e) {
    out.error = String((e as Error)?.message ?? e).split('\n')[0];
  } finally {
    if (cache != null) tf.dispose(Object.values(cache.tensors));
    x.dispose();
    for (const w of layer.weights) w.dispose();
  }
  return out;
}

/** Runs the decode rows; writes DIR/decode.json and DIR/decode.md when outDir is given. */
export async function runDecodeBench(options: DecodeBenchOptions = {}): Promise<DecodeReport> {
  const rows = options.rows ?? DECODE_ROWS;
  const bad = rows.filter((r) => !(DECODE_ROWS as readonly string[]).includes(r));
  if (rows.length === 0 || bad.length > 0) {
    throw new AttentionError('INVALID_CONFIG',
      `decode rows must be among ${DECODE_ROWS.join(', ')}, received ${show([...rows])}`);
  }
  const contexts = options.contexts ?? DECODE_CONTEXTS;
  contexts.forEach((c) => assertPositiveInt('context', c));
  const o = {rows, contexts, reps: options.reps ?? 20, warmup: options.warmup ?? 3,
    budgetMs: options.budgetMs ?? 20_000};
  assertPositiveInt('reps', o.reps);
  const backend = await selectBackend(options.backend, {threads: options.threads});
  const meta = collectMeta(backend, o.warmup, o.reps, {suite: 'decode', budgetMs: o.budgetMs, maxT: {}, heap: false});
  const report: DecodeReport = {meta, rows: []};
  // Untimed: the backend's first kernels (compilation, the heap growing) would be charged to the first row.
  for (const mode of ['cached', 'recompute'] as const) await measureRow(rows[0], mode, Math.min(...contexts), backend, o);
  for (const row of rows) {
    for (const mode of ['cached', 'recompute'] as const) {
      for (const context of contexts) {
        const r = await measureRow(row, mode, context, backend, o);
        options.log?.(`${r.row} ${r.mode} context ${r.context}: ` +
          (r.error != null ? `error: ${r.error}` : `${r.msPerToken!.toFixed(2)} ms/token` +
            (r.cacheBytes != null ? `, cache ${(r.cacheBytes / 1024).toFixed(1)} KiB` : '')));
        report.rows.push(r);
        if (options.outDir != null) writeDecodeReport(options.outDir, report);
      }
    }
  }
  return report;
}

/** The rows as a padded markdown table. */
export function formatDecodeTable(rows: readonly DecodeRow[]): string {
  const header = ['row', 'mode', 'B', 'H', 'G', 'D', 'context', 'ms/token', 'runs', 'cache KiB', 'cache B/position',
    'error'];
  return markdownTable(header, rows.map((r) => [r.row, r.mode, r.B, r.H, r.G, r.D, r.context,
    fixedOrDash(r.msPerToken, 2), r.runs, fixedOrDash(r.cacheBytes == null ? null : r.cacheBytes / 1024, 1),
    fixedOrDash(r.cacheBytes == null ? null : r.cacheBytes / r.context, 0), r.error ?? ''].map(String)));
}

/** What the rows say: cached vs recompute per kind, and how the cached cost grows with the context. */
export function summarizeDecode(rows: readonly DecodeRow[]): string[] {
  const ok = rows.filter((r) => r.error == null && r.msPerToken != null);
  const find = (row: string, mode: string, c: number) =>
    ok.find((r) => r.row === row && r.mode === mode && r.context === c);
  const out: string[] = [];
  for (const row of DECODE_ROWS) {
    const cached = ok.filter((r) => r.row === row && r.mode === 'cached').sort((a, b) => a.context - b.context);
    if (cached.length === 0) continue;
    const parts = cached.map((r) => {
      const full = find(row, 'recompute', r.context);
      const speedup = full != null ? ` (${(full.msPerToken! / r.msPerToken!).toFixed(1)}x faster than recompute)` : '';
      return `c=${r.context} ${r.msPerToken!.toFixed(2)} ms${speedup}`;
    });
    const [first, last] = [cached[0], cached[cached.length - 1]];
    out.push(`${row} cached per token: ${parts.join(', ')}; c=${last.context} / c=${first.context}: ` +
      `${(last.msPerToken! / first.msPerToken!).toFixed(2)}x`);
  }
  return out;
}

export function writeDecodeReport(dir: string, report: DecodeReport): void {
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'decode.json'), JSON.stringify(report, null, 2) + '\n');
  const summary = summarizeDecode(report.rows).map((l) => `- ${l}`).join('\n');
  fs.writeFileSync(path.join(dir, 'decode.md'), `# tfjs-attention bench --suite decode\n\nbackend ${report.meta.backend}, ` +
    `tfjs ${report.meta.tfjsVersion}, ${report.meta.cpuCount} cpus, ${report.meta.date}\n\n` +
    `${formatDecodeTable(report.rows)}\n${summary}\n`);
}
