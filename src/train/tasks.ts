/**
 * Toy sequence tasks for training attention models, as small seeded generators.
 *
 * Every task is a per-position prediction: the model reads `inputs` [n, L] (int token
 * ids) and predicts a token at every position; `targets` [n, L] holds the answer and
 * `weights` [n, L] is 1 at the positions that are scored (loss and accuracy), 0 elsewhere.
 * Token ids: 0 = BLANK (an empty slot to be filled), 1 = SEP (a separator or marker),
 * and 2 ... vocabSize - 1 are the symbols. A batch depends only on (task options, seed,
 * batch index), so training can be resumed with the very same data. A toy task has one
 * stream of examples: it ignores the split argument of `batch`.
 *
 * makeTask(name, options) makes any task: a toy one by its name, the character-level
 * text task (text.ts) as 'text', the graph task (graph_task.ts) as 'graph-majority', or the
 * n-body task (nbody_task.ts) as 'nbody'.
 */
import {AttentionError, show} from '../core/errors';
import {uniform} from '../ops/random_features';
import {assertOneOf, assertPositiveInt, checkArgNames} from '../core/validate';
import {batchSeed, Task, TaskBatch} from './task_base';
import {TEXT_TASK, TextSourceOptions, textTaskFrom} from './text';
import {GRAPH_TASK, GraphTaskOptions, makeGraphTask} from './graph_task';
import {makeNBodyTask, NBODY_TASK, NBodyTaskOptions} from './nbody_task';

export {batchSeed, Split, SPLITS, Task, TaskBatch} from './task_base';
export {TEXT_TASK} from './text';
export {GRAPH_TASK} from './graph_task';
export {NBODY_TASK} from './nbody_task';

export const BLANK = 0;
export const SEP = 1;
/** The first symbol id: 0 and 1 are BLANK and SEP. */
export const FIRST_SYMBOL = 2;

export const TASK_NAMES = ['copy', 'reverse', 'sort', 'associative-recall', 'selective-copy'] as const;
export type TaskName = typeof TASK_NAMES[number];
/** Every task makeTask makes: the toy tasks, the text task, the graph task and the n-body task. */
export const ALL_TASK_NAMES = [...TASK_NAMES, TEXT_TASK, GRAPH_TASK, NBODY_TASK] as const;
export type AnyTaskName = typeof ALL_TASK_NAMES[number];

export interface TaskOptions {
  /** Symbols in the content, n. Default 8 (selective-copy: the number of marked tokens). */
  length?: number;
  /** Total vocabulary, BLANK and SEP included. Default 12 (10 symbols). */
  vocabSize?: number;
  /** selective-copy only: the length of the noisy stretch the marked tokens hide in. Default 64. */
  noiseLength?: number;
}

/** A toy task: its name and its options with every default filled in. */
export type ToyTask = Task<TaskName, Required<TaskOptions>>;

/** Options of makeTask: a toy task's (TaskOptions), the text task's (TextSourceOptions), the graph or n-body task's. */
export type AnyTaskOptions = TaskOptions & TextSourceOptions & GraphTaskOptions & NBodyTaskOptions;

/** A builder of one example: fills row r of the batch from the generator `next` ([0, 1) numbers). */
type Example = (row: {inputs: Int32Array; targets: Int32Array; weights: Float32Array}, next: () => number) => void;

function toyTask(name: TaskName, options: Required<TaskOptions>, L: number, description: string,
                 example: Example): ToyTask {
  return {
    name, options, vocabSize: options.vocabSize, seqLength: L, description,
    batch(n: number, seed: number, index: number): TaskBatch { // one stream: the split makes no difference
      assertPositiveInt('batch size', n);
      const next = uniform(batchSeed(seed, index));
      const inputs = new Int32Array(n * L);
      const targets = new Int32Array(n * L);
      const weights = new Float32Array(n * L);
      for (let r = 0; r < n; r++) {
        example({
          inputs: inputs.subarray(r * L, (r + 1) * L),
          targets: targets.subarray(r * L, (r + 1) * L),
          weights: weights.subarray(r * L, (r + 1) * L),
        }, next);
      }
      return {inputs, targets, weights, n, L};
    },
  };
}

/**
 * The task `name` with its options. Throws INVALID_CONFIG for an unknown name, a bad
 * option, or a vocabulary too small for the task.
 */
export function makeToyTask(name: string, options: TaskOptions = {}): ToyTask {
  assertOneOf('task', name, TASK_NAMES);
  checkArgNames('makeToyTask', options, ['length', 'vocabSize', 'noiseLength']);
  const o: Required<TaskOptions> = {length: 8, vocabSize: 12, noiseLength: 64, ...options};
  assertPositiveInt('length', o.length);
  assertPositiveInt('vocabSize', o.vocabSize);
  assertPositiveInt('noiseLength', o.noiseLength);
  const symbols = o.vocabSize - FIRST_SYMBOL; // how many symbol ids there are
  const minSymbols = name === 'associative-recall' ? o.length : 1;
  if (symbols < minSymbols) {
    throw new AttentionError('INVALID_CONFIG',
      `vocabSize (${o.vocabSize}) leaves ${symbols} symbols after BLANK and SEP; task '${name}' with length ` +
      `${o.length} needs at least ${minSymbols}`);
  }
  if (name === 'selective-copy' && o.length > o.noiseLength) {
    throw new AttentionError('INVALID_CONFIG',
      `selective-copy hides length (${o.length}) marked tokens in noiseLength (${o.noiseLength}) positions; ` +
      `noiseLength must be at least length, received ${show(o.noiseLength)}`);
  }
  const n = o.length;
  const symbol = (next: () => number) => FIRST_SYMBOL + Math.floor(next() * symbols);
  switch (name as TaskName) {
    case 'copy':
      // [s1 .. sn, SEP, BLANK x n] -> the blanks after SEP must become s1 .. sn.
      return toyTask('copy', o, 2 * n + 1, 'copy the n symbols before SEP into the n blanks after it',
        ({inputs, targets, weights}, next) => {
          inputs[n] = SEP;
          for (let i = 0; i < n; i++) {
            const s = symbol(next);
            inputs[i] = s;
            targets[n + 1 + i] = s;
            weights[n + 1 + i] = 1;
          }
        });
    case 'reverse':
      // [s1 .. sn] -> [sn .. s1], position by position.
      return toyTask('reverse', o, n, 'output the sequence reversed, position by position',
        ({inputs, targets, weights}, next) => {
          for (let i = 0; i < n; i++) inputs[i] = symbol(next);
          for (let i = 0; i < n; i++) {
            targets[i] = inputs[n - 1 - i];
            weights[i] = 1;
          }
        });
    case 'sort':
      // [s1 .. sn] -> the same symbols in ascending order.
      return toyTask('sort', o, n, 'output the symbols sorted ascending, position by position',
        ({inputs, targets, weights}, next) => {
          for (let i = 0; i < n; i++) inputs[i] = symbol(next);
          const sorted = Array.from(inputs).sort((a, b) => a - b);
          for (let i = 0; i < n; i++) {
            targets[i] = sorted[i];
            weights[i] = 1;
          }
        });
    case 'associative-recall':
      // [k1 v1 k2 v2 .. kn vn SEP q] with distinct keys and q one of them -> at the last
      // position, the value that followed q.
      return toyTask('associative-recall', o, 2 * n + 2, 'after SEP comes a key: answer the value that followed it',
        ({inputs, targets, weights}, next) => {
          const keys = Array.from({length: symbols}, (_, i) => FIRST_SYMBOL + i);
          for (let i = 0; i < n; i++) { // a partial Fisher-Yates shuffle: n distinct keys
            const j = i + Math.floor(next() * (symbols - i));
            [keys[i], keys[j]] = [keys[j], keys[i]];
          }
          const values = keys.slice(0, n).map(() => symbol(next));
          for (let i = 0; i < n; i++) {
            inputs[2 * i] = keys[i];
            inputs[2 * i + 1] = values[i];
          }
          const asked = Math.floor(next() * n);
          inputs[2 * n] = SEP;
          inputs[2 * n + 1] = keys[asked];
          targets[2 * n + 1] = values[asked];
          weights[2 * n + 1] = 1;
        });
    case 'selective-copy': {
      // noiseLength positions of BLANK with n symbols at random, distinct positions, then
      // SEP and n blanks -> the blanks after SEP must become the n symbols in the order
      // they appeared. Far apart in a long sequence: a local window cannot see them.
      const N = o.noiseLength;
      return toyTask('selective-copy', o, N + 1 + n,
        `copy the ${n} symbols scattered among ${N} blanks, in order, into the blanks after SEP`,
        ({inputs, targets, weights}, next) => {
          const slots = Array.from({length: N}, (_, i) => i);
          for (let i = 0; i < n; i++) {
            const j = i + Math.floor(next() * (N - i));
            [slots[i], slots[j]] = [slots[j], slots[i]];
          }
          const positions = slots.slice(0, n).sort((a, b) => a - b);
          inputs[N] = SEP;
          positions.forEach((p, i) => {
            const s = symbol(next);
            inputs[p] = s;
            targets[N + 1 + i] = s;
            weights[N + 1 + i] = 1;
          });
        });
    }
  }
}

/**
 * Any task by name: GRAPH_TASK, NBODY_TASK, a toy task (TASK_NAMES, options TaskOptions) or TEXT_TASK, the
 * character-level text task (options TextSourceOptions: the text from `text`, from the
 * file `data` in Node, or by default the shipped sample; see text.ts).
 * Throws INVALID_CONFIG for an unknown name or bad options; the text task also IO for a
 * file it cannot use and UNSUPPORTED for a file in a browser.
 */
export function makeTask(name: string, options: AnyTaskOptions = {}): Task {
  assertOneOf('task', name, ALL_TASK_NAMES);
  if (name === GRAPH_TASK) return makeGraphTask(options as GraphTaskOptions);
  if (name === NBODY_TASK) return makeNBodyTask(options as NBodyTaskOptions);
  return name === TEXT_TASK ? textTaskFrom(options) : makeToyTask(name, options);
}
