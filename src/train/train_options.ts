/**
 * The options of a training run (train()): their names and defaults, their checks, the
 * learning-rate schedule they set, and the form a training record stores them in (and a
 * resumed run reads them back from).
 */
import {AttentionError, show} from '../core/errors';
import {assertNonNegativeInt, assertPositiveInt, assertPositiveNumber} from '../core/validate';
import type {GraphNetworkOptions} from './graph_network';
import type {NBodyNetworkOptions} from './nbody_network';
import type {TransformerOptions} from './model';
import {AnyTaskOptions, Task, TEXT_TASK} from './tasks';

export interface TrainOptions {
  /**
   * Task name (ALL_TASK_NAMES: a toy task or 'text') and its options (see makeTask). The
   * training record stores a text task's options with its vocabulary, never the text: a
   * run on an inline text is resumed by passing the same taskOptions.text again.
   */
  task: string;
  taskOptions?: AnyTaskOptions;
  /**
   * The model, less what the task fixes (vocabSize, seqLength, and a graph task's
   * edgesPerExample): a transformer's options, for the graph task buildGraphNetwork's, for
   * the n-body task buildNBodyNetwork's.
   */
  model: Omit<TransformerOptions, 'vocabSize' | 'seqLength' | 'seed'> |
    Omit<GraphNetworkOptions, 'vocabSize' | 'seqLength' | 'seed' | 'edgesPerExample'> |
    Omit<NBodyNetworkOptions, 'seqLength' | 'seed'>;
  /** Seed of the weights and the data. Default 0. */
  seed?: number;
  /** Optimizer steps at most. Default 1000. */
  steps?: number;
  /** Examples per step. Default 32. */
  batchSize?: number;
  /** Peak learning rate. Default 3e-3. */
  learningRate?: number;
  /** Steps of linear warm-up from 0 to the peak. Default 50. */
  warmupSteps?: number;
  /** The cosine decay ends at learningRate * minLearningRateRatio on the last step. Default 0.1. */
  minLearningRateRatio?: number;
  /** Clip gradients to this global norm (0 = no clipping). Default 1. */
  clipNorm?: number;
  /** Evaluate every this many steps (and at the end). Default 50. */
  evalEvery?: number;
  /** Batches of batchSize in each evaluation. Default 4. */
  evalBatches?: number;
  /** Stop once evaluation token accuracy reaches this (1.01 = never). Default 1.01. */
  targetAccuracy?: number;
  /** Folder of the checkpoint; none is written when absent. */
  outDir?: string;
  /** Also checkpoint every this many steps (0 = only at the end). Default 0. */
  checkpointEvery?: number;
  /** Stop after this step without finishing (simulates a crash; for tests). */
  stopAfter?: number;
  /** Save Adam's state with the final checkpoint, so the run can be resumed. Default true. */
  saveOptimizerState?: boolean;
}

/** An evaluation during training: the loss (the n-body task: the MSE), and a token task's accuracies. */
export interface Metrics {
  step: number;
  loss: number;
  tokenAccuracy?: number;
  sequenceAccuracy?: number;
}

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  learningRate: number;
  /** Positions of the step's batch (n x L, padding included) per second. */
  tokensPerSecond: number;
  /** Scored positions (weight 1: real tokens with a target) per second; below tokensPerSecond for padded batches. */
  scoredTokensPerSecond: number;
}

/** Learning rate of step s (0-based): linear warm-up, then cosine decay to min ratio. */
export function learningRateAt(s: number, o: Required<Pick<TrainOptions, 'learningRate' | 'warmupSteps' |
    'minLearningRateRatio' | 'steps'>>): number {
  if (s < o.warmupSteps) return o.learningRate * (s + 1) / o.warmupSteps;
  const span = Math.max(1, o.steps - o.warmupSteps);
  const progress = Math.min(1, (s - o.warmupSteps) / span);
  const floor = o.learningRate * o.minLearningRateRatio;
  return floor + (o.learningRate - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** The option names of train(). */
export const TRAIN_OPTIONS = [
  'task', 'taskOptions', 'model', 'seed', 'steps', 'batchSize', 'learningRate', 'warmupSteps', 'minLearningRateRatio',
  'clipNorm', 'evalEvery', 'evalBatches', 'targetAccuracy', 'outDir', 'checkpointEvery', 'stopAfter', 'saveOptimizerState',
] as const;

/** Every option with its default. */
export function trainDefaults(o: TrainOptions): Required<TrainOptions> {
  return {
    task: o.task, taskOptions: o.taskOptions ?? {}, model: o.model, seed: o.seed ?? 0, steps: o.steps ?? 1000,
    batchSize: o.batchSize ?? 32, learningRate: o.learningRate ?? 3e-3, warmupSteps: o.warmupSteps ?? 50,
    minLearningRateRatio: o.minLearningRateRatio ?? 0.1, clipNorm: o.clipNorm ?? 1, evalEvery: o.evalEvery ?? 50,
    evalBatches: o.evalBatches ?? 4, targetAccuracy: o.targetAccuracy ?? 1.01, outDir: o.outDir ?? '',
    checkpointEvery: o.checkpointEvery ?? 0, stopAfter: o.stopAfter ?? Infinity,
    saveOptimizerState: o.saveOptimizerState ?? true,
  };
}

/** Throws INVALID_CONFIG for an option out of its range. */
export function checkTrainOptions(o: Required<TrainOptions>): void {
  for (const key of ['steps', 'batchSize', 'evalEvery', 'evalBatches'] as const) assertPositiveInt(key, o[key]);
  for (const key of ['warmupSteps', 'checkpointEvery'] as const) assertNonNegativeInt(key, o[key]);
  assertPositiveNumber('learningRate', o.learningRate);
  if (!(o.minLearningRateRatio >= 0 && o.minLearningRateRatio <= 1)) {
    throw new AttentionError('INVALID_CONFIG', `minLearningRateRatio must be in [0, 1], received ${show(o.minLearningRateRatio)}`);
  }
  if (!(o.clipNorm >= 0)) throw new AttentionError('INVALID_CONFIG', `clipNorm must be >= 0, received ${show(o.clipNorm)}`);
  if (!Number.isInteger(o.seed)) throw new AttentionError('INVALID_CONFIG', `seed must be an integer, received ${show(o.seed)}`);
}

/** What a record stores of the options: a text task's filled-in options (never the text), not the caller's. */
export function recordedOptions(o: Required<TrainOptions>, task: Task): TrainOptions {
  const taskOptions = task.name === TEXT_TASK ? task.options : o.taskOptions;
  return {...o, taskOptions, stopAfter: undefined} as unknown as TrainOptions;
}

/**
 * The stored options of a run to resume. A run on an inline text stored `text: null`: the
 * caller's taskOptions.text stands in for it (makeTask refuses the null when none is given).
 */
export function resumedOptions(stored: TrainOptions, options: TrainOptions): Required<TrainOptions> {
  let taskOptions = stored.taskOptions;
  if (stored.task === TEXT_TASK && taskOptions?.text === null) {
    taskOptions = {...taskOptions, text: options.taskOptions?.text ?? null};
  }
  return trainDefaults({...stored, taskOptions, steps: options.steps ?? stored.steps,
    outDir: options.outDir ?? stored.outDir, stopAfter: options.stopAfter});
}
