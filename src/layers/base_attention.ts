/**
 * What every attention layer shares: the arguments, the query/key/value/output
 * projections (Keras weight layout), input unpacking, mask handling and
 * serialization. A concrete layer only says how to attend (`attend`), and so stays thin.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../errors';
import {normalizeMask} from '../ops/masks';
import {AttentionWithWeights} from '../ops/sdpa';
import {assertBoolean, assertDivisible, assertPositiveInt, assertRate} from '../validate';
import {
  ConstraintArg, getConstraint, getInitializer, getRegularizer, InitializerArg, RegularizerArg,
  serializeObject,
} from './config';
import {projectFromHeads, projectToHeads} from './projection';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;
type Shape = (number | null)[];
// tfjs' own Kwargs type is `{[key: string]: any}`.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Kwargs = {[key: string]: any};

export const DEFAULT_KERNEL_INITIALIZER = 'glorotUniform';
export const DEFAULT_BIAS_INITIALIZER = 'zeros';

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
  /** Query i attends to key j only if j <= i + (S - T). Default false. */
  causal?: boolean;
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
}

/** Keyword arguments of `apply`/`call`. */
export interface AttentionCallArgs {
  /** Bool or 0/1, 1 = may attend: [B, T, S], or [T, S], or broadcastable to [B, H, T, S]. */
  attentionMask?: tf.Tensor | null;
  /** Enables dropout. */
  training?: boolean;
  /** Return `[output, scores]` with scores [B, H, T, S]. */
  returnAttentionScores?: boolean;
  /** Masks propagated by tfjs (for example from `embedding({maskZero: true})`). */
  mask?: tf.Tensor | (tf.Tensor | null)[] | null;
}

/** The masks of one call, kept apart for layers that cannot take a full [B, H, T, S] mask. */
export interface MaskParts {
  /** [B, 1, T, 1] bool: the queries that are not padding; null when no query padding mask. */
  query: tf.Tensor4D | null;
  /** [B, 1, 1, S] bool: the keys that are not padding (value and key masks); null when none. */
  key: tf.Tensor4D | null;
  /** The call's attentionMask as a rank-4 bool tensor broadcastable to [B, H, T, S]; null when none. */
  attention: tf.Tensor4D | null;
}

/** What a concrete layer's attend() receives besides q, k and v. */
export interface AttendOptions {
  /** Combined padding and attention mask, bool, broadcastable to [B, H, T, S]; causal is not in it. */
  mask: tf.Tensor4D | null;
  /** The same masks, not yet combined. */
  parts: MaskParts;
  training: boolean;
  returnScores: boolean;
}

/**
 * For layers whose op never forms the [B, H, T, S] matrix and so takes padding masks
 * only: the call's masks as query padding [B, 1, T, 1] and key padding [B, 1, 1, S],
 * with the attentionMask folded into whichever of the two it is ([B, 1, S] or
 * [B, T, 1]). Any other attentionMask throws UNSUPPORTED; `who` names the layer.
 */
export function paddingOnly(parts: MaskParts, who: string): {query: tf.Tensor4D | null; key: tf.Tensor4D | null} {
  let {query, key} = parts;
  const attention = parts.attention;
  if (attention != null) {
    const [, Hm, Tm, Sm] = attention.shape;
    if (Hm === 1 && Tm === 1) key = key == null ? attention : tf.logicalAnd(key, attention) as tf.Tensor4D;
    else if (Hm === 1 && Sm === 1) query = query == null ? attention : tf.logicalAnd(query, attention) as tf.Tensor4D;
    else {
      throw new AttentionError('UNSUPPORTED',
        `${who} takes only key padding ([batch, 1, sourceLength]) or query padding ([batch, targetLength, 1]) ` +
        `attention masks, received one of shape ${show(attention.shape)}: it never forms the ` +
        '[batch, heads, targetLength, sourceLength] attention matrix that other masks need');
    }
  }
  return {query, key};
}

/** o [B, H, T, Dv] with the rows of padded queries (query [B, 1, T, 1] false) set to zero. */
export function zeroPaddedQueries(o: tf.Tensor4D, query: tf.Tensor4D | null): tf.Tensor4D {
  return query == null ? o : tf.mul(o, tf.cast(query, 'float32')) as tf.Tensor4D;
}

function lastDim(shape: Shape, name: string): number {
  const d = shape[shape.length - 1];
  if (shape.length !== 3 || d == null) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `${name} must have shape [batch, length, features] with known features, received ${show(shape)}`);
  }
  return d;
}

function optionalPositiveInt(name: string, value: number | null | undefined): number | null {
  if (value == null) return null;
  assertPositiveInt(name, value);
  return value;
}

function boolMask(m: tf.Tensor): tf.Tensor {
  return m.dtype === 'bool' ? m : tf.notEqual(m, 0);
}

export abstract class AttentionLayerBase extends tf.layers.Layer {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly useBias: boolean;
  readonly dropout: number;
  readonly causal: boolean;
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
  protected dims: {Eq: number; Ek: number; Ev: number; D: number; Dv: number; Eout: number} | null = null;
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
  /** returnAttentionScores of this layer's graph nodes; null until applied to symbolic inputs. */
  private graphReturnsScores: boolean | null = null;

  constructor(args: AttentionLayerArgs) {
    super(args);
    if (args == null || typeof args !== 'object') {
      throw new AttentionError('INVALID_CONFIG', `layer arguments must be an object, received ${show(args)}`);
    }
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
    assertBoolean('causal', this.causal);
    this.kernelInitializer = getInitializer(args.kernelInitializer ?? DEFAULT_KERNEL_INITIALIZER);
    this.biasInitializer = getInitializer(args.biasInitializer ?? DEFAULT_BIAS_INITIALIZER);
    this.kernelRegularizer = getRegularizer(args.kernelRegularizer);
    this.biasRegularizer = getRegularizer(args.biasRegularizer);
    this.kernelConstraint = getConstraint(args.kernelConstraint);
    this.biasConstraint = getConstraint(args.biasConstraint);
    this.supportsMasking = true;
  }

  /** Splits the layer input into [query, value, key] shapes or tensors (self-attention repeats x). */
  private static unpack<T>(inputs: T | T[], isList: boolean): [T, T, T] {
    if (!isList) return [inputs as T, inputs as T, inputs as T];
    const list = inputs as T[];
    if (list.length < 1 || list.length > 3) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `inputs must be x, [x], [query, value] or [query, value, key], received ${list.length} tensors`);
    }
    const [query, value = list[0], key = value] = list;
    return [query, value, key];
  }

  build(inputShape: Shape | Shape[]): void {
    const isList = Array.isArray(inputShape[0]);
    const [qs, vs, ks] = AttentionLayerBase.unpack<Shape>(inputShape as Shape | Shape[], isList);
    const Eq = lastDim(qs, 'query');
    const Ev = lastDim(vs, 'value');
    const Ek = lastDim(ks, 'key');
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
    this.dims = {Eq, Ek, Ev, D, Dv, Eout};

    const kernel = (name: string, shape: number[]) => this.addWeight(name, shape, 'float32',
      this.kernelInitializer, this.kernelRegularizer ?? undefined, true, this.kernelConstraint ?? undefined);
    const bias = (name: string, shape: number[]) => this.useBias ? this.addWeight(name, shape, 'float32',
      this.biasInitializer, this.biasRegularizer ?? undefined, true, this.biasConstraint ?? undefined) : null;
    // Keras layout and getWeights() order: query, key, value, attention_output; kernel then bias.
    this.queryKernel = kernel('query/kernel', [Eq, H, D]);
    this.queryBias = bias('query/bias', [H, D]);
    this.keyKernel = kernel('key/kernel', [Ek, G, D]);
    this.keyBias = bias('key/bias', [G, D]);
    this.valueKernel = kernel('value/kernel', [Ev, G, Dv]);
    this.valueBias = bias('value/bias', [G, Dv]);
    this.outputKernel = kernel('attention_output/kernel', [H, Dv, Eout]);
    this.outputBias = bias('attention_output/bias', [Eout]);
    this.buildExtra(this.dims);
    this.built = true;
  }

  /** Layer-specific weights, created after the projections (so they follow them in getWeights()). */
  protected buildExtra(_dims: {D: number; Dv: number}): void {}

  /**
   * How the layer attends: q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] -> [B, H, T, Dv],
   * or `{output, weights}` with weights [B, H, T, S] when options.returnScores.
   */
  protected abstract attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D,
                            options: AttendOptions): tf.Tensor | AttentionWithWeights;

  /**
   * tfjs' model executor (predict, fit, evaluate) calls layers without the call
   * arguments they were given in the graph, so a layer applied to symbolic inputs with
   * returnAttentionScores remembers it and keeps returning scores in calls that do not
   * say otherwise. attentionMask cannot be part of a graph for the same reason.
   */
  override apply(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                 kwargs?: Kwargs): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[] {
    const first = Array.isArray(inputs) ? inputs[0] : inputs;
    if (first instanceof tf.SymbolicTensor) {
      if (kwargs?.attentionMask != null) {
        throw new AttentionError('UNSUPPORTED',
          'attentionMask cannot be given when building a model graph (tfjs does not pass it on in predict/fit); ' +
          'use padding masks (embedding({maskZero: true})) or call the layer on tensors');
      }
      const scores = kwargs?.returnAttentionScores === true;
      if (this.graphReturnsScores != null && this.graphReturnsScores !== scores) {
        throw new AttentionError('UNSUPPORTED',
          `layer '${this.name}' is already in a graph with returnAttentionScores ${this.graphReturnsScores}; ` +
          'a layer shared between graph nodes must use one setting');
      }
      this.graphReturnsScores = scores;
      this.returnScores = scores;
      return super.apply(inputs, kwargs);
    }
    this.returnScores = kwargs?.returnAttentionScores ?? this.graphReturnsScores ?? false;
    return super.apply(inputs, {...kwargs, returnAttentionScores: this.returnScores});
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const args = kwargs as AttentionCallArgs;
    return tf.tidy(() => {
      const isList = Array.isArray(inputs);
      const [query, value, key] = AttentionLayerBase.unpack<tf.Tensor>(inputs, isList);
      this.checkInputs(query, value, key);
      const [B, T] = query.shape as number[];
      const S = value.shape[1] as number;
      const parts = this.maskParts(inputs, args, [B, this.numHeads, T, S]);
      const present = [parts.query, parts.key, parts.attention].filter((m): m is tf.Tensor4D => m != null);
      const mask = present.length === 0 ? null : present.reduce((a, b) => tf.logicalAnd(a, b) as tf.Tensor4D);

      const q = projectToHeads(query, this.queryKernel.read(), this.queryBias?.read() ?? null); // [B, H, T, D]
      const k = projectToHeads(key, this.keyKernel.read(), this.keyBias?.read() ?? null);       // [B, G, S, D]
      const v = projectToHeads(value, this.valueKernel.read(), this.valueBias?.read() ?? null); // [B, G, S, Dv]
      const returnScores = args.returnAttentionScores === true;
      const attended = this.attend(q, k, v, {mask, parts, training: args.training === true, returnScores});
      const o = attended instanceof tf.Tensor ? attended : attended.output;                  // [B, H, T, Dv]
      const out = projectFromHeads(o, this.outputKernel.read(), this.outputBias?.read() ?? null); // [B, T, Eout]
      if (!returnScores) return out;
      if (attended instanceof tf.Tensor) {
        throw new AttentionError('UNSUPPORTED', `${this.getClassName()} cannot return attention scores`);
      }
      return [out, attended.weights];
    });
  }

  private checkInputs(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor): void {
    const dims = this.dims!;
    const named: [string, tf.Tensor, number][] = [['query', query, dims.Eq], ['value', value, dims.Ev], ['key', key, dims.Ek]];
    for (const [name, t, built] of named) {
      if (t.rank !== 3) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `${name} must have shape [batch, length, features], received ${show(t.shape)}`);
      }
      if (t.shape[2] !== built) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `${name}'s last dim (${t.shape[2]}) differs from the one the layer was built with (${built})`);
      }
    }
    if (value.shape[0] !== query.shape[0] || key.shape[0] !== query.shape[0]) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `query, value and key must share the batch size, received ${query.shape[0]}, ${value.shape[0]} and ${key.shape[0]}`);
    }
    if (key.shape[1] !== value.shape[1]) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `key and value must have the same length, received ${key.shape[1]} and ${value.shape[1]}`);
    }
  }

  /**
   * Padding masks ([B, T] for the query, [B, S] for value and key, from tfjs' mask
   * propagation) and the attentionMask, brought to rank-4 bool tensors that broadcast
   * to [B, H, T, S]. Masked queries get no keys (zero rows).
   */
  private maskParts(inputs: tf.Tensor | tf.Tensor[], args: AttentionCallArgs,
                    target: [number, number, number, number]): MaskParts {
    const [B, , T, S] = target;
    const [qm, vm, km] = this.paddingMasks(inputs, args.mask);
    const check = (m: tf.Tensor, name: string, len: number) => {
      if (m.rank !== 2 || m.shape[0] !== B || m.shape[1] !== len) {
        throw new AttentionError('INVALID_MASK',
          `the ${name} padding mask must have shape [${B}, ${len}], received ${show(m.shape)}`);
      }
    };
    let query: tf.Tensor4D | null = null;
    if (qm != null) {
      check(qm, 'query', T);
      query = tf.reshape(boolMask(qm), [B, 1, T, 1]);
    }
    let key: tf.Tensor4D | null = null;
    for (const [m, name] of [[vm, 'value'], [km, 'key']] as const) {
      if (m == null) continue;
      check(m, name, S);
      const keys = tf.reshape(boolMask(m), [B, 1, 1, S]) as tf.Tensor4D;
      key = key == null ? keys : tf.logicalAnd(key, keys) as tf.Tensor4D;
    }
    const attention = args.attentionMask != null ? normalizeMask(args.attentionMask, target, 'attentionMask') : null;
    return {query, key, attention};
  }

  /** [queryMask, valueMask, keyMask] from the propagated mask(s) or the inputs' kerasMask. */
  private paddingMasks(inputs: tf.Tensor | tf.Tensor[], mask: AttentionCallArgs['mask'])
      : [tf.Tensor | null, tf.Tensor | null, tf.Tensor | null] {
    const list = Array.isArray(inputs) ? inputs : [inputs];
    let masks: (tf.Tensor | null | undefined)[];
    if (mask == null) {
      masks = list.map((x) => (x as tf.Tensor & {kerasMask?: tf.Tensor | null}).kerasMask ?? null);
    } else if (Array.isArray(mask)) {
      masks = mask;
    } else {
      // A single mask: for self-attention it masks queries and keys alike; tfjs'
      // model executor passes only the first input's mask, i.e. the query's.
      masks = list.length === 1 ? [mask] : [mask, null, null];
    }
    if (list.length === 1) return [masks[0] ?? null, masks[0] ?? null, masks[0] ?? null];
    const value = masks[1] ?? null;
    return [masks[0] ?? null, value, list.length === 3 ? (masks[2] ?? null) : value];
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape | Shape[] {
    const isList = Array.isArray(inputShape[0]);
    const [qs, vs] = AttentionLayerBase.unpack<Shape>(inputShape as Shape | Shape[], isList);
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
