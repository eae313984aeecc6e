// Model folders from someone else, on every reader: the file:// handler (tf.loadLayersModel),
// loadModel, loadCheckpoint, loadKerasModel and the CLI commands that read a model (eval,
// predict, inspect --model / --keras, generate, train --resume, convert). A manifest path out
// of the folder ('../', 'sub/../../', absolute), a symlink out, a FIFO, /dev/zero, weights
// of the wrong size, a sparse 2 GB file and a config asking for 5 GB of weights are each
// refused with an IO error (exit 2, one line) that names the path and never the contents of
// a file; a symlink that stays inside the folder is read. Runs once, on wasm (the backend a
// runaway allocation breaks), in the 'once' project.
import {execFileSync} from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {selectBackend} from '../../src/kernels/backend';
import {AttentionError} from '../../src/core/errors';
import {closeFile, modelFolder, openInFolder, readOpenFile} from '../../src/io/confined';
import {fileSystem, registerFileRouter} from '../../src/io/file_system';
import {planModel} from '../../src/io/model_plan';
import {loadKerasModel} from '../../src/keras/load';
import {MultiHeadAttention} from '../../src/layers/multi_head_attention';
import {loadCheckpoint, loadModel} from '../../src/train/checkpoint';
import {cli} from '../support/cli_helper';

const KERAS = path.join(__dirname, '..', 'fixtures', 'keras', 'keras3_self');
const SECRET = 'TOP-SECRET-do-not-print-me';
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TINY = ['--task', 'reverse', '--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2',
  '--kv-heads', '1', '--layers', '1', '--steps', '2', '--batch-size', '2', '--eval-batches', '1', '--causal', '--quiet'];

// A parsed model.json, edited in place.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON of any shape
type Json = Record<string, any>;
type Kind = 'ours' | 'keras';
const readJson = (file: string): Json => JSON.parse(fs.readFileSync(file, 'utf8'));
const editModel = (dir: string, edit: (json: Json) => void) => {
  const json = readJson(path.join(dir, 'model.json'));
  edit(json);
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
};
const setPaths = (dir: string, paths: string[]) => editModel(dir, (j) => { j.weightsManifest[0].paths = paths; });
/** The attention layer's config in a model.json (ours, or a Keras 3 one). */
const attentionConfig = (json: Json): Json => {
  const layers: Json[] = json.modelTopology.model_config?.config.layers ?? json.modelTopology.config.layers;
  return layers.find((l) => l.class_name === 'MultiHeadAttention')!.config;
};

/** What a read gave: null when it loaded, else the error's message (checked to be IO / exit 2 with one line). */
type Read = () => Promise<string | null>;

async function apiRead(load: () => Promise<tf.LayersModel | {model: tf.LayersModel}>): Promise<string | null> {
  let loaded: tf.LayersModel | {model: tf.LayersModel};
  try {
    loaded = await load();
  } catch (e) {
    expect(e).toBeInstanceOf(AttentionError);
    expect((e as AttentionError).code).toBe('IO');
    return (e as AttentionError).message;
  }
  if ('model' in loaded && !(loaded instanceof tf.LayersModel)) {
    const checkpoint = loaded as unknown as {model: tf.LayersModel; optimizerWeights: {tensor: tf.Tensor}[]};
    checkpoint.model.dispose();
    tf.dispose(checkpoint.optimizerWeights.map((w) => w.tensor));
  } else {
    (loaded as tf.LayersModel).dispose();
  }
  return null;
}

async function cliRead(...argv: string[]): Promise<string | null> {
  const r = await cli(...argv, '--backend', 'wasm');
  if (r.code === 0) return null;
  expect(r.code).toBe(2);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  return r.stderr;
}

let root: string;
let outs = 0;
const freshOut = () => path.join(root, 'outs', `out-${outs++}`);

/** The readers, each on a folder of its kind: ours (a checkpoint written by train) or a converted Keras 3 model. */
const READERS: {name: string; kind: Kind; record?: boolean; read(dir: string): Read}[] = [
  {name: 'tf.loadLayersModel(file://)', kind: 'ours', read: (d) => () => apiRead(() => tf.loadLayersModel(`file://${d}/model.json`))},
  {name: 'loadModel', kind: 'ours', read: (d) => () => apiRead(() => loadModel(d))},
  {name: 'loadCheckpoint', kind: 'ours', record: true, read: (d) => () => apiRead(() => loadCheckpoint(d))},
  {name: 'cli eval', kind: 'ours', record: true, read: (d) => () => cliRead('eval', '--model', d, '--batches', '1')},
  {name: 'cli predict', kind: 'ours', record: true, read: (d) => () => cliRead('predict', '--model', d, '--input', '2 3 4')},
  {name: 'cli inspect --model', kind: 'ours', record: true, read: (d) => () => cliRead('inspect', '--model', d)},
  {name: 'cli generate', kind: 'ours', record: true,
    read: (d) => () => cliRead('generate', '--model', d, '--prompt', '2 3', '--max-new-tokens', '1', '--seed', '0')},
  {name: 'cli train --resume', kind: 'ours', record: true,
    read: (d) => () => cliRead('train', '--resume', d, '--steps', '3', '--out', freshOut(), '--quiet')},
  {name: 'loadKerasModel', kind: 'keras', read: (d) => () => apiRead(() => loadKerasModel(`file://${d}/model.json`))},
  {name: 'cli inspect --keras', kind: 'keras', read: (d) => () => cliRead('inspect', '--keras', d)},
  {name: 'cli convert', kind: 'keras', read: (d) => async () => {
    const out = freshOut();
    const message = await cliRead('convert', '--keras', d, '--out', out);
    if (message != null) expect(fs.existsSync(out)).toBe(false); // nothing written, least of all outside bytes
    return message;
  }},
];

/** A copy of the reader's fixture in a folder of its own under root/cases; outside files go in root/cases. */
let folders = 0;
function copyFixture(source: string): string {
  const dir = path.join(root, 'cases', `folder-${folders++}`);
  fs.cpSync(source, dir, {recursive: true});
  return dir;
}

/** Each kind of damage: what it does to a folder, and the refusal it must give (null: it must load). */
interface Case {
  name: string;
  damage(dir: string): void;
  refusal: RegExp | null;
  /** Only for readers that read the training record (training.json). */
  record?: boolean;
  /** Only for folders of this kind. */
  kind?: Kind;
}

/** A copy of the folder's weights beside the folder: what a path out of it would reach. */
const outsideCopy = (dir: string): string => {
  const file = path.join(path.dirname(dir), `${path.basename(dir)}-stolen.bin`);
  fs.copyFileSync(path.join(dir, 'weights.bin'), file);
  return file;
};
const mkfifo = (file: string) => execFileSync('mkfifo', [file]);

const CASES: Case[] = [
  {name: "a manifest path '../x.bin' (the folder's own weights, copied out)",
    damage: (d) => setPaths(d, [`../${path.basename(outsideCopy(d))}`]), refusal: /it contains '\.\.'/},
  {name: "a manifest path 'sub/../../x.bin'", damage: (d) => {
    fs.mkdirSync(path.join(d, 'sub'));
    setPaths(d, [`sub/../../${path.basename(outsideCopy(d))}`]);
  }, refusal: /it contains '\.\.'/},
  {name: 'an absolute manifest path', damage: (d) => setPaths(d, [outsideCopy(d)]), refusal: /it is an absolute path/},
  {name: "the manifest path '/dev/zero'", damage: (d) => setPaths(d, ['/dev/zero']), refusal: /it is an absolute path/},
  {name: 'weights.bin a symlink out of the folder', damage: (d) => {
    const stolen = outsideCopy(d);
    fs.rmSync(path.join(d, 'weights.bin'));
    fs.symlinkSync(stolen, path.join(d, 'weights.bin'));
  }, refusal: /weights\.bin' listed in .* resolves to '.*-stolen\.bin', outside the model's folder/},
  {name: 'weights.bin a symlink to /dev/zero', damage: (d) => {
    fs.rmSync(path.join(d, 'weights.bin'));
    fs.symlinkSync('/dev/zero', path.join(d, 'weights.bin'));
  }, refusal: /resolves to '\/dev\/zero', outside the model's folder/},
  {name: 'weights.bin a FIFO', damage: (d) => {
    fs.rmSync(path.join(d, 'weights.bin'));
    mkfifo(path.join(d, 'weights.bin'));
  }, refusal: /weights\.bin' listed in .*: it is a FIFO, not a regular file/},
  {name: 'model.json a FIFO', damage: (d) => {
    fs.rmSync(path.join(d, 'model.json'));
    mkfifo(path.join(d, 'model.json'));
  }, refusal: /model\.json .*it is a FIFO, not a regular file/},
  {name: 'model.json a symlink to /dev/zero', damage: (d) => {
    fs.rmSync(path.join(d, 'model.json'));
    fs.symlinkSync('/dev/zero', path.join(d, 'model.json'));
  }, refusal: /model\.json.*resolves to '\/dev\/zero', outside the model's folder/},
  {name: 'model.json a symlink out of the folder', damage: (d) => {
    const file = path.join(path.dirname(d), `${path.basename(d)}-model.json`);
    fs.renameSync(path.join(d, 'model.json'), file);
    fs.symlinkSync(file, path.join(d, 'model.json'));
  }, refusal: /model\.json.*resolves to '.*-model\.json', outside the model's folder/},
  {name: 'weights.bin larger than declared', damage: (d) => fs.appendFileSync(path.join(d, 'weights.bin'), Buffer.alloc(8)),
    refusal: /corrupt weights for '.*model\.json': the files hold \d+ bytes but model\.json lists \d+/},
  {name: 'weights.bin smaller than declared', damage: (d) => fs.truncateSync(path.join(d, 'weights.bin'), 100),
    refusal: /the files hold 100 bytes but model\.json lists \d+/},
  {name: 'num_heads 1e7 (each weight one tensor can hold, over 4 GiB in all)', damage: (d) => editModel(d, (j) => {
    const config = attentionConfig(j);
    config.num_heads = 1e7;
    if ('key_dim' in config) config.key_dim = 8; else config.head_dim = 8;
  }), refusal: /MultiHeadAttention's weights would take [4-9]\.\d+ GiB .* more than the 2\.00 GiB/},
  {name: 'a tfjs Dense layer with units 1e8 (3.2 GB of kernel)', kind: 'ours', damage: (d) => editModel(d, (j) => {
    j.modelTopology.config.layers.find((l: Json) => l.name === 'block0_ff1').config.units = 1e8;
  }), refusal: /its config builds \d+ weights of [6-9]\.\d+ GiB .*over the limit of 2\.00 GiB .*the largest: 'block0_ff\d\/kernel' of shape .*nothing was allocated/},
  {name: 'training.json a symlink to a secret outside', record: true, damage: (d) => {
    fs.rmSync(path.join(d, 'training.json'));
    fs.symlinkSync(path.join(root, 'secret.txt'), path.join(d, 'training.json'));
  }, refusal: /training\.json.* resolves to '.*secret\.txt', outside the model's folder/},
  {name: 'training.json in the folder, not JSON', record: true,
    damage: (d) => fs.writeFileSync(path.join(d, 'training.json'), `${SECRET} and more`),
    refusal: /corrupt training\.json '.*training\.json': it is not valid JSON/},
  {name: 'weights.bin a symlink inside the folder (allowed)', damage: (d) => {
    fs.renameSync(path.join(d, 'weights.bin'), path.join(d, 'weights.v2.bin'));
    fs.symlinkSync('weights.v2.bin', path.join(d, 'weights.bin'));
  }, refusal: null},
];

const fixtures: Record<Kind, string> = {ours: '', keras: KERAS};

beforeAll(async () => {
  tf.env().set('PROD', true);
  await selectBackend('wasm');
  registerFileRouter();
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-untrusted-'));
  fs.mkdirSync(path.join(root, 'cases'));
  fs.writeFileSync(path.join(root, 'secret.txt'), `${SECRET}\n`);
  fixtures.ours = path.join(root, 'checkpoint');
  const r = await cli('train', ...TINY, '--out', fixtures.ours, '--backend', 'wasm');
  expect(r.code).toBe(0);
});

afterAll(() => fs.rmSync(root, {recursive: true, force: true}));

describe('untrusted model folders: every reader', () => {
  for (const reader of READERS) {
    const cases = CASES.filter((c) => (!c.record || reader.record) && (c.kind == null || c.kind === reader.kind));
    test(`${reader.name}: ${cases.length} damaged folders refused (IO, paths named, no contents), one inside symlink read`, async () => {
      const tensors = tf.memory().numTensors;
      for (const c of cases) {
        const dir = copyFixture(fixtures[reader.kind]);
        c.damage(dir);
        const message = await reader.read(dir)();
        if (c.refusal == null) {
          expect({case: c.name, message}).toEqual({case: c.name, message: null});
          continue;
        }
        expect({case: c.name, message}).toEqual({case: c.name, message: expect.stringMatching(c.refusal)});
        expect(message).not.toContain(SECRET);
      }
      expect(tf.memory().numTensors).toBe(tensors);
    });
  }

  test('after every refusal the wasm backend still computes: a model predicts as before', async () => {
    const model = await loadModel(fixtures.ours);
    const L = model.inputs[0].shape[1] as number;
    const input = tf.tensor2d([Array.from({length: L}, (_, i) => 2 + (i % 3))], [1, L], 'int32');
    const before = tf.tidy(() => Array.from((model.predict(input) as tf.Tensor).dataSync()));
    // A layer built by hand with num_heads 1e7 is refused at build, before any allocation.
    const layer = new MultiHeadAttention({numHeads: 1e7, headDim: 8});
    const q = tf.ones([1, 2, 8]);
    expect(() => layer.apply(q)).toThrow(expect.objectContaining({code: 'INVALID_CONFIG'}));
    // Raising maxBytes does not let a layer past what one layer may hold.
    const dir = copyFixture(fixtures.ours);
    CASES.find((c) => c.name.startsWith('num_heads'))!.damage(dir);
    await expect(loadModel(dir, {maxBytes: 64 * GiB})).rejects.toThrow(/weights would take [4-9]\.\d+ GiB/);
    const after = tf.tidy(() => Array.from((model.predict(input) as tf.Tensor).dataSync()));
    expect(after).toEqual(before);
    expect(tf.tidy(() => tf.sum(tf.matMul(tf.ones([64, 64]), tf.ones([64, 64]))).dataSync()[0])).toBe(64 ** 3);
    tf.dispose([q, input]);
    model.dispose();
  });
});

describe('untrusted model folders: sizes checked before a byte is read', () => {
  const oursDir = () => fixtures.ours;

  /** Runs `read`, returning its message, the seconds it took and the growth of resident memory in MiB. */
  async function measured(read: Read): Promise<{message: string | null; seconds: number; rssMiB: number}> {
    const rss = process.memoryUsage().rss;
    const t0 = performance.now();
    const message = await read();
    const seconds = (performance.now() - t0) / 1000;
    return {message, seconds, rssMiB: (process.memoryUsage().rss - rss) / MiB};
  }

  const SPARSE = [
    {name: 'a sparse 2 GB weights.bin (the manifest declares the real size)', damage: (d: string) =>
      fs.truncateSync(path.join(d, 'weights.bin'), 2e9), refusal: /the files hold 2000000000 bytes but model\.json lists \d+/},
    {name: 'a manifest declaring 2.2 GB, and a sparse weights.bin of that size', damage: (d: string) => {
      editModel(d, (j) => {
        const spec = j.weightsManifest[0].weights[0];
        spec.shape = [550_000_000];
        spec.dtype = 'float32';
      });
      fs.truncateSync(path.join(d, 'weights.bin'), 2.2e9);
    }, refusal: /its manifest lists \d+ weights of 2\.\d+ GiB .* over the limit of 2\.00 GiB .*; nothing was read/},
  ];

  for (const reader of READERS) {
    test(`${reader.name}: sparse 2 GB files refused in under 0.5 s, resident memory growing under 50 MB`, async () => {
      await reader.read(copyFixture(fixtures[reader.kind]))(); // warm: backend, modules
      for (const c of SPARSE) {
        const dir = copyFixture(fixtures[reader.kind]);
        c.damage(dir);
        const {message, seconds, rssMiB} = await measured(reader.read(dir));
        expect({case: c.name, message}).toEqual({case: c.name, message: expect.stringMatching(c.refusal)});
        expect({case: c.name, seconds}).toEqual({case: c.name, seconds: expect.any(Number)});
        expect(seconds).toBeLessThan(0.5);
        expect(rssMiB).toBeLessThan(50);
      }
    });
  }

  test('maxBytes: a model over it is refused naming the limit; raising it loads the model', async () => {
    const bytes = fs.statSync(path.join(oursDir(), 'weights.bin')).size;
    await expect(loadModel(oursDir(), {maxBytes: bytes - 1})).rejects.toThrow(
      new RegExp(`over the limit of .*\\(${bytes - 1} bytes\\); nothing was read\\. If the model is trusted, raise the limit`));
    await expect(tf.loadLayersModel(fileSystem(oursDir(), {maxBytes: bytes - 1}))).rejects.toThrow(/over the limit/);
    await expect(loadKerasModel(`file://${KERAS}/model.json`, {maxBytes: 1000})).rejects.toThrow(/over the limit of 1000/);
    const r = await cli('eval', '--model', oursDir(), '--max-bytes', String(bytes - 1), '--backend', 'wasm');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`over the limit of .*\\(${bytes - 1} bytes\\)`));
    const ok = await cli('inspect', '--model', oursDir(), '--max-bytes', '1MiB', '--backend', 'wasm');
    expect(ok.code).toBe(0);
    (await loadModel(oursDir(), {maxBytes: bytes})).dispose();
    const bad = await cli('inspect', '--model', oursDir(), '--max-bytes', 'lots', '--backend', 'wasm');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--max-bytes.*Expected a positive number of bytes/);
    await expect(loadModel(oursDir(), {maxBytes: -1})).rejects.toThrow(
      expect.objectContaining({code: 'INVALID_CONFIG', message: expect.stringMatching(/maxBytes must be a positive number/)}));
    await expect(loadModel(oursDir(), {maxByte: 1} as never)).rejects.toThrow(/did you mean 'maxBytes'/);
  });

  test('model.json above the JSON limit is refused unread (a sparse 100 MB model.json, default 64 MiB)', async () => {
    const dir = copyFixture(fixtures.ours);
    fs.truncateSync(path.join(dir, 'model.json'), 100 * MiB);
    const {message, seconds, rssMiB} = await measured(() => apiRead(() => loadModel(dir)));
    expect(message).toMatch(/model\.json '.*model\.json': it is 104857600 bytes, over the limit of 67108864/);
    expect(seconds).toBeLessThan(0.5);
    expect(rssMiB).toBeLessThan(50);
    const small = copyFixture(fixtures.ours);
    await expect(loadModel(small, {maxJsonBytes: 100})).rejects.toThrow(/over the limit of 100; pass a larger maxJsonBytes/);
  });
});

describe('untrusted model folders: configs sized before anything is allocated', () => {
  /** A folder holding `layers` as a Sequential model.json with no weights. */
  function sequentialFolder(layers: Json[]): string {
    const dir = path.join(root, 'cases', `folder-${folders++}`);
    fs.mkdirSync(dir, {recursive: true});
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({format: 'layers-model',
      modelTopology: {class_name: 'Sequential', config: {name: 'crafted', layers}}, weightsManifest: []}));
    return dir;
  }
  const bigDense = (extra: Json = {}): Json => ({class_name: 'Dense',
    config: {name: 'big', units: 20000, batch_input_shape: [null, 20000], ...extra}});

  /** Expects every reader of `dir` to refuse it with `refusal`, allocating nothing (tensors, resident memory). */
  async function refusedUnallocated(dir: string, refusal: RegExp): Promise<void> {
    for (const read of [() => tf.loadLayersModel(`file://${dir}/model.json`), () => loadModel(dir)]) {
      const tensors = tf.memory().numTensors;
      const rss = process.memoryUsage().rss;
      await expect(read()).rejects.toThrow(refusal);
      expect(tf.memory().numTensors).toBe(tensors);
      expect((process.memoryUsage().rss - rss) / MiB).toBeLessThan(50);
    }
  }

  test('a 1.6 GB Dense before a layer that does not build: refused before tfjs builds the Dense', async () => {
    await refusedUnallocated(sequentialFolder([bigDense(), {class_name: 'NoSuchLayer', config: {name: 'x'}}]),
      /cannot load the model in '.*': Unknown layer: NoSuchLayer/);
  });

  test('a 1.6 GB Dense with inline weights that do not fit: refused before tfjs builds it', async () => {
    await refusedUnallocated(sequentialFolder([bigDense({weights: [[1, 2, 3]]})]), /cannot load the model in '.*'/);
  });

  test("a stateful LSTM's 3.2 GB of states are counted, not made", async () => {
    const lstm = {class_name: 'LSTM', config: {name: 'lstm', units: 4, stateful: true, batch_input_shape: [1e8, 1, 1]}};
    await refusedUnallocated(sequentialFolder([lstm]),
      /its config builds \d+ weights of 2\.\d+ GiB .*the largest: 'lstm\/state_\d' of shape \[100000000, 4\]/);
  });

  test('planModel restores tfjs after a build that fails, and leaks nothing', async () => {
    const addWeight = (tf.layers.Layer.prototype as unknown as {addWeight: unknown}).addWeight;
    const resetStates = (tf.RNN.prototype as unknown as {resetStates: unknown}).resetStates;
    const tensors = tf.memory().numTensors;
    const topology = {class_name: 'Sequential', config: {name: 's', layers: [
      {class_name: 'Dense', config: {name: 'a', units: 3, batch_input_shape: [null, 2]}},
      {class_name: 'NoSuchLayer', config: {name: 'b'}}]}};
    await expect(planModel(topology)).rejects.toThrow(/NoSuchLayer/);
    expect(tf.memory().numTensors).toBe(tensors);
    expect((tf.layers.Layer.prototype as unknown as {addWeight: unknown}).addWeight).toBe(addWeight);
    expect((tf.RNN.prototype as unknown as {resetStates: unknown}).resetStates).toBe(resetStates);
    const plan = await planModel({class_name: 'Sequential', config: {name: 't', layers: [topology.config.layers[0]]}});
    expect(plan.weights.map((w) => [w.name, w.shape, w.bytes])).toEqual([['a/kernel', [2, 3], 24], ['a/bias', [3], 12]]);
    plan.model.dispose();
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('a quantized weight counts at its decoded size: 600 MB of uint8 is 2.4 GB of float32', async () => {
    const dir = copyFixture(fixtures.ours);
    editModel(dir, (j) => {
      Object.assign(j.weightsManifest[0].weights[0], {shape: [600_000_000], quantization: {dtype: 'uint8', min: 0, scale: 1}});
    });
    await expect(loadModel(dir)).rejects.toThrow(/its manifest lists \d+ weights of 2\.\d+ GiB .*over the limit/);
  });

  test('reads go in chunks (a single read of 2 GiB or more fails): bytes equal whatever the chunk', () => {
    const dir = copyFixture(fixtures.ours);
    const file = openInFolder(modelFolder(dir), 'weights.bin', 'weights file');
    try {
      expect(readOpenFile(file, 'weights file', 1000).equals(fs.readFileSync(path.join(dir, 'weights.bin')))).toBe(true);
    } finally {
      closeFile(file);
    }
  });
});
