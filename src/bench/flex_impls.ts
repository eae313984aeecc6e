/**
 * The flexAttention rows of the benchmark: no mod, causal, a document mask of 8 equal
 * documents, a sliding window of 256 and a prefix-LM of T / 4 prompt positions, each with its
 * block mask (blocks of 128) built once per length and kept, as a user keeps one across steps.
 * Each row reports the share of the attention's tiles it computes.
 */
import * as tf from '@tensorflow/tfjs';
import {BlockMask, createBlockMask} from '../ops/block_mask';
import {causalMask} from '../ops/causal';
import {flexAttention} from '../ops/flex';
import {andMasks, documentMask, prefixLm, slidingWindow} from '../ops/flex_mods';
import {MaskMod} from '../ops/flex_types';
import {AttentionShape, Pass} from './measure';
import {BenchImpl} from './workload_types';

/** Documents of the flex-document row, window of flex-sliding, and the prompt share of flex-prefix. */
export const FLEX_DOCUMENTS = 8;
export const FLEX_WINDOW = 256;
export const FLEX_PREFIX_SHARE = 0.25;

/** Each row's mask mod for a length (documents: ids kept in a tensor the cache owns). */
const MASKS: Readonly<Record<string, (T: number) => {mod: MaskMod; ids?: tf.Tensor}>> = {
  causal: () => ({mod: causalMask()}),
  document: (T) => {
    // Kept: the cache owns it, whatever tidy the row runs in.
    const ids = tf.keep(tf.tensor1d(Array.from({length: T}, (_, i) => Math.floor((i * FLEX_DOCUMENTS) / T)), 'int32'));
    return {mod: andMasks(causalMask(), documentMask(ids)), ids};
  },
  sliding: () => ({mod: slidingWindow(FLEX_WINDOW)}),
  prefix: (T) => ({mod: prefixLm(Math.floor(T * FLEX_PREFIX_SHARE))}),
};

/** One block mask per row, for the length last asked (and the tensor its mod reads). */
const cache = new Map<string, {T: number; mask: BlockMask; ids?: tf.Tensor}>();

/** Frees the kept block masks and their ids (the end of a bench run). */
export function releaseFlexMasks(): void {
  for (const {mask, ids} of cache.values()) {
    mask.dispose();
    ids?.dispose();
  }
  cache.clear();
}

/** The block mask of row `name` for self-attention of length T (shared by every batch entry and head). */
export function flexBlockMask(name: string, T: number): BlockMask {
  const hit = cache.get(name);
  if (hit != null && hit.T === T) return hit.mask;
  if (hit != null) {
    hit.mask.dispose();
    hit.ids?.dispose();
  }
  const {mod, ids} = MASKS[name](T);
  const mask = createBlockMask(mod, 1, 1, T, T);
  cache.set(name, {T, mask, ...(ids != null ? {ids} : {})});
  return mask;
}

/**
 * The products a flex row computes: its share of the tiles times the dense attention's, two
 * products per pair forward and seven forward and backward (the scores again, dV, dP, dQ, dK).
 */
function flexFlops(name: string | null, {B, H, T, S, D}: AttentionShape, pass: Pass): number {
  const share = name == null ? 1 : flexBlockMask(name, T).computedFraction();
  return (pass === 'fwd' ? 2 : 7) * 2 * B * H * T * S * D * share;
}

function flexRow(name: string | null, description: string): BenchImpl {
  return {
    description,
    run: (q, k, v, {scale}) => flexAttention(q, k, v, {
      scale, ...(name != null ? {blockMask: flexBlockMask(name, q.shape[2] as number)} : {})}),
    performedFlops: (shape, pass) => flexFlops(name, shape, pass),
    computedFraction: (shape) => (name == null ? 1 : flexBlockMask(name, shape.T).computedFraction()),
  };
}

export const FLEX_IMPLS: Readonly<Record<string, BenchImpl>> = {
  'flex': flexRow(null, 'flexAttention with no mod and no block mask (every tile computed)'),
  'flex-causal': flexRow('causal', 'flexAttention, block mask of causalMask() (blocks of 128)'),
  'flex-document': flexRow('document',
    `flexAttention, block mask of causal AND documentMask: ${FLEX_DOCUMENTS} equal documents packed in T`),
  'flex-sliding': flexRow('sliding', `flexAttention, block mask of slidingWindow(${FLEX_WINDOW}) (causal window)`),
  'flex-prefix': flexRow('prefix', `flexAttention, block mask of prefixLm(T * ${FLEX_PREFIX_SHARE})`),
};
