/**
 * Training checkpoints: one folder with
 *   model.json + weights.bin   the model, in the standard tfjs layout (file:// router)
 *   optimizer.json + .bin      Adam's state (tf.io weight specs and their bytes)
 *   training.json              the training record: every option, the task, the seed,
 *                              the step, the metrics history and the package version
 * Written atomically: everything goes into a temporary sibling folder that then replaces
 * the old one, so a crash leaves the previous checkpoint whole (if it strikes between the
 * two renames, under DIR.old-*, where checkpointFolder finds it).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../errors';
import {registerFileRouter} from '../io/file_system';
import type {TransformerOptions} from './model';
import type {Metrics, TrainOptions} from './trainer';

export interface TrainingRecord {
  format: 1;
  packageVersion: string;
  task: {name: string; [option: string]: unknown};
  model: Required<TransformerOptions>;
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

type Fs = typeof import('fs');
type Path = typeof import('path');
function node(): {fs: Fs; path: Path} {
  const req: NodeRequire = typeof require === 'function' ? require : eval('require');
  const [fsName, pathName] = ['fs', 'path'];
  return {fs: req(fsName) as Fs, path: req(pathName) as Path};
}

const TRAINING_JSON = 'training.json';
const OPTIMIZER_JSON = 'optimizer.json';
const OPTIMIZER_BIN = 'optimizer.bin';

/** Writes the checkpoint into `dir`, replacing what was there only once everything is written. */
export async function saveCheckpoint(dir: string, model: tf.LayersModel, optimizer: tf.Optimizer | null,
                                     record: TrainingRecord): Promise<void> {
  const {fs, path} = node();
  const abs = path.resolve(dir);
  registerFileRouter(); // once; a no-op when it (or tfjs-node's) is there
  const tmp = `${abs}.tmp-${process.pid}-${Date.now()}`;
  const old = `${abs}.old-${process.pid}-${Date.now()}`;
  try {
    await model.save(`file://${tmp}`);
    if (optimizer != null) { // null: a model to ship, not to resume (Adam's state is twice the weights)
      const weights = await optimizer.getWeights();
      const {data, specs} = await tf.io.encodeWeights(weights);
      // getWeights makes a fresh iterations scalar each call; the moments are the optimizer's own variables.
      weights.forEach((w) => { if (!(w.tensor instanceof tf.Variable)) w.tensor.dispose(); });
      fs.writeFileSync(path.join(tmp, OPTIMIZER_BIN), Buffer.from(data));
      fs.writeFileSync(path.join(tmp, OPTIMIZER_JSON), JSON.stringify({specs}, null, 1) + '\n');
    }
    fs.writeFileSync(path.join(tmp, TRAINING_JSON), JSON.stringify(record, null, 2) + '\n');
    if (fs.existsSync(abs)) fs.renameSync(abs, old);
    fs.renameSync(tmp, abs);
    fs.rmSync(old, {recursive: true, force: true});
  } catch (e) {
    fs.rmSync(tmp, {recursive: true, force: true});
    if (!fs.existsSync(abs) && fs.existsSync(old)) fs.renameSync(old, abs); // put the previous one back
    if (e instanceof AttentionError) throw e;
    throw new AttentionError('IO', `cannot write checkpoint '${dir}': ${(e as Error).message}`);
  }
}

/**
 * The folder that holds the checkpoint `dir`: `dir` itself, or, when a save was cut off
 * between its two renames (the old folder moved aside, the new one not yet in place),
 * the newest `dir.old-*` sibling it left, which is the previous checkpoint whole.
 */
export function checkpointFolder(dir: string): string {
  const {fs, path} = node();
  const abs = path.resolve(dir);
  if (fs.existsSync(abs)) return dir;
  const parent = path.dirname(abs);
  const prefix = `${path.basename(abs)}.old-`;
  const aside = (fs.existsSync(parent) ? fs.readdirSync(parent) : [])
    .filter((name) => name.startsWith(prefix) && fs.existsSync(path.join(parent, name, TRAINING_JSON)))
    .map((name) => path.join(parent, name))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return aside[0] ?? dir;
}

/** The training record of the model folder `dir` (training.json). Throws AttentionError('IO'). */
export function readTrainingRecord(dir: string): TrainingRecord {
  const {fs, path} = node();
  dir = checkpointFolder(dir);
  const file = path.join(dir, TRAINING_JSON);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new AttentionError('IO', `no training.json in '${dir}' (${(e as NodeJS.ErrnoException).code ?? 'unreadable'}): ` +
      'is it a folder written by tfjs-attention train?');
  }
  try {
    const record = JSON.parse(text) as TrainingRecord;
    if (record.format !== 1 || typeof record.step !== 'number' || record.model == null || record.options == null ||
        typeof record.options.task !== 'string' || record.task == null || !Array.isArray(record.history)) {
      throw new Error('missing fields');
    }
    return record;
  } catch (e) {
    throw new AttentionError('IO', `corrupt training.json in '${dir}': ${(e as Error).message}`);
  }
}

/** The model of folder `dir` (model.json + weights.bin). Throws AttentionError('IO'). */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  const {path} = node();
  registerFileRouter();
  return tf.loadLayersModel(`file://${path.join(path.resolve(checkpointFolder(dir)), 'model.json')}`);
}

/** Everything a resumed run needs. Throws AttentionError('IO') for a missing or corrupt folder. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const {fs, path} = node();
  dir = checkpointFolder(dir);
  const record = readTrainingRecord(dir);
  const model = await loadModel(dir);
  if (!fs.existsSync(path.join(dir, OPTIMIZER_JSON))) {
    model.dispose();
    throw new AttentionError('IO', `'${dir}' holds no optimizer state (saved without it), so it cannot be resumed`);
  }
  try {
    const {specs} = JSON.parse(fs.readFileSync(path.join(dir, OPTIMIZER_JSON), 'utf8'));
    const bytes = fs.readFileSync(path.join(dir, OPTIMIZER_BIN));
    const map = tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), specs);
    const optimizerWeights = (specs as tf.io.WeightsManifestEntry[]).map((s) => ({name: s.name, tensor: map[s.name]}));
    return {model, optimizerWeights, record};
  } catch (e) {
    model.dispose();
    throw new AttentionError('IO', `cannot read the optimizer state in '${dir}': ${(e as Error).message}`);
  }
}
