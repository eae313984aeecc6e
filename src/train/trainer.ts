/**
 * The training loop: batches from a task (a toy task, the text task or the graph task, see
 * makeTask; a graph task's model is buildGraphNetwork's and takes [tokens, edges]), Adam
 * with linear warm-up and cosine decay,
 * gradient clipping by global norm, periodic evaluation (token and sequence accuracy),
 * early stop at a target accuracy, and checkpoints that a later run can resume from with
 * the same result as an uninterrupted run of the same seed.
 *
 * Determinism: batch s of training is task.batch(batchSize, seed, s, 'train') and evaluation
 * uses its own stream (seed + EVAL_SEED_OFFSET) of the 'validation' split (the held-out end
 * of a text; a toy task's one stream), so a resumed run sees the same data;
 * the checkpoint holds the weights and Adam's state. Dropout, when enabled, draws fresh
 * random numbers (an unseeded mask per step), so only runs without dropout resume exactly.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertNode} from '../core/runtime';
import {VERSION} from '../core/version';
import {assertNonNegativeInt, assertPositiveInt, assertPositiveNumber, checkArgNames} from '../core/validate';
import {
  Checkpoint, checkCheckpointFolder, loadCheckpoint, ModelLoadOptions, saveCheckpoint, TrainingRecord,
} from './checkpoint';
import {fusedAdam} from './adam';
import {buildTransformer, TRANSFORMER_OPTIONS, transformerDefaults, TransformerOptions} from './model';
import {AnyTaskOptions, GRAPH_TASK, makeTask, Split, Task, TaskBatch, TEXT_TASK} from './tasks';
import {buildGraphNetwork, GRAPH_NETWORK_OPTIONS, graphNetworkDefaults, GraphNetworkOptions} from './graph_task';

/** Evaluation batches come from this offset of the seed, apart from the training stream. */
export const EVAL_SEED_OFFSET = 1_000_003;

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
   * edgesPerExample): a transformer's options, or for the graph task buildGraphNetwork's.
   */
  model: Omit<TransformerOptions, 'vocabSize' | 'seqLength' | 'seed'> |
    Omit<GraphNetworkOptions, 'vocabSize' | 'seqLength' | 'seed' | 'edgesPerExample'>;
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

export interface Metrics {
  step: number;
  loss: number;
  tokenAccuracy: number;
  sequenceAccuracy: number;
}

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  learningRate: number;
  tokensPerSecond: number;
}

export interface TrainCallbacks {
  onStep?(info: StepInfo): void;
  onEval?(metrics: Metrics): void;
}

export interface TrainResult {
  model: tf.LayersModel;
  record: TrainingRecord;
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
/** The transformer options that the task and the run fix, so options.model does not take them. */
const FIXED_BY_TASK: readonly string[] = ['vocabSize', 'seqLength', 'seed', 'edgesPerExample'];

/** The model's inputs for a batch: tokens [n, L] int32, and a graph task's edges [n, E, 2] int32. */
export function batchInputs(batch: TaskBatch): tf.Tensor | tf.Tensor[] {
  const tokens = tf.tensor2d(batch.inputs, [batch.n, batch.L], 'int32');
  if (batch.edges == null) return tokens;
  return [tokens, tf.tensor3d(batch.edges, [batch.n, batch.E as number, 2], 'int32')];
}

/** The filled-in model options of a run: a transformer's, or a graph network's for a graph task. */
function modelDefaults(model: TrainOptions['model'], task: Task, seed: number)
    : Required<TransformerOptions> | Required<GraphNetworkOptions> {
  const fixed = {vocabSize: task.vocabSize, seqLength: task.seqLength, seed};
  if (task.edgesPerExample != null) {
    return graphNetworkDefaults({...model as GraphNetworkOptions, ...fixed, attention: 'graph',
      edgesPerExample: task.edgesPerExample});
  }
  return transformerDefaults({...model as TransformerOptions, ...fixed});
}

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

function checkOptions(o: Required<TrainOptions>): void {
  for (const key of ['steps', 'batchSize', 'evalEvery', 'evalBatches'] as const) assertPositiveInt(key, o[key]);
  for (const key of ['warmupSteps', 'checkpointEvery'] as const) assertNonNegativeInt(key, o[key]);
  assertPositiveNumber('learningRate', o.learningRate);
  if (!(o.minLearningRateRatio >= 0 && o.minLearningRateRatio <= 1)) {
    throw new AttentionError('INVALID_CONFIG', `minLearningRateRatio must be in [0, 1], received ${show(o.minLearningRateRatio)}`);
  }
  if (!(o.clipNorm >= 0)) throw new AttentionError('INVALID_CONFIG', `clipNorm must be >= 0, received ${show(o.clipNorm)}`);
  if (!Number.isInteger(o.seed)) throw new AttentionError('INVALID_CONFIG', `seed must be an integer, received ${show(o.seed)}`);
}

/**
 * Mean cross-entropy over the scored positions from logits [n, L, V]: logsumexp(z) minus the
 * target's logit, with no log of a softmax (what the trainer minimises; the same value as
 * maskedLoss of softmax(logits), to rounding). Its gradient is one op: per row, softmax(z)
 * minus the target's one-hot, times the row's weight over the sum of the weights.
 */
export function sparseCrossEntropy(logits: tf.Tensor, batch: TaskBatch, V: number): tf.Scalar {
  const N = batch.n * batch.L;
  // Unscored positions (weight 0) may hold any target: any index in range serves.
  const targets = Int32Array.from(batch.targets, (t) => Math.min(V - 1, Math.max(0, t)));
  const total = batch.weights.reduce((a, w) => a + w, 0);
  const scale = Float32Array.from(batch.weights, (w) => w / total); // each position's share of the mean
  // One custom gradient, softmax(z) - onehot(target) per row times its share: tfjs's gradient
  // of the max inside logSumExp compares z with its broadcast row max, a kernel that takes
  // longer than the rest of the loss together on wasm.
  const loss = tf.customGrad(((z: tf.Tensor, save: tf.GradSaveFunc) => {
    const z2 = tf.reshape(z, [N, V]);
    const lse = tf.logSumExp(z2, 1, true);                                            // [N, 1]
    const at = Int32Array.from(targets, (t, i) => i * V + t);
    const picked = tf.gather(tf.reshape(z2, [N * V]), tf.tensor1d(at, 'int32'));    // [N]
    save([z2, lse]);
    return {
      value: tf.sum(tf.mul(tf.sub(tf.reshape(lse, [N]), picked), tf.tensor1d(scale))),
      gradFunc: (dy: tf.Tensor, [sz, slse]: tf.Tensor[]) => tf.tidy(() => {
        const p = tf.exp(tf.sub(sz, slse));                                            // softmax [N, V]
        const dz = tf.sub(p, tf.oneHot(tf.tensor1d(targets, 'int32'), V));
        return tf.reshape(tf.mul(dz, tf.mul(tf.reshape(tf.tensor1d(scale), [N, 1]), dy)), z.shape);
      }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (z: tf.Tensor) => tf.Scalar;
  return loss(logits);
}

/**
 * The logits [..., V] of a model whose output layer is a Dense named 'head' with a softmax
 * (buildTransformer's, the graph networks'): the layers before the head, then the head's
 * kernel and bias without its softmax. Null for any other model (the trainer then takes the
 * loss from the probabilities).
 */
export function logitsOf(model: tf.LayersModel): ((x: tf.Tensor | tf.Tensor[], training: boolean) => tf.Tensor) | null {
  const head = model.layers.find((l) => l.name === 'head');
  if (head == null || model.outputs.length !== 1 || model.outputs[0].sourceLayer !== head) return null;
  const config = head.getConfig();
  if (head.getClassName() !== 'Dense' || config.activation !== 'softmax' || head.inboundNodes.length !== 1) return null;
  const [kernel, bias] = head.trainableWeights;
  if (kernel == null || kernel.shape.length !== 2) return null;
  const trunk = tf.model({inputs: model.inputs, outputs: head.input as tf.SymbolicTensor});
  const [E, V] = kernel.shape as number[];
  return (x, training) => tf.tidy(() => {
    const h = trunk.apply(x, {training}) as tf.Tensor;
    const flat = tf.matMul(tf.reshape(h, [-1, E]), kernel.read());
    const z = bias != null ? tf.add(flat, bias.read()) : flat;
    return tf.reshape(z, [...h.shape.slice(0, -1), V]);
  });
}

/** Mean cross-entropy over the scored positions; probs [n, L, V]. */
export function maskedLoss(probs: tf.Tensor, batch: TaskBatch, V: number): tf.Scalar {
  return tf.tidy(() => {
    const p = tf.reshape(probs, [batch.n * batch.L, V]);
    const picked = tf.sum(tf.mul(p, tf.oneHot(tf.tensor1d(batch.targets, 'int32'), V)), 1); // [n*L]
    const w = tf.tensor1d(batch.weights);
    return tf.div(tf.neg(tf.sum(tf.mul(tf.log(tf.add(picked, 1e-9)), w))), tf.sum(w)) as tf.Scalar;
  });
}

/**
 * Token and sequence accuracy and loss of `model` on `batches` batches of the evaluation
 * stream (seed + EVAL_SEED_OFFSET) of `split`, by default 'validation'.
 */
export async function evaluate(model: tf.LayersModel, task: Task, seed: number, batchSize: number, batches: number,
                               split: Split = 'validation')
    : Promise<{tokenAccuracy: number; sequenceAccuracy: number; loss: number}> {
  let right = 0;
  let scored = 0;
  let sequencesRight = 0;
  let lossSum = 0;
  for (let b = 0; b < batches; b++) {
    const batch = task.batch(batchSize, seed + EVAL_SEED_OFFSET, b, split);
    const [argMax, lossTensor] = tf.tidy(() => {
      const probs = model.predict(batchInputs(batch)) as tf.Tensor;
      return [tf.argMax(probs, -1), maskedLoss(probs, batch, task.vocabSize)];
    });
    // Asynchronous reads only: a synchronous one can crash a webgpu page.
    const [predicted, loss] = await Promise.all([argMax.data(), lossTensor.data()]).finally(() =>
      tf.dispose([argMax, lossTensor]));
    lossSum += loss[0];
    for (let r = 0; r < batch.n; r++) {
      let all = true;
      for (let i = r * batch.L; i < (r + 1) * batch.L; i++) {
        if (batch.weights[i] === 0) continue;
        scored++;
        if (predicted[i] === batch.targets[i]) right++;
        else all = false;
      }
      if (all) sequencesRight++;
    }
  }
  return {tokenAccuracy: right / scored, sequenceAccuracy: sequencesRight / (batches * batchSize), loss: lossSum / batches};
}

/**
 * Adam's bias corrections beta^(t+1) as an uninterrupted run holds them after `steps`
 * steps: one float32 product per step. tfjs' Adam.setWeights recomputes them with `pow`,
 * which rounds differently; the difference is ~1e-7, but Adam divides by sqrt(v), so a
 * weight whose gradient is only rounding noise (the key bias: softmax ignores it) drifts
 * apart. With the same products a resumed run repeats the uninterrupted one exactly.
 */
function restoreBetaPowers(optimizer: tf.AdamOptimizer, steps: number): void {
  const adam = optimizer as unknown as {accBeta1?: tf.Variable; accBeta2?: tf.Variable; beta1: number; beta2: number};
  for (const [acc, beta] of [[adam.accBeta1, adam.beta1], [adam.accBeta2, adam.beta2]] as const) {
    if (!(acc instanceof tf.Variable)) continue; // another tfjs' Adam: keep its own
    tf.tidy(() => {
      let power = tf.scalar(beta);
      for (let s = 0; s < steps; s++) power = tf.mul(power, beta);
      acc.assign(power);
    });
  }
}

/** Scales grads so their global norm is at most clipNorm (0 = unchanged). */
async function clipByGlobalNorm(grads: tf.NamedTensorMap, clipNorm: number): Promise<tf.NamedTensorMap> {
  if (clipNorm <= 0) return grads;
  const names = Object.keys(grads);
  // Added in pairs, not with tf.addN: webgpu's AddN binds every input at once and fails past 8.
  const normTensor = tf.tidy(() => tf.sqrt(names.map((n) => tf.sum(tf.square(grads[n]))).reduce((a, b) => tf.add(a, b))));
  const norm = (await normTensor.data().finally(() => normTensor.dispose()))[0];
  if (!(norm > clipNorm)) return grads;
  const factor = clipNorm / norm;
  const out: tf.NamedTensorMap = {};
  for (const n of names) {
    out[n] = tf.mul(grads[n], factor);
    grads[n].dispose();
  }
  return out;
}

/** What a record stores of the options: a text task's filled-in options (never the text), not the caller's. */
function recordedOptions(o: Required<TrainOptions>, task: Task): TrainOptions {
  const taskOptions = task.name === TEXT_TASK ? task.options : o.taskOptions;
  return {...o, taskOptions, stopAfter: undefined} as unknown as TrainOptions;
}

/**
 * The stored options of a run to resume. A run on an inline text stored `text: null`: the
 * caller's taskOptions.text stands in for it (makeTask refuses the null when none is given).
 */
function resumedOptions(stored: TrainOptions, options: TrainOptions): Required<TrainOptions> {
  let taskOptions = stored.taskOptions;
  if (stored.task === TEXT_TASK && taskOptions?.text === null) {
    taskOptions = {...taskOptions, text: options.taskOptions?.text ?? null};
  }
  return trainDefaults({...stored, taskOptions, steps: options.steps ?? stored.steps,
    outDir: options.outDir ?? stored.outDir, stopAfter: options.stopAfter});
}

/** A checkpoint to resume from, with loadCheckpoint's limits (ModelLoadOptions). */
export interface ResumeFrom extends ModelLoadOptions {
  dir: string;
}

/**
 * Trains a transformer on a task (or goes on from the checkpoint in `resumeFrom`) and
 * returns the model and the training record. With outDir, checkpoints go there (a folder,
 * created if missing, whose other files are kept; an existing file there is refused with
 * AttentionError('IO') before the first step).
 */
export async function train(options: TrainOptions, callbacks: TrainCallbacks = {},
                            resumeFrom?: string | ResumeFrom): Promise<TrainResult> {
  checkArgNames('train', options, TRAIN_OPTIONS);
  const modelNames = options?.task === GRAPH_TASK ? GRAPH_NETWORK_OPTIONS : TRANSFORMER_OPTIONS;
  checkArgNames('train options.model', options?.model, modelNames.filter((k) => !FIXED_BY_TASK.includes(k)));
  let checkpoint: Checkpoint | null = null;
  let o: Required<TrainOptions>;
  if (resumeFrom != null) {
    const {dir, ...limits} = typeof resumeFrom === 'string' ? {dir: resumeFrom} : resumeFrom;
    checkpoint = await loadCheckpoint(dir, limits);
    // The stored options rule; the caller may only change how long and where (and give an inline text again).
    o = resumedOptions(checkpoint.record.options as TrainOptions, options);
  } else {
    o = trainDefaults(options);
  }
  let task: Task;
  try {
    checkOptions(o);
    if (o.outDir !== '') {
      assertNode('train({outDir})', "in a browser, train without outDir and save the model it returns with " +
        "model.save('indexeddb://NAME')");
      checkCheckpointFolder(o.outDir);
    } // an existing file: refused before any step, never replaced
    task = makeTask(o.task, o.taskOptions);
  } catch (e) {
    if (checkpoint != null) {
      checkpoint.model.dispose();
      tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor));
    }
    throw e;
  }
  const modelOptions = modelDefaults(o.model, task, o.seed);
  const model = checkpoint?.model ?? (modelOptions.attention === 'graph'
    ? buildGraphNetwork(modelOptions as Required<GraphNetworkOptions>)
    : buildTransformer(modelOptions as Required<TransformerOptions>));
  const optimizer = fusedAdam(o.learningRate);
  if (checkpoint != null) {
    await optimizer.setWeights(checkpoint.optimizerWeights);
    restoreBetaPowers(optimizer, checkpoint.record.step);
  }
  const record: TrainingRecord = checkpoint?.record ?? {
    format: 1, packageVersion: VERSION, task: {name: task.name, ...task.options}, model: modelOptions,
    options: recordedOptions(o, task), step: 0, history: [], trainingSeconds: 0,
    parameters: model.countParams(), finished: false,
  };
  record.options = recordedOptions(o, task);
  record.finished = false; // a finished run resumed for more steps is under way again
  if (checkpoint != null) tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor));

  const vars = model.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val);
  // The loss from the head's logits where the model has one (no log of a softmax; one op for its gradient).
  const logits = logitsOf(model);
  const started = Date.now() - record.trainingSeconds * 1000;
  const save = async (final = false) => {
    record.trainingSeconds = (Date.now() - started) / 1000;
    const withState = !final || o.saveOptimizerState;
    if (o.outDir !== '') await saveCheckpoint(o.outDir, model, withState ? optimizer : null, record);
  };
  try {
    let stopped = false;
    for (let s = record.step; s < o.steps; s++) {
      const t0 = Date.now();
      const batch = task.batch(o.batchSize, o.seed, s, 'train');
      const learningRate = learningRateAt(s, o);
      // Adam reads its learningRate field on every update; tfjs types it protected.
      (optimizer as unknown as {learningRate: number}).learningRate = learningRate;
      const {value, grads} = tf.tidy(() => {
        const x = batchInputs(batch);
        return tf.variableGrads(() => (logits != null ? sparseCrossEntropy(logits(x, true), batch, task.vocabSize)
          : maskedLoss(model.apply(x, {training: true}) as tf.Tensor, batch, task.vocabSize)), vars);
      });
      let loss: number;
      try {
        // Values are read asynchronously only (a synchronous read can crash a webgpu page).
        const clipped = await clipByGlobalNorm(grads, o.clipNorm);
        tf.tidy(() => optimizer.applyGradients(clipped as unknown as Parameters<typeof optimizer.applyGradients>[0]));
        tf.dispose(clipped);
        loss = (await value.data())[0];
      } finally {
        tf.dispose([value, ...Object.values(grads)]);
      }
      record.step = s + 1;
      const seconds = Math.max(1e-3, (Date.now() - t0) / 1000);
      callbacks.onStep?.({step: s + 1, steps: o.steps, loss, learningRate,
        tokensPerSecond: (batch.n * batch.L) / seconds});
      const last = s + 1 === o.steps;
      if ((s + 1) % o.evalEvery === 0 || last) {
        const m = await evaluate(model, task, o.seed, o.batchSize, o.evalBatches);
        const metrics = {step: s + 1, loss: m.loss, tokenAccuracy: m.tokenAccuracy, sequenceAccuracy: m.sequenceAccuracy};
        record.history.push(metrics);
        callbacks.onEval?.(metrics);
        if (m.tokenAccuracy >= o.targetAccuracy) stopped = true;
      }
      if (stopped || last) break; // before stopAfter: a run that reached its target is finished
      if (s + 1 >= o.stopAfter) {
        await save();
        return {model, record};
      }
      if (o.checkpointEvery > 0 && (s + 1) % o.checkpointEvery === 0) await save();
    }
    record.finished = true;
    await save(true);
    return {model, record};
  } catch (e) {
    model.dispose(); // a failed run gives nothing back; its last checkpoint (if any) is on disk
    throw e;
  } finally {
    optimizer.dispose();
  }
}
