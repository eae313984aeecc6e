/**
 * The training loop: batches from a task (a toy task, the text task or the graph task, see
 * makeTask) for a model of the task's family (families.ts), Adam with linear warm-up and
 * cosine decay (train_options.ts), gradient clipping by global norm, periodic evaluation
 * (evaluate.ts), early stop at a target accuracy, and checkpoints that a later run can
 * resume from with the same result as an uninterrupted run of the same seed.
 *
 * Determinism: batch s of training is task.batch(batchSize, seed, s, 'train') and evaluation
 * uses its own stream (seed + EVAL_SEED_OFFSET) of the 'validation' split (the held-out end
 * of a text; a toy task's one stream), so a resumed run sees the same data;
 * the checkpoint holds the weights and Adam's state. Dropout, when enabled, draws fresh
 * random numbers (an unseeded mask per step), so only runs without dropout resume exactly.
 */
import * as tf from '@tensorflow/tfjs';
import {assertNode} from '../core/runtime';
import {VERSION} from '../core/version';
import {checkArgNames} from '../core/validate';
import {fusedAdam} from './adam';
import {Checkpoint, checkCheckpointFolder, loadCheckpoint, ModelLoadOptions, saveCheckpoint} from './checkpoint';
import {familyOfTask} from './families';
import {TrainingRecord} from './record';
import {makeTask, Task} from './tasks';
import {
  checkTrainOptions, learningRateAt, Metrics, recordedOptions, resumedOptions, StepInfo, TRAIN_OPTIONS, trainDefaults,
  TrainOptions,
} from './train_options';

export interface TrainCallbacks {
  onStep?(info: StepInfo): void;
  onEval?(metrics: Metrics): void;
}

export interface TrainResult {
  model: tf.LayersModel;
  record: TrainingRecord;
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
  const normTensor = tf.tidy(() =>
    tf.sqrt(names.map((n) => tf.sum(tf.square(grads[n]))).reduce((a, b) => tf.add(a, b))));
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

/** A checkpoint to resume from, with loadCheckpoint's limits (ModelLoadOptions). */
export interface ResumeFrom extends ModelLoadOptions {
  dir: string;
}

/**
 * Trains a model of the task's family (a transformer, or a graph network for the graph
 * task) on a task (or goes on from the checkpoint in `resumeFrom`) and returns the model
 * and the training record. With outDir, checkpoints go there (a folder, created if
 * missing, whose other files are kept; an existing file there is refused with
 * AttentionError('IO') before the first step).
 */
export async function train(options: TrainOptions, callbacks: TrainCallbacks = {},
                            resumeFrom?: string | ResumeFrom): Promise<TrainResult> {
  checkArgNames('train', options, TRAIN_OPTIONS);
  const family = familyOfTask(options?.task);
  const modelNames = family.optionNames.filter((k) => !family.fixedByTask.includes(k));
  checkArgNames('train options.model', options?.model, modelNames);
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
    checkTrainOptions(o);
    if (o.outDir !== '') {
      assertNode('train({outDir})', 'in a browser, train without outDir and save the model it returns with ' +
        "model.save('indexeddb://NAME')");
      checkCheckpointFolder(o.outDir);
    } // an existing file: refused before any step, never replaced
    task = makeTask(o.task, o.taskOptions);
    familyOfTask(task.name).objective.checkRun?.(task, o.batchSize, o.evalBatches);
  } catch (e) {
    if (checkpoint != null) {
      checkpoint.model.dispose();
      tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor));
    }
    throw e;
  }
  const modelOptions = familyOfTask(task.name).defaults(o.model, task, o.seed);
  const model = checkpoint?.model ?? familyOfTask(task.name).build(modelOptions);
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
  const objective = familyOfTask(task.name).objective;
  const lossOf = objective.lossFor(model, task);
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
      const {value, grads} = tf.tidy(() => tf.variableGrads(() => lossOf(batch), vars));
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
        tokensPerSecond: (batch.n * batch.L) / seconds,
        scoredTokensPerSecond: batch.weights.reduce((a, w) => a + (w > 0 ? 1 : 0), 0) / seconds});
      const last = s + 1 === o.steps;
      if ((s + 1) % o.evalEvery === 0 || last) {
        const metrics = {step: s + 1, ...await objective.evaluate(model, task, o.seed, o.batchSize, o.evalBatches)};
        record.history.push(metrics);
        callbacks.onEval?.(metrics);
        if (metrics.tokenAccuracy != null && metrics.tokenAccuracy >= o.targetAccuracy) stopped = true;
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
