/**
 * Local-global attention with an HNSW mask. An HNSW graph links each node to a few near
 * and far neighbours, and lifts a few nodes into upper layers; local-global attention can
 * take those upper-layer nodes as its global tokens. Here:
 *   1. HnswMask.adaptive (a local window OR the graph's edges), HnswMask.fromLayers for
 *      the upper layers, and SparseMask.globalIndices for the hubs give one dense mask,
 *      which MultiHeadAttention takes as its attentionMask;
 *   2. LocalGlobalAttention takes the upper-layer nodes as global indices and computes
 *      windowed + global attention without any T x T mask.
 *
 *   npx ts-node examples/local_global_hnsw.ts
 */
import * as tf from '@tensorflow/tfjs';
import {HnswMask, LocalGlobalAttention, MultiHeadAttention, SparseMask} from '../src/node';
import {runAsProgram} from './run';

export async function main(
    log: (line: string) => void = console.log): Promise<{picture: string; sparsity: number; shapes: number[][]}> {
  const T = 16;
  // A small-world graph: each node linked 5 ahead; nodes 0, 5 and 11 in layer 1, node 5 in layer 2.
  const edges = Array.from({length: T}, (_, i) => [i, (i + 5) % T] as [number, number]);
  const upperLayers = [[0, 5, 11], [5]];
  const upper = [...new Set(upperLayers.flat())].sort((a, b) => a - b);
  const parts = [HnswMask.adaptive(T, 2, edges), HnswMask.fromLayers(T, upperLayers),
    SparseMask.globalIndices(T, upper)];
  const mask = tf.tidy(() => parts.reduce((a, b) => tf.logicalOr(a, b)) as tf.Tensor2D);
  tf.dispose(parts);
  const picture = SparseMask.visualize(mask);
  const sparsity = SparseMask.sparsity(mask);
  log(`window + HNSW edges + upper-layer hubs (${(100 * sparsity).toFixed(0)}% masked out):\n${picture}`);

  const x = tf.randomNormal([2, T, 32], 0, 1, 'float32', 1);
  const dense = new MultiHeadAttention({numHeads: 4});
  const withMask = dense.apply(x, {attentionMask: tf.tidy(() => tf.broadcastTo(mask, [2, T, T]))}) as tf.Tensor;
  const localGlobal = new LocalGlobalAttention({numHeads: 4, windowSize: 2, globalIndices: upper});
  const banded = localGlobal.apply(x) as tf.Tensor;
  log(`MultiHeadAttention with the mask: ${JSON.stringify(withMask.shape)}; ` +
    `LocalGlobalAttention with globals ${JSON.stringify(upper)}: ${JSON.stringify(banded.shape)}`);
  const shapes = [withMask.shape, banded.shape];
  tf.dispose([mask, x, withMask, banded]);
  dense.dispose();
  localGlobal.dispose();
  return {picture, sparsity, shapes};
}

if (require.main === module) runAsProgram(() => main());
