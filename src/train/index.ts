/**
 * tfjs-attention/train: the training harness behind `tfjs-attention train`, for programs
 * that train as the CLI does. Toy tasks (minGPT-style generators), the text and graph tasks,
 * a trainer with evaluation, checkpoints that store the config with the weights, and the
 * fused Adam optimizer. The models themselves (`buildTransformer`, `generate`, `loadModel`)
 * are in the core entry. It re-exports, and registers the kernel and gradient fixes as the
 * core entry does (a page may import this entry alone).
 */
import '../kernels/backend';

export {
  makeToyTask, makeTask, TASK_NAMES, ALL_TASK_NAMES, TaskName, AnyTaskName, TaskOptions, AnyTaskOptions, Task, ToyTask,
  TaskBatch, Split, SPLITS, BLANK, SEP, FIRST_SYMBOL, TEXT_TASK,
} from './tasks';
export {
  makeTextTask, encodeText, decodeText, unigramEntropy, readTextFile, sampleTextPath, SAMPLE_TEXT, TextTask,
  TextTaskOptions, TextSourceOptions,
} from './text';
export {FusedAdamOptimizer, fusedAdam} from './adam';
export {
  makeGraphTask, GraphTask, GraphTaskOptions, GRAPH_TASK, GRAPH_TASK_OPTIONS, graphBaselines, buildGraphNetwork,
  GraphNetworkOptions, GRAPH_NETWORK_OPTIONS,
} from './graph_task';
export {
  train, evaluate, maskedLoss, sparseCrossEntropy, logitsOf, batchInputs, TrainOptions, TrainResult, Metrics, StepInfo,
  learningRateAt, ResumeFrom, TrainCallbacks,
} from './trainer';
export {saveCheckpoint, loadCheckpoint, readTrainingRecord, TrainingRecord, Checkpoint} from './checkpoint';
