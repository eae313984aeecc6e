/**
 * What every attention layer shares: the arguments, the query/key/value/output
 * projections (Keras weight layout), input unpacking, mask handling and
 * serialization. A concrete layer only says how to attend (`attend`), and so stays thin.
 */
import * as tf from '@tensorflow/tfjs';
import {KERAS_CALL_NAMES, KERAS_LAYER_NAMES, LAYER_ARGS, TFJS_KWARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {checkLayerWeights, WeightShape} from '../core/limits';
import {CausalAlignment, CausalArg, causalAlignment, strictestCausal} from '../ops/causal';
import {AttentionWithWeights, scaledDotProductAttention} from '../ops/sdpa';
import {checkRopeBase, checkRopeDim, DEFAULT_ROPE_BASE, rotaryEmbedding} from '../ops/rope';
import {appendRows, DECODE_BROADCAST_MAX_ROWS, decodeAttention} from '../ops/kv_cache';
import {
  assertBoolean, assertDivisible, assertNonNegativeInt, assertOneOf, assertPositiveInt, assertRate, checkArgNames,
} from '../core/validate';
import {callMaskParts, MaskParts, paddingOnly, zeroPaddedQueries} from './call_masks';
import {assertInputs, checkInputShapes, graphInputs, Shape, unpackInputs} from './inputs';
import {
  ConstraintArg, getConstraint, getInitializer, getRegularizer, InitializerArg, RegularizerArg,
  serializeObject,
} from './config';
import {projectFromHeads, projectToHeads} from './projection';
import {setWeightCopies} from './set_weights';

export {MaskParts, paddingOnly, zeroPaddedQueries} from './call_masks';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;
// tfjs' own Kwargs type is `{[key: string]: any}`.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Kwargs = {[key: string]: any};

export const DEFAULT_KERNEL_INITIALIZER = 'glorotUniform';

/**
 * A cached step of exact attention with fewer query-key pairs than this per batch and head
 * (t * (index + t)) forms its scores directly (see attendCached); the same bound as
 * MultiHeadAttention's 'auto' (T = S = 1024).
 */
export const DECODE_DENSE_SCORES = 1024 * 1024;
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
  ...TFJS_KWARGS,
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

/** Keyword arguments of `apply`/`call`. */
export interface AttentionCallArgs {
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

/**
 * The state a causal layer decodes from: plain tensors the caller owns. A cached call
 * leaves the cache it was given as it was and returns a new one (fresh tensors); dispose
 * each with tf.dispose(cache) when done with it.
 */
// A type, not an interface, so that tf.dispose(cache) and tf.tidy(() => cache) take it.
export type AttentionCache = {
  /** The name of the layer that made it (a cache works only with its own layer). */
  readonly layer: string;
  readonly batchSize: number;
  /** The most positions it can hold. */
  readonly maxLength: number;
  /** Positions it holds: the next call's default cacheIndex. */
  readonly length: number;
  readonly tensors: Readonly<Record<string, tf.Tensor>>;
};

/** Bytes of a cache's tensors (float32). */
export function cacheBytes(cache: AttentionCache): number {
  return Object.values(cache.tensors).reduce((n, t) => n + 4 * t.size, 0);
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
}

/**
 * What a kind of attention can do, declared once per layer class (`capabilitiesFor`) and
 * enforced by the base class: a layer never has to refuse these itself.
 */
export interface AttentionCapabilities {
  /** Can return the [B, H, T, S] attention scores (returnAttentionScores). */
  scores: boolean;
  /** Can drop attention probabilities while training (dropout > 0). */
  dropout: boolean;
  /**
   * Takes any attention mask broadcastable to [B, H, T, S]. When false, only key padding
   * ([B, 1, S]) and query padding ([B, T, 1]) masks: attend() then receives the key padding
   * alone as its mask, and the base zeroes the rows of padded queries.
   */
  fullMasks: boolean;
  /** Queries and keys may have different lengths. */
  crossLengths: boolean;
  /**
   * Whether a cache must be fed in order: true for running states (linear, local-global),
   * whose cacheIndex must equal cache.length; false for key/value buffers, which may also
   * go back (cacheIndex below cache.length overwrites from there).
   */
  appendOnlyCache: boolean;
  /** The causal alignments `causal` may ask for. */
  causalAlignments: readonly CausalAlignment[];
  /**
   * Why scores and dropout are missing and what to use instead, for the messages that
   * refuse them: "<subject> cannot return attention scores: <why>; <scores>" and
   * "<subject> does not support dropout (received r): <why>; use dropout 0, or <dropout>".
   * subject defaults to the class name.
   */
  limits?: {why: string; scores: string; dropout: string; subject?: string};
}

/** Everything: what MultiHeadAttention with the standard implementation does. */
export const FULL_CAPABILITIES: Readonly<AttentionCapabilities> = {
  scores: true, dropout: true, fullMasks: true, crossLengths: true, causalAlignments: ['top-left', 'bottom-right'],
  appendOnlyCache: false,
};

const NO_LIMITS = {why: 'it does not form the attention probabilities', scores: 'use MultiHeadAttention for them',
  dropout: 'MultiHeadAttention for attention dropout'};

/** The UNSUPPORTED error for dropout > 0 on a kind that cannot drop probabilities; `who` names the layer. */
export function dropoutError(who: string, rate: number, caps: AttentionCapabilities): AttentionError {
  const limits = caps.limits ?? NO_LIMITS;
  return new AttentionError('UNSUPPORTED',
    `${who} does not support dropout (received ${rate}): ${limits.why}; use dropout 0, or ${limits.dropout}`);
}

/** The UNSUPPORTED error for returnAttentionScores on a kind that never forms the scores. */
export function scoresError(who: string, caps: AttentionCapabilities): AttentionError {
  const limits = caps.limits ?? NO_LIMITS;
  return new AttentionError('UNSUPPORTED', `${who} cannot return attention scores: ${limits.why}; ${limits.scores}`);
}

/** The call arguments a layer applied to symbolic inputs keeps for the calls tfjs makes without them. */
type GraphCallArgs = {returnAttentionScores: boolean; useCausalMask: boolean};

/** Fresh tensors with the same values (a returned cache never shares a tensor with the one given). */
function cloneAll(tensors: Readonly<Record<string, tf.Tensor>>): Record<string, tf.Tensor> {
  return Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, tf.clone(t)]));
}

function optionalPositiveInt(name: string, value: number | null | undefined): number | null {
  if (value == null) return null;
  assertPositiveInt(name, value);
  return value;
}

/** A built layer's sizes: model dims of query, key, value and output; head dims of keys and values. */
interface LayerDims {Eq: number; Ek: number; Ev: number; D: number; Dv: number; Eout: number}

export abstract class AttentionLayerBase extends tf.layers.Layer {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly useBias: boolean;
  readonly dropout: number;
  /** As given: false, true, 'top-left' or 'bottom-right'. */
  readonly causal: CausalArg;
  /** The alignment `causal` asks for; null when not causal. */
  protected readonly causalAlign: CausalAlignment | null;
  readonly positionEncoding: PositionEncoding;
  readonly ropeBase: number;
  /** As given (null: the whole head). */
  protected readonly ropeDimArg: number | null;

  /**
   * The constructor arguments of this kind beyond ATTENTION_LAYER_ARGS; every other name
   * is refused. A subclass lists its own.
   */
  static readonly ownArgs: readonly string[] = [];
  /**
   * What this kind can do for the given constructor arguments (the base enforces it).
   * A subclass declares its own; the default is everything.
   */
  static capabilitiesFor(_args: AttentionLayerArgs): AttentionCapabilities {
    return FULL_CAPABILITIES;
  }
  /** What this layer can do (its class's capabilitiesFor, for its arguments). */
  readonly capabilities: AttentionCapabilities;
  /** The arguments as given (null = derive from the input at build time). */
  protected readonly headDimArg: number | null;
  protected readonly valueDimArg: number | null;
  protected readonly outputDimArg: number | null;
  protected readonly kernelInitializer: ReturnType<typeof getInitializer>;
  protected readonly biasInitializer: ReturnType<typeof getInitializer>;
  protected readonly kernelRegularizer: ReturnType<typeof getRegularizer>;
  protected readonly biasRegularizer: ReturnType<typeof getRegularizer>;
  protected readonly kernelConstraint: ReturnType<typeof getConstraint>;
  protected readonly biasConstraint: ReturnType<typeof getConstraint>;

  /** Resolved in build(). */
  protected dims: LayerDims | null = null;
  protected queryKernel!: tf.LayerVariable;
  protected queryBias: tf.LayerVariable | null = null;
  protected keyKernel!: tf.LayerVariable;
  protected keyBias: tf.LayerVariable | null = null;
  protected valueKernel!: tf.LayerVariable;
  protected valueBias: tf.LayerVariable | null = null;
  protected outputKernel!: tf.LayerVariable;
  protected outputBias: tf.LayerVariable | null = null;

  /** Set by apply() so computeOutputShape/computeMask know whether scores are returned. */
  private returnScores = false;
  /** The call arguments of this layer's graph nodes; null until applied to symbolic inputs. */
  private graphCallArgs: GraphCallArgs | null = null;

  constructor(args: AttentionLayerArgs) {
    super(AttentionLayerBase.checkedArgs(args, new.target));
    assertPositiveInt('numHeads', args.numHeads);
    const numKvHeads = args.numKvHeads ?? args.numHeads;
    assertPositiveInt('numKvHeads', numKvHeads);
    assertDivisible('numHeads', args.numHeads, 'numKvHeads', numKvHeads);
    this.numHeads = args.numHeads;
    this.numKvHeads = numKvHeads;
    this.headDimArg = optionalPositiveInt('headDim', args.headDim);
    this.valueDimArg = optionalPositiveInt('valueDim', args.valueDim);
    this.outputDimArg = optionalPositiveInt('outputDim', args.outputDim);
    this.useBias = args.useBias ?? true;
    assertBoolean('useBias', this.useBias);
    this.dropout = args.dropout ?? 0;
    assertRate('dropout', this.dropout);
    this.causal = args.causal ?? false;
    this.causalAlign = causalAlignment(this.causal);
    this.positionEncoding = args.positionEncoding ?? 'none';
    assertOneOf('positionEncoding', this.positionEncoding, POSITION_ENCODINGS);
    this.ropeBase = args.ropeBase ?? DEFAULT_ROPE_BASE;
    checkRopeBase(this.ropeBase);
    this.ropeDimArg = optionalPositiveInt('ropeDim', args.ropeDim);
    if (this.ropeDimArg != null && this.ropeDimArg % 2 !== 0) {
      throw new AttentionError('INVALID_CONFIG', `ropeDim must be even, received ${this.ropeDimArg}`);
    }
    if (this.ropeDimArg != null && this.positionEncoding !== 'rope') {
      throw new AttentionError('INVALID_CONFIG', "ropeDim is for positionEncoding 'rope'; pass positionEncoding: 'rope'");
    }
    const who = AttentionLayerBase.nameOf(new.target);
    this.capabilities = (new.target as unknown as typeof AttentionLayerBase).capabilitiesFor(args);
    if (this.dropout > 0 && !this.capabilities.dropout) {
      throw dropoutError(this.capabilities.limits?.subject ?? who, this.dropout, this.capabilities);
    }
    if (this.causalAlign != null && !this.capabilities.causalAlignments.includes(this.causalAlign)) {
      throw new AttentionError('UNSUPPORTED',
        `${who} does not support causal ${show(this.causal)}; it supports ` +
        this.capabilities.causalAlignments.map((a) => `'${a}'`).join(', '));
    }
    this.kernelInitializer = getInitializer(args.kernelInitializer ?? DEFAULT_KERNEL_INITIALIZER);
    this.biasInitializer = getInitializer(args.biasInitializer ?? DEFAULT_BIAS_INITIALIZER);
    this.kernelRegularizer = getRegularizer(args.kernelRegularizer);
    this.biasRegularizer = getRegularizer(args.biasRegularizer);
    this.kernelConstraint = getConstraint(args.kernelConstraint);
    this.biasConstraint = getConstraint(args.biasConstraint);
    this.supportsMasking = true;
  }

  /** The class name users know the layer by, for messages. */
  private static nameOf(cls: {className?: string; name: string}): string {
    return cls.className ?? cls.name;
  }

  /** Refuses a non-object and any name this kind does not take, before tfjs' Layer sees them. */
  private static checkedArgs(args: AttentionLayerArgs, cls: {className?: string; name: string; ownArgs?: readonly string[]})
      : AttentionLayerArgs {
    const who = AttentionLayerBase.nameOf(cls);
    if (args == null || typeof args !== 'object' || Array.isArray(args)) {
      throw new AttentionError('INVALID_CONFIG', `${who} arguments must be an object, received ${show(args)}`);
    }
    const known = [...ATTENTION_LAYER_ARGS, ...(cls.ownArgs ?? []), ...LAYER_ARGS];
    checkArgNames(who, args, known, KERAS_LAYER_NAMES);
    return args;
  }

  /**
   * The weights `build(inputShape)` creates, in getWeights() order, worked out from the
   * arguments and the input shapes alone: nothing is allocated. Throws what build throws
   * for shapes the layer cannot take.
   */
  weightShapes(inputShape: Shape | Shape[]): WeightShape[] {
    const {dims, projections} = this.planWeights(inputShape);
    return [...projections, ...this.extraWeightShapes(dims)];
  }

  /** The dims and the projection weights for `inputShape`, checked; nothing allocated. */
  private planWeights(inputShape: Shape | Shape[]): {dims: LayerDims; projections: WeightShape[]} {
    const [qs, vs, ks] = this.checkShapes(inputShape, false);
    const Eq = qs[2] as number;
    const Ev = vs[2] as number;
    const Ek = ks[2] as number;
    const H = this.numHeads;
    const G = this.numKvHeads;
    let D = this.headDimArg;
    if (D == null) {
      if (Eq % H !== 0) {
        throw new AttentionError('INVALID_CONFIG',
          `headDim is not set and the query's last dim (${Eq}) is not divisible by numHeads (${H}); pass headDim`);
      }
      D = Eq / H;
    }
    const Dv = this.valueDimArg ?? D;
    const Eout = this.outputDimArg ?? Eq;
    if (this.positionEncoding === 'rope') checkRopeDim(this.ropeDimArg ?? D, D);
    const dims = {Eq, Ek, Ev, D, Dv, Eout};
    // Keras layout and getWeights() order: query, key, value, attention_output; kernel then bias.
    const projections: WeightShape[] = [];
    for (const [name, kernel, bias] of [['query', [Eq, H, D], [H, D]], ['key', [Ek, G, D], [G, D]],
      ['value', [Ev, G, Dv], [G, Dv]], ['attention_output', [H, Dv, Eout], [Eout]]] as const) {
      projections.push({name: `${name}/kernel`, shape: kernel});
      if (this.useBias) projections.push({name: `${name}/bias`, shape: bias});
    }
    return {dims, projections};
  }

  build(inputShape: Shape | Shape[]): void {
    const {dims, projections} = this.planWeights(inputShape);
    const who = AttentionLayerBase.nameOf(this.constructor as {className?: string; name: string});
    checkLayerWeights(who, [...projections, ...this.extraWeightShapes(dims)]); // before anything is allocated
    this.dims = dims;
    const made = new Map<string, tf.LayerVariable>();
    for (const {name, shape} of projections) {
      const kernel = name.endsWith('/kernel');
      made.set(name, this.addWeight(name, [...shape], 'float32', kernel ? this.kernelInitializer : this.biasInitializer,
        (kernel ? this.kernelRegularizer : this.biasRegularizer) ?? undefined, true,
        (kernel ? this.kernelConstraint : this.biasConstraint) ?? undefined));
    }
    this.queryKernel = made.get('query/kernel')!;
    this.queryBias = made.get('query/bias') ?? null;
    this.keyKernel = made.get('key/kernel')!;
    this.keyBias = made.get('key/bias') ?? null;
    this.valueKernel = made.get('value/kernel')!;
    this.valueBias = made.get('value/bias') ?? null;
    this.outputKernel = made.get('attention_output/kernel')!;
    this.outputBias = made.get('attention_output/bias') ?? null;
    this.buildExtra(dims);
    this.built = true;
  }

  /** Layer-specific weights, created after the projections (so they follow them in getWeights()). */
  protected buildExtra(_dims: {D: number; Dv: number}): void {}

  /** The shapes of the weights buildExtra creates, in its order. */
  protected extraWeightShapes(_dims: {D: number; Dv: number}): WeightShape[] {
    return [];
  }

  /**
   * How the layer attends: q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] -> [B, H, T, Dv],
   * or `{output, weights}` with weights [B, H, T, S] when options.returnScores.
   */
  protected abstract attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D,
                            options: AttendOptions): tf.Tensor | AttentionWithWeights;

  /** The kind's rule on the query and key lengths (null when unknown); called in shape inference and call. */
  private checkLengths(T: number | null, S: number | null): void {
    if (!this.capabilities.crossLengths && T != null && S != null && T !== S) {
      throw new AttentionError('UNSUPPORTED',
        `${this.getClassName()} needs queries and keys of the same length (positions are shared), ` +
        `received T=${T} and S=${S}`);
    }
  }

  /**
   * [query, value, key] shapes of a layer input, checked as an eager call checks tensors
   * (so a graph that cannot run fails when it is built, not at predict): rank 3 with a
   * known last dim, that dim equal to the one the layer was built with, one batch size,
   * and key and value of one length (sizes still unknown, null, pass); with `lengths`,
   * also the kind's own rule on T and S (checkLengths; build leaves it to the call, so
   * that a refused call still leaves a built layer).
   */
  private checkShapes(inputShape: Shape | Shape[], lengths = true): [Shape, Shape, Shape] {
    const built = this.dims != null ? [this.dims.Eq, this.dims.Ev, this.dims.Ek] as [number, number, number] : null;
    const shapes = checkInputShapes(inputShape, built);
    if (lengths) this.checkLengths(shapes[0][1], shapes[1][1] ?? shapes[2][1]);
    return shapes;
  }

  /**
   * tfjs' model executor (predict, fit, evaluate) calls layers without the call
   * arguments they were given in the graph, so a layer applied to symbolic inputs with
   * returnAttentionScores or useCausalMask remembers them and keeps using them in calls
   * that do not say otherwise. attentionMask and the explicit padding masks cannot be
   * part of a graph for the same reason.
   */
  override apply(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                 kwargs?: Kwargs): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[] {
    const who = AttentionLayerBase.nameOf(this.constructor as {className?: string; name: string});
    assertInputs(inputs, `${who}.apply`);
    checkArgNames(`${who}.apply`, kwargs, ATTENTION_CALL_ARGS, KERAS_CALL_NAMES);
    for (const flag of ['returnAttentionScores', 'useCausalMask', 'training'] as const) {
      if (kwargs?.[flag] != null) assertBoolean(flag, kwargs[flag]);
    }
    if (kwargs?.returnAttentionScores === true && !this.capabilities.scores) {
      throw scoresError(this.capabilities.limits?.subject ?? who, this.capabilities);
    }
    const first = Array.isArray(inputs) ? inputs[0] : inputs;
    if (kwargs?.cache != null || kwargs?.cacheIndex != null) {
      return this.applyCached(inputs, kwargs as Kwargs) as unknown as tf.Tensor[];
    }
    if (first instanceof tf.SymbolicTensor) {
      for (const name of ['attentionMask', 'queryMask', 'valueMask', 'keyMask'] as const) {
        if (kwargs?.[name] != null) {
          throw new AttentionError('UNSUPPORTED',
            `${name} cannot be given when building a model graph (tfjs does not pass it on in predict/fit); ` +
            'use padding masks (embedding({maskZero: true})) or call the layer on tensors');
        }
      }
      const graph: GraphCallArgs = {
        returnAttentionScores: kwargs?.returnAttentionScores === true,
        useCausalMask: kwargs?.useCausalMask === true,
      };
      const before = this.graphCallArgs;
      for (const name of ['returnAttentionScores', 'useCausalMask'] as const) {
        if (before != null && before[name] !== graph[name]) {
          throw new AttentionError('UNSUPPORTED',
            `layer '${this.name}' is already in a graph with ${name} ${before[name]}; ` +
            'a layer shared between graph nodes must use one setting');
        }
      }
      this.graphCallArgs = graph;
      this.returnScores = graph.returnAttentionScores;
      return super.apply(graphInputs(inputs as tf.SymbolicTensor | tf.SymbolicTensor[]), kwargs);
    }
    this.returnScores = kwargs?.returnAttentionScores ?? this.graphCallArgs?.returnAttentionScores ?? false;
    const useCausalMask = kwargs?.useCausalMask ?? this.graphCallArgs?.useCausalMask ?? false;
    return super.apply(inputs, {...kwargs, returnAttentionScores: this.returnScores, useCausalMask});
  }

  /** apply() with a cache: checks what a cached call may not take, then decode(). */
  private applyCached(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[], kwargs: Kwargs)
      : [tf.Tensor3D, AttentionCache] {
    const who = `${this.getClassName()}.apply`;
    if (kwargs.cache == null) {
      throw new AttentionError('INVALID_CACHE', `${who}: cacheIndex needs a cache (from createCache)`);
    }
    const x = Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : null) : inputs;
    if (x instanceof tf.SymbolicTensor) {
      throw new AttentionError('UNSUPPORTED',
        `${who}: a cache works on tensors (eager decoding), not when building a model graph`);
    }
    if (x == null) {
      throw new AttentionError('UNSUPPORTED', `${who}: a cached call is self-attention on one input x [batch, newLength, features]`);
    }
    for (const name of ['attentionMask', 'queryMask', 'valueMask', 'keyMask', 'mask', 'useCausalMask'] as const) {
      if (kwargs[name] != null && kwargs[name] !== false) {
        throw new AttentionError('UNSUPPORTED', `${who}: ${name} cannot be given with a cache (decoding is causal and unpadded)`);
      }
    }
    if (kwargs.returnAttentionScores === true || kwargs.training === true) {
      throw new AttentionError('UNSUPPORTED',
        `${who}: a cached call is inference: returnAttentionScores and training cannot be true`);
    }
    if (kwargs.cacheIndex != null) assertNonNegativeInt('cacheIndex', kwargs.cacheIndex);
    return this.decode(x, kwargs.cache, kwargs.cacheIndex ?? undefined);
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const args = (kwargs ?? {}) as AttentionCallArgs;
    return tf.tidy(() => {
      const isList = Array.isArray(inputs);
      const [query, value, key] = unpackInputs<tf.Tensor>(inputs, isList);
      this.checkInputs(query, value, key);
      const [B, T] = query.shape as number[];
      const S = value.shape[1] as number;
      const parts = callMaskParts(inputs, args, [B, this.numHeads, T, S]);
      // Kinds that never form [B, H, T, S] get the key padding as their mask; padded query rows are zeroed below.
      const padding = this.capabilities.fullMasks ? null : paddingOnly(parts, this.getClassName());
      const present = [parts.query, parts.key, parts.attention].filter((m): m is tf.Tensor4D => m != null);
      const mask = padding != null ? padding.key
        : present.length === 0 ? null : present.reduce((a, b) => tf.logicalAnd(a, b) as tf.Tensor4D);
      const causal = strictestCausal(this.causalAlign, args.useCausalMask === true ? 'top-left' : null, T, S);

      // Without a cache, queries are at positions 0 .. T - 1 and keys at 0 .. S - 1.
      const [q, k, v] = this.project(query, value, key, 0); // [B, H, T, D], [B, G, S, D], [B, G, S, Dv]
      const returnScores = args.returnAttentionScores === true;
      const attended = this.attend(q, k, v, {mask, parts, causal, training: args.training === true, returnScores});
      let o = attended instanceof tf.Tensor ? attended as tf.Tensor4D : attended.output;    // [B, H, T, Dv]
      if (padding != null) o = zeroPaddedQueries(o, padding.query);
      const out = projectFromHeads(o, this.outputKernel.read(), this.outputBias?.read() ?? null); // [B, T, Eout]
      if (!returnScores) return out;
      if (attended instanceof tf.Tensor) {
        throw scoresError(this.capabilities.limits?.subject ?? this.getClassName(), this.capabilities);
      }
      return [out, attended.weights];
    });
  }

  /**
   * q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] from the inputs, with RoPE (when on)
   * rotating q and k from position `start`.
   */
  private project(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor, start: number): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
    let q = projectToHeads(query, this.queryKernel.read(), this.queryBias?.read() ?? null); // [B, H, T, D]
    let k = projectToHeads(key, this.keyKernel.read(), this.keyBias?.read() ?? null);       // [B, G, S, D]
    const v = projectToHeads(value, this.valueKernel.read(), this.valueBias?.read() ?? null); // [B, G, S, Dv]
    if (this.positionEncoding === 'rope') {
      const rope = {start, base: this.ropeBase, dim: this.ropeDim ?? undefined};
      q = rotaryEmbedding(q, rope);
      k = rotaryEmbedding(k, rope);
    }
    return [q, k, v];
  }

  /** Channels RoPE rotates (null until built when not given, or when RoPE is off). */
  get ropeDim(): number | null {
    if (this.positionEncoding !== 'rope') return null;
    return this.ropeDimArg ?? this.dims?.D ?? null;
  }

  /**
   * An empty cache for decoding `batchSize` sequences of up to `maxLength` positions (see
   * AttentionCache). The layer must be causal and built (applied once, or in a built model).
   */
  createCache(batchSize: number, maxLength: number): AttentionCache {
    assertPositiveInt('batchSize', batchSize);
    assertPositiveInt('maxLength', maxLength);
    this.checkCacheable();
    return {layer: this.name, batchSize, maxLength, length: 0, tensors: this.emptyCacheTensors(batchSize, maxLength)};
  }

  private checkCacheable(): void {
    if (this.causalAlign == null) {
      throw new AttentionError('UNSUPPORTED',
        `${this.getClassName()} '${this.name}' is not causal: only a causal layer decodes from a cache ` +
        '(each new position must not see later ones); make it with causal: true');
    }
    if (this.dims == null) {
      throw new AttentionError('INVALID_CONFIG',
        `${this.getClassName()} '${this.name}' is not built yet: apply it to an input (or build it) before createCache`);
    }
  }

  /**
   * The tensors of an empty cache. The default, for exact attention: keys [B, G, 0, D] and
   * values [B, G, 0, Dv], grown by each call to the positions held (at most L = maxLength),
   * so a grouped-query cache is H / G times smaller than a multi-head one.
   */
  protected emptyCacheTensors(B: number, _L: number): Record<string, tf.Tensor> {
    const {D, Dv} = this.dims!;
    return {key: tf.zeros([B, this.numKvHeads, 0, D]), value: tf.zeros([B, this.numKvHeads, 0, Dv])};
  }

  /**
   * Attention of the new positions index .. index + t - 1 (q [B, H, t, D], k [B, G, t, D],
   * v [B, G, t, Dv], q and k already rotated) over the cache; returns [B, H, t, Dv] and the
   * cache's new tensors. The default, for exact attention: the new keys and values follow
   * the first `index` cached rows, and the queries attend to every key up to their own
   * position (causal, bottom-right over the index + t keys), computed by the size of the
   * step, whatever the layer's own implementation (it is the same exact attention): with at
   * most DECODE_BROADCAST_MAX_ROWS query rows per key/value head by decodeAttention
   * (broadcast products: matrix-vector products are slow on wasm); a [t, index + t] score matrix smaller
   * than DECODE_DENSE_SCORES by scaledDotProductAttention (flash tiles would only add loop
   * overhead there); a longer prefill by the layer's own attend().
   */
  protected attendCached(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, cache: AttentionCache,
                         index: number): {output: tf.Tensor4D; tensors: Record<string, tf.Tensor>} {
    const key = appendRows(cache.tensors.key, k, index);       // [B, G, index + t, D]
    const value = appendRows(cache.tensors.value, v, index);   // [B, G, index + t, Dv]
    const S = key.shape[2];
    const t = q.shape[2];
    const rows = (this.numHeads / this.numKvHeads) * t; // query rows per key/value head
    const attended = rows <= DECODE_BROADCAST_MAX_ROWS ? decodeAttention(q, key, value)
      : t * S < DECODE_DENSE_SCORES ? scaledDotProductAttention(q, key, value, {causal: 'bottom-right'})
      : this.attend(q, key, value, {
        mask: null, parts: {query: null, key: null, attention: null}, causal: 'bottom-right', training: false,
        returnScores: false,
      });
    return {output: attended instanceof tf.Tensor ? attended as tf.Tensor4D : attended.output, tensors: {key, value}};
  }

  /**
   * One cached call: x [B, t, Eq] holds positions index .. index + t - 1 (index: kwargs'
   * cacheIndex, default cache.length). Returns [y [B, t, Eout], the new cache].
   */
  decode(x: tf.Tensor, cache: AttentionCache, cacheIndex?: number): [tf.Tensor3D, AttentionCache] {
    const who = `${this.getClassName()} '${this.name}'`;
    this.checkCacheable();
    const c = cache as Partial<AttentionCache> | null;
    if (c == null || typeof c !== 'object' || typeof c.layer !== 'string' || c.tensors == null) {
      throw new AttentionError('INVALID_CACHE', `${who}: cache must come from createCache, received ${show(cache)}`);
    }
    if (c.layer !== this.name) {
      throw new AttentionError('INVALID_CACHE', `${who}: the cache belongs to layer '${c.layer}', not to this one`);
    }
    if (Object.values(cache.tensors).some((t) => t.isDisposed)) {
      throw new AttentionError('INVALID_CACHE', `${who}: the cache's tensors are disposed (was it replaced by a newer one?)`);
    }
    if (!(x instanceof tf.Tensor) || x.rank !== 3 || x.dtype !== 'float32' || x.shape[2] !== this.dims!.Eq) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `${who}: a cached call takes x [batch, newLength, ${this.dims!.Eq}] float32 (self-attention), received ` +
        (x instanceof tf.Tensor ? `a ${x.dtype} tensor of shape ${show(x.shape)}` : show(x)));
    }
    const [B, t] = x.shape as number[];
    if (B !== cache.batchSize) {
      throw new AttentionError('INVALID_CACHE', `${who}: the cache holds a batch of ${cache.batchSize}, received ${B} rows`);
    }
    const index = cacheIndex ?? cache.length;
    if (!Number.isInteger(index) || index < 0 || index > cache.length) {
      throw new AttentionError('INVALID_CACHE',
        `${who}: cacheIndex must be an integer in [0, ${cache.length}] (the positions the cache holds), received ${show(cacheIndex)}`);
    }
    if (this.capabilities.appendOnlyCache && index !== cache.length) {
      throw new AttentionError('INVALID_CACHE',
        `${who} keeps a running state: cacheIndex must be the positions already in the cache (${cache.length}), ` +
        `received ${index}`);
    }
    if (index + t > cache.maxLength) {
      throw new AttentionError('CACHE_FULL',
        `${who}: positions ${index} .. ${index + t - 1} do not fit a cache of maxLength ${cache.maxLength}; ` +
        'make a longer one with createCache(batchSize, maxLength)');
    }
    if (t === 0) return [tf.zeros([B, 0, this.dims!.Eout]) as tf.Tensor3D, {...cache, tensors: cloneAll(cache.tensors)}];
    const {y, tensors} = tf.tidy(() => {
      const [q, k, v] = this.project(x, x, x, index);
      const {output, tensors} = this.attendCached(q, k, v, cache, index);
      return {y: projectFromHeads(output, this.outputKernel.read(), this.outputBias?.read() ?? null), tensors};
    });
    return [y, {layer: this.name, batchSize: B, maxLength: cache.maxLength, length: index + t, tensors}];
  }

  private checkInputs(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor): void {
    for (const [name, t] of [['query', query], ['value', value], ['key', key]] as const) {
      if (t.dtype !== 'float32') {
        throw new AttentionError('INVALID_CONFIG', `${name} must be float32, received dtype ${t.dtype}`);
      }
    }
    this.checkShapes([query.shape, value.shape, key.shape]);
  }

  /** Sets copies of the given tensors, checked against the layer's weights (set_weights.ts). */
  override setWeights(weights: tf.Tensor[]): void {
    setWeightCopies(this, weights, (copies) => super.setWeights(copies));
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape | Shape[] {
    const [qs, vs] = this.checkShapes(inputShape);
    const Eout = this.outputDimArg ?? qs[qs.length - 1];
    const out: Shape = [qs[0], qs[1], Eout];
    if (!this.returnScores) return out;
    return [out, [qs[0], this.numHeads, qs[1], vs[1]]];
  }

  /** The output carries the query's padding mask, as in Keras; scores carry none. */
  override computeMask(inputs: tf.Tensor | tf.Tensor[], mask?: tf.Tensor | tf.Tensor[]): tf.Tensor | tf.Tensor[] {
    let queryMask: tf.Tensor | null;
    if (mask == null) {
      const query = Array.isArray(inputs) ? inputs[0] : inputs;
      queryMask = (query as tf.Tensor & {kerasMask?: tf.Tensor | null}).kerasMask ?? null;
    } else {
      queryMask = Array.isArray(mask) ? mask[0] ?? null : mask;
    }
    // tfjs types masks as non-null, but null is how it says "no mask".
    return (this.returnScores ? [queryMask, null] : queryMask) as tf.Tensor | tf.Tensor[];
  }

  override getConfig(): tf.serialization.ConfigDict {
    const config: tf.serialization.ConfigDict = {
      numHeads: this.numHeads,
      numKvHeads: this.numKvHeads,
      headDim: this.headDimArg,
      valueDim: this.valueDimArg,
      outputDim: this.outputDimArg,
      useBias: this.useBias,
      dropout: this.dropout,
      causal: this.causal,
      positionEncoding: this.positionEncoding,
      ropeBase: this.ropeBase,
      ropeDim: this.ropeDimArg,
      kernelInitializer: serializeObject(this.kernelInitializer) as unknown as tf.serialization.ConfigDict,
      biasInitializer: serializeObject(this.biasInitializer) as unknown as tf.serialization.ConfigDict,
      kernelRegularizer: serializeObject(this.kernelRegularizer) as unknown as tf.serialization.ConfigDict,
      biasRegularizer: serializeObject(this.biasRegularizer) as unknown as tf.serialization.ConfigDict,
      kernelConstraint: serializeObject(this.kernelConstraint) as unknown as tf.serialization.ConfigDict,
      biasConstraint: serializeObject(this.biasConstraint) as unknown as tf.serialization.ConfigDict,
    };
    return {...super.getConfig(), ...config};
  }
}
