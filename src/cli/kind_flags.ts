/**
 * The train command's flags for the layer arguments only some attention kinds take
 * (`--window`, `--globals`, `--features`, `--block-size`), one list per kind of the kind
 * table, and how their values become the layer's arguments.
 */
import {AttentionError} from '../core/errors';
import {AnyAttentionArgs, ATTENTION_KINDS, AttentionKind} from '../layers/kinds';
import {Command, flagKey} from './command';
import {intArg, intListArg} from './shared';

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

/** --block-size, which flash and local-global both take. */
const BLOCK_SIZE_FLAG: KindFlag = {
  flag: '--block-size <n>', arg: 'blockSize', parse: 'int', min: 1,
  description: 'flash: tile rows; local-global: block rows',
};

/** The flags of the arguments only each kind takes; every kind has an entry, so a new kind must list its own. */
export const KIND_FLAGS: Readonly<Record<AttentionKind, readonly KindFlag[]>> = {
  'mha': [],
  'gqa': [],
  'flash': [BLOCK_SIZE_FLAG],
  'linear': [
    {flag: '--features <n>', arg: 'numFeatures', parse: 'int', min: 1,
      description: 'linear: random features M (default round(D ln D))'},
  ],
  'local-global': [
    {flag: '--window <n>', arg: 'windowSize', parse: 'int', min: 1, cliDefault: 4,
      description: 'local-global: window size W (default 4)'},
    {flag: '--globals <list>', arg: 'globalIndices', parse: 'intList', min: 0, cliDefault: [0],
      description: 'local-global: global positions, e.g. 0,8 (default: 0)'},
    BLOCK_SIZE_FLAG,
  ],
};

/** Every kind flag once (a flag several kinds take, like --block-size, appears once), with the kinds taking it. */
export function kindFlags(): {flag: KindFlag; kinds: AttentionKind[]}[] {
  const out = new Map<string, {flag: KindFlag; kinds: AttentionKind[]}>();
  for (const kind of ATTENTION_KINDS) {
    for (const flag of KIND_FLAGS[kind]) {
      const seen = out.get(flag.flag) ?? {flag, kinds: []};
      seen.kinds.push(kind);
      out.set(flag.flag, seen);
    }
  }
  return [...out.values()];
}

/** Adds every kind flag to `command`, with its parser. */
export function addKindFlags(command: Command): void {
  for (const {flag} of kindFlags()) {
    const parse = (flag.parse === 'int' ? intArg(flag.min) : intListArg(flag.min)) as (value: string) => number;
    command.option(flag.flag, flag.description, parse);
  }
}

/**
 * The layer arguments the kind flags in `flags` (parsed, by camel-case key) set for `kind`:
 * given flags, else the kind's CLI defaults. A flag of another kind is refused, except when
 * resuming (the checkpoint's options rule then).
 */
export function kindArgs(flags: Readonly<Record<string, unknown>>, kind: AttentionKind, resuming: boolean):
    Partial<AnyAttentionArgs> {
  const args: Record<string, unknown> = {};
  const own = KIND_FLAGS[kind] ?? []; // none for another family's attention on --resume
  for (const {flag, kinds} of kindFlags()) {
    const value = flags[flagKey(flag.flag)];
    const ownFlag = own.find((o) => o.flag === flag.flag);
    if (ownFlag != null) {
      const given = value ?? ownFlag.cliDefault;
      if (given !== undefined) args[flag.arg] = given;
    } else if (value != null && !resuming) {
      const name = flag.flag.replace(/ .*$/, '');
      throw new AttentionError('INVALID_CONFIG',
        `${name} is for --attention ${kinds.join(' or ')}, not '${kind}'`);
    }
  }
  return args as Partial<AnyAttentionArgs>;
}
