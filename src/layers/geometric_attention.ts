/**
 * GeometricAttention layer: attention over edge lists with node positions, with PyTorch
 * Geometric's PointTransformerConv semantics (Zhao et al. 2021, "Point Transformer"; see
 * ops/geometric.ts for the definition), trainable in tf.model graphs and model.fit, saved and
 * loaded with model.save / tf.loadLayersModel.
 *
 *   x'_i = sum_j softmax_j(gamma(W_dst x_i - W_src x_j + delta_ij)) * (W x_j + delta_ij),
 *   delta_ij = h(p_i - p_j), over the edges j -> i coming into i, per channel.
 *
 * Args (besides the tfjs LayerArgs):
 *   units C: output channels (PyG's out_channels); numHeads H (default null: per-channel
 *   vector attention, as PyG; with H, which must divide C, gamma outputs H logits and each
 *   group of C / H consecutive channels shares its head's weight: Point Transformer v2's
 *   grouped vector attention); positionUnits (h's hidden sizes, default []: h = Linear(d, C),
 *   PyG's default pos_nn); attentionUnits (gamma's hidden sizes, default null: gamma is the
 *   identity, PyG's attn_nn None, or Linear(C, H) with numHeads; [] is one Linear(C, C or H));
 *   the MLPs are Linear-ReLU-...-Linear, each Linear with a bias; addSelfLoops (true: drop the
 *   graphs' self loops and add one per node, delta_ii = h(0)); useBias (false: PyG's conv has
 *   no output bias); initializers, regularizers and constraints of the kernels (kernel*, the
 *   MLPs' kernels included; default glorotUniform) and the biases (bias*, default zeros).
 *
 * Call: layer.apply([features [B, N, F] float32, positions [B, N, d] float32, edges [B, E, 2]
 *   int32 (source, target; padding [-1, -1])]) -> [B, N, C]; with the kwarg
 *   returnAttentionScores, [output, alpha [B, E + N, C or H]] (E without self loops). A node
 *   with no incoming edge (only possible without self loops) outputs zeros, plus the bias.
 *
 * Weights, in getWeights() order: kernel [F, C] (W, the value), source_kernel [F, C] (W_src),
 *   target_kernel [F, C] (W_dst), then h: position_kernel_0 [d, u1], position_bias_0 [u1], ...,
 *   position_kernel_k [uk, C], position_bias_k [C]; then gamma (when present):
 *   attention_kernel_0 [C, v1], attention_bias_0 [v1], ..., attention_kernel_m [vm, C or H],
 *   attention_bias_m [C or H]; then bias [C] with useBias. The three projections have no bias
 *   (as PyG's lin, lin_src, lin_dst).
 *
 * Two weights are inert, as in PyG: gamma's last bias shifts all of a node's logits equally,
 * which the softmax cancels, so its gradient is zero; and when gamma is affine (the identity
 * or one Linear), so is W_dst x_i, and target_kernel gets no gradient either. They are kept
 * so that PyG's parameters map one to one; give attentionUnits a hidden layer for W_dst to act.
 *
 * Geometry: the output depends on the positions only through p_i - p_j, so translating every
 * position leaves it unchanged (isTranslationInvariant); h reads raw offsets, so it is not
 * rotation-equivariant (isRotationEquivariant false).
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {checkLayerWeights, WeightShape} from '../core/limits';
import {geometricAttention, GeometricWeights} from '../ops/geometric';
import {assertBoolean, assertDivisible, assertPositiveInt, checkArgNames} from '../core/validate';
import {
  ConstraintArg, getConstraint, getInitializer, getRegularizer, InitializerArg, RegularizerArg, serializeObject,
} from './config';
import {Shape} from './inputs';
import {graphApply, GraphCallFlags} from './graph_call_flags';
import {setWeightCopies} from './set_weights';
import {Kwargs, LayerArgs} from './tfjs_types';

export interface GeometricAttentionArgs extends LayerArgs {
  /** C: output channels. */
  units: number;
  /** H: grouped vector attention with H heads (H divides C). Default null: per channel. */
  numHeads?: number | null;
  /** Hidden sizes of h, the MLP of p_i - p_j. Default []: one Linear(d, C). */
  positionUnits?: number[];
  /** Hidden sizes of gamma, the MLP of the logits. Default null: identity (Linear(C, H) with numHeads). */
  attentionUnits?: number[] | null;
  /** Drop the graphs' self loops and add one per node. Default true. */
  addSelfLoops?: boolean;
  /** Whether the output has a bias. Default false. */
  useBias?: boolean;
  /** Initializer of every kernel (projections and MLPs). Default 'glorotUniform'. */
  kernelInitializer?: InitializerArg;
  /** Initializer of every bias (MLPs and output). Default 'zeros'. */
  biasInitializer?: InitializerArg;
  kernelRegularizer?: RegularizerArg | null;
  biasRegularizer?: RegularizerArg | null;
  kernelConstraint?: ConstraintArg | null;
  biasConstraint?: ConstraintArg | null;
}

/** The constructor arguments of GeometricAttention besides tfjs' LAYER_ARGS. */
export const GEOMETRIC_LAYER_ARGS = [
  'units', 'numHeads', 'positionUnits', 'attentionUnits', 'addSelfLoops', 'useBias', 'kernelInitializer',
  'biasInitializer', 'kernelRegularizer', 'biasRegularizer', 'kernelConstraint', 'biasConstraint',
] as const;

/** The keyword arguments of GeometricAttention's apply / call (tfjs' own mask and training among them). */
export const GEOMETRIC_CALL_ARGS = ['training', 'returnAttentionScores', 'mask'] as const;

/** Names from PyTorch Geometric's PointTransformerConv and elsewhere, with what to use here. */
const FOREIGN_LAYER_NAMES = {
  outChannels: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'units' (PointTransformerConv's out_channels)?"},
  inChannels: {code: 'INVALID_CONFIG' as const, advice: "the input size is the features' last dim, read when the layer is built"},
  posNn: {code: 'INVALID_CONFIG' as const, advice: "give h's hidden sizes as 'positionUnits' (an MLP with ReLU)"},
  attnNn: {code: 'INVALID_CONFIG' as const, advice: "give gamma's hidden sizes as 'attentionUnits' (an MLP with ReLU)"},
  heads: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'numHeads'?"},
  aggr: {code: 'UNSUPPORTED' as const, inert: (v: unknown) => v == null || v === 'add' || v === 'sum',
    advice: "messages are summed (PyG's aggr 'add')"},
  bias: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'useBias'?"},
  returnAttentionScores: {code: 'INVALID_CONFIG' as const, advice: "'returnAttentionScores' is an argument of apply(), not of the constructor"},
  training: {code: 'INVALID_CONFIG' as const, advice: "'training' is an argument of apply(), not of the constructor"},
};

/** Refuses a non-object and any name GeometricAttention does not take, before tfjs' Layer sees them. */
function checkedArgs(args: GeometricAttentionArgs): GeometricAttentionArgs {
  if (args == null || typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `GeometricAttention arguments must be an object, received ${show(args)}`);
  }
  checkArgNames('GeometricAttention', args, [...GEOMETRIC_LAYER_ARGS, ...LAYER_ARGS], FOREIGN_LAYER_NAMES);
  return args;
}

/** A list of hidden sizes: an array of positive integers. */
function assertUnitList(name: string, value: unknown): asserts value is number[] {
  if (!Array.isArray(value) || value.some((u) => typeof u !== 'number' || !Number.isInteger(u) || u < 1)) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be an array of positive integers (hidden sizes), received ${show(value)}`);
  }
}

function inputList(inputs: unknown, who: string): unknown[] {
  const ok = (t: unknown) => t instanceof tf.Tensor || t instanceof tf.SymbolicTensor;
  if (!Array.isArray(inputs) || inputs.length !== 3 || !inputs.every(ok)) {
    throw new AttentionError('INVALID_CONFIG',
      `${who} takes [features, positions, edges] (tf.Tensors or SymbolicTensors), received ${show(inputs)}`);
  }
  return inputs;
}

/** One weight GeometricAttention creates. */
interface PlannedWeight {name: string; shape: number[]; kind: 'kernel' | 'bias'}

export class GeometricAttention extends tf.layers.Layer {
  static className = 'GeometricAttention';
  /** False: h reads the raw offsets p_i - p_j, so rotating the positions changes the output. */
  readonly isRotationEquivariant = false;
  /** True: the positions enter only through p_i - p_j, so translating them all changes nothing. */
  readonly isTranslationInvariant = true;
  readonly units: number;
  readonly numHeads: number | null;
  readonly positionUnits: number[];
  readonly attentionUnits: number[] | null;
  readonly addSelfLoops: boolean;
  readonly useBias: boolean;
  private readonly init: {kernel: ReturnType<typeof getInitializer>; bias: ReturnType<typeof getInitializer>};
  private readonly regularizer: {kernel: ReturnType<typeof getRegularizer>; bias: ReturnType<typeof getRegularizer>};
  private readonly constraint: {kernel: ReturnType<typeof getConstraint>; bias: ReturnType<typeof getConstraint>};
  /** The features F and position dims d the layer was built with. */
  private dims: {F: number; d: number} | null = null;
  private vars: tf.LayerVariable[] = [];
  /** Set by apply() so computeOutputShape knows whether scores are returned. */
  private returnScores = false;
  /** returnAttentionScores of the layer's graph nodes, for the calls tfjs makes without it. */
  private readonly graphFlags = new GraphCallFlags(['returnAttentionScores'] as const);

  constructor(args: GeometricAttentionArgs) {
    super(checkedArgs(args));
    assertPositiveInt('units', args.units);
    this.units = args.units;
    this.numHeads = args.numHeads ?? null;
    if (this.numHeads != null) {
      assertPositiveInt('numHeads', this.numHeads);
      assertDivisible('units', this.units, 'numHeads', this.numHeads);
    }
    const positionUnits = args.positionUnits ?? [];
    assertUnitList('positionUnits', positionUnits);
    this.positionUnits = [...positionUnits];
    if (args.attentionUnits != null) assertUnitList('attentionUnits', args.attentionUnits);
    this.attentionUnits = args.attentionUnits != null ? [...args.attentionUnits] : null;
    this.addSelfLoops = args.addSelfLoops ?? true;
    assertBoolean('addSelfLoops', this.addSelfLoops);
    this.useBias = args.useBias ?? false;
    assertBoolean('useBias', this.useBias);
    this.init = {kernel: getInitializer(args.kernelInitializer ?? 'glorotUniform'), bias: getInitializer(args.biasInitializer ?? 'zeros')};
    this.regularizer = {kernel: getRegularizer(args.kernelRegularizer), bias: getRegularizer(args.biasRegularizer)};
    this.constraint = {kernel: getConstraint(args.kernelConstraint), bias: getConstraint(args.biasConstraint)};
  }

  /** gamma's layer sizes after C (null: identity): the hidden sizes, then C or H. */
  private gammaSizes(): number[] | null {
    const hidden = this.attentionUnits ?? (this.numHeads != null ? [] : null);
    return hidden != null ? [...hidden, this.numHeads ?? this.units] : null;
  }

  /**
   * [features, positions, edges] shapes, checked as a call checks tensors, so that a graph
   * that cannot run fails when it is built: features [B, N, F] and positions [B, N, d] with F
   * and d known (and equal to the built ones), edges [B, E, 2]; one B, one N.
   */
  private checkShapes(inputShape: Shape | Shape[]): [Shape, Shape, Shape] {
    const shapes = inputShape as Shape[];
    if (!Array.isArray(inputShape) || !Array.isArray(inputShape[0]) || shapes.length !== 3) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `GeometricAttention takes [features, positions, edges], received input shape ${show(inputShape)}`);
    }
    const [fs, ps, es] = shapes;
    for (const [name, s, last, built] of [['features', fs, 'features', this.dims?.F],
      ['positions', ps, 'coordinates', this.dims?.d]] as const) {
      if (s.length !== 3 || s[2] == null) {
        throw new AttentionError('DIMENSION_MISMATCH', `${name} must have shape [batch, nodes, ${last}] with known ${last}, received ${show(s)}`);
      }
      if (built != null && s[2] !== built) {
        throw new AttentionError('DIMENSION_MISMATCH', `${name}' last dim (${s[2]}) differs from the one the layer was built with (${built})`);
      }
    }
    if (es.length !== 3 || (es[2] != null && es[2] !== 2)) {
      throw new AttentionError('DIMENSION_MISMATCH', `edges must have shape [batch, edges, 2] (source, target), received ${show(es)}`);
    }
    for (const [what, dims] of [['batch size', [fs[0], ps[0], es[0]]], ['number of nodes', [fs[1], ps[1]]]] as const) {
      const known = dims.filter((n): n is number => n != null);
      if (new Set(known).size > 1) {
        throw new AttentionError('DIMENSION_MISMATCH', `features, positions and edges must share the ${what}, received ${show(known)}`);
      }
    }
    return [fs, ps, es];
  }

  /**
   * The weights `build(inputShape)` creates, in getWeights() order, worked out from the
   * arguments and the input shapes alone: nothing is allocated.
   */
  weightShapes(inputShape: Shape | Shape[]): WeightShape[] {
    return this.planWeights(inputShape).map(({name, shape}) => ({name, shape}));
  }

  private planWeights(inputShape: Shape | Shape[]): PlannedWeight[] {
    const [fs, ps] = this.checkShapes(inputShape);
    const F = fs[2] as number;
    const C = this.units;
    const planned: PlannedWeight[] = ['kernel', 'source_kernel', 'target_kernel'].map((name) =>
      ({name, shape: [F, C], kind: 'kernel'}));
    const mlp = (prefix: string, sizes: number[]) => sizes.slice(1).forEach((out, k) => planned.push(
      {name: `${prefix}_kernel_${k}`, shape: [sizes[k], out], kind: 'kernel'},
      {name: `${prefix}_bias_${k}`, shape: [out], kind: 'bias'}));
    mlp('position', [ps[2] as number, ...this.positionUnits, C]);
    const gamma = this.gammaSizes();
    if (gamma != null) mlp('attention', [C, ...gamma]);
    if (this.useBias) planned.push({name: 'bias', shape: [C], kind: 'bias'});
    return planned;
  }

  override build(inputShape: Shape | Shape[]): void {
    const planned = this.planWeights(inputShape);
    checkLayerWeights('GeometricAttention', planned); // before anything is allocated
    const [fs, ps] = this.checkShapes(inputShape);
    this.vars = planned.map(({name, shape, kind}) => this.addWeight(name, shape, 'float32', this.init[kind],
      this.regularizer[kind] ?? undefined, true, this.constraint[kind] ?? undefined));
    this.dims = {F: fs[2] as number, d: ps[2] as number};
    this.built = true;
  }

  /** The op's weights from the layer's variables (getWeights() order). */
  private opWeights(): GeometricWeights {
    const t = this.vars.map((v) => v.read());
    const pairs = (from: number, n: number) => ({kernels: Array.from({length: n}, (_, k) => t[from + 2 * k]),
      biases: Array.from({length: n}, (_, k) => t[from + 2 * k + 1])});
    const nPos = this.positionUnits.length + 1;
    const position = pairs(3, nPos);
    const w: GeometricWeights = {kernel: t[0], sourceKernel: t[1], targetKernel: t[2],
      positionKernels: position.kernels, positionBiases: position.biases};
    const gamma = this.gammaSizes();
    if (gamma != null) {
      const attention = pairs(3 + 2 * nPos, gamma.length);
      w.attentionKernels = attention.kernels;
      w.attentionBiases = attention.biases;
    }
    if (this.useBias) w.bias = t[t.length - 1];
    return w;
  }

  /**
   * Refuses what a call cannot take; a layer applied to symbolic inputs remembers
   * returnAttentionScores for the calls tfjs' executor (predict, fit) makes without it.
   */
  override apply(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                 kwargs?: Kwargs): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[] {
    const list = inputList(inputs, 'GeometricAttention.apply');
    const call = graphApply('GeometricAttention', this.name, list, ['features', 'positions'], kwargs,
      GEOMETRIC_CALL_ARGS, this.graphFlags);
    this.returnScores = call.returnScores;
    return super.apply(inputs, call.kwargs);
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const [features, positions, edges] = inputList(inputs, 'GeometricAttention.call') as tf.Tensor[];
    this.checkShapes([features.shape, positions.shape, edges.shape]);
    const result = geometricAttention(features, positions, edges, this.opWeights(), {
      addSelfLoops: this.addSelfLoops, numHeads: this.numHeads,
      returnAttentionScores: kwargs?.returnAttentionScores === true,
    });
    return result instanceof tf.Tensor ? result : [result.output, result.scores];
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape | Shape[] {
    const [fs, , es] = this.checkShapes(inputShape);
    const out: Shape = [fs[0], fs[1], this.units];
    if (!this.returnScores) return out;
    const rows = es[1] == null ? null : this.addSelfLoops ? (fs[1] == null ? null : es[1] + fs[1]) : es[1];
    return [out, [fs[0], rows, this.numHeads ?? this.units]];
  }

  /** No padding masks: padded nodes are isolated ones (their edges are [-1, -1]). */
  override computeMask(): tf.Tensor | tf.Tensor[] {
    return (this.returnScores ? [null, null] : null) as unknown as tf.Tensor;
  }

  /** Sets copies of the given tensors, checked against the layer's weights (set_weights.ts). */
  override setWeights(weights: tf.Tensor[]): void {
    setWeightCopies(this, weights, (copies) => super.setWeights(copies));
  }

  override getConfig(): tf.serialization.ConfigDict {
    const s = (o: tf.serialization.Serializable | null) => serializeObject(o) as unknown as tf.serialization.ConfigDict;
    return {
      ...super.getConfig(),
      units: this.units, numHeads: this.numHeads, positionUnits: [...this.positionUnits],
      attentionUnits: this.attentionUnits != null ? [...this.attentionUnits] : null, addSelfLoops: this.addSelfLoops,
      useBias: this.useBias, kernelInitializer: s(this.init.kernel), biasInitializer: s(this.init.bias),
      kernelRegularizer: s(this.regularizer.kernel), biasRegularizer: s(this.regularizer.bias),
      kernelConstraint: s(this.constraint.kernel), biasConstraint: s(this.constraint.bias),
    };
  }
}
tf.serialization.registerClass(GeometricAttention);
