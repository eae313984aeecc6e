// Checkpoint folders (train/checkpoint.ts over io/folder.ts): the user's other files stay,
// model.json names the checkpoint's own files, legacy folders (no `checkpoint` field) are
// read and replaced, a save without Adam's state drops the old one, a plain model.save
// over a checkpoint touches only the model, train --out FILE is refused, and no leaks.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {registerFileRouter} from '../../src/io/file_system';
import {loadCheckpoint, loadModel, readTrainingRecord, saveCheckpoint} from '../../src/train/checkpoint';
import {train} from '../../src/train/trainer';
import {TrainOptions} from '../../src/train/train_options';
import {title} from '../support/helpers';

registerFileRouter();

const OWN = ['model.json', 'optimizer.bin', 'optimizer.json', 'training.json', 'weights.bin'];
const options = (outDir: string, steps = 3): TrainOptions => ({
  task: 'copy', taskOptions: {length: 3, vocabSize: 6}, model: {attention: 'gqa', modelDim: 8, numHeads: 2, numKvHeads: 1,
    numLayers: 1}, steps, batchSize: 4, warmupSteps: 2, evalEvery: 10, evalBatches: 1, seed: 3, outDir,
});
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));
const modelJson = (dir: string) => readJson(path.join(dir, 'model.json'));

describe(title('checkpoint folders'), () => {
  let root: string;
  beforeEach(() => { root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-ckpt-folder-')); });
  afterEach(() => fs.rmSync(root, {recursive: true, force: true}));

  /** The user's own files in dir (created with it); returns a checker that they are intact. */
  function userFiles(dir: string): () => void {
    fs.mkdirSync(path.join(dir, 'plots'), {recursive: true});
    fs.writeFileSync(path.join(dir, 'notes.md'), 'run notes');
    fs.writeFileSync(path.join(dir, 'plots', 'loss.svg'), '<svg/>');
    return () => {
      expect(fs.readFileSync(path.join(dir, 'notes.md'), 'utf8')).toBe('run notes');
      expect(fs.readFileSync(path.join(dir, 'plots', 'loss.svg'), 'utf8')).toBe('<svg/>');
    };
  }

  test('train --out keeps the other files; model.json names the checkpoint files; tfjs reads it', async () => {
    const dir = path.join(root, 'ckpt');
    const intact = userFiles(dir);
    const {model, record} = await train({...options(dir), checkpointEvery: 1});
    intact();
    expect(fs.readdirSync(dir).sort()).toEqual([...OWN.slice(0, 1), 'notes.md', ...OWN.slice(1), 'plots'].sort());
    expect(modelJson(dir).checkpoint).toEqual({format: 1, step: 3, training: 'training.json',
      optimizer: {specs: 'optimizer.json', weights: 'optimizer.bin'}});
    expect(readTrainingRecord(dir).step).toBe(record.step);
    const viaTfjs = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(viaTfjs.countParams()).toBe(model.countParams());
    // Resuming and saving again keeps them too.
    const more = await train({...options(dir), steps: 5}, {}, dir);
    intact();
    expect(readTrainingRecord(dir).step).toBe(5);
    // A training.json from another save than model.json (copied in by hand) is refused.
    const file = path.join(dir, 'training.json');
    const good = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, JSON.stringify({...JSON.parse(good), step: 4}));
    expect(() => readTrainingRecord(dir)).toThrow(/model.json records step 5 but training.json step 4/);
    await expect(loadCheckpoint(dir)).rejects.toMatchObject({code: 'IO'});
    fs.writeFileSync(file, good);
    [model, viaTfjs, more.model].forEach((m) => m.dispose());
  });

  test('a legacy checkpoint (no checkpoint field) is read, resumed and replaced by canonical files', async () => {
    const dir = path.join(root, 'legacy');
    const {model} = await train(options(dir));
    const json = modelJson(dir);
    delete json.checkpoint; // as an earlier version (and models/*) wrote it
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
    const intact = userFiles(dir);
    expect(readTrainingRecord(dir).step).toBe(3);
    const resumed = await train({...options(dir), steps: 4}, {}, dir);
    intact();
    expect(fs.readdirSync(dir).sort()).toEqual([...OWN, 'notes.md', 'plots'].sort());
    expect(modelJson(dir).checkpoint.step).toBe(4);
    const back = await loadCheckpoint(dir);
    expect(back.record.step).toBe(4);
    tf.dispose(back.optimizerWeights.map((w) => w.tensor));
    [model, resumed.model, back.model].forEach((m) => m.dispose());
  });

  test("a legacy folder's training.json that is not a training record is kept; the checkpoint gets its own", async () => {
    const dir = path.join(root, 'mixed');
    const model = (await train(options(''))).model;
    await model.save(`file://${dir}`); // a plain model folder...
    fs.writeFileSync(path.join(dir, 'training.json'), '{"mine": true}'); // ...with the user's own training.json
    const {record} = await train(options(path.join(root, 'elsewhere')));
    const optimizer = tf.train.adam(0.01);
    await saveCheckpoint(dir, model, optimizer, record);
    expect(fs.readFileSync(path.join(dir, 'training.json'), 'utf8')).toBe('{"mine": true}');
    const field = modelJson(dir).checkpoint;
    expect(field.training).toMatch(/^training\.\d+-[0-9a-z]{8}\.json$/);
    expect(readTrainingRecord(dir).step).toBe(record.step);
    optimizer.dispose();
    model.dispose();
  });

  test("a checkpoint saved without Adam's state removes the old one's optimizer files", async () => {
    const dir = path.join(root, 'ship');
    const {model, record} = await train(options(dir));
    const intact = userFiles(dir);
    await saveCheckpoint(dir, model, null, record);
    intact();
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'notes.md', 'plots', 'training.json', 'weights.bin']);
    expect(modelJson(dir).checkpoint.optimizer).toBeNull();
    await expect(loadCheckpoint(dir)).rejects.toThrow(/holds no optimizer state/);
    model.dispose();
  });

  test("a plain model.save over a checkpoint replaces only model.json and the weights (as tfjs-node's would)", async () => {
    const dir = path.join(root, 'ckpt');
    const {model} = await train(options(dir));
    const kept = ['training.json', 'optimizer.json', 'optimizer.bin'].map((n) => fs.readFileSync(path.join(dir, n)));
    const other = (await train({...options(''), seed: 4})).model;
    await other.save(`file://${dir}`);
    expect(fs.readdirSync(dir).sort()).toEqual(OWN);
    ['training.json', 'optimizer.json', 'optimizer.bin'].forEach((n, i) => expect(fs.readFileSync(path.join(dir, n)).equals(kept[i])).toBe(true));
    expect(modelJson(dir).checkpoint).toBeUndefined();
    const loaded = await loadModel(dir);
    expect(loaded.getWeights()[0].dataSync()).toEqual(other.getWeights()[0].dataSync());
    [model, other, loaded].forEach((m) => m.dispose());
  });

  test('checkpoint saves leak no tensors (with and without optimizer state)', async () => {
    const dir = path.join(root, 'leak');
    const {model, record} = await train(options(dir));
    userFiles(dir);
    const optimizer = tf.train.adam(0.01);
    const before = tf.memory().numTensors;
    await saveCheckpoint(dir, model, optimizer, record);
    await saveCheckpoint(dir, model, null, record);
    await saveCheckpoint(dir, model, optimizer, record);
    expect(tf.memory().numTensors).toBe(before);
    optimizer.dispose();
    model.dispose();
  });

  test('train with outDir an existing file (or under one) is refused before the first step', async () => {
    const file = path.join(root, 'results.csv');
    fs.writeFileSync(file, 'a,b\n');
    for (const outDir of [file, path.join(file, 'run1')]) {
      let steps = 0;
      await expect(train(options(outDir), {onStep: () => steps++})).rejects.toMatchObject({code: 'IO',
        message: expect.stringMatching(/^cannot write checkpoint '.*results\.csv.*': .*not a directory/)});
      expect(steps).toBe(0);
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('a,b\n');
    expect(fs.readdirSync(root)).toEqual(['results.csv']);
  });
});
