/**
 * The character-level text task: read L characters of a text, predict the next character
 * at every position, so that a causal transformer learns a language model of any UTF-8
 * text. Characters are Unicode code points (an emoji is one character, not two UTF-16
 * units); the vocabulary is a string whose i-th character has id i.
 *
 * The last `validationFraction` of the text is the validation part, the rest the training
 * part; a window never crosses from one into the other. A batch is n windows of L + 1
 * consecutive characters at seeded random offsets in its part: inputs the first L, targets
 * the last L. It depends only on (n, seed, index, split).
 *
 * With `documents`, the text is a list of documents (paragraphs: runs of characters between
 * blank lines) and an example never reads across two: 'pad' gives one document per row (its
 * first L + 1 characters), rows padded to the batch's longest; 'pack' fills every row with
 * documents drawn one after the other (the last cut to fit) and gives each position's document,
 * so the model attends within documents (documentMask). Either way the last character of a
 * document predicts nothing (weight 0).
 *
 * Browser-safe: only readTextFile and the shipped sample (sampleTextPath) need Node.
 */
import {AttentionError, show} from '../core/errors';
import {uniform} from '../ops/random_features';
import {readUserFile} from '../io/confined';
import {assertNode, errorMessage, node, packageRoot} from '../core/runtime';
import {assertOneOf, assertPositiveInt, checkArgNames} from '../core/validate';
import {batchSeed, Split, Task, TaskBatch} from './task_base';

/** The parts of a text: it has no test part. */
const TEXT_SPLITS = ['train', 'validation'] as const;
type TextSplit = typeof TEXT_SPLITS[number];

export const TEXT_TASK = 'text';
export const DEFAULT_SEQ_LENGTH = 64;
export const DEFAULT_VALIDATION_FRACTION = 0.1;
/** The sample text that ships with the package, relative to the package's root folder. */
export const SAMPLE_TEXT = 'data/text/attention.txt';

export interface TextTaskOptions {
  /** L, the characters of one example; the model predicts the next one at each. Default 64. */
  seqLength?: number;
  /**
   * The characters, id i = the i-th (code points, none repeated). Default: the distinct
   * characters of the text, sorted by code point.
   */
  vocabulary?: string;
  /** The last this fraction of the text (by characters) is the validation part; in (0, 1). Default 0.1. */
  validationFraction?: number;
  /**
   * null: windows of the continuous text. 'pad': one document (paragraph) per row, padded to the
   * batch's longest. 'pack': documents packed into full rows, attending within themselves. Default null.
   */
  documents?: TextDocuments | null;
}

export const TEXT_DOCUMENTS = ['pad', 'pack'] as const;
export type TextDocuments = typeof TEXT_DOCUMENTS[number];

/** The text task's options in makeTask: where the text comes from, and TextTaskOptions. */
export interface TextSourceOptions extends TextTaskOptions {
  /** A UTF-8 file to read (Node only). Default: the shipped sample, SAMPLE_TEXT. Not with `text`. */
  data?: string;
  /**
   * The text itself (any runtime). Not with `data`. A training record holds `null` here
   * for a run on an inline text: the record never stores the text.
   */
  text?: string | null;
}

/**
 * What a training record stores of a text task: every option, the vocabulary, where the text
 * came from; never the text.
 */
export type RecordedTextOptions = FilledTextOptions & {data?: string; text?: null};

/** The documents of ids (paragraphs: split at lines with nothing but spaces), each at least 2 characters. */
function paragraphs(chars: string[], ids: Int32Array, start: number, end: number): Int32Array[] {
  const docs: Int32Array[] = [];
  let from = start;
  let i = start;
  const close = (to: number) => {
    // Trim the line breaks and spaces around a document.
    let a = from;
    let b = to;
    while (a < b && /\s/.test(chars[a])) a++;
    while (b > a && /\s/.test(chars[b - 1])) b--;
    if (b - a >= 2) docs.push(ids.subarray(a, b));
  };
  while (i < end) {
    if (chars[i] === '\n') {
      let j = i + 1;
      while (j < end && chars[j] !== '\n' && /\s/.test(chars[j])) j++;
      if (j < end && chars[j] === '\n') {
        close(i);
        while (j < end && /\s/.test(chars[j])) j++;
        from = j;
        i = j;
        continue;
      }
    }
    i++;
  }
  close(end);
  return docs;
}

/** Row r of a batch filled from documents: inputs, targets, weights (and document ids when packing). */
function documentBatch(docs: Int32Array[], mode: TextDocuments, n: number, L: number, next: () => number): TaskBatch {
  const draw = () => docs[Math.floor(next() * docs.length)];
  if (mode === 'pad') {
    const rows = Array.from({length: n}, () => draw().subarray(0, L + 1));
    const Lb = Math.max(...rows.map((d) => d.length - 1));
    const inputs = new Int32Array(n * Lb);
    const targets = new Int32Array(n * Lb);
    const weights = new Float32Array(n * Lb);
    rows.forEach((d, r) => {
      inputs.set(d.subarray(0, d.length - 1), r * Lb);
      targets.set(d.subarray(1), r * Lb);
      weights.fill(1, r * Lb, r * Lb + d.length - 1);
    });
    return {inputs, targets, weights, n, L: Lb};
  }
  const inputs = new Int32Array(n * L);
  const targets = new Int32Array(n * L);
  const weights = new Float32Array(n * L);
  const documents = new Int32Array(n * L);
  for (let r = 0; r < n; r++) {
    // L + 1 positions: the inputs are the first L, the targets the last L.
    const row = new Int32Array(L + 1);
    const doc = new Int32Array(L + 1);
    for (let at = 0, k = 0; at < L + 1; k++) {
      const d = draw().subarray(0, L + 1 - at);
      row.set(d, at);
      doc.fill(k, at, at + d.length);
      at += d.length;
    }
    inputs.set(row.subarray(0, L), r * L);
    targets.set(row.subarray(1), r * L);
    documents.set(doc.subarray(0, L), r * L);
    for (let p = 0; p < L; p++) weights[r * L + p] = doc[p] === doc[p + 1] ? 1 : 0;
  }
  return {inputs, targets, weights, n, L, documents};
}

/** The options with their defaults filled in; documents only when given (records of other runs stay as they were). */
export type FilledTextOptions = Required<Omit<TextTaskOptions, 'documents'>> & {documents?: TextDocuments};

export interface TextTask<Options extends object = FilledTextOptions> extends Task<typeof TEXT_TASK, Options> {
  /** The characters of each part: train is the first lengths.train, validation the rest. */
  lengths: Record<'train' | 'validation', number>;
}

/** `"é" (U+00E9)`: a character as an error message shows it, control characters escaped. */
function describeChar(c: string): string {
  return `${JSON.stringify(c)} (U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')})`;
}

/** The id of every character of `vocabulary`. Throws INVALID_CONFIG for an empty one or a repeat. */
function vocabularyIndex(vocabulary: unknown): Map<string, number> {
  if (typeof vocabulary !== 'string' || vocabulary === '') {
    throw new AttentionError('INVALID_CONFIG',
      `vocabulary must be a non-empty string of distinct characters, received ${show(vocabulary)}`);
  }
  const index = new Map<string, number>();
  Array.from(vocabulary).forEach((c, i) => {
    const first = index.get(c);
    if (first !== undefined) {
      throw new AttentionError('INVALID_CONFIG', `vocabulary repeats ${describeChar(c)} (at positions ${first} and ${i})`);
    }
    index.set(c, i);
  });
  return index;
}

/** The ids of `chars`. Throws INVALID_CONFIG naming the first character not in the vocabulary and its position. */
function encodeChars(index: Map<string, number>, chars: string[]): Int32Array {
  const ids = new Int32Array(chars.length);
  chars.forEach((c, i) => {
    const id = index.get(c);
    if (id === undefined) {
      throw new AttentionError('INVALID_CONFIG', `character ${describeChar(c)} at position ${i} is not in the ` +
        `vocabulary (${index.size} characters)`);
    }
    ids[i] = id;
  });
  return ids;
}

/**
 * The ids of the characters of `s` in `vocabulary` (id i = its i-th character).
 * Throws INVALID_CONFIG for a character not in the vocabulary, naming it and its position.
 */
export function encodeText(vocabulary: string, s: string): number[] {
  if (typeof s !== 'string') throw new AttentionError('INVALID_CONFIG', `encodeText needs a string, received ${show(s)}`);
  return Array.from(encodeChars(vocabularyIndex(vocabulary), Array.from(s)));
}

/**
 * The text of `ids` in `vocabulary`. Throws INVALID_CONFIG for an id that is not an integer in
 * [0, vocabulary size).
 */
export function decodeText(vocabulary: string, ids: ArrayLike<number>): string {
  const chars = Array.from(vocabularyIndex(vocabulary).keys());
  let out = '';
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= chars.length) {
      throw new AttentionError('INVALID_CONFIG', `id ${show(id)} at position ${i} is not a character id: the ` +
        `vocabulary has ${chars.length} characters (ids 0 to ${chars.length - 1})`);
    }
    out += chars[id];
  }
  return out;
}

/**
 * The entropy, in nats, of the text's character frequencies: the loss (natural-log
 * cross-entropy, as the trainer's) of the best model that ignores context. A model that
 * learns anything from context goes below it; ln(vocabulary size) is a uniform guess.
 */
export function unigramEntropy(text: string): number {
  if (typeof text !== 'string' || text === '') {
    throw new AttentionError('INVALID_CONFIG', `unigramEntropy needs a non-empty string, received ${show(text)}`);
  }
  const counts = new Map<string, number>();
  let n = 0;
  for (const c of text) {
    counts.set(c, (counts.get(c) ?? 0) + 1);
    n++;
  }
  let h = 0;
  for (const count of counts.values()) h -= (count / n) * Math.log(count / n);
  return h;
}

/**
 * The text task on `text`. Throws INVALID_CONFIG for bad options, a character that is not
 * in the given vocabulary, or a text whose training or validation part is shorter than one
 * window (seqLength + 1 characters).
 */
export function makeTextTask(text: string, options: TextTaskOptions = {}): TextTask {
  checkArgNames('makeTextTask', options, ['seqLength', 'vocabulary', 'validationFraction', 'documents']);
  const documents = options?.documents ?? null;
  if (documents != null) assertOneOf('documents', documents, TEXT_DOCUMENTS);
  if (typeof text !== 'string') throw new AttentionError('INVALID_CONFIG', `text must be a string, received ${show(text)}`);
  const L = options?.seqLength ?? DEFAULT_SEQ_LENGTH;
  const fraction = options?.validationFraction ?? DEFAULT_VALIDATION_FRACTION;
  assertPositiveInt('seqLength', L);
  if (typeof fraction !== 'number' || !(fraction > 0 && fraction < 1)) {
    throw new AttentionError('INVALID_CONFIG', `validationFraction must be a number in (0, 1), received ${show(fraction)}`);
  }
  const chars = Array.from(text);
  const vocabulary = options?.vocabulary ??
    [...new Set(chars)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!).join('');
  const index = vocabularyIndex(vocabulary);
  const N = chars.length;
  const lengths: Record<TextSplit, number> = {train: N - Math.floor(N * fraction),
    validation: Math.floor(N * fraction)};
  if (lengths.train < L + 1 || lengths.validation < L + 1) {
    throw new AttentionError('INVALID_CONFIG', `a text of ${N} characters is too short for seqLength ${L} with ` +
      `validationFraction ${fraction}: its training part has ${lengths.train} characters and its validation part ` +
      `${lengths.validation}, and each needs at least seqLength + 1 = ${L + 1}`);
  }
  const ids = encodeChars(index, chars);
  const starts: Record<TextSplit, number> = {train: 0, validation: lengths.train};
  const docs = documents == null ? null : {train: paragraphs(chars, ids, 0, lengths.train),
    validation: paragraphs(chars, ids, lengths.train, N)};
  if (docs != null && (docs.train.length === 0 || docs.validation.length === 0)) {
    throw new AttentionError('INVALID_CONFIG', `documents '${documents}' needs documents (paragraphs of at least 2 ` +
      `characters, between blank lines) in both parts; the training part has ${docs.train.length} and the ` +
      `validation part ${docs.validation.length}`);
  }
  return {
    name: TEXT_TASK,
    options: {seqLength: L, vocabulary, validationFraction: fraction, ...(documents != null ? {documents} : {})},
    vocabSize: index.size,
    seqLength: L,
    description: `predict the next character at each of ${L} positions of a ${N}-character text (${index.size} distinct)` +
      (docs == null ? '' : `, within its document (${docs.train.length + docs.validation.length} paragraphs, ` +
        (documents === 'pack' ? 'packed into full rows)' : 'one per row, padded)')),
    lengths,
    batch(n: number, seed: number, batchIndex: number, split: Split = 'train'): TaskBatch {
      assertPositiveInt('batch size', n);
      assertOneOf('split', split, TEXT_SPLITS);
      const next = uniform(batchSeed(seed, batchIndex));
      if (docs != null) return documentBatch(docs[split as TextSplit], documents!, n, L, next);
      const windows = lengths[split] - L; // offsets whose L + 1 characters lie inside the part
      const inputs = new Int32Array(n * L);
      const targets = new Int32Array(n * L);
      for (let r = 0; r < n; r++) {
        const o = starts[split] + Math.floor(next() * windows);
        inputs.set(ids.subarray(o, o + L), r * L);
        targets.set(ids.subarray(o + 1, o + L + 1), r * L); // the next character at every position
      }
      return {inputs, targets, weights: new Float32Array(n * L).fill(1), n, L};
    },
  };
}

/**
 * The absolute path of the shipped sample text (SAMPLE_TEXT in the package's folder, see
 * packageRoot). Throws AttentionError('UNSUPPORTED') outside Node, ('IO') when no folder
 * holds the package.
 */
export function sampleTextPath(): string {
  assertNode(`the shipped sample text (${SAMPLE_TEXT})`, "in a browser, pass the text itself: makeTask('text', {text})");
  let root: string;
  try {
    root = packageRoot();
  } catch (e) {
    throw new AttentionError('IO', `cannot find the shipped sample text: ${errorMessage(e)}; pass {data: PATH} or {text}`);
  }
  return node().path.join(root, SAMPLE_TEXT);
}

/** Control characters other than tab, line feed, vertical tab, form feed and carriage return. */
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\x00-\x08\x0e-\x1f\x7f]/g;

/**
 * The UTF-8 text of file `file` (a byte order mark dropped). Node only.
 * @throws AttentionError('IO') for a file that cannot be read, is empty, or looks binary:
 *   a NUL byte, bytes that are not UTF-8, or more than 1% control characters.
 * @throws AttentionError('UNSUPPORTED') in a browser.
 */
export function readTextFile(file: string): string {
  assertNode('readTextFile(path)', "in a browser, fetch the text and pass it as makeTask('text', {text})");
  if (typeof file !== 'string' || file === '') {
    throw new AttentionError('INVALID_CONFIG', `readTextFile needs a file path, received ${show(file)}`);
  }
  node('readTextFile(path)');
  // A regular file only: a FIFO or a device (/dev/zero) would hang or fill the memory.
  const bytes: Uint8Array = readUserFile(file, 'text file');
  if (bytes.length === 0) throw new AttentionError('IO', `text file '${file}' is empty; the text task needs some text`);
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    throw new AttentionError('IO', `'${file}' looks binary, not text: it holds a NUL byte at byte ${nul}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', {fatal: true}).decode(bytes);
  } catch {
    throw new AttentionError('IO', `'${file}' is not UTF-8 text (a binary file, or text in another encoding ` +
      'such as Latin-1: convert it to UTF-8)');
  }
  const controls = text.match(CONTROL)?.length ?? 0;
  if (controls > 0.01 * text.length) {
    throw new AttentionError('IO', `'${file}' looks binary, not text: ${controls} of its ${Array.from(text).length} ` +
      'characters are control characters');
  }
  if (text === '') throw new AttentionError('IO', `text file '${file}' is empty; the text task needs some text`);
  return text;
}

/**
 * The text task of makeTask('text', options): the text from `text`, from the file `data`,
 * or (neither given) from the shipped sample. Its `options` are what a training record
 * stores: the filled-in TextTaskOptions with the vocabulary, `data` when it was given, and
 * `text: null` for an inline text, never the text itself.
 */
export function textTaskFrom(options: TextSourceOptions = {}): TextTask<RecordedTextOptions> {
  checkArgNames('the text task', options, ['data', 'text', 'seqLength', 'vocabulary', 'validationFraction', 'documents']);
  const {data, text, ...rest} = options ?? {};
  if (data !== undefined && text !== undefined) {
    throw new AttentionError('INVALID_CONFIG', 'the text task takes one of data (a file path) or text (the text ' +
      'itself), not both');
  }
  if (text === null) {
    throw new AttentionError('INVALID_CONFIG', 'text is null: the run was trained on a text given inline, which ' +
      'its training record does not hold; pass the same text as taskOptions.text');
  }
  if (text !== undefined && typeof text !== 'string') {
    throw new AttentionError('INVALID_CONFIG', `text must be a string, received ${show(text)}`);
  }
  if (data !== undefined && (typeof data !== 'string' || data === '')) {
    throw new AttentionError('INVALID_CONFIG', `data must be the path of a UTF-8 text file, received ${show(data)}`);
  }
  const task = makeTextTask(text ?? readTextFile(data ?? sampleTextPath()), rest);
  const source = text !== undefined ? {text: null} : data !== undefined ? {data} : {};
  return {...task, options: {...task.options, ...source}};
}
