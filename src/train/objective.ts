/**
 * What a model family is trained to do, as the trainer and `eval` use it: a batch's model
 * inputs, the loss to minimise and the evaluation. Token tasks (the toy, text and graph tasks)
 * predict a token per position (cross-entropy, accuracies); the n-body task regresses
 * positions (mean squared error).
 */
import * as tf from '@tensorflow/tfjs';
import {batchInputs, evaluate, fitBatch, withDocuments} from './evaluate';
import {logitsOf, maskedLoss, sparseCrossEntropy} from './losses';
import {Split, Task, TaskBatch} from './task_base';

/** What an evaluation measured: the loss, and for token tasks the accuracies. */
export interface Evaluation {
  loss: number;
  tokenAccuracy?: number;
  sequenceAccuracy?: number;
}

export interface Objective {
  /** The model's inputs for a batch. */
  inputs(batch: TaskBatch): tf.Tensor | tf.Tensor[];
  /** The training loss of `model` on a batch (called inside tf.variableGrads). */
  lossFor(model: tf.LayersModel, task: Task): (batch: TaskBatch) => tf.Scalar;
  /** Throws INVALID_CONFIG, before any step, for batches the task cannot give. */
  checkRun?(task: Task, batchSize: number, evalBatches: number): void;
  /** Evaluates on `batches` batches of `batchSize` from `split` (default 'validation'). */
  evaluate(model: tf.LayersModel, task: Task, seed: number, batchSize: number, batches: number,
           split?: Split): Promise<Evaluation>;
}

/** Token tasks: the loss from the head's logits where the model has one (no log of a softmax), accuracies. */
export const TOKEN_OBJECTIVE: Objective = {
  inputs: batchInputs,
  lossFor(model, task) {
    const logits = logitsOf(model);
    return (given) => {
      const batch = fitBatch(given, model);
      return withDocuments(batch, () => {
        const x = batchInputs(batch);
        return logits != null ? sparseCrossEntropy(logits(x, true), batch, task.vocabSize)
          : maskedLoss(model.apply(x, {training: true}) as tf.Tensor, batch, task.vocabSize);
      });
    };
  },
  evaluate,
};
