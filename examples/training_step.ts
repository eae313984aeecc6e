/**
 * Training steps as the library speeds them up, on two models:
 *
 * 1. A plain tfjs model with no attention (Dense 256 -> 512 relu -> 10, softmax
 *    cross-entropy), trained from the same weights once with the library's kernels and
 *    gradients and once with tfjs's own (`setLibraryKernels('tfjs')`): the same losses, and
 *    each way's last step time printed beside them.
 * 2. The same kind of model on sequences ([batch, length, features]) with the library's
 *    `FusedLayerNormalization` and `FusedDense` in place of tfjs's layers, from the same
 *    weights: the same loss and gradients, and fewer tensor bytes held through a step
 *    (tf.profile's peak), since each fused layer is one op with its own gradient.
 * 3. A causal `buildTransformer` model trained on one batch with the trainer's loss: the
 *    head's logits (`logitsOf`) and `sparseCrossEntropy` (no log of a softmax, one op for its gradient),
 *    printing each step's kernels (`tf.profile`) and the most tensor bytes it held. Its
 *    optimizer is the trainer's `fusedAdam` (tfjs's Adam with one kernel per variable).
 *
 *   npx ts-node examples/training_step.ts
 */
import * as tf from '@tensorflow/tfjs';
import {FusedDense, FusedLayerNormalization, buildTransformer, setLibraryKernels} from '../src/node';
import {fusedAdam, logitsOf, sparseCrossEntropy} from '../src/train';
import {runAsProgram} from './run';

export interface StepResult {
  /** The plain model's loss after each step, per kernel setting. */
  plainLosses: Record<'library' | 'tfjs', number[]>;
  /** Milliseconds of the plain model's last step, per kernel setting. */
  plainMs: Record<'library' | 'tfjs', number>;
  /** The sequence model's loss and tf.profile peak bytes of one step, with tfjs's layers and with the fused ones. */
  fused: Record<'tfjs' | 'fused', {loss: number; peakBytes: number}>;
  /** The largest difference between the two models' gradients. */
  fusedGradDiff: number;
  /** The transformer's loss after each step. */
  transformerLosses: number[];
  /** Kernels of one transformer step, and the most tensor bytes it held. */
  kernels: number;
  peakBytes: number;
}

/** One Adam step of `loss` over the model's trainable weights; returns the loss before the step. */
function step(model: tf.LayersModel, optimizer: tf.Optimizer, loss: () => tf.Scalar): number {
  return tf.tidy(() => {
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const {value, grads} = tf.variableGrads(loss, vars);
    optimizer.applyGradients(grads);
    return value.dataSync()[0];
  });
}

export async function main(log: (line: string) => void = console.log, steps = 3): Promise<StepResult> {
  // 1. A plain tfjs model, the same weights under both kernel settings.
  const input = tf.input({shape: [256]});
  const hidden = tf.layers.dense({units: 512, activation: 'relu'}).apply(input) as tf.SymbolicTensor;
  const mlp = tf.model({inputs: input, outputs: tf.layers.dense({units: 10}).apply(hidden) as tf.SymbolicTensor});
  const initial = mlp.getWeights().map((w) => w.clone());
  const x = tf.randomNormal([256, 256], 0, 1, 'float32', 1);
  const y = tf.tidy(() => tf.oneHot(tf.randomUniform([256], 0, 10, 'int32', 2) as tf.Tensor1D, 10));
  const plainLosses = {library: [] as number[], tfjs: [] as number[]};
  const plainMs = {library: 0, tfjs: 0};
  for (const which of ['library', 'tfjs'] as const) {
    const previous = setLibraryKernels(which);
    const optimizer = tf.train.adam(1e-3);
    try {
      mlp.setWeights(initial);
      for (let i = 0; i < steps; i++) {
        const start = performance.now();
        plainLosses[which].push(step(mlp, optimizer,
          () => tf.losses.softmaxCrossEntropy(y, mlp.apply(x, {training: true}) as tf.Tensor) as tf.Scalar));
        plainMs[which] = performance.now() - start;
      }
    } finally {
      setLibraryKernels(previous); // a global setting: always put it back
      optimizer.dispose();
    }
    log(`plain tfjs MLP, ${which === 'library' ? "the library's" : "tfjs's"} kernels: losses ` +
      `${plainLosses[which].map((l) => l.toFixed(4)).join(' ')}, last step ${plainMs[which].toFixed(0)} ms`);
  }
  tf.dispose([x, y, ...initial]);
  mlp.dispose();

  // 2. The fused layers in place of tfjs's, on sequences: the same function, fewer tensors kept.
  const seq = tf.input({shape: [32, 64]});
  const build = (fused: boolean) => {
    let h = (fused ? new FusedLayerNormalization() : tf.layers.layerNormalization()).apply(seq) as tf.SymbolicTensor;
    h = (fused ? new FusedDense({units: 256, activation: 'relu'}) : tf.layers.dense({units: 256, activation: 'relu'}))
      .apply(h) as tf.SymbolicTensor;
    h = (fused ? new FusedDense({units: 64}) : tf.layers.dense({units: 64})).apply(h) as tf.SymbolicTensor;
    return tf.model({inputs: seq, outputs: h});
  };
  const [theirs, ours] = [build(false), build(true)];
  ours.setWeights(theirs.getWeights()); // the same weight names and order
  const xs = tf.randomNormal([16, 32, 64], 0, 1, 'float32', 3);
  const fused = {tfjs: {loss: 0, peakBytes: 0}, fused: {loss: 0, peakBytes: 0}};
  const grads: Record<'tfjs' | 'fused', tf.Tensor[]> = {tfjs: [], fused: []};
  for (const [which, m] of [['tfjs', theirs], ['fused', ours]] as const) {
    const before = tf.memory().numBytes;
    const info = await tf.profile(() => {
      const {value, grads: g} = tf.variableGrads(() => tf.mean(tf.square(m.apply(xs, {training: true}) as tf.Tensor)) as
        tf.Scalar, m.trainableWeights.map((w) => w.read() as tf.Variable));
      fused[which].loss = value.dataSync()[0];
      grads[which] = m.trainableWeights.map((w) => g[(w.read() as tf.Variable).name]);
      value.dispose();
    });
    fused[which].peakBytes = info.peakBytes - before;
  }
  const fusedGradDiff = Math.max(...grads.fused.map((g, i) => tf.tidy(() =>
    tf.max(tf.abs(tf.sub(g, grads.tfjs[i]))).dataSync()[0])));
  log(`fused layers on [16, 32, 64]: loss ${fused.fused.loss.toFixed(5)} (tfjs's layers ${fused.tfjs.loss.toFixed(5)}), ` +
    `gradients within ${fusedGradDiff.toExponential(1)}; ${(fused.fused.peakBytes / 2 ** 20).toFixed(1)} MiB of tensors ` +
    `at most through a step against ${(fused.tfjs.peakBytes / 2 ** 20).toFixed(1)} MiB`);
  tf.dispose([xs, ...grads.tfjs, ...grads.fused]);
  theirs.dispose();
  ours.dispose();

  // 3. A transformer with the trainer's loss from logits.
  const [B, T, V] = [4, 32, 50];
  const model = buildTransformer({attention: 'mha', vocabSize: V, seqLength: T, modelDim: 32, numHeads: 4, numLayers: 2,
    causal: true, seed: 1});
  const logits = logitsOf(model)!; // the layers before the head, then the head without its softmax
  const inputs = Int32Array.from({length: B * T}, (_, i) => (i * 7) % V);
  const targets = Int32Array.from(inputs, (t) => (t + 1) % V);
  const batch = {inputs, targets, weights: new Float32Array(B * T).fill(1), n: B, L: T};
  const tokens = tf.tensor2d(inputs, [B, T], 'int32');
  const optimizer = fusedAdam(1e-2);
  const loss = () => sparseCrossEntropy(logits(tokens, true), batch, V);
  const transformerLosses: number[] = [];
  let kernels = 0;
  let peakBytes = 0;
  for (let i = 0; i < 5 * steps; i++) {
    if (i === 1) { // the first step makes Adam's state; profile the second
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => { transformerLosses.push(step(model, optimizer, loss)); });
      [kernels, peakBytes] = [info.kernels.length, info.peakBytes - before];
    } else {
      transformerLosses.push(step(model, optimizer, loss));
    }
  }
  log(`transformer (B=${B} T=${T} E=32, 2 layers): loss ${transformerLosses[0].toFixed(3)} -> ` +
    `${transformerLosses[transformerLosses.length - 1].toFixed(3)} in ${transformerLosses.length} steps; ` +
    `${kernels} kernels and ${(peakBytes / 2 ** 20).toFixed(1)} MiB of tensors at most per step`);
  tokens.dispose();
  optimizer.dispose();
  model.dispose();
  return {plainLosses, plainMs, fused, fusedGradDiff, transformerLosses, kernels, peakBytes};
}

if (require.main === module) runAsProgram(() => main());
