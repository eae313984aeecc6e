// The n-body network: its inputs (complete graph, speeds, [q_i q_j, |x_i - x_j|^2]), its layers
// and seeding, E(3) equivariance of the whole model, training with train() (MSE records, a
// checkpoint that loads and evaluates alike) and through the CLI (train, eval with the
// baselines, inspect; predict and generate refused; flags of other tasks refused).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {loadModel, readTrainingRecord} from '../../src/train/checkpoint';
import {buildNBodyNetwork, completeGraph, NBODY_OBJECTIVE, nbodyInputs} from '../../src/train/nbody_network';
import {makeNBodyTask} from '../../src/train/nbody_task';
import {train} from '../../src/train/trainer';
import {expectClose, expectError, title} from '../support/helpers';
import {cli} from '../support/cli_helper';

/** A random orthogonal 3 x 3 matrix (Gram-Schmidt of seeded columns), a reflection when `reflect`. */
function orthogonal(seed: number, reflect: boolean): number[][] {
  // Entries of one sine sequence would span only 2 dimensions: the phase is quadratic in (c, r).
  const cols = [0, 1, 2].map((c) => [0, 1, 2].map((r) =>
    Math.sin((seed + 1) * (c + 1) * 12.9898 + (r + 1) * (r + c + 2) * 78.233)));
  const q: number[][] = [];
  for (const v of cols) {
    const u = v.slice();
    for (const w of q) {
      const dot = u.reduce((s, x, i) => s + x * w[i], 0);
      for (let i = 0; i < 3; i++) u[i] -= dot * w[i];
    }
    const norm = Math.hypot(...u);
    q.push(u.map((x) => x / norm));
  }
  if (reflect) q[2] = q[2].map((x) => -x);
  for (const a of q) {
    for (const b of q) expect(Math.abs(a.reduce((s, x, i) => s + x * b[i], 0) - (a === b ? 1 : 0))).toBeLessThan(1e-12);
  }
  return q; // rows of Q^T = columns of Q
}

describe(title('n-body network'), () => {
  test('inputs: the complete graph without self loops, speeds |v_i|, edge attributes [q_i q_j, |x_i - x_j|^2]', () => {
    const N = 4;
    const edges = completeGraph(N);
    expect(edges.length).toBe(N * (N - 1) * 2);
    const pairs = new Set<string>();
    for (let e = 0; e < N * (N - 1); e++) {
      expect(edges[e * 2]).not.toBe(edges[e * 2 + 1]);
      pairs.add(`${edges[e * 2]},${edges[e * 2 + 1]}`);
    }
    expect(pairs.size).toBe(N * (N - 1));
    const x = Float32Array.from({length: N * 3}, (_, k) => Math.cos(k));
    const v = Float32Array.from({length: N * 3}, (_, k) => Math.sin(k));
    const q = Float32Array.from([1, -1, -1, 1]);
    const [pos, vel, speeds, e, attr] = nbodyInputs(x, v, q, 1, N);
    expect(pos.shape).toEqual([1, N, 3]);
    expect(vel.shape).toEqual([1, N, 3]);
    expect(e.dtype).toBe('int32');
    const s = speeds.dataSync();
    for (let i = 0; i < N; i++) expect(s[i]).toBeCloseTo(Math.hypot(v[i * 3], v[i * 3 + 1], v[i * 3 + 2]), 5);
    const a = attr.dataSync();
    for (let k = 0; k < N * (N - 1); k++) {
      const j = edges[k * 2], i = edges[k * 2 + 1];
      expect(a[k * 2]).toBe(q[i] * q[j]);
      const d2 = [0, 1, 2].reduce((t, c) => t + (x[i * 3 + c] - x[j * 3 + c]) ** 2, 0);
      expect(a[k * 2 + 1]).toBeCloseTo(d2, 5);
    }
    tf.dispose([pos, vel, speeds, e, attr]);
  });

  test('the model: 4 EquivariantAttention layers on velocities, [n, N, 3] out; a seed fixes its weights', () => {
    const a = buildNBodyNetwork({attention: 'equivariant', seqLength: 5, modelDim: 16, seed: 3});
    const b = buildNBodyNetwork({attention: 'equivariant', seqLength: 5, modelDim: 16, seed: 3});
    const c = buildNBodyNetwork({attention: 'equivariant', seqLength: 5, modelDim: 16, seed: 4});
    expect(a.layers.filter((l) => l.getClassName() === 'EquivariantAttention')).toHaveLength(4);
    expect(a.outputs[0].shape).toEqual([null, 5, 3]);
    a.getWeights().forEach((w, i) => expectClose(w, b.getWeights()[i], 0));
    expect(a.getWeights().some((w, i) => w.shape.length === 2 &&
      tf.max(tf.abs(tf.sub(w, c.getWeights()[i]))).dataSync()[0] > 0)).toBe(true);
    tf.dispose([a, b, c].map((m) => m.dispose()) as never);
    expectError(() => buildNBodyNetwork({attention: 'equivariant', seqLength: 5, hidden: 3} as never), 'INVALID_CONFIG',
      /hidden/);
    expectError(() => buildNBodyNetwork({attention: 'mha', seqLength: 5} as never), 'INVALID_CONFIG',
      /an n-body network's attention is 'equivariant', received 'mha'/);
  });

  test('the whole model is E(3)-equivariant: rotating or reflecting and translating the input moves the output alike', () => {
    const model = buildNBodyNetwork({attention: 'equivariant', seqLength: 5, modelDim: 16, numLayers: 2, seed: 1});
    const task = makeNBodyTask({trainExamples: 4, validationExamples: 4, testExamples: 4});
    const batch = task.batch(4, 0, 0, 'validation');
    const {positions, velocities, charges} = batch.values!;
    const apply = (q: number[][], t: number[], x: Float32Array) => Float32Array.from(x, (_, k) => {
      const i = k - (k % 3);
      return [0, 1, 2].reduce((s, c) => s + q[c][k % 3] * x[i + c], 0) + t[k % 3];
    });
    const predict = (x: Float32Array, v: Float32Array) => tf.tidy(() =>
      model.predict(nbodyInputs(x, v, charges, 4, 5)) as tf.Tensor);
    const base = predict(positions, velocities);
    for (const reflect of [false, true]) {
      const q = orthogonal(reflect ? 2 : 1, reflect);
      const t = [0.3, -1.2, 2];
      const moved = predict(apply(q, t, positions), apply(q, [0, 0, 0], velocities));
      const expected = tf.tensor(apply(q, t, base.dataSync() as Float32Array), base.shape);
      expect(tf.max(tf.abs(tf.sub(moved, expected))).dataSync()[0]).toBeLessThan(1e-4);
      tf.dispose([moved, expected]);
    }
    base.dispose();
    model.dispose();
  });

  test('train(): the MSE falls, the record keeps losses only, and the checkpoint loads and evaluates alike', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbody-'));
    try {
      const before = tf.memory().numTensors;
      const {model, record} = await train({task: 'nbody', taskOptions: {trainExamples: 40, validationExamples: 20,
        testExamples: 20}, model: {attention: 'equivariant', modelDim: 8, numLayers: 2}, steps: 8, batchSize: 10,
      learningRate: 3e-3, warmupSteps: 2, evalEvery: 4, evalBatches: 2, outDir: dir});
      expect(record.history.map((m) => m.step)).toEqual([4, 8]);
      for (const m of record.history) {
        expect(Object.keys(m).sort()).toEqual(['loss', 'step']);
        expect(Number.isFinite(m.loss)).toBe(true);
      }
      const task = makeNBodyTask({trainExamples: 40, validationExamples: 20, testExamples: 20});
      const untrained = buildNBodyNetwork({attention: 'equivariant', seqLength: 5, modelDim: 8, numLayers: 2, seed: 0});
      const start = await NBODY_OBJECTIVE.evaluate(untrained, task, 0, 10, 2);
      expect(record.history[1].loss).toBeLessThan(start.loss);
      const loaded = await loadModel(dir);
      const again = await NBODY_OBJECTIVE.evaluate(loaded, task, 0, 10, 2);
      expect(Math.abs(again.loss - record.history[1].loss)).toBeLessThan(1e-6);
      expect(readTrainingRecord(dir).model).toEqual({attention: 'equivariant', seqLength: 5, modelDim: 8, numLayers: 2,
        seed: 0});
      // Batches the task cannot give are refused before the first step.
      await expect(train({task: 'nbody', taskOptions: {trainExamples: 40, validationExamples: 20, testExamples: 20},
        model: {attention: 'equivariant'}, batchSize: 10, evalBatches: 3})).rejects.toThrow(
        /evalBatches 3 of batchSize 10 read 30 validation systems, and there are 20/);
      tf.dispose([model, untrained, loaded].map((m) => m.dispose()) as never);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      fs.rmSync(dir, {recursive: true, force: true});
    }
  });

  test('CLI: train --task nbody, eval (test MSE beside the baselines), inspect; predict, generate and foreign flags refused',
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbody-cli-'));
      const out = path.join(dir, 'model');
      try {
        const trained = await cli('train', '--task', 'nbody', '--train-examples', '20', '--validation-examples', '10',
          '--test-examples', '10', '--batch-size', '10', '--steps', '2', '--model-dim', '8', '--layers', '2',
          '--quiet', '--out', out);
        expect(trained.code).toBe(0);
        expect(trained.stdout).toMatch(/^trained equivariant on nbody \(wasm\): 2 steps in [\d.]+ s, validation loss [\d.]+, \d+ parameters/);
        const evaluated = await cli('eval', '--model', out);
        expect(evaluated.code).toBe(0);
        const r = JSON.parse(evaluated.stdout);
        expect(r).toMatchObject({task: 'nbody', examples: 10, trainingExamples: 20});
        expect(r.testMse).toBeGreaterThan(0);
        expect(Object.keys(r.baselines).sort()).toEqual(['fittedLine', 'fittedTime', 'noMotion', 'straightLine']);
        expect((await cli('inspect', '--model', out)).stdout).toMatch(/EquivariantAttention/);
        const predicted = await cli('predict', '--model', out, '--input', '2 3');
        expect(predicted.code).not.toBe(0);
        expect(predicted.stderr).toMatch(/predict reads one token sequence, and the model in this folder \(task nbody\) is made of EquivariantAttention/);
        const generated = await cli('generate', '--model', out, '--prompt', '2 3');
        expect(generated.stderr).toMatch(/generate reads one token sequence/);
        const foreign = await cli('train', '--task', 'nbody', '--nodes', '5', '--steps', '1', '--out', path.join(dir, 'x'));
        expect(foreign.stderr).toMatch(/--nodes is for --task graph-majority, not 'nbody'/);
        const particles = await cli('train', '--task', 'reverse', '--particles', '5', '--steps', '1', '--out', path.join(dir, 'y'));
        expect(particles.stderr).toMatch(/--particles is for --task nbody, not 'reverse'/);
        const attention = await cli('train', '--task', 'nbody', '--attention', 'gqa', '--steps', '1', '--out', path.join(dir, 'z'));
        expect(attention.stderr).toMatch(/--task nbody trains .*use --attention equivariant/);
        for (const [flag, value] of [['--heads', '2'], ['--dropout', '0.1'], ['--target-accuracy', '0.9']]) {
          const unread = await cli('train', '--task', 'nbody', flag, value, '--steps', '1', '--out', path.join(dir, 'u'));
          expect(unread.stderr).toMatch(new RegExp(`${flag} is not read by --task nbody`));
        }
        const batches = await cli('eval', '--model', out, '--batches', '2');
        expect(batches.stderr).toMatch(/--batches is not read for an nbody model: eval scores its whole test split/);
        expect(fs.existsSync(path.join(dir, 'u'))).toBe(false);
      } finally {
        fs.rmSync(dir, {recursive: true, force: true});
      }
    });

  test('CLI: train --task nbody defaults to the run of models/nbody (batches of 100, lr 1e-3, the whole validation split)',
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbody-defaults-'));
      const out = path.join(dir, 'model');
      try {
        const r = await cli('train', '--task', 'nbody', '--train-examples', '100', '--validation-examples', '200',
          '--test-examples', '10', '--steps', '1', '--model-dim', '4', '--layers', '1', '--quiet', '--out', out);
        expect(r.code).toBe(0);
        expect(readTrainingRecord(out).options).toMatchObject({batchSize: 100, learningRate: 1e-3, warmupSteps: 100,
          clipNorm: 0, evalEvery: 300, evalBatches: 2});
      } finally {
        fs.rmSync(dir, {recursive: true, force: true});
      }
    });
});
