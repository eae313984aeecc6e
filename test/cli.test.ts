import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {main} from '../src/cli/main';
import {title} from './helpers';

const version = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')).version;

/** Runs the CLI with string buffers for stdout and stderr. */
async function cli(...argv: string[]): Promise<{code: number; stdout: string; stderr: string}> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {stdout: {write: (s: string) => (stdout += s)}, stderr: {write: (s: string) => (stderr += s)}});
  return {code, stdout, stderr};
}

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
    for (const flag of ['--only', '--backend', '--quick', '--warmup', '--reps', '--out', 'naive', 'sdpa']) {
      expect(stdout).toContain(flag);
    }
  });

  it('--version prints the version in package.json', async () => {
    const {code, stdout} = await cli('--version');
    expect(code).toBe(0);
    expect(stdout).toBe(`${version}\n`);
  });

  it('an unknown flag exits 2 with one line', () => expectUsageError(['--nosuch'], /unknown option '--nosuch'/));
  it('a misspelt bench flag exits 2 with one line', () => expectUsageError(['bench', '--onl', 'sdpa'], /--onl\b.*--only/));
  it('an unknown command exits 2', () => expectUsageError(['frobnicate'], /unknown command 'frobnicate'/));
  it('bench --only nosuch exits 2', () => expectUsageError(['bench', '--only', 'nosuch'], /'nosuch'.*naive, sdpa/));
  it('bench --backend bogus exits 2', () => expectUsageError(['bench', '--backend', 'bogus'], /'bogus'.*wasm/));
  it('bench --reps 0 exits 2', () => expectUsageError(['bench', '--reps', '0'], /--reps.*'0'/));
});

describe(title('the built bin'), () => {
  // npm install / npm ci build dist/ through the prepare script.
  test('dist/cli/main.js runs as the tfjs-attention bin: --version and --help', () => {
    const {spawnSync} = require('child_process') as typeof import('child_process');
    const path = require('path') as typeof import('path');
    const pkg = require('../package.json');
    const bin = path.join(__dirname, '..', pkg.bin['tfjs-attention']);
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
