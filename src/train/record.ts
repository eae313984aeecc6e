/**
 * The training record (a checkpoint's training.json): what a run was, how far it got and
 * what it measured, enough to resume it or to read its model's task and options back.
 */
import type {GraphNetworkOptions} from './graph_network';
import type {NBodyNetworkOptions} from './nbody_network';
import type {TransformerOptions} from './model';
import type {Metrics, TrainOptions} from './train_options';

export interface TrainingRecord {
  format: 1;
  packageVersion: string;
  task: {name: string; [option: string]: unknown};
  /**
   * The model's options, every default filled in: a transformer's, for the graph task a graph
   * network's (attention 'graph'), for the n-body task an n-body network's (attention
   * 'equivariant'); `attention` names the model family (families.ts).
   */
  model: Required<TransformerOptions> | Required<GraphNetworkOptions> | Required<NBodyNetworkOptions>;
  options: TrainOptions;
  /** Optimizer steps done. */
  step: number;
  history: Metrics[];
  trainingSeconds: number;
  parameters: number;
  /** False while a run is under way (a checkpoint to resume), true when it ended. */
  finished: boolean;
}

/** True when `r` has every field of a TrainingRecord that readers use. */
export function isTrainingRecord(r: unknown): r is TrainingRecord {
  const x = r as TrainingRecord | null;
  return x != null && typeof x === 'object' && x.format === 1 && typeof x.step === 'number' &&
    typeof x.trainingSeconds === 'number' && x.model != null && typeof x.model.seqLength === 'number' &&
    typeof x.model.attention === 'string' && x.options != null && typeof x.options.task === 'string' &&
    x.task != null && typeof x.task.name === 'string' && Array.isArray(x.history);
}
