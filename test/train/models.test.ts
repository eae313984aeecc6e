// The trained models in models/: one per attention kind, the graph network and the n-body
// network, each under 1 MB, each reaching its recorded accuracy (minus 0.02) on a fresh seeded
// evaluation set (the n-body network: its recorded MSE on test trajectories); the graph and
// n-body networks also well beyond the answers that ignore the graph or the forces.
import * as fs from 'fs';
import * as path from 'path';
import {ATTENTION_KINDS} from '../../src/layers/factory';
import {loadModel, readTrainingRecord} from '../../src/train/checkpoint';
import {GRAPH_TASK, makeTask, makeToyTask} from '../../src/train/tasks';
import {GraphTask, graphBaselines} from '../../src/train/graph_task';
import {nbodyTestError} from '../../src/train/nbody_network';
import {makeNBodyTask, NBODY_TASK, nbodyBaselines, NBodyTaskOptions} from '../../src/train/nbody_task';
import {EVAL_SEED_OFFSET, evaluate} from '../../src/train/evaluate';
import {title} from '../support/helpers';

const MODELS = path.join(__dirname, '..', '..', 'models');

describe(title('models/'), () => {
  for (const kind of ATTENTION_KINDS) {
    test(`models/${kind}: under 1 MB, its attention kind, recorded accuracy - 0.02 on a fresh seeded set`, async () => {
      const dir = path.join(MODELS, kind);
      const bytes = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
      expect(bytes).toBeLessThan(1024 * 1024);
      const record = readTrainingRecord(dir);
      expect(record.model.attention).toBe(kind);
      const recorded = record.history[record.history.length - 1].tokenAccuracy as number;
      const model = await loadModel(dir);
      const task = makeToyTask(record.task.name, record.options.taskOptions);
      const fresh = await evaluate(model, task, (record.options.seed ?? 0) + 1, 32, 4); // never trained or evaluated on
      expect(fresh.tokenAccuracy).toBeGreaterThanOrEqual(recorded - 0.02);
      model.dispose();
    });
  }

  test('models/graph: the graph-majority network, recorded accuracy - 0.02, well above the baselines', async () => {
    const dir = path.join(MODELS, 'graph');
    const bytes = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
    expect(bytes).toBeLessThan(1024 * 1024);
    const record = readTrainingRecord(dir);
    expect(record.model.attention).toBe('graph');
    expect(record.task.name).toBe(GRAPH_TASK);
    const recorded = record.history[record.history.length - 1].tokenAccuracy as number;
    const model = await loadModel(dir);
    expect(model.layers.filter((l) => l.getClassName() === 'GraphAttention')).toHaveLength(2);
    const task = makeTask(record.task.name, record.options.taskOptions) as GraphTask;
    const seed = (record.options.seed ?? 0) + 1;
    const fresh = await evaluate(model, task, seed, 32, 4);
    expect(fresh.tokenAccuracy).toBeGreaterThanOrEqual(recorded - 0.02);
    const base = graphBaselines(task, seed + EVAL_SEED_OFFSET, 32, 4);
    expect(fresh.tokenAccuracy).toBeGreaterThan(0.9);
    expect(fresh.tokenAccuracy).toBeGreaterThan(base.majority + 0.4);
    expect(fresh.tokenAccuracy).toBeGreaterThan(base.ownColour + 0.2);
    model.dispose();
  });

  test('models/nbody: the n-body network, its documented test MSE (below the paper\'s GNN), far below the straight lines',
    async () => {
      const dir = path.join(MODELS, 'nbody');
      const bytes = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
      expect(bytes).toBeLessThan(1024 * 1024);
      const record = readTrainingRecord(dir);
      expect(record.model.attention).toBe('equivariant');
      expect(record.task).toMatchObject({name: NBODY_TASK, particles: 5, trainExamples: 3000});
      const recorded = record.history[record.history.length - 1].loss;
      const model = await loadModel(dir);
      expect(model.layers.filter((l) => l.getClassName() === 'EquivariantAttention')).toHaveLength(4);
      // The first 200 test systems (each its own seeded stream, as in the split of 2,000 that `eval` scores): below
      // the paper's GNN (0.0107), near the last validation loss, far below the line fitted on 100 training systems.
      const task = makeNBodyTask({...record.options.taskOptions as NBodyTaskOptions, trainExamples: 100,
        testExamples: 200});
      const mse = await nbodyTestError(model, task);
      expect(mse).toBeLessThan(0.0107);
      expect(Math.abs(mse - recorded)).toBeLessThan(0.2 * recorded);
      expect(mse).toBeLessThan(nbodyBaselines(task).fittedLine / 8);
      model.dispose();
    });
});
