/**
 * GraphAttention layer: graph attention over edge lists with GATConv semantics (see
 * ops/graph.ts for the definition), trainable in tf.model graphs and model.fit, saved and
 * loaded with model.save / tf.loadLayersModel.
 *
 * Args (besides the tfjs LayerArgs):
 *   units C: channels per head; numHeads H (default 1); concatHeads (default true: output
 *   [B, N, H * C]; false: the heads' mean, [B, N, C]); negativeSlope (0.2); edgeDim (the
 *   edge attributes' size; null: taken from the third input when there is one); dropout on
 *   alpha while training (default 0); useBias (true); version 'gat' (default) or 'gatv2';
 *   addSelfLoops (true); initializers, regularizers and constraints of the kernels
 *   (kernel*), the attention vectors (attention*) and the bias (bias*).
 *
 * Call: layer.apply([nodes [B, N, F] float32, edges [B, E, 2] int32 (source, target;
 *   padding [-1, -1])]) or [nodes, edges, edgeAttr [B, E, edgeDim] float32], with kwargs
 *   training (dropout) and returnAttentionScores (then [output, alpha [B, E + N, H]]; E
 *   without self loops). As with the other layers, returnAttentionScores given when the
 *   layer is applied to symbolic inputs is kept for predict and fit.
 *
 * Weights, in getWeights() order (GAT): kernel [F, H, C], attention_source [H, C],
 *   attention_target [H, C], then with edge attributes edge_kernel [edgeDim, H, C] and
 *   attention_edge [H, C], then bias [H * C] (or [C] with concatHeads false).
 *   GATv2: kernel [F, H, C] (the source side and the message), target_kernel [F, H, C],
 *   attention [H, C], then edge_kernel [edgeDim, H, C], then bias. The projections have no
 *   bias of their own (PyG's GATv2Conv gives lin_l and lin_r one each).
 */
import * as tf from '@tensorflow/tfjs';
import {LAYER_ARGS} from '../core/arguments';
import {AttentionError, show} from '../core/errors';
import {checkLayerWeights, WeightShape} from '../core/limits';
import {GRAPH_VERSIONS, graphAttention, GraphVersion, GraphWeights} from '../ops/graph';
import {assertBoolean, assertOneOf, assertPositiveInt, assertRate, checkArgNames} from '../core/validate';
import {
  ConstraintArg, getConstraint, getInitializer, getRegularizer, InitializerArg, RegularizerArg, serializeObject,
} from './config';
import {Shape} from './inputs';
import {graphApply, GraphCallFlags} from './graph_call_flags';
import {setWeightCopies} from './set_weights';
import {Kwargs, LayerArgs} from './tfjs_types';

export interface GraphAttentionArgs extends LayerArgs {
  /** C: channels per head. */
  units: number;
  /** H. Default 1. */
  numHeads?: number;
  /** Concatenate the heads ([B, N, H * C], default) or average them ([B, N, C]). */
  concatHeads?: boolean;
  /** The LeakyReLU's slope for negative inputs. Default 0.2. */
  negativeSlope?: number;
  /** Size of each edge's attribute vector; null (default): the third input's last dim, when given. */
  edgeDim?: number | null;
  /** Dropout rate on alpha while training, in [0, 1). Default 0. */
  dropout?: number;
  /** Whether the output has a bias. Default true. */
  useBias?: boolean;
  /** 'gat' (default): a . [x'_i || x'_j]; 'gatv2': a . LeakyReLU(W [x_i || x_j]). */
  version?: GraphVersion;
  /** Drop the graphs' self loops and add one per node (mean edge attribute). Default true. */
  addSelfLoops?: boolean;
  /** Initializer of kernel, target_kernel and edge_kernel. Default 'glorotUniform'. */
  kernelInitializer?: InitializerArg;
  /** Initializer of the attention vectors. Default 'glorotUniform'. */
  attentionInitializer?: InitializerArg;
  /** Initializer of the bias. Default 'zeros'. */
  biasInitializer?: InitializerArg;
  kernelRegularizer?: RegularizerArg | null;
  attentionRegularizer?: RegularizerArg | null;
  biasRegularizer?: RegularizerArg | null;
  kernelConstraint?: ConstraintArg | null;
  attentionConstraint?: ConstraintArg | null;
  biasConstraint?: ConstraintArg | null;
}

/** The constructor arguments of GraphAttention besides tfjs' LAYER_ARGS. */
export const GRAPH_LAYER_ARGS = [
  'units', 'numHeads', 'concatHeads', 'negativeSlope', 'edgeDim', 'dropout', 'useBias', 'version', 'addSelfLoops',
  'kernelInitializer', 'attentionInitializer', 'biasInitializer', 'kernelRegularizer', 'attentionRegularizer',
  'biasRegularizer', 'kernelConstraint', 'attentionConstraint', 'biasConstraint',
] as const;

/** The keyword arguments of GraphAttention's apply / call (tfjs' own mask and training among them). */
export const GRAPH_CALL_ARGS = ['training', 'returnAttentionScores', 'mask'] as const;

/** Names from PyTorch Geometric's GATConv and elsewhere, with what to use here. */
const FOREIGN_LAYER_NAMES = {
  outChannels: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'units' (GATConv's out_channels, per head)?"},
  heads: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'numHeads'?"},
  concat: {code: 'INVALID_CONFIG' as const, advice: "did you mean 'concatHeads'?"},
  fillValue: {code: 'UNSUPPORTED' as const, inert: (v: unknown) => v == null || v === 'mean',
    advice: "the added self loops always take the mean attribute of the node's incoming edges (GATConv's default)"},
  shareWeights: {code: 'UNSUPPORTED' as const, inert: (v: unknown) => v == null || v === false,
    advice: "version 'gatv2' has separate source (kernel) and target (target_kernel) projections"},
  returnAttentionScores: {code: 'INVALID_CONFIG' as const, advice: "'returnAttentionScores' is an argument of apply(), not of the constructor"},
  training: {code: 'INVALID_CONFIG' as const, advice: "'training' is an argument of apply(), not of the constructor"},
};

/** Refuses a non-object and any name GraphAttention does not take, before tfjs' Layer sees them. */
function checkedArgs(args: GraphAttentionArgs): GraphAttentionArgs {
  if (args == null || typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `GraphAttention arguments must be an object, received ${show(args)}`);
  }
  checkArgNames('GraphAttention', args, [...GRAPH_LAYER_ARGS, ...LAYER_ARGS], FOREIGN_LAYER_NAMES);
  return args;
}

function inputList(inputs: unknown, who: string): unknown[] {
  const ok = (t: unknown) => t instanceof tf.Tensor || t instanceof tf.SymbolicTensor;
  if (!Array.isArray(inputs) || inputs.length < 2 || inputs.length > 3 || !inputs.every(ok)) {
    throw new AttentionError('INVALID_CONFIG',
      `${who} takes [nodes, edges] or [nodes, edges, edgeAttr] (tf.Tensors or SymbolicTensors), received ${show(inputs)}`);
  }
  return inputs;
}

/** One weight GraphAttention creates. */
interface PlannedGraphWeight {
  key: keyof GraphWeights;
  name: string;
  shape: number[];
  kind: 'kernel' | 'attention' | 'bias';
}

export class GraphAttention extends tf.layers.Layer {
  static className = 'GraphAttention';
  readonly units: number;
  readonly numHeads: number;
  readonly concatHeads: boolean;
  readonly negativeSlope: number;
  readonly dropout: number;
  readonly useBias: boolean;
  readonly version: GraphVersion;
  readonly addSelfLoops: boolean;
  /** As given, or (once built) the edge attributes' size; null: no edge attributes. */
  edgeDim: number | null;
  private readonly edgeDimArg: number | null;
  private readonly init: {kernel: ReturnType<typeof getInitializer>; attention: ReturnType<typeof getInitializer>;
    bias: ReturnType<typeof getInitializer>;};
  private readonly regularizer: {kernel: ReturnType<typeof getRegularizer>;
    attention: ReturnType<typeof getRegularizer>; bias: ReturnType<typeof getRegularizer>;};
  private readonly constraint: {kernel: ReturnType<typeof getConstraint>; attention: ReturnType<typeof getConstraint>;
    bias: ReturnType<typeof getConstraint>;};
  /** The node features F the layer was built with. */
  private features: number | null = null;
  private vars: Partial<Record<keyof GraphWeights, tf.LayerVariable>> = {};
  /** Set by apply() so computeOutputShape knows whether scores are returned. */
  private returnScores = false;
  /** returnAttentionScores of the layer's graph nodes, for the calls tfjs makes without it. */
  private readonly graphFlags = new GraphCallFlags(['returnAttentionScores'] as const);

  constructor(args: GraphAttentionArgs) {
    super(checkedArgs(args));
    assertPositiveInt('units', args.units);
    this.units = args.units;
    this.numHeads = args.numHeads ?? 1;
    assertPositiveInt('numHeads', this.numHeads);
    this.concatHeads = args.concatHeads ?? true;
    assertBoolean('concatHeads', this.concatHeads);
    this.negativeSlope = args.negativeSlope ?? 0.2;
    if (typeof this.negativeSlope !== 'number' || !Number.isFinite(this.negativeSlope)) {
      throw new AttentionError('INVALID_CONFIG', `negativeSlope must be a finite number, received ${show(args.negativeSlope)}`);
    }
    this.edgeDimArg = args.edgeDim ?? null;
    if (this.edgeDimArg != null) assertPositiveInt('edgeDim', this.edgeDimArg);
    this.edgeDim = this.edgeDimArg;
    this.dropout = args.dropout ?? 0;
    assertRate('dropout', this.dropout);
    this.useBias = args.useBias ?? true;
    assertBoolean('useBias', this.useBias);
    this.version = args.version ?? 'gat';
    assertOneOf('version', this.version, GRAPH_VERSIONS);
    this.addSelfLoops = args.addSelfLoops ?? true;
    assertBoolean('addSelfLoops', this.addSelfLoops);
    this.init = {
      kernel: getInitializer(args.kernelInitializer ?? 'glorotUniform'),
      attention: getInitializer(args.attentionInitializer ?? 'glorotUniform'),
      bias: getInitializer(args.biasInitializer ?? 'zeros'),
    };
    this.regularizer = {kernel: getRegularizer(args.kernelRegularizer),
      attention: getRegularizer(args.attentionRegularizer), bias: getRegularizer(args.biasRegularizer)};
    this.constraint = {kernel: getConstraint(args.kernelConstraint), attention: getConstraint(args.attentionConstraint),
      bias: getConstraint(args.biasConstraint)};
  }

  /** The output's last dim: H * C, or C when the heads are averaged. */
  get outputDim(): number {
    return this.concatHeads ? this.numHeads * this.units : this.units;
  }

  /**
   * [nodes, edges, edgeAttr?] shapes, checked as a call checks tensors, so that a graph
   * that cannot run fails when it is built: nodes [B, N, F] with F known (and equal to the
   * built one), edges [B, E, 2], edgeAttr [B, E, edgeDim]; one batch size and one E.
   */
  private checkShapes(inputShape: Shape | Shape[]): [Shape, Shape, Shape | null] {
    const shapes = inputShape as Shape[];
    if (!Array.isArray(inputShape) || !Array.isArray(inputShape[0]) || shapes.length < 2 || shapes.length > 3) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `GraphAttention takes [nodes, edges] or [nodes, edges, edgeAttr], received input shape ${show(inputShape)}`);
    }
    const [ns, es, as = null] = shapes;
    if (ns.length !== 3 || ns[2] == null) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `nodes must have shape [batch, nodes, features] with known features, received ${show(ns)}`);
    }
    if (this.features != null && ns[2] !== this.features) {
      throw new AttentionError('DIMENSION_MISMATCH',
        `nodes' last dim (${ns[2]}) differs from the one the layer was built with (${this.features})`);
    }
    if (es.length !== 3 || (es[2] != null && es[2] !== 2)) {
      throw new AttentionError('DIMENSION_MISMATCH', `edges must have shape [batch, edges, 2] (source, target), received ${show(es)}`);
    }
    if (as != null) {
      if (this.built && this.edgeDim == null) {
        throw new AttentionError('INVALID_CONFIG', `GraphAttention '${this.name}' was built without edge attributes ` +
          '([nodes, edges]): it has no edge weights, so it takes no edgeAttr; make a layer with edgeDim for them');
      }
      if (as.length !== 3 || as[2] == null) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `edgeAttr must have shape [batch, edges, edgeDim] with known edgeDim, received ${show(as)}`);
      }
      if (this.edgeDim != null && as[2] !== this.edgeDim) {
        throw new AttentionError('DIMENSION_MISMATCH', `edgeAttr's last dim (${as[2]}) must be edgeDim (${this.edgeDim})`);
      }
      if (es[1] != null && as[1] != null && es[1] !== as[1]) {
        throw new AttentionError('DIMENSION_MISMATCH',
          `edges and edgeAttr must list the same edges, received ${es[1]} and ${as[1]} of them`);
      }
    } else if (this.edgeDimArg != null || (this.built && this.edgeDim != null)) {
      throw new AttentionError('INVALID_CONFIG',
        `GraphAttention '${this.name}' has edgeDim ${this.edgeDim}: give [nodes, edges, edgeAttr [batch, edges, ${this.edgeDim}]]`);
    }
    const batches = [ns[0], es[0], as?.[0]].filter((b): b is number => b != null);
    if (new Set(batches).size > 1) {
      throw new AttentionError('DIMENSION_MISMATCH', `nodes, edges and edgeAttr must share the batch size, received ${show(batches)}`);
    }
    return [ns, es, as];
  }

  /**
   * The weights `build(inputShape)` creates, in getWeights() order, worked out from the
   * arguments and the input shapes alone: nothing is allocated.
   */
  weightShapes(inputShape: Shape | Shape[]): WeightShape[] {
    return this.planWeights(inputShape).map(({name, shape}) => ({name, shape}));
  }

  /** Each weight with the key it has in GraphWeights and the kind of its initializer, in getWeights() order. */
  private planWeights(inputShape: Shape | Shape[]): PlannedGraphWeight[] {
    const [ns, , as] = this.checkShapes(inputShape);
    const F = ns[2] as number;
    const H = this.numHeads;
    const C = this.units;
    const E = as != null ? as[2] as number : null;
    const w = (key: keyof GraphWeights, name: string, shape: number[], kind: PlannedGraphWeight['kind']) =>
      ({key, name, shape, kind});
    const planned = [w('kernel', 'kernel', [F, H, C], 'kernel')];
    if (this.version === 'gat') {
      planned.push(w('attentionSource', 'attention_source', [H, C], 'attention'),
        w('attentionTarget', 'attention_target', [H, C], 'attention'));
    } else {
      planned.push(w('targetKernel', 'target_kernel', [F, H, C], 'kernel'), w('attention', 'attention', [H, C], 'attention'));
    }
    if (E != null) {
      planned.push(w('edgeKernel', 'edge_kernel', [E, H, C], 'kernel'));
      if (this.version === 'gat') planned.push(w('attentionEdge', 'attention_edge', [H, C], 'attention'));
    }
    if (this.useBias) planned.push(w('bias', 'bias', [this.outputDim], 'bias'));
    return planned;
  }

  override build(inputShape: Shape | Shape[]): void {
    const planned = this.planWeights(inputShape);
    checkLayerWeights('GraphAttention', planned); // before anything is allocated
    const [ns, , as] = this.checkShapes(inputShape);
    this.features = ns[2] as number;
    this.edgeDim = as != null ? as[2] as number : null;
    const v: Partial<Record<keyof GraphWeights, tf.LayerVariable>> = {};
    for (const {key, name, shape, kind} of planned) {
      v[key] = this.addWeight(name, shape, 'float32', this.init[kind], this.regularizer[kind] ?? undefined, true,
        this.constraint[kind] ?? undefined);
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
    const list = inputList(inputs, 'GraphAttention.apply');
    const call = graphApply('GraphAttention', this.name, list, ['nodes'], kwargs, GRAPH_CALL_ARGS, this.graphFlags);
    this.returnScores = call.returnScores;
    return super.apply(inputs, call.kwargs);
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor | tf.Tensor[] {
    const [nodes, edges, edgeAttr] = inputList(inputs, 'GraphAttention.call') as tf.Tensor[];
    this.checkShapes([nodes.shape, edges.shape, ...(edgeAttr != null ? [edgeAttr.shape] : [])]);
    const weights = Object.fromEntries(
      Object.entries(this.vars).map(([k, v]) => [k, v!.read()])) as unknown as GraphWeights;
    const returnAttentionScores = kwargs?.returnAttentionScores === true;
    const result = graphAttention(nodes, edges, weights, {
      edgeAttr, version: this.version, negativeSlope: this.negativeSlope, addSelfLoops: this.addSelfLoops,
      concatHeads: this.concatHeads, dropout: this.dropout, training: kwargs?.training === true, returnAttentionScores,
    });
    return result instanceof tf.Tensor ? result : [result.output, result.scores];
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape | Shape[] {
    const [ns, es] = this.checkShapes(inputShape);
    const out: Shape = [ns[0], ns[1], this.outputDim];
    if (!this.returnScores) return out;
    const rows = es[1] == null ? null : this.addSelfLoops ? (ns[1] == null ? null : es[1] + ns[1]) : es[1];
    return [out, [ns[0], rows, this.numHeads]];
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
      units: this.units, numHeads: this.numHeads, concatHeads: this.concatHeads, negativeSlope: this.negativeSlope,
      edgeDim: this.edgeDim, dropout: this.dropout, useBias: this.useBias, version: this.version,
      addSelfLoops: this.addSelfLoops,
      kernelInitializer: s(this.init.kernel), attentionInitializer: s(this.init.attention),
      biasInitializer: s(this.init.bias), kernelRegularizer: s(this.regularizer.kernel),
      attentionRegularizer: s(this.regularizer.attention), biasRegularizer: s(this.regularizer.bias),
      kernelConstraint: s(this.constraint.kernel), attentionConstraint: s(this.constraint.attention),
      biasConstraint: s(this.constraint.bias),
    };
  }
}
tf.serialization.registerClass(GraphAttention);
