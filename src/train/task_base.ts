/**
 * What every training task is (the toy tasks of tasks.ts, the text task of text.ts) and the
 * seeding rule their batches share. Its own module so that tasks.ts, which dispatches to
 * text.ts, and text.ts need not import each other.
 */

/**
 * The part of a task's data a batch is drawn from; toy tasks have one stream and ignore it,
 * the text task has no test part, the n-body task has all three.
 */
export type Split = 'train' | 'validation' | 'test';
export const SPLITS: readonly Split[] = ['train', 'validation', 'test'];

export interface TaskBatch {
  /** [n, L] token ids. */
  inputs: Int32Array;
  /** [n, L] expected token ids (BLANK where unscored). */
  targets: Int32Array;
  /** [n, L] 1 where scored. */
  weights: Float32Array;
  n: number;
  L: number;
  /**
   * Packed rows (the text task's documents 'pack'): [n, L] the document of each position,
   * numbered within its row; a position attends only to its own document.
   */
  documents?: Int32Array;
  /** Graph tasks: [n, E, 2] int32 edges ([source, target] positions, [-1, -1] padding). */
  edges?: Int32Array;
  /** Graph tasks: edges per example. */
  E?: number;
  /**
   * Regression tasks (the n-body task): named float arrays, row-major, n examples first; the
   * token fields are then empty.
   */
  values?: Record<string, Float32Array>;
}

export interface Task<Name extends string = string, Options extends object = object> {
  name: Name;
  /** The options with every default filled in (what a training record stores). */
  options: Options;
  vocabSize: number;
  /** L, the sequence length of every example. */
  seqLength: number;
  /** Graph tasks: E, the edges per example; the model then takes [tokens, edges]. */
  edgesPerExample?: number;
  /** One line: what the model must do. */
  description: string;
  /**
   * Batch number `index` of `n` examples for a seed, from `split` (default 'train'); the
   * same arguments give the same batch.
   */
  batch(n: number, seed: number, index: number, split?: Split): TaskBatch;
}

/** A seed for batch `index` of `seed`: distinct streams that do not overlap in practice. */
export function batchSeed(seed: number, index: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(index + 1, 0x85ebca6b)) >>> 0;
}
