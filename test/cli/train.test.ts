// The train, eval, predict and inspect commands end to end on a tiny model, and their
// exit codes for bad flags and missing or corrupt model folders.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {title} from '../support/helpers';
import {cli} from '../support/cli_helper';

describe(title('cli train, eval, predict, inspect'), () => {
  let dir: string;
  let backend: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-cli-train-'));
    backend = tf.getBackend();
  });
  afterAll(() => fs.rmSync(dir, {recursive: true, force: true}));

  test('train saves a model folder that eval, predict and inspect read', async () => {
    const out = path.join(dir, 'm');
    const tiny = ['--length', '4', '--vocab-size', '6', '--model-dim', '8', '--heads', '2', '--kv-heads', '1', '--layers', '1',
      '--steps', '4', '--batch-size', '4', '--eval-every', '2', '--eval-batches', '1', '--backend', backend];
    const trained = await cli('train', ...tiny, '--out', out, '--quiet');
    expect(trained.code).toBe(0);
    expect(trained.stdout).toMatch(/^trained gqa on reverse \(\w+\): 4 steps in [\d.]+ s, token accuracy [\d.]+/);
    expect(trained.stderr).toMatch(/step 2: eval loss [\d.]+ token accuracy/); // plain lines, not a bar
    expect(fs.readdirSync(out).sort()).toEqual(['model.json', 'optimizer.bin', 'optimizer.json', 'training.json', 'weights.bin']);
    const record = JSON.parse(fs.readFileSync(path.join(out, 'training.json'), 'utf8'));
    expect(record).toMatchObject({step: 4, finished: true, task: {name: 'reverse', length: 4}, model: {attention: 'gqa'}});
    expect(record.history.map((h: {step: number}) => h.step)).toEqual([2, 4]);

    const evaluated = await cli('eval', '--model', out, '--batches', '2', '--backend', backend);
    expect(evaluated.code).toBe(0);
    const metrics = JSON.parse(evaluated.stdout);
    expect(metrics).toMatchObject({task: 'reverse', examples: 64});
    expect(metrics.tokenAccuracy).toBeGreaterThanOrEqual(0);

    const predicted = await cli('predict', '--model', out, '--input', '2 3 4', '--backend', backend);
    expect(predicted.code).toBe(0);
    expect(predicted.stdout).toMatch(/^\d \d \d \d\n$/);

    const inspected = await cli('inspect', '--model', out, '--backend', backend);
    expect(inspected.code).toBe(0);
    expect(inspected.stdout).toMatch(/transformer_gqa, \d+ parameters/);
    expect(inspected.stdout).toMatch(/block0_attention \(MultiHeadAttention\)/);

    // Resume with more steps goes on from step 4.
    const resumed = await cli('train', '--resume', out, '--steps', '6', '--quiet', '--backend', backend);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/6 steps/);
    // The checkpoint's options rule, even against another family's --attention.
    const graphFlag = await cli('train', '--resume', out, '--steps', '7', '--attention', 'graph', '--quiet',
      '--backend', backend);
    expect(graphFlag.code).toBe(0);
    expect(graphFlag.stderr).not.toMatch(/error/i);
    expect(graphFlag.stdout).toMatch(/^trained gqa on reverse .*7 steps/);

    // A truncated weights.bin: exit 2 and one clear line; the folder is left as it was.
    const weights = path.join(out, 'weights.bin');
    const good = fs.readFileSync(weights);
    fs.writeFileSync(weights, good.subarray(0, 100));
    for (const argv of [['eval', '--model', out], ['inspect', '--model', out], ['train', '--resume', out, '--quiet']]) {
      const r = await cli(...argv, '--backend', backend);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^error: corrupt weights for .* the files hold 100 bytes but model.json lists \d+/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(fs.readFileSync(weights).length).toBe(100);
    }
  });

  test('--no-optimizer-state saves a smaller folder that cannot be resumed (exit 2, one line)', async () => {
    const out = path.join(dir, 'ship');
    const r = await cli('train', '--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2', '--kv-heads', '1', '--layers', '1',
      '--steps', '2', '--batch-size', '2', '--eval-batches', '1', '--no-optimizer-state', '--quiet', '--out', out,
      '--backend', backend);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['model.json', 'training.json', 'weights.bin']);
    const resumed = await cli('train', '--resume', out, '--quiet', '--backend', backend);
    expect(resumed.code).toBe(2);
    expect(resumed.stderr).toMatch(/^error: .* holds no optimizer state .* cannot be resumed\n$/);
  });

  test('the attention option flags reach the layers (per block with --global-every) and the saved model', async () => {
    const out = path.join(dir, 'options');
    const r = await cli('train', '--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2', '--kv-heads', '1',
      '--attention', 'gqa', '--causal', '--layers', '2', '--steps', '2', '--batch-size', '2', '--eval-batches', '1',
      '--softcap', '20', '--sliding-window', '4', '--global-every', '2', '--sinks', '--qk-norm', 'rms',
      '--output-gate', 'headwise', '--alibi', 'fixed', '--quiet', '--out', out, '--backend', backend);
    expect(r.code).toBe(0);
    const topology = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8')).modelTopology;
    const configs = (topology.config.layers as {name: string; config: Record<string, unknown>}[])
      .filter((l) => /attention$/.test(l.name)).map((l) => l.config);
    expect(configs.map((c) => c.sliding_window ?? null)).toEqual([4, null]);
    for (const c of configs) {
      expect(c).toMatchObject({softcap: 20, attention_sinks: true, qk_norm: 'rms', output_gate: 'headwise', alibi: true});
    }
    const predicted = await cli('predict', '--model', out, '--input', '1 2 3', '--backend', backend);
    expect(predicted.code).toBe(0);
  });

  test.each([
    [['eval', '--model', '/no/such/folder'], /no training.json in '\/no\/such\/folder'/],
    [['train', '--no-such-flag'], /unknown option '--no-such-flag'/],
    [['train', '--steps', '0'], /option '--steps <n>' argument '0' is invalid/],
    [['train', '--attention', 'sparse'], /argument 'sparse' is invalid. Allowed choices are mha, gqa/],
    [['train', '--task', 'nope'], /Allowed choices are copy, reverse/],
    [['predict', '--model', '/no/such/folder', '--input', '1 2'], /no training.json/],
    [['train', '--window', '3', '--attention', 'mha'], /--window is for --attention local-global, not 'mha'/],
    [['train', '--sliding-window', '3', '--attention', 'linear'], /--sliding-window is for --attention mha or gqa or flash, not 'linear'/],
    [['train', '--alibi', 'yes'], /option '--alibi <slopes>' argument 'yes' is invalid. Allowed choices are fixed, learned/],
    [['train', '--softcap', '0'], /option '--softcap <c>' argument '0' is invalid/],
    [['train', '--global-every', '2', '--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2', '--layers', '1',
      '--steps', '1'], /globalEvery \(2\) says which blocks attend globally/],
    [['predict', '--model', 'models/gqa', '--input', ' '], /--input must be at most 8 integers/],
  ])('%j exits 2 with one line', async (argv, message) => {
    const r = await cli(...argv as string[], ...(argv[0] === 'train' && argv.length > 2 ? ['--backend', backend] : []));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
