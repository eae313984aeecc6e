/**
 * The limits of a model load (browser-safe: no Node module), and the hook through which
 * the file:// handler (file_system.ts, Node only) reaches loaders that must not import it.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {DEFAULT_MAX_BYTES} from '../core/limits';

/** The largest JSON file (model.json, training.json, optimizer.json) read by default: 64 MiB. */
export const MAX_JSON_BYTES = 64 * 2 ** 20;

/** How a load reads a folder: its limits, and whether the config is sized by building it with stand-ins. */
export interface LoadLimits {
  maxBytes: number;
  maxJsonBytes: number;
  /** False for a config this library rewrites before building (a Keras model): its loader sizes it. */
  planTopology: boolean;
  /** How to raise maxBytes, for messages. */
  raise: string;
}

const RAISE = 'If the model is trusted, raise the limit: fileSystem(path, {maxBytes}), loadModel(dir, {maxBytes}), ' +
  'loadKerasModel(url, {maxBytes}) or --max-bytes';

function positiveBytes(value: unknown, name: string, who: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value <= 0) {
    throw new AttentionError('INVALID_CONFIG', `${who}: ${name} must be a positive number of bytes, received ${show(value)}`);
  }
  return value;
}

/** The limits of `options` (checked), with their defaults: maxBytes 2 GiB, maxJsonBytes 64 MiB. */
export function loadLimits(options: {maxBytes?: unknown; maxJsonBytes?: unknown}, who: string,
                           planTopology = true): LoadLimits {
  return {
    maxBytes: positiveBytes(options.maxBytes, 'maxBytes', who, DEFAULT_MAX_BYTES),
    maxJsonBytes: positiveBytes(options.maxJsonBytes, 'maxJsonBytes', who, MAX_JSON_BYTES),
    planTopology, raise: RAISE,
  };
}

/** On a file:// handler of this library: its path and limits (loadKerasModel reads them to load it its own way). */
export const FILE_HANDLER = Symbol.for('tfjs-attention.fileHandler');

/** Makes a load-only handler for a model.json path (or its folder) under `limits`. */
export type FileLoader = (path: string, limits: LoadLimits) => tf.io.IOHandler;

let fileLoader: FileLoader | null = null;

/** Set by registerFileRouter in Node. */
export function provideFileLoader(loader: FileLoader): void {
  fileLoader = loader;
}

/** The file:// loader, or null (a browser, or a bundle without the file:// handler). */
export function getFileLoader(): FileLoader | null {
  return fileLoader;
}
