// file:// save and load with plain @tensorflow/tfjs: round trips, the tfjs-node file
// layout, atomic overwrite, typed errors, router registration and tensor leaks.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../../src/core/errors';
import {fileSystem, registerFileRouter} from '../../src/io/file_system';
import {randn, title} from '../support/helpers';

registerFileRouter();

/** Dense 4 -> 8 (relu) -> 3, built with tf.sequential. */
function sequentialModel(seed: number): tf.Sequential {
  const model = tf.sequential();
  model.add(tf.layers.dense({units: 8, inputShape: [4], activation: 'relu',
    kernelInitializer: tf.initializers.glorotNormal({seed})}));
  model.add(tf.layers.dense({units: 3, biasInitializer: 'ones'}));
  return model;
}

/** The same stack built as a functional tf.model. */
function functionalModel(): tf.LayersModel {
  const input = tf.input({shape: [4]});
  const hidden = tf.layers.dense({units: 8, activation: 'tanh'}).apply(input);
  const output = tf.layers.dense({units: 3}).apply(hidden) as tf.SymbolicTensor;
  return tf.model({inputs: input, outputs: output});
}

/** Max |a - b| between the two models' predictions on x. */
function predictionGap(a: tf.LayersModel, b: tf.LayersModel, x: tf.Tensor): number {
  return tf.tidy(() => {
    const ya = a.predict(x) as tf.Tensor;
    const yb = b.predict(x) as tf.Tensor;
    return tf.max(tf.abs(tf.sub(ya, yb))).dataSync()[0];
  });
}

/** Awaits p and checks it rejected with AttentionError code 'IO' and a message matching re. */
async function expectIOError(p: Promise<unknown>, re: RegExp): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(AttentionError);
  expect((err as AttentionError).code).toBe('IO');
  expect((err as AttentionError).message).toMatch(re);
}

describe(title('io file://'), () => {
  let root: string;
  let x: tf.Tensor;

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-io-'));
    x = randn([5, 4], 7);
  });

  afterEach(() => {
    x.dispose();
    fs.rmSync(root, {recursive: true, force: true});
  });

  it('save -> load gives identical predictions (sequential)', async () => {
    const model = sequentialModel(1);
    const dir = path.join(root, 'model');
    await model.save(`file://${dir}`);
    const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(predictionGap(model, loaded, x)).toBeLessThanOrEqual(1e-6);
    model.dispose();
    loaded.dispose();
  });

  it('save -> load gives identical predictions (functional)', async () => {
    const model = functionalModel();
    const dir = path.join(root, 'model');
    await model.save(`file://${dir}`);
    const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(predictionGap(model, loaded, x)).toBeLessThanOrEqual(1e-6);
    model.dispose();
    loaded.dispose();
  });

  it('writes model.json + weights.bin in the tfjs-node layout', async () => {
    const model = sequentialModel(2);
    model.setUserDefinedMetadata({task: 'io-test'});
    const dir = path.join(root, 'model');
    const result = await model.save(`file://${dir}`);

    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    expect(json).toEqual(expect.objectContaining({
      format: 'layers-model',
      generatedBy: expect.stringMatching(/TensorFlow\.js/),
      convertedBy: null,
      userDefinedMetadata: {task: 'io-test'},
    }));
    expect(json.modelTopology.class_name).toBe('Sequential');
    expect(json.weightsManifest).toHaveLength(1);
    expect(json.weightsManifest[0].paths).toEqual(['weights.bin']);
    expect(json.weightsManifest[0].weights.map((w: {shape: number[]}) => w.shape))
      .toEqual([[4, 8], [8], [8, 3], [3]]);

    const floats = 4 * 8 + 8 + 8 * 3 + 3;
    expect(fs.statSync(path.join(dir, 'weights.bin')).size).toBe(4 * floats);
    expect(result.modelArtifactsInfo.weightDataBytes).toBe(4 * floats);
    expect(result.modelArtifactsInfo.modelTopologyType).toBe('JSON');
    expect(json.trainingConfig).toBeUndefined();
    model.dispose();
  });

  it('stores trainingConfig and optimizer weights with includeOptimizer', async () => {
    const model = sequentialModel(13);
    model.compile({optimizer: tf.train.adam(0.01), loss: 'meanSquaredError'});
    const y = tf.zeros([5, 3]);
    await model.fit(x, y, {epochs: 1, verbose: 0});
    y.dispose();
    const dir = path.join(root, 'model');
    await model.save(`file://${dir}`, {includeOptimizer: true});

    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    expect(json.trainingConfig).toEqual(expect.objectContaining({
      loss: 'mean_squared_error', optimizer_config: expect.objectContaining({class_name: 'Adam'}),
    }));
    const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(loaded.optimizer).toBeInstanceOf(tf.AdamOptimizer);
    expect(predictionGap(model, loaded, x)).toBeLessThanOrEqual(1e-6);
    model.optimizer.dispose();
    loaded.optimizer.dispose();
    model.dispose();
    loaded.dispose();
  });

  it('loads from a directory URL (file://DIR) and through fileSystem(path)', async () => {
    const model = sequentialModel(3);
    const dir = path.join(root, 'model');
    await model.save(fileSystem(dir));
    const fromDir = await tf.loadLayersModel(`file://${dir}`);
    const fromHandler = await tf.loadLayersModel(fileSystem(path.join(dir, 'model.json')));
    expect(predictionGap(model, fromDir, x)).toBeLessThanOrEqual(1e-6);
    expect(predictionGap(model, fromHandler, x)).toBeLessThanOrEqual(1e-6);
    [model, fromDir, fromHandler].forEach((m) => m.dispose());
  });

  it('creates missing parent folders', async () => {
    const model = sequentialModel(4);
    const dir = path.join(root, 'a', 'b', 'model');
    await model.save(`file://${dir}`);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    model.dispose();
  });

  it('overwrites an existing model and leaves no tmp folder', async () => {
    const first = sequentialModel(5);
    const second = sequentialModel(6);
    const dir = path.join(root, 'model');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'stale.txt'), 'from an earlier run');
    await first.save(`file://${dir}`);
    await second.save(`file://${dir}`);

    expect(fs.readdirSync(root)).toEqual(['model']);
    // Issue 13: a save writes only its own files, so the user's stale.txt is kept (it used
    // to be deleted along with the old folder); nothing else is left beside the model.
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'stale.txt', 'weights.bin']);
    expect(fs.readFileSync(path.join(dir, 'stale.txt'), 'utf8')).toBe('from an earlier run');
    const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(predictionGap(second, loaded, x)).toBeLessThanOrEqual(1e-6);
    expect(predictionGap(first, loaded, x)).toBeGreaterThan(1e-3);
    [first, second, loaded].forEach((m) => m.dispose());
  });

  it('a save under a parent that is a file fails with IO and leaves nothing behind', async () => {
    const model = sequentialModel(7);
    fs.writeFileSync(path.join(root, 'blocker'), 'not a folder');
    await expectIOError(model.save(`file://${root}/blocker/model`),
      /cannot save model to '.*blocker[/\\]model'/);
    expect(fs.readdirSync(root)).toEqual(['blocker']);
    expect(fs.readFileSync(path.join(root, 'blocker'), 'utf8')).toBe('not a folder');
    model.dispose();
  });

  it('a save onto an existing file fails with IO and keeps the file', async () => {
    const model = sequentialModel(8);
    const target = path.join(root, 'model');
    fs.writeFileSync(target, 'precious');
    await expectIOError(model.save(`file://${target}`), /cannot save model to .*not a directory/);
    expect(fs.readdirSync(root)).toEqual(['model']);
    expect(fs.readFileSync(target, 'utf8')).toBe('precious');
    model.dispose();
  });

  it('a save that fails mid-swap keeps the existing model and leaves no tmp folder', async () => {
    const kept = sequentialModel(9);
    const other = sequentialModel(10);
    const dir = path.join(root, 'model');
    await kept.save(`file://${dir}`);

    // Fail the rename that moves the freshly written tmp folder into place.
    const rename = fs.promises.rename.bind(fs.promises);
    const spy = jest.spyOn(fs.promises, 'rename').mockImplementation(async (from, to) => {
      if (String(from).includes('.tmp-')) throw Object.assign(new Error('simulated EXDEV'), {code: 'EXDEV'});
      return rename(from, to);
    });
    try {
      await expectIOError(other.save(`file://${dir}`), /cannot save model to '.*model': simulated EXDEV/);
    } finally {
      spy.mockRestore();
    }

    expect(fs.readdirSync(root)).toEqual(['model']);
    const loaded = await tf.loadLayersModel(`file://${dir}/model.json`);
    expect(predictionGap(kept, loaded, x)).toBeLessThanOrEqual(1e-6);
    [kept, other, loaded].forEach((m) => m.dispose());
  });

  it('loading a missing model.json throws IO naming the path', async () => {
    await expectIOError(tf.loadLayersModel(`file://${root}/nothing/model.json`),
      /cannot read model\.json at '.*nothing[/\\]model\.json': it does not exist/);
    await expectIOError(tf.loadLayersModel(`file://${root}`),
      /cannot read model\.json at '.*model\.json': it does not exist/);
  });

  it('loading a corrupt model.json throws IO naming the path', async () => {
    const file = path.join(root, 'model.json');
    fs.writeFileSync(file, '{"modelTopology": ');
    await expectIOError(tf.loadLayersModel(`file://${file}`), /corrupt model\.json '.*model\.json': it is not valid JSON/);
    fs.writeFileSync(file, '{"format": "layers-model"}');
    await expectIOError(tf.loadLayersModel(`file://${file}`), /corrupt model\.json .*no modelTopology/);
  });

  it('loading with a missing weights file throws IO naming the path', async () => {
    const model = sequentialModel(11);
    const dir = path.join(root, 'model');
    await model.save(`file://${dir}`);
    fs.rmSync(path.join(dir, 'weights.bin'));
    await expectIOError(tf.loadLayersModel(`file://${dir}/model.json`),
      /cannot read weights file '.*weights\.bin' listed in '.*model\.json': it does not exist/);
    model.dispose();
  });

  it('registering twice gives one handler per file:// URL', () => {
    registerFileRouter();
    registerFileRouter();
    expect(tf.io.getSaveHandlers('file://x')).toHaveLength(1);
    expect(tf.io.getLoadHandlers('file://x/model.json')).toHaveLength(1);
    expect(tf.io.getSaveHandlers('indexeddb://x')).toHaveLength(0);
  });

  it('yields to another router that already handles the URL (as tfjs-node would)', () => {
    const other: tf.io.IOHandler = {save: async () => ({modelArtifactsInfo: {} as tf.io.ModelArtifactsInfo})};
    // tfjs types a router as never returning null, though its registry skips null.
    tf.io.registerSaveRouter((url) =>
      (typeof url === 'string' && url.startsWith('file:///other/') ? other : null) as tf.io.IOHandler);
    expect(tf.io.getSaveHandlers('file:///other/model')).toEqual([other]);
    expect(tf.io.getSaveHandlers('file:///elsewhere/model')).toHaveLength(1);
  });

  it('save and load leak no tensors beyond the loaded weights', async () => {
    const model = sequentialModel(12);
    const dir = path.join(root, 'model');
    const before = tf.memory().numTensors;
    await model.save(`file://${dir}`);
    expect(tf.memory().numTensors).toBe(before);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(tf.memory().numTensors - before).toBe(loaded.weights.length);
    loaded.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});
