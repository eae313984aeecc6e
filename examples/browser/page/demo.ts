/**
 * The browser demo (`npm run demo`): pick an attention kind and a toy task, train a small
 * transformer in the page on the best backend there is (webgpu, webgl, wasm, cpu), watch the
 * loss fall, type an input to see the prediction, and see each head's attention weights.
 * Values are read with `await data()` only: a synchronous read can crash a webgpu page.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import {setWasmPaths} from '@tensorflow/tfjs-backend-wasm';
import {AttentionKind, buildTransformer, scaledDotProductAttention, selectBackend} from 'tfjs-attention';
import {BLANK, FIRST_SYMBOL, makeToyTask, maskedLoss, SEP, Task, TaskName} from 'tfjs-attention/train';

setWasmPaths('/wasm/');

const LENGTH = 6;          // symbols per example
const VOCAB = 12;          // BLANK, SEP and the digits 0-9
const BATCH = 32;
const SEED = 1;
const WINDOW = 1;          // local-global: |i - j| <= 1, plus position 0 seen by every query
const GLOBALS = [0];

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

interface State {
  kind: AttentionKind;
  task: Task;
  model: tf.LayersModel;
  /** The model up to the first block's attention input: what its q and k are computed from. */
  toAttention: tf.LayersModel;
  optimizer: tf.Optimizer;
  losses: number[];
  stop: boolean;
}

let state: State | null = null;
let backend = '';

function newState(kind: AttentionKind, taskName: TaskName): State {
  if (state != null) {
    state.model.dispose();
    state.optimizer.dispose();
  }
  const task = makeToyTask(taskName, {length: LENGTH, vocabSize: VOCAB});
  const model = buildTransformer({
    attention: kind, vocabSize: task.vocabSize, seqLength: task.seqLength, modelDim: 32, numHeads: 4, numLayers: 2,
    seed: SEED, attentionArgs: kind === 'local-global' ? {windowSize: WINDOW, globalIndices: GLOBALS} : {},
  });
  const toAttention = tf.model({inputs: model.inputs, outputs: model.getLayer('block0_norm1').output});
  return {kind, task, model, toAttention, optimizer: tf.train.adam(0.004), losses: [], stop: false};
}

async function trainSteps(steps: number): Promise<void> {
  const s = state!;
  const vars = s.model.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val);
  for (let i = 0; i < steps && !s.stop; i++) {
    const batch = s.task.batch(BATCH, SEED, s.losses.length);
    const {value, grads} = tf.tidy(() => {
      const x = tf.tensor2d(batch.inputs, [batch.n, batch.L], 'int32');
      // The trainer's loss: mean cross-entropy over the scored positions.
      return tf.variableGrads(() => maskedLoss(s.model.apply(x, {training: true}) as tf.Tensor, batch, VOCAB), vars);
    });
    s.optimizer.applyGradients(grads);
    tf.dispose(grads);
    s.losses.push((await value.data())[0]);
    value.dispose();
    if (i % 5 === 4 || i === steps - 1) {
      drawLoss(s.losses);
      $('status').textContent = `step ${s.losses.length}: loss ${s.losses[s.losses.length - 1].toFixed(3)} on ${backend}`;
      await tf.nextFrame();
    }
    if (i % 50 === 49) await refresh();
  }
  await refresh();
}

// ---- the loss chart ------------------------------------------------------------------

function drawLoss(losses: number[]): void {
  const canvas = $<HTMLCanvasElement>('loss');
  const g = canvas.getContext('2d')!;
  const [W, H] = [canvas.width, canvas.height];
  const pad = {left: 48, right: 14, top: 12, bottom: 30};
  g.clearRect(0, 0, W, H);
  g.font = '12px system-ui, sans-serif';
  const top = Math.max(...losses, 0.1) * 1.05;
  const n = Math.max(losses.length, 2);
  const x = (i: number) => pad.left + (i / (n - 1)) * (W - pad.left - pad.right);
  const y = (v: number) => pad.top + (1 - v / top) * (H - pad.top - pad.bottom);
  g.strokeStyle = '#e4e7ec';
  g.fillStyle = '#667085';
  g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    g.beginPath();
    g.moveTo(pad.left, y(v));
    g.lineTo(W - pad.right, y(v));
    g.stroke();
    g.fillText(v.toFixed(2), 8, y(v) + 4);
  }
  g.textAlign = 'center';
  g.fillText('step', (pad.left + W - pad.right) / 2, H - 8);
  g.fillText('1', pad.left, H - 8);
  if (losses.length > 1) g.fillText(String(losses.length), x(n - 1) - 8, H - 8);
  g.textAlign = 'start';
  if (losses.length === 0) return;
  g.strokeStyle = '#3b5bdb';
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((v, i) => (i === 0 ? g.moveTo(x(i), y(v)) : g.lineTo(x(i), y(v))));
  g.stroke();
}

// ---- prediction ------------------------------------------------------------------------

/** The typed digits as LENGTH symbols (missing ones are 0). */
function digitsOf(text: string): number[] {
  const d = text.replace(/[^0-9]/g, '').slice(0, LENGTH).split('').map(Number);
  while (d.length < LENGTH) d.push(0);
  return d;
}

/** The token sequence the task reads for `digits`, and the positions the model answers at. */
function encode(task: Task, digits: number[]): {tokens: number[]; answers: number[]} {
  const symbols = digits.map((d) => FIRST_SYMBOL + d);
  if (task.name === 'copy') {
    return {tokens: [...symbols, SEP, ...symbols.map(() => BLANK)], answers: symbols.map((_, i) => LENGTH + 1 + i)};
  }
  return {tokens: symbols, answers: symbols.map((_, i) => i)};
}

function expected(task: Task, digits: number[]): number[] {
  if (task.name === 'reverse') return [...digits].reverse();
  if (task.name === 'sort') return [...digits].sort((a, b) => a - b);
  return digits;
}

async function predict(tokens: number[], answers: number[]): Promise<number[]> {
  const ids = tf.tidy(() => tf.argMax(state!.model.predict(tf.tensor2d([tokens], [1, tokens.length], 'int32')) as tf.Tensor, -1));
  const all = await ids.data();
  ids.dispose();
  return answers.map((p) => all[p] - FIRST_SYMBOL);
}

// ---- attention weights -----------------------------------------------------------------

/**
 * Each head's attention weights [T, T] in the first block for `tokens`. MHA and GQA return
 * theirs (returnAttentionScores); the other kinds never form them, so the softmax weights of
 * the layer's own q and k are computed on the side (exact for flash; what linear attention
 * approximates; for local-global the window and global keys it may see).
 */
async function headWeights(tokens: number[]): Promise<{maps: Float32Array[]; T: number; note: string}> {
  const s = state!;
  const layer = s.model.getLayer('block0_attention');
  const T = tokens.length;
  const weights = tf.tidy(() => {
    const x = s.toAttention.predict(tf.tensor2d([tokens], [1, T], 'int32')) as tf.Tensor; // [1, T, E]
    if (s.kind === 'mha' || s.kind === 'gqa') {
      return (layer.apply(x, {returnAttentionScores: true}) as tf.Tensor[])[1]; // [1, H, T, T]
    }
    const project = (name: string) => {
      const kernel = layer.weights.find((w) => w.originalName.endsWith(`${name}/kernel`))!.read(); // [E, N, D]
      const bias = layer.weights.find((w) => w.originalName.endsWith(`${name}/bias`))?.read();
      const [E, N, D] = kernel.shape;
      let y = tf.matMul(tf.reshape(x, [T, E]), tf.reshape(kernel, [E, N * D])); // [T, N*D]
      if (bias != null) y = tf.add(y, tf.reshape(bias, [1, N * D]));
      return tf.transpose(tf.reshape(y, [1, T, N, D]), [0, 2, 1, 3]); // [1, N, T, D]
    };
    const [q, k] = [project('query'), project('key')];
    const mask = s.kind === 'local-global'
      ? tf.tensor2d(Array.from({length: T * T}, (_, n) => {
        const [i, j] = [Math.floor(n / T), n % T];
        return Math.abs(i - j) <= WINDOW || GLOBALS.includes(j) ? 1 : 0;
      }), [T, T], 'bool')
      : null;
    return scaledDotProductAttention(q, k, k, {mask, returnWeights: true}).weights; // [1, H, T, T]
  });
  const values = await weights.data() as Float32Array;
  const H = weights.shape[1] as number;
  weights.dispose();
  const maps = Array.from({length: H}, (_, h) => values.slice(h * T * T, (h + 1) * T * T));
  const notes: Record<string, string> = {
    mha: 'The weights the layer computes (returnAttentionScores).',
    gqa: 'The weights the layer computes (returnAttentionScores); heads in pairs share keys.',
    flash: 'FlashAttention never forms the weights (it tiles an online softmax); these are the same softmax ' +
      'weights, computed on the side from its q and k.',
    linear: 'LinearAttention never forms the weights (random features replace the softmax); shown: the softmax ' +
      'weights of its q and k, which it approximates.',
    'local-global': `LocalGlobalAttention never forms one weight matrix (a window of |i - j| <= ${WINDOW} and global ` +
      `position ${GLOBALS.join(', ')}, blended by a learned gate); shown: the softmax over the keys it may see.`,
  };
  return {maps, T, note: notes[s.kind]};
}

function label(token: number): string {
  return token === SEP ? '|' : token === BLANK ? '_' : String(token - FIRST_SYMBOL);
}

function drawHeatmaps(maps: Float32Array[], T: number, tokens: number[]): void {
  const root = $('heatmaps');
  root.replaceChildren();
  const cell = Math.max(14, Math.min(30, Math.floor(220 / T)));
  const margin = 16;
  maps.forEach((m, h) => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = margin + cell * T;
    const g = canvas.getContext('2d')!;
    g.font = `${Math.min(12, cell - 2)}px ui-monospace, monospace`;
    g.fillStyle = '#667085';
    g.textAlign = 'center';
    tokens.forEach((t, i) => {
      g.fillText(label(t), margin + cell * i + cell / 2, 12);
      g.fillText(label(t), 7, margin + cell * i + cell / 2 + 4);
    });
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) {
        const v = Math.min(1, Math.max(0, m[i * T + j]));
        // white -> the accent blue, brighter for more weight
        const mix = (a: number, b: number) => Math.round(a + (b - a) * Math.sqrt(v));
        g.fillStyle = `rgb(${mix(244, 30)}, ${mix(246, 50)}, ${mix(252, 190)})`;
        g.fillRect(margin + cell * j, margin + cell * i, cell - 1, cell - 1);
      }
    }
    const figure = document.createElement('figure');
    const caption = document.createElement('figcaption');
    caption.textContent = `head ${h + 1}`;
    figure.append(canvas, caption);
    root.append(figure);
  });
}

async function refresh(): Promise<string> {
  const s = state;
  if (s == null) return '';
  const digits = digitsOf($<HTMLInputElement>('input').value);
  const {tokens, answers} = encode(s.task, digits);
  const got = await predict(tokens, answers);
  if (state !== s) return ''; // a new model replaced (and disposed) this one meanwhile
  const want = expected(s.task, digits);
  const text = got.map((d) => (d >= 0 && d <= 9 ? String(d) : '?')).join('');
  $('prediction').textContent = text;
  $('expected').textContent = text === want.join('') ? '✓ correct' : `(expected ${want.join('')})`;
  const {maps, T, note} = await headWeights(tokens);
  if (state !== s) return '';
  drawHeatmaps(maps, T, tokens);
  $('heads-note').textContent = note;
  return text;
}

function describeTask(): void {
  const help: Record<string, string> = {
    reverse: `Type ${LENGTH} digits; the model answers them reversed.`,
    sort: `Type ${LENGTH} digits; the model answers them sorted ascending.`,
    copy: `Type ${LENGTH} digits; the model reads them, a separator and ${LENGTH} blanks, and fills the blanks.`,
  };
  $('task-help').textContent = help[$<HTMLSelectElement>('task').value];
}

async function start(steps: number): Promise<void> {
  const kind = $<HTMLSelectElement>('kind').value as AttentionKind;
  const task = $<HTMLSelectElement>('task').value as TaskName;
  state = newState(kind, task);
  ($('train') as HTMLButtonElement).disabled = true;
  ($('stop') as HTMLButtonElement).disabled = false;
  try {
    await trainSteps(steps);
  } finally {
    ($('train') as HTMLButtonElement).disabled = false;
    ($('stop') as HTMLButtonElement).disabled = true;
  }
}

/** Counts the pixels of a canvas that are not transparent. */
function ink(canvas: HTMLCanvasElement): number {
  const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
  return n;
}

async function init(): Promise<void> {
  // ?backend=wasm (or webgl, webgpu, cpu) overrides the choice of the best one available.
  const wanted = (new URLSearchParams(location.search).get('backend') ?? 'auto') as Parameters<typeof selectBackend>[0];
  try {
    backend = await selectBackend(wanted);
  } catch (e) {
    $('backend').textContent = `backend: ${(e as Error).message}`;
    throw e;
  }
  $('backend').textContent = `backend: ${backend}`;
  describeTask();
  drawLoss([]);
  $('task').addEventListener('change', describeTask);
  $('train').addEventListener('click', () => void start(Number($<HTMLInputElement>('steps').value) || 300));
  $('stop').addEventListener('click', () => { if (state != null) state.stop = true; });
  $('input').addEventListener('input', () => void refresh());
  // For the browser test: train `steps` steps (of `kind` on `task`, else the current choices) and report
  // what was drawn.
  (window as unknown as {demo: unknown}).demo = {
    async test({steps, kind, task}: {steps: number; kind?: AttentionKind; task?: TaskName}) {
      $<HTMLInputElement>('steps').value = String(steps);
      if (kind != null) $<HTMLSelectElement>('kind').value = kind;
      if (task != null) {
        $<HTMLSelectElement>('task').value = task;
        describeTask();
      }
      await start(steps);
      const prediction = await refresh();
      const heatmaps = Array.from(document.querySelectorAll<HTMLCanvasElement>('#heatmaps canvas'));
      return {backend, losses: state!.losses, chartInk: ink($<HTMLCanvasElement>('loss')),
        heatmaps: heatmaps.length, heatmapInk: heatmaps.map(ink), prediction};
    },
  };
}

void init();
