import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice} from '../../src/kernels/backend';
import {AttentionError} from '../../src/core/errors';
import {IMPLS, localGlobalFlops} from '../../src/bench/impls';
import {BenchRow} from '../../src/bench/report';
import {runBench} from '../../src/bench/run';
import {QUICK_SHAPES, overrideShapes} from '../../src/bench/suites';
import {measurePass, profilePeak} from '../../src/bench/measure';
import {PLOT_FILES, sweepRows, writePlots} from '../../src/bench/plots';
import {BenchReport, summarize} from '../../src/bench/report';
import {WORKLOADS} from '../../src/bench/workloads';
import {getMatMulPath} from '../../src/ops/matmul';
import {expectNoLeaks, randn, title} from '../support/helpers';

const tiny = {B: 1, H: 2, G: 1, T: 8, S: 8, D: 4};
const tinyGqa = {B: 1, H: 4, G: 2, T: 5, S: 7, D: 4};
const tinyLayer = {B: 2, H: 4, G: 2, T: 6, S: 6, D: 4};
const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version;
const backend = () => tf.getBackend() as BackendChoice;

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe(title('bench'), () => {
  let dir: string;
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-bench-')); });
  afterAll(() => fs.rmSync(dir, {recursive: true, force: true}));

  it('runBench writes results.json and results.md with a row per impl, shape and pass', async () => {
    // The second shape lists its keys out of order: rows still give B, H, G, T, S, D.
    const before = tf.memory().numTensors;
    // (T = S: local-global attention needs shared positions.)
    const report = await runBench({shapes: [tiny, {D: 4, S: 7, T: 7, G: 2, H: 4, B: 1}], layerShapes: [tinyLayer],
      matmulSizes: [16], graphEdges: [50], points: [12], backend: backend(), heap: false, warmup: 0, reps: 1,
      outDir: dir});
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.getBackend()).toBe(backend());

    const json = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    expect(json).toEqual(JSON.parse(JSON.stringify(report)));
    expect(json.meta).toMatchObject({format: 4, threads: 1, heapMeasured: false, backend: backend(),
      packageVersion: version, warmup: 0, reps: 1, suite: 'full', matmulPath: getMatMulPath(),
      splitProducts: false}); // with the library's wasm product kernels, nothing splits
    const impls = ['naive', 'sdpa', 'sdpa-causal', 'flash', 'flash-causal', 'linear', 'linear-causal', 'local-global',
      'local-global-dense', 'flex', 'flex-causal', 'flex-document', 'flex-sliding', 'flex-prefix'];
    expect(json.rows.map((r: BenchRow) => `${r.impl} ${r.pass} G=${r.G}`)).toEqual([
      'matmul fwd G=1',
      'mha-layer fwd G=2', 'mha-layer fwd+bwd G=2', 'mha-layer-naive fwd G=2', 'mha-layer-naive fwd+bwd G=2',
      'graph fwd G=4', 'graph fwd+bwd G=4', 'knn-graph fwd G=1', 'geometric fwd G=1', 'geometric fwd+bwd G=1',
      'equivariant fwd G=1', 'equivariant fwd+bwd G=1',
      ...[1, 2].flatMap((G) => impls.flatMap((impl) => [`${impl} fwd G=${G}`, `${impl} fwd+bwd G=${G}`]))]);
    expect(json.rows[0]).toMatchObject({B: 1, H: 1, G: 1, T: 16, S: 16, D: 16});
    expect(json.rows[1]).toMatchObject(tinyLayer);
    for (const row of json.rows as BenchRow[]) {
      expect(row.error).toBeUndefined();
      expect(row.backend).toBe(backend());
      expect(row.runs).toBe(1);
      expect(Object.keys(row)).toEqual(
        ['impl', 'pass', 'backend', 'B', 'H', 'G', 'T', 'S', 'D', 'msMedian', 'peakBytes', 'heapBytes', 'floorBytes',
          'gflops', 'performedGflops', 'computed', 'runs']);
      // The flex rows give the share of tiles their block mask computes (all of them without one); the others none.
      if (row.impl.startsWith('flex')) expect(row.computed).toBeGreaterThan(0);
      else expect(row.computed).toBeNull();
      expect(row.heapBytes).toBeNull();
      expect(row.floorBytes).toBeGreaterThan(0);
      // knn-graph has no FLOP count, and makes its edges in JavaScript: no kernel, so tf.profile's peak is 0.
      const knn = row.impl === 'knn-graph';
      expect(knn ? [row.gflops, row.peakBytes] : []).toEqual(knn ? [null, 0] : []);
      for (const value of [row.msMedian, ...(knn ? [] : [row.peakBytes, row.gflops])]) {
        expect(Number.isFinite(value)).toBe(true);
        expect(value).toBeGreaterThan(0);
      }
    }
    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    expect(md).toMatch(/\|\s*naive\s*\|\s*fwd\s*\|/);
    expect(md).toMatch(/\|\s*sdpa\s*\|\s*fwd\+bwd\s*\|/);
    expect(md).toMatch(/mha-layer fwd\+bwd \(B=2, T=6, E=16, H=4, G=2\): .* vs mha-layer-naive .*x faster/);
    // Plots of the group with the most lengths (T = 7 and 8 are different groups: one length each, the first wins).
    for (const name of ['time.svg', 'memory.svg']) {
      const svg = fs.readFileSync(path.join(dir, name), 'utf8');
      expect(svg).toMatch(/^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      for (const impl of impls) expect(svg).toContain(`>${impl}<`);
      expect(svg).not.toContain('mha-layer');
    }
  });

  it('writes results.json after every row, so a run that dies keeps the rows it finished', async () => {
    const seen: number[] = [];
    const registry = {
      sdpa: IMPLS.sdpa,
      // Reads the file while it runs: it must already hold sdpa's two rows.
      peek: {description: 'reads results.json', run: (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => {
        seen.push(JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')).rows.length);
        return IMPLS.sdpa.run(q, k, v, {});
      }},
    };
    await runBench({registry, workloads: {}, shapes: [tiny], backend: backend(), heap: false, warmup: 0, reps: 1,
      outDir: dir});
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[0]).toBe(2);
    expect(Math.max(...seen)).toBe(3); // during peek's fwd+bwd row, its fwd row is written too
  });

  it('records a failing implementation as an error row and goes on', async () => {
    const registry = {
      boom: {description: 'always throws', run: () => { throw new Error('out of memory\nat somewhere'); }},
      sdpa: IMPLS.sdpa,
    };
    const before = tf.memory().numTensors;
    const {rows} = await runBench({registry, workloads: {}, shapes: [tiny], backend: backend(), heap: false, warmup: 0,
      reps: 1});
    expect(tf.memory().numTensors).toBe(before);
    expect(rows.map((r) => [r.impl, r.error ?? null, r.msMedian == null])).toEqual([
      ['boom', 'out of memory', true], ['boom', 'out of memory', true], ['sdpa', null, false], ['sdpa', null, false],
    ]);
  });

  it('rejects unknown implementations before running anything', async () => {
    await expect(runBench({impls: ['nosuch'], shapes: [tiny], backend: backend()}))
      .rejects.toThrow(AttentionError);
    await expect(runBench({impls: ['nosuch'], shapes: [tiny], backend: backend()})).rejects.toThrow(/nosuch/);
  });

  it('naive == sdpa, output and gradients (H=4, G=2, T=5, S=7)', () => {
    const {B, H, G, T, S, D} = tinyGqa;
    const [q, k, v, dy] = [[B, H, T, D], [B, G, S, D], [B, G, S, D], [B, H, T, D]].map((s, i) => randn(s, 10 + i));
    for (const name of ['naive', 'sdpa']) expectNoLeaks(() => tf.dispose(IMPLS[name].run(q, k, v, {})));
    const pass = (name: string) => {
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(IMPLS[name].run(a, b, c, {}), dy));
      return [IMPLS[name].run(q, k, v, {}), ...tf.grads(loss)([q, k, v])];
    };
    const naive = pass('naive');
    const sdpa = pass('sdpa');
    naive.forEach((t, i) => expect(maxAbsDiff(t, sdpa[i])).toBeLessThan(1e-4));
    tf.dispose([q, k, v, dy, ...naive, ...sdpa]);
  });

  it('flash == sdpa and flash-causal == sdpa-causal, output and gradients (H=4, G=2, T=5, S=7)', () => {
    const {B, H, G, T, S, D} = tinyGqa;
    const [q, k, v, dy] = [[B, H, T, D], [B, G, S, D], [B, G, S, D], [B, H, T, D]].map((s, i) => randn(s, 20 + i));
    const pass = (name: string) => {
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(IMPLS[name].run(a, b, c, {}), dy));
      return [IMPLS[name].run(q, k, v, {}), ...tf.grads(loss)([q, k, v])];
    };
    for (const [flash, sdpa] of [['flash', 'sdpa'], ['flash-causal', 'sdpa-causal']]) {
      expectNoLeaks(() => tf.dispose(IMPLS[flash].run(q, k, v, {})));
      const a = pass(flash);
      const b = pass(sdpa);
      a.forEach((t, i) => expect(maxAbsDiff(t, b[i])).toBeLessThan(1e-4));
      tf.dispose([...a, ...b]);
    }
    // Causal changes the result (T != S: query i sees keys j <= i + 2).
    const [full, causal] = ['sdpa', 'sdpa-causal'].map((n) => IMPLS[n].run(q, k, v, {}));
    expect(maxAbsDiff(full, causal)).toBeGreaterThan(1e-3);
    tf.dispose([q, k, v, dy, full, causal]);
  });

  it('linear and linear-causal: shapes, finite gradients, no leaks; causal changes the result (H=4, G=2, T=5, S=7)', () => {
    const {B, H, G, T, S, D} = tinyGqa;
    const [q, k, v] = [[B, H, T, D], [B, G, S, D], [B, G, S, D]].map((s, i) => randn(s, 30 + i));
    const outs = ['linear', 'linear-causal'].map((name) => {
      expectNoLeaks(() => tf.tidy(() => {
        tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(IMPLS[name].run(a, b, c, {})))([q, k, v])
          .forEach((g) => expect(g.dataSync().every(Number.isFinite)).toBe(true));
      }));
      return tf.tidy(() => IMPLS[name].run(q, k, v, {}));
    });
    outs.forEach((o) => expect(o.shape).toEqual([B, H, T, D]));
    expect(maxAbsDiff(outs[0], outs[1])).toBeGreaterThan(1e-3);
    tf.dispose([q, k, v, ...outs]);
  });

  it('local-global == local-global-dense, output and gradients (H=4, G=2, T=S=150: some keys beyond the window of 64)', () => {
    const [B, H, G, T, D] = [1, 4, 2, 150, 4];
    const [q, k, v, dy] = [[B, H, T, D], [B, G, T, D], [B, G, T, D], [B, H, T, D]].map((s, i) => randn(s, 40 + i));
    const pass = (name: string) => tf.tidy(() => {
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(IMPLS[name].run(a, b, c, {}), dy));
      return [IMPLS[name].run(q, k, v, {}), ...tf.grads(loss)([q, k, v])];
    });
    const a = pass('local-global');
    const b = pass('local-global-dense');
    a.forEach((t, i) => expect(maxAbsDiff(t, b[i])).toBeLessThan(1e-4));
    // ... and differs from full attention (the window and the globals matter).
    const full = tf.tidy(() => IMPLS.sdpa.run(q, k, v, {}));
    expect(maxAbsDiff(a[0], full)).toBeGreaterThan(1e-3);
    tf.dispose([q, k, v, dy, ...a, ...b, full]);
  });

  it('overrideShapes: --seq replaces the shapes, the others override every shape, duplicates go', () => {
    expect(overrideShapes(QUICK_SHAPES, {})).toEqual(QUICK_SHAPES);
    expect(overrideShapes(QUICK_SHAPES, {seq: [512, 2048], heads: 4, dim: 32, batch: 2})).toEqual([
      {B: 2, H: 4, G: 4, T: 512, S: 512, D: 32},
      {B: 2, H: 4, G: 4, T: 2048, S: 2048, D: 32},
    ]);
    // Multi-head shapes follow --heads, the GQA shape keeps G=2; --kv-heads sets every G.
    expect(overrideShapes(QUICK_SHAPES, {heads: 4}).map((s) => [s.H, s.G, s.T])).toEqual(
      [[4, 4, 128], [4, 4, 512], [4, 2, 512]]);
    expect(overrideShapes(QUICK_SHAPES, {kvHeads: 1}).map((s) => [s.H, s.G, s.T])).toEqual(
      [[8, 1, 128], [8, 1, 512]]);
    const bad: [object, RegExp][] = [
      [{seq: []}, /seq must list at least one length/],
      [{seq: [512, 0]}, /seq must be a positive integer, received 0/],
      [{heads: 2.5}, /heads must be a positive integer, received 2\.5/],
      [{dim: 0}, /dim must be a positive integer, received 0/],
      [{heads: 4, kvHeads: 3}, /heads \(4\) must be divisible by kvHeads \(3\)/],
      [{heads: 3}, /heads \(3\) must be divisible by kvHeads \(2\) in the shape with T=512/],
    ];
    for (const [o, message] of bad) {
      expect(() => overrideShapes(QUICK_SHAPES, o)).toThrow(AttentionError);
      expect(() => overrideShapes(QUICK_SHAPES, o)).toThrow(message);
    }
  });

  it('mha-layer-naive computes the same layer as mha-layer: output and every gradient', () => {
    const pass = (name: string, p: 'fwd' | 'fwd+bwd') => {
      const prepared = WORKLOADS[name].prepare(tinyLayer, 3);
      try {
        return tf.tidy(prepared.pass(p)!);
      } finally {
        prepared.dispose();
      }
    };
    const before = tf.memory().numTensors;
    const [outA] = pass('mha-layer', 'fwd');
    const [outB] = pass('mha-layer-naive', 'fwd');
    expect(outA.shape).toEqual([2, 6, 16]);
    expect(maxAbsDiff(outA, outB)).toBeLessThan(1e-4);
    // mha-layer's first output is the loss; then d/dx and the 8 weight gradients, as mha-layer-naive's.
    const [loss, ...gradsA] = pass('mha-layer', 'fwd+bwd');
    const gradsB = pass('mha-layer-naive', 'fwd+bwd');
    expect(gradsA.length).toBe(9);
    expect(gradsB.length).toBe(9);
    gradsA.forEach((g, i) => {
      expect(g.shape).toEqual(gradsB[i].shape);
      expect(maxAbsDiff(g, gradsB[i])).toBeLessThan(1e-4);
      expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0);
    });
    tf.dispose([outA, outB, loss, ...gradsA, ...gradsB]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('the graph row runs graphAttention on E = S edges among T nodes: output, four gradients, no leaks', () => {
    const shape = {B: 1, H: 2, G: 2, T: 12, S: 40, D: 4};
    const before = tf.memory().numTensors;
    const prepared = WORKLOADS.graph.prepare(shape, 5);
    const [out] = tf.tidy(prepared.pass('fwd')!);
    expect(out.shape).toEqual([1, 12, 8]);
    const grads = tf.tidy(prepared.pass('fwd+bwd')!);
    expect(grads.map((g) => g.shape)).toEqual([[1, 12, 8], [8, 2, 4], [2, 4], [2, 4]]);
    grads.forEach((g) => expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0])).toBeGreaterThan(0));
    tf.dispose([out, ...grads]);
    prepared.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(WORKLOADS.graph.flops(shape, 'fwd')).toBe(2 * 12 * 8 * 8 + 2 * 52 * 8);
  });

  it('the matmul row is one 2-D product: 2 n^3 FLOPs', () => {
    expect(WORKLOADS.matmul.flops({B: 1, H: 1, G: 1, T: 8, S: 8, D: 8}, 'fwd')).toBe(1024);
    expect(WORKLOADS.matmul.passes).toEqual(['fwd']);
  });

  it('measurePass: the time budget stops warm-up and timed runs, at least one timed run', async () => {
    let calls = 0;
    const fn = () => { calls++; return [tf.fill([4], 2)]; };
    const all = await measurePass(fn, 3, 4, 60_000);
    expect(all.runs).toBe(4);
    expect(calls).toBe(1 + 2 + 4); // the peak run, two more warm-ups, four timed
    calls = 0;
    const none = await measurePass(fn, 3, 4, 0);
    expect(none.runs).toBe(1);
    expect(calls).toBe(2); // the peak run and one timed run
    expect(none.peakBytes).toBe(16);
  });

  it('profilePeak: tf.profile\'s peak, also for passes of more kernels than tf.profile can count', async () => {
    const x = randn([3, 5], 1);
    const small = () => tf.tidy(() => tf.sum(tf.matMul(tf.exp(x), x, false, true)));
    const theirs = await tf.profile(small);
    tf.dispose(theirs.result);
    const tensors = tf.memory().numTensors;
    const mine = await profilePeak(small);
    expect(mine.peak).toBe(theirs.peakBytes);
    tf.dispose(mine.result);
    expect(tf.memory().numTensors).toBe(tensors);
    // 150k scalar adds kept alive by the tidy: tf.profile's Math.max(...kernels) throws a
    // RangeError at this count (tfjs 4.22); the peak is every scalar at once.
    const n = 150_000;
    const many = () => tf.tidy(() => {
      let y = tf.scalar(1);
      for (let i = 0; i < n; i++) y = tf.add(y, 1);
      return y;
    });
    const before = tf.memory().numBytes;
    const {peak, result} = await profilePeak(many);
    expect((result as tf.Tensor).dataSync()[0]).toBe(n + 1);
    tf.dispose(result);
    // At least the n + 1 scalars of the chain, besides the constant 1s tfjs makes per add.
    expect(peak - before).toBeGreaterThanOrEqual((n + 1) * 4);
    expect(tf.memory().numBytes).toBe(before);
    x.dispose();
  });

  it('a run removes the plots of an earlier run before its first row', async () => {
    const plotDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-stale-'));
    for (const name of PLOT_FILES) fs.writeFileSync(path.join(plotDir, name), '<svg/>');
    let seen: boolean[] = [];
    await runBench({impls: ['sdpa'], shapes: [tiny], backend: backend(), heap: false, warmup: 0, reps: 1, outDir: plotDir,
      log: () => { seen = PLOT_FILES.map((n) => fs.existsSync(path.join(plotDir, n))); }});
    expect(seen).toEqual([false, false]); // gone while the run was going
    fs.rmSync(plotDir, {recursive: true, force: true});
  });

  it('skips shapes above an implementation\'s maxT; the suite and the matMul path are checked and restored', async () => {
    const {rows, meta} = await runBench({impls: ['sdpa', 'flash'], shapes: [{...tiny, T: 6, S: 6}, {...tiny, T: 9, S: 9}],
      maxT: {sdpa: 6}, matmulPath: 'split', backend: backend(), heap: false, warmup: 0, reps: 1});
    expect(rows.map((r) => `${r.impl} ${r.T}`)).toEqual(['sdpa 6', 'sdpa 6', 'flash 6', 'flash 6', 'flash 9', 'flash 9']);
    expect(meta).toMatchObject({matmulPath: 'split', splitProducts: true, maxT: {sdpa: 6}});
    expect(getMatMulPath()).toBe('auto');
    await expect(runBench({suite: 'huge' as never, backend: backend()})).rejects.toThrow(/suite must be one of quick, full/);
    await expect(runBench({budgetMs: -1, shapes: [tiny], backend: backend()})).rejects.toThrow(/budgetMs/);
  });

  it('summarize states the layer speed-up, sdpa against matmul and every row against naive', () => {
    const row = (impl: string, pass: 'fwd' | 'fwd+bwd', shape: object, ms: number, gflops: number, peakMiB: number): BenchRow => ({
      impl, pass, backend: 'wasm', B: 1, H: 8, G: 8, T: 1024, S: 1024, D: 64, ...shape, msMedian: ms,
      peakBytes: peakMiB * 2 ** 20, heapBytes: null, floorBytes: 1, gflops, runs: 1});
    const layer = {B: 4, H: 8, G: 2, T: 512, S: 512, D: 32};
    const lines = summarize([
      row('matmul', 'fwd', {H: 1, G: 1, D: 1024}, 100, 20, 4),
      row('mha-layer', 'fwd+bwd', layer, 200, 9, 100),
      row('mha-layer-naive', 'fwd+bwd', layer, 1000, 2, 300),
      row('naive', 'fwd+bwd', {}, 4000, 1, 400),
      row('sdpa', 'fwd+bwd', {}, 500, 10, 100),
      row('flash', 'fwd+bwd', {}, 800, 6, 20),
      row('flash', 'fwd+bwd', {T: 2048, S: 2048}, 800, 6, 20), // no naive at that length
    ]);
    expect(lines).toEqual([
      'mha-layer fwd+bwd (B=4, T=512, E=256, H=8, G=2): 200.0 ms vs mha-layer-naive 1000.0 ms: 5.00x faster',
      'sdpa fwd+bwd (B=1, H=8, G=8, T=1024, D=64): 10.00 GFLOP/s = 50% of matmul (n=1024) 20.00 GFLOP/s',
      'fwd+bwd at B=1, H=8, G=8, T=1024, D=64, against naive (4000.0 ms, peak 400.0 MiB): sdpa 8.00x faster, ' +
        'peak 100.0 MiB (0.25x); flash 5.00x faster, peak 20.0 MiB (0.05x)',
    ]);
  });

  it('plots the group with the most lengths; with nothing to plot it removes old plots', async () => {
    const base = {impl: 'sdpa', pass: 'fwd' as const, backend: 'cpu', B: 1, H: 2, G: 2, D: 4, msMedian: 1, peakBytes: 1,
      heapBytes: null, floorBytes: 1, gflops: 1, runs: 1};
    const rows: BenchRow[] = [
      {...base, T: 8, S: 8}, {...base, T: 16, S: 16}, {...base, T: 32, S: 32},
      {...base, H: 4, G: 4, T: 8, S: 8}, // another group, one length
      {...base, T: 64, S: 64, msMedian: null, error: 'boom'}, // failed: left out
      {...base, impl: 'matmul', T: 128, S: 128}, // not attention
    ];
    expect(sweepRows(rows).map((r) => [r.H, r.T])).toEqual([[2, 8], [2, 16], [2, 32]]);
    const plotDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-plots-'));
    try {
      const meta = {backend: 'cpu'} as BenchReport['meta'];
      expect((await writePlots(plotDir, {meta, rows})).map((f) => path.basename(f))).toEqual(['time.svg', 'memory.svg']);
      expect(fs.readFileSync(path.join(plotDir, 'time.svg'), 'utf8')).toContain('Time vs length (cpu, B=1 H=2 G=2 D=4)');
      expect(await writePlots(plotDir, {meta, rows: rows.slice(4)})).toEqual([]);
      expect(fs.readdirSync(plotDir)).toEqual([]);
    } finally {
      fs.rmSync(plotDir, {recursive: true, force: true});
    }
  });

  test('performed FLOPs of local-global: the tiles each query block sees, and the globals', () => {
    // T=512, W=64, blocks of 128: the blocks see keys [0, 192), [64, 320), [192, 448), [320, 512);
    // causal: [0, 128), [64, 256), [192, 384), [320, 512). 16 globals for every query.
    // fwd 2 products per pair, fwd+bwd 7.
    const shape = {B: 2, H: 4, G: 4, T: 512, S: 512, D: 8};
    const pairs = 128 * (192 + 256 + 256 + 192) + 512 * 16;
    expect(localGlobalFlops(shape, 'fwd')).toBe(2 * 2 * 2 * 4 * pairs * 8);
    expect(localGlobalFlops(shape, 'fwd+bwd')).toBe(7 * 2 * 2 * 4 * pairs * 8);
    expect(localGlobalFlops(shape, 'fwd', true)).toBe(2 * 2 * 2 * 4 * (128 * (128 + 192 * 3) + 512 * 16) * 8);
    const row = (impl: string, T: number, performedGflops: number | null, gflops = 1): BenchRow => ({
      impl, pass: 'fwd+bwd', backend: 'wasm', B: 1, H: 4, G: 4, T, S: T, D: 64, msMedian: 1, peakBytes: 1,
      heapBytes: null, floorBytes: 1, gflops, performedGflops, runs: 1});
    const lines = summarize([{...row('matmul', 1024, null, 20), pass: 'fwd'}, row('local-global', 4096, 8),
      row('local-global', 8192, 12)]);
    expect(lines).toContain('local-global fwd+bwd (B=1, H=4, G=4, T=8192, D=64): 12.00 GFLOP/s in the products it performs = 60% of matmul');
  });
});
