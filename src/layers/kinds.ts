/**
 * The attention kinds, one entry each: the layer class (which declares its own arguments
 * and capabilities), how the factory builds it and what buildTransformer gives each block.
 * attentionLayer and buildTransformer read this table; adding a kind is adding an entry.
 * Tables elsewhere keyed by kind (the CLI's flags, the decode benchmark's arguments) are
 * Records over AttentionKind, so the compiler asks for a new kind's entries there too.
 */
import {AttentionError, show} from '../core/errors';
import {AttentionLayerArgs} from './attention_args';
import {AttentionLayerBase} from './base_attention';
import {FlashAttention, FlashAttentionArgs} from './flash_attention';
import {LinearAttention, LinearAttentionArgs} from './linear_attention';
import {LocalGlobalAttention, LocalGlobalAttentionArgs} from './local_global_attention';
import {MultiHeadAttention, MultiHeadAttentionArgs} from './multi_head_attention';

export const ATTENTION_KINDS = ['mha', 'gqa', 'flash', 'linear', 'local-global'] as const;
export type AttentionKind = typeof ATTENTION_KINDS[number];

/** Every argument any kind takes, so one options object can be passed around. */
export type AnyAttentionArgs = MultiHeadAttentionArgs & Partial<FlashAttentionArgs> & Partial<LinearAttentionArgs> &
  Partial<LocalGlobalAttentionArgs>;

/** A layer class of this library, with what it declares about itself. */
export type AttentionLayerClass = (new (args: never) => AttentionLayerBase) &
  Pick<typeof AttentionLayerBase, 'ownArgs' | 'capabilitiesFor'> & {className: string};

export interface AttentionKindEntry {
  kind: AttentionKind;
  /** One line for help texts and reports. */
  description: string;
  layer: AttentionLayerClass;
  /** The layer for arguments whose names are already checked; adds the kind's own rules. */
  create(args: AnyAttentionArgs): AttentionLayerBase;
  /** Key/value heads G for H query heads when a model builder is given `given` (or nothing). */
  kvHeads(H: number, given: number | undefined): number;
  /** What block `l` of buildTransformer adds to the shared arguments (`args`: the user's extra ones). */
  blockArgs?(args: Partial<AnyAttentionArgs>, seed: number, l: number): Partial<AnyAttentionArgs>;
}

export const ATTENTION_KIND_TABLE: Readonly<Record<AttentionKind, AttentionKindEntry>> = {
  'mha': {
    kind: 'mha', layer: MultiHeadAttention,
    description: 'MultiHeadAttention, as many key/value heads as query heads',
    create(args) {
      if (args.numKvHeads != null && args.numKvHeads !== args.numHeads) {
        throw new AttentionError('INVALID_CONFIG',
          `'mha' has as many key/value heads as query heads: numKvHeads (${args.numKvHeads}) must equal numHeads ` +
          `(${args.numHeads}); use 'gqa' for fewer`);
      }
      return new MultiHeadAttention({...args, numKvHeads: args.numHeads});
    },
    kvHeads: (H) => H,
  },
  'gqa': {
    kind: 'gqa', layer: MultiHeadAttention,
    description: 'MultiHeadAttention with grouped-query heads (numKvHeads < numHeads)',
    create(args) {
      if (args.numKvHeads == null || !(args.numKvHeads < args.numHeads)) {
        throw new AttentionError('INVALID_CONFIG',
          `'gqa' needs numKvHeads smaller than numHeads (${args.numHeads}), received ${show(args.numKvHeads)}`);
      }
      return new MultiHeadAttention(args);
    },
    kvHeads: (H, given) => given ?? Math.max(1, Math.floor(H / 2)),
  },
  'flash': {
    kind: 'flash', layer: FlashAttention,
    description: 'FlashAttention: exact attention in tiles, memory linear in the length',
    create: (args) => new FlashAttention(args),
    kvHeads: (H) => H,
  },
  'linear': {
    kind: 'linear', layer: LinearAttention,
    description: 'LinearAttention: FAVOR+ random features, linear in the length',
    create: (args) => new LinearAttention(args),
    kvHeads: (H) => H,
    // The random features, reproducible too, and different in every block.
    blockArgs: (args, seed, l) => ({seed: (args.seed ?? seed) + l}),
  },
  'local-global': {
    kind: 'local-global', layer: LocalGlobalAttention,
    description: 'LocalGlobalAttention: a sliding window plus global positions, blended by a learned gate',
    create: (args) => new LocalGlobalAttention(args as LocalGlobalAttentionArgs & AttentionLayerArgs),
    kvHeads: (H) => H,
  },
};

/** The table's entries, in ATTENTION_KINDS order. */
export function attentionKinds(): AttentionKindEntry[] {
  return ATTENTION_KINDS.map((k) => ATTENTION_KIND_TABLE[k]);
}
