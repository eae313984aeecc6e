// The text task's documents (paragraphs between blank lines): the split of each part, the
// layout of 'pad' and 'pack' batches derived here from the known paragraphs, determinism,
// records of runs without documents unchanged, refusals; packed rows under withDocuments
// against a dense causal-and-same-document mask (layers) and against each document run
// alone (a rope model); the loss train() and evaluate() compute on them; the CLI's
// --documents and --pack.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionLayerBase, FlashAttention, MultiHeadAttention} from '../../src';
import {batchInputs, EVAL_SEED_OFFSET, evaluate, withDocuments} from '../../src/train/evaluate';
import {maskedLoss} from '../../src/train/losses';
import {buildTransformer, transformerDefaults, TransformerOptions} from '../../src/train/model';
import {TaskBatch} from '../../src/train/task_base';
import {decodeText, encodeText, makeTextTask, TextDocuments} from '../../src/train/text';
import {train} from '../../src/train/trainer';
import {StepInfo, TrainOptions} from '../../src/train/train_options';
import {cli} from '../support/cli_helper';
import {expectClose, expectError, maxDiff, randn, title} from '../support/helpers';

/** The training part's documents as makeTextTask should find them (trimmed, none under 2 characters). */
const TRAIN_DOCS = [
  'Alpha one.',
  'Bb',
  'Charlie runs past the sixteen-character window.',
  'Delta\nhas one line break inside',
  'Echo echo',
  'Foxtrot, trimmed',
  'Golf golf golf golf',
  'Hotel',
  'India is eighteen.',
  'Juliett ends the training part.',
];
const VALIDATION_DOCS = ['Xray validation one.', 'Yankee 2', 'Whiskey, the last paragraph of all.'];

/** `s` followed by line breaks up to n characters (trailing whitespace belongs to no document). */
function padTo(s: string, n: number): string {
  if (s.length > n) throw new Error(`${s.length} characters do not fit in ${n}`);
  return s + '\n'.repeat(n - s.length);
}

// Blank lines of every form (spaces, tabs, several in a row), leading and trailing spaces, and
// one-character paragraphs ('z', 'q') that are dropped. 300 + 100 characters: validationFraction 0.25
// puts the boundary exactly between the parts.
const TRAIN_RAW = padTo('\n' + TRAIN_DOCS[0] + '\n\n' + TRAIN_DOCS[1] + '\n  \n' + TRAIN_DOCS[2] + '\n\t\n' +
  TRAIN_DOCS[3] + '\n\n\n\n' + TRAIN_DOCS[4] + '\n\nz\n\n  ' + TRAIN_DOCS[5] + ' \t\n \n\n' + TRAIN_DOCS[6] + '\n\n' +
  TRAIN_DOCS[7] + '\n\n' + TRAIN_DOCS[8] + '\n\n' + TRAIN_DOCS[9] + '\n\n', 300);
const VALIDATION_RAW = padTo(VALIDATION_DOCS[0] + '\n\n' + VALIDATION_DOCS[1] + '\n\t \n' + VALIDATION_DOCS[2] +
  '\n\nq\n', 100);
const TEXT = TRAIN_RAW + VALIDATION_RAW;
const FRACTION = 0.25;
const DOCS = {train: TRAIN_DOCS, validation: VALIDATION_DOCS};
type Part = keyof typeof DOCS;

/** Every document begins with its own character: a row's first character says which it is. */
function docStartingWith(part: Part, c: string): string {
  const found = DOCS[part].filter((d) => d[0] === c);
  if (found.length !== 1) throw new Error(`no single ${part} document starts with ${JSON.stringify(c)}`);
  return found[0];
}

function task(L: number, documents?: TextDocuments | null) {
  return makeTextTask(TEXT, {seqLength: L, validationFraction: FRACTION,
    ...(documents !== undefined ? {documents} : {})});
}

/** Row r of a [n, L] array of a batch. */
function rowOf(b: TaskBatch, a: ArrayLike<number>, r: number): number[] {
  return Array.from(a).slice(r * b.L, (r + 1) * b.L);
}

/** A packed row's L + 1 positions: characters and their documents (the last from whether weight L - 1 joins it). */
function fullRow(b: TaskBatch, r: number): {ids: number[]; docs: number[]} {
  const inputs = rowOf(b, b.inputs, r);
  const targets = rowOf(b, b.targets, r);
  const docs = rowOf(b, b.documents!, r);
  const last = docs[b.L - 1] + (b.weights[(r + 1) * b.L - 1] === 1 ? 0 : 1);
  return {ids: [...inputs, targets[b.L - 1]], docs: [...docs, last]};
}

/** The runs of equal document ids of a packed row: [start, end) positions within the L + 1. */
function segments(docs: number[]): [number, number][] {
  const out: [number, number][] = [];
  let from = 0;
  for (let p = 1; p <= docs.length; p++) {
    if (p === docs.length || docs[p] !== docs[p - 1]) {
      out.push([from, p]);
      from = p;
    }
  }
  return out;
}

/** The text of each row of a 'pad' batch: its real inputs, then the last real target. */
function padRows(b: TaskBatch, vocabulary: string): string[] {
  return Array.from({length: b.n}, (_, r) => {
    const n = rowOf(b, b.weights, r).filter((w) => w === 1).length;
    return decodeText(vocabulary, [...rowOf(b, b.inputs, r).slice(0, n), rowOf(b, b.targets, r)[n - 1]]);
  });
}

/** The distinct documents of the rows of `batches` 'pad' batches of 8 (seeds 0, 1, ...), sorted. */
function padDocuments(t: ReturnType<typeof makeTextTask>, split: 'train' | 'validation', batches: number): string[] {
  const seen = new Set<string>();
  for (let s = 0; s < batches; s++) padRows(t.batch(8, s, 0, split), t.options.vocabulary).forEach((d) => seen.add(d));
  return [...seen].sort();
}

function sameBatch(a: TaskBatch, b: TaskBatch): boolean {
  const same = (x?: ArrayLike<number>, y?: ArrayLike<number>) => (x == null && y == null) ||
    (x != null && y != null && JSON.stringify(Array.from(x)) === JSON.stringify(Array.from(y)));
  return a.n === b.n && a.L === b.L && same(a.inputs, b.inputs) && same(a.targets, b.targets) &&
    same(a.weights, b.weights) && same(a.documents, b.documents);
}

describe(title('text task documents: paragraphs and batches'), () => {
  const L = 16;
  const pad = task(L, 'pad');
  const pack = task(L, 'pack');
  const vocabulary = pad.options.vocabulary;

  test('the synthetic text splits at 300 / 100 characters', () => {
    expect(TEXT.length).toBe(400);
    expect(pad.lengths).toEqual({train: 300, validation: 100});
    expect(pad.description).toMatch(/13 paragraphs/);
  });

  for (const part of ['train', 'validation'] as const) {
    test(`the ${part} part's documents are its paragraphs: trimmed, split at blank lines with spaces or tabs, ` +
         'one-character ones dropped (pad, L = 64: no document cut)', () => {
      expect(padDocuments(task(64, 'pad'), part, 30)).toEqual([...DOCS[part]].sort());
    });
  }

  test('a paragraph across the boundary of the parts is cut in two, each part keeping its side', () => {
    // 25 + 25 characters, validationFraction 0.5: the boundary falls inside the second paragraph.
    const text = '\n\n\nFirst para.\n\nSecond on' + padTo('e goes on.\n\nThird one.', 25);
    const t = makeTextTask(text, {seqLength: 12, validationFraction: 0.5, documents: 'pad'});
    expect(t.lengths).toEqual({train: 25, validation: 25});
    expect(padDocuments(t, 'train', 10)).toEqual(['First para.', 'Second on']);
    expect(padDocuments(t, 'validation', 10)).toEqual(['Third one.', 'e goes on.']);
  });

  test('blank lines of CRLF text split documents too, the carriage returns trimmed', () => {
    // 30 + 30 characters.
    const text = 'Abc def\r\n\r\nGhi jk\r\nlm\r\n\r\n\r\n\r\n ' + padTo('Nop qr\r\n\r\nSt uv\r\n', 30);
    const t = makeTextTask(text, {seqLength: 4, validationFraction: 0.5, documents: 'pad'});
    expect(t.lengths).toEqual({train: 30, validation: 30});
    // Cut to L + 1 = 5 characters.
    expect(padDocuments(t, 'train', 10)).toEqual(['Abc d', 'Ghi j']);
    expect(padDocuments(t, 'validation', 10)).toEqual(['Nop q', 'St uv']);
  });

  test('pad: each row is one document cut to L + 1 characters: inputs its [0, len - 1), targets its [1, len), ' +
       'padded with 0 to the longest in the batch, weights 1 on real positions', () => {
    let shorter = 0;
    let full = 0;
    for (const part of ['train', 'validation'] as const) {
      for (let s = 0; s < 25; s++) {
        const n = 1 + (s % 3);
        const b = pad.batch(n, s, 2, part);
        expect(b.documents).toBeUndefined();
        // The rows' documents, from their first characters alone.
        const docs = Array.from({length: n}, (_, r) =>
          encodeText(vocabulary, docStartingWith(part, decodeText(vocabulary, [b.inputs[r * b.L]]))).slice(0, L + 1));
        const Lb = Math.max(...docs.map((d) => d.length - 1));
        expect(b.n).toBe(n);
        expect(b.L).toBe(Lb);
        const zeros = (d: number[]) => new Array(Lb - d.length + 1).fill(0);
        const inputs = docs.flatMap((d) => [...d.slice(0, -1), ...zeros(d)]);
        const targets = docs.flatMap((d) => [...d.slice(1), ...zeros(d)]);
        const weights = docs.flatMap((d) => [...new Array(d.length - 1).fill(1), ...zeros(d)]);
        expect(Array.from(b.inputs)).toEqual(inputs);
        expect(Array.from(b.targets)).toEqual(targets);
        expect(Array.from(b.weights)).toEqual(weights);
        expect(b.inputs).toBeInstanceOf(Int32Array);
        expect(b.weights).toBeInstanceOf(Float32Array);
        // Decoded: the real inputs then the last target are the document's first len characters.
        padRows(b, vocabulary).forEach((text) => {
          const doc = docStartingWith(part, text[0]);
          expect(text).toBe(doc.slice(0, L + 1));
        });
        if (Lb < L) shorter++;
        else full++;
      }
    }
    // Both kinds of batch were seen: all rows short (Lb < L), and a row of L + 1 characters or more (Lb = L).
    expect(shorter).toBeGreaterThan(0);
    expect(full).toBeGreaterThan(0);
  });

  test('pack: full rows of whole documents then one cut to fit; documents 0, 1, 2 ...; weights 0 exactly ' +
       'at document ends', () => {
    const starts = {train: new Set<string>(), validation: new Set<string>()};
    let most = 0;
    for (const part of ['train', 'validation'] as const) {
      for (let s = 0; s < 20; s++) {
        const b = pack.batch(3, s, 1, part);
        expect([b.n, b.L]).toEqual([3, L]);
        expect(b.documents).toBeInstanceOf(Int32Array);
        expect(b.documents!.length).toBe(3 * L);
        for (let r = 0; r < b.n; r++) {
          const {ids, docs} = fullRow(b, r);
          expect(rowOf(b, b.inputs, r)).toEqual(ids.slice(0, L));
          expect(rowOf(b, b.targets, r)).toEqual(ids.slice(1));
          expect(rowOf(b, b.weights, r)).toEqual(docs.slice(0, L).map((d, p) => (d === docs[p + 1] ? 1 : 0)));
          const runs = segments(docs);
          runs.forEach(([a, e], k) => {
            expect(docs[a]).toBe(k);
            const text = decodeText(vocabulary, ids.slice(a, e));
            const doc = docStartingWith(part, text[0]);
            starts[part].add(doc);
            if (k < runs.length - 1) expect(text).toBe(doc); // whole
            else expect(doc.startsWith(text)).toBe(true);    // the last: cut to fit, or whole by chance
          });
          most = Math.max(most, runs.length);
        }
      }
      expect([...starts[part]].sort()).toEqual([...DOCS[part]].sort()); // every document drawn, none of the other part
    }
    expect(most).toBeGreaterThanOrEqual(3);
  });

  test('a batch depends only on (n, seed, index, split), in both modes', () => {
    for (const mode of ['pad', 'pack'] as const) {
      const t = mode === 'pad' ? pad : pack;
      const a = t.batch(4, 3, 5);
      expect(sameBatch(t.batch(4, 3, 5, 'train'), a)).toBe(true);
      expect(sameBatch(task(L, mode).batch(4, 3, 5), a)).toBe(true);
      for (const other of [t.batch(4, 4, 5), t.batch(4, 3, 6), t.batch(4, 3, 5, 'validation')]) {
        expect(sameBatch(other, a)).toBe(false);
      }
    }
  });

  test('without documents (absent or null) the options and batches are what they were', () => {
    const plain = task(L);
    const nulled = task(L, null);
    expect(plain.options).toEqual({seqLength: L, vocabulary, validationFraction: FRACTION});
    expect(Object.keys(nulled.options).sort()).toEqual(['seqLength', 'validationFraction', 'vocabulary']);
    expect(plain.description).toBe(nulled.description);
    expect(plain.description).not.toMatch(/paragraph/);
    const b = plain.batch(4, 1, 0);
    expect(sameBatch(nulled.batch(4, 1, 0), b)).toBe(true);
    expect(b.L).toBe(L);
    expect(b.documents).toBeUndefined();
    expect(Array.from(b.weights).every((w) => w === 1)).toBe(true);
    expect(pad.options).toEqual({seqLength: L, vocabulary, validationFraction: FRACTION, documents: 'pad'});
    expect(pack.options.documents).toBe('pack');
  });

  test('refusals: documents other than pad / pack; a part without a paragraph of 2 characters', () => {
    for (const documents of ['packed', 'PAD', true, 1]) {
      expectError(() => makeTextTask(TEXT, {seqLength: L, validationFraction: FRACTION,
        documents: documents as TextDocuments}), 'INVALID_CONFIG', /documents must be one of 'pad', 'pack', received/);
    }
    const noValidation = TRAIN_RAW + padTo('x\n\ny\n \n  z  \n\n', 100);
    const noTraining = padTo('\n\na\n\nb\n\n' + 'c\n \n'.repeat(20), 300) + VALIDATION_RAW;
    for (const documents of ['pad', 'pack'] as const) {
      expectError(() => makeTextTask(noValidation, {seqLength: L, validationFraction: FRACTION, documents}),
        'INVALID_CONFIG', new RegExp(`documents '${documents}' needs documents .* the training part has 10 and the ` +
          'validation part 0'));
      expectError(() => makeTextTask(noTraining, {seqLength: L, validationFraction: FRACTION, documents}),
        'INVALID_CONFIG', /the training part has 0 and the validation part 3/);
    }
    // The same texts make a task without documents.
    expect(makeTextTask(noValidation, {seqLength: L, validationFraction: FRACTION}).vocabSize).toBeGreaterThan(0);
    expect(makeTextTask(noTraining, {seqLength: L, validationFraction: FRACTION}).vocabSize).toBeGreaterThan(0);
  });
});

/** [B, T, T] 0/1: position i attends to j iff j <= i and both are in one document. */
function causalSameDocument(b: TaskBatch): tf.Tensor3D {
  const d = b.documents!;
  return tf.tensor3d(Array.from({length: b.n}, (_, r) => Array.from({length: b.L}, (_, i) =>
    Array.from({length: b.L}, (_, j) => (j <= i && d[r * b.L + i] === d[r * b.L + j] ? 1 : 0)))));
}

describe(title('text task documents: packed rows attend within their documents'), () => {
  const L = 16;
  const pack = task(L, 'pack');
  // The first seed whose 2 rows each pack 2 documents or more, one of them 3 or more.
  const counts = (b: TaskBatch) => [0, 1].map((r) => new Set(rowOf(b, b.documents!, r)).size);
  const seed = Array.from({length: 50}, (_, s) => s).find((s) => {
    const c = counts(pack.batch(2, s, 0));
    return Math.min(...c) >= 2 && Math.max(...c) >= 3;
  })!;
  const batch = pack.batch(2, seed, 0);

  test('the batch used here packs several documents in each row', () => {
    expect(seed).toBeDefined();
    expect(Math.min(...counts(batch))).toBeGreaterThanOrEqual(2);
  });

  const E = 8;
  const layers: [string, () => AttentionLayerBase][] = [
    ['MultiHeadAttention H=2', () => new MultiHeadAttention({numHeads: 2, headDim: 4, causal: true})],
    ['MultiHeadAttention H=4 G=2 (gqa)', () => new MultiHeadAttention({numHeads: 4, numKvHeads: 2, headDim: 3,
      causal: true})],
    ['FlashAttention H=2 blockSize 4', () => new FlashAttention({numHeads: 2, headDim: 4, blockSize: 4, causal: true})],
  ];
  for (const [what, make] of layers) {
    test(`${what}: under withDocuments == the dense causal same-document attentionMask (output and dx, 1e-5)`, () => {
      const x = randn([batch.n, L, E], 3);
      const layer = make();
      tf.dispose(layer.apply(x) as tf.Tensor);
      const dense = causalSameDocument(batch);
      const f = (kwargs = {}) => (a: tf.Tensor) => tf.sum(tf.square(layer.apply(a, kwargs) as tf.Tensor));
      const got = withDocuments(batch, () => layer.apply(x) as tf.Tensor);
      const gotDx = withDocuments(batch, () => tf.grad(f())(x));
      const want = layer.apply(x, {attentionMask: dense}) as tf.Tensor;
      const wantDx = tf.grad(f({attentionMask: dense}))(x);
      expectClose(got, want, 1e-5);
      expectClose(gotDx, wantDx, 1e-5);
      // The documents matter: causal alone differs.
      const causal = layer.apply(x) as tf.Tensor;
      expect(maxDiff(causal, want)).toBeGreaterThan(1e-3);
      tf.dispose([x, dense, got, gotDx, want, wantDx, causal]);
      layer.dispose();
    });
  }

  test('a causal rope model (gqa, 1 layer, E=16): each document of a packed row gives the probabilities of the ' +
       'document run alone (1e-4); without withDocuments the later ones do not', () => {
    const model = buildTransformer({attention: 'gqa', vocabSize: pack.vocabSize, seqLength: L, modelDim: 16,
      numHeads: 2, numKvHeads: 1, numLayers: 1, ffDim: 32, causal: true, positions: 'rope', seed: 3});
    const x = batchInputs(batch) as tf.Tensor;
    const packed = withDocuments(batch, () => model.predict(x) as tf.Tensor);
    const unmasked = model.predict(x) as tf.Tensor;
    let worstWithout = 0;
    for (let r = 0; r < batch.n; r++) {
      for (const [a, e] of segments(rowOf(batch, batch.documents!, r))) {
        const alone = tf.tensor2d([rowOf(batch, batch.inputs, r).slice(a, e)], [1, e - a], 'int32');
        const want = model.predict(alone) as tf.Tensor;
        const got = tf.slice(packed, [r, a, 0], [1, e - a, -1]);
        expect(maxDiff(got, want)).toBeLessThan(1e-4);
        if (a > 0) worstWithout = Math.max(worstWithout, maxDiff(tf.slice(unmasked, [r, a, 0], [1, e - a, -1]), want));
        tf.dispose([alone, want, got]);
      }
    }
    expect(worstWithout).toBeGreaterThan(1e-3);
    tf.dispose([x, packed, unmasked]);
    model.dispose();
  });
});

describe(title('text task documents: train() and evaluate()'), () => {
  const L = 32;
  const model: Omit<TransformerOptions, 'vocabSize' | 'seqLength' | 'seed'> = {attention: 'gqa', modelDim: 16,
    numHeads: 2, numKvHeads: 1, numLayers: 1, ffDim: 32, causal: true};
  // 'pad' with rope positions: the model takes the batch's rows as they are (a learned table would pad them to L).
  const options = (documents: TextDocuments): TrainOptions => ({task: 'text',
    taskOptions: {text: TEXT, seqLength: L, validationFraction: FRACTION, documents},
    model: {...model, positions: documents === 'pad' ? 'rope' : 'learned'}, steps: 3, batchSize: 4,
    warmupSteps: 1, evalEvery: 3, evalBatches: 1, learningRate: 1e-2});
  /** The loss of the model train() starts from (seed 0) on a batch, with or without the batch's documents. */
  const initialLoss = (b: TaskBatch, withDocs: boolean): number => {
    const t = task(L, 'pack');
    const m = buildTransformer(transformerDefaults({...model, vocabSize: t.vocabSize, seqLength: L, seed: 0}));
    const loss = tf.tidy(() => {
      const probs = () => m.predict(batchInputs(b)) as tf.Tensor;
      return maskedLoss(withDocs ? withDocuments(b, probs) : probs(), b, t.vocabSize).dataSync()[0];
    });
    m.dispose();
    return loss;
  };

  for (const documents of ['pack', 'pad'] as const) {
    test(`documents '${documents}': 3 steps, finite losses, the record holds documents; scored tokens per ` +
         'second = tokens per second x the batch\'s scored fraction', async () => {
      const before = tf.memory().numTensors;
      const steps: StepInfo[] = [];
      const {model: trained, record} = await train(options(documents), {onStep: (i) => steps.push(i)});
      expect(steps.map((i) => i.step)).toEqual([1, 2, 3]);
      expect(steps.every((i) => Number.isFinite(i.loss) && i.loss > 0)).toBe(true);
      expect(record.history.map((m) => m.step)).toEqual([3]);
      expect(Number.isFinite(record.history[0].loss)).toBe(true);
      expect(record.task).toMatchObject({name: 'text', seqLength: L, documents, text: null});
      expect(record.options.taskOptions).toMatchObject({documents});
      const t = task(L, documents);
      let padded = 0;
      steps.forEach((info, s) => {
        const b = t.batch(4, 0, s, 'train');
        const scored = Array.from(b.weights).filter((w) => w > 0).length;
        expect(info.scoredTokensPerSecond).toBeLessThanOrEqual(info.tokensPerSecond);
        expect(info.scoredTokensPerSecond / info.tokensPerSecond).toBeCloseTo(scored / (b.n * b.L), 10);
        if (scored < b.n * b.L) {
          padded++;
          expect(info.scoredTokensPerSecond).toBeLessThan(info.tokensPerSecond);
        }
      });
      expect(padded).toBeGreaterThan(0);
      if (documents === 'pack') {
        // Step 1's loss is the initial model's under the batch's document mask.
        const b = t.batch(4, 0, 0, 'train');
        expect(steps[0].loss).toBeCloseTo(initialLoss(b, true), 5);
        expect(Math.abs(steps[0].loss - initialLoss(b, false))).toBeGreaterThan(1e-4);
      }
      trained.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  test('evaluate on packed rows: the loss under the batches\' document masks', async () => {
    const t = task(L, 'pack');
    const m = buildTransformer(transformerDefaults({...model, vocabSize: t.vocabSize, seqLength: L, seed: 5}));
    const b = t.batch(4, 2 + EVAL_SEED_OFFSET, 0, 'validation');
    const [masked, unmasked] = tf.tidy(() => {
      const probs = () => m.predict(batchInputs(b)) as tf.Tensor;
      return [maskedLoss(withDocuments(b, probs), b, t.vocabSize).dataSync()[0],
        maskedLoss(probs(), b, t.vocabSize).dataSync()[0]];
    });
    const {loss} = await evaluate(m, t, 2, 4, 1);
    expect(loss).toBeCloseTo(masked, 5);
    expect(Math.abs(loss - unmasked)).toBeGreaterThan(1e-4);
    m.dispose();
  });
});

describe(title('cli train --documents, --pack'), () => {
  let dir: string;
  let backend: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-text-documents-'));
    fs.writeFileSync(path.join(dir, 'text.txt'), TEXT);
    backend = tf.getBackend();
  });
  afterAll(() => fs.rmSync(dir, {recursive: true, force: true}));

  test('refusals (exit 2, one line, no folder): --pack with a non-flex attention, --documents or --pack with a ' +
       'non-text task, --pack with --documents pad, an unknown mode', async () => {
    const out = path.join(dir, 'refused');
    const cases: [string[], RegExp][] = [
      [['--task', 'text', '--pack', '--attention', 'linear'],
        /^error: --pack needs an attention that takes a document mask \(mha, gqa, flash\), not 'linear'\n$/],
      [['--task', 'text', '--documents', 'pack', '--attention', 'local-global'],
        /^error: --pack needs .*\(mha, gqa, flash\), not 'local-global'\n$/],
      [['--task', 'reverse', '--documents', 'pad'], /^error: --data, --seq-length, --documents and --pack are for --task text, not 'reverse'\n$/],
      [['--task', 'reverse', '--pack'], /^error: .*--pack are for --task text, not 'reverse'\n$/],
      [['--task', 'text', '--pack', '--documents', 'pad'],
        /^error: --pack means --documents pack; it cannot go with --documents pad\n$/],
      [['--task', 'text', '--documents', 'packed'], /^error: .*Allowed choices are pad, pack/],
    ];
    for (const [argv, message] of cases) {
      const r = await cli('train', ...argv, '--steps', '1', '--out', out, '--quiet', '--backend', backend);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
      expect(fs.existsSync(out)).toBe(false);
    }
  });

  test('train --task text --pack on a file: trains and records documents pack', async () => {
    const out = path.join(dir, 'packed');
    const data = path.join(dir, 'text.txt');
    const r = await cli('train', '--task', 'text', '--data', data, '--pack', '--seq-length', '16', '--steps', '2',
      '--model-dim', '16', '--layers', '1', '--heads', '2', '--kv-heads', '1', '--batch-size', '2', '--eval-every', '2',
      '--eval-batches', '1', '--out', out, '--quiet', '--backend', backend);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^trained gqa on text .*2 steps/);
    const record = JSON.parse(fs.readFileSync(path.join(out, 'training.json'), 'utf8'));
    expect(record.task).toMatchObject({name: 'text', seqLength: 16, documents: 'pack', data});
    expect(record.options.taskOptions).toMatchObject({documents: 'pack'});
    expect(record).toMatchObject({step: 2, finished: true});
  });

  test('--documents pad goes with any attention (linear here): one row per document needs no mask', async () => {
    const out = path.join(dir, 'padded');
    const r = await cli('train', '--task', 'text', '--data', path.join(dir, 'text.txt'), '--documents', 'pad',
      '--attention', 'linear', '--seq-length', '16', '--steps', '1', '--model-dim', '16', '--layers', '1',
      '--heads', '2', '--batch-size', '2', '--eval-batches', '1', '--out', out, '--quiet', '--backend', backend);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    const record = JSON.parse(fs.readFileSync(path.join(out, 'training.json'), 'utf8'));
    expect(record.task.documents).toBe('pad');
  });
});
