import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice} from '../src/backend';
import {AttentionError} from '../src/errors';
import {IMPLS} from '../src/bench/impls';
import {BenchRow} from '../src/bench/report';
import {runBench} from '../src/bench/run';
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
    const report = await runBench({shapes: [tiny, {D: 4, S: 7, T: 5, G: 2, H: 4, B: 1}], backend: backend(), warmup: 0, reps: 1, outDir: dir});
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.getBackend()).toBe(backend());

    const json = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    expect(json).toEqual(JSON.parse(JSON.stringify(report)));
    expect(json.meta).toMatchObject({format: 1, backend: backend(), packageVersion: version, warmup: 0, reps: 1});
    expect(json.rows.map((r: BenchRow) => `${r.impl} ${r.pass} G=${r.G}`)).toEqual([
      'naive fwd G=1', 'naive fwd+bwd G=1', 'sdpa fwd G=1', 'sdpa fwd+bwd G=1',
      'naive fwd G=2', 'naive fwd+bwd G=2', 'sdpa fwd G=2', 'sdpa fwd+bwd G=2',
    ]);
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
});
