// `tfjs-attention convert --keras` and `inspect --keras` end to end: the converted folder
// is an ordinary tfjs model that tf.loadLayersModel reads (equal outputs), the folder's
// other files are kept, inspect lists each layer with its class, output shape and
// parameters, and bad input exits 2 with one line on stderr.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
// Not '../src': its import registers the file:// router, which the CLI must do itself.
import {fileSystem} from '../../src/io/file_system';
import {loadKerasModel} from '../../src/keras/load';
import {BACKEND, title} from '../support/helpers';
import {cli} from '../support/cli_helper';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'keras');
const REAL = path.join(FIXTURES, 'real', 'smartfood');

describe(title('cli convert and inspect --keras'), () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-keras-')); });
  afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));

  test('convert writes an ordinary tfjs model that tf.loadLayersModel reads with equal outputs; other files are kept', async () => {
    const out = path.join(tmp, 'web');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'index.html'), '<p>app</p>');
    const r = await cli('convert', '--keras', path.join(REAL, 'model.json'), '--out', out, '--backend', BACKEND);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^converted .*model\.json -> .*web: 23 layers \(1 attention\), 435173 parameters\n$/);
    expect(fs.readFileSync(path.join(out, 'index.html'), 'utf8')).toBe('<p>app</p>');
    expect(fs.readdirSync(out).sort()).toEqual(['index.html', 'model.json', 'weights.bin']);

    const x = tf.tensor(Array.from({length: 2 * 14 * 9}, (_, i) => Math.sin(i)), [2, 14, 9]);
    const keras = await loadKerasModel(fileSystem(path.join(REAL, 'model.json')));
    const converted = await tf.loadLayersModel(fileSystem(path.join(out, 'model.json')));
    const [a, b] = [keras.predict(x) as tf.Tensor[], converted.predict(x) as tf.Tensor[]];
    expect(b).toHaveLength(2);
    a.forEach((t, i) => expect(tf.tidy(() => tf.max(tf.abs(tf.sub(t, b[i]))).dataSync()[0])).toBeLessThanOrEqual(1e-6));
    tf.dispose([x, ...a, ...b]);
    keras.dispose();
    converted.dispose();
  });

  test('convert takes the folder as well as its model.json', async () => {
    const out = path.join(tmp, 'gqa');
    const r = await cli('convert', '--keras', path.join(FIXTURES, 'keras3_gqa'), '--out', out, '--backend', BACKEND);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/2 layers \(1 attention\), 320 parameters/);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    const gqa = json.modelTopology.config.layers.find((l: {name: string}) => l.name === 'gqa');
    expect(gqa.class_name).toBe('MultiHeadAttention');
    expect(gqa.config).toMatchObject({num_heads: 4, num_kv_heads: 2, head_dim: 3});
  });

  test('inspect --keras lists each layer with its class, output shape and parameters', async () => {
    const r = await cli('inspect', '--keras', path.join(REAL, 'model.json'), '--backend', BACKEND);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^model .*model\.json: functional, 435173 parameters$/);
    expect(lines[1]).toBe('layers:');
    expect(lines).toContain('  attention (MultiHeadAttention) output [null, 14, 128], 66048 parameters');
    expect(lines).toContain('  bilstm_1 (Bidirectional) output [null, 14, 256], 141312 parameters');
    expect(lines).toContain('  category (Dense) output [null, 4], 132 parameters');
    expect(lines).toHaveLength(2 + 23);
  });

  test.each([
    ['a missing model.json', (d: string) => ['convert', '--keras', path.join(d, 'nothing.json'), '--out', path.join(d, 'o')],
      /^error: .*nothing\.json/],
    ['a truncated weights file', (d: string) => {
      fs.mkdirSync(path.join(d, 'cut'));
      fs.copyFileSync(path.join(FIXTURES, 'keras3_self', 'model.json'), path.join(d, 'cut', 'model.json'));
      fs.writeFileSync(path.join(d, 'cut', 'weights.bin'), Buffer.alloc(10));
      return ['convert', '--keras', path.join(d, 'cut'), '--out', path.join(d, 'o')];
    }, /^error: corrupt weights .*10 bytes but model\.json lists 1152/],
    ['an unsupported Keras key', (d: string) => {
      fs.mkdirSync(path.join(d, 'gate'));
      const json = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'keras3_self', 'model.json'), 'utf8'));
      json.modelTopology.model_config.config.layers[1].config.attention_axes = [2];
      fs.writeFileSync(path.join(d, 'gate', 'model.json'), JSON.stringify(json));
      fs.copyFileSync(path.join(FIXTURES, 'keras3_self', 'weights.bin'), path.join(d, 'gate', 'weights.bin'));
      return ['inspect', '--keras', path.join(d, 'gate')];
    }, /^error: .*Keras layer 'mha' \(MultiHeadAttention\): attention_axes \[2\] is not supported/],
    ['no --out', () => ['convert', '--keras', path.join(REAL, 'model.json')], /required option '--out <dir>'/],
    ['both --model and --keras', () => ['inspect', '--model', REAL, '--keras', REAL], /inspect takes one of --model <dir> or --keras <path>/],
  ])('%s: exit 2 with one line on stderr', async (_label, argv, message) => {
    const d = fs.mkdtempSync(path.join(tmp, 'bad-'));
    const r = await cli(...argv(d), '--backend', BACKEND);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(fs.existsSync(path.join(d, 'o'))).toBe(false);
  });
});
