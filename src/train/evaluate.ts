/**
 * Evaluation of a model on a task: token and sequence accuracy and the loss, on a stream of
 * batches of its own (seed + EVAL_SEED_OFFSET), apart from the training stream.
 */
import * as tf from '@tensorflow/tfjs';
import {withAttentionMods} from '../layers/flex_layer';
import {documentMask} from '../ops/flex_mods';
import {maskedLoss} from './losses';
import {Split, Task, TaskBatch} from './task_base';

/** Evaluation batches come from this offset of the seed, apart from the training stream. */
export const EVAL_SEED_OFFSET = 1_000_003;

/**
 * The batch as `model` takes it: rows shorter than a model of fixed length (a learned position
 * table) padded at the end with unscored positions, which a causal model's real positions never
 * see. Other batches as they are.
 */
export function fitBatch(batch: TaskBatch, model: tf.LayersModel): TaskBatch {
  const L = model.inputs[0].shape[1];
  if (typeof L !== 'number' || L <= batch.L || batch.edges != null || batch.documents != null) return batch;
  const pad = <A extends Int32Array | Float32Array>(x: A, make: (n: number) => A): A => {
    const out = make(batch.n * L);
    for (let r = 0; r < batch.n; r++) out.set(x.subarray(r * batch.L, (r + 1) * batch.L), r * L);
    return out;
  };
  return {...batch, L, inputs: pad(batch.inputs, (n) => new Int32Array(n)),
    targets: pad(batch.targets, (n) => new Int32Array(n)), weights: pad(batch.weights, (n) => new Float32Array(n))};
}

/**
 * f() with the batch's documents (packed rows) as a document mask on every attention layer
 * the model calls (withAttentionMods), or f() for a batch without them.
 */
export function withDocuments<T>(batch: TaskBatch, f: () => T): T {
  if (batch.documents == null) return f();
  const ids = tf.tensor2d(batch.documents, [batch.n, batch.L], 'int32');
  try {
    return withAttentionMods({maskMod: documentMask(ids)}, f);
  } finally {
    ids.dispose(); // the block masks keep what the backward needs
  }
}

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
    const batch = fitBatch(task.batch(batchSize, seed + EVAL_SEED_OFFSET, b, split), model);
    const [argMax, lossTensor] = tf.tidy(() => {
      const probs = withDocuments(batch, () => model.predict(batchInputs(batch)) as tf.Tensor);
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
