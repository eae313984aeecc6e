import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice} from '../src/backend';
import {AttentionError} from '../src/errors';
import {IMPLS} from '../src/bench/impls';
import {BenchRow} from '../src/bench/report';
import {DEFAULT_SHAPES, overrideShapes, runBench} from '../src/bench/run';
import {expectNoLeaks, randn, title} from './helpers';

const tiny = {B: 1, H: 2, G: 1, T: 8, S: 8, D: 4};
const tinyGqa = {B: 1, H: 4, G: 2, T: 5, S: 7, D: 4};
const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version;
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
    const report = await runBench({shapes: [tiny, {D: 4, S: 7, T: 7, G: 2, H: 4, B: 1}], backend: backend(), warmup: 0, reps: 1, outDir: dir});
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.getBackend()).toBe(backend());

    const json = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    expect(json).toEqual(JSON.parse(JSON.stringify(report)));
    expect(json.meta).toMatchObject({format: 1, backend: backend(), packageVersion: version, warmup: 0, reps: 1});
    const impls = ['naive', 'sdpa', 'sdpa-causal', 'flash', 'flash-causal', 'linear', 'linear-causal', 'local-global',
      'local-global-dense'];
    expect(json.rows.map((r: BenchRow) => `${r.impl} ${r.pass} G=${r.G}`)).toEqual(
      [1, 2].flatMap((G) => impls.flatMap((impl) => [`${impl} fwd G=${G}`, `${impl} fwd+bwd G=${G}`])));
    for (const row of json.rows as BenchRow[]) {
      expect(row.error).toBeUndefined();
      expect(row.backend).toBe(backend());
      expect(Object.keys(row)).toEqual(
        ['impl', 'pass', 'backend', 'B', 'H', 'G', 'T', 'S', 'D', 'msMedian', 'peakBytes', 'gflops']);
      for (const value of [row.msMedian, row.peakBytes, row.gflops]) {
        expect(Number.isFinite(value)).toBe(true);
        expect(value).toBeGreaterThan(0);
      }
    }
    const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
    expect(md).toMatch(/\|\s*naive\s*\|\s*fwd\s*\|/);
    expect(md).toMatch(/\|\s*sdpa\s*\|\s*fwd\+bwd\s*\|/);
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
    await runBench({registry, shapes: [tiny], backend: backend(), warmup: 0, reps: 1, outDir: dir});
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
    const {rows} = await runBench({registry, shapes: [tiny], backend: backend(), warmup: 0, reps: 1});
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
    expect(overrideShapes(DEFAULT_SHAPES, {})).toEqual(DEFAULT_SHAPES);
    expect(overrideShapes(DEFAULT_SHAPES, {seq: [512, 2048], heads: 4, dim: 32, batch: 2})).toEqual([
      {B: 2, H: 4, G: 4, T: 512, S: 512, D: 32},
      {B: 2, H: 4, G: 4, T: 2048, S: 2048, D: 32},
    ]);
    // Multi-head shapes follow --heads, the GQA shape keeps G=2; --kv-heads sets every G.
    expect(overrideShapes(DEFAULT_SHAPES, {heads: 4}).map((s) => [s.H, s.G, s.T])).toEqual(
      [[4, 4, 128], [4, 4, 512], [4, 2, 512], [4, 4, 2048]]);
    expect(overrideShapes(DEFAULT_SHAPES, {kvHeads: 1}).map((s) => [s.H, s.G, s.T])).toEqual(
      [[8, 1, 128], [8, 1, 512], [8, 1, 2048]]);
    const bad: [object, RegExp][] = [
      [{seq: []}, /seq must list at least one length/],
      [{seq: [512, 0]}, /seq must be a positive integer, received 0/],
      [{heads: 2.5}, /heads must be a positive integer, received 2\.5/],
      [{dim: 0}, /dim must be a positive integer, received 0/],
      [{heads: 4, kvHeads: 3}, /heads \(4\) must be divisible by kvHeads \(3\)/],
      [{heads: 3}, /heads \(3\) must be divisible by kvHeads \(2\) in the shape with T=512/],
    ];
    for (const [o, message] of bad) {
      expect(() => overrideShapes(DEFAULT_SHAPES, o)).toThrow(AttentionError);
      expect(() => overrideShapes(DEFAULT_SHAPES, o)).toThrow(message);
    }
  });
});
