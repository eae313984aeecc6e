/**
 * The attention kinds, one entry each: the layer class (which declares its own arguments
 * and capabilities), how the factory builds it, what buildTransformer gives each block,
 * the CLI flags only it takes and the benchmark's setting for it. attentionLayer,
 * buildTransformer, the CLI and the bench read this table; adding a kind is adding an entry.
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

/** A CLI flag that sets one of a kind's own layer arguments. */
export interface KindFlag {
  /** The CLI flag, e.g. '--window <n>'. */
  flag: string;
  /** The layer argument it sets. */
  arg: keyof AnyAttentionArgs & string;
  /** Its help text. */
  description: string;
  /** How its text is read: one integer, or a comma-separated list of integers. */
  parse: 'int' | 'intList';
  /** The least value allowed. */
  min: number;
  /** What the CLI passes when the flag is absent; undefined: the layer's own default. */
  cliDefault?: number | number[];
}

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
  /** The CLI flags of arguments only this kind takes. */
  flags: readonly KindFlag[];
  /** The arguments of this kind's rows in the decode benchmark, beyond heads and causal. */
  benchArgs: Partial<AnyAttentionArgs>;
}

const BLOCK_SIZE_FLAG = (what: string): KindFlag => ({
  flag: '--block-size <n>', arg: 'blockSize', parse: 'int', min: 1, description: `flash: tile rows; local-global: ${what}`,
});

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
    flags: [],
    benchArgs: {},
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
    flags: [],
    benchArgs: {},
  },
  'flash': {
    kind: 'flash', layer: FlashAttention,
    description: 'FlashAttention: exact attention in tiles, memory linear in the length',
    create: (args) => new FlashAttention(args),
    kvHeads: (H) => H,
    flags: [BLOCK_SIZE_FLAG('block rows')],
    benchArgs: {},
  },
  'linear': {
    kind: 'linear', layer: LinearAttention,
    description: 'LinearAttention: FAVOR+ random features, linear in the length',
    create: (args) => new LinearAttention(args),
    kvHeads: (H) => H,
    // The random features, reproducible too, and different in every block.
    blockArgs: (args, seed, l) => ({seed: (args.seed ?? seed) + l}),
    flags: [{flag: '--features <n>', arg: 'numFeatures', parse: 'int', min: 1,
      description: 'linear: random features M (default round(D ln D))'}],
    benchArgs: {seed: 0},
  },
  'local-global': {
    kind: 'local-global', layer: LocalGlobalAttention,
    description: 'LocalGlobalAttention: a sliding window plus global positions, blended by a learned gate',
    create: (args) => new LocalGlobalAttention(args as LocalGlobalAttentionArgs & AttentionLayerArgs),
    kvHeads: (H) => H,
    flags: [
      {flag: '--window <n>', arg: 'windowSize', parse: 'int', min: 1, cliDefault: 4,
        description: 'local-global: window size W (default 4)'},
      {flag: '--globals <list>', arg: 'globalIndices', parse: 'intList', min: 0, cliDefault: [0],
        description: 'local-global: global positions, e.g. 0,8 (default: 0)'},
      BLOCK_SIZE_FLAG('block rows'),
    ],
    benchArgs: {windowSize: 64, globalIndices: [0, 1, 2, 3]},
  },
};

/** The table's entries, in ATTENTION_KINDS order. */
export function attentionKinds(): AttentionKindEntry[] {
  return ATTENTION_KINDS.map((k) => ATTENTION_KIND_TABLE[k]);
}

/** Every kind flag once (a flag several kinds take, like --block-size, appears once), with the kinds taking it. */
export function kindFlags(): {flag: KindFlag; kinds: AttentionKind[]}[] {
  const out = new Map<string, {flag: KindFlag; kinds: AttentionKind[]}>();
  for (const entry of attentionKinds()) {
    for (const flag of entry.flags) {
      const seen = out.get(flag.flag) ?? {flag, kinds: []};
      seen.kinds.push(entry.kind);
      out.set(flag.flag, seen);
    }
  }
  return [...out.values()];
}
