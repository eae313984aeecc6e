/**
 * loadKerasModel: a Keras model converted to TensorFlow.js (model.json + weights, as
 * `tensorflowjs_converter --input_format keras` or `tfjs.converters.save_keras_model`
 * write it from Keras 3 or tf.keras 2) as a tf.LayersModel of tfjs-layers' classes and
 * this library's attention layers.
 *
 *   1. Load the artifacts through the handler tfjs would use for the URL (file://,
 *      http(s)://, indexeddb://, localstorage://, or any tf.io.IOHandler).
 *   2. Rewrite the topology into the form tfjs-layers deserializes (topology.ts), and
 *      check that the weight data holds every byte the manifest lists.
 *   3. Size the model from its config alone (io/model_plan.ts: built with stand-in weights,
 *      nothing allocated) and refuse one over `maxBytes`; match each manifest entry to the
 *      planned weight it fills (weights.ts). Nothing is decoded yet: the weights are read
 *      once, by tfjs, in step 4.
 *   4. Build the model through tf.loadLayersModel with the weights renamed to the model's
 *      own names, so tfjs loads them and skips the random init they would overwrite.
 *
 * Everything here runs in the browser as in Node: it reads through tfjs' IO handlers, and
 * for a file:// URL in Node always through this library's (confined to the model's folder,
 * sizes checked before reading), even where tfjs-node's would claim the URL.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, brief, show} from '../core/errors';
import {FILE_HANDLER, getFileLoader, LoadLimits, loadLimits} from '../io/load_limits';
import {checkPlan, ModelPlan, planModel} from '../io/model_plan';
import {decodedBytes, manifestBytes} from '../io/specs';
import {formatBytes} from '../core/limits';
import {checkArgNames} from '../core/validate';
import {rewriteTopology} from './topology';
import {matchWeights} from './weights';

/** Options of loadKerasModel: how to fetch, as tf.loadLayersModel takes them (passed to the http handler). */
export interface KerasLoadOptions {
  requestInit?: RequestInit;
  onProgress?: tf.io.OnProgressCallback;
  fetchFunc?: typeof fetch;
  weightPathPrefix?: string;
  weightUrlConverter?: (weightFileName: string) => Promise<string>;
  /** The most bytes of weights the model may hold, by its manifest and by its config; default 2 GiB. */
  maxBytes?: number;
  /** file:// only: the largest model.json read, in bytes; default 64 MiB. */
  maxJsonBytes?: number;
}

export const KERAS_LOAD_OPTIONS: readonly string[] =
  ['requestInit', 'onProgress', 'fetchFunc', 'weightPathPrefix', 'weightUrlConverter', 'maxBytes', 'maxJsonBytes'];

const FILE_SCHEME = 'file://';

/**
 * The IO handler for `urlOrHandler`, as tf.loadLayersModel picks it; a file:// URL in Node
 * is always read by this library's handler, with `limits` (the config is sized after the
 * rewrite, so not by the handler).
 */
function handlerFor(urlOrHandler: string | tf.io.IOHandler, options: tf.io.LoadOptions,
    limits: LoadLimits): tf.io.IOHandler {
  if (typeof urlOrHandler !== 'string') {
    if (urlOrHandler == null || typeof (urlOrHandler as tf.io.IOHandler).load !== 'function') {
      throw new AttentionError('INVALID_CONFIG',
        `loadKerasModel takes a URL or a tf.io.IOHandler with a load() method, received ${show(urlOrHandler)}`);
    }
    // This library's file:// handler sizes a config as tfjs builds it; a Keras config is sized after the rewrite.
    const file = (urlOrHandler as {[FILE_HANDLER]?: {path: string}})[FILE_HANDLER];
    const loader = getFileLoader();
    return file != null && loader != null ? loader(file.path, {...limits, planTopology: false}) : urlOrHandler;
  }
  const fileLoader = getFileLoader(); // io/file_system.ts (Node only: elsewhere it throws UNSUPPORTED)
  if (fileLoader != null && urlOrHandler.startsWith(FILE_SCHEME)) {
    return fileLoader(urlOrHandler.slice(FILE_SCHEME.length), {...limits, planTopology: false});
  }
  const handlers = tf.io.getLoadHandlers(urlOrHandler, options);
  if (handlers.length > 1) {
    throw new AttentionError('IO', `${urlOrHandler}: ${handlers.length} load handlers claim this URL`);
  }
  if (handlers.length === 1) return handlers[0];
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(urlOrHandler) && !/^https?:\/\//i.test(urlOrHandler)) {
    throw new AttentionError('IO', `${urlOrHandler}: no load handler for this URL scheme ` +
      '(file:// needs Node; indexeddb:// and localstorage:// need a browser)');
  }
  return tf.io.browserHTTPRequest(urlOrHandler, options);
}

/** Throws IO unless the weight data holds exactly the bytes the manifest lists, and these are within maxBytes. */
function checkWeightBytes(artifacts: tf.io.ModelArtifacts, source: string, limits: LoadLimits): void {
  const specs = artifacts.weightSpecs ?? [];
  const pieces = artifacts.weightData == null ? [] : Array.isArray(artifacts.weightData) ? artifacts.weightData
    : [artifacts.weightData];
  const have = pieces.reduce((n, b) => n + b.byteLength, 0);
  const expected = manifestBytes(specs);
  if (Number.isFinite(expected) && have !== expected) {
    throw new AttentionError('IO', `${source}: the weights hold ${have} bytes, but the manifest lists ${expected} ` +
      `(${specs.length} weights): ${have < expected ? 'a weight file is truncated or missing' : 'a weight file is not the one the manifest describes'}`);
  }
  const decoded = decodedBytes(specs); // a quantized weight is decoded to its dtype
  if (Math.max(have, decoded) > limits.maxBytes) {
    throw new AttentionError('IO', `${source}: the weights take ${formatBytes(Math.max(have, decoded))}, over the ` +
      `limit of ${formatBytes(limits.maxBytes)}. ${limits.raise}`);
  }
}

/**
 * A converted Keras model (Keras 3 or tf.keras 2 topology) as a tf.LayersModel.
 * Keras MultiHeadAttention and GroupedQueryAttention layers become this library's
 * MultiHeadAttention with the stored weights; every other layer is tfjs-layers' own (a
 * class tfjs lacks must be registered with tf.serialization.registerClass first).
 * Throws AttentionError: 'IO' for a file that cannot be read, is not a Keras model, or
 * whose weights do not fit the model (naming the weight); 'UNSUPPORTED' for a layer, key
 * or call this cannot run (naming the layer and the key); 'INVALID_CONFIG' for options.
 */
export async function loadKerasModel(urlOrHandler: string | tf.io.IOHandler,
    options: KerasLoadOptions = {}): Promise<tf.LayersModel> {
  checkArgNames('loadKerasModel', options, KERAS_LOAD_OPTIONS);
  const {maxBytes, maxJsonBytes, ...fetchOptions} = options ?? {};
  // A handler of fileSystem(path, {maxBytes}) keeps its limits unless options give others.
  const own = (urlOrHandler as {[FILE_HANDLER]?: {limits: LoadLimits}} | null)?.[FILE_HANDLER]?.limits;
  const limits = loadLimits({maxBytes: maxBytes ?? own?.maxBytes, maxJsonBytes: maxJsonBytes ?? own?.maxJsonBytes},
    'loadKerasModel');
  const source = typeof urlOrHandler === 'string' ? urlOrHandler : 'the model handler';
  const handler = handlerFor(urlOrHandler, fetchOptions, limits);
  if (typeof handler.load !== 'function') throw new AttentionError('IO', `${source}: this handler cannot load`);

  // 1. The artifacts.
  let artifacts: tf.io.ModelArtifacts;
  try {
    artifacts = await handler.load();
  } catch (e) {
    if (e instanceof AttentionError) throw e;
    throw new AttentionError('IO', `${source}: cannot read the model: ${brief(e)}`);
  }
  if (artifacts == null || artifacts.modelTopology == null) {
    throw new AttentionError('IO', `${source}: the model has no modelTopology`);
  }
  if (artifacts.modelTopology instanceof ArrayBuffer) {
    throw new AttentionError('IO', `${source}: this is a graph model (a GraphDef); load it with tf.loadGraphModel`);
  }

  // 2. The topology tfjs-layers reads.
  const {topology, naming} = rewriteTopology(artifacts.modelTopology, source);
  checkWeightBytes(artifacts, source, limits);
  const seen = new Set<string>();
  for (const spec of artifacts.weightSpecs ?? []) {
    if (seen.has(spec.name)) throw new AttentionError('IO', `${source}: the manifest lists the weight '${spec.name}' twice`);
    seen.add(spec.name);
  }
  // 3. The stored weights matched, by name, dtype and shape, to the weights the config
  //    builds, found without allocating them (and refused over maxBytes).
  const specs = artifacts.weightSpecs ?? [];
  let plan: ModelPlan;
  try {
    plan = await planModel(topology);
  } catch (e) {
    if (e instanceof AttentionError && e.code !== 'INVALID_CONFIG') throw e;
    throw new AttentionError('IO', `${source}: tfjs-layers cannot build the rewritten model: ${brief(e)}`);
  }
  let names: Map<string, string>; // stored name -> model weight
  try {
    checkPlan(plan, limits.maxBytes, source, limits.raise);
    names = matchWeights(plan.model, specs, source, naming);
  } finally {
    plan.model.dispose();
  }

  // 4. The model, its weights loaded by tfjs under the model's own names (tfjs then skips
  //    the random init it would overwrite).
  const renamed = specs.map((s) => ({...s, name: names.get(s.name) ?? s.name}));
  try {
    return await tf.loadLayersModel({load: async () => ({modelTopology: topology, weightSpecs: renamed,
      weightData: artifacts.weightData})}, {strict: true});
  } catch (e) {
    if (e instanceof AttentionError) throw e;
    throw new AttentionError('IO', `${source}: tfjs-layers cannot load the rewritten model: ${brief(e)}`);
  }
}
