// Corrupt model folders: eval, inspect and predict exit 2 with one line on stderr (never 1
// with a raw tfjs message), for every kind of damage; train --out FILE is refused up front.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {BACKEND, title} from '../support/helpers';
import {cli} from '../support/cli_helper';

const TINY = ['--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2', '--kv-heads', '1', '--layers', '1',
  '--steps', '2', '--batch-size', '2', '--eval-batches', '1', '--quiet'];

// A parsed model.json, edited in place.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON of any shape
type Json = Record<string, any>;
const readJson = (file: string): Json => JSON.parse(fs.readFileSync(file, 'utf8'));
const writeJson = (file: string, json: unknown) => fs.writeFileSync(file, JSON.stringify(json));
/** Applies `edit` to the parsed model.json of dir. */
const editModel = (dir: string, edit: (json: Json) => void) => {
  const json = readJson(path.join(dir, 'model.json'));
  edit(json);
  writeJson(path.join(dir, 'model.json'), json);
};
const layers = (json: Json): Json[] => json.modelTopology.config.layers;
const weight0 = (json: Json): Json => json.weightsManifest[0].weights[0];

/** Each kind of damage, done to a copy of a good checkpoint folder. */
const DAMAGE: [string, (dir: string) => void][] = [
  ['missing model.json', (d) => fs.rmSync(path.join(d, 'model.json'))],
  ['empty model.json', (d) => fs.writeFileSync(path.join(d, 'model.json'), '')],
  ['model.json not JSON', (d) => fs.writeFileSync(path.join(d, 'model.json'), '{"modelTopology": ')],
  ['no modelTopology', (d) => editModel(d, (j) => { delete j.modelTopology; })],
  ['empty topology', (d) => editModel(d, (j) => { j.modelTopology = {}; })],
  ['unknown layer class', (d) => editModel(d, (j) => { layers(j)[2].class_name = 'NoSuchLayer'; })],
  ['bad layer config', (d) => editModel(d, (j) => {
    const attention = layers(j).find((l) => l.class_name === 'MultiHeadAttention')!;
    attention.config.num_heads = 0;
  })],
  ['int8 weight dtype', (d) => editModel(d, (j) => { weight0(j).dtype = 'int8'; })],
  ['missing weights file', (d) => fs.rmSync(path.join(d, 'weights.bin'))],
  ['truncated weights', (d) => fs.truncateSync(path.join(d, 'weights.bin'), 100)],
  ['padded weights', (d) => fs.appendFileSync(path.join(d, 'weights.bin'), Buffer.alloc(8))],
  ['renamed weight', (d) => editModel(d, (j) => { weight0(j).name = 'token_embedding/renamed'; })],
  ['weight shape mismatch', (d) => editModel(d, (j) => { weight0(j).shape = [...weight0(j).shape].reverse(); })],
  ['weightsManifest not an array', (d) => editModel(d, (j) => { j.weightsManifest = {paths: ['weights.bin']}; })],
  ['weights path outside the folder', (d) => {
    fs.copyFileSync(path.join(d, 'weights.bin'), path.join(d, '..', `${path.basename(d)}-x.bin`));
    editModel(d, (j) => { j.weightsManifest[0].paths = [`../${path.basename(d)}-x.bin`]; });
  }],
  ['missing training.json', (d) => fs.rmSync(path.join(d, 'training.json'))],
  ['training.json not JSON', (d) => fs.writeFileSync(path.join(d, 'training.json'), '{"format": 1,')],
  ['training.json missing fields', (d) => {
    const record = readJson(path.join(d, 'training.json'));
    delete record.history;
    writeJson(path.join(d, 'training.json'), record);
  }],
  ['training.json of another format', (d) => writeJson(path.join(d, 'training.json'), {format: 2})],
  ['checkpoint field naming a file outside', (d) => editModel(d, (j) => { j.checkpoint.training = '../training.json'; })],
  ['model.json a folder', (d) => {
    fs.rmSync(path.join(d, 'model.json'));
    fs.mkdirSync(path.join(d, 'model.json'));
  }],
];

describe(title('cli on corrupt model folders'), () => {
  let root: string;
  let good: string;
  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-cli-folders-'));
    good = path.join(root, 'good');
    expect((await cli('train', ...TINY, '--out', good, '--backend', BACKEND)).code).toBe(0);
  });
  afterAll(() => fs.rmSync(root, {recursive: true, force: true}));

  test('the good folder works with eval, inspect and predict', async () => {
    for (const argv of [['eval', '--batches', '1'], ['inspect'], ['predict', '--input', '2 3']]) {
      const r = await cli(...argv, '--model', good, '--backend', BACKEND);
      expect([r.code, r.stderr]).toEqual([0, '']);
    }
  });

  test.each(DAMAGE)('%s: eval, inspect and predict exit 2 with one line on stderr', async (name, damage) => {
    const dir = path.join(root, name.replace(/\W+/g, '-'));
    fs.cpSync(good, dir, {recursive: true});
    damage(dir);
    for (const argv of [['eval', '--batches', '1'], ['inspect'], ['predict', '--input', '2 3']]) {
      const r = await cli(...argv, '--model', dir, '--backend', BACKEND);
      expect({argv, code: r.code, stdout: r.stdout}).toEqual({argv, code: 2, stdout: ''});
      expect(r.stderr).toMatch(/^error: \S.*\n$/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });

  test('load failures name the folder: cannot load the model in DIR: <cause>', async () => {
    const dir = path.join(root, 'unknown-class');
    fs.cpSync(good, dir, {recursive: true});
    editModel(dir, (j) => { layers(j)[2].class_name = 'NoSuchLayer'; });
    const r = await cli('inspect', '--model', dir, '--backend', BACKEND);
    expect(r.stderr).toMatch(/^error: cannot load the model in '.*unknown-class': .*NoSuchLayer/);
  });

  test('train --out FILE exits 2 before training and leaves FILE as it was', async () => {
    const file = path.join(root, 'precious.txt');
    fs.writeFileSync(file, 'do not delete');
    for (const out of [file, path.join(file, 'sub')]) {
      const r = await cli('train', ...TINY, '--out', out, '--backend', BACKEND);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^error: cannot write checkpoint '.*precious\.txt.*': .*not a directory\n$/);
      expect(r.stderr).not.toMatch(/step \d/); // refused before the first step
      expect(fs.readFileSync(file, 'utf8')).toBe('do not delete');
    }
    expect(fs.readdirSync(root).filter((n) => n.startsWith('precious'))).toEqual(['precious.txt']);
  });
});
