/**
 * EquivariantAttention layer: one E(n)-equivariant graph layer with attention, EGNN
 * (Satorras, Hoogeboom and Welling 2021, "E(n) Equivariant Graph Neural Networks"; their
 * E_GCL / E_GCL_vel with attention on). See ops/equivariant.ts for the op. For each edge
 * j -> i (edge row [j, i]: i receives):
 *   m_ij = e_ij * phi_e([h_i, h_j, ||x_i - x_j||^2, a_ij]),   e_ij = sigmoid(phi_e(...) W_a + b_a)
 *   x'_i = x_i + coordsWeight * AGG_j (x_i - x_j) phi_x(m_ij) [+ phi_v(h_i) v_i]
 *   h'_i = [h_i +] phi_h([h_i, sum_j m_ij])
 * phi_e = Linear, act, Linear, act; phi_x = Linear, act, Linear (no bias); phi_v and phi_h =
 * Linear, act, Linear; AGG the mean (default) or sum over i's incoming edges. No self loop is
 * added. Positions rotate, reflect and translate with the input and velocities rotate with
 * it (isRotationEquivariant); features are invariant to all three (isTranslationInvariant).
 *
 * Args (besides the tfjs LayerArgs):
 *   units: the output features (default null: F, the input's); hiddenUnits U (64); edgeDim A
 *   (default null: the edgeAttr input's last dim, when there is one); velocity (false: when
 *   true the last input is the velocities); coordsWeight (1); coordinateAggregation 'mean'
 *   (default) or 'sum'; activation, a tfjs activation name ('swish', x * sigmoid(x) = SiLU,
 *   the default); residual (true: h' = h + phi_h(...), units must equal F); kernel* and bias*
 *   initializers (glorotUniform, zeros), regularizers and constraints. coord_kernel_1 is
 *   always initialised as EGNN does: glorot-uniform scaled by a gain of 0.001.
 *
 * Call: layer.apply([features [B, N, F], positions [B, N, d], edges [B, E, 2] int32 (source,
 *   target; padding [-1, -1])]), with edgeAttr [B, E, A] after the edges when the layer has
 *   edgeDim (or is built from such inputs), and velocities [B, N, d] last when velocity is
 *   true: [h, x, edges], [h, x, edges, edgeAttr], [h, x, edges, velocities],
 *   [h, x, edges, edgeAttr, velocities]. Kwarg returnAttentionScores (kept from a graph for
 *   predict and fit, as the other layers do).
 *
 * Returns: [features' [B, N, units], positions' [B, N, d]]; with returnAttentionScores also
 *   the gates e_ij [B, E, 1] (0 on padding edges).
 *
 * Weights, in getWeights() order: edge_kernel_0 [2F + 1 + A, U], edge_bias_0 [U],
 *   edge_kernel_1 [U, U], edge_bias_1 [U], attention_kernel [U, 1], attention_bias [1],
 *   coord_kernel_0 [U, U], coord_bias_0 [U], coord_kernel_1 [U, 1], node_kernel_0 [F + U, U],
 *   node_bias_0 [U], node_kernel_1 [U, units], node_bias_1 [units], then with velocity
 *   velocity_kernel_0 [F, U], velocity_bias_0 [U], velocity_kernel_1 [U, 1], velocity_bias_1 [1].
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {checkLayerWeights, WeightShape} from '../core/limits';
import {assertBoolean, assertOneOf, assertPositiveInt, checkArgNames, ForeignName} from '../core/validate';
import {
  activationFunction, COORDINATE_AGGREGATIONS, CoordinateAggregation, EGNN_FOREIGN_NAMES, equivariantAttention,
  EQUIVARIANT_WEIGHT_NAMES, EquivariantWeightKey, equivariantWeightShapes, EquivariantWeights, withSnakeCase,
} from '../ops/equivariant';
import {
  ConstraintArg, getConstraint, getInitializer, getRegularizer, InitializerArg, RegularizerArg, serializeObject,
} from './config';
import {graphApply, GraphCallFlags} from './graph_call_flags';
import {Shape} from './inputs';
import {setWeightCopies} from './set_weights';
import {Kwargs, LayerArgs} from './tfjs_types';

export interface EquivariantAttentionArgs extends LayerArgs {
  /** The output features. Default null: F, the input features' size (what residual needs). */
  units?: number | null;
  /** U: the width of every MLP's hidden layer and of the messages. Default 64. */
  hiddenUnits?: number;
  /** A: the edge attributes' size; null (default): the edgeAttr input's last dim, when given. */
  edgeDim?: number | null;
  /** Whether the last input is the velocities [B, N, d] (EGNN's E_GCL_vel). Default false. */
  velocity?: boolean;
  /** Scales the aggregated coordinate update. Default 1. */
  coordsWeight?: number;
  /** 'mean' (default, EGNN's coords_agg) or 'sum' of the coordinate updates over a node's incoming edges. */
  coordinateAggregation?: CoordinateAggregation;
  /** A tfjs activation name for the MLPs' hidden layers. Default 'swish' (x * sigmoid(x), SiLU). */
  activation?: string;
  /** h' = h + phi_h(...) (default true; units must equal F), else h' = phi_h(...). */
  residual?: boolean;
  /** Initializer of every kernel but coord_kernel_1 (EGNN's: glorot-uniform, gain 0.001). Default 'glorotUniform'. */
  kernelInitializer?: InitializerArg;
  /** Initializer of the biases. Default 'zeros'. */
  biasInitializer?: InitializerArg;
  kernelRegularizer?: RegularizerArg | null;
  biasRegularizer?: RegularizerArg | null;
  kernelConstraint?: ConstraintArg | null;
  biasConstraint?: ConstraintArg | null;
}

/** The constructor arguments of EquivariantAttention besides tfjs' LAYER_ARGS. */
export const EQUIVARIANT_LAYER_ARGS = [
  'units', 'hiddenUnits', 'edgeDim', 'velocity', 'coordsWeight', 'coordinateAggregation', 'activation', 'residual',
  'kernelInitializer', 'biasInitializer', 'kernelRegularizer', 'biasRegularizer', 'kernelConstraint', 'biasConstraint',
] as const;

/** The keyword arguments of apply / call (tfjs' own mask and training among them; there is no dropout). */
export const EQUIVARIANT_CALL_ARGS = ['training', 'returnAttentionScores', 'mask'] as const;

/** EGNN's constructor names, with what to use here. */
const FOREIGN_LAYER_NAMES: Record<string, ForeignName> = {
  ...EGNN_FOREIGN_NAMES,
  ...withSnakeCase({
    hiddenNf: {code: 'INVALID_CONFIG', advice: "did you mean 'hiddenUnits' (EGNN's hidden_nf)?"},
    outputNf: {code: 'INVALID_CONFIG', advice: "did you mean 'units' (EGNN's output_nf)?"},
    inputNf: {code: 'INVALID_CONFIG', advice: "the input features' size is taken from the features input"},
    edgesInD: {code: 'INVALID_CONFIG', advice: "did you mean 'edgeDim' (EGNN's edges_in_d)?"},
    numHeads: {code: 'UNSUPPORTED', inert: (v) => v == null || v === 1, advice: 'EGNN has one attention gate per edge'},
  }),
  returnAttentionScores: {code: 'INVALID_CONFIG', advice: "'returnAttentionScores' is an argument of apply(), not of the constructor"},
  training: {code: 'INVALID_CONFIG', advice: "'training' is an argument of apply(), not of the constructor"},
};

/** Refuses a non-object and any name EquivariantAttention does not take, before tfjs' Layer sees them. */
function checkedArgs(args: EquivariantAttentionArgs | undefined): EquivariantAttentionArgs {
  if (args == null) return {};
  if (typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `EquivariantAttention arguments must be an object, received ${show(args)}`);
  }
  checkArgNames('EquivariantAttention', args, [...EQUIVARIANT_LAYER_ARGS, ...LAYER_ARGS], FOREIGN_LAYER_NAMES);
  return args;
}

function inputList(inputs: unknown, who: string): unknown[] {
  const ok = (t: unknown) => t instanceof tf.Tensor || t instanceof tf.SymbolicTensor;
  if (!Array.isArray(inputs) || inputs.length < 3 || inputs.length > 5 || !inputs.every(ok)) {
    throw new AttentionError('INVALID_CONFIG', `${who} takes [features, positions, edges, edgeAttr?, velocities?] ` +
      `(tf.Tensors or SymbolicTensors), received ${show(inputs)}`);
  }
  return inputs;
}

/** The input shapes by role. */
interface InputShapes {h: Shape; x: Shape; edges: Shape; attr: Shape | null; vel: Shape | null}

type Kind = 'kernel' | 'bias' | 'coord';

/** One weight the layer creates, with its key in EquivariantWeights and its initializer's kind. */
interface PlannedWeight {key: EquivariantWeightKey; name: string; shape: number[]; kind: Kind}

export class EquivariantAttention extends tf.layers.Layer {
  static className = 'EquivariantAttention';
  /** Positions rotate and reflect with the input (and velocities with them); features are invariant. */
  readonly isRotationEquivariant = true as const;
  /** Features are invariant to translations of the positions; positions translate with the input. */
  readonly isTranslationInvariant = true as const;
  /** As given: null means F. */
  readonly units: number | null;
  readonly hiddenUnits: number;
  /** As given, or (once built) the edge attributes' size; null: no edge attributes. */
  edgeDim: number | null;
  readonly velocity: boolean;
  readonly coordsWeight: number;
  readonly coordinateAggregation: CoordinateAggregation;
  readonly activation: string;
  readonly residual: boolean;
  private readonly init: Record<Kind, ReturnType<typeof getInitializer>>;
  private readonly regularizer: {kernel: ReturnType<typeof getRegularizer>; bias: ReturnType<typeof getRegularizer>};
  private readonly constraint: {kernel: ReturnType<typeof getConstraint>; bias: ReturnType<typeof getConstraint>};
  /** The features F the layer was built with. */
  private features: number | null = null;
  private vars: Partial<Record<EquivariantWeightKey, tf.LayerVariable>> = {};
  /** Set by apply() so computeOutputShape knows whether scores are returned. */
  private returnScores = false;
  private readonly graphFlags = new GraphCallFlags(['returnAttentionScores'] as const);

  constructor(args?: EquivariantAttentionArgs) {
    const a = checkedArgs(args);
    super(a);
    this.units = a.units ?? null;
    if (this.units != null) assertPositiveInt('units', this.units);
    this.hiddenUnits = a.hiddenUnits ?? 64;
    assertPositiveInt('hiddenUnits', this.hiddenUnits);
    this.edgeDim = a.edgeDim ?? null;
    if (this.edgeDim != null) assertPositiveInt('edgeDim', this.edgeDim);
    this.velocity = a.velocity ?? false;
    assertBoolean('velocity', this.velocity);
    this.coordsWeight = a.coordsWeight ?? 1;
    if (typeof this.coordsWeight !== 'number' || !Number.isFinite(this.coordsWeight)) {
      throw new AttentionError('INVALID_CONFIG', `coordsWeight must be a finite number, received ${show(a.coordsWeight)}`);
    }
    this.coordinateAggregation = a.coordinateAggregation ?? 'mean';
    assertOneOf('coordinateAggregation', this.coordinateAggregation, COORDINATE_AGGREGATIONS);
    this.activation = a.activation ?? 'swish';
    activationFunction(this.activation); // refuses a name tfjs does not have
    this.residual = a.residual ?? true;
    assertBoolean('residual', this.residual);
    this.init = {
      kernel: getInitializer(a.kernelInitializer ?? 'glorotUniform'),
      bias: getInitializer(a.biasInitializer ?? 'zeros'),
      // EGNN's xavier_uniform_(gain=0.001): bound 0.001 * sqrt(6 / (fanIn + fanOut)).
      coord: tf.initializers.varianceScaling({scale: 1e-6, mode: 'fanAvg', distribution: 'uniform'}),
    };
    this.regularizer = {kernel: getRegularizer(a.kernelRegularizer), bias: getRegularizer(a.biasRegularizer)};
    this.constraint = {kernel: getConstraint(a.kernelConstraint), bias: getConstraint(a.biasConstraint)};
  }

  /** The inputs this layer takes, for messages: [features, positions, edges, ...]. */
  private expected(attr: boolean): string {
    return `[features, positions, edges${attr ? ', edgeAttr' : ''}${this.velocity ? ', velocities' : ''}]`;
  }

  /**
   * The input shapes by role, checked as a call checks tensors, so that a graph that cannot
   * run fails when it is built: the count against edgeDim and velocity, features [B, N, F]
   * with F known (and equal to the built one), positions and velocities [B, N, d] with one d,
   * edges [B, E, 2], edgeAttr [B, E, edgeDim]; one B, one N and one E.
   */
  private checkShapes(inputShape: Shape | Shape[]): InputShapes {
    const shapes = inputShape as Shape[];
    if (!Array.isArray(inputShape) || !Array.isArray(inputShape[0])) {
      throw new AttentionError('DIMENSION_MISMATCH', `EquivariantAttention takes ${this.expected(this.edgeDim != null)}, ` +
        `received input shape ${show(inputShape)}`);
    }
    const vel = this.velocity ? 1 : 0;
    // Edge attributes: as the layer has them, or (not built, no edgeDim) as the count says.
    const attr = this.edgeDim != null || (!this.built && shapes.length === 4 + vel);
    if (shapes.length !== 3 + (attr ? 1 : 0) + vel) {
      const why = this.built && this.edgeDim == null
        ? ' (it was built without edge attributes, so it has no edge weights; make a layer for edge attributes)' : this.edgeDim != null ? ` (it has edgeDim ${this.edgeDim})` : '';
      throw new AttentionError('INVALID_CONFIG', `EquivariantAttention '${this.name}' takes ${this.expected(attr)}` +
        `${why}${this.velocity ? '' : ', and velocities only when made with velocity: true'}, received ${shapes.length} inputs`);
    }
    const [h, x, edges] = shapes;
    const s: InputShapes = {h, x, edges, attr: attr ? shapes[3] : null,
      vel: this.velocity ? shapes[shapes.length - 1] : null};
    if (h.length !== 3 || h[2] == null || h[2] < 1) {
      throw new AttentionError('DIMENSION_MISMATCH', `features must have shape [batch, nodes, features] with known features, received ${show(h)}`);
    }
    if (this.features != null && h[2] !== this.features) {
      throw new AttentionError('DIMENSION_MISMATCH', `features' last dim (${h[2]}) differs from the one the layer was built with (${this.features})`);
    }
    for (const [name, p] of [['positions', x], ['velocities', s.vel]] as const) {
      if (p != null && (p.length !== 3 || p[2] == null || p[2] < 1)) {
        throw new AttentionError('DIMENSION_MISMATCH', `${name} must have shape [batch, nodes, d] with known d >= 1, received ${show(p)}`);
      }
    }
    if (s.vel != null && s.vel[2] !== x[2]) {
      throw new AttentionError('DIMENSION_MISMATCH', `velocities must have the positions' d (${x[2]}), received shape ${show(s.vel)}`);
    }
    if (edges.length !== 3 || (edges[2] != null && edges[2] !== 2)) {
      throw new AttentionError('DIMENSION_MISMATCH', `edges must have shape [batch, edges, 2] (source, target), received ${show(edges)}`);
    }
    if (s.attr != null) {
      if (s.attr.length !== 3 || s.attr[2] == null || (this.edgeDim != null && s.attr[2] !== this.edgeDim)) {
        throw new AttentionError('DIMENSION_MISMATCH', `edgeAttr must have shape [batch, edges, ${this.edgeDim ?? 'edgeDim'}] ` +
          `with known edgeDim, received ${show(s.attr)}`);
      }
      if (edges[1] != null && s.attr[1] != null && edges[1] !== s.attr[1]) {
        throw new AttentionError('DIMENSION_MISMATCH', `edges and edgeAttr must list the same edges, received ${edges[1]} ` +
          `and ${s.attr[1]} of them${this.velocity ? '' : ' (velocities need a layer made with velocity: true)'}`);
      }
    }
    const same = (what: string, dims: (number | null | undefined)[]) => {
      const known = dims.filter((v): v is number => v != null);
      if (new Set(known).size > 1) {
        throw new AttentionError('DIMENSION_MISMATCH', `the inputs must share ${what}, received ${show(known)}`);
      }
    };
    same('the batch size', [h, x, edges, s.attr, s.vel].map((t) => t?.[0]));
    same('the number of nodes (features, positions, velocities)', [h, x, s.vel].map((t) => t?.[1]));
    return s;
  }

  /** The output features: units, or F when units is null. */
  private outputUnits(F: number): number {
    return this.units ?? F;
  }

  /**
   * The weights `build(inputShape)` creates, in getWeights() order, worked out from the
   * arguments and the input shapes alone: nothing is allocated.
   */
  weightShapes(inputShape: Shape | Shape[]): WeightShape[] {
    return this.planWeights(inputShape).map(({name, shape}) => ({name, shape}));
  }

  private planWeights(inputShape: Shape | Shape[]): PlannedWeight[] {
    const s = this.checkShapes(inputShape);
    const F = s.h[2] as number;
    const units = this.outputUnits(F);
    if (this.residual && units !== F) {
      throw new AttentionError('INVALID_CONFIG', `units (${units}) must equal the features' size (${F}) with residual ` +
        `(h' = h + phi_h): pass units ${F} or null, or residual: false`);
    }
    const A = s.attr != null ? s.attr[2] as number : 0;
    return equivariantWeightShapes(F, this.hiddenUnits, A, units, this.velocity).map(([key, shape]) => ({
      key, name: EQUIVARIANT_WEIGHT_NAMES[key], shape,
      kind: key === 'coordKernel1' ? 'coord' : shape.length === 1 ? 'bias' : 'kernel',
    }));
  }

  override build(inputShape: Shape | Shape[]): void {
    const planned = this.planWeights(inputShape);
    checkLayerWeights('EquivariantAttention', planned); // before anything is allocated
    const s = this.checkShapes(inputShape);
    this.features = s.h[2] as number;
    this.edgeDim = s.attr != null ? s.attr[2] as number : null;
    const v: Partial<Record<EquivariantWeightKey, tf.LayerVariable>> = {};
    for (const {key, name, shape, kind} of planned) {
      const rc = kind === 'bias' ? 'bias' : 'kernel';
      v[key] = this.addWeight(name, shape, 'float32', this.init[kind], this.regularizer[rc] ?? undefined, true,
        this.constraint[rc] ?? undefined);
    }
    this.vars = v;
    this.built = true;
  }

  /**
   * Refuses what a call cannot take; a layer applied to symbolic inputs remembers
   * returnAttentionScores for the calls tfjs' executor (predict, fit) makes without it.
   */
  override apply(inputs: tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[],
                 kwargs?: Kwargs): tf.Tensor | tf.Tensor[] | tf.SymbolicTensor | tf.SymbolicTensor[] {
    const list = inputList(inputs, 'EquivariantAttention.apply');
    const call = graphApply('EquivariantAttention', this.name, list, ['features', 'positions'], kwargs,
      EQUIVARIANT_CALL_ARGS, this.graphFlags);
    this.returnScores = call.returnScores;
    return super.apply(inputs, call.kwargs);
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const list = inputList(inputs, 'EquivariantAttention.call') as tf.Tensor[];
    const s = this.checkShapes(list.map((t) => t.shape));
    const weights = Object.fromEntries(
      Object.entries(this.vars).map(([k, v]) => [k, v!.read()])) as unknown as EquivariantWeights;
    return equivariantAttention(list[0], list[1], list[2], weights, {
      ...(s.attr != null ? {edgeAttr: list[3]} : {}), ...(s.vel != null ? {velocities: list[list.length - 1]} : {}),
      coordsWeight: this.coordsWeight, coordinateAggregation: this.coordinateAggregation, activation: this.activation,
      residual: this.residual, returnAttentionScores: kwargs?.returnAttentionScores === true,
    });
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape[] {
    const s = this.checkShapes(inputShape);
    const out: Shape[] = [[s.h[0], s.h[1], this.outputUnits(s.h[2] as number)], [s.x[0], s.x[1], s.x[2]]];
    if (this.returnScores) out.push([s.edges[0], s.edges[1], 1]);
    return out;
  }

  /** No masks: padded nodes are isolated ones (their edges are [-1, -1]). */
  override computeMask(): tf.Tensor[] {
    return (this.returnScores ? [null, null, null] : [null, null]) as unknown as tf.Tensor[];
  }

  /** Sets copies of the given tensors, checked against the layer's weights (set_weights.ts). */
  override setWeights(weights: tf.Tensor[]): void {
    setWeightCopies(this, weights, (copies) => super.setWeights(copies));
  }

  override getConfig(): tf.serialization.ConfigDict {
    const s = (o: tf.serialization.Serializable | null) => serializeObject(o) as unknown as tf.serialization.ConfigDict;
    return {
      ...super.getConfig(),
      units: this.units, hiddenUnits: this.hiddenUnits, edgeDim: this.edgeDim, velocity: this.velocity,
      coordsWeight: this.coordsWeight, coordinateAggregation: this.coordinateAggregation, activation: this.activation,
      residual: this.residual, kernelInitializer: s(this.init.kernel), biasInitializer: s(this.init.bias),
      kernelRegularizer: s(this.regularizer.kernel), biasRegularizer: s(this.regularizer.bias),
      kernelConstraint: s(this.constraint.kernel), biasConstraint: s(this.constraint.bias),
    };
  }
}
tf.serialization.registerClass(EquivariantAttention);
