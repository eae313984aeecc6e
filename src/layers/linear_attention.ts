/**
 * LinearAttention layer: multi-head attention with grouped-query heads whose attention is
 * approximated with FAVOR+ positive orthogonal random features ("Rethinking Attention
 * with Performers", Choromanski et al. 2021), in time and memory linear in the sequence
 * length. Same projections and weight layout as MultiHeadAttention, followed by one
 * non-trainable weight, `projection` [numFeatures, headDim]: the random features. Being
 * a weight, it is saved with the model, so a loaded model answers exactly as the saved
 * one did.
 *
 * Args (besides the tfjs LayerArgs): those of MultiHeadAttention (see
 * AttentionLayerArgs): numHeads H, numKvHeads G, headDim D, valueDim Dv, outputDim,
 * useBias, causal, initializers, regularizers and constraints; plus
 *   numFeatures M: random features per head; default round(D ln D) (D=64: 266).
 *   kernel: 'softmax' (FAVOR+, approximates softmax attention; default) or 'relu'.
 *   seed: integer seed of the projection; default: drawn at construction (and saved in
 *     the config). Redraw n uses seed + n, so a seed fixes the whole sequence of draws.
 *   featureRedrawInterval: draw new features every this many training calls (calls with
 *     training: true, as model.fit makes); 0 (default) = never. Performer redraws to
 *     keep one unlucky draw from biasing training.
 *   chunkSize: rows per chunk of the causal prefix sums (default DEFAULT_CHUNK_SIZE).
 *   dropout must be 0: the attention probabilities are never formed.
 *
 * Call arguments:
 *   inputs: x [batch, length, features] (self-attention), [query, value] or
 *     [query, value, key], as MultiHeadAttention.
 *   attentionMask: only masks that are key padding ([batch, 1, sourceLength] or
 *     broadcastable to [batch, 1, 1, sourceLength]) or query padding
 *     ([batch, targetLength, 1]); others throw UNSUPPORTED (the T x S matrix is never formed).
 *   training: counts towards featureRedrawInterval.
 *   returnAttentionScores: not supported; throws UNSUPPORTED.
 *   Padding masks propagated by tfjs (embedding({maskZero: true})) are honoured: padded
 *   keys are never attended and padded queries give the output bias only.
 *
 * Returns: [batch, targetLength, outputDim].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {linearAttention} from '../ops/linear';
import {FEATURE_KERNELS, FeatureKernel} from '../ops/linear_features';
import {DEFAULT_CHUNK_SIZE} from '../ops/linear_prefix_sums';
import {isPlanned, WeightShape} from '../core/limits';
import {defaultNumFeatures, orthogonalProjection} from '../ops/random_features';
import {assertNonNegativeInt, assertOneOf, assertPositiveInt} from '../core/validate';
import {EMPTY_SHIFT, LinearState, linearStateStep} from '../ops/linear_decode';
import {AttendOptions, AttentionLayerArgs} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {AttentionCapabilities, FULL_CAPABILITIES} from './capabilities';
import {CacheStrategy} from './decoding';
import {Kwargs} from './tfjs_types';

export interface LinearAttentionArgs extends AttentionLayerArgs {
  /** Random features per head M. Default round(D ln D) for head dim D. */
  numFeatures?: number | null;
  /** Feature map: 'softmax' (FAVOR+) or 'relu'. Default 'softmax'. */
  kernel?: FeatureKernel;
  /** Integer seed of the random projection. Default: drawn at construction. */
  seed?: number | null;
  /** Redraw the features every this many training calls; 0 = never. Default 0. */
  featureRedrawInterval?: number;
  /** Rows per chunk of the causal prefix sums. Default DEFAULT_CHUNK_SIZE. */
  chunkSize?: number;
}

export class LinearAttention extends AttentionLayerBase {
  static className = 'LinearAttention';
  static override readonly ownArgs: readonly string[] = ['numFeatures', 'kernel', 'seed', 'featureRedrawInterval', 'chunkSize'];
  readonly kernel: FeatureKernel;
  readonly seed: number;
  readonly featureRedrawInterval: number;
  readonly chunkSize: number;
  private readonly numFeaturesArg: number | null;
  private projectionWeight: tf.LayerVariable | null = null;
  /** Draws made since construction (0 = the initial one); draw n uses seed + n. */
  private draws = 0;
  /** Training calls since the last draw. */
  private trainingCalls = 0;

  /** Padding masks only, no scores, no dropout: the [T, S] matrix is never formed. */
  static override capabilitiesFor(): AttentionCapabilities {
    return {
      ...FULL_CAPABILITIES, scores: false, dropout: false, fullMasks: false, appendOnlyCache: true, flexMods: false,
      limits: {
        why: 'linear attention never forms the [batch, heads, targetLength, sourceLength] attention matrix',
        scores: 'use MultiHeadAttention for that', dropout: 'MultiHeadAttention for attention dropout',
      },
    };
  }

  constructor(args: LinearAttentionArgs) {
    super(args);
    this.numFeaturesArg = args.numFeatures ?? null;
    if (this.numFeaturesArg != null) assertPositiveInt('numFeatures', this.numFeaturesArg);
    this.kernel = args.kernel ?? 'softmax';
    assertOneOf('kernel', this.kernel, FEATURE_KERNELS);
    const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
    if (typeof seed !== 'number' || !Number.isInteger(seed)) {
      throw new AttentionError('INVALID_CONFIG', `seed must be an integer, received ${show(seed)}`);
    }
    this.seed = seed;
    this.featureRedrawInterval = args.featureRedrawInterval ?? 0;
    assertNonNegativeInt('featureRedrawInterval', this.featureRedrawInterval);
    this.chunkSize = args.chunkSize ?? DEFAULT_CHUNK_SIZE;
    assertPositiveInt('chunkSize', this.chunkSize);
  }

  /** M, known once the layer is built (the default depends on the head dim). */
  get numFeatures(): number | null {
    return this.projectionWeight != null ? this.projectionWeight.shape[0] as number : this.numFeaturesArg;
  }

  protected override extraWeightShapes({D}: {D: number; Dv: number}): WeightShape[] {
    return [{name: 'projection', shape: [this.numFeaturesArg ?? defaultNumFeatures(D), D]}];
  }

  protected override buildExtra(dims: {D: number; Dv: number}): void {
    const [{shape}] = this.extraWeightShapes(dims);
    this.projectionWeight = this.addWeight('projection', [...shape], 'float32', tf.initializers.zeros(),
      undefined, false);
    // A stand-in weight of a model sized without allocating (io/model_plan.ts) takes no values.
    if (!isPlanned(this.projectionWeight)) this.writeProjection();
  }

  /**
   * Draws new random features (the next seed in the sequence) into the `projection`
   * weight. Throws if the layer is not built yet.
   */
  redrawFeatures(): void {
    if (this.projectionWeight == null) {
      throw new AttentionError('INVALID_CONFIG',
        'redrawFeatures() needs a built layer: apply it to an input (or build it) first');
    }
    this.draws += 1;
    this.trainingCalls = 0;
    this.writeProjection();
  }

  private writeProjection(): void {
    const w = this.projectionWeight!;
    const [M, D] = w.shape as number[];
    const p = orthogonalProjection(M, D, (this.seed + this.draws) >>> 0);
    w.write(p);
    p.dispose();
  }

  /** Counts training calls and redraws the features every featureRedrawInterval of them. */
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    if (kwargs?.training === true && this.featureRedrawInterval > 0) {
      if (this.trainingCalls >= this.featureRedrawInterval) this.redrawFeatures();
      this.trainingCalls += 1;
    }
    return super.call(inputs, kwargs);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions): tf.Tensor4D {
    return linearAttention(q, k, v, {
      projection: this.projectionWeight!.read(), causal: options.causal ?? false, kernel: this.kernel,
      mask: options.mask, chunkSize: this.chunkSize,
    }); // [B, H, T, Dv]
  }

  /**
   * Decodes from the running sums of causal linear attention, kv [B, G, M, Dv + 1],
   * v1 [B, G, 1, Dv + 1] and shift [B, G, 1, 1]: each step is one step of the recurrence,
   * in constant time and memory per position, whatever the length.
   */
  protected override readonly decoding: CacheStrategy = {
    emptyTensors: (B) => {
      const {Dv} = this.dims!;
      const G = this.numKvHeads;
      const M = this.numFeatures as number;
      return {kv: tf.zeros([B, G, M, Dv + 1]), v1: tf.zeros([B, G, 1, Dv + 1]),
        shift: tf.fill([B, G, 1, 1], EMPTY_SHIFT)};
    },
    step: (q, k, v, cache) => {
      const {kv, v1, shift} = cache.tensors as unknown as LinearState;
      const {output, state} = linearStateStep(q, k, v, {kv, v1, shift},
        {projection: this.projectionWeight!.read(), kernel: this.kernel, chunkSize: this.chunkSize});
      return {output, tensors: {...state}};
    },
  };

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      numFeatures: this.numFeaturesArg,
      kernel: this.kernel,
      seed: this.seed,
      featureRedrawInterval: this.featureRedrawInterval,
      chunkSize: this.chunkSize,
    };
  }
}
tf.serialization.registerClass(LinearAttention);
