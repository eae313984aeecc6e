/**
 * The bench rows on point clouds (src/bench/geometric_workloads.ts): knn-graph, geometric and
 * equivariant at a tiny N through the bench's own runner, their shapes and passes, the wasm
 * limit, and the --points flag.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice} from '../../src/kernels/backend';
import {AttentionError} from '../../src/core/errors';
import {POINT_SHAPES, POINT_WORKLOADS} from '../../src/bench/geometric_workloads';
import {summarize} from '../../src/bench/report';
import {runBench} from '../../src/bench/run';
import {FULL_PRESET, QUICK_PRESET} from '../../src/bench/suites';
import {WORKLOADS} from '../../src/bench/workloads';
import {knnGraph} from '../../src/ops/neighbours';
import {cli} from '../support/cli_helper';
import {title} from '../support/helpers';

const backend = () => tf.getBackend() as BackendChoice;
const POINT_ROWS = ['knn-graph', 'geometric', 'equivariant'];
const fast = {backend: backend(), heap: false, warmup: 0, reps: 1} as const;

/** The outputs of one pass of a point row at N points, its inputs freed. */
function runPass(name: string, N: number, pass: 'fwd' | 'fwd+bwd'): tf.Tensor[] {
  const prepared = WORKLOADS[name].prepare(POINT_SHAPES[name](N), 7, [pass]);
  try {
    return tf.tidy(prepared.pass(pass)!);
  } finally {
    prepared.dispose();
  }
}

const maxAbs = (t: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);

describe(title('bench point rows'), () => {
  it('N maps to B=H=G=1, T=N, S=E=N*min(16, N-1) kNN edges, D=64 features (D=3 coordinates for knn-graph)', () => {
    expect(POINT_SHAPES.geometric(1000)).toEqual({B: 1, H: 1, G: 1, T: 1000, S: 16_000, D: 64});
    expect(POINT_SHAPES.equivariant(100_000)).toEqual({B: 1, H: 1, G: 1, T: 100_000, S: 1_600_000, D: 64});
    expect(POINT_SHAPES['knn-graph'](1000)).toEqual({B: 1, H: 1, G: 1, T: 1000, S: 16_000, D: 3});
    expect(POINT_SHAPES.geometric(10).S).toBe(90); // fewer than 17 points: each receives from all others
    expect(Object.keys(POINT_WORKLOADS).every((n) => WORKLOADS[n] === POINT_WORKLOADS[n])).toBe(true);
    expect(FULL_PRESET.points).toEqual([1_000, 10_000, 100_000]);
    expect(QUICK_PRESET.points).toEqual([1_000]);
  });

  it('runBench runs the three rows at N=20 and 30: knn-graph fwd only, no FLOP count; the others fwd and fwd+bwd', async () => {
    const before = tf.memory().numTensors;
    const {rows} = await runBench({...fast, impls: POINT_ROWS, points: [20, 30]});
    expect(tf.memory().numTensors).toBe(before);
    expect(rows.map((r) => `${r.impl} ${r.pass} T=${r.T} S=${r.S} D=${r.D}`)).toEqual([
      'knn-graph fwd T=20 S=320 D=3', 'knn-graph fwd T=30 S=480 D=3',
      'geometric fwd T=20 S=320 D=64', 'geometric fwd+bwd T=20 S=320 D=64',
      'geometric fwd T=30 S=480 D=64', 'geometric fwd+bwd T=30 S=480 D=64',
      'equivariant fwd T=20 S=320 D=64', 'equivariant fwd+bwd T=20 S=320 D=64',
      'equivariant fwd T=30 S=480 D=64', 'equivariant fwd+bwd T=30 S=480 D=64',
    ]);
    for (const r of rows) {
      expect(r.error).toBeUndefined();
      expect(r.msMedian).toBeGreaterThan(0);
      expect(r.floorBytes).toBeGreaterThan(0);
      if (r.impl === 'knn-graph') expect(r.gflops).toBeNull();
      else expect(r.gflops).toBeGreaterThan(0);
    }
    const lines = summarize(rows);
    expect(lines).toContainEqual(expect.stringMatching(
      /^geometric fwd\+bwd against N \(k = 16, D=64\): N=20 [\d.]+ ms; N=30 [\d.]+ ms$/));
    expect(lines).toContainEqual(expect.stringMatching(/^knn-graph fwd against N \(k = 16, D=3\): N=20 /));
    // Point rows are not attention shapes: no "real memory ... at B=1, H=1" group for them.
    expect(lines.filter((l) => l.startsWith('real memory'))).toEqual([]);
  });

  it('knn-graph returns the kNN edges of its points: 16 sources into each of N targets, none a self loop', () => {
    const [edges] = runPass('knn-graph', 40, 'fwd');
    expect(edges.shape).toEqual([1, 640, 2]);
    expect(edges.dtype).toBe('int32');
    const rows = edges.arraySync() as number[][][];
    const into = new Array(40).fill(0);
    for (const [s, t] of rows[0]) {
      expect(s).not.toBe(t);
      into[t]++;
    }
    expect(into.every((n) => n === 16)).toBe(true);
    // The same points (seed 7) give the same graph as knnGraph called directly.
    const positions = tf.randomUniform([1, 40, 3], 0, Math.cbrt(40), 'float32', 7);
    const direct = knnGraph(positions, 16);
    expect(direct.arraySync()).toEqual(rows);
    tf.dispose([edges, positions, direct]);
    expect(WORKLOADS['knn-graph'].passes).toEqual(['fwd']);
    expect(WORKLOADS['knn-graph'].prepare(POINT_SHAPES['knn-graph'](5), 0).pass('fwd+bwd')).toBeNull();
  });

  it('geometric: output [1, N, 64]; gradients for features, positions and the 6 weights, no leaks', () => {
    const before = tf.memory().numTensors;
    const [out] = runPass('geometric', 24, 'fwd');
    expect(out.shape).toEqual([1, 24, 64]);
    const grads = runPass('geometric', 24, 'fwd+bwd');
    expect(grads.map((g) => g.shape)).toEqual(
      [[1, 24, 64], [1, 24, 3], [64, 64], [64, 64], [64, 64], [3, 64], [64], [64]]);
    // The target kernel is the one weight the softmax cancels (identity gamma): its gradient is 0.
    grads.forEach((g, i) => (i === 4 ? expect(maxAbs(g)).toBeLessThan(1e-4) : expect(maxAbs(g)).toBeGreaterThan(1e-3)));
    tf.dispose([out, ...grads]);
    expect(tf.memory().numTensors).toBe(before);
    const shape = POINT_SHAPES.geometric(24);
    const K = shape.S + 24; // self loops added
    expect(WORKLOADS.geometric.flops(shape, 'fwd')).toBe(2 * 24 * 64 * 192 + 2 * K * 3 * 64 + 2 * K * 64);
    expect(WORKLOADS.geometric.flops(shape, 'fwd+bwd')).toBe(3 * WORKLOADS.geometric.flops(shape, 'fwd')!);
  });

  it('equivariant: outputs [1, N, 64] and [1, N, 3]; gradients for features, positions and the 13 weights', () => {
    const before = tf.memory().numTensors;
    const outs = runPass('equivariant', 24, 'fwd');
    expect(outs.map((o) => o.shape)).toEqual([[1, 24, 64], [1, 24, 3]]);
    const grads = runPass('equivariant', 24, 'fwd+bwd');
    expect(grads.map((g) => g.shape)).toEqual([[1, 24, 64], [1, 24, 3], [129, 64], [64], [64, 64], [64], [64, 1], [1],
      [64, 64], [64], [64, 1], [128, 64], [64], [64, 64], [64]]);
    grads.forEach((g) => expect(maxAbs(g)).toBeGreaterThan(1e-6));
    tf.dispose([...outs, ...grads]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('on wasm, shapes above a row\'s wasmMaxT are error rows, never run', async () => {
    let prepared = 0;
    const geometric = {...POINT_WORKLOADS.geometric, wasmMaxT: 25,
      prepare: (...a: Parameters<typeof POINT_WORKLOADS.geometric.prepare>) => {
        prepared++;
        return POINT_WORKLOADS.geometric.prepare(...a);
      }};
    const {rows} = await runBench({...fast, backend: 'wasm', workloads: {geometric}, registry: {}, points: [20, 30]});
    expect(rows.map((r) => [r.T, r.pass, r.error ?? null, r.msMedian == null])).toEqual([
      [20, 'fwd', null, false], [20, 'fwd+bwd', null, false],
      [30, 'fwd', 'not run: T=30 needs more than the 4 GiB wasm heap (this row runs up to T=25 there)', true],
      [30, 'fwd+bwd', 'not run: T=30 needs more than the 4 GiB wasm heap (this row runs up to T=25 there)', true],
    ]);
    expect(prepared).toBe(1);
    expect(tf.getBackend()).toBe(backend());
  });

  it('runBench refuses an empty or non-positive points list', async () => {
    await expect(runBench({...fast, impls: ['geometric'], points: []})).rejects.toThrow(AttentionError);
    await expect(runBench({...fast, impls: ['geometric'], points: []})).rejects.toThrow(/points must list at least one/);
    await expect(runBench({...fast, impls: ['geometric'], points: [10, 0]}))
      .rejects.toThrow(/points must be a positive integer, received 0/);
  });

  it('--points parses a list, runs exactly those N, and refuses bad values with exit 2', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-points-'));
    try {
      const ok = await cli('bench', '--only', 'knn-graph', '--points', '12,18', '--warmup', '0', '--reps', '1',
        '--no-heap', '--backend', backend(), '--out', out);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toMatch(/knn-graph fwd against N \(k = 16, D=3\): N=12 .*; N=18 /);
      const {rows} = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
      expect(rows.map((r: {T: number; S: number}) => [r.T, r.S])).toEqual([[12, 132], [18, 288]]);
    } finally {
      fs.rmSync(out, {recursive: true, force: true});
    }
    for (const bad of ['0', '100,abc', '1e3', '']) {
      const r = await cli('bench', '--points', bad);
      expect([r.code, r.stdout]).toEqual([2, '']);
      expect(r.stderr).toMatch(/--points.*integers >= 1/);
    }
    const help = await cli('bench', '--help');
    expect(help.stdout).toContain('--points <list>');
    for (const row of POINT_ROWS) expect(help.stdout).toContain(row);
    expect(help.stdout).toMatch(/full: .*\n.*point rows N=1000,10000,100000/);
  });
});
