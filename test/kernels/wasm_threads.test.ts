/**
 * The wasm backend's threads in Node (src/kernels/wasm_threads.ts), in fresh child processes
 * (test/fixtures/threads_child.ts): the threaded build gives the same bits as one thread, the process
 * exits by itself with the workers alive, and an unknown tfjs-backend-wasm version falls back
 * to one thread with one warning line. Runs in the 'once' project.
 */
import {spawn} from 'child_process';
import * as path from 'path';
import {selectBackend} from '../../src/kernels/backend';
import {AttentionError} from '../../src/core/errors';
import {checkThreads, resolveThreads} from '../../src/kernels/wasm_threads';

interface ChildResult {
  code: number | null; signal: string | null; stdout: string; stderr: string;
  result: {
    threads: number;
    workers: {ready: number; took: number; splitItems: number; afterStop: {took: number; same: boolean}};
    flex: {items: number; took: number};
    hashes: Record<string, string>; again: Record<string, string>;
  } | null;
}

const CHILD = path.join(__dirname, '..', 'fixtures', 'threads_child.ts');
/** Long enough for a cold start; a child still running then did not exit by itself. */
const EXIT_WITHIN_MS = 60_000;

function runChild(...args: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', CHILD, ...args],
      {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, TFJS_ATTENTION_BACKEND: 'wasm'}});
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_WITHIN_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      resolve({code, signal, stdout, stderr, result: line != null ? JSON.parse(line.slice('RESULT '.length)) : null});
    });
  });
}

/** The warning lines of a child's stderr (tfjs's own "Hi, looks like..." banner is stdout). */
const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('tfjs-attention:'));

describe('wasm threads in Node (fresh processes)', () => {
  it('2 threads: the same bits as 1 thread (matMul, batched and transposed products, an attention layer forward and backward, flexAttention with a block mask), and the process exits by itself', async () => {
    const one = await runChild('1');
    const two = await runChild('2');
    for (const r of [one, two]) {
      expect({code: r.code, signal: r.signal}).toEqual({code: 0, signal: null});
      expect(warnings(r.stderr)).toEqual([]);
    }
    expect(one.result!.threads).toBe(1);
    expect(two.result!.threads).toBe(2);
    expect(Object.keys(two.result!.hashes).length).toBeGreaterThan(3);
    expect(two.result!.hashes).toEqual(one.result!.hashes);
    // The library's product kernel: one worker beside the calling thread, which took some of
    // the products' units and panels (and gave the same bits); none on one thread.
    expect(two.result!.workers.took).toBeGreaterThan(0);
    expect(one.result!.workers).toEqual({ready: 0, took: 0, splitItems: 2, afterStop: {took: 0, same: true}});
    // flexAttention's fused kernels: 2 x 4 heads x 7 query blocks forward, twice (the call with
    // the lse, the gradient's), and 2 x 2 (batch, group) pairs backward; a worker took some.
    for (const r of [one, two]) expect(r.result!.flex.items).toBe(2 * 2 * 4 * 7 + 2 * 2);
    expect(one.result!.flex.took).toBe(0);
    expect(two.result!.flex.took).toBeGreaterThan(0);
    expect(Object.keys(two.result!.hashes).filter((h) => h.startsWith('flex')).length).toBe(5);
    // A 2-D product of 2 column blocks is cut into 4 blocks of rows with a worker (the same bits).
    expect(two.result!.workers.splitItems).toBe(8);
    // Stopped, the workers take nothing more and the calling thread gives the same bits.
    expect(two.result!.workers.ready).toBe(0);
    expect(two.result!.workers.afterStop).toEqual({took: 0, same: true});
    // Once running, the threads stay: another count is BACKEND, the same or 'auto' is fine.
    expect(two.result!.again).toEqual({
      '1': expect.stringMatching(/^BACKEND: the wasm backend already runs 2 threads in this process/), '2': 'ok', auto: 'ok'});
    expect(one.result!.again).toEqual({
      '1': 'ok', '2': expect.stringMatching(/^BACKEND: the wasm backend already runs 1 thread in this process/), auto: 'ok'});
  });

  it('another tfjs-backend-wasm version: one thread, one warning line, the same results', async () => {
    const [fallback, one] = [await runChild('2', 'fallback'), await runChild('1')];
    expect({code: fallback.code, signal: fallback.signal}).toEqual({code: 0, signal: null});
    expect(warnings(fallback.stderr)).toEqual([
      'tfjs-attention: the wasm backend runs on one thread: threads in Node need @tensorflow/tfjs-backend-wasm 4.22.0, found 4.21.0',
    ]);
    expect(fallback.result!.threads).toBe(1);
    expect(fallback.result!.hashes).toEqual(one.result!.hashes);
  });

  it('bad thread counts are INVALID_CONFIG before any backend starts; auto is the cores, at most 8', async () => {
    for (const bad of [0, 9, 1.5, -1, '2', null]) {
      expect(() => checkThreads(bad)).toThrow(AttentionError);
      await expect(selectBackend('cpu', {threads: bad as never})).rejects.toMatchObject({code: 'INVALID_CONFIG'});
    }
    const auto = resolveThreads('auto');
    expect(auto).toBe(Math.min(8, require('os').cpus().length));
    expect(resolveThreads(3)).toBe(3);
  });
});
