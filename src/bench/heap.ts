/**
 * Real memory on the wasm backend: how much the wasm heap grows during one pass.
 *
 * tf.profile's peakBytes (measure.ts) is tfjs's own accounting: it charges reshape views
 * and saved clones in full, so it cannot tell how close a pass is to what it must hold. The
 * wasm backend keeps every tensor in one linear memory that only ever grows (+20% at a
 * time in tfjs-backend-wasm 4.22, never shrinking), so the heap's size after a pass, in a
 * process that did nothing before it, is the pass's high-water mark: every tensor and
 * every scratch buffer of the kernels that were alive at once, with the allocator's
 * fragmentation, rounded up to the next growth step.
 *
 * So each row is measured in a fresh child process (`node heap.js JOB`): it starts the
 * backend, reads the heap's size, makes the row's inputs, runs the pass once, waits for
 * its outputs' data, and reads the size again. The growth counts the inputs too, and is
 * compared with the row's floor (`floorBytes`): the bytes any implementation must hold,
 * for attention q, k, v and the output, plus dOut, dq, dk and dv for forward+backward
 * (at B=1, H=4, T=4096, D=64: 16 MiB and 32 MiB). Even a trivial op measures above its
 * floor: the growth steps and the allocator's slack.
 *
 * Only the rows of the built-in tables (IMPLS, WORKLOADS) can be measured this way: the
 * child finds the row by name.
 */
import {spawn} from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {selectBackend} from '../kernels/backend';
import {MatMulPath, setMatMulPath} from '../ops/matmul';
import {attentionWorkload} from './attention_workload';
import {IMPLS} from './impls';
import {AttentionShape, Pass} from './measure';
import {WORKLOADS, Workload} from './workloads';

/** What one child process measures. */
export interface HeapJob {
  /** A name from IMPLS or WORKLOADS. */
  impl: string;
  shape: AttentionShape;
  pass: Pass;
  seed: number;
  matmulPath: MatMulPath;
}

export interface HeapMeasurement {
  /** Heap size after the pass minus heap size before the inputs were made. */
  heapBytes: number;
  /** The heap's size when the backend had started, before the inputs. */
  startBytes: number;
}

/** The current size of the wasm backend's heap, bytes; null on any other backend. */
export function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const module = (tf.backend() as unknown as {wasm?: {HEAPU8?: Uint8Array}}).wasm;
  const bytes = module?.HEAPU8?.buffer?.byteLength;
  return typeof bytes === 'number' ? bytes : null;
}

/** The row's workload: an attention implementation or a workload from WORKLOADS. */
function workloadFor(name: string): Workload {
  if (name in WORKLOADS) return WORKLOADS[name];
  if (name in IMPLS) return attentionWorkload(IMPLS[name]);
  throw new Error(`no bench row named ${name}`);
}

/** In the child: runs the job on wasm and returns what it measured. */
export async function runHeapJob(job: HeapJob): Promise<HeapMeasurement> {
  await selectBackend('wasm');
  setMatMulPath(job.matmulPath);
  const workload = workloadFor(job.impl);
  const start = wasmHeapBytes()!;
  const prepared = workload.prepare(job.shape, job.seed, [job.pass]);
  const fn = prepared.pass(job.pass);
  if (fn == null) throw new Error(`${job.impl} has no ${job.pass} pass`);
  const outs = tf.tidy(fn);
  await Promise.all(outs.map((t) => t.data()));
  const end = wasmHeapBytes()!;
  tf.dispose(outs);
  prepared.dispose();
  return {heapBytes: end - start, startBytes: start};
}

/** The marker before the child's one line of JSON on stdout. */
const RESULT_MARKER = 'HEAP_RESULT ';
/** The marker before the child's error message on stderr. */
const FAILED_MARKER = 'HEAP_FAILED ';

/**
 * From the TypeScript sources, this file bundled into one script (by esbuild, a dev
 * dependency), made once per process, so that a child loads one file instead of compiling
 * the library's modules; null when esbuild is not installed.
 */
let bundled: string | null | undefined;
function bundledChild(file: string): string | null {
  if (bundled !== undefined) return bundled;
  bundled = null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a dev dependency, used only when present
    const esbuild = require('esbuild') as typeof import('esbuild');
    const out = path.join(__dirname, '..', '..', 'node_modules', '.cache', 'tfjs-attention', `heap-${process.pid}.js`);
    esbuild.buildSync({entryPoints: [file], outfile: out, bundle: true, platform: 'node', format: 'cjs',
      target: 'node18', packages: 'external', logLevel: 'error'});
    process.once('exit', () => fs.rmSync(out, {force: true}));
    bundled = out;
  } catch {
    // No esbuild: the child compiles the sources with ts-node.
  }
  return bundled;
}

/** How to start this file as a script: node; from the TypeScript sources, its bundle or ts-node. */
function childCommand(): string[] {
  const ext = path.extname(__filename);
  const file = path.join(__dirname, `heap${ext}`);
  if (ext !== '.ts') return [file];
  const bundle = bundledChild(file);
  return bundle != null ? [bundle] : ['-r', require.resolve('ts-node/register/transpile-only'), file];
}

/**
 * Measures `job` in a fresh Node process (see the file comment). Rejects with the child's
 * last line of stderr when it fails (running out of the 4 GiB heap aborts it).
 */
export function measureHeap(job: HeapJob): Promise<HeapMeasurement> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...childCommand(), JSON.stringify(job)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The child must not pick another backend or a test setup from the environment.
      env: {...process.env, TFJS_ATTENTION_BACKEND: 'wasm'},
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARKER));
      if (code === 0 && line != null) {
        resolve(JSON.parse(line.slice(RESULT_MARKER.length)) as HeapMeasurement);
        return;
      }
      const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
      const last = lines.find((l) => l.startsWith(FAILED_MARKER))?.slice(FAILED_MARKER.length) ?? lines.pop() ?? '';
      reject(new Error(`heap measurement failed (${signal ?? `exit ${code}`})${last !== '' ? `: ${last.trim()}` : ''}`));
    });
  });
}

if (require.main === module) {
  runHeapJob(JSON.parse(process.argv[2]) as HeapJob).then((m) => {
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(m)}\n`);
  }, (e) => {
    const message = String((e as Error)?.message ?? e).split('\n')[0];
    process.stderr.write(`${(e as Error)?.stack ?? e}\n${FAILED_MARKER}${message}\n`);
    process.exitCode = 1;
  });
}
