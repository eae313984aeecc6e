/**
 * Backend selection. `auto` tries, in a browser (or web worker), webgpu, webgl, wasm and cpu;
 * in Node, tensorflow (tfjs-node), wasm and cpu: the first that starts is used. The
 * environment variable TFJS_ATTENTION_BACKEND overrides `auto` in Node.
 *
 * Importing this module changes only speed, missing gradients and a few tfjs 4.22 bugs (the
 * edge cases docs/backends.md lists): it registers the library's own kernels
 * (library_kernels.ts), gradients tfjs lacks or computes slowly (gradients.ts), a linear
 * UnsortedSegmentSum for cpu (cpu_kernels.ts), the UnsortedSegmentSum tfjs-wasm lacks, and,
 * when tfjs-backend-wasm is already imported, the wasm replacements (wasm_kernels.ts). It
 * never registers a backend: the wasm backend (a dependency of the library) is imported by
 * selectBackend when it tries wasm, and the replacements are installed then.
 * tfjs-node is loaded the same way, with a name held in a variable, so browser bundlers never
 * see it and a missing or broken install is an ordinary, caught failure. The webgpu backend
 * is the user's to import (`@tensorflow/tfjs-backend-webgpu`); webgl comes with
 * `@tensorflow/tfjs`. `setLibraryKernels('tfjs')` puts tfjs's own kernels back.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {errorMessage, isNode} from '../core/runtime';
import {provideWorkerStarter} from './wasm_native';
import {startNativeWorker} from './native_workers';
import {installLinearSegmentSum} from './cpu_kernels';
import {registerMissingWasmKernels} from './wasm_kernels';
import {registerLibraryKernels} from './library_kernels';
import {registerFlexKernels} from './wasm_flex';
import {installGradients} from './gradients';
import {
  arrangeThreadedInit, checkThreads, provideWasmThreadsApi, releaseWorkers, resolveThreads, threadsFellBack, ThreadsArg,
  wasmThreads,
} from './wasm_threads';

export type BackendName = 'tensorflow' | 'webgpu' | 'webgl' | 'wasm' | 'cpu';
export type BackendChoice = 'auto' | BackendName;

export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'webgpu', 'webgl', 'wasm', 'cpu'];
/** The choices that can start in Node (the CLI offers these). */
export const NODE_BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];
export const BACKEND_ENV_VAR = 'TFJS_ATTENTION_BACKEND';

/** What `auto` tries, in order, where the library runs now. */
export function autoBackends(): BackendName[] {
  return isNode() ? ['tensorflow', 'wasm', 'cpu'] : ['webgpu', 'webgl', 'wasm', 'cpu'];
}

registerLibraryKernels();
registerFlexKernels();
installGradients();
installLinearSegmentSum();
registerMissingWasmKernels(); // the replacements only where the user imported tfjs-backend-wasm first

let wasmLoadError: string | null = null;

/**
 * Imports @tensorflow/tfjs-backend-wasm (which registers the 'wasm' backend) and installs the
 * library's wasm kernels; true when the backend is registered. Run by selectBackend, never
 * at import.
 */
export async function loadWasmBackend(): Promise<boolean> {
  if (wasmLoadError == null) {
    try { // a second import is the module already loaded
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      provideWasmThreadsApi(wasm);
    } catch (e) {
      wasmLoadError = errorMessage(e).split('\n')[0];
    }
  }
  registerMissingWasmKernels();
  return tf.findBackendFactory('wasm') != null;
}

let nodeLoadError: string | null = null;

/** Loads @tensorflow/tfjs-node if it is installed and works here; true when the 'tensorflow' backend is registered. */
export async function loadTfjsNode(): Promise<boolean> {
  if (tf.findBackendFactory('tensorflow') != null) return true;
  if (nodeLoadError != null) return false;
  if (!isNode()) {
    nodeLoadError = 'tfjs-node runs only in Node';
    return false;
  }
  try {
    // A name held in a variable keeps bundlers from following this import.
    const name = '@tensorflow/tfjs-node';
    await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
  } catch (e) {
    nodeLoadError = errorMessage(e).split('\n')[0];
    return false;
  }
  return tf.findBackendFactory('tensorflow') != null;
}

function isChoice(name: string): name is BackendChoice {
  return (BACKEND_CHOICES as readonly string[]).includes(name);
}

export interface BackendOptions {
  /**
   * Threads of the wasm backend in Node: a count from 1 to 8, or 'auto' (every core, at most
   * 8). Default: tfjs's own choice (one thread in Node). Takes effect when the wasm backend
   * first starts in the process; asking a started one for another count throws BACKEND
   * ('auto' takes the threads it runs). In
   * a browser tfjs decides (threads on cross-origin-isolated pages) and this is ignored.
   */
  threads?: ThreadsArg;
}

async function trySet(name: BackendName, threads: number | null): Promise<boolean> {
  if (name === 'tensorflow' && !(await loadTfjsNode())) return false;
  if (name === 'wasm' && !(await loadWasmBackend())) return false;
  if (tf.findBackendFactory(name) == null) return false;
  const arranged = name === 'wasm' && threads != null && isNode() && tf.engine().registry['wasm'] == null
    ? arrangeThreadedInit(threads) : null;
  try {
    const ok = await tf.setBackend(name);
    if (ok) await tf.ready();
    return ok && tf.getBackend() === name;
  } catch {
    return false;
  } finally {
    if (arranged != null) {
      arranged.restore();
      releaseWorkers();
      // The library's product kernel shares its work with worker threads of its own.
      provideWorkerStarter(startNativeWorker);
    }
  }
}

/**
 * Throws BACKEND when the running wasm backend has other threads than a count asked for (Node
 * only); 'auto' takes what runs.
 */
function checkStartedThreads(threads: number | null, asked: ThreadsArg | undefined): void {
  if (threads == null || asked === 'auto' || !isNode() || tf.getBackend() !== 'wasm') return;
  const running = wasmThreads();
  if (running !== threads && !(threads > 1 && running === 1 && threadsFellBack())) {
    throw new AttentionError('BACKEND',
      `the wasm backend already runs ${running} thread${running === 1 ? '' : 's'} in this process, and its ` +
      `threads are chosen when it first starts: select it with {threads: ${threads}} before anything else uses it`);
  }
}

/** Why `name` could not start, for the error message. */
function whyNot(name: BackendName): string {
  if (name === 'tensorflow') return nodeLoadError != null ? `: ${nodeLoadError}` : '';
  if (name === 'webgl' && isNode()) return ': it needs a browser';
  if (name === 'wasm' && wasmLoadError != null) return `: ${wasmLoadError}`;
  if (tf.findBackendFactory(name) == null) {
    return name === 'webgpu' ? ": it is not registered (import '@tensorflow/tfjs-backend-webgpu' first)" :
      ': it is not registered';
  }
  return '';
}

/**
 * Makes `name` the active tfjs backend and returns the name chosen.
 * `auto` (the default, or in Node the value of TFJS_ATTENTION_BACKEND when set) tries
 * webgpu, webgl, wasm, cpu in a browser and tensorflow, wasm, cpu in Node, and keeps the
 * first that starts. Naming a backend that cannot be started throws AttentionError('BACKEND').
 * `options.threads` sets the wasm backend's threads in Node (see BackendOptions and
 * wasm_threads.ts); INVALID_CONFIG for a bad count.
 */
export async function selectBackend(name?: BackendChoice, options: BackendOptions = {}): Promise<BackendName> {
  if (options?.threads !== undefined) checkThreads(options.threads);
  installLinearSegmentSum(); // again: a tfjs-backend-cpu loaded after the library registers its own kernel
  const threads = options?.threads !== undefined ? resolveThreads(options.threads) : null;
  const env = typeof process !== 'undefined' ? process.env?.[BACKEND_ENV_VAR] : undefined;
  const requested = name ?? (env != null && env !== '' ? env : 'auto');
  if (!isChoice(requested)) {
    const from = name == null ? ` (from ${BACKEND_ENV_VAR})` : '';
    throw new AttentionError('INVALID_CONFIG',
      `backend${from} must be one of ${BACKEND_CHOICES.join(', ')}, received ${show(requested)}`);
  }
  if (requested !== 'auto') {
    if (await trySet(requested, threads)) {
      checkStartedThreads(threads, options?.threads);
      return requested;
    }
    throw new AttentionError('BACKEND', `backend '${requested}' could not be started${whyNot(requested)}`);
  }
  const order = autoBackends();
  for (const candidate of order) {
    if (await trySet(candidate, threads)) {
      checkStartedThreads(threads, options?.threads);
      return candidate;
    }
  }
  throw new AttentionError('BACKEND', `no backend could be started (tried ${order.join(', ')})`);
}
