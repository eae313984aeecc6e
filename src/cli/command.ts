/**
 * The command-line parser of the `tfjs-attention` command: subcommands with long flags
 * (`--name <value>`, `--name=value`, `--flag`, `--no-flag`), value parsers, choices, defaults,
 * required flags and generated help. The CLI needs no more, and keeping it here keeps the
 * package free of dependencies that only the CLI would use.
 *
 * Usage errors throw UsageError with the one-line message the CLI prints; help and version
 * are printed and throw UsageError with exit code 0.
 */
import {nearestName} from '../core/validate';

/** Thrown by a value parser for a bad value; the parser reports it with the flag and the value. */
export class InvalidArgumentError extends Error {}

/**
 * A bad command line (exitCode 2; an empty message when the help was printed instead), or
 * help or the version printed (exitCode 0).
 */
export class UsageError extends Error {
  constructor(message: string, readonly exitCode: 0 | 2 = 2) {
    super(message);
  }
}

/** Where help, the version and errors go. */
export interface CommandOutput {
  writeOut(text: string): void;
  writeErr(text: string): void;
}

type Parser = (value: string) => unknown;

/** The key of a flag in the parsed flags: '--kv-heads <n>' -> 'kvHeads', '--no-heap' -> 'heap'. */
export function flagKey(flags: string): string {
  const long = flags.replace(/^-\w, /, '').replace(/ .*$/, '');
  const name = long.startsWith('--no-') && !flags.includes('<') ? long.slice(5) : long.slice(2);
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** One flag: '--out <dir>' (takes a value), '--quiet' (boolean) or '--no-heap' (true unless given). */
export class Option {
  readonly long: string;
  readonly short: string | null;
  /** The key in the parsed flags: '--kv-heads <n>' -> 'kvHeads', '--no-heap' -> 'heap'. */
  readonly key: string;
  readonly takesValue: boolean;
  readonly negated: boolean;
  parser: Parser | null = null;
  allowed: readonly string[] | null = null;
  defaultValue: unknown = undefined;
  defaultText: string | null = null;
  required = false;

  constructor(readonly flags: string, readonly description = '') {
    const m = /^(?:(-\w), )?(--[a-z][a-z0-9-]*)(?: <\w[\w-]*>)?$/.exec(flags);
    if (m == null) throw new Error(`bad flag spec '${flags}'`);
    this.short = m[1] ?? null;
    this.long = m[2];
    this.takesValue = flags.includes('<');
    this.negated = !this.takesValue && this.long.startsWith('--no-');
    this.key = flagKey(flags);
    if (this.negated) this.defaultValue = true;
  }

  /** The values it accepts; anything else is a usage error listing them. */
  choices(values: readonly string[]): this {
    this.allowed = values;
    return this;
  }

  /** Its value when not given; `text` replaces the value in the help. */
  default(value: unknown, text?: string): this {
    this.defaultValue = value;
    this.defaultText = text ?? null;
    return this;
  }

  /** Parses the given text; an InvalidArgumentError becomes a usage error naming the flag and the value. */
  argParser(parse: Parser): this {
    this.parser = parse;
    return this;
  }

  /** The value of `text` given to this flag. */
  parse(text: string): unknown {
    if (this.allowed != null && !this.allowed.includes(text)) {
      throw new UsageError(`option '${this.flags}' argument '${text}' is invalid. Allowed choices are ` +
        `${this.allowed.join(', ')}.`);
    }
    if (this.parser == null) return text;
    try {
      return this.parser(text);
    } catch (e) {
      if (e instanceof InvalidArgumentError) {
        throw new UsageError(`option '${this.flags}' argument '${text}' is invalid. ${e.message}`);
      }
      throw e;
    }
  }

  /** The help line's description: the text, the choices and the default. */
  helpText(): string {
    const extra: string[] = [];
    if (this.allowed != null) extra.push(`choices: ${this.allowed.join(', ')}`);
    if (this.defaultText != null) extra.push(`default: ${this.defaultText}`);
    else if (this.defaultValue !== undefined && !this.negated && this.defaultValue !== false) {
      extra.push(`default: ${JSON.stringify(this.defaultValue)}`);
    }
    return extra.length > 0 ? `${this.description} (${extra.join('; ')})` : this.description;
  }
}

/** Where a flag's value came from: the command line or its default. */
export type ValueSource = 'cli' | 'default';

type Action = (flags: Record<string, unknown>, command: Command) => unknown;

const HELP = new Option('-h, --help', 'print help');

/** The program, or one of its subcommands. */
export class Command {
  private text = '';
  private readonly options: Option[] = [];
  private readonly commands: Command[] = [];
  private after = '';
  private handler: Action | null = null;
  private versionText: string | null = null;
  private parent: Command | null = null;
  private out: CommandOutput = {writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s)};
  private sources: Record<string, ValueSource> = {};

  constructor(readonly name: string) {}

  description(text: string): this {
    this.text = text;
    return this;
  }

  /** Adds -V, --version, which prints `version`. */
  version(version: string): this {
    this.versionText = version;
    return this;
  }

  /** Where help, the version and errors are written (subcommands use their program's). */
  configureOutput(out: CommandOutput): this {
    this.out = out;
    return this;
  }

  /** A subcommand, e.g. `train`. */
  command(name: string): Command {
    const sub = new Command(name);
    sub.parent = this;
    this.commands.push(sub);
    return sub;
  }

  /** A flag with an optional value parser and default (a default alone may come third). */
  option(flags: string, description: string, parse: Parser, defaultValue?: unknown): this;
  option(flags: string, description: string, defaultValue?: unknown): this;
  option(flags: string, description: string, parseOrDefault?: unknown, defaultValue?: unknown): this {
    const o = new Option(flags, description);
    if (typeof parseOrDefault === 'function') o.argParser(parseOrDefault as Parser);
    else if (parseOrDefault !== undefined) o.default(parseOrDefault);
    if (defaultValue !== undefined) o.default(defaultValue);
    return this.addOption(o);
  }

  /** An option that must be given. */
  requiredOption(flags: string, description: string, parse?: Parser, defaultValue?: unknown): this {
    if (parse != null) this.option(flags, description, parse, defaultValue);
    else this.option(flags, description, defaultValue);
    this.options[this.options.length - 1].required = true;
    return this;
  }

  addOption(option: Option): this {
    this.options.push(option);
    return this;
  }

  /** Text printed after the options in this command's help. */
  addHelpText(text: string): this {
    this.after = text;
    return this;
  }

  /** What the command does with its parsed flags (`F` describes them: the parser checked each value). */
  action<F>(handler: (flags: F, command: Command) => unknown): this {
    this.handler = handler as Action;
    return this;
  }

  /** Whether the last parse took flag `key` from the command line or from its default. */
  getOptionValueSource(key: string): ValueSource | undefined {
    return this.sources[key];
  }

  private output(): CommandOutput {
    return this.parent?.output() ?? this.out;
  }

  private path(): string {
    return this.parent != null ? `${this.parent.path()} ${this.name}` : this.name;
  }

  /** Parses `argv` (the arguments after the program name) and runs the subcommand it names. */
  async parseAsync(argv: string[]): Promise<void> {
    const [first, ...rest] = argv;
    if (first == null) {
      this.output().writeErr(this.help());
      throw new UsageError(''); // the help says it all
    }
    if (first === '-h' || first === '--help') {
      this.output().writeOut(this.help());
      throw new UsageError('help', 0);
    }
    if ((first === '-V' || first === '--version') && this.versionText != null) {
      this.output().writeOut(`${this.versionText}\n`);
      throw new UsageError('version', 0);
    }
    if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'`);
    if (first === 'help') { // `help` or `help <command>`
      this.output().writeOut(rest.length === 0 ? this.help() : this.subcommand(rest[0]).help());
      throw new UsageError('help', 0);
    }
    await this.subcommand(first).run(rest);
  }

  /** The subcommand `name`, or a usage error naming the nearest one. */
  private subcommand(name: string): Command {
    const sub = this.commands.find((c) => c.name === name);
    if (sub != null) return sub;
    const near = nearestName(name, this.commands.map((c) => c.name));
    throw new UsageError(`unknown command '${name}'${near != null ? ` (Did you mean ${near}?)` : ''}`);
  }

  private async run(argv: string[]): Promise<void> {
    // Help and the version win over anything else on the line, as they do at the top.
    if (argv.includes('-h') || argv.includes('--help')) {
      this.output().writeOut(this.help());
      throw new UsageError('help', 0);
    }
    const version = this.parent?.versionText;
    if (version != null && (argv.includes('-V') || argv.includes('--version'))) {
      this.output().writeOut(`${version}\n`);
      throw new UsageError('version', 0);
    }
    const flags: Record<string, unknown> = {};
    this.sources = {};
    for (const o of this.options) {
      if (o.defaultValue !== undefined) {
        flags[o.key] = o.defaultValue;
        this.sources[o.key] = 'default';
      }
    }
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i];
      if (!arg.startsWith('-')) {
        throw new UsageError(`too many arguments for '${this.name}': it takes flags only, received '${arg}'`);
      }
      const eq = arg.indexOf('=');
      const flag = eq > 0 ? arg.slice(0, eq) : arg;
      const o = this.options.find((x) => x.long === flag || x.short === flag);
      if (o == null) {
        const near = nearestName(flag, this.options.map((x) => x.long));
        throw new UsageError(`unknown option '${flag}'${near != null ? ` (Did you mean ${near}?)` : ''}`);
      }
      if (o.takesValue) {
        const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
        if (value == null) throw new UsageError(`option '${o.flags}' argument missing`);
        flags[o.key] = o.parse(value);
      } else {
        if (eq > 0) throw new UsageError(`option '${o.flags}' takes no value, received '${arg}'`);
        flags[o.key] = !o.negated;
      }
      this.sources[o.key] = 'cli';
    }
    const missing = this.options.find((o) => o.required && flags[o.key] === undefined);
    if (missing != null) throw new UsageError(`required option '${missing.flags}' not specified`);
    await this.handler?.(flags, this);
  }

  /** The help text: usage, description, options (or commands) and the text added after. */
  help(): string {
    const lines = [`Usage: ${this.path()} ${this.commands.length > 0 ? '[options] [command]' : '[options]'}`, ''];
    if (this.text !== '') lines.push(wrap(this.text, 0), '');
    const options = [...this.options, HELP];
    if (this.versionText != null) options.unshift(new Option('-V, --version', 'print the version'));
    lines.push('Options:', ...table(options.map((o) => [o.flags, o.helpText()])));
    if (this.commands.length > 0) {
      const rows = this.commands.map((c): [string, string] => [`${c.name} [options]`, c.text]);
      lines.push('', 'Commands:', ...table([...rows, ['help [command]', 'print help for a command']]));
    }
    return `${lines.join('\n')}\n${this.after}`;
  }
}

const WIDTH = 100;

/** `text` wrapped to WIDTH columns, every line after the first indented by `indent`. */
function wrap(text: string, indent: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line !== '' && indent + line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}

/** Two columns: names padded to the longest (at most 30), descriptions wrapped beside them. */
function table(rows: [string, string][]): string[] {
  const width = Math.min(30, Math.max(...rows.map(([name]) => name.length)));
  return rows.map(([name, text]) => {
    const head = `  ${name.padEnd(width)}  `;
    return name.length > width ? `  ${name}\n${' '.repeat(width + 4)}${wrap(text, width + 4)}`
      : `${head}${wrap(text, head.length)}`;
  });
}
