/**
 * Evaluation of a model on a task: token and sequence accuracy and the loss, on a stream of
 * batches of its own (seed + EVAL_SEED_OFFSET), apart from the training stream.
 */
import * as tf from '@tensorflow/tfjs';
import {maskedLoss} from './losses';
import {Split, Task, TaskBatch} from './task_base';

/** Evaluation batches come from this offset of the seed, apart from the training stream. */
export const EVAL_SEED_OFFSET = 1_000_003;

/** The model's inputs for a batch: tokens [n, L] int32, and a graph task's edges [n, E, 2] int32. */
export function batchInputs(batch: TaskBatch): tf.Tensor | tf.Tensor[] {
  const tokens = tf.tensor2d(batch.inputs, [batch.n, batch.L], 'int32');
  if (batch.edges == null) return tokens;
  return [tokens, tf.tensor3d(batch.edges, [batch.n, batch.E as number, 2], 'int32')];
}

/**
 * Token and sequence accuracy and loss of `model` on `batches` batches of the evaluation
 * stream (seed + EVAL_SEED_OFFSET) of `split`, by default 'validation'.
 */
export async function evaluate(model: tf.LayersModel, task: Task, seed: number, batchSize: number, batches: number,
                               split: Split = 'validation'): Promise<{tokenAccuracy: number; sequenceAccuracy: number; loss: number}> {
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
  return {tokenAccuracy: right / scored, sequenceAccuracy: sequencesRight / (batches * batchSize),
    loss: lossSum / batches};
}
