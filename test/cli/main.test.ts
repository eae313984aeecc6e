import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {title} from '../support/helpers';
import {cli} from '../support/cli_helper';

const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version;

/** Exit 2, nothing on stdout, exactly one line on stderr that matches `pattern`. */
async function expectUsageError(argv: string[], pattern: RegExp): Promise<void> {
  const {code, stdout, stderr} = await cli(...argv);
  expect(code).toBe(2);
  expect(stdout).toBe('');
  expect(stderr).toMatch(/^error: [^\n]+\n$/);
  expect(stderr).toMatch(pattern);
}

describe(title('cli'), () => {
  // Parsing errors must surface before any command switches the backend.
  let backendBefore: string;
  beforeAll(() => { backendBefore = tf.getBackend(); });
  afterAll(() => expect(tf.getBackend()).toBe(backendBefore));

  it('--help lists the bench command', async () => {
    const {code, stdout, stderr} = await cli('--help');
    expect(code).toBe(0);
    expect(stdout).toMatch(/Usage: tfjs-attention/);
    expect(stdout).toMatch(/^\s+bench\b/m);
    expect(stderr).toBe('');
  });

  it('bench --help lists its flags and implementations', async () => {
    const {code, stdout} = await cli('bench', '--help');
    expect(code).toBe(0);
    for (const flag of ['--only', '--backend', '--quick', '--warmup', '--reps', '--out', '--seq', '--batch',
      '--heads', '--kv-heads', '--dim', 'naive', 'sdpa', 'sdpa-causal', 'flash', 'flash-causal',
      'linear', 'linear-causal', 'local-global', 'local-global-dense', 'matmul', 'mha-layer', 'mha-layer-naive',
      '--suite', '--budget', '--matmul-path', 'quick:', 'full:']) {
      expect(stdout).toContain(flag);
    }
  });

  it('--version prints the version in package.json', async () => {
    const {code, stdout} = await cli('--version');
    expect(code).toBe(0);
    expect(stdout).toBe(`${version}\n`);
  });

  it('an unknown flag exits 2 with one line', () => expectUsageError(['--nosuch'], /unknown option '--nosuch'/));

  it('help, help <command>, --help and --version anywhere on the line print to stdout and exit 0', async () => {
    const help = await cli('help');
    expect([help.code, help.stderr]).toEqual([0, '']);
    expect(help.stdout).toMatch(/^Usage: tfjs-attention \[options\] \[command\]/);
    expect(help.stdout).toMatch(/^\s+help \[command\]/m);
    for (const argv of [['help', 'train'], ['train', '--bogus', '--help'], ['train', '-h']]) {
      const r = await cli(...argv);
      expect({argv, code: r.code, stderr: r.stderr}).toEqual({argv, code: 0, stderr: ''});
      expect(r.stdout).toMatch(/^Usage: tfjs-attention train \[options\]\n/);
      expect(r.stdout).toMatch(/^\s+--task <name>/m);
    }
    const printed = await cli('train', '--version');
    expect([printed.code, printed.stdout]).toEqual([0, `${version}\n`]);
  });

  it('no command prints the help on stderr and exits 2; help for an unknown command exits 2', async () => {
    const none = await cli();
    expect([none.code, none.stdout]).toEqual([2, '']);
    expect(none.stderr).toMatch(/^Usage: tfjs-attention/);
    await expectUsageError(['help', 'trian'], /unknown command 'trian' \(Did you mean train\?\)/);
  });
  it('a misspelt bench flag exits 2 with one line', () => expectUsageError(['bench', '--onl', 'sdpa'], /--onl\b.*--only/));
  it('an unknown command exits 2', () => expectUsageError(['frobnicate'], /unknown command 'frobnicate'/));
  it('bench --only nosuch exits 2', () => expectUsageError(['bench', '--only', 'nosuch'], /'nosuch'.*naive, sdpa/));
  it('bench --backend bogus exits 2', () => expectUsageError(['bench', '--backend', 'bogus'], /'bogus'.*wasm/));
  it('bench --reps 0 exits 2', () => expectUsageError(['bench', '--reps', '0'], /--reps.*'0'/));
  it('bench --seq 512,0 exits 2', () => expectUsageError(['bench', '--seq', '512,0'], /--seq.*'512,0'.*integers >= 1/));
  it('bench --seq 512,abc exits 2', () => expectUsageError(['bench', '--seq', '512,abc'], /--seq.*'512,abc'/));
  it('bench --seq with an empty entry exits 2', () => expectUsageError(['bench', '--seq', '512,'], /--seq.*'512,'/));
  it('bench --heads 0 exits 2', () => expectUsageError(['bench', '--heads', '0'], /--heads.*'0'/));
  it('bench --batch 1.5 exits 2', () => expectUsageError(['bench', '--batch', '1.5'], /--batch.*'1\.5'/));
  it('bench --dim x exits 2', () => expectUsageError(['bench', '--dim', 'x'], /--dim.*'x'/));
  it('bench --kv-heads 0 exits 2', () => expectUsageError(['bench', '--kv-heads', '0'], /--kv-heads.*'0'/));
  it('bench --suite huge exits 2', () => expectUsageError(['bench', '--suite', 'huge'], /'huge'.*quick, full/));
  it('bench --budget x exits 2', () => expectUsageError(['bench', '--budget', 'x'], /--budget.*'x'/));
  it('bench --matmul-path fast exits 2', () =>
    expectUsageError(['bench', '--matmul-path', 'fast'], /'fast'.*auto, split, batched/));
  it('bench --heads 4 --kv-heads 3 exits 2', () =>
    expectUsageError(['bench', '--heads', '4', '--kv-heads', '3'], /heads \(4\) must be divisible by kvHeads \(3\)/));

  it('bench --seq --batch --heads --kv-heads --dim run exactly those shapes', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-cli-'));
    try {
      const {code, stdout} = await cli('bench', '--only', 'sdpa,flash', '--seq', '6,9', '--batch', '2', '--heads', '4',
        '--kv-heads', '2', '--dim', '4', '--warmup', '0', '--reps', '1', '--backend', tf.getBackend(), '--out', out);
      expect(code).toBe(0);
      expect(stdout).toContain('results.json');
      const {rows} = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
      expect(rows.map((r: Record<string, unknown>) => [r.impl, r.pass, r.B, r.H, r.G, r.T, r.S, r.D, r.error])).toEqual(
        [6, 9].flatMap((T) => ['sdpa', 'flash'].flatMap((impl) =>
          ['fwd', 'fwd+bwd'].map((pass) => [impl, pass, 2, 4, 2, T, T, 4, undefined]))));
    } finally {
      fs.rmSync(out, {recursive: true, force: true});
    }
  });
});

describe(title('the built bin'), () => {
  // npm install / npm ci build dist/ through the prepare script.
  test('dist/cli/main.js runs as the tfjs-attention bin: --version and --help', () => {
    const {spawnSync} = require('child_process') as typeof import('child_process');
    const path = require('path') as typeof import('path');
    const pkg = require('../../package.json');
    const bin = path.join(__dirname, '..', '..', pkg.bin['tfjs-attention']);
    const version = spawnSync(process.execPath, [bin, '--version'], {encoding: 'utf8'});
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toBe(pkg.version);
    const help = spawnSync(process.execPath, [bin, '--help'], {encoding: 'utf8'});
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/bench/);
    const bad = spawnSync(process.execPath, [bin, '--frobnicate'], {encoding: 'utf8'});
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe(title('the command-line parser'), () => {
  const {Command, Option, InvalidArgumentError, UsageError} = require('../../src/cli/command') as typeof import('../../src/cli/command');

  /** Parses argv with one subcommand 'go' and returns its flags and sources, or the usage error's message. */
  async function parse(argv: string[]): Promise<unknown> {
    const program = new Command('p').configureOutput({writeOut: () => undefined, writeErr: () => undefined});
    let seen: unknown = null;
    program.command('go')
      .option('--count <n>', 'a count', (v) => {
        if (!/^\d+$/.test(v)) throw new InvalidArgumentError('Expected digits.');
        return Number(v);
      }, 3)
      .addOption(new Option('--mode <m>', 'a mode').choices(['a', 'b']))
      .requiredOption('--name <s>', 'a name')
      .option('--no-heap', 'no heap')
      .option('--quiet', 'quiet', false)
      .action((f: Record<string, unknown>, cmd) => {
        seen = {...f, countFrom: cmd.getOptionValueSource('count')};
      });
    try {
      await program.parseAsync(argv);
      return seen;
    } catch (e) {
      return e instanceof UsageError ? `${e.exitCode}: ${e.message}` : e;
    }
  }

  test('values with a space or =, defaults and their source, --no-x, booleans', async () => {
    expect(await parse(['go', '--name', 'x', '--count=7', '--no-heap', '--quiet', '--mode', 'b'])).toEqual(
      {name: 'x', count: 7, heap: false, quiet: true, mode: 'b', countFrom: 'cli'});
    expect(await parse(['go', '--name=y'])).toEqual({name: 'y', count: 3, heap: true, quiet: false, countFrom: 'default'});
  });

  test('usage errors name the flag and the value; help exits 0', async () => {
    expect(await parse(['go', '--name', 'x', '--count', 'z'])).toBe("2: option '--count <n>' argument 'z' is invalid. Expected digits.");
    expect(await parse(['go', '--name', 'x', '--mode', 'c'])).toBe("2: option '--mode <m>' argument 'c' is invalid. Allowed choices are a, b.");
    expect(await parse(['go'])).toBe("2: required option '--name <s>' not specified");
    expect(await parse(['go', '--name'])).toBe("2: option '--name <s>' argument missing");
    expect(await parse(['go', '--nme', 'x'])).toBe("2: unknown option '--nme' (Did you mean --name?)");
    expect(await parse(['go', '--name', 'x', 'extra'])).toMatch(/^2: too many arguments for 'go'/);
    expect(await parse(['gp'])).toBe("2: unknown command 'gp' (Did you mean go?)");
    expect(await parse(['go', '--help'])).toBe('0: help');
  });

  test('the progress bar redraws one line and ends it once', () => {
    const {ProgressBar, barLine, formatEta} = require('../../src/cli/progress_bar') as typeof import('../../src/cli/progress_bar');
    expect(barLine(5, 10, 'loss 1', '3 s')).toBe(`step 5/10 |${'#'.repeat(12)}${'-'.repeat(12)}| loss 1 ETA 3 s`);
    expect([formatEta(42), formatEta(185), formatEta(3720)]).toEqual(['42 s', '3 min 05 s', '1 h 02 min']);
    const written: string[] = [];
    const bar = new ProgressBar({write: (s: string) => written.push(s), columns: 80}, 10);
    bar.update(1, 'loss 2');
    bar.update(2, 'loss 1', 12);
    bar.stop();
    bar.stop();
    bar.update(3, 'late');
    expect(written).toHaveLength(3);
    expect(written[0]).toMatch(/^\rstep 1\/10 \|#{2}-{22}\| loss 2 ETA - *$/);
    expect(written[1]).toMatch(/^\rstep 2\/12 \|#+-+\| loss 1 ETA /);
    expect(written[2]).toBe('\n');
  });
});
