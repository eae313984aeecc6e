/**
 * The JSON a Keras topology is made of, and the topology being rewritten (its source for
 * messages and the weight naming the rewrite collects), shared by the rewrite's modules.
 */
import {AttentionError} from '../core/errors';
import {WeightNaming} from './weights';

export type Json = null | boolean | number | string | Json[] | {[key: string]: Json};
export type Dict = {[key: string]: Json};

export const isDict = (v: unknown): v is Dict => v != null && typeof v === 'object' && !Array.isArray(v);

/** The model classes whose config is itself a topology. */
export const MODEL_CLASSES = ['Functional', 'Model', 'Sequential'];

/** A topology under rewrite: where it comes from (for messages) and what it says of weight names. */
export class TopologyRewrite {
  /** Layer names the stored weights use for layers tfjs names otherwise. */
  readonly naming: WeightNaming = {wrapped: {}, saved: {}};
  /**
   * @param source Names the model in messages.
   * @param modelConfig Rewrites the config of a model used as a layer (topology.ts).
   */
  constructor(readonly source: string,
              readonly modelConfig: (className: string, config: Json, rewrite: TopologyRewrite) => Dict) {}

  /** AttentionError('IO') naming the model. */
  io(message: string): AttentionError {
    return new AttentionError('IO', `${this.source}: ${message}`);
  }
}
