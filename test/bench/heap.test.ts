/**
 * Real memory (src/bench/heap.ts): the wasm heap's growth over one pass, measured in a fresh
 * child process, and the bench rows that carry it. Runs once (in the 'once' project): each
 * measurement is its own process on the wasm backend whatever the project's backend.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {POINT_SHAPES} from '../../src/bench/geometric_workloads';
import {HeapJob, measureHeap} from '../../src/bench/heap';
import {IMPLS} from '../../src/bench/impls';
import {attentionFloorBytes} from '../../src/bench/measure';
import {runBench} from '../../src/bench/run';
import {WORKLOADS} from '../../src/bench/workloads';

const MiB = 2 ** 20;
const job = (impl: string, T: number, pass: HeapJob['pass'] = 'fwd+bwd'): HeapJob =>
  ({impl, shape: {B: 1, H: 4, G: 4, T, S: T, D: 64}, pass, seed: 0, matmulPath: 'auto'});

describe('heap (wasm, fresh processes)', () => {
  it('measures growth that follows what a pass holds: naive holds T x S matrices, flash does not', async () => {
    // At T=1024 naive holds several [4, 1024, 1024] float32 tensors (16 MiB each) at once.
    const naive = await measureHeap(job('naive', 1024));
    const flash = await measureHeap(job('flash', 1024));
    expect(naive.startBytes).toBeGreaterThan(0);
    expect(naive.heapBytes).toBeGreaterThan(3 * 16 * MiB);
    expect(flash.heapBytes).toBeLessThan(naive.heapBytes / 2);
    // The same job twice gives the same heap: a fresh process, seeded inputs.
    expect((await measureHeap(job('flash', 1024))).heapBytes).toBe(flash.heapBytes);
  });

  // Each kind's real memory at a small shape (B=1, H=4, T=2048, D=64, forward+backward; floor
  // 16 MiB), bounded a little above what it measured when the bound was set (in brackets),
  // so a change that makes one hold more is caught. Growth steps are 20% of the heap.
  const BOUNDS: [string, number, number][] = [
    ['sdpa', 7, 5.84],
    ['sdpa-causal', 10.5, 9.39],
    ['flash', 2.5, 2.0],
    ['flash-causal', 2.5, 2.0],
    ['linear', 2.5, 2.0],
    ['linear-causal', 2.0, 1.5],
    ['local-global', 2.5, 2.0],
  ];
  for (const [impl, bound, measured] of BOUNDS) {
    it(`${impl}: heap growth <= ${bound}x the floor at T=2048 (measured ${measured}x)`, async () => {
      const j = job(impl, 2048);
      const {heapBytes} = await measureHeap(j);
      expect(heapBytes / attentionFloorBytes(j.shape, j.pass)).toBeLessThanOrEqual(bound);
    });
  }

  it('the floor: q, k, v and the output, doubled for fwd+bwd', () => {
    const shape = {B: 1, H: 4, G: 4, T: 4096, S: 4096, D: 64};
    expect(attentionFloorBytes(shape, 'fwd')).toBe(16 * MiB);
    expect(attentionFloorBytes(shape, 'fwd+bwd')).toBe(32 * MiB);
    expect(attentionFloorBytes({...shape, G: 1}, 'fwd')).toBe(10 * MiB); // k and v of one head
  });

  it('the point rows are found by name in the child: geometric and equivariant hold more than their floor at N=1000', async () => {
    for (const impl of ['geometric', 'equivariant'] as const) {
      const shape = POINT_SHAPES[impl](1000);
      const {heapBytes} = await measureHeap({impl, shape, pass: 'fwd+bwd', seed: 0, matmulPath: 'auto'});
      expect(Number.isInteger(heapBytes)).toBe(true);
      expect(heapBytes).toBeGreaterThanOrEqual(WORKLOADS[impl].floorBytes(shape, 'fwd+bwd'));
    }
  });

  it('a failing child rejects with its last line of stderr', async () => {
    await expect(measureHeap(job('nosuch', 8))).rejects.toThrow(/heap measurement failed \(exit 1\).*no bench row named nosuch/);
  });

  it('runBench on wasm fills heapBytes of built-in rows only; the table and summary show it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-heap-'));
    try {
      const registry = {sdpa: IMPLS.sdpa, mine: {description: 'sdpa under another name', run: IMPLS.sdpa.run}};
      const report = await runBench({registry, workloads: {}, shapes: [{B: 1, H: 2, G: 2, T: 64, S: 64, D: 8}],
        backend: 'wasm', warmup: 0, reps: 1, outDir: dir});
      expect(report.meta.heapMeasured).toBe(true);
      const sdpa = report.rows.filter((r) => r.impl === 'sdpa');
      expect(sdpa).toHaveLength(2);
      for (const r of sdpa) {
        expect(r.heapError).toBeUndefined();
        expect(Number.isInteger(r.heapBytes)).toBe(true);
        expect(r.heapBytes).toBeGreaterThanOrEqual(0);
      }
      for (const r of report.rows.filter((x) => x.impl === 'mine')) expect(r.heapBytes).toBeNull();
      const md = fs.readFileSync(path.join(dir, 'results.md'), 'utf8');
      expect(md).toMatch(/\| heap MiB \| x floor \|/);
      expect(md).toMatch(/real memory, fwd\+bwd at B=1, H=2, G=2, T=64, D=8 \(floor 0\.0 MiB\): sdpa /);
      // A row of panels per measure (the heap row is empty here: a growth of 0 has no place on a log axis).
      expect(fs.readFileSync(path.join(dir, 'memory.svg'), 'utf8').includes('tf.profile peak')).toBe(true);
    } finally {
      fs.rmSync(dir, {recursive: true, force: true});
    }
  });
});
