/**
 * The sizes and projection weights of an attention layer for its input shapes: the query,
 * key, value and output projections in Keras' layout and getWeights() order, worked out
 * without allocating anything.
 */
import {AttentionError} from '../core/errors';
import {WeightShape} from '../core/limits';
import {Shape} from './inputs';

/** A built layer's sizes: model dims of query, key, value and output; head dims of keys and values. */
export interface LayerDims {Eq: number; Ek: number; Ev: number; D: number; Dv: number; Eout: number}

/** The arguments that size the projections (null: derived from the inputs). */
export interface ProjectionArgs {
  numHeads: number;
  numKvHeads: number;
  headDim: number | null;
  valueDim: number | null;
  outputDim: number | null;
  useBias: boolean;
}

/**
 * The dims and the projection weights for checked [query, value, key] shapes: D defaults
 * to the query's last dim / H (which must divide it), Dv to D and Eout to the query's
 * last dim. Weights: query, key, value, attention_output, each kernel then bias.
 */
export function planProjections([qs, vs, ks]: [Shape, Shape, Shape],
    args: ProjectionArgs): {dims: LayerDims; projections: WeightShape[]} {
  const Eq = qs[2] as number;
  const Ev = vs[2] as number;
  const Ek = ks[2] as number;
  const H = args.numHeads;
  const G = args.numKvHeads;
  let D = args.headDim;
  if (D == null) {
    if (Eq % H !== 0) {
      throw new AttentionError('INVALID_CONFIG',
        `headDim is not set and the query's last dim (${Eq}) is not divisible by numHeads (${H}); pass headDim`);
    }
    D = Eq / H;
  }
  const Dv = args.valueDim ?? D;
  const Eout = args.outputDim ?? Eq;
  const projections: WeightShape[] = [];
  for (const [name, kernel, bias] of [['query', [Eq, H, D], [H, D]], ['key', [Ek, G, D], [G, D]],
    ['value', [Ev, G, Dv], [G, Dv]], ['attention_output', [H, Dv, Eout], [Eout]]] as const) {
    projections.push({name: `${name}/kernel`, shape: kernel});
    if (args.useBias) projections.push({name: `${name}/bias`, shape: bias});
  }
  return {dims: {Eq, Ek, Ev, D, Dv, Eout}, projections};
}
