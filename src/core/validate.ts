/** Small named argument checks. Each throws AttentionError('INVALID_CONFIG') naming the argument. */
import {AttentionError, show} from './errors';

export function assertPositiveInt(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a positive integer, received ${show(value)}`);
  }
}

export function assertNonNegativeInt(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a non-negative integer, received ${show(value)}`);
  }
}

/** A probability in [0, 1), as dropout rates are. */
export function assertRate(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value >= 1) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a number in [0, 1), received ${show(value)}`);
  }
}

export function assertPositiveNumber(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a positive finite number, received ${show(value)}`);
  }
}

export function assertBoolean(name: string, value: unknown): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw new AttentionError('INVALID_CONFIG', `${name} must be a boolean, received ${show(value)}`);
  }
}

export function assertOneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): asserts value is T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new AttentionError('INVALID_CONFIG',
      `${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, received ${show(value)}`);
  }
}

/** `numHeads (8) must be divisible by numKvHeads (3)` */
export function assertDivisible(name: string, value: number, divisorName: string, divisor: number): void {
  if (value % divisor !== 0) {
    throw new AttentionError('INVALID_CONFIG', `${name} (${value}) must be divisible by ${divisorName} (${divisor})`);
  }
}

/** An array of non-negative integers (positions, node ids). */
export function assertIndexList(name: string, list: unknown): asserts list is number[] {
  if (!Array.isArray(list) || list.some((g) => typeof g !== 'number' || !Number.isInteger(g) || g < 0)) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be an array of non-negative integers, received ${show(list)}`);
  }
}

export function assertInteger(name: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new AttentionError('INVALID_CONFIG', `${name} must be an integer, received ${show(value)}`);
  }
}

/**
 * A name this library does not take but another library (Keras, PyTorch) does, or that
 * belongs elsewhere in this one: what to say to a user who passes it.
 */
export interface ForeignName {
  /** 'UNSUPPORTED': no equivalent yet; 'INVALID_CONFIG': it has another name or place here. */
  code: 'UNSUPPORTED' | 'INVALID_CONFIG';
  /** What to do instead, one sentence: "use SparseMask.localWindow(T, W) as attentionMask". */
  advice: string;
  /** Values that ask for nothing (Keras' defaults: null, false, ...), accepted without a word. */
  inert?: (value: unknown) => boolean;
}

/** Inert when null or false: the default of a Keras flag. */
export const NULL_OR_FALSE = (value: unknown): boolean => value == null || value === false;

/** Lower case without underscores, so that `num_heads` and `numHeads` compare equal. */
function normalized(name: string): string {
  return name.replace(/_/g, '').toLowerCase();
}

/** Optimal string alignment distance: edits, with a swap of two neighbours counted as one. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({length: a.length + 1}, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** The known name closest to `name` (ignoring case and underscores), or null when none is close. */
export function nearestName(name: string, known: readonly string[]): string | null {
  const n = normalized(name);
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const distance = editDistance(n, normalized(k));
    if (distance < bestDistance) {
      best = k;
      bestDistance = distance;
    }
  }
  // A third of the name's letters (at least 2) may differ: 'casual' -> 'causal', 'blokSize' -> 'blockSize'.
  return best != null && bestDistance <= Math.max(2, Math.floor(n.length / 3)) ? best : null;
}

/**
 * A layer constructor's arguments object, its names checked by checkArgNames against
 * `known` (pass the layer's own names and LAYER_ARGS). A missing object is {} where the
 * layer has no required argument (`required` false), INVALID_CONFIG otherwise, as is
 * anything that is not a plain object.
 */
export function checkedLayerArgs<T extends object>(who: string, args: T | undefined, known: readonly string[],
                                                   required = true): T {
  if (args == null && !required) return {} as T;
  if (args == null || typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `${who} arguments must be an object, received ${show(args)}`);
  }
  checkArgNames(who, args, known);
  return args;
}

/**
 * Checks an options or arguments object (null and undefined stand for {}; anything else
 * that is not a plain object throws INVALID_CONFIG) and throws for any key (with a
 * defined value) that is not in `known`: a foreign name with its own code and advice
 * (unless its value is inert), any other with INVALID_CONFIG naming the nearest known
 * name: "unknown argument 'numHead' for MultiHeadAttention; did you mean 'numHeads'?".
 */
export function checkArgNames(who: string, args: unknown, known: readonly string[],
                              foreign: Readonly<Record<string, ForeignName>> = {}): void {
  if (args == null) return;
  if (typeof args !== 'object' || Array.isArray(args)) {
    throw new AttentionError('INVALID_CONFIG', `${who}: the options must be an object, received ${show(args)}`);
  }
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined || known.includes(key)) continue;
    const f = Object.prototype.hasOwnProperty.call(foreign, key) ? foreign[key] : undefined;
    if (f != null) {
      if (f.inert?.(value)) continue;
      throw new AttentionError(f.code, `${who} does not take '${key}' (received ${show(value)}): ${f.advice}`);
    }
    const near = nearestName(key, known);
    throw new AttentionError('INVALID_CONFIG', `unknown argument '${key}' for ${who}; ` +
      (near != null ? `did you mean '${near}'?` : `known arguments: ${known.map((k) => `'${k}'`).join(', ')}`));
  }
}
