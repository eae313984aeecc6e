/**
 * LocalGlobalAttention layer: multi-head attention with grouped-query heads in which
 * each query attends to the keys within `windowSize` positions of it (sliding window,
 * as in Longformer, Beltagy et al. 2020) and, separately, to a set of global positions;
 * the two results are blended per head and channel by a learned gate:
 *   out = sigmoid(gate[h, c]) * local + (1 - sigmoid(gate[h, c])) * global.
 * Computed by `localGlobalAttention` in O(T * (W + Ng)) time and memory. Same
 * projections and weight layout as MultiHeadAttention, followed by the trainable
 * `gate` [H, Dv] (initialised to zeros: an even blend).
 *
 * Args (besides the tfjs LayerArgs): those of MultiHeadAttention (see
 * AttentionLayerArgs): numHeads H, numKvHeads G, headDim D, valueDim Dv, outputDim,
 * useBias, causal, initializers, regularizers and constraints; plus
 *   windowSize W >= 1: local keys j with |i - j| <= W.
 *   globalIndices: positions every query also attends to (default []); indices at or
 *     beyond the sequence length are ignored in a call; change them with setGlobalIndices.
 *   blockSize: rows per local block (>= windowSize; default localBlockSize(windowSize)).
 *   dropout must be 0 (not implemented for this layer).
 *
 * Call arguments:
 *   inputs: x [batch, length, features] (self-attention). [query, value] and
 *     [query, value, key] work when the lengths match (local windows need shared positions).
 *   attentionMask: only key padding ([batch, 1, sourceLength]) or query padding
 *     ([batch, targetLength, 1]); others throw UNSUPPORTED.
 *   returnAttentionScores: not supported; throws UNSUPPORTED.
 *   Padding masks propagated by tfjs (embedding({maskZero: true})) are honoured.
 *
 * Returns: [batch, targetLength, outputDim].
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../core/errors';
import {WeightShape} from '../core/limits';
import {LocalGlobalState, localGlobalStep} from '../ops/local_global_decode';
import {checkGlobalIndices, localBlockSize, localGlobalAttention, validGlobalIndices} from '../ops/local_global';
import {assertPositiveInt} from '../core/validate';
import {AttendOptions, AttentionLayerArgs} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {AttentionCapabilities, FULL_CAPABILITIES} from './capabilities';
import {AttentionCache, CachedStep, CacheStrategy} from './decoding';

export interface LocalGlobalAttentionArgs extends AttentionLayerArgs {
  /** W >= 1: each query sees the keys within W positions of it. */
  windowSize: number;
  /** Positions every query also attends to. Default []. */
  globalIndices?: number[];
  /** Rows per local block, >= windowSize. Default localBlockSize(windowSize). */
  blockSize?: number | null;
}

export class LocalGlobalAttention extends AttentionLayerBase {
  static className = 'LocalGlobalAttention';
  static override readonly ownArgs: readonly string[] = ['windowSize', 'globalIndices', 'blockSize'];
  readonly windowSize: number;
  private readonly blockSizeArg: number | null;
  private indices: number[];
  private gateWeight: tf.LayerVariable | null = null;

  /** Padding masks only, shared positions (T == S), no scores, no dropout. */
  static override capabilitiesFor(): AttentionCapabilities {
    return {
      ...FULL_CAPABILITIES, scores: false, dropout: false, fullMasks: false, crossLengths: false, appendOnlyCache: true,
      flexMods: false,
      limits: {
        why: 'it never forms the [batch, heads, targetLength, sourceLength] attention probabilities',
        scores: 'use MultiHeadAttention with a SparseMask for that',
        dropout: 'MultiHeadAttention with a SparseMask for attention dropout',
      },
    };
  }

  constructor(args: LocalGlobalAttentionArgs) {
    super(args);
    assertPositiveInt('windowSize', args.windowSize);
    this.windowSize = args.windowSize;
    this.blockSizeArg = args.blockSize ?? null;
    if (this.blockSizeArg != null) {
      assertPositiveInt('blockSize', this.blockSizeArg);
      if (this.blockSizeArg < this.windowSize) {
        throw new AttentionError('INVALID_CONFIG',
          `blockSize (${this.blockSizeArg}) must be at least windowSize (${this.windowSize})`);
      }
    }
    const indices = args.globalIndices ?? [];
    checkGlobalIndices(indices);
    this.indices = [...indices];
  }

  /** The global positions (as given; those beyond a call's length are ignored in it). */
  get globalIndices(): number[] {
    return [...this.indices];
  }

  /** Replaces the global positions for later calls (checked as the constructor's globalIndices). */
  setGlobalIndices(indices: number[]): void {
    checkGlobalIndices(indices);
    this.indices = [...indices];
  }

  /** Rows per local block. */
  get blockSize(): number {
    return this.blockSizeArg ?? localBlockSize(this.windowSize);
  }

  protected override extraWeightShapes({Dv}: {D: number; Dv: number}): WeightShape[] {
    return [{name: 'gate', shape: [this.numHeads, Dv]}];
  }

  protected override buildExtra(dims: {D: number; Dv: number}): void {
    const [{shape}] = this.extraWeightShapes(dims);
    this.gateWeight = this.addWeight('gate', [...shape], 'float32', tf.initializers.zeros(), undefined, true);
  }

  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions): tf.Tensor4D {
    return localGlobalAttention(q, k, v, {
      windowSize: this.windowSize, globalIndices: this.indices, gate: this.gateWeight!.read(),
      causal: options.causal ?? false, mask: options.mask, blockSize: this.blockSize,
    }); // [B, H, T, Dv]
  }

  /**
   * Decodes from the last min(W, maxLength) keys and values and those of the global
   * positions below maxLength: O(W + Ng) per layer, whatever the length.
   */
  protected override readonly decoding: CacheStrategy = {
    emptyTensors: (B, L) => {
      const {D, Dv} = this.dims!;
      const G = this.numKvHeads;
      const W = Math.min(this.windowSize, L);
      const Ng = validGlobalIndices(this.indices, L).length;
      return {
        windowKey: tf.zeros([B, G, W, D]), windowValue: tf.zeros([B, G, W, Dv]),
        globalKey: tf.zeros([B, G, Ng, D]), globalValue: tf.zeros([B, G, Ng, Dv]),
      };
    },
    step: (q, k, v, cache, index) => this.stepCached(q, k, v, cache, index),
  };

  /** The new positions in pieces of at most max(W, 64) rows, each over the window and the globals seen. */
  private stepCached(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, cache: AttentionCache, index: number): CachedStep {
    const globals = validGlobalIndices(this.indices, cache.maxLength);
    if (globals.length !== cache.tensors.globalKey.shape[2]) {
      throw new AttentionError('INVALID_CACHE',
        `LocalGlobalAttention '${this.name}': the cache holds ${cache.tensors.globalKey.shape[2]} global positions, ` +
        `the layer now has ${globals.length} (setGlobalIndices was called after createCache); make a new cache`);
    }
    let state = cache.tensors as unknown as LocalGlobalState;
    const [B, H, t, D] = q.shape;
    const [, G, , Dv] = v.shape;
    const piece = Math.max(this.windowSize, 64);
    const outputs: tf.Tensor4D[] = [];
    for (let s = 0; s < t; s += piece) {
      const n = Math.min(piece, t - s);
      // Rows s .. s + n - 1 of x [B, N, t, X]: [B, N, n, X].
      const pieceOf = (x: tf.Tensor4D, N: number, X: number) => (n === t ? x : tf.slice(x, [0, 0, s, 0], [B, N, n, X]));
      const step = localGlobalStep(pieceOf(q, H, D), pieceOf(k, G, D), pieceOf(v, G, Dv), state,
        {windowSize: this.windowSize, globals, gate: this.gateWeight!.read(), index: index + s});
      outputs.push(step.output);
      state = step.state;
    }
    return {output: outputs.length === 1 ? outputs[0] : tf.concat(outputs, 2), tensors: {...state}};
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      windowSize: this.windowSize,
      globalIndices: [...this.indices],
      blockSize: this.blockSizeArg,
    };
  }
}
tf.serialization.registerClass(LocalGlobalAttention);
