/** What every command shares: where output goes, parsers for flag values, model descriptions. */
import * as tf from '@tensorflow/tfjs';
import {InvalidArgumentError, Option} from './command';
import {node} from '../core/runtime';
import {MAX_WASM_THREADS, ThreadsArg} from '../kernels/wasm_threads';
import {AttentionError} from '../core/errors';
import {familyOfAttention} from '../train/families';
import type {TransformerOptions} from '../train/model';
import type {TrainingRecord} from '../train/record';

/** Where a command writes; `process` in the real CLI, string buffers in tests. */
export interface CliIO {
  stdout: {write(text: string): unknown};
  stderr: {write(text: string): unknown};
}

/** Exit codes: 0 done, 1 the work failed, 2 the command line was wrong. */
export const EXIT = {ok: 0, failure: 1, usage: 2} as const;

/** A flag parser for integers >= min; the parser reports the message with the flag and the value. */
export function intArg(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\s*-?\d+\s*$/.test(value) || n < min) throw new InvalidArgumentError(`Expected an integer >= ${min}.`);
    return n;
  };
}

/** A flag parser for 'auto' or a thread count in [1, MAX_WASM_THREADS]. */
export function threadsArg(value: string): ThreadsArg {
  if (value.trim() === 'auto') return 'auto';
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || n < 1 || n > MAX_WASM_THREADS) {
    throw new InvalidArgumentError(`Expected auto or an integer from 1 to ${MAX_WASM_THREADS}.`);
  }
  return n;
}

/** --threads: the wasm backend's threads in Node (selectBackend's `threads`). */
export function threadsOption(): Option {
  return new Option('--threads <n>', `threads of the wasm backend: 1 to ${MAX_WASM_THREADS}, or auto (every core, ` +
    `at most ${MAX_WASM_THREADS}); ignored by other backends`).argParser(threadsArg).default('auto');
}

/** A flag parser for numbers in [min, max] (with `open`, in (min, max]). */
export function floatArg(min: number, max = Infinity, open = false): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max || (open && n === min)) {
      throw new InvalidArgumentError(`Expected a number in ${open ? '(' : '['}${min}, ${max === Infinity ? 'inf' : max}].`);
    }
    return n;
  };
}

const BYTE_UNITS: Record<string, number> = {
  '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** A flag parser for a positive byte count: `4294967296`, `4GiB`, `500MB`, `1.5e9`. */
export function bytesArg(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const n = m != null && m[2].toLowerCase() in BYTE_UNITS ? Number(m[1]) * BYTE_UNITS[m[2].toLowerCase()] : NaN;
  if (!Number.isFinite(n) || n < 1) {
    throw new InvalidArgumentError('Expected a positive number of bytes, e.g. 4294967296, 4GiB or 500MB.');
  }
  return Math.floor(n);
}

/** --max-bytes: the most bytes of weights a model read may hold (loadModel's and loadKerasModel's maxBytes). */
export function maxBytesOption(): Option {
  return new Option('--max-bytes <n>', 'refuse a model whose weights (by its manifest or its config) pass n bytes, ' +
    'before reading or allocating them; accepts units: 4GiB, 500MB (default 2GiB)').argParser(bytesArg);
}

/** A flag parser for a comma-separated list of names drawn from `known`. */
export function namesArg(known: readonly string[], what: string): (value: string) => string[] {
  return (value) => {
    const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const unknown = names.filter((n) => !known.includes(n));
    if (names.length === 0 || unknown.length > 0) {
      const bad = names.length === 0 ? `No ${what} named` : `Unknown ${what} '${unknown.join(',')}'`;
      throw new InvalidArgumentError(`${bad}; choose from ${known.join(', ')}.`);
    }
    return names;
  };
}

/** A flag parser for a comma-separated list of integers >= min: `512,2048,4096`. */
export function intListArg(min: number): (value: string) => number[] {
  return (value) => {
    const parts = value.split(',').map((s) => s.trim());
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < min)) {
      throw new InvalidArgumentError(`Expected a comma-separated list of integers >= ${min}.`);
    }
    return parts.map(Number);
  };
}

/** `layers:` then one line per layer: name (class), output shape, parameters. */
export function describeLayers(model: tf.LayersModel): string[] {
  const shape = (layer: tf.layers.Layer) => {
    try {
      return JSON.stringify(layer.outputShape).replace(/,/g, ', ');
    } catch {
      return 'multiple'; // a layer called more than once has one output shape per call
    }
  };
  return ['layers:', ...model.layers.map((l) =>
    `  ${l.name} (${l.getClassName()}) output ${shape(l)}, ${l.countParams()} parameters`)];
}

/** The model.json path `p` names: `p` itself, or model.json in the folder `p`. */
export function kerasJsonPath(p: string): string {
  const {fs, path} = node();
  const abs = path.resolve(p);
  const isDir = fs.existsSync(abs) && fs.statSync(abs).isDirectory();
  return isDir ? path.join(abs, 'model.json') : abs;
}

/** A `file://` URL for a model.json path, or for the folder holding model.json. */
export function kerasUrl(p: string): string {
  return `file://${kerasJsonPath(p)}`;
}

/**
 * The options of a saved transformer, for the commands that read token sequences (`predict`,
 * `generate`). UNSUPPORTED for a model of another family: a graph network also needs its
 * graphs' edges, an n-body network reads particles.
 */
export function transformerOptions(record: TrainingRecord, command: string): Required<TransformerOptions> {
  const family = familyOfAttention(record.model.attention);
  if (family?.name !== 'transformer') {
    throw new AttentionError('UNSUPPORTED', `${command} reads one token sequence, and the model in this folder (task ` +
      `${record.task.name}) is made of ${family?.description ?? `'${record.model.attention}' layers`}: use eval, or call ` +
      'model.predict from the API');
  }
  return record.model as Required<TransformerOptions>;
}
