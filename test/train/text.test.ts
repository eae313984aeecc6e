// The character-level text task: seeded batches of windows whose targets are the inputs
// shifted by one, a validation part no training window reaches, code-point vocabularies,
// the unigram entropy, every refusal, the shipped sample, and train() on text (the record
// holds the vocabulary, never the text; a run on an inline text resumes exactly).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../../src/core/errors';
import {loadCheckpoint} from '../../src/train/checkpoint';
import {ALL_TASK_NAMES, makeTask, TASK_NAMES, TaskBatch, TEXT_TASK} from '../../src/train/tasks';
import {
  decodeText, encodeText, makeTextTask, readTextFile, SAMPLE_TEXT, sampleTextPath, unigramEntropy,
} from '../../src/train/text';
import {evaluate} from '../../src/train/evaluate';
import {train} from '../../src/train/trainer';
import {TrainOptions} from '../../src/train/train_options';
import {expectError, maxDiff, title} from '../support/helpers';

const ROOT = path.join(__dirname, '..', '..');
const SAMPLE = path.join(ROOT, SAMPLE_TEXT);

/** Row r of a batch: [inputs, targets, weights] as arrays. */
function row(b: TaskBatch, r: number): [number[], number[], number[]] {
  const at = <T extends ArrayLike<number>>(a: T) => Array.from(a as ArrayLike<number>).slice(r * b.L, (r + 1) * b.L);
  return [at(b.inputs), at(b.targets), at(b.weights)];
}

/** N distinct CJK characters in code-point order: character i has id i, so an id is a position. */
function positional(N: number): string {
  return Array.from({length: N}, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
}

/** Runs fn as if outside Node (no process.versions.node), then restores it. */
function asBrowser(fn: () => unknown): () => unknown {
  return () => {
    const versions = process.versions;
    Object.defineProperty(process, 'versions', {value: {}, configurable: true, writable: false});
    try {
      return fn();
    } finally {
      Object.defineProperty(process, 'versions', {value: versions, configurable: true, writable: false});
    }
  };
}

describe(title('text task: batches'), () => {
  const text = fs.readFileSync(SAMPLE, 'utf8');
  const task = makeTextTask(text, {seqLength: 12});

  test('a batch depends only on (n, seed, index, split)', () => {
    const a = task.batch(8, 3, 7);
    expect(Array.from(task.batch(8, 3, 7, 'train').inputs)).toEqual(Array.from(a.inputs)); // 'train' is the default
    expect(Array.from(makeTextTask(text, {seqLength: 12}).batch(8, 3, 7).targets)).toEqual(Array.from(a.targets));
    for (const other of [task.batch(8, 4, 7), task.batch(8, 3, 8), task.batch(8, 3, 7, 'validation')]) {
      expect(Array.from(other.inputs)).not.toEqual(Array.from(a.inputs));
    }
    // The first rows of a larger batch are the smaller batch: one draw per row, in order.
    expect(Array.from(task.batch(16, 3, 7).inputs).slice(0, 8 * 12)).toEqual(Array.from(a.inputs));
  });

  test('targets are the inputs shifted by one; each row is L + 1 consecutive characters; weights all 1', () => {
    const b = task.batch(16, 1, 0);
    expect([b.n, b.L, b.inputs.length, b.targets.length, b.weights.length]).toEqual([16, 12, 192, 192, 192]);
    const {vocabulary} = task.options;
    for (let r = 0; r < b.n; r++) {
      const [x, y, w] = row(b, r);
      expect(x.slice(1)).toEqual(y.slice(0, -1));
      expect(w.every((v) => v === 1)).toBe(true);
      expect(text).toContain(decodeText(vocabulary, [...x, y[y.length - 1]]));
    }
  });

  test('validation windows never overlap training windows; every offset of each part is drawn', () => {
    const N = 200;
    const L = 8;
    const t = makeTextTask(positional(N), {seqLength: L, validationFraction: 0.25});
    expect(t.lengths).toEqual({train: 150, validation: 50});
    for (const [split, first, last] of [['train', 0, 149], ['validation', 150, 199]] as const) {
      const starts = new Set<number>();
      const faults: string[] = [];
      for (let index = 0; index < 100; index++) {
        const b = t.batch(32, 5, index, split);
        for (let r = 0; r < b.n; r++) {
          const [x, y] = row(b, r);
          // Consecutive (ids are positions), and the whole window, target included, inside its part.
          if (!x.every((id, i) => id === x[0] + i && y[i] === id + 1)) faults.push(`not consecutive: ${x}`);
          if (x[0] < first || y[L - 1] > last) faults.push(`outside ${split}: ${x[0]}..${y[L - 1]}`);
          starts.add(x[0]);
        }
      }
      expect(faults).toEqual([]);
      expect(starts.size).toBe(last - first + 1 - L); // every window of the part: offsets first .. last - L
      expect(Math.min(...starts)).toBe(first);
      expect(Math.max(...starts)).toBe(last - L);
    }
  });

  test('the sample text: its vocabulary is its distinct characters, sorted; vocabSize and seqLength', () => {
    const chars = [...new Set(Array.from(text))].sort();
    expect(task.options.vocabulary).toBe(chars.join(''));
    expect(task.vocabSize).toBe(chars.length);
    expect(task.seqLength).toBe(12);
    expect(task.name).toBe(TEXT_TASK);
    expect(task.description).toMatch(/next character/);
  });
});

describe(title('text task: vocabulary and entropy'), () => {
  // é U+00E9, → U+2192, Ａ U+FF21, 🙂 U+1F642 (two UTF-16 units, sorted before Ａ by UTF-16 order).
  const text = 'héllo → wörld, Ａ 🙂 smile 🙂 → é';

  test('default vocabulary: distinct code points in code-point order; encode/decode round trip', () => {
    const task = makeTextTask(text.repeat(10), {seqLength: 4});
    const vocabulary = task.options.vocabulary;
    const chars = Array.from(vocabulary);
    expect(chars).toEqual([...new Set(Array.from(text))].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!));
    expect(chars.slice(-5)).toEqual(['é', 'ö', '→', 'Ａ', '🙂']); // the emoji is one character, last by code point
    expect(task.vocabSize).toBe(chars.length);
    const ids = encodeText(vocabulary, text);
    expect(ids).toHaveLength(Array.from(text).length);
    expect(ids[Array.from(text).indexOf('🙂')]).toBe(chars.length - 1);
    expect(decodeText(vocabulary, ids)).toBe(text);
    expect(decodeText(vocabulary, new Int32Array(ids))).toBe(text);
  });

  test('a given vocabulary sets the ids, and may hold characters the text lacks', () => {
    const task = makeTextTask('ba'.repeat(20), {vocabulary: 'abc🙂', seqLength: 3});
    expect(task.vocabSize).toBe(4);
    expect(row(task.batch(1, 0, 0), 0)[0].every((id) => id === 0 || id === 1)).toBe(true);
    expect(encodeText('abc🙂', 'c🙂a')).toEqual([2, 3, 0]);
  });

  test('unigramEntropy in nats == a hand computation', () => {
    // 'aab': p = 2/3, 1/3.
    expect(unigramEntropy('aab')).toBeCloseTo(-(2 / 3) * Math.log(2 / 3) - (1 / 3) * Math.log(1 / 3), 12);
    expect(unigramEntropy('aab')).toBeCloseTo(0.636514168294813, 12);
    // 'ab🙂🙂': four characters (the emoji is one), p = 1/4, 1/4, 1/2.
    expect(unigramEntropy('ab🙂🙂')).toBeCloseTo(2 * 0.25 * Math.log(4) + 0.5 * Math.log(2), 12);
    expect(unigramEntropy('abcd')).toBeCloseTo(Math.log(4), 12);
    expect(unigramEntropy('zzzz')).toBe(0);
  });
});

describe(title('text task: errors'), () => {
  const long = 'abcdefghij'.repeat(10); // 100 characters

  test.each([
    ['a text too short for one window', () => makeTextTask('abc', {seqLength: 8}),
      /a text of 3 characters is too short for seqLength 8 with validationFraction 0.1: its training part has 3 characters and its validation part 0, and each needs at least seqLength \+ 1 = 9/],
    ['a validation part too short', () => makeTextTask(long, {seqLength: 10, validationFraction: 0.05}),
      /text of 100 characters is too short .* training part has 95 characters and its validation part 5/],
    ['a character not in the vocabulary', () => makeTextTask(long + 'é', {vocabulary: 'abcdefghij', seqLength: 4}),
      /character "é" \(U\+00E9\) at position 100 is not in the vocabulary \(10 characters\)/],
    ['a control character not in the vocabulary', () => makeTextTask('ab\ncd'.repeat(9), {vocabulary: 'abcd', seqLength: 2}),
      /character "\\n" \(U\+000A\) at position 2 is not in the vocabulary/],
    ['a vocabulary with a repeat', () => makeTextTask(long, {vocabulary: 'abcdefghija'}),
      /vocabulary repeats "a" \(U\+0061\) \(at positions 0 and 10\)/],
    ['an empty vocabulary', () => makeTextTask(long, {vocabulary: ''}), /vocabulary must be a non-empty string/],
    ['seqLength 0', () => makeTextTask(long, {seqLength: 0}), /seqLength must be a positive integer, received 0/],
    ['seqLength 2.5', () => makeTextTask(long, {seqLength: 2.5}), /seqLength must be a positive integer, received 2.5/],
    ['validationFraction 0', () => makeTextTask(long, {validationFraction: 0}),
      /validationFraction must be a number in \(0, 1\), received 0/],
    ['validationFraction 1', () => makeTextTask(long, {validationFraction: 1}), /validationFraction must be a number in \(0, 1\)/],
    ['validationFraction as a string', () => makeTextTask(long, {validationFraction: '0.1' as never}),
      /validationFraction must be a number in \(0, 1\), received '0.1'/],
    ['a misspelt option', () => makeTextTask(long, {seqLenght: 4} as never),
      /unknown argument 'seqLenght' for makeTextTask; did you mean 'seqLength'\?/],
    ['a text that is not a string', () => makeTextTask(42 as never), /text must be a string, received 42/],
    ['an unknown split', () => makeTextTask(long, {seqLength: 4}).batch(2, 0, 0, 'test' as never),
      /split must be one of 'train', 'validation', received 'test'/],
    ['batch size 0', () => makeTextTask(long, {seqLength: 4}).batch(0, 0, 0), /batch size must be a positive integer/],
    ['encodeText of an unknown character', () => encodeText('ab', 'ab→'),
      /character "→" \(U\+2192\) at position 2 is not in the vocabulary \(2 characters\)/],
    ['decodeText of an id out of range', () => decodeText('abc', [0, 5]),
      /id 5 at position 1 is not a character id: the vocabulary has 3 characters \(ids 0 to 2\)/],
    ['decodeText of a fractional id', () => decodeText('abc', [1.5]), /id 1.5 at position 0 is not a character id/],
    ['decodeText with a repeating vocabulary', () => decodeText('abca', [0]), /vocabulary repeats "a"/],
    ['unigramEntropy of an empty text', () => unigramEntropy(''), /unigramEntropy needs a non-empty string, received ''/],
    ['makeTask with data and text', () => makeTask('text', {data: SAMPLE, text: long}),
      /the text task takes one of data \(a file path\) or text \(the text itself\), not both/],
    ['makeTask with text null (a record of an inline text)', () => makeTask('text', {text: null, seqLength: 4}),
      /text is null: the run was trained on a text given inline, which its training record does not hold; pass the same text as taskOptions.text/],
    ['makeTask with an empty data path', () => makeTask('text', {data: ''}), /data must be the path of a UTF-8 text file, received ''/],
    ['makeTask with a toy option for the text task', () => makeTask('text', {text: long, length: 4}),
      /unknown argument 'length' for the text task/],
    ['makeTask with a text option for a toy task', () => makeTask('copy', {seqLength: 4}),
      /unknown argument 'seqLength' for makeToyTask/],
    ['makeTask with an unknown name', () => makeTask('poem'),
      /task must be one of 'copy', 'reverse', 'sort', 'associative-recall', 'selective-copy', 'text', 'graph-majority', 'nbody', received 'poem'/],
  ])('rejects %s with INVALID_CONFIG', (_, fn, message) => {
    expectError(fn, 'INVALID_CONFIG', message);
  });

  describe('readTextFile', () => {
    let tmp: string;
    beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-text-')); });
    afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));
    const file = (name: string, bytes: Uint8Array | string) => {
      const p = path.join(tmp, name);
      fs.writeFileSync(p, bytes);
      return p;
    };

    test('reads UTF-8 (a byte order mark dropped) and makeTask reads the file named by data', () => {
      const p = file('ok.txt', '\ufeff' + 'héllo → 🙂\n'.repeat(20));
      expect(readTextFile(p)).toBe('héllo → 🙂\n'.repeat(20));
      const task = makeTask('text', {data: p, seqLength: 4});
      expect(task.options).toEqual({data: p, seqLength: 4, vocabulary: '\n hloé→🙂', validationFraction: 0.1});
    });

    test.each([
      ['a missing file', () => path.join(tmp, 'none.txt'), /cannot read text file '.*none\.txt': it does not exist/],
      ['a folder', () => tmp, /cannot read text file '.*': it is a folder, not a regular file/],
      ['an empty file', () => file('empty.txt', ''), /text file '.*empty\.txt' is empty; the text task needs some text/],
      ['a file of only a byte order mark', () => file('bom.txt', '\ufeff'), /text file '.*bom\.txt' is empty/],
      ['a file with a NUL byte', () => file('nul.bin', new Uint8Array([104, 105, 0, 33])),
        /'.*nul\.bin' looks binary, not text: it holds a NUL byte at byte 2/],
      ['a file that is not UTF-8', () => file('latin1.txt', new Uint8Array([99, 97, 102, 0xe9, 10])),
        /'.*latin1\.txt' is not UTF-8 text \(a binary file, or text in another encoding such as Latin-1/],
      ['a file of control characters', () => file('ctl.bin', 'ab\x01\x02\x03'.repeat(10)),
        /'.*ctl\.bin' looks binary, not text: 30 of its 50 characters are control characters/],
    ])('refuses %s with IO', (_, make, message) => {
      const p = make();
      expectError(() => readTextFile(p), 'IO', message);
      expectError(() => makeTask('text', {data: p}), 'IO', message);
    });

    test('in a browser: readTextFile, data and the default sample are UNSUPPORTED; an inline text works', () => {
      expectError(asBrowser(() => readTextFile(SAMPLE)), 'UNSUPPORTED',
        /^readTextFile\(path\) reads or writes files and needs Node; in a browser, fetch the text and pass it as makeTask\('text', \{text\}\)/);
      expectError(asBrowser(() => makeTask('text', {data: SAMPLE})), 'UNSUPPORTED', /^readTextFile\(path\) .* needs Node/);
      expectError(asBrowser(() => makeTask('text')), 'UNSUPPORTED',
        /^the shipped sample text \(data\/text\/attention.txt\) reads or writes files and needs Node; in a browser, pass the text itself/);
      expect((asBrowser(() => makeTask('text', {text: 'abcdefghij'.repeat(10), seqLength: 4}))() as {vocabSize: number})
        .vocabSize).toBe(10);
    });
  });
});

describe(title('text task: the shipped sample and makeTask'), () => {
  test('data/text/attention.txt: 25-40 KB of UTF-8 text, found from src/ and loaded by default', () => {
    expect(sampleTextPath()).toBe(SAMPLE);
    const bytes = fs.statSync(SAMPLE).size;
    expect(bytes).toBeGreaterThan(25_000);
    expect(bytes).toBeLessThan(40_000);
    const text = readTextFile(SAMPLE);
    const task = makeTask('text');
    expect(task.name).toBe('text');
    expect(task.options).toEqual({seqLength: 64, vocabulary: makeTextTask(text).options.vocabulary,
      validationFraction: 0.1});
    expect(task.vocabSize).toBe(new Set(Array.from(text)).size);
    expect(unigramEntropy(text)).toBeGreaterThan(2.5); // English letters: about 3 nats
    expect(unigramEntropy(text)).toBeLessThan(Math.log(task.vocabSize));
    // package.json ships the data folder.
    expect(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).files).toContain('data');
  });

  test('makeTask: the toy tasks as makeToyTask makes them, and an inline text recorded as text: null', () => {
    expect(ALL_TASK_NAMES).toEqual([...TASK_NAMES, 'text', 'graph-majority', 'nbody']);
    for (const name of TASK_NAMES) {
      const task = makeTask(name, {length: 4});
      expect(task.name).toBe(name);
      expect(Array.from(task.batch(4, 2, 3).inputs)).toEqual(Array.from(task.batch(4, 2, 3, 'validation').inputs));
    }
    const text = 'one two three four five six seven eight nine ten. ';
    const task = makeTask('text', {text: text.repeat(4), seqLength: 8});
    expect(task.options).toEqual({seqLength: 8,
      vocabulary: makeTextTask(text.repeat(4), {seqLength: 8}).options.vocabulary,
      validationFraction: 0.1, text: null});
    expect(JSON.stringify(task.options)).not.toContain('three');
  });
});

describe(title('text task: train()'), () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-text-train-')); });
  afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));
  // An inline text, so that the record can be searched for it.
  const text = fs.readFileSync(SAMPLE, 'utf8').slice(0, 4000);
  const options = (outDir: string, more: Partial<TrainOptions> = {}): TrainOptions => ({
    task: 'text', taskOptions: {text, seqLength: 16},
    model: {attention: 'mha', modelDim: 16, numHeads: 2, numLayers: 1, ffDim: 32, causal: true},
    steps: 4, batchSize: 4, warmupSteps: 1, evalEvery: 2, evalBatches: 1, learningRate: 1e-2, outDir, ...more,
  });

  test('trains a causal model; training.json holds the vocabulary and not the text; no leaked tensors', async () => {
    const before = tf.memory().numTensors;
    const outDir = path.join(tmp, 'run');
    const {model, record} = await train(options(outDir));
    const vocabulary = makeTextTask(text).options.vocabulary;
    expect(record.finished).toBe(true);
    expect(record.step).toBe(4);
    expect(record.history.map((m) => m.step)).toEqual([2, 4]);
    expect(record.history.every((m) => Number.isFinite(m.loss) && m.loss > 0)).toBe(true);
    expect(record.model).toMatchObject({vocabSize: vocabulary.length, seqLength: 16, causal: true});
    expect(record.task).toEqual({name: 'text', seqLength: 16, vocabulary, validationFraction: 0.1, text: null});
    const saved = fs.readFileSync(path.join(outDir, 'training.json'), 'utf8');
    const json = JSON.parse(saved);
    expect(json.task.vocabulary).toBe(vocabulary);
    expect(json.options.taskOptions).toEqual({seqLength: 16, vocabulary, validationFraction: 0.1, text: null});
    for (const at of [0, 100, 2000, 3960]) {
      expect(saved).not.toContain(JSON.stringify(text.slice(at, at + 40)).slice(1, -1)); // as JSON would write it
    }
    // Evaluation reads the validation part by default.
    const task = makeTask('text', {text, seqLength: 16});
    const validation = await evaluate(model, task, 0, 4, 1);
    expect(validation).toEqual(await evaluate(model, task, 0, 4, 1, 'validation'));
    expect((await evaluate(model, task, 0, 4, 1, 'train')).loss).not.toBe(validation.loss);
    expect(validation.loss).toBeCloseTo(record.history[1].loss, 5);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  test('a stopped run on an inline text needs the text again to resume, then equals an uninterrupted run', async () => {
    const before = tf.memory().numTensors;
    const whole = await train(options(''));
    const withWhole = tf.memory().numTensors;
    const outDir = path.join(tmp, 'stopped');
    (await train(options(outDir, {stopAfter: 2}))).model.dispose();
    let error: unknown;
    await train({task: 'text', model: {attention: 'mha'}}, {}, outDir).catch((e) => { error = e; });
    expect((error as AttentionError).code).toBe('INVALID_CONFIG');
    expect((error as Error).message).toMatch(/text is null: the run was trained on a text given inline/);
    expect(tf.memory().numTensors).toBe(withWhole); // the checkpoint's model and Adam's state were freed
    const resumed = await train({task: 'text', taskOptions: {text}, model: {attention: 'mha'}}, {}, outDir);
    expect(resumed.record.step).toBe(4);
    expect(resumed.record.finished).toBe(true);
    expect(resumed.record.history).toEqual(whole.record.history);
    const [a, b] = [whole.model.getWeights(), resumed.model.getWeights()];
    a.forEach((w, i) => expect(maxDiff(w, b[i])).toBe(0));
    expect((await loadCheckpoint(outDir).then((c) => {
      c.model.dispose();
      tf.dispose(c.optimizerWeights.map((w) => w.tensor));
      return c.record.options.taskOptions;
    }))).toEqual({seqLength: 16, vocabulary: makeTextTask(text).options.vocabulary, validationFraction: 0.1,
      text: null});
    whole.model.dispose();
    resumed.model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
