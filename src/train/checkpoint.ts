/**
 * Training checkpoints: one folder with
 *   model.json + weights.bin   the model, in the standard tfjs layout (file:// router)
 *   optimizer.json + .bin      Adam's state (tf.io weight specs and their bytes)
 *   training.json              the training record: every option, the task, the seed,
 *                              the step, the metrics history and the package version
 * written through `saveFolder` (io/folder.ts): model.json is the one commit point and names
 * the checkpoint's own files in a top-level `checkpoint` field that tfjs readers ignore,
 * so weights, Adam's state and the step always come from the same save, whatever instant a
 * crash strikes. Every other file in the folder is kept. A folder whose model.json has no
 * `checkpoint` field (an earlier version's, e.g. models/*) is read from the canonical names.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../errors';
import {fromModelJSON, modelJSONFor, readModelJSONFile, weightBytes} from '../io/file_system';
import {registerAttentionLayers} from '../register';
import {assertNode, node} from '../runtime';
import {
  checkFolderTarget, CheckpointField, checkpointField, checkpointFiles, isPlainName, LEGACY_CHECKPOINT_FILES,
  MODEL_JSON, saveFolder, weightsPaths,
} from '../io/folder';
import type {TransformerOptions} from './model';
import type {GraphNetworkOptions} from './graph_task';
import type {Metrics, TrainOptions} from './trainer';

export interface TrainingRecord {
  format: 1;
  packageVersion: string;
  task: {name: string; [option: string]: unknown};
  /** The model's options: a transformer's, or for the graph task a graph network's (attention 'graph'). */
  model: Required<TransformerOptions> | Required<GraphNetworkOptions>;
  options: TrainOptions;
  /** Optimizer steps done. */
  step: number;
  history: Metrics[];
  trainingSeconds: number;
  parameters: number;
  /** False while a run is under way (a checkpoint to resume), true when it ended. */
  finished: boolean;
}

export interface Checkpoint {
  model: tf.LayersModel;
  optimizerWeights: {name: string; tensor: tf.Tensor}[];
  record: TrainingRecord;
}

const WEIGHTS_BIN = 'weights.bin';
const [TRAINING_JSON, OPTIMIZER_JSON, OPTIMIZER_BIN] = LEGACY_CHECKPOINT_FILES;

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}

/** True when `r` has every field of a TrainingRecord that readers use. */
function isTrainingRecord(r: unknown): r is TrainingRecord {
  const x = r as TrainingRecord | null;
  return x != null && typeof x === 'object' && x.format === 1 && typeof x.step === 'number' &&
    typeof x.trainingSeconds === 'number' && x.model != null && typeof x.model.seqLength === 'number' &&
    typeof x.model.vocabSize === 'number' && x.options != null && typeof x.options.task === 'string' &&
    x.task != null && typeof x.task.name === 'string' && Array.isArray(x.history);
}

/** The old checkpoint's files a checkpoint save replaces: those its model.json names, or a legacy folder's. */
function replacedFiles(dir: string, old: object | null): string[] {
  if (old == null) return [];
  const field = checkpointField(old);
  if (field != null) return [...weightsPaths(old), ...checkpointFiles(field)];
  // A legacy checkpoint: its training.json counts as ours only when it parses as our record.
  const {fs, path} = node();
  let ours = false;
  try {
    ours = isTrainingRecord(JSON.parse(fs.readFileSync(path.join(dir, TRAINING_JSON), 'utf8')));
  } catch {
    ours = false;
  }
  return [...weightsPaths(old), ...(ours ? LEGACY_CHECKPOINT_FILES : [])];
}

/**
 * Refuses an output folder that cannot be one (an existing file, or under one), so that
 * training stops before its first step rather than at its first save.
 * @throws AttentionError('IO') "cannot write checkpoint '<dir>': it exists and is not a directory".
 */
export function checkCheckpointFolder(dir: string): void {
  checkFolderTarget(dir, `cannot write checkpoint '${dir}'`);
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
    throw new AttentionError('IO', `cannot write checkpoint '${dir}': ${firstLine(e)}`);
  }
  // 2. One atomic save; model.json names the checkpoint's files and replaces the old checkpoint's.
  await saveFolder(abs, {
    files,
    modelJSON: (names) => {
      const checkpoint: CheckpointField = {format: 1, step: record.step, training: names[TRAINING_JSON],
        optimizer: optimizer != null ? {specs: names[OPTIMIZER_JSON], weights: names[OPTIMIZER_BIN]} : null};
      return JSON.stringify({...modelJSONFor(artifacts!, names[WEIGHTS_BIN]), checkpoint});
    },
    replaces: (old) => replacedFiles(abs, old),
    errorPrefix: `cannot write checkpoint '${dir}'`,
  });
}

/** Where a model folder's files are: model.json, parsed once, and the checkpoint's names. */
interface Folder {
  dir: string;
  jsonPath: string;
  /** null: the folder has no model.json (a record may still be read from training.json). */
  json: tf.io.ModelJSON | null;
  training: string;
  /** null: saved without Adam's state. */
  optimizer: {specs: string; weights: string} | null;
  /** The step the `checkpoint` field records; null for a legacy folder. */
  step: number | null;
}

/** Reads dir/model.json (once) and the names of its checkpoint files. Throws AttentionError('IO'). */
function readFolder(dir: string, needModel: boolean): Folder {
  const {fs, path} = node();
  const jsonPath = path.join(path.resolve(dir), MODEL_JSON);
  const legacy = {training: TRAINING_JSON, optimizer: {specs: OPTIMIZER_JSON, weights: OPTIMIZER_BIN}};
  if (!needModel && !fs.existsSync(jsonPath)) return {dir, jsonPath, json: null, ...legacy, step: null};
  const json = readModelJSONFile(jsonPath);
  const field = checkpointField(json);
  if (field == null) {
    const optimizer = fs.existsSync(path.join(dir, OPTIMIZER_JSON)) ? legacy.optimizer : null;
    return {dir, jsonPath, json, training: TRAINING_JSON, optimizer, step: null};
  }
  const names = [field.training, ...(field.optimizer != null ? [field.optimizer.specs, field.optimizer.weights] : [])];
  if (field.format !== 1 || !names.every(isPlainName)) {
    throw new AttentionError('IO', `cannot load the model in '${dir}': corrupt checkpoint field in model.json`);
  }
  return {dir, jsonPath, json, training: field.training, optimizer: field.optimizer, step: field.step};
}

function recordOf(folder: Folder): TrainingRecord {
  const {fs, path} = node();
  const {dir, training} = folder;
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, training), 'utf8');
  } catch (e) {
    throw new AttentionError('IO', `no ${training} in '${dir}' (${(e as NodeJS.ErrnoException).code ?? 'unreadable'}): ` +
      'is it a folder written by tfjs-attention train?');
  }
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (e) {
    throw new AttentionError('IO', `corrupt ${training} in '${dir}': ${firstLine(e)}`);
  }
  if (!isTrainingRecord(record)) throw new AttentionError('IO', `corrupt ${training} in '${dir}': missing fields`);
  if (folder.step != null && folder.step !== record.step) {
    throw new AttentionError('IO', `corrupt checkpoint in '${dir}': model.json records step ${folder.step} but ` +
      `${training} step ${record.step} (files from different saves?)`);
  }
  return record;
}

async function modelOf(folder: Folder): Promise<tf.LayersModel> {
  const {dir, json, jsonPath} = folder;
  try {
    const manifest = json!.weightsManifest as unknown;
    if (!Array.isArray(manifest) || !manifest.every((g) => Array.isArray(g?.paths) && Array.isArray(g?.weights))) {
      throw new Error('weightsManifest is not a list of {paths, weights}');
    }
    const outside = manifest.flatMap((g) => g.paths).find((p: unknown) => !isPlainName(p));
    if (outside !== undefined) throw new Error(`weights file ${JSON.stringify(outside)} is not a file in the folder`);
    registerAttentionLayers(); // kept in a bundle that uses only some of the classes
    return await tf.loadLayersModel(fromModelJSON(json!, jsonPath));
  } catch (e) {
    if (e instanceof AttentionError && e.code === 'IO') throw e; // already names the file and the fault
    throw new AttentionError('IO', `cannot load the model in '${dir}': ${firstLine(e)}`);
  }
}

/** The training record of the model folder `dir` (the training.json its model.json names). Throws AttentionError('IO'). */
export function readTrainingRecord(dir: string): TrainingRecord {
  assertNode('readTrainingRecord(dir)', "in a browser, a model's record is not stored with it");
  return recordOf(readFolder(dir, false));
}

/** The model of folder `dir` (model.json and the weights it lists). Throws AttentionError('IO'). */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  assertNode('loadModel(dir)', "in a browser, load with tf.loadLayersModel(url) or tf.loadLayersModel('indexeddb://NAME')");
  return modelOf(readFolder(dir, true));
}

/** Everything a resumed run needs, from one read of model.json. Throws AttentionError('IO') for a missing or corrupt folder. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  assertNode('loadCheckpoint(dir)', 'in a browser, train() without outDir and save with model.save(\'indexeddb://NAME\')');
  const {fs, path} = node();
  const folder = readFolder(dir, true);
  const record = recordOf(folder);
  const model = await modelOf(folder);
  if (folder.optimizer == null) {
    model.dispose();
    throw new AttentionError('IO', `'${dir}' holds no optimizer state (saved without it), so it cannot be resumed`);
  }
  try {
    const {specs} = JSON.parse(fs.readFileSync(path.join(dir, folder.optimizer.specs), 'utf8'));
    const bytes = fs.readFileSync(path.join(dir, folder.optimizer.weights));
    const map = tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), specs);
    const optimizerWeights = (specs as tf.io.WeightsManifestEntry[]).map((s) => ({name: s.name, tensor: map[s.name]}));
    return {model, optimizerWeights, record};
  } catch (e) {
    model.dispose();
    throw new AttentionError('IO', `cannot read the optimizer state in '${dir}': ${firstLine(e)}`);
  }
}
