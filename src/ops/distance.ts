/**
 * distanceAttention(positions, features, radius, weights): attention over the points within a
 * distance, the design's `distance_attention`: the radius graph of the positions
 * (radiusGraph, at most maxNeighbors sources per point, the nearest), then geometricAttention
 * (PointTransformerConv semantics) over it. The graph is built from values read back once and
 * has no gradient; the attention has gradients for features, positions and every weight.
 */
import * as tf from '@tensorflow/tfjs';
import {checkArgNames} from '../core/validate';
import {
  GEOMETRIC_OPTIONS, geometricAttention, GeometricAttentionWithScores, GeometricOptions, GeometricWeights,
} from './geometric';
import {RADIUS_GRAPH_OPTIONS, radiusGraph, RadiusGraphOptions} from './neighbours';

export type DistanceOptions = GeometricOptions & RadiusGraphOptions;

export const DISTANCE_OPTIONS = [...GEOMETRIC_OPTIONS, ...RADIUS_GRAPH_OPTIONS] as const;

/**
 * Geometric attention over each point's neighbours within `radius`, for positions [B, N, d]
 * and features [B, N, F]. Returns [B, N, C]; with returnAttentionScores, {output, scores}
 * whose rows follow the radius graph's edges (then one self loop per point).
 */
export function distanceAttention(
  positions: tf.Tensor, features: tf.Tensor, radius: number, weights: GeometricWeights,
  options?: DistanceOptions & {returnAttentionScores?: false}): tf.Tensor3D;
export function distanceAttention(
  positions: tf.Tensor, features: tf.Tensor, radius: number, weights: GeometricWeights,
  options: DistanceOptions & {returnAttentionScores: true}): GeometricAttentionWithScores;
export function distanceAttention(
  positions: tf.Tensor, features: tf.Tensor, radius: number, weights: GeometricWeights,
  options: DistanceOptions = {}): tf.Tensor3D | GeometricAttentionWithScores {
  options = options ?? {};
  checkArgNames('distanceAttention', options, DISTANCE_OPTIONS);
  const {maxNeighbors, loop, ...attention} = options;
  const graph: RadiusGraphOptions = {};
  if (maxNeighbors !== undefined) graph.maxNeighbors = maxNeighbors;
  if (loop !== undefined) graph.loop = loop;
  const edges = radiusGraph(positions, radius, graph);
  try {
    return geometricAttention(features, positions, edges, weights, attention);
  } finally {
    edges.dispose();
  }
}
