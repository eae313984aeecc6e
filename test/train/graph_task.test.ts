// The graph-majority task: deterministic for a seed, labels equal to a recomputation from
// the inputs and edges alone (reachability by repeated adjacency products), padding and
// ties unscored; the network trains with train() (checkpoint, resume) and through the CLI
// (train, eval with baselines, inspect), and the CLI refuses flags of other tasks.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {buildGraphNetwork} from '../../src/train/graph_network';
import {graphBaselines, makeGraphTask} from '../../src/train/graph_task';
import {BLANK, FIRST_SYMBOL, makeTask} from '../../src/train/tasks';
import {train} from '../../src/train/trainer';
import {expectError, title} from '../support/helpers';
import {cli} from '../support/cli_helper';

describe(title('graph-majority task'), () => {
  test('labels are the most common colour within `hops` upstream, recomputed from the inputs and edges', () => {
    for (const options of [{}, {nodes: 10, colours: 4, maxDegree: 2, hops: 3}, {nodes: 6, hops: 1}]) {
      const task = makeGraphTask(options);
      const {nodes: N, colours, maxDegree, hops} = task.options;
      const E = task.edgesPerExample;
      expect(E).toBe(N * maxDegree);
      expect(task.vocabSize).toBe(colours + 2);
      const batch = task.batch(8, 3, 1);
      const again = task.batch(8, 3, 1);
      expect(again.edges).toEqual(batch.edges);
      expect(again.targets).toEqual(batch.targets);
      expect(task.batch(8, 3, 2).edges).not.toEqual(batch.edges);
      let scored = 0;
      for (let r = 0; r < 8; r++) {
        const x = Array.from(batch.inputs.subarray(r * N, (r + 1) * N));
        const size = x.filter((t) => t !== BLANK).length;
        expect(x.slice(size).every((t) => t === BLANK)).toBe(true); // padding nodes last
        expect(size).toBeGreaterThanOrEqual(Math.ceil(N / 2));
        // reach[i][j]: j reaches i in at most `hops` edges (A^0 + ... + A^hops, by products).
        const adj = Array.from({length: N}, () => new Array(N).fill(0));
        const inDegree = new Array(N).fill(0);
        for (let e = 0; e < E; e++) {
          const s = batch.edges![(r * E + e) * 2];
          const t = batch.edges![(r * E + e) * 2 + 1];
          if (s === -1) { expect(t).toBe(-1); continue; }
          expect(s).not.toBe(t);
          expect(Math.max(s, t)).toBeLessThan(size);
          expect(adj[t][s]).toBe(0); // distinct sources
          adj[t][s] = 1;
          inDegree[t]++;
        }
        for (let i = 0; i < size; i++) expect(inDegree[i]).toBeGreaterThanOrEqual(1);
        for (let i = 0; i < size; i++) expect(inDegree[i]).toBeLessThanOrEqual(maxDegree);
        let reach = adj.map((row, i) => row.map((_, j) => (i === j ? 1 : 0)));
        for (let h = 0; h < hops; h++) {
          reach = reach.map((row, i) => row.map((v, j) => (v || adj[i].some((a, k) => a && reach[k][j]) ? 1 : 0)));
        }
        for (let i = 0; i < N; i++) {
          const w = batch.weights[r * N + i];
          if (i >= size) { expect(w).toBe(0); continue; }
          const counts = new Array(colours).fill(0);
          reach[i].forEach((v, j) => { if (v) counts[x[j] - FIRST_SYMBOL]++; });
          const top = Math.max(...counts);
          const tie = counts.filter((c) => c === top).length > 1;
          expect(w).toBe(tie ? 0 : 1);
          if (!tie) expect(batch.targets[r * N + i]).toBe(FIRST_SYMBOL + counts.indexOf(top));
          scored += w;
        }
      }
      expect(scored).toBeGreaterThan(8 * N * 0.3);
    }
  });

  test('the baselines that ignore the graph are far from perfect; bad options are refused', () => {
    const base = graphBaselines(makeGraphTask(), 5, 32, 2);
    expect(base.majority).toBeGreaterThan(0.3);
    expect(base.majority).toBeLessThan(0.5);
    expect(base.ownColour).toBeLessThan(0.75);
    expect(makeTask('graph-majority', {nodes: 6}).seqLength).toBe(6);
    expectError(() => makeGraphTask({nodes: 1}), 'INVALID_CONFIG', /at least 2 nodes/);
    expectError(() => makeGraphTask({hop: 2} as never), 'INVALID_CONFIG', /did you mean 'hops'/);
    expectError(() => buildGraphNetwork({attention: 'graph', vocabSize: 5, seqLength: 4, edgesPerExample: 8, modelDim: 6,
      numHeads: 4}), 'INVALID_CONFIG', /modelDim \(6\) must be divisible by numHeads \(4\)/);
  });
});

describe(title('graph-majority training'), () => {
  let dir: string;
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-graph-')); });
  afterAll(() => fs.rmSync(dir, {recursive: true, force: true}));

  test('train() lowers the loss, checkpoints, and a resumed run equals an uninterrupted one', async () => {
    const options = {task: 'graph-majority', taskOptions: {nodes: 6, maxDegree: 2},
      model: {attention: 'graph' as const, modelDim: 8, numHeads: 2, numLayers: 2}, steps: 6, batchSize: 8,
      learningRate: 1e-2, warmupSteps: 1, evalEvery: 3, evalBatches: 1};
    const before = tf.memory().numTensors;
    const whole = await train(options);
    expect(whole.record.model).toMatchObject({attention: 'graph', seqLength: 6, edgesPerExample: 12, vocabSize: 5});
    expect(whole.record.history[1].loss).toBeLessThan(whole.record.history[0].loss);
    const out = path.join(dir, 'run');
    const first = await train({...options, outDir: out, stopAfter: 3});
    first.model.dispose();
    const resumed = await train({...options, outDir: out}, {}, out);
    expect(resumed.record.step).toBe(6);
    const a = whole.model.getWeights();
    const b = resumed.model.getWeights();
    a.forEach((w, i) => expect(tf.tidy(() => tf.max(tf.abs(tf.sub(w, b[i]))).dataSync()[0])).toBe(0));
    whole.model.dispose();
    resumed.model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  test('cli: train --task graph-majority, eval reports the baselines, inspect; flags of other tasks are refused', async () => {
    const backend = tf.getBackend();
    const out = path.join(dir, 'cli');
    const trained = await cli('train', '--task', 'graph-majority', '--nodes', '6', '--max-degree', '2', '--model-dim', '8',
      '--heads', '2', '--steps', '2', '--batch-size', '4', '--eval-batches', '1', '--graph-version', 'gatv2', '--quiet',
      '--backend', backend, '--out', out);
    expect(trained.code).toBe(0);
    expect(trained.stdout).toMatch(/^trained graph on graph-majority/);
    const evaluated = await cli('eval', '--model', out, '--batches', '1', '--backend', backend);
    expect(evaluated.code).toBe(0);
    const metrics = JSON.parse(evaluated.stdout);
    expect(metrics).toMatchObject({task: 'graph-majority', examples: 32});
    expect(metrics.baselines.majority).toBeGreaterThan(0);
    expect(metrics.baselines.ownColour).toBeGreaterThan(0);
    const inspected = await cli('inspect', '--model', out, '--backend', backend);
    expect(inspected.stdout).toMatch(/block1_graph \(GraphAttention\)/);
    const predicted = await cli('predict', '--model', out, '--input', '2 3', '--backend', backend);
    expect(predicted).toMatchObject({code: 2});
    expect(predicted.stderr).toMatch(/predict reads one token sequence, and the model in this folder \(task graph-majority\) is made of GraphAttention layers/);
    for (const [argv, message] of [
      [['--task', 'graph-majority', '--attention', 'mha'], /use --attention graph/],
      [['--task', 'copy', '--attention', 'graph'], /--attention graph is for --task graph-majority/],
      [['--task', 'copy', '--hops', '3'], /--hops is for --task graph-majority/],
      [['--task', 'graph-majority', '--length', '3'], /--length is not an option of --task graph-majority/],
      [['--task', 'graph-majority', '--window', '3'], /--window is for --attention local-global/],
    ] as [string[], RegExp][]) {
      const r = await cli('train', ...argv, '--steps', '1', '--out', path.join(dir, 'never'));
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });
});
