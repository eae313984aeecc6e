/**
 * buildTransformer: a small pre-norm transformer over token sequences, as a functional
 * tf.LayersModel of tfjs layers, one attention layer per block, and the library's fused norm
 * and feed-forward layers (FusedLayerNormalization, FusedDense: tfjs's semantics, one
 * custom-gradient op each, so a training step keeps a fraction of the tensors):
 *   tokens [batch, L] -> embedding (+ learned positions) -> numLayers x (layer norm ->
 *   attention -> add -> layer norm -> dense(ffDim, relu) -> dense(modelDim) -> add)
 *   -> layer norm -> dense(vocabSize, softmax) [batch, L, vocabSize].
 * With positions 'rope' there is no position table: every attention layer rotates its q
 * and k (positionEncoding 'rope'), and the model takes tokens of any length.
 * It saves and loads with model.save / tf.loadLayersModel like any tfjs model.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {attentionLayer} from '../layers/factory';
import {FusedDense} from '../layers/fused_dense';
import {FusedLayerNormalization} from '../layers/fused_layer_norm';
import {PositionEmbedding} from '../layers/position_embedding';
import {AnyAttentionArgs, ATTENTION_KIND_TABLE, ATTENTION_KINDS, AttentionKind} from '../layers/kinds';
import {assertOneOf, assertPositiveInt, assertRate, checkArgNames} from '../core/validate';

export interface TransformerOptions {
  /** Which attention every block uses. */
  attention: AttentionKind;
  vocabSize: number;
  /** L: the length of every input sequence. */
  seqLength: number;
  /** E. Default 64. */
  modelDim?: number;
  /** H. Default 4. */
  numHeads?: number;
  /** G for 'gqa' (default numHeads / 2); the other kinds use numHeads. */
  numKvHeads?: number;
  /** Default 2. */
  numLayers?: number;
  /** Width of the feed-forward layer. Default 4 * modelDim. */
  ffDim?: number;
  /** Dropout after attention and after the feed-forward layer, while training. Default 0. */
  dropout?: number;
  /** Causal attention in every block. Default false. */
  causal?: boolean;
  /** Extra arguments for the attention layers (windowSize, globalIndices, numFeatures, blockSize, seed ...). */
  attentionArgs?: Partial<AnyAttentionArgs>;
  /** Seed of the weight initializers: the same seed builds the same initial weights. */
  seed?: number;
  /**
   * 'learned' (default): a trained table of seqLength positions added to the embeddings;
   * 'rope': rotary positions inside every attention layer, no table, any length.
   */
  positions?: TransformerPositions;
  /**
   * With attentionArgs.slidingWindow, every globalEvery-th block (blocks globalEvery - 1,
   * 2 * globalEvery - 1, ...) attends globally, the others through the window: 2 alternates
   * local and global blocks as Gemma 2, 6 is Gemma 3's five local blocks to one global. Default
   * null: every block slides.
   */
  globalEvery?: number | null;
}

export const TRANSFORMER_POSITIONS = ['learned', 'rope'] as const;
export type TransformerPositions = typeof TRANSFORMER_POSITIONS[number];

/** The options with every default filled in, as buildTransformer uses (and training.json stores) them. */
export function transformerDefaults(o: TransformerOptions): Required<TransformerOptions> {
  const modelDim = o.modelDim ?? 64;
  const numHeads = o.numHeads ?? 4;
  return {
    attention: o.attention, vocabSize: o.vocabSize, seqLength: o.seqLength, modelDim, numHeads,
    // Each kind's own rule ('gqa': numHeads / 2 unless given; the others: numHeads); an unknown kind is refused later.
    numKvHeads: ATTENTION_KIND_TABLE[o.attention]?.kvHeads(numHeads, o.numKvHeads) ?? numHeads,
    numLayers: o.numLayers ?? 2, ffDim: o.ffDim ?? 4 * modelDim, dropout: o.dropout ?? 0, causal: o.causal ?? false,
    attentionArgs: o.attentionArgs ?? {}, seed: o.seed ?? 0, positions: o.positions ?? 'learned',
    globalEvery: o.globalEvery ?? null,
  };
}

/** The option names of buildTransformer. */
export const TRANSFORMER_OPTIONS = [
  'attention', 'vocabSize', 'seqLength', 'modelDim', 'numHeads', 'numKvHeads', 'numLayers', 'ffDim', 'dropout', 'causal',
  'attentionArgs', 'seed', 'positions', 'globalEvery',
] as const;

/** The transformer described in the file comment. Throws AttentionError for bad options (and unknown names). */
export function buildTransformer(options: TransformerOptions): tf.LayersModel {
  if (options == null || typeof options !== 'object') {
    throw new AttentionError('INVALID_CONFIG', `buildTransformer takes an options object, received ${show(options)}`);
  }
  checkArgNames('buildTransformer', options, TRANSFORMER_OPTIONS);
  const o = transformerDefaults(options);
  assertOneOf('attention', o.attention, ATTENTION_KINDS);
  for (const key of ['vocabSize', 'seqLength', 'modelDim', 'numHeads', 'numKvHeads', 'numLayers', 'ffDim'] as const) {
    assertPositiveInt(key, o[key]);
  }
  assertRate('dropout', o.dropout);
  assertOneOf('positions', o.positions, TRANSFORMER_POSITIONS);
  if (o.attentionArgs.positionEncoding != null) {
    throw new AttentionError('INVALID_CONFIG',
      "buildTransformer sets the attention layers' positionEncoding itself: pass positions: 'rope' (or 'learned')");
  }
  if (o.globalEvery != null) {
    assertPositiveInt('globalEvery', o.globalEvery);
    if (o.attentionArgs.slidingWindow == null) {
      throw new AttentionError('INVALID_CONFIG', `globalEvery (${o.globalEvery}) says which blocks attend globally ` +
        'instead of through a sliding window: give attentionArgs.slidingWindow too');
    }
  }
  if (o.modelDim % o.numHeads !== 0) {
    throw new AttentionError('INVALID_CONFIG', `modelDim (${o.modelDim}) must be divisible by numHeads (${o.numHeads})`);
  }

  const rope = o.positions === 'rope';
  const tokens = tf.input({shape: [rope ? null : o.seqLength], dtype: 'int32', name: 'tokens'});
  const embedded = tf.layers.embedding({inputDim: o.vocabSize, outputDim: o.modelDim, name: 'token_embedding'})
    .apply(tokens) as tf.SymbolicTensor;
  let x = rope ? embedded
    : new PositionEmbedding({maxLength: o.seqLength, name: 'position_embedding'}).apply(embedded) as tf.SymbolicTensor;
  for (let l = 0; l < o.numLayers; l++) {
    const norm1 = new FusedLayerNormalization({name: `block${l}_norm1`}).apply(x) as tf.SymbolicTensor;
    const kind = ATTENTION_KIND_TABLE[o.attention];
    const args: AnyAttentionArgs = {
      numHeads: o.numHeads, causal: o.causal, name: `block${l}_attention`,
      numKvHeads: o.numKvHeads,
      ...o.attentionArgs,
      ...(rope ? {positionEncoding: 'rope' as const} : {}),
      ...kind.blockArgs?.(o.attentionArgs, o.seed, l),
      ...(o.globalEvery != null && l % o.globalEvery === o.globalEvery - 1 ? {slidingWindow: null} : {}),
    };
    let a = attentionLayer(o.attention, args).apply(norm1) as tf.SymbolicTensor;
    // No seed: a seeded tfjs dropout layer draws the same mask on every call.
    if (o.dropout > 0) a = tf.layers.dropout({rate: o.dropout}).apply(a) as tf.SymbolicTensor;
    x = tf.layers.add({name: `block${l}_add1`}).apply([x, a]) as tf.SymbolicTensor;
    const norm2 = new FusedLayerNormalization({name: `block${l}_norm2`}).apply(x) as tf.SymbolicTensor;
    const hidden = new FusedDense({units: o.ffDim, activation: 'relu', name: `block${l}_ff1`})
      .apply(norm2) as tf.SymbolicTensor;
    let f = new FusedDense({units: o.modelDim, name: `block${l}_ff2`}).apply(hidden) as tf.SymbolicTensor;
    if (o.dropout > 0) f = tf.layers.dropout({rate: o.dropout}).apply(f) as tf.SymbolicTensor;
    x = tf.layers.add({name: `block${l}_add2`}).apply([x, f]) as tf.SymbolicTensor;
  }
  const final = new FusedLayerNormalization({name: 'final_norm'}).apply(x) as tf.SymbolicTensor;
  const probs = tf.layers.dense({units: o.vocabSize, activation: 'softmax', name: 'head'})
    .apply(final) as tf.SymbolicTensor;
  const model = tf.model({inputs: tokens, outputs: probs, name: `transformer_${o.attention}`});
  seededInit(model, o.seed);
  return model;
}

/**
 * Draws the random trainable weights again from `seed` (tfjs initializers draw from an
 * unseeded generator, and one seeded initializer shared by several weights would give
 * them equal values): embeddings and positions N(0, 0.02), kernels Glorot-uniform with
 * their fan-in and fan-out. Biases, norms and gates keep their constant initial values.
 */
export function seededInit(model: tf.LayersModel, seed: number): void {
  model.trainableWeights.forEach((w, i) => {
    const shape = w.shape as number[];
    const name = w.name.replace(/_\d+$/, '');
    // Never 0: tfjs' random ops treat a seed of 0 as no seed at all.
    const weightSeed = seed * 1009 + i + 1;
    let value: tf.Tensor | null = null;
    if (/(embeddings|positions)$/.test(name)) {
      value = tf.randomNormal(shape, 0, 0.02, 'float32', weightSeed);
    } else if (/kernel$/.test(name)) {
      const size = shape.reduce((a, b) => a * b, 1);
      // Attention output kernels [H, Dv, E] map H*Dv inputs to E; the others map shape[0] inputs.
      const fanIn = /attention_output\/kernel$/.test(name) ? size / shape[shape.length - 1] : shape[0];
      const fanOut = size / fanIn;
      const limit = Math.sqrt(6 / (fanIn + fanOut));
      value = tf.randomUniform(shape, -limit, limit, 'float32', weightSeed);
    }
    if (value != null) {
      w.write(value);
      value.dispose();
    }
  });
}
