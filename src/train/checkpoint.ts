/**
 * Training checkpoints (checkpoint_format.ts): one folder with model.json + weights.bin,
 * Adam's state and the training record, written through `saveFolder` (io/folder.ts):
 * model.json is the one commit point and names the checkpoint's own files, so weights,
 * Adam's state and the step always come from the same save, whatever instant a crash
 * strikes. Every other file in the folder is kept. A folder whose model.json has no
 * `checkpoint` field (an earlier version's, e.g. models/*) is read from the canonical names.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, brief} from '../core/errors';
import {existsInFolder, ModelFolder, modelFolder, readInFolder, readJsonInFolder} from '../io/confined';
import {FileSystemOptions, fromModelJSON, modelJSONFor, readModelJSON, weightBytes} from '../io/file_system';
import {saveFolder} from '../io/folder';
import {isPlainName, MODEL_JSON, WEIGHTS_BIN} from '../io/folder_files';
import {LoadLimits, loadLimits, MAX_JSON_BYTES} from '../io/load_limits';
import {checkOutputFolder} from '../io/output_folder';
import {manifestBytes} from '../io/specs';
import {checkArgNames} from '../core/validate';
import {registerAttentionLayers} from '../layers/register';
import {assertNode, node} from '../core/runtime';
import {
  checkpointField, checkpointFieldFor, OPTIMIZER_BIN, OPTIMIZER_JSON, replacedFiles, TRAINING_JSON,
} from './checkpoint_format';
import {isTrainingRecord, TrainingRecord} from './record';

export interface Checkpoint {
  model: tf.LayersModel;
  optimizerWeights: {name: string; tensor: tf.Tensor}[];
  record: TrainingRecord;
}

/** Adam's state beyond its two moments: the step count (and room for a few scalars). */
const ADAM_EXTRA_BYTES = 64;

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/**
 * Refuses an output folder that cannot be one (the root of the file system, an existing
 * file or a path under one, a folder this process cannot write), so that training stops
 * before its first step rather than at its first save.
 * @throws AttentionError('IO') "cannot write checkpoint '<dir>': it exists and is not a directory", ...
 */
export function checkCheckpointFolder(dir: string): void {
  checkOutputFolder(dir, `cannot write checkpoint '${dir}'`);
}

/**
 * Writes the checkpoint into `dir`: the model, Adam's state (unless `optimizer` is null: a
 * model to ship, not to resume) and the record. Atomic, and keeps every file of `dir` that
 * is not the old checkpoint's (see io/folder.ts). Leaks no tensor.
 * @throws AttentionError('IO') "cannot write checkpoint '<dir>': <cause>"; `dir` then holds the previous checkpoint.
 */
export async function saveCheckpoint(dir: string, model: tf.LayersModel, optimizer: tf.Optimizer | null,
                                     record: TrainingRecord): Promise<void> {
  assertNode('saveCheckpoint(dir)');
  const abs = node().path.resolve(dir);
  const files: {name: string; data: Uint8Array}[] = [];
  let artifacts: tf.io.ModelArtifacts | null = null;
  try {
    // 1. Every byte first, so that a failure here writes nothing.
    await model.save(tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a)};
    }));
    files.push({name: WEIGHTS_BIN, data: weightBytes(artifacts!.weightData)});
    if (optimizer != null) { // Adam's state is twice the weights
      const state = await optimizer.getWeights();
      // getWeights makes a fresh iterations scalar each call; the moments are the optimizer's own variables.
      const encoded = await tf.io.encodeWeights(state).finally(() =>
        state.forEach((w) => { if (!(w.tensor instanceof tf.Variable)) w.tensor.dispose(); }));
      files.push({name: OPTIMIZER_JSON, data: utf8(JSON.stringify({specs: encoded.specs}, null, 1) + '\n')});
      files.push({name: OPTIMIZER_BIN, data: new Uint8Array(encoded.data)});
    }
    files.push({name: TRAINING_JSON, data: utf8(JSON.stringify(record, null, 2) + '\n')});
  } catch (e) {
    throw new AttentionError('IO', `cannot write checkpoint '${dir}': ${brief(e)}`);
  }
  // 2. One atomic save; model.json names the checkpoint's files and replaces the old checkpoint's.
  await saveFolder(abs, {
    files,
    modelJSON: (names) => JSON.stringify({...modelJSONFor(artifacts!, names[WEIGHTS_BIN]),
      checkpoint: checkpointFieldFor(names, record.step, optimizer != null)}),
    replaces: (old) => replacedFiles(abs, old),
    errorPrefix: `cannot write checkpoint '${dir}'`,
  });
}

/** Options of loadModel and loadCheckpoint: the limits of the read (see fileSystem). */
export type ModelLoadOptions = Pick<FileSystemOptions, 'maxBytes' | 'maxJsonBytes'>;
export const MODEL_LOAD_OPTIONS: readonly string[] = ['maxBytes', 'maxJsonBytes'];

/** Where a model folder's files are: model.json, parsed once, and the checkpoint's names. */
interface Folder {
  dir: string;
  folder: ModelFolder;
  /** null: the folder has no model.json (a record may still be read from training.json). */
  json: tf.io.ModelJSON | null;
  training: string;
  /** null: saved without Adam's state. */
  optimizer: {specs: string; weights: string} | null;
  /** The step the `checkpoint` field records; null for a legacy folder. */
  step: number | null;
}

/** Reads dir/model.json (once, confined) and the names of its checkpoint files. Throws AttentionError('IO'). */
function readFolder(dir: string, needModel: boolean, maxJsonBytes = MAX_JSON_BYTES): Folder {
  const {fs} = node();
  if (!needModel && !fs.existsSync(dir)) {
    throw new AttentionError('IO', `no ${TRAINING_JSON} in '${dir}' (the folder does not exist): is it a folder written ` +
      'by tfjs-attention train?');
  }
  const folder = modelFolder(dir);
  const legacy = {training: TRAINING_JSON, optimizer: {specs: OPTIMIZER_JSON, weights: OPTIMIZER_BIN}};
  if (!needModel && !existsInFolder(folder, MODEL_JSON)) return {dir, folder, json: null, ...legacy, step: null};
  const json = readModelJSON(folder, MODEL_JSON, maxJsonBytes);
  const field = checkpointField(json);
  if (field == null) {
    const optimizer = existsInFolder(folder, OPTIMIZER_JSON) ? legacy.optimizer : null;
    return {dir, folder, json, training: TRAINING_JSON, optimizer, step: null};
  }
  const names = [field.training, ...(field.optimizer != null ? [field.optimizer.specs, field.optimizer.weights] : [])];
  if (field.format !== 1 || !names.every(isPlainName)) {
    throw new AttentionError('IO', `cannot load the model in '${dir}': corrupt checkpoint field in model.json`);
  }
  return {dir, folder, json, training: field.training, optimizer: field.optimizer, step: field.step};
}

function recordOf(folder: Folder): TrainingRecord {
  const {dir, training} = folder;
  if (!existsInFolder(folder.folder, training)) {
    throw new AttentionError('IO', `no ${training} in '${dir}': is it a folder written by tfjs-attention train?`);
  }
  const record = readJsonInFolder(folder.folder, training, training);
  if (!isTrainingRecord(record)) throw new AttentionError('IO', `corrupt ${training} in '${dir}': missing fields`);
  if (folder.step != null && folder.step !== record.step) {
    throw new AttentionError('IO', `corrupt checkpoint in '${dir}': model.json records step ${folder.step} but ` +
      `${training} step ${record.step} (files from different saves?)`);
  }
  return record;
}

async function modelOf(folder: Folder, limits: LoadLimits): Promise<tf.LayersModel> {
  const {dir, json} = folder;
  try {
    registerAttentionLayers(); // kept in a bundle that uses only some of the classes
    return await tf.loadLayersModel(fromModelJSON(json!, folder.folder, MODEL_JSON, limits));
  } catch (e) {
    if (e instanceof AttentionError && e.code === 'IO') throw e; // already names the file and the fault
    throw new AttentionError('IO', `cannot load the model in '${dir}': ${brief(e)}`);
  }
}

/**
 * The training record of the model folder `dir` (the training.json its model.json names).
 * Throws AttentionError('IO').
 */
export function readTrainingRecord(dir: string): TrainingRecord {
  assertNode('readTrainingRecord(dir)', "in a browser, a model's record is not stored with it");
  return recordOf(readFolder(dir, false));
}

/** The limits of a loader's options, checked. */
function limitsOf(options: ModelLoadOptions, who: string): LoadLimits {
  checkArgNames(who, options, MODEL_LOAD_OPTIONS);
  return loadLimits(options ?? {}, who);
}

/**
 * The model of folder `dir` (model.json and the weights it lists), read confined to the
 * folder and refused above `options.maxBytes` (default 2 GiB) before anything is
 * allocated. Throws AttentionError('IO').
 */
export async function loadModel(dir: string, options: ModelLoadOptions = {}): Promise<tf.LayersModel> {
  assertNode('loadModel(dir)', "in a browser, load with tf.loadLayersModel(url) or tf.loadLayersModel('indexeddb://NAME')");
  const limits = limitsOf(options, 'loadModel');
  return modelOf(readFolder(dir, true, limits.maxJsonBytes), limits);
}

/**
 * Everything a resumed run needs, from one read of model.json, with loadModel's checks.
 * Throws AttentionError('IO') for a missing or corrupt folder.
 */
export async function loadCheckpoint(dir: string, options: ModelLoadOptions = {}): Promise<Checkpoint> {
  assertNode('loadCheckpoint(dir)', 'in a browser, train() without outDir and save with model.save(\'indexeddb://NAME\')');
  const limits = limitsOf(options, 'loadCheckpoint');
  const folder = readFolder(dir, true, limits.maxJsonBytes);
  const record = recordOf(folder);
  const model = await modelOf(folder, limits);
  if (folder.optimizer == null) {
    model.dispose();
    throw new AttentionError('IO', `'${dir}' holds no optimizer state (saved without it), so it cannot be resumed`);
  }
  try {
    const {specs} = readJsonInFolder(folder.folder, folder.optimizer.specs, folder.optimizer.specs) as
      {specs: tf.io.WeightsManifestEntry[]};
    if (!Array.isArray(specs)) throw new AttentionError('IO', `corrupt ${folder.optimizer.specs} in '${dir}': no specs`);
    // Adam's state is two moments per weight and a step count: sized before a byte is read.
    const expected = manifestBytes(specs);
    const bytes = readInFolder(folder.folder, folder.optimizer.weights, 'optimizer state',
      {bytes: Number.isFinite(expected) ? expected : undefined, maxBytes: 2 * limits.maxBytes + ADAM_EXTRA_BYTES,
        raise: limits.raise},
      `${folder.optimizer.specs}`);
    const map = tf.io.decodeWeights(bytes.buffer as ArrayBuffer, specs); // its own buffer, byteOffset 0
    const optimizerWeights = specs.map((s) => ({name: s.name, tensor: map[s.name]}));
    return {model, optimizerWeights, record};
  } catch (e) {
    model.dispose();
    if (e instanceof AttentionError && e.code === 'IO') throw e;
    throw new AttentionError('IO', `cannot read the optimizer state in '${dir}': ${brief(e)}`);
  }
}
