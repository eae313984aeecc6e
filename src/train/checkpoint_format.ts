/**
 * The checkpoint format: a model folder (model.json + weights.bin, the standard tfjs
 * layout) with, beside the weights,
 *   optimizer.json + .bin      Adam's state (tf.io weight specs and their bytes)
 *   training.json              the training record (record.ts)
 * named in a top-level `checkpoint` field of model.json that tfjs readers ignore, so that
 * weights, Adam's state and the step always come from the same save. A folder whose
 * model.json has no `checkpoint` field (an earlier version's, e.g. models/*) keeps them
 * under these canonical names.
 *
 * Loading this module describes the checkpoint's files to io/folder_files.ts, so that every
 * save into a folder (a checkpoint's, or a plain model's through fileSystem) and every
 * recovery counts them as the current model.json's and never deletes them.
 */
import {modelFolder, readJsonInFolder} from '../io/confined';
import {CompanionFiles, describeCompanions, isPlainName, weightsPaths} from '../io/folder_files';
import {isTrainingRecord} from './record';

export const TRAINING_JSON = 'training.json';
export const OPTIMIZER_JSON = 'optimizer.json';
export const OPTIMIZER_BIN = 'optimizer.bin';
/** The names a legacy checkpoint (model.json without a `checkpoint` field) keeps beside its weights. */
export const LEGACY_CHECKPOINT_FILES = [TRAINING_JSON, OPTIMIZER_JSON, OPTIMIZER_BIN] as const;

/** The `checkpoint` field of a checkpoint's model.json: the checkpoint's own files. tfjs readers ignore it. */
export interface CheckpointField {
  format: 1;
  /** Optimizer steps done, as in training.json and the optimizer's `iter`. */
  step: number;
  training: string;
  optimizer: {specs: string; weights: string} | null;
}

/** The `checkpoint` field of a parsed model.json, or null when it has none (a plain model, or a legacy checkpoint). */
export function checkpointField(json: unknown): CheckpointField | null {
  const field = (json as {checkpoint?: unknown} | null)?.checkpoint as CheckpointField | undefined;
  return field != null && typeof field === 'object' ? field : null;
}

/** The checkpoint files named in a `checkpoint` field, plain names only. */
function checkpointFiles(field: CheckpointField): string[] {
  return [field.training, field.optimizer?.specs, field.optimizer?.weights].filter(isPlainName);
}

/**
 * The files a model.json accounts for beside its weights: its checkpoint's, or for a
 * model.json without the field the canonical names (a legacy checkpoint's, which a
 * checkpoint save replaces; for any other model.json, sparing them keeps only the user's).
 */
export const CHECKPOINT_FILES: CompanionFiles = {
  names: LEGACY_CHECKPOINT_FILES,
  listedBy(json: object): readonly string[] {
    const field = checkpointField(json);
    return field != null ? checkpointFiles(field) : LEGACY_CHECKPOINT_FILES;
  },
};

describeCompanions(CHECKPOINT_FILES);

/** The model.json `checkpoint` field of a save, given the name each canonical name ended up with. */
export function checkpointFieldFor(names: Record<string, string>, step: number,
    withOptimizer: boolean): CheckpointField {
  return {format: 1, step, training: names[TRAINING_JSON],
    optimizer: withOptimizer ? {specs: names[OPTIMIZER_JSON], weights: names[OPTIMIZER_BIN]} : null};
}

/** The old checkpoint's files a save into `dir` replaces: those its model.json names, or a legacy folder's. */
export function replacedFiles(dir: string, old: object | null): string[] {
  if (old == null) return [];
  const field = checkpointField(old);
  if (field != null) return [...weightsPaths(old), ...checkpointFiles(field)];
  // A legacy checkpoint: its training.json counts as ours only when it parses as our record.
  let ours = false;
  try {
    ours = isTrainingRecord(readJsonInFolder(modelFolder(dir), TRAINING_JSON, TRAINING_JSON));
  } catch {
    ours = false; // missing, unreadable, not JSON, or not a file inside the folder: the user's
  }
  return [...weightsPaths(old), ...(ours ? LEGACY_CHECKPOINT_FILES : [])];
}
