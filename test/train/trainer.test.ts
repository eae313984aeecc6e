// The training harness: the attentionLayer factory, buildTransformer with every attention
// kind (one step moves every weight, 50 steps lower the loss), the learning-rate schedule,
// checkpoints (a stopped run resumed == an uninterrupted one; atomic saves; corrupt files),
// and a flat tensor count across steps.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {
  ATTENTION_KINDS, attentionLayer, buildTransformer, FlashAttention, LinearAttention, LocalGlobalAttention,
  MultiHeadAttention,
} from '../../src';
import {loadCheckpoint, saveCheckpoint} from '../../src/train/checkpoint';
import {makeToyTask} from '../../src/train/tasks';
import {maskedLoss} from '../../src/train/losses';
import {train} from '../../src/train/trainer';
import {learningRateAt, TrainOptions} from '../../src/train/train_options';
import {expectError, maxDiff, title} from '../support/helpers';

const small = {modelDim: 16, numHeads: 2, numLayers: 1, ffDim: 32};
// (The window covers the 6 positions of the reverse task: a smaller one could not learn it.)
const argsFor = (kind: string) => (kind === 'local-global' ? {windowSize: 5, globalIndices: [0], blockSize: 5} : {});

describe(title('attentionLayer'), () => {
  test('builds each kind with its class; gqa has fewer kv heads, mha as many', () => {
    const classes = [MultiHeadAttention, MultiHeadAttention, FlashAttention, LinearAttention, LocalGlobalAttention];
    ATTENTION_KINDS.forEach((kind, i) => {
      const layer = attentionLayer(kind, {numHeads: 4, numKvHeads: kind === 'gqa' ? 2 : undefined, ...argsFor(kind)});
      expect(layer).toBeInstanceOf(classes[i]);
      expect(layer.numKvHeads).toBe(kind === 'gqa' ? 2 : 4);
    });
  });

  test.each([
    ['an unknown kind', () => attentionLayer('sparse' as never, {numHeads: 2}), /kind must be one of 'mha', 'gqa'/],
    ['an argument of another kind', () => attentionLayer('mha', {numHeads: 2, windowSize: 3}),
      /attention kind 'mha' does not take 'windowSize' \('local-global' does\)/],
    ['an argument no kind takes', () => attentionLayer('flash', {numHeads: 2, foo: 1} as never),
      /attention kind 'flash' does not take 'foo' \(no attention kind does\)/],
    ['gqa without fewer kv heads', () => attentionLayer('gqa', {numHeads: 4, numKvHeads: 4}),
      /'gqa' needs numKvHeads smaller than numHeads \(4\), received 4/],
    ['mha with fewer kv heads', () => attentionLayer('mha', {numHeads: 4, numKvHeads: 2}), /use 'gqa' for fewer/],
    ['local-global without a window', () => attentionLayer('local-global', {numHeads: 2}), /windowSize must be a positive integer/],
    ['a bad value for the kind', () => attentionLayer('linear', {numHeads: 2, numFeatures: 0}), /numFeatures must be a positive integer/],
  ])('rejects %s with INVALID_CONFIG', (_, fn, message) => {
    expectError(fn, 'INVALID_CONFIG', message);
  });
});

describe(title('buildTransformer and training'), () => {
  const task = makeToyTask('reverse', {length: 6, vocabSize: 8});

  test.each([0, 1, 7])('the same seed (%i) builds the same initial weights; another seed others', (seed) => {
    const build = (s: number) => buildTransformer({attention: 'gqa', vocabSize: 8, seqLength: 6, ...small, numKvHeads: 1, seed: s});
    const [a, b, c] = [build(seed), build(seed), build(seed + 1)];
    const [wa, wb, wc] = [a, b, c].map((m) => m.getWeights());
    wa.forEach((w, i) => expect(maxDiff(w, wb[i])).toBe(0));
    expect(maxDiff(wa[0], wc[0])).toBeGreaterThan(1e-3); // the token embedding, drawn first
    [a, b, c].forEach((m) => m.dispose());
  });

  for (const kind of ATTENTION_KINDS) {
    test(`${kind}: one Adam step moves every trainable weight; 50 steps lower the loss`, async () => {
      const model = buildTransformer({attention: kind, vocabSize: 8, seqLength: 6, ...small,
        numKvHeads: kind === 'gqa' ? 1 : undefined, attentionArgs: argsFor(kind)});
      expect(model.outputs[0].shape).toEqual([null, 6, 8]);
      const vars = model.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val);
      const before = vars.map((v) => v.clone());
      const optimizer = tf.train.adam(0.01);
      const losses: number[] = [];
      for (let s = 0; s < 50; s++) {
        const batch = task.batch(16, 0, s);
        losses.push(tf.tidy(() => {
          const x = tf.tensor2d(batch.inputs, [batch.n, batch.L], 'int32');
          const {value, grads} = tf.variableGrads(() => maskedLoss(model.apply(x) as tf.Tensor, batch, 8), vars);
          optimizer.applyGradients(grads as unknown as Parameters<typeof optimizer.applyGradients>[0]);
          return value.dataSync()[0];
        }));
        if (s === 0) {
          // The key bias of exact softmax attention has a zero gradient (it shifts a whole row of logits).
          vars.forEach((v, i) => {
            if (/key\/bias/.test(v.name) && kind !== 'linear') return;
            if (!(maxDiff(v, before[i]) > 0)) throw new Error(`${v.name} did not move`);
          });
        }
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b) / xs.length;
      expect(mean(losses.slice(-5))).toBeLessThan(0.8 * mean(losses.slice(0, 5)));
      tf.dispose(before);
      optimizer.dispose();
      model.dispose();
    });
  }

  test('dropout draws a new mask on every training call (no fixed seed), none at inference', () => {
    tf.tidy(() => {
      const model = buildTransformer({attention: 'mha', vocabSize: 8, seqLength: 6, ...small, dropout: 0.5});
      const x = tf.tensor2d([[2, 3, 4, 5, 6, 7]], [1, 6], 'int32');
      const [a, b] = [0, 1].map(() => model.apply(x, {training: true}) as tf.Tensor);
      expect(maxDiff(a, b)).toBeGreaterThan(1e-4);
      expect(maxDiff(model.apply(x) as tf.Tensor, model.apply(x) as tf.Tensor)).toBe(0);
      model.dispose();
    });
  });

  test('the learning rate warms up linearly, then decays by a cosine to the floor', () => {
    const o = {learningRate: 1, warmupSteps: 10, minLearningRateRatio: 0.1, steps: 110};
    expect(learningRateAt(0, o)).toBeCloseTo(0.1, 12);
    expect(learningRateAt(9, o)).toBeCloseTo(1, 12);
    expect(learningRateAt(60, o)).toBeCloseTo(0.55, 12); // half way: (1 + 0.1) / 2
    expect(learningRateAt(110, o)).toBeCloseTo(0.1, 12);
    for (let s = 10; s < 110; s++) expect(learningRateAt(s + 1, o)).toBeLessThanOrEqual(learningRateAt(s, o));
  });

  test.each([
    [{steps: 0}, /steps must be a positive integer, received 0/],
    [{learningRate: -1}, /learningRate must be a positive finite number, received -1/],
    [{minLearningRateRatio: 2}, /minLearningRateRatio must be in \[0, 1\], received 2/],
    [{task: 'nope'}, /task must be one of/],
  ])('train rejects %j with INVALID_CONFIG', async (bad, message) => {
    const options = {task: 'reverse', model: {attention: 'mha' as const, ...small}, ...bad};
    await expect(train(options as TrainOptions)).rejects.toThrow(message);
  });
});

describe(title('checkpoints'), () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-train-')); });
  afterEach(() => fs.rmSync(dir, {recursive: true, force: true}));

  const options = (outDir: string): TrainOptions => ({
    task: 'copy', taskOptions: {length: 3, vocabSize: 7}, model: {attention: 'gqa', ...small, numKvHeads: 1},
    steps: 12, batchSize: 8, warmupSteps: 3, evalEvery: 4, evalBatches: 1, seed: 5, outDir,
  });
  const weightsOf = (m: tf.LayersModel) => m.getWeights().map((w) => w.clone());

  test('a run stopped after 5 steps and resumed ends with the weights of an uninterrupted run', async () => {
    const whole = await train(options(path.join(dir, 'whole')));
    const stopped = await train({...options(path.join(dir, 'part')), stopAfter: 5});
    expect(stopped.record.step).toBe(5);
    expect(stopped.record.finished).toBe(false);
    stopped.model.dispose();
    const resumed = await train(options(path.join(dir, 'part')), {}, path.join(dir, 'part'));
    expect(resumed.record.step).toBe(12);
    expect(resumed.record.finished).toBe(true);
    const [a, b] = [weightsOf(whole.model), weightsOf(resumed.model)];
    a.forEach((w, i) => expect(maxDiff(w, b[i])).toBeLessThan(1e-5));
    // Exactly, in fact: Adam's beta powers are restored as the uninterrupted run computed them.
    a.forEach((w, i) => expect(maxDiff(w, b[i])).toBe(0));
    expect(resumed.record.history.map((h) => h.step)).toEqual([4, 8, 12]);
    resumed.record.history.forEach((h, i) => expect(h.loss).toBeCloseTo(whole.record.history[i].loss, 4));
    // ... and a run of other data ends elsewhere, so the check can fail.
    const other = await train({...options(path.join(dir, 'other')), seed: 6});
    expect(Math.max(...weightsOf(other.model).map((w, i) => maxDiff(w, a[i])))).toBeGreaterThan(1e-3);
    tf.dispose([a, b]);
    [whole, resumed, other].forEach((r) => r.model.dispose());
  });

  test('a finished run resumed for more steps is unfinished until it ends; saving leaks no tensor', async () => {
    const out = path.join(dir, 'again');
    const first = await train({...options(out), steps: 4});
    expect(first.record.finished).toBe(true);
    const optimizer = tf.train.adam(0.1); // (its own beta-power variables exist from here)
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await saveCheckpoint(path.join(dir, 'copy'), first.model, optimizer, first.record);
    expect(tf.memory().numTensors).toBe(before);
    optimizer.dispose();
    first.model.dispose();
    const more = await train({...options(out), steps: 8, stopAfter: 6}, {}, out);
    expect([more.record.step, more.record.finished]).toEqual([6, false]);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'training.json'), 'utf8')).finished).toBe(false);
    more.model.dispose();
  });

  test('training keeps the tensor count flat across steps', async () => {
    const counts: number[] = [];
    const {model} = await train({...options(''), steps: 8}, {onStep: () => counts.push(tf.memory().numTensors)});
    expect(new Set(counts.slice(1)).size).toBe(1);
    model.dispose();
  });

  test('a failed save leaves the previous checkpoint whole; corrupt files are IO errors', async () => {
    const out = path.join(dir, 'ckpt');
    const {model} = await train({...options(out), steps: 4});
    const good = fs.readFileSync(path.join(out, 'weights.bin'));
    // A save that fails half way (the optimizer state cannot be read) changes nothing on disk.
    const broken = {getWeights: () => Promise.reject(new Error('disk full'))} as unknown as tf.Optimizer;
    await expect(saveCheckpoint(out, model, broken, {} as never)).rejects.toThrow(/cannot write checkpoint .*disk full/);
    expect(fs.readFileSync(path.join(out, 'weights.bin')).equals(good)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['ckpt']);
    const restored = await loadCheckpoint(out);
    restored.model.dispose();
    tf.dispose(restored.optimizerWeights.map((w) => w.tensor));
    // (Issue 13: the DIR.old-* sibling scheme is gone, so its part of this test went with it;
    // test/train/checkpoint_kill.test.ts kills saves at random instants instead.)
    // Truncated weights.bin, corrupt training.json: AttentionError('IO') naming the file.
    fs.writeFileSync(path.join(out, 'weights.bin'), good.subarray(0, good.length - 8));
    await expect(loadCheckpoint(out)).rejects.toMatchObject({code: 'IO'});
    await expect(loadCheckpoint(out)).rejects.toThrow(/corrupt weights .* hold \d+ bytes but model.json lists \d+/);
    fs.writeFileSync(path.join(out, 'weights.bin'), good);
    fs.writeFileSync(path.join(out, 'training.json'), '{"format": 1,');
    await expect(loadCheckpoint(out)).rejects.toThrow(/corrupt training.json/);
    model.dispose();
  });
});
