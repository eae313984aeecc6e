/**
 * buildNBodyNetwork, the model that learns the n-body task (nbody_task.ts), as the EGNN paper
 * builds it for that task (its EGNN_vel): the particles' speeds |v_i| [batch, N, 1] -> a linear
 * embedding (modelDim) -> numLayers EquivariantAttention layers with velocities, over the
 * complete graph without self loops (E = N (N - 1) edges), whose edge attributes are
 * [q_i q_j, |x_i - x_j|^2] of the input positions; the last layer's positions [batch, N, 3]
 * are the prediction. Inputs, in order: positions [N, 3], velocities [N, 3], speeds [N, 1],
 * edges [E, 2] int32, edge attributes [E, 2]; `nbodyInputs` makes them from the positions,
 * velocities and charges.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertPositiveInt, checkArgNames} from '../core/validate';
import {EquivariantAttention} from '../layers/equivariant_attention';
import {meanSquaredError, NBodyTask} from './nbody_task';
import {Evaluation, Objective} from './objective';
import {Task, TaskBatch} from './task_base';

/** The attention an n-body network's options (and so its training record) name: its model family's tag. */
export const NBODY_ATTENTION = 'equivariant';

export interface NBodyNetworkOptions {
  /** Always NBODY_ATTENTION ('equivariant'): what training records name the model's attention. */
  attention: typeof NBODY_ATTENTION;
  /** N: the particles (the task's). */
  seqLength: number;
  /** Width of the embedding and of every layer's MLPs (EGNN's nf). Default 64. */
  modelDim?: number;
  /** EquivariantAttention layers. Default 4. */
  numLayers?: number;
  /** Seed of the initial weights. */
  seed?: number;
}

export const NBODY_NETWORK_OPTIONS = ['attention', 'seqLength', 'modelDim', 'numLayers', 'seed'] as const;

export function nbodyNetworkDefaults(o: NBodyNetworkOptions): Required<NBodyNetworkOptions> {
  return {attention: NBODY_ATTENTION, seqLength: o.seqLength, modelDim: o.modelDim ?? 64, numLayers: o.numLayers ?? 4,
    seed: o.seed ?? 0};
}

/** The complete graph of N nodes without self loops: rows [j, i] for every i, then every j != i. */
export function completeGraph(N: number): Int32Array {
  const edges = new Int32Array(N * (N - 1) * 2);
  let e = 0;
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) {
      if (j === i) continue;
      edges[e++] = j;
      edges[e++] = i;
    }
  }
  return edges;
}

/**
 * The network's inputs for n systems of N particles: positions and velocities [n, N, 3],
 * charges [n, N] (row-major arrays). Returns [positions, velocities, speeds, edges, edgeAttr].
 */
export function nbodyInputs(positions: Float32Array, velocities: Float32Array, charges: Float32Array, n: number,
                            N: number): tf.Tensor[] {
  const E = N * (N - 1);
  const graph = completeGraph(N);
  const speeds = new Float32Array(n * N);
  const edges = new Int32Array(n * E * 2);
  const attr = new Float32Array(n * E * 2);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < N; i++) {
      const v = r * N * 3 + i * 3;
      speeds[r * N + i] = Math.hypot(velocities[v], velocities[v + 1], velocities[v + 2]);
    }
    edges.set(graph, r * E * 2);
    for (let e = 0; e < E; e++) {
      const j = graph[e * 2], i = graph[e * 2 + 1];
      let d2 = 0;
      for (let a = 0; a < 3; a++) d2 += (positions[(r * N + i) * 3 + a] - positions[(r * N + j) * 3 + a]) ** 2;
      attr[(r * E + e) * 2] = charges[r * N + i] * charges[r * N + j];
      attr[(r * E + e) * 2 + 1] = d2;
    }
  }
  return [tf.tensor3d(positions, [n, N, 3]), tf.tensor3d(velocities, [n, N, 3]), tf.tensor3d(speeds, [n, N, 1]),
    tf.tensor3d(edges, [n, E, 2], 'int32'), tf.tensor3d(attr, [n, E, 2])];
}

function batchValues(batch: TaskBatch): Record<string, Float32Array> {
  if (batch.values == null) throw new AttentionError('INVALID_CONFIG', 'an n-body network needs an n-body task\'s batches');
  return batch.values;
}

/** The network of the file comment. Throws AttentionError for bad options. */
export function buildNBodyNetwork(options: NBodyNetworkOptions): tf.LayersModel {
  if (options == null || typeof options !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `buildNBodyNetwork takes an options object, received ${show(options)}`);
  }
  checkArgNames('buildNBodyNetwork', options, NBODY_NETWORK_OPTIONS);
  if (options.attention !== undefined && options.attention !== NBODY_ATTENTION) {
    throw new AttentionError('INVALID_CONFIG', `an n-body network's attention is '${NBODY_ATTENTION}', received ` +
      `${show(options.attention)}`);
  }
  const o = nbodyNetworkDefaults(options);
  for (const key of ['seqLength', 'modelDim', 'numLayers'] as const) assertPositiveInt(key, o[key]);
  const N = o.seqLength;
  const E = N * (N - 1);
  const positions = tf.input({shape: [N, 3], name: 'positions'});
  const velocities = tf.input({shape: [N, 3], name: 'velocities'});
  const speeds = tf.input({shape: [N, 1], name: 'speeds'});
  const edges = tf.input({shape: [E, 2], dtype: 'int32', name: 'edges'});
  const attr = tf.input({shape: [E, 2], name: 'edge_attributes'});
  let h = tf.layers.dense({units: o.modelDim, name: 'embedding'}).apply(speeds) as tf.SymbolicTensor;
  let x = positions;
  for (let l = 0; l < o.numLayers; l++) {
    [h, x] = new EquivariantAttention({hiddenUnits: o.modelDim, edgeDim: 2, velocity: true, name: `block${l}`})
      .apply([h, x, edges, attr, velocities]) as tf.SymbolicTensor[];
  }
  const model = tf.model({inputs: [positions, velocities, speeds, edges, attr], outputs: x, name: 'nbody_network'});
  seedWeights(model, o.seed);
  return model;
}

/**
 * Draws the kernels again from `seed` (Glorot-uniform; the last kernel of each coordinate
 * MLP scaled by 0.001, as the layer's own initializer does): the same seed, the same model.
 */
function seedWeights(model: tf.LayersModel, seed: number): void {
  model.trainableWeights.forEach((w, i) => {
    const shape = w.shape as number[];
    if (shape.length !== 2) return; // biases stay zeros
    const [fanIn, fanOut] = shape;
    const gain = /coord_kernel_1(_\d+)?$/.test(w.name) ? 0.001 : 1;
    const limit = gain * Math.sqrt(6 / (fanIn + fanOut));
    const value = tf.randomUniform(shape, -limit, limit, 'float32', seed * 1009 + i + 1); // never 0: tfjs reads 0 as none
    w.write(value);
    value.dispose();
  });
}

/** Mean squared error of the predicted positions over every coordinate, as the paper reports it. */
export const NBODY_OBJECTIVE: Objective = {
  inputs(batch) {
    const v = batchValues(batch);
    return nbodyInputs(v.positions, v.velocities, v.charges, batch.n, batch.L);
  },
  checkRun(task, batchSize, evalBatches) {
    const {sizes} = task as NBodyTask;
    if (batchSize > sizes.train) {
      throw new AttentionError('INVALID_CONFIG', `batchSize ${batchSize} is larger than the training set (${sizes.train})`);
    }
    if (batchSize * evalBatches > sizes.validation) {
      throw new AttentionError('INVALID_CONFIG', `evalBatches ${evalBatches} of batchSize ${batchSize} read ` +
        `${batchSize * evalBatches} validation systems, and there are ${sizes.validation} (validationExamples)`);
    }
  },
  lossFor(model) {
    return (batch) => tf.tidy(() => {
      const predicted = model.apply(NBODY_OBJECTIVE.inputs(batch), {training: true}) as tf.Tensor;
      const target = tf.tensor(batchValues(batch).target, predicted.shape);
      return tf.mean(tf.squaredDifference(predicted, target)) as tf.Scalar;
    });
  },
  async evaluate(model: tf.LayersModel, task: Task, seed: number, batchSize: number, batches: number,
                 split = 'validation'): Promise<Evaluation> {
    let sum = 0;
    for (let b = 0; b < batches; b++) {
      const batch = task.batch(batchSize, seed, b, split);
      const out = tf.tidy(() => model.predict(NBODY_OBJECTIVE.inputs(batch)) as tf.Tensor);
      const predicted = await out.data().finally(() => out.dispose());
      sum += meanSquaredError(predicted, batchValues(batch).target);
    }
    return {loss: sum / batches};
  },
};

/** The test MSE of a model on the whole of a split (default 'test'), in batches of at most 100. */
export async function nbodyTestError(model: tf.LayersModel, task: NBodyTask, split: 'validation' | 'test' = 'test'):
    Promise<number> {
  const size = task.sizes[split];
  let batchSize = Math.min(100, size);
  while (size % batchSize !== 0) batchSize--; // batches that cover the split exactly
  const {loss} = await NBODY_OBJECTIVE.evaluate(model, task, 0, batchSize, size / batchSize, split);
  return loss;
}
