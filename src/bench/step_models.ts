/**
 * The models of the training-step rows (`tfjs-attention bench --suite step`, step.ts): each
 * with its loss on one fixed batch, its model FLOPs per step and a line describing its shape.
 */
import * as tf from '@tensorflow/tfjs';
import {buildTransformer} from '../train/model';
import {logitsOf, sparseCrossEntropy} from '../train/losses';

/** The training-step rows, in the order they run. */
export const STEP_ROWS = ['transformer-small', 'transformer-large', 'mlp', 'layernorm', 'transformer-options'] as const;
export type StepRowName = typeof STEP_ROWS[number];

/** A row's model and loss, built for one measurement. */
export interface StepModel {
  model: tf.LayersModel;
  /** The loss of one batch (inside variableGrads). */
  loss(): tf.Scalar;
  /** Model FLOPs of one step. */
  flops: number;
  /** The trainer's optimizer (FusedAdamOptimizer) when the library's kernels are on; else tf.train.adam. */
  trainer: boolean;
  /** "B=8 T=128 E=128 H=4 layers=4" */
  shape: string;
  dispose(): void;
}

/** Sum of the sizes of the weights used in products (kernels). */
function productWeights(model: tf.LayersModel): number {
  return model.trainableWeights.filter((w) => /kernel$/.test(w.name.replace(/_\d+$/, '')))
    .reduce((s, w) => s + tf.util.sizeFromShape(w.shape as number[]), 0);
}

/**
 * The attention options of the `transformer-options` row: Gemma 2's cap and alternating window,
 * gpt-oss's sinks, Qwen3's q/k norm and a head-wise output gate, every block (the window every other).
 */
const STEP_OPTIONS = {softcap: 30, slidingWindow: 32, attentionSinks: true, qkNorm: 'rms', outputGate: 'headwise'} as const;

function transformerModel(B: number, T: number, E: number, H: number, layers: number, options = false): StepModel {
  const V = 100;
  const model = buildTransformer({attention: 'mha', vocabSize: V, seqLength: T, modelDim: E, numHeads: H,
    numLayers: layers, causal: true, seed: 1, ...(options ? {attentionArgs: STEP_OPTIONS, globalEvery: 2} : {})});
  const rand = (n: number, seed: number) => Int32Array.from({length: n}, (_, i) => (i * 7919 + seed * 104729) % V);
  const batch = {inputs: rand(B * T, 1), targets: rand(B * T, 2), weights: new Float32Array(B * T).fill(1), n: B, L: T};
  const x = tf.tensor2d(batch.inputs, [B, T], 'int32');
  const D = E / H;
  const logits = logitsOf(model)!;
  return {
    model,
    loss: () => sparseCrossEntropy(logits(x, true), batch, V),
    flops: 6 * B * T * productWeights(model) + 12 * B * H * T * T * D * layers,
    trainer: true,
    shape: `B=${B} T=${T} E=${E} H=${H} layers=${layers}` + (options ? ' softcap, window 32 / global, sinks, qk-norm, ' +
      'head gate' : ''),
    dispose: () => {
      x.dispose();
      model.dispose();
    },
  };
}

function mlpModel(): StepModel {
  const B = 512;
  const input = tf.input({shape: [512]});
  let h = input;
  for (const [i, units] of [1024, 1024].entries()) {
    h = tf.layers.dense({units, activation: 'relu', name: `mlp_dense${i}`}).apply(h) as tf.SymbolicTensor;
  }
  const out = tf.layers.dense({units: 10, name: 'mlp_out'}).apply(h) as tf.SymbolicTensor;
  const model = tf.model({inputs: input, outputs: out});
  const x = tf.randomNormal([B, 512], 0, 1, 'float32', 1);
  const y = tf.oneHot(tf.randomUniform([B], 0, 10, 'int32', 2) as tf.Tensor1D, 10);
  return {
    model,
    loss: () => tf.losses.softmaxCrossEntropy(y, model.apply(x, {training: true}) as tf.Tensor) as tf.Scalar,
    flops: 6 * B * productWeights(model),
    trainer: false,
    shape: `B=${B} 512-1024-1024-10`,
    dispose: () => {
      tf.dispose([x, y]);
      model.dispose();
    },
  };
}

function layerNormModel(): StepModel {
  const [B, T, E] = [8, 128, 128];
  const input = tf.input({shape: [T, E]});
  let h = input;
  for (let i = 0; i < 4; i++) {
    h = tf.layers.dense({units: E, activation: 'relu', name: `ln_dense${i}`}).apply(h) as tf.SymbolicTensor;
    h = tf.layers.layerNormalization({name: `ln_norm${i}`}).apply(h) as tf.SymbolicTensor;
  }
  const model = tf.model({inputs: input, outputs: h});
  const x = tf.randomNormal([B, T, E], 0, 1, 'float32', 1);
  const y = tf.randomNormal([B, T, E], 0, 1, 'float32', 2);
  return {
    model,
    loss: () => tf.losses.meanSquaredError(y, model.apply(x, {training: true}) as tf.Tensor) as tf.Scalar,
    flops: 6 * B * T * productWeights(model),
    trainer: false,
    shape: `B=${B} T=${T} E=${E} 4 x (dense, layerNorm)`,
    dispose: () => {
      tf.dispose([x, y]);
      model.dispose();
    },
  };
}

/** Each row's model, built fresh for each measurement. */
export const STEP_MODELS: Readonly<Record<StepRowName, () => StepModel>> = {
  'transformer-small': () => transformerModel(8, 128, 128, 4, 4),
  'transformer-large': () => transformerModel(4, 512, 256, 8, 6),
  mlp: mlpModel,
  layernorm: layerNormModel,
  // transformer-small with the attention options (FLOPs counted as its: the dense path forms every score).
  'transformer-options': () => transformerModel(8, 128, 128, 4, 4, true),
};
