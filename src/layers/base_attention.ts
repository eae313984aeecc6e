/**
 * AttentionLayerBase, what every attention layer shares: the query/key/value/output
 * projections (Keras weight layout), input unpacking, mask handling, cached decoding and
 * serialization. A concrete layer says how to attend (`attend`), what it can do
 * (`capabilitiesFor`) and, unless it decodes from keys and values, how it keeps its cache
 * (`decoding`), and so stays thin.
 */
import * as tf from '@tensorflow/tfjs';
import {KERAS_CALL_NAMES} from '../core/arguments';
import {AttentionError} from '../core/errors';
import {checkLayerWeights, WeightShape} from '../core/limits';
import {CausalAlignment, CausalArg, strictestCausal} from '../ops/causal';
import {AttentionWithWeights} from '../ops/sdpa';
import {checkRopeDim, rotaryEmbedding} from '../ops/rope';
import {assertBoolean, assertPositiveInt, checkArgNames} from '../core/validate';
import {
  ATTENTION_CALL_ARGS, AttendOptions, AttentionCallArgs, AttentionClassNames, AttentionLayerArgs, checkedAttentionArgs,
  checkSharedArgs, DEFAULT_BIAS_INITIALIZER, DEFAULT_KERNEL_INITIALIZER, kindName, PositionEncoding,
} from './attention_args';
import {
  AttentionOptionArgs, AttentionOptions, changesScores, changesVisibleScores, checkAttentionOptions, gateHeads,
  NO_OPTION_WEIGHTS,
  normalizeHeads, OptionMods, optionMods, OptionWeights, optionWeightsOf, optionWeightShapes, ALIBI_INITIALIZER,
} from './attention_options';
import {attendMask, callMaskParts, refuseMasksInGraph, zeroPaddedQueries} from './call_masks';
import {AttentionCapabilities, enforceCapabilities, FULL_CAPABILITIES, scoresError} from './capabilities';
import {getConstraint, getInitializer, getRegularizer, serializeObject} from './config';
import {
  AttentionCache, cachedCallInput, cachedStepIndex, CacheStrategy, checkCacheable, cloneTensors, keyValueCache,
} from './decoding';
import {callMods, checkFlexCall, FLEX_CALL_ARGS, FlexCallArgs, flexAttend, modsInContext, NO_FLEX} from './flex_layer';
import {readsSynchronously} from '../ops/block_mask';
import {denseModAttention} from '../ops/dense_mods';
import {MaskMod} from '../ops/flex_types';
import {GraphCallFlags} from './graph_call_flags';
import {assertFloat32Inputs, assertInputs, checkInputShapes, graphInputs, Shape, unpackInputs} from './inputs';
import {projectFromHeads, projectToHeads} from './projection';
import {LayerDims, planProjections} from './projection_weights';
import {setWeightCopies} from './set_weights';
import {Kwargs} from './tfjs_types';

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
  /**
   * How this kind keeps its cache and attends over it in a cached call. The default is the
   * exact key/value cache (keyValueCache); a kind that decodes otherwise supplies its own.
   */
  protected readonly decoding: CacheStrategy;
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

  /** The options of today's attention (attention_options.ts); all off on the kinds that do not take them. */
  readonly attentionOptions: AttentionOptions;
  /** The weights the options add (null where an option is off), made in build(). */
  private optionWeights: OptionWeights = NO_OPTION_WEIGHTS;
  /** The options' window mask mods, one per causal alignment (so calls can share a block mask). */
  protected readonly optionMasks = new Map<string, MaskMod>();

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
  /** The call flags of this layer's graph nodes, for the calls tfjs makes without them. */
  private readonly graphFlags = new GraphCallFlags(['returnAttentionScores', 'useCausalMask'] as const);

  constructor(args: AttentionLayerArgs) {
    super(checkedAttentionArgs(args, new.target));
    const shared = checkSharedArgs(args);
    this.numHeads = shared.numHeads;
    this.numKvHeads = shared.numKvHeads;
    this.headDimArg = shared.headDim;
    this.valueDimArg = shared.valueDim;
    this.outputDimArg = shared.outputDim;
    this.useBias = shared.useBias;
    this.dropout = shared.dropout;
    this.causal = shared.causal;
    this.causalAlign = shared.causalAlign;
    this.positionEncoding = shared.positionEncoding;
    this.ropeBase = shared.ropeBase;
    this.ropeDimArg = shared.ropeDim;
    this.capabilities = (new.target as unknown as typeof AttentionLayerBase).capabilitiesFor(args);
    enforceCapabilities(this.capabilities, kindName(new.target),
      {dropout: this.dropout, causal: {arg: this.causal, alignment: this.causalAlign}});
    this.kernelInitializer = getInitializer(args.kernelInitializer ?? DEFAULT_KERNEL_INITIALIZER);
    this.biasInitializer = getInitializer(args.biasInitializer ?? DEFAULT_BIAS_INITIALIZER);
    this.kernelRegularizer = getRegularizer(args.kernelRegularizer);
    this.biasRegularizer = getRegularizer(args.biasRegularizer);
    this.kernelConstraint = getConstraint(args.kernelConstraint);
    this.biasConstraint = getConstraint(args.biasConstraint);
    this.supportsMasking = true;
    this.attentionOptions = checkAttentionOptions(args as AttentionOptionArgs);
    this.decoding = keyValueCache({
      numHeads: this.numHeads, numKvHeads: this.numKvHeads, headDims: () => this.dims!,
      ownAttention: () => this.attendsWithMods() || changesScores(this.attentionOptions),
      window: this.causalAlign != null ? this.attentionOptions.slidingWindow : null,
      plainInWindow: () => !this.attendsWithMods() && !changesVisibleScores(this.attentionOptions),
      attendCausal: (q, k, v) => {
        const attended = this.attend(q, k, v, {mask: null, parts: {query: null, key: null, attention: null},
          causal: 'bottom-right', training: false, returnScores: false});
        return attended instanceof tf.Tensor ? attended as tf.Tensor4D : attended.output;
      },
    });
  }

  /** The class name users know the layer by, for messages. */
  private get kind(): string {
    return kindName(this.constructor as AttentionClassNames);
  }

  /**
   * The weights `build(inputShape)` creates, in getWeights() order, worked out from the
   * arguments and the input shapes alone: nothing is allocated. Throws what build throws
   * for shapes the layer cannot take.
   */
  weightShapes(inputShape: Shape | Shape[]): WeightShape[] {
    const {dims, projections} = this.planWeights(inputShape);
    return [...projections, ...this.extraWeightShapes(dims), ...this.optionWeightShapes(dims)];
  }

  /** The dims and the projection weights for `inputShape`, checked; nothing allocated. */
  private planWeights(inputShape: Shape | Shape[]): {dims: LayerDims; projections: WeightShape[]} {
    const planned = planProjections(this.checkShapes(inputShape, false), {numHeads: this.numHeads,
      numKvHeads: this.numKvHeads, headDim: this.headDimArg, valueDim: this.valueDimArg, outputDim: this.outputDimArg,
      useBias: this.useBias});
    const {D} = planned.dims;
    if (this.positionEncoding === 'rope') checkRopeDim(this.ropeDimArg ?? D, D);
    return planned;
  }

  build(inputShape: Shape | Shape[]): void {
    const {dims, projections} = this.planWeights(inputShape);
    const options = this.optionWeightShapes(dims);
    checkLayerWeights(this.kind, [...projections, ...this.extraWeightShapes(dims), ...options]); // before allocating
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
    // The options' weights, after every other one: as the kernels or biases, or their own start.
    const roles = {
      kernel: [this.kernelInitializer, this.kernelRegularizer, this.kernelConstraint],
      bias: [this.biasInitializer, this.biasRegularizer, this.biasConstraint],
      ones: [tf.initializers.ones(), null, null], zeros: [tf.initializers.zeros(), null, null],
      alibi: [ALIBI_INITIALIZER, null, null],
    } as const;
    for (const {name, shape, init} of options) {
      const [initializer, regularizer, constraint] = roles[init];
      made.set(name, this.addWeight(name, [...shape], 'float32', initializer, regularizer ?? undefined, true,
        constraint ?? undefined));
    }
    this.optionWeights = optionWeightsOf(made);
    this.built = true;
  }

  /** The weights of the options (attention_options.ts), after every other weight. */
  private optionWeightShapes(dims: LayerDims): ReturnType<typeof optionWeightShapes> {
    return optionWeightShapes(this.attentionOptions, dims, {H: this.numHeads, useBias: this.useBias});
  }

  /** True when the layer's own mods change its attention (cached steps then take attend() at any size). */
  protected attendsWithMods(): boolean {
    return false;
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

  /**
   * [query, value, key] shapes of a layer input, checked as an eager call checks tensors
   * (so a graph that cannot run fails when it is built, not at predict): rank 3 with a
   * known last dim, that dim equal to the one the layer was built with, one batch size,
   * and key and value of one length (sizes still unknown, null, pass); with `lengths`,
   * also the kind's own rule on the query and key lengths (build leaves it to the call,
   * so that a refused call still leaves a built layer).
   */
  private checkShapes(inputShape: Shape | Shape[], lengths = true): [Shape, Shape, Shape] {
    const built = this.dims != null ? [this.dims.Eq, this.dims.Ev, this.dims.Ek] as [number, number, number] : null;
    const shapes = checkInputShapes(inputShape, built);
    if (lengths) {
      enforceCapabilities(this.capabilities, this.getClassName(),
        {lengths: {T: shapes[0][1], S: shapes[1][1] ?? shapes[2][1]}});
    }
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
    const who = this.kind;
    assertInputs(inputs, `${who}.apply`);
    checkArgNames(`${who}.apply`, kwargs, ATTENTION_CALL_ARGS, KERAS_CALL_NAMES);
    for (const flag of ['returnAttentionScores', 'useCausalMask', 'training'] as const) {
      if (kwargs?.[flag] != null) assertBoolean(flag, kwargs[flag]);
    }
    enforceCapabilities(this.capabilities, who, {returnScores: kwargs?.returnAttentionScores === true});
    const flexGiven = FLEX_CALL_ARGS.filter((name) => kwargs?.[name] != null);
    if (flexGiven.length > 0 && !this.capabilities.flexMods) {
      throw new AttentionError('UNSUPPORTED', `${who} does not take ${flexGiven.join(', ')}: mask and score mods ` +
        'run in flexAttention, which MultiHeadAttention and FlashAttention use');
    }
    if (flexGiven.length > 0) checkFlexCall(kwargs as FlexCallArgs);

    if (kwargs?.cache != null || kwargs?.cacheIndex != null) {
      const x = cachedCallInput(inputs, kwargs, `${this.getClassName()}.apply`);
      return this.decode(x, kwargs.cache, kwargs.cacheIndex ?? undefined) as unknown as tf.Tensor[];
    }
    if ((Array.isArray(inputs) ? inputs[0] : inputs) instanceof tf.SymbolicTensor) {
      refuseMasksInGraph(kwargs);
      if (flexGiven.length > 0) {
        throw new AttentionError('UNSUPPORTED', `${flexGiven.join(', ')} cannot be given when building a model graph ` +
          '(tfjs does not pass call arguments on in predict/fit): give built-in mods as the layer\'s maskMod and ' +
          'scoreMod, or call the layer on tensors');
      }
      const flags = this.graphFlags.forGraph(this.name, kwargs);
      this.graphFlags.remember(flags);
      this.returnScores = flags.returnAttentionScores;
      return super.apply(graphInputs(inputs as tf.SymbolicTensor | tf.SymbolicTensor[]), kwargs);
    }
    const flags = this.graphFlags.forCall(kwargs);
    this.returnScores = flags.returnAttentionScores;
    return super.apply(inputs, {...kwargs, ...flags});
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const args = (kwargs ?? {}) as AttentionCallArgs;
    // Here, not in apply: a functional model calls its layers' call directly.
    if (modsInContext() && !this.capabilities.flexMods) {
      throw new AttentionError('UNSUPPORTED', `${this.kind} was called within withAttentionMods, but takes no mask or ` +
        'score mods: they run in flexAttention, which MultiHeadAttention and FlashAttention use');
    }
    return tf.tidy(() => {
      const isList = Array.isArray(inputs);
      const [query, value, key] = unpackInputs<tf.Tensor>(inputs, isList);
      assertFloat32Inputs(query, value, key);
      this.checkShapes([query.shape, value.shape, key.shape]);
      const [B, T] = query.shape as number[];
      const S = value.shape[1] as number;
      const parts = callMaskParts(inputs, args, [B, this.numHeads, T, S]);
      // Kinds that never form [B, H, T, S] get the key padding as their mask; padded query rows are zeroed below.
      const {mask, queryPadding} = attendMask(parts, this.capabilities.fullMasks, this.getClassName());
      const causal = strictestCausal(this.causalAlign, args.useCausalMask === true ? 'top-left' : null, T, S);

      // Without a cache, queries are at positions 0 .. T - 1 and keys at 0 .. S - 1.
      const [q, k, v] = this.project(query, value, key, 0); // [B, H, T, D], [B, G, S, D], [B, G, S, Dv]
      const returnScores = args.returnAttentionScores === true;
      const flex = callMods({maskMod: args.maskMod, scoreMod: args.scoreMod, blockMask: args.blockMask});
      const training = args.training === true;
      const attended = this.attend(q, k, v, {mask, parts, causal, training, returnScores, flex});
      const o = zeroPaddedQueries(attended instanceof tf.Tensor ? attended as tf.Tensor4D : attended.output,
        queryPadding); // [B, H, T, Dv]
      const out = projectFromHeads(this.gate(o, query), this.outputKernel.read(), this.outputBias?.read() ?? null);
      if (!returnScores) return out;
      // A kind whose capabilities promise scores returns them; this only guards that promise.
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
  private project(query: tf.Tensor, value: tf.Tensor, key: tf.Tensor,
      start: number): [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D] {
    let q = projectToHeads(query, this.queryKernel.read(), this.queryBias?.read() ?? null); // [B, H, T, D]
    let k = projectToHeads(key, this.keyKernel.read(), this.keyBias?.read() ?? null);       // [B, G, S, D]
    const v = projectToHeads(value, this.valueKernel.read(), this.valueBias?.read() ?? null); // [B, G, S, Dv]
    const {qkNorm, qkNormEpsilon} = this.attentionOptions;
    if (qkNorm != null) {
      q = normalizeHeads(q, this.optionWeights.queryGamma!.read(), qkNorm, qkNormEpsilon);
      k = normalizeHeads(k, this.optionWeights.keyGamma!.read(), qkNorm, qkNormEpsilon);
    }
    if (this.positionEncoding === 'rope') {
      const rope = {start, base: this.ropeBase, dim: this.ropeDim ?? undefined};
      q = rotaryEmbedding(q, rope);
      k = rotaryEmbedding(k, rope);
    }
    return [q, k, v];
  }

  /** o [B, H, T, Dv] through the output gate of the query input x [B, T, Eq] (o itself without one). */
  private gate(o: tf.Tensor4D, x: tf.Tensor): tf.Tensor4D {
    const mode = this.attentionOptions.outputGate;
    if (mode == null) return o;
    return gateHeads(o, x, this.optionWeights.gateKernel!.read(), this.optionWeights.gateBias?.read() ?? null, mode);
  }

  /**
   * The options' mods and sinks for a call aligned `causal` (nulls where none), for flexAttend.
   * @internal
   */
  protected optionMods(causal: CausalAlignment | null): OptionMods {
    return optionMods(this.attentionOptions, this.optionWeights, causal, this.optionMasks);
  }

  /**
   * The attention of a layer whose options change the scores (and that has no mods of its own):
   * `tiled` through flexAttention where its block masks can be read synchronously (not on
   * webgpu), else the dense path, which also gives dropout and the scores.
   * @internal
   */
  protected attendWithOptions(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, options: AttendOptions,
                              tiled: boolean): tf.Tensor4D | AttentionWithWeights {
    const mods = this.optionMods(options.causal);
    if (tiled && readsSynchronously()) return flexAttend(q, k, v, NO_FLEX, {}, options.mask, options.causal, mods);
    return denseModAttention(q, k, v, {...mods, mask: options.mask, causal: options.causal, dropout: this.dropout,
      training: options.training, returnWeights: options.returnScores});
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
    checkCacheable(`${this.getClassName()} '${this.name}'`, this.causalAlign != null, this.dims != null);
    return {layer: this.name, batchSize, maxLength, length: 0,
      tensors: this.decoding.emptyTensors(batchSize, maxLength)};
  }

  /**
   * One cached call: x [B, t, Eq] holds positions index .. index + t - 1 (index: kwargs'
   * cacheIndex, default cache.length). Returns [y [B, t, Eout], the new cache].
   */
  decode(x: tf.Tensor, cache: AttentionCache, cacheIndex?: number): [tf.Tensor3D, AttentionCache] {
    const who = `${this.getClassName()} '${this.name}'`;
    checkCacheable(who, this.causalAlign != null, this.dims != null);
    if (modsInContext()) {
      throw new AttentionError('UNSUPPORTED', `${who}: a cached step cannot take the mods of withAttentionMods; it ` +
        "applies the layer's own maskMod and scoreMod to its new rows");
    }
    const {Eq, Eout} = this.dims!;
    const index = cachedStepIndex(who, {name: this.name, Eq, capabilities: this.capabilities}, cache, x, cacheIndex);
    const [B, t] = x.shape as number[];
    if (t === 0) return [tf.zeros([B, 0, Eout]) as tf.Tensor3D, {...cache, tensors: cloneTensors(cache.tensors)}];
    const {y, tensors} = tf.tidy(() => {
      const [q, k, v] = this.project(x, x, x, index);
      const {output, tensors} = this.decoding.step(q, k, v, cache, index);
      return {y: projectFromHeads(this.gate(output, x), this.outputKernel.read(), this.outputBias?.read() ?? null),
        tensors};
    });
    return [y, {layer: this.name, batchSize: B, maxLength: cache.maxLength, length: index + t, tensors}];
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
    const s = (o: tf.serialization.Serializable | null) => serializeObject(o) as unknown as tf.serialization.ConfigDict;
    const config: tf.serialization.ConfigDict = {
      numHeads: this.numHeads, numKvHeads: this.numKvHeads, headDim: this.headDimArg, valueDim: this.valueDimArg,
      outputDim: this.outputDimArg, useBias: this.useBias, dropout: this.dropout, causal: this.causal,
      positionEncoding: this.positionEncoding, ropeBase: this.ropeBase, ropeDim: this.ropeDimArg,
      kernelInitializer: s(this.kernelInitializer), biasInitializer: s(this.biasInitializer),
      kernelRegularizer: s(this.kernelRegularizer), biasRegularizer: s(this.biasRegularizer),
      kernelConstraint: s(this.kernelConstraint), biasConstraint: s(this.biasConstraint),
    };
    return {...super.getConfig(), ...config};
  }
}
