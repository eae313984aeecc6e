/**
 * tfjs-attention/train: the training harness behind `tfjs-attention train`, for programs
 * that train as the CLI does. Toy tasks (minGPT-style generators), the text, graph and n-body tasks,
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
  TextTaskOptions, TextSourceOptions, FilledTextOptions, TextDocuments, TEXT_DOCUMENTS,
} from './text';
export {FusedAdamOptimizer, fusedAdam} from './adam';
export {makeGraphTask, GraphTask, GraphTaskOptions, GRAPH_TASK, GRAPH_TASK_OPTIONS, graphBaselines} from './graph_task';
export {buildGraphNetwork, GraphNetworkOptions, GRAPH_NETWORK_OPTIONS} from './graph_network';
export {
  makeNBodyTask, NBodyTask, NBodyTaskOptions, NBodyExample, NBODY_TASK, NBODY_TASK_OPTIONS, NBODY_SIMULATION,
  initialState, simulateCharged, nbodyBaselines, meanSquaredError,
} from './nbody_task';
export {
  buildNBodyNetwork, NBodyNetworkOptions, NBODY_NETWORK_OPTIONS, nbodyInputs, completeGraph, nbodyTestError,
} from './nbody_network';
export {Objective, Evaluation, TOKEN_OBJECTIVE} from './objective';
export {train, TrainResult, ResumeFrom, TrainCallbacks} from './trainer';
export {TrainOptions, Metrics, StepInfo, learningRateAt} from './train_options';
export {evaluate, batchInputs} from './evaluate';
export {maskedLoss, sparseCrossEntropy, logitsOf} from './losses';
export {saveCheckpoint, loadCheckpoint, readTrainingRecord, Checkpoint} from './checkpoint';
export {TrainingRecord} from './record';
