/**
 * Threads for the wasm backend in Node.
 *
 * tfjs-backend-wasm ships a threaded build (pthreads on a SharedArrayBuffer, XNNPACK's thread
 * pool) but turns it off in Node (tensorflow/tfjs #3830). It runs there once four things of
 * its init are arranged, which this module does for the one version whose internals it
 * knows (KNOWN_WASM_VERSION), and only for the moment of init:
 *   1. The pthread worker's script is handed to `new Worker` as a Blob URL, which Node's
 *      Worker rejects. The script (the package's `wasm-out/...threaded-simd.worker.js`) is
 *      written to a real file under the OS temp folder, named by its content's hash, and
 *      `URL.createObjectURL` answers that file's path for the worker's Blob.
 *   2. Inside the worker the main script arrives as a Blob too: the worker file first points
 *      its own `URL.createObjectURL` at the unbundled glue (`wasm-out/...threaded-simd.js`,
 *      whose .wasm is the same as dist's).
 *   3. The backend caps its threads at half of `os.cpus().length`, read during init (1 on a
 *      2-core machine): for that moment `os.cpus()` answers twice the threads asked for.
 *   4. The flag WASM_HAS_MULTITHREAD_SUPPORT is set and `setThreadsCount(n)` called before
 *      the backend starts.
 * `URL.createObjectURL`, `os.cpus` and the flag are restored as soon as init ends (whether it
 * worked or not). The build keeps a pool of 8 workers (so at most 8 threads), which are then
 * `unref()`ed so that a program exits when its work is done.
 *
 * Anything unexpected (another tfjs-backend-wasm version, a missing file, an ES module that
 * cannot reach Node's modules) falls back to one thread with one warning line. Browsers are
 * never touched: they get the threaded build on cross-origin-isolated pages by themselves.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {errorMessage, isNode, nodeBuiltin, packageRoot} from '../core/runtime';
import {WasmBackend} from './backend_types';

/** The tfjs-backend-wasm version whose init this module knows how to arrange. */
export const KNOWN_WASM_VERSION = '4.22.0';
/** Workers in the threaded build's pool: the most threads it can run. */
export const MAX_WASM_THREADS = 8;

/** A thread count, or 'auto': every core, at most MAX_WASM_THREADS. */
export type ThreadsArg = number | 'auto';

type Os = typeof import('os');
type Fs = typeof import('fs');
type Path = typeof import('path');
type Crypto = typeof import('crypto');
type NodeModule = typeof import('module');

/** The function of tfjs-backend-wasm that sets the threads of its next start. */
export interface WasmThreadsApi {setThreadsCount(n: number): void}

// The wasm backend is imported by selectBackend when first needed (never at the library's
// import, which must not change the backend tfjs picks); it hands its function here.
let wasmApi: WasmThreadsApi | null = null;

/** Gives this module tfjs-backend-wasm's setThreadsCount (backend.ts, once the backend is imported). */
export function provideWasmThreadsApi(api: WasmThreadsApi): void {
  wasmApi = api;
}

/** Throws INVALID_CONFIG unless `threads` is 'auto' or an integer in [1, MAX_WASM_THREADS]. */
export function checkThreads(threads: unknown): asserts threads is ThreadsArg {
  if (threads === 'auto') return;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_WASM_THREADS) {
    throw new AttentionError('INVALID_CONFIG',
      `threads must be 'auto' or an integer from 1 to ${MAX_WASM_THREADS} (the wasm build's pool), ` +
      `received ${show(threads)}`);
  }
}

/** The thread count `threads` asks for here: 'auto' = the cores (at most MAX_WASM_THREADS), 1 outside Node. */
export function resolveThreads(threads: ThreadsArg): number {
  checkThreads(threads);
  if (threads !== 'auto') return threads;
  const os = isNode() ? nodeBuiltin('os') as Os | null : null;
  if (os == null) return 1;
  return Math.max(1, Math.min(MAX_WASM_THREADS, os.cpus().length));
}

/** The threads the running wasm backend uses (1 before it starts or when it is not the backend). */
export function wasmThreads(): number {
  if (tf.getBackend() !== 'wasm') return 1;
  // The running backend's module, however it was imported (selectBackend's import or the user's).
  const own = (tf.backend() as unknown as Partial<WasmBackend>).wasm?.tfjs;
  try {
    return Math.max(1, own?.getThreadsCount?.() ?? 1);
  } catch {
    return 1;
  }
}

let warned = false;
/** One warning line per process: threads were asked for and one thread runs instead. */
function warnOnce(why: string): void {
  if (warned) return;
  warned = true;
  console.warn(`tfjs-attention: the wasm backend runs on one thread: ${why}`);
}

/** True once a request for threads fell back to one thread (and warned). */
export function threadsFellBack(): boolean {
  return warned;
}

interface Arranged {
  /** Undoes every change to globals made for init. */
  restore(): void;
}

/** Where the installed tfjs-backend-wasm is, and its version; null when it cannot be found. */
function wasmPackage(path: Path, fs: Fs, mod: NodeModule): {dir: string; version: string} | null {
  const tryFrom = (base: string) => {
    try {
      const file = mod.createRequire(base).resolve('@tensorflow/tfjs-backend-wasm/package.json');
      return {dir: path.dirname(file), version: JSON.parse(fs.readFileSync(file, 'utf8')).version as string};
    } catch {
      return null;
    }
  };
  let root: string | null = null;
  try {
    root = packageRoot();
  } catch {
    root = null;
  }
  return (root != null ? tryFrom(path.join(root, 'package.json')) : null) ?? tryFrom(path.join(process.cwd(), 'index.js'));
}

/**
 * The worker file for a glue script path: written once per content hash under the OS temp
 * folder (through a temporary name and a rename, so a reader never sees half a file).
 */
function workerFile(dir: string, fs: Fs, path: Path, os: Os, crypto: Crypto, mod: NodeModule): string {
  const glue = path.join(dir, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.js');
  const source = path.join(dir, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.worker.js');
  if (!fs.existsSync(glue) || !fs.existsSync(source)) throw new Error(`no threaded build in ${dir}`);
  const contents = (mod.createRequire(source)(source) as {wasmWorkerContents?: unknown}).wasmWorkerContents;
  if (typeof contents !== 'string') throw new Error(`${source} has no wasmWorkerContents`);
  // As the backend does for its Blob: the script's "\n" escapes arrive as raw newlines.
  const text = `URL.createObjectURL=()=>${JSON.stringify(glue)};URL.revokeObjectURL=()=>{};\n` +
    contents.replace(/\n/g, '\\n');
  const hash = crypto.createHash('sha256').update(text).digest('hex').slice(0, 16);
  const file = path.join(os.tmpdir(), `tfjs-attention-wasm-worker-${hash}.cjs`);
  let same = false;
  try {
    same = fs.readFileSync(file, 'utf8') === text;
  } catch {
    same = false;
  }
  if (!same) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  }
  return file;
}

/**
 * Arranges the wasm backend's next init for `n` threads (see the file comment) and returns
 * how to undo it; null when nothing was arranged (one thread asked for, not Node, or a
 * fallback, which warns once).
 */
export function arrangeThreadedInit(n: number): Arranged | null {
  if (n <= 1 || !isNode()) return null;
  const api = wasmApi;
  if (api == null) {
    warnOnce('@tensorflow/tfjs-backend-wasm is not loaded');
    return null;
  }
  const os = nodeBuiltin('os') as Os | null;
  const fs = nodeBuiltin('fs') as Fs | null;
  const path = nodeBuiltin('path') as Path | null;
  const crypto = nodeBuiltin('crypto') as Crypto | null;
  const mod = nodeBuiltin('module') as NodeModule | null;
  if (os == null || fs == null || path == null || crypto == null || mod == null) {
    warnOnce("Node's modules are out of reach of this ES module (import 'tfjs-attention/node', or run on Node >= 20.16)");
    return null;
  }
  const pkg = wasmPackage(path, fs, mod);
  if (pkg == null) {
    warnOnce('@tensorflow/tfjs-backend-wasm could not be found');
    return null;
  }
  if (pkg.version !== KNOWN_WASM_VERSION) {
    warnOnce(`threads in Node need @tensorflow/tfjs-backend-wasm ${KNOWN_WASM_VERSION}, found ${pkg.version}`);
    return null;
  }
  let worker: string;
  try {
    worker = workerFile(pkg.dir, fs, path, os, crypto, mod);
  } catch (e) {
    warnOnce(`its worker script could not be prepared (${errorMessage(e).split('\n')[0]})`);
    return null;
  }
  const url = URL as unknown as {createObjectURL: (b: unknown) => string};
  const createObjectURL = url.createObjectURL;
  const cpus = os.cpus;
  const flag = tf.env().getFlags()['WASM_HAS_MULTITHREAD_SUPPORT'];
  url.createObjectURL = (b: unknown) =>
    (typeof Blob !== 'undefined' && b instanceof Blob && b.type === 'application/javascript' ? worker : createObjectURL(b));
  const real = cpus.call(os);
  os.cpus = () => Array.from({length: 2 * n}, (_, i) => real[i % real.length]);
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  api.setThreadsCount(n);
  return {
    restore() {
      url.createObjectURL = createObjectURL;
      os.cpus = cpus;
      if (flag === undefined) {
        // Unset again: the flag's own test (false in Node) answers from now on.
        delete (tf.env() as unknown as {flags: Record<string, unknown>}).flags['WASM_HAS_MULTITHREAD_SUPPORT'];
      } else {
        tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', flag);
      }
      api.setThreadsCount(-1);
    },
  };
}

/** Lets the process exit with the threaded build's pooled workers alive (they idle, unref'd). */
export function releaseWorkers(): void {
  const backend = tf.engine().registry['wasm'] as unknown as Partial<WasmBackend> | undefined;
  const pool = backend?.wasm?.PThread;
  if (pool == null) return;
  for (const w of [...(pool.runningWorkers ?? []), ...(pool.unusedWorkers ?? [])]) w.unref?.();
}
