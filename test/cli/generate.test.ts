// The text task and generate from the command line: train --task text on a small file,
// eval and predict it, generate from it (text and toy-task models), and bench --suite decode.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {runDecodeBench, summarizeDecode} from '../../src/bench/decode';
import {title} from '../support/helpers';
import {cli} from '../support/cli_helper';

const TEXT = 'the cat sat on the mat. the dog sat on the log. é → ok. '.repeat(12);

describe(title('cli: text task, generate, bench --suite decode'), () => {
  let dir: string;
  let backend: string;
  const tiny = () => ['--model-dim', '16', '--heads', '2', '--kv-heads', '1', '--layers', '1', '--steps', '3', '--batch-size', '4',
    '--eval-every', '3', '--eval-batches', '1', '--backend', backend, '--quiet'];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-cli-generate-'));
    backend = tf.getBackend();
    fs.writeFileSync(path.join(dir, 'text.txt'), TEXT);
  });
  afterAll(() => fs.rmSync(dir, {recursive: true, force: true}));

  test('train --task text saves a causal char model with its vocabulary; eval, predict and generate read it', async () => {
    const out = path.join(dir, 'text');
    const trained = await cli('train', '--task', 'text', '--data', path.join(dir, 'text.txt'), '--seq-length', '16',
      '--positions', 'rope', ...tiny(), '--out', out);
    expect(trained.stderr).toMatch(/step 3: eval loss/);
    expect(trained.code).toBe(0);
    const record = JSON.parse(fs.readFileSync(path.join(out, 'training.json'), 'utf8'));
    expect(record.task).toMatchObject({name: 'text', seqLength: 16});
    expect([...record.task.vocabulary].sort().join('')).toBe([...new Set(TEXT)].sort().join(''));
    expect(record.model).toMatchObject({causal: true, positions: 'rope'});
    expect(JSON.stringify(record)).not.toContain('the cat sat'); // never the text itself

    const evaluated = await cli('eval', '--model', out, '--batches', '1', '--backend', backend);
    expect(evaluated.code).toBe(0);
    expect(JSON.parse(evaluated.stdout)).toMatchObject({task: 'text'});

    const predicted = await cli('predict', '--model', out, '--input', 'the cat', '--backend', backend);
    expect(predicted.code).toBe(0);
    expect([...predicted.stdout.replace(/\n$/, '')]).toHaveLength(7); // one character per input character
    expect([...predicted.stdout.replace(/\n$/, '')].every((c) => record.task.vocabulary.includes(c))).toBe(true);

    // 40 new characters from a 16-character context: the context slides.
    const generated = await cli('generate', '--model', out, '--prompt', 'the →', '--max-new-tokens', '40',
      '--seed', '3', '--backend', backend);
    expect(generated.code).toBe(0);
    const text = generated.stdout.replace(/\n$/, '');
    expect([...text]).toHaveLength(40);
    expect([...text].every((c) => record.task.vocabulary.includes(c))).toBe(true);
    const again = await cli('generate', '--model', out, '--prompt', 'the →', '--max-new-tokens', '40', '--seed', '3',
      '--backend', backend);
    expect(again.stdout).toBe(generated.stdout); // the same seed, the same text
    const greedy = await cli('generate', '--model', out, '--prompt', 'the', '--max-new-tokens', '5', '--temperature', '0',
      '--stop', 't', '--backend', backend);
    expect(greedy.code).toBe(0);

    const unknown = await cli('generate', '--model', out, '--prompt', 'the #', '--backend', backend);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/character "#" \(U\+0023\) at position 4 is not in the vocabulary/);
  });

  test('generate continues a causal toy-task model from ids or SEP; a non-causal model is refused', async () => {
    const toy = ['--task', 'copy', '--length', '3', '--vocab-size', '6', ...tiny()];
    const causal = path.join(dir, 'copy-causal');
    expect((await cli('train', ...toy, '--causal', '--out', causal)).code).toBe(0);
    const generated = await cli('generate', '--model', causal, '--prompt', '3 2 4 SEP', '--max-new-tokens', '3',
      '--temperature', '0', '--backend', backend);
    expect(generated.code).toBe(0);
    expect(generated.stdout).toMatch(/^[0-5] [0-5] [0-5]\n$/);
    const bad = await cli('generate', '--model', causal, '--prompt', '3 9', '--backend', backend);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/'9' is not a token of this model: give ids in \[0, 5\] or SEP \/ BLANK/);

    const plain = path.join(dir, 'copy');
    expect((await cli('train', ...toy, '--out', plain)).code).toBe(0);
    const refused = await cli('generate', '--model', plain, '--prompt', '3 2', '--backend', backend);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/is not causal.*build and train it with causal: true/);
  });

  test('train refuses text flags on a toy task and kind flags on another kind', async () => {
    const r = await cli('train', '--task', 'copy', '--data', 'x.txt', ...tiny(), '--out', path.join(dir, 'x'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--data, --seq-length, --documents and --pack are for --task text, not 'copy'/);
    const k = await cli('train', '--attention', 'gqa', '--features', '8', ...tiny(), '--out', path.join(dir, 'y'));
    expect(k.code).toBe(2);
    expect(k.stderr).toMatch(/--features is for --attention linear, not 'gqa'/);
    expect(fs.existsSync(path.join(dir, 'x')) || fs.existsSync(path.join(dir, 'y'))).toBe(false);
  });

  test('bench --suite decode: one cached and one recompute row per kind and context; cache bytes by heads', async () => {
    const report = await runDecodeBench({contexts: [8], reps: 1, warmup: 0, backend: backend as never});
    const rows = report.rows;
    expect(rows.filter((r) => r.error != null)).toEqual([]);
    expect(rows.map((r) => `${r.row}/${r.mode}`)).toEqual(['mha', 'gqa', 'flash', 'linear', 'local-global', 'mqa',
      'gqa-window', 'gqa-window-sinks'].flatMap((k) => [`${k}/cached`, `${k}/recompute`]));
    const bytes = (row: string) => rows.find((r) => r.row === row && r.mode === 'cached')!.cacheBytes!;
    // [B, G, L, D] keys and values: 2 * G * D * 4 bytes per position, L = the context held.
    expect(bytes('mha')).toBe(2 * 8 * 64 * 4 * 8);
    expect(bytes('gqa') / bytes('mha')).toBe(2 / 8);
    expect(bytes('mqa') / bytes('mha')).toBe(1 / 8);
    // Within its window (128 positions) the window's cache holds every position, as gqa's.
    expect(bytes('gqa-window')).toBe(bytes('gqa'));
    expect(bytes('gqa-window-sinks')).toBe(bytes('gqa'));
    expect(summarizeDecode(rows).length).toBe(8);

    const out = path.join(dir, 'bench');
    const run = await cli('bench', '--suite', 'decode', '--only', 'linear,mqa', '--seq', '4', '--reps', '1', '--warmup', '0',
      '--backend', backend, '--out', out);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/\| linear +\| cached +\|/);
    expect(fs.readdirSync(out).sort()).toEqual(['decode.json', 'decode.md']);
    const wrong = await cli('bench', '--suite', 'decode', '--only', 'sdpa', '--backend', backend, '--out', out);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/--suite decode rows are mha, gqa, flash, linear, local-global, mqa, gqa-window, gqa-window-sinks/);
  });
});
