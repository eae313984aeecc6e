/** What every command shares: where output goes, and parsers for flag values. */
import {InvalidArgumentError} from 'commander';

/** Where a command writes; `process` in the real CLI, string buffers in tests. */
export interface CliIO {
  stdout: {write(text: string): unknown};
  stderr: {write(text: string): unknown};
}

/** Exit codes: 0 done, 1 the work failed, 2 the command line was wrong. */
export const EXIT = {ok: 0, failure: 1, usage: 2} as const;

/** A flag parser for integers >= min; commander reports the message and the value. */
export function intArg(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\s*-?\d+\s*$/.test(value) || n < min) throw new InvalidArgumentError(`Expected an integer >= ${min}.`);
    return n;
  };
}

/** A flag parser for a comma-separated list of names drawn from `known`. */
export function namesArg(known: readonly string[], what: string): (value: string) => string[] {
  return (value) => {
    const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const unknown = names.filter((n) => !known.includes(n));
    if (names.length === 0 || unknown.length > 0) {
      const bad = names.length === 0 ? `No ${what} named` : `Unknown ${what} '${unknown.join(',')}'`;
      throw new InvalidArgumentError(`${bad}; choose from ${known.join(', ')}.`);
    }
    return names;
  };
}

/** A flag parser for a comma-separated list of integers >= min: `512,2048,4096`. */
export function intListArg(min: number): (value: string) => number[] {
  return (value) => {
    const parts = value.split(',').map((s) => s.trim());
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < min)) {
      throw new InvalidArgumentError(`Expected a comma-separated list of integers >= ${min}.`);
    }
    return parts.map(Number);
  };
}
