/**
 * The call flags a layer applied to symbolic inputs remembers. tfjs' model executor
 * (predict, fit, evaluate) calls layers without the call arguments they were given in the
 * graph, so a layer keeps the flags of its graph nodes and uses them in the calls that do
 * not say otherwise.
 */
import {AttentionError} from '../core/errors';
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
