/**
 * The train command's flags for the layer arguments only some attention kinds take
 * (`--window`, `--globals`, `--features`, `--block-size`, and the attention options of
 * mha, gqa and flash: `--softcap`, `--sliding-window`, `--sinks`, `--qk-norm`, `--output-gate`,
 * `--alibi`), one list per kind of the kind table, and how their values become the layer's arguments.
 */
import {AttentionError} from '../core/errors';
import {AnyAttentionArgs, ATTENTION_KINDS, AttentionKind} from '../layers/kinds';
import {Command, flagKey, Option} from './command';
import {floatArg, intArg, intListArg} from './shared';

/** A CLI flag that sets one of a kind's own layer arguments. */
export interface KindFlag {
  /** The CLI flag, e.g. '--window <n>'. */
  flag: string;
  /** The layer argument it sets. */
  arg: keyof AnyAttentionArgs & string;
  /** Its help text. */
  description: string;
  /**
   * How its text is read: one integer, a comma-separated list of integers, a number, one of
   * `choices`, or none (a boolean flag).
   */
  parse: 'int' | 'intList' | 'float' | 'choice' | 'boolean';
  /** The least value allowed (numbers; a 'float' must exceed it). */
  min?: number;
  /** The values a 'choice' flag takes. */
  choices?: readonly string[];
  /** The layer argument's value for a given flag value, when it is not the value itself. */
  toArg?: (value: unknown) => unknown;
  /** What the CLI passes when the flag is absent; undefined: the layer's own default. */
  cliDefault?: number | number[];
}

/** --block-size, which flash and local-global both take. */
const BLOCK_SIZE_FLAG: KindFlag = {
  flag: '--block-size <n>', arg: 'blockSize', parse: 'int', min: 1,
  description: 'flash: tile rows; local-global: block rows',
};

/** The attention options (layers/attention_options.ts) of the exact kinds. */
const OPTION_FLAGS: readonly KindFlag[] = [
  {flag: '--softcap <c>', arg: 'softcap', parse: 'float', min: 0,
    description: 'mha, gqa, flash: scores become c * tanh(s / c) (Gemma 2)'},
  {flag: '--sliding-window <n>', arg: 'slidingWindow', parse: 'int', min: 1,
    description: 'mha, gqa, flash: each query sees the last n positions (see --global-every)'},
  {flag: '--sinks', arg: 'attentionSinks', parse: 'boolean',
    description: 'mha, gqa, flash: a learned sink logit per head in the softmax (gpt-oss)'},
  {flag: '--qk-norm <kind>', arg: 'qkNorm', parse: 'choice', choices: ['rms', 'layer'],
    description: 'mha, gqa, flash: normalise q and k per head (Qwen3, OLMo 2)'},
  {flag: '--output-gate <mode>', arg: 'outputGate', parse: 'choice', choices: ['headwise', 'elementwise'],
    description: 'mha, gqa, flash: gate the attention output with a sigmoid of the input'},
  {flag: '--alibi <slopes>', arg: 'alibi', parse: 'choice', choices: ['fixed', 'learned'],
    toArg: (v) => (v === 'fixed' ? true : v), description: 'mha, gqa, flash: ALiBi with fixed or learned slopes'},
];

/** The flags of the arguments only each kind takes; every kind has an entry, so a new kind must list its own. */
export const KIND_FLAGS: Readonly<Record<AttentionKind, readonly KindFlag[]>> = {
  'mha': OPTION_FLAGS,
  'gqa': OPTION_FLAGS,
  'flash': [BLOCK_SIZE_FLAG, ...OPTION_FLAGS],
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
    const option = new Option(flag.flag, flag.description);
    const min = flag.min ?? 0;
    if (flag.parse === 'int') option.argParser(intArg(min));
    if (flag.parse === 'intList') option.argParser(intListArg(min));
    if (flag.parse === 'float') option.argParser(floatArg(min, Infinity, true));
    if (flag.parse === 'choice') option.choices(flag.choices ?? []);
    command.addOption(option);
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
      if (given !== undefined) args[flag.arg] = ownFlag.toArg != null ? ownFlag.toArg(given) : given;
    } else if (value != null && !resuming) {
      const name = flag.flag.replace(/ .*$/, '');
      throw new AttentionError('INVALID_CONFIG',
        `${name} is for --attention ${kinds.join(' or ')}, not '${kind}'`);
    }
  }
  return args as Partial<AnyAttentionArgs>;
}
