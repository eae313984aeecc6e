/**
 * The arguments of the attention layers: what every kind's constructor takes (with its
 * checks and defaults), the keyword arguments of apply / call, and what a kind's attend()
 * receives.
 */
import * as tf from '@tensorflow/tfjs';
import {KERAS_LAYER_NAMES, LAYER_ARGS, TFJS_KWARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {CausalAlignment, CausalArg, causalAlignment} from '../ops/causal';
import {checkRopeBase, DEFAULT_ROPE_BASE} from '../ops/rope';
import {
  assertBoolean, assertDivisible, assertOneOf, assertPositiveInt, assertRate, checkArgNames,
} from '../core/validate';
import {MaskParts} from './call_masks';
import {ConstraintArg, InitializerArg, RegularizerArg} from './config';
import {AttentionCache} from './decoding';
import {FLEX_CALL_ARGS, FlexCallArgs} from './flex_layer';
import {LayerArgs} from './tfjs_types';
import {ProjectionArgs} from './projection_weights';

export const DEFAULT_KERNEL_INITIALIZER = 'glorotUniform';
export const DEFAULT_BIAS_INITIALIZER = 'zeros';

/** The constructor arguments every attention layer takes, besides tfjs' own LAYER_ARGS. */
export const ATTENTION_LAYER_ARGS = [
  'numHeads', 'numKvHeads', 'headDim', 'valueDim', 'outputDim', 'useBias', 'dropout', 'causal',
  'kernelInitializer', 'biasInitializer', 'kernelRegularizer', 'biasRegularizer', 'kernelConstraint', 'biasConstraint',
  'positionEncoding', 'ropeBase', 'ropeDim',
] as const;

export const POSITION_ENCODINGS = ['none', 'rope'] as const;
/** 'rope': rotary position embedding of q and k inside the layer; 'none': the layer sees no positions. */
export type PositionEncoding = typeof POSITION_ENCODINGS[number];

/** The keyword arguments of an attention layer's apply / call (tfjs' own `mask` and `training` among them). */
export const ATTENTION_CALL_ARGS = [
  'attentionMask', 'returnAttentionScores', 'useCausalMask', 'queryMask', 'valueMask', 'keyMask', 'cache', 'cacheIndex',
  ...FLEX_CALL_ARGS, ...TFJS_KWARGS,
] as const;

/** Arguments shared by every attention layer. */
export interface AttentionLayerArgs extends LayerArgs {
  /** Number of query heads H. */
  numHeads: number;
  /** Number of key/value heads G; must divide numHeads. Default numHeads (MHA); 1 is multi-query. */
  numKvHeads?: number | null;
  /** Size D of each query and key head. Default: the query's last dim / numHeads. */
  headDim?: number | null;
  /** Size Dv of each value head. Default headDim. */
  valueDim?: number | null;
  /** Last dim of the output. Default: the query's last dim. */
  outputDim?: number | null;
  /** Whether the projections have biases. Default true. */
  useBias?: boolean;
  /** Dropout rate on the attention probabilities while training, in [0, 1). Default 0. */
  dropout?: number;
  /**
   * Causal attention: true or 'bottom-right' lets query i attend to key j only if
   * j <= i + (S - T) (FlashAttention-2's alignment); 'top-left' only if j <= i (Keras'
   * use_causal_mask, PyTorch's is_causal). The same when T == S. Default false.
   */
  causal?: CausalArg;
  /** Initializer of the projection kernels. Default 'glorotUniform'. */
  kernelInitializer?: InitializerArg;
  /** Initializer of the projection biases. Default 'zeros'. */
  biasInitializer?: InitializerArg;
  /** Regularizer of the projection kernels. */
  kernelRegularizer?: RegularizerArg | null;
  /** Regularizer of the projection biases. */
  biasRegularizer?: RegularizerArg | null;
  /** Constraint on the projection kernels. */
  kernelConstraint?: ConstraintArg | null;
  /** Constraint on the projection biases. */
  biasConstraint?: ConstraintArg | null;
  /**
   * 'rope': rotary position embedding (RoPE) of q and k at their absolute positions, inside
   * the layer, so a cached decoding rotates each new key at its own position; 'none': no
   * positions (give them outside, as a learned table). Default 'none'.
   */
  positionEncoding?: PositionEncoding;
  /** RoPE's frequency base. Default 10000. */
  ropeBase?: number;
  /** Channels of each head that RoPE rotates, even and at most headDim. Default: the whole head. */
  ropeDim?: number | null;
}

/** Keyword arguments of `apply`/`call` (maskMod, scoreMod and blockMask: FlexCallArgs, on the kinds that take them). */
export interface AttentionCallArgs extends FlexCallArgs {
  /** Bool or 0/1, 1 = may attend: [B, T, S], or [T, S], or broadcastable to [B, H, T, S]. */
  attentionMask?: tf.Tensor | null;
  /** Enables dropout. */
  training?: boolean;
  /** Return `[output, scores]` with scores [B, H, T, S]. */
  returnAttentionScores?: boolean;
  /**
   * Keras' use_causal_mask: query i attends to key j only if j <= i (aligned top-left),
   * on top of the layer's own `causal`. Default false.
   */
  useCausalMask?: boolean;
  /** Keras' query_mask: bool or 0/1 [B, T], 0 = a padded query (its output row is the bias only). */
  queryMask?: tf.Tensor | null;
  /** Keras' value_mask: bool or 0/1 [B, S], 0 = a padded key/value position, never attended. */
  valueMask?: tf.Tensor | null;
  /** Keras' key_mask: as valueMask (both apply). */
  keyMask?: tf.Tensor | null;
  /** Masks propagated by tfjs (for example from `embedding({maskZero: true})`). */
  mask?: tf.Tensor | (tf.Tensor | null)[] | null;
  /**
   * A cache from createCache (or the one a previous cached call returned): the call then
   * decodes incrementally and returns `[output, newCache]`. Eager, self-attention, causal
   * only; null (or absent) is a plain call.
   */
  cache?: AttentionCache;
  /** The position of the input's first row, 0 .. cache.length; default cache.length (append). */
  cacheIndex?: number;
}

/** What a concrete layer's attend() receives besides q, k and v. */
export interface AttendOptions {
  /**
   * Combined padding and attention mask, bool, broadcastable to [B, H, T, S]; causal is not
   * in it. For a kind without fullMasks: the key padding alone, [B, 1, 1, S].
   */
  mask: tf.Tensor4D | null;
  /** The same masks, not yet combined. */
  parts: MaskParts;
  /** This call's causal alignment (the layer's `causal` and the call's useCausalMask together); null: none. */
  causal: CausalAlignment | null;
  training: boolean;
  returnScores: boolean;
  /** The call's mods and block mask (the kinds with flexMods). */
  flex?: FlexCallArgs;
}

/** A layer class as the argument checks see it: its names and the arguments it adds. */
export interface AttentionClassNames {
  className?: string;
  name: string;
  ownArgs?: readonly string[];
}

/** The class name users know a layer by, for messages. */
export function kindName(cls: AttentionClassNames): string {
  return cls.className ?? cls.name;
}

/** Refuses a non-object and any name the kind `cls` does not take, before tfjs' Layer sees them. */
export function checkedAttentionArgs(args: AttentionLayerArgs, cls: AttentionClassNames): AttentionLayerArgs {
  const who = kindName(cls);
  if (args == null || typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `${who} arguments must be an object, received ${show(args)}`);
  }
  const known = [...ATTENTION_LAYER_ARGS, ...(cls.ownArgs ?? []), ...LAYER_ARGS];
  checkArgNames(who, args, known, KERAS_LAYER_NAMES);
  return args;
}

/** The shared arguments of a layer, checked, with their defaults (null: derived from the input at build time). */
export interface SharedAttentionArgs extends ProjectionArgs {
  dropout: number;
  causal: CausalArg;
  /** The alignment `causal` asks for; null when not causal. */
  causalAlign: CausalAlignment | null;
  positionEncoding: PositionEncoding;
  ropeBase: number;
  ropeDim: number | null;
}

/** Checks the shared arguments but the initializers, regularizers and constraints, and fills in their defaults. */
export function checkSharedArgs(args: AttentionLayerArgs): SharedAttentionArgs {
  assertPositiveInt('numHeads', args.numHeads);
  const numKvHeads = args.numKvHeads ?? args.numHeads;
  assertPositiveInt('numKvHeads', numKvHeads);
  assertDivisible('numHeads', args.numHeads, 'numKvHeads', numKvHeads);
  const headDim = optionalPositiveInt('headDim', args.headDim);
  const valueDim = optionalPositiveInt('valueDim', args.valueDim);
  const outputDim = optionalPositiveInt('outputDim', args.outputDim);
  const useBias = args.useBias ?? true;
  assertBoolean('useBias', useBias);
  const dropout = args.dropout ?? 0;
  assertRate('dropout', dropout);
  const causal = args.causal ?? false;
  const causalAlign = causalAlignment(causal);
  const positionEncoding = args.positionEncoding ?? 'none';
  assertOneOf('positionEncoding', positionEncoding, POSITION_ENCODINGS);
  const ropeBase = args.ropeBase ?? DEFAULT_ROPE_BASE;
  checkRopeBase(ropeBase);
  const ropeDim = optionalPositiveInt('ropeDim', args.ropeDim);
  if (ropeDim != null && ropeDim % 2 !== 0) {
    throw new AttentionError('INVALID_CONFIG', `ropeDim must be even, received ${ropeDim}`);
  }
  if (ropeDim != null && positionEncoding !== 'rope') {
    throw new AttentionError('INVALID_CONFIG', "ropeDim is for positionEncoding 'rope'; pass positionEncoding: 'rope'");
  }
  return {numHeads: args.numHeads, numKvHeads, headDim, valueDim, outputDim, useBias, dropout, causal, causalAlign,
    positionEncoding, ropeBase, ropeDim};
}

function optionalPositiveInt(name: string, value: number | null | undefined): number | null {
  if (value == null) return null;
  assertPositiveInt(name, value);
  return value;
}
