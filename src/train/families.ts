/**
 * The model families the trainer builds, one entry each: the tasks it trains on, its
 * builder, its option names and defaults. The trainer and the CLI look a family up (by
 * task, or by the attention a record names) rather than test for one. A training record's
 * `model.attention` names the family that built it: an attention kind for a transformer,
 * 'graph' for a graph network.
 */
import * as tf from '@tensorflow/tfjs';
import {ATTENTION_KINDS} from '../layers/kinds';
import {
  buildGraphNetwork, GRAPH_ATTENTION, GRAPH_NETWORK_OPTIONS, graphNetworkDefaults, GraphNetworkOptions,
} from './graph_network';
import {GRAPH_TASK} from './graph_task';
import {buildTransformer, TRANSFORMER_OPTIONS, transformerDefaults, TransformerOptions} from './model';
import {
  buildNBodyNetwork, NBODY_ATTENTION, NBODY_NETWORK_OPTIONS, NBODY_OBJECTIVE, nbodyNetworkDefaults, NBodyNetworkOptions,
} from './nbody_network';
import {NBODY_TASK} from './nbody_task';
import {Objective, TOKEN_OBJECTIVE} from './objective';
import {Task} from './task_base';
import {TASK_NAMES} from './tasks';
import {TEXT_TASK} from './text';

/** A family's model options with every default filled in, as its builder uses (and training.json stores) them. */
export type ModelOptions = Required<TransformerOptions> | Required<GraphNetworkOptions> | Required<NBodyNetworkOptions>;

export const MODEL_FAMILY_NAMES = ['transformer', 'graph', 'nbody'] as const;
export type ModelFamilyName = typeof MODEL_FAMILY_NAMES[number];

/** One model family of the trainer. */
export interface ModelFamily {
  name: ModelFamilyName;
  /** What it trains, for messages. */
  description: string;
  /** The attention names its models' options take (and training records store). */
  attentions: readonly string[];
  /** The tasks it trains on. */
  tasks: readonly string[];
  /** Its builder's option names. */
  optionNames: readonly string[];
  /** The options the task and the run fix, which train's options.model does not take. */
  fixedByTask: readonly string[];
  /** The builder's options for a run on `task`: the caller's `model`, what the task fixes, the seed, every default. */
  defaults(model: object, task: Task, seed: number): ModelOptions;
  /** Builds the model (options as `defaults` returns them). */
  build(options: ModelOptions): tf.LayersModel;
  /** Its models' inputs, loss and evaluation. */
  objective: Objective;
}

export const MODEL_FAMILIES: Readonly<Record<ModelFamilyName, ModelFamily>> = {
  transformer: {
    name: 'transformer',
    description: 'a transformer over token sequences',
    attentions: ATTENTION_KINDS,
    tasks: [...TASK_NAMES, TEXT_TASK],
    optionNames: TRANSFORMER_OPTIONS,
    fixedByTask: ['vocabSize', 'seqLength', 'seed'],
    defaults: (model, task, seed) =>
      transformerDefaults({...model as TransformerOptions, vocabSize: task.vocabSize, seqLength: task.seqLength, seed}),
    build: (options) => buildTransformer(options as Required<TransformerOptions>),
    objective: TOKEN_OBJECTIVE,
  },
  graph: {
    name: 'graph',
    description: "GraphAttention layers over the graphs' edges",
    attentions: [GRAPH_ATTENTION],
    tasks: [GRAPH_TASK],
    optionNames: GRAPH_NETWORK_OPTIONS,
    fixedByTask: ['vocabSize', 'seqLength', 'seed', 'edgesPerExample'],
    defaults: (model, task, seed) => graphNetworkDefaults({...model as GraphNetworkOptions, vocabSize: task.vocabSize,
      seqLength: task.seqLength, seed, attention: GRAPH_ATTENTION, edgesPerExample: task.edgesPerExample as number}),
    build: (options) => buildGraphNetwork(options as Required<GraphNetworkOptions>),
    objective: TOKEN_OBJECTIVE,
  },
  nbody: {
    name: 'nbody',
    description: 'EquivariantAttention layers over charged particles (the EGNN paper\'s n-body model)',
    attentions: [NBODY_ATTENTION],
    tasks: [NBODY_TASK],
    optionNames: NBODY_NETWORK_OPTIONS,
    fixedByTask: ['seqLength', 'seed'],
    defaults: (model, task, seed) => nbodyNetworkDefaults({...model as NBodyNetworkOptions, seqLength: task.seqLength,
      seed, attention: NBODY_ATTENTION}),
    build: (options) => buildNBodyNetwork(options as Required<NBodyNetworkOptions>),
    objective: NBODY_OBJECTIVE,
  },
};

/** The family that trains on task `name`; for a name no family lists, the transformer (makeTask refuses it later). */
export function familyOfTask(name: string | undefined): ModelFamily {
  return Object.values(MODEL_FAMILIES).find((f) => f.tasks.includes(name as string)) ?? MODEL_FAMILIES.transformer;
}

/** The family whose models take the attention `name` (a record's model.attention), or null for an unknown name. */
export function familyOfAttention(name: string | undefined): ModelFamily | null {
  return Object.values(MODEL_FAMILIES).find((f) => f.attentions.includes(name as string)) ?? null;
}

/** Every attention name of every family, transformer kinds first. */
export function familyAttentions(): string[] {
  return Object.values(MODEL_FAMILIES).flatMap((f) => [...f.attentions]);
}
