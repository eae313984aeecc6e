// The toy tasks: deterministic for a seed, and their answers equal a plain
// reimplementation computed from the inputs alone.
import {BLANK, FIRST_SYMBOL, makeToyTask, SEP, TASK_NAMES, TaskBatch} from '../../src/train/tasks';
import {expectError, title} from '../support/helpers';

/** Rows of a batch as arrays. */
function rows(b: TaskBatch) {
  return Array.from({length: b.n}, (_, r) => ({
    x: Array.from(b.inputs.subarray(r * b.L, (r + 1) * b.L)),
    y: Array.from(b.targets.subarray(r * b.L, (r + 1) * b.L)),
    w: Array.from(b.weights.subarray(r * b.L, (r + 1) * b.L)),
  }));
}

/** The answer each task asks for, recomputed from the input: [targets, weights]. */
const plain: Record<string, (x: number[], n: number) => [number[], number[]]> = {
  'copy': (x, n) => {
    expect(x[n]).toBe(SEP);
    expect(x.slice(n + 1).every((t) => t === BLANK)).toBe(true);
    return [[...Array(n + 1).fill(0), ...x.slice(0, n)], [...Array(n + 1).fill(0), ...Array(n).fill(1)]];
  },
  'reverse': (x) => [[...x].reverse(), x.map(() => 1)],
  'sort': (x) => [[...x].sort((a, b) => a - b), x.map(() => 1)],
  'associative-recall': (x, n) => {
    expect(x[2 * n]).toBe(SEP);
    const keys = x.filter((_, i) => i < 2 * n && i % 2 === 0);
    expect(new Set(keys).size).toBe(n); // distinct keys
    const q = x[2 * n + 1];
    const y = Array(2 * n + 2).fill(0);
    y[2 * n + 1] = x[2 * keys.indexOf(q) + 1];
    const w = Array(2 * n + 2).fill(0);
    w[2 * n + 1] = 1;
    return [y, w];
  },
  'selective-copy': (x, n) => {
    const N = x.length - n - 1;
    expect(x[N]).toBe(SEP);
    const marked = x.slice(0, N).filter((t) => t !== BLANK);
    expect(marked).toHaveLength(n);
    return [[...Array(N + 1).fill(0), ...marked], [...Array(N + 1).fill(0), ...Array(n).fill(1)]];
  },
};

describe(title('toy tasks'), () => {
  for (const name of TASK_NAMES) {
    test(`${name}: answers == a plain reimplementation; deterministic for (seed, batch index)`, () => {
      const n = 5;
      const task = makeToyTask(name, {length: n, vocabSize: 9, noiseLength: 20});
      const a = task.batch(16, 3, 7);
      expect(a.L).toBe(task.seqLength);
      for (const {x, y, w} of rows(a)) {
        const [ty, tw] = plain[name](x, n);
        expect(y).toEqual(ty);
        expect(w).toEqual(tw);
        expect(x.every((t) => t >= 0 && t < 9)).toBe(true);
        expect(w.some((v) => v === 1)).toBe(true);
      }
      const b = task.batch(16, 3, 7);
      expect(Array.from(b.inputs)).toEqual(Array.from(a.inputs));
      expect(Array.from(b.targets)).toEqual(Array.from(a.targets));
      for (const other of [task.batch(16, 4, 7), task.batch(16, 3, 8)]) {
        expect(Array.from(other.inputs)).not.toEqual(Array.from(a.inputs));
      }
      // Every symbol is drawn, no special token sits where a symbol belongs.
      const symbols = new Set(Array.from(task.batch(64, 1, 0).inputs).filter((t) => t >= FIRST_SYMBOL));
      expect(symbols.size).toBe(9 - FIRST_SYMBOL);
    });
  }

  test.each([
    ['unknown task', () => makeToyTask('nope'), /task must be one of 'copy', 'reverse'/],
    ['length 0', () => makeToyTask('copy', {length: 0}), /length must be a positive integer, received 0/],
    ['too few keys', () => makeToyTask('associative-recall', {length: 8, vocabSize: 6}), /leaves 4 symbols .* needs at least 8/],
    ['marked > noise', () => makeToyTask('selective-copy', {length: 9, noiseLength: 4}), /noiseLength must be at least length/],
  ])('rejects %s with INVALID_CONFIG', (_, fn, message) => {
    expectError(fn, 'INVALID_CONFIG', message);
  });
});
