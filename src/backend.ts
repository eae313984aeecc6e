/**
 * Backend selection. `auto` tries tensorflow (tfjs-node), then wasm, then cpu.
 * The environment variable TFJS_ATTENTION_BACKEND overrides `auto`.
 *
 * tfjs-node is loaded with a dynamic require behind a variable, so browser bundlers
 * never see it and a missing or broken install is an ordinary, caught failure.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import {AttentionError, show} from './errors';
import {requireModule} from './node';
import {registerMissingWasmKernels} from './wasm_kernels';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendChoice = 'auto' | BackendName;

export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'tensorflow', 'wasm', 'cpu'];
export const BACKEND_ENV_VAR = 'TFJS_ATTENTION_BACKEND';

registerMissingWasmKernels();

let nodeLoadError: Error | null = null;

/** Loads @tensorflow/tfjs-node if it is installed and works here; true when the 'tensorflow' backend is registered. */
export function tryLoadTfjsNode(): boolean {
  if (tf.findBackendFactory('tensorflow') != null) return true;
  if (nodeLoadError != null) return false;
  if (typeof process === 'undefined' || process.versions?.node == null) {
    nodeLoadError = new Error('not running in Node');
    return false;
  }
  try {
    // A name held in a variable keeps bundlers from following this require.
    const name = '@tensorflow/tfjs-node';
    requireModule(name);
  } catch (e) {
    nodeLoadError = e as Error;
    return false;
  }
  return tf.findBackendFactory('tensorflow') != null;
}

function isChoice(name: string): name is BackendChoice {
  return (BACKEND_CHOICES as readonly string[]).includes(name);
}

async function trySet(name: BackendName): Promise<boolean> {
  if (name === 'tensorflow' && !tryLoadTfjsNode()) return false;
  try {
    const ok = await tf.setBackend(name);
    if (ok) await tf.ready();
    return ok && tf.getBackend() === name;
  } catch {
    return false;
  }
}

/**
 * Makes `name` the active tfjs backend and returns the name chosen.
 * `auto` (the default, or the value of TFJS_ATTENTION_BACKEND when set) picks
 * tensorflow when tfjs-node loads, else wasm, else cpu. Naming a backend that cannot
 * be started throws AttentionError('BACKEND').
 */
export async function selectBackend(name?: BackendChoice): Promise<BackendName> {
  const env = typeof process !== 'undefined' ? process.env?.[BACKEND_ENV_VAR] : undefined;
  const requested = name ?? (env != null && env !== '' ? env : 'auto');
  if (!isChoice(requested)) {
    const from = name == null ? ` (from ${BACKEND_ENV_VAR})` : '';
    throw new AttentionError('INVALID_CONFIG',
      `backend${from} must be one of ${BACKEND_CHOICES.join(', ')}, received ${show(requested)}`);
  }
  if (requested !== 'auto') {
    if (await trySet(requested)) return requested;
    const why = requested === 'tensorflow' && nodeLoadError != null ? `: ${nodeLoadError.message.split('\n')[0]}` : '';
    throw new AttentionError('BACKEND', `backend '${requested}' could not be started${why}`);
  }
  for (const candidate of ['tensorflow', 'wasm', 'cpu'] as const) {
    if (await trySet(candidate)) return candidate;
  }
  throw new AttentionError('BACKEND', 'no backend could be started (tried tensorflow, wasm, cpu)');
}
