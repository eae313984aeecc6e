/**
 * The call flags a layer applied to symbolic inputs remembers. tfjs' model executor
 * (predict, fit, evaluate) calls layers without the call arguments they were given in the
 * graph, so a layer keeps the flags of its graph nodes and uses them in the calls that do
 * not say otherwise.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../core/errors';
import {assertBoolean, checkArgNames} from '../core/validate';
import {Kwargs} from './tfjs_types';

/** The boolean call arguments `Name` of one layer, as its graph nodes set them. */
export class GraphCallFlags<Name extends string> {
  /** The flags of the layer's graph nodes; null until it is applied to symbolic inputs. */
  private remembered: Record<Name, boolean> | null = null;

  constructor(private readonly names: readonly Name[]) {}

  /**
   * The flags of an apply to symbolic inputs (absent: false). Throws UNSUPPORTED when the
   * layer is already in a graph with other ones: a layer shared between graph nodes must
   * use one setting.
   */
  forGraph(layer: string, kwargs: Kwargs | undefined): Record<Name, boolean> {
    const flags = this.collect((name) => kwargs?.[name] === true);
    const before = this.remembered;
    for (const name of this.names) {
      if (before != null && before[name] !== flags[name]) {
        throw new AttentionError('UNSUPPORTED',
          `layer '${layer}' is already in a graph with ${name} ${before[name]}; ` +
          'a layer shared between graph nodes must use one setting');
      }
    }
    return flags;
  }

  /** Keeps the flags forGraph returned, for the calls tfjs makes without them. */
  remember(flags: Record<Name, boolean>): void {
    this.remembered = flags;
  }

  /** The flags of an eager call: as given, else those of the layer's graph nodes, else false. */
  forCall(kwargs: Kwargs | undefined): Record<Name, boolean> {
    return this.collect((name) => kwargs?.[name] ?? this.remembered?.[name] ?? false);
  }

  private collect(flag: (name: Name) => boolean): Record<Name, boolean> {
    return Object.fromEntries(this.names.map((name) => [name, flag(name)])) as Record<Name, boolean>;
  }
}

/** What a graph layer's apply passes on to tfjs' Layer.apply. */
export interface GraphApply {
  kwargs: Kwargs | undefined;
  /** Whether this call returns attention scores (computeOutputShape needs it). */
  returnScores: boolean;
}

/**
 * The checks the graph layers (GraphAttention, GeometricAttention, EquivariantAttention) make
 * in apply before tfjs' Layer.apply: the call arguments by name and type; on symbolic inputs,
 * edges (inputs[floatNames.length]) int32 and the inputs before them (named floatNames)
 * float32, and the graph node's returnAttentionScores remembered for predict and fit; on
 * tensors, the flags of the call or else of the layer's graph nodes.
 */
export function graphApply(who: string, layer: string, inputs: unknown[], floatNames: readonly string[],
                           kwargs: Kwargs | undefined, callArgs: readonly string[],
                           flags: GraphCallFlags<'returnAttentionScores'>): GraphApply {
  checkArgNames(`${who}.apply`, kwargs, callArgs);
  for (const flag of ['returnAttentionScores', 'training'] as const) {
    if (kwargs?.[flag] != null) assertBoolean(flag, kwargs[flag]);
  }
  if (!(inputs[0] instanceof tf.SymbolicTensor)) {
    const given = flags.forCall(kwargs);
    return {kwargs: {...kwargs, ...given}, returnScores: given.returnAttentionScores};
  }
  const graph = flags.forGraph(layer, kwargs);
  const edges = inputs[floatNames.length] as tf.SymbolicTensor;
  if (edges.dtype !== 'int32') {
    throw new AttentionError('INVALID_CONFIG', 'edges must be int32 (source, target) node indices: make the input ' +
      `with tf.input({shape: [E, 2], dtype: 'int32'}), received dtype ${edges.dtype}`);
  }
  floatNames.forEach((name, k) => {
    const t = inputs[k] as tf.SymbolicTensor;
    if (t.dtype !== 'float32') throw new AttentionError('INVALID_CONFIG', `${name} must be float32, received dtype ${t.dtype}`);
  });
  flags.remember(graph);
  return {kwargs, returnScores: graph.returnAttentionScores};
}
