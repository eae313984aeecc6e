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
