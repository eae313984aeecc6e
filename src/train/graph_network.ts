/**
 * buildGraphNetwork, the model that learns the graph task (graph_task.ts): tokens [batch, N]
 * -> embedding (modelDim) -> numLayers x (GraphAttention (numHeads heads of modelDim /
 * numHeads channels, concatenated) -> ELU, with a residual connection from the second layer
 * on) -> dense(vocabSize, softmax) [batch, N, vocabSize]. It takes [tokens, edges].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {GraphAttention} from '../layers/graph_attention';
import {GRAPH_VERSIONS, GraphVersion} from '../ops/graph';
import {assertOneOf, assertPositiveInt, assertRate, checkArgNames} from '../core/validate';

/** The attention a graph network's options (and so its training record) name: its model family's tag. */
export const GRAPH_ATTENTION = 'graph';

export interface GraphNetworkOptions {
  /** Always GRAPH_ATTENTION ('graph'): what training records name the model's attention. */
  attention: typeof GRAPH_ATTENTION;
  /** Colours + 2 (the task's vocabulary). */
  vocabSize: number;
  /** N: nodes per example. */
  seqLength: number;
  /** E: edges per example. */
  edgesPerExample: number;
  /** Width of every layer (numHeads * units). Default 32. */
  modelDim?: number;
  /** Heads of every GraphAttention layer. Default 4. */
  numHeads?: number;
  /** GraphAttention layers. Default 2. */
  numLayers?: number;
  /** Dropout on alpha while training. Default 0. */
  dropout?: number;
  /** 'gat' (default) or 'gatv2'. */
  version?: GraphVersion;
  /** Seed of the initial weights. */
  seed?: number;
}

export const GRAPH_NETWORK_OPTIONS = [
  'attention', 'vocabSize', 'seqLength', 'edgesPerExample', 'modelDim', 'numHeads', 'numLayers', 'dropout', 'version', 'seed',
] as const;

export function graphNetworkDefaults(o: GraphNetworkOptions): Required<GraphNetworkOptions> {
  return {
    attention: GRAPH_ATTENTION, vocabSize: o.vocabSize, seqLength: o.seqLength, edgesPerExample: o.edgesPerExample,
    modelDim: o.modelDim ?? 32, numHeads: o.numHeads ?? 4, numLayers: o.numLayers ?? 2, dropout: o.dropout ?? 0,
    version: o.version ?? 'gat', seed: o.seed ?? 0,
  };
}

/** The network of the file comment. Throws AttentionError for bad options. */
export function buildGraphNetwork(options: GraphNetworkOptions): tf.LayersModel {
  if (options == null || typeof options !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `buildGraphNetwork takes an options object, received ${show(options)}`);
  }
  checkArgNames('buildGraphNetwork', options, GRAPH_NETWORK_OPTIONS);
  const o = graphNetworkDefaults(options);
  for (const key of ['vocabSize', 'seqLength', 'edgesPerExample', 'modelDim', 'numHeads', 'numLayers'] as const) {
    assertPositiveInt(key, o[key]);
  }
  assertRate('dropout', o.dropout);
  assertOneOf('version', o.version, GRAPH_VERSIONS);
  if (o.modelDim % o.numHeads !== 0) {
    throw new AttentionError('INVALID_CONFIG', `modelDim (${o.modelDim}) must be divisible by numHeads (${o.numHeads})`);
  }
  const tokens = tf.input({shape: [o.seqLength], dtype: 'int32', name: 'tokens'});
  const edges = tf.input({shape: [o.edgesPerExample, 2], dtype: 'int32', name: 'edges'});
  let x = tf.layers.embedding({inputDim: o.vocabSize, outputDim: o.modelDim, name: 'token_embedding'})
    .apply(tokens) as tf.SymbolicTensor;
  for (let l = 0; l < o.numLayers; l++) {
    const g = new GraphAttention({units: o.modelDim / o.numHeads, numHeads: o.numHeads, dropout: o.dropout,
      version: o.version, name: `block${l}_graph`}).apply([x, edges]) as tf.SymbolicTensor;
    const h = tf.layers.activation({activation: 'elu', name: `block${l}_elu`}).apply(g) as tf.SymbolicTensor;
    x = l === 0 ? h : tf.layers.add({name: `block${l}_add`}).apply([x, h]) as tf.SymbolicTensor;
  }
  const probs = tf.layers.dense({units: o.vocabSize, activation: 'softmax', name: 'head'}).apply(x) as tf.SymbolicTensor;
  const model = tf.model({inputs: [tokens, edges], outputs: probs, name: 'graph_network'});
  seedWeights(model, o.seed);
  return model;
}

/**
 * Draws the kernels (Glorot-uniform), attention vectors and embedding again from `seed`: the
 * same seed, the same model.
 */
function seedWeights(model: tf.LayersModel, seed: number): void {
  model.trainableWeights.forEach((w, i) => {
    const shape = w.shape as number[];
    const name = w.name.replace(/_\d+$/, '');
    const weightSeed = seed * 1009 + i + 1; // never 0: tfjs reads a seed of 0 as none
    let value: tf.Tensor | null = null;
    if (/embeddings$/.test(name)) {
      value = tf.randomNormal(shape, 0, 0.5, 'float32', weightSeed);
    } else if (/(kernel|attention\w*)$/.test(name)) {
      const size = shape.reduce((a, b) => a * b, 1);
      const fanIn = shape[0];
      const limit = Math.sqrt(6 / (fanIn + size / fanIn));
      value = tf.randomUniform(shape, -limit, limit, 'float32', weightSeed);
    }
    if (value != null) {
      w.write(value);
      value.dispose();
    }
  });
}
