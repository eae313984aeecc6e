// The package as a user meets it: `npm pack` of a fresh build, installed by npm with
// `@tensorflow/tfjs` into a new app (fixtures/app.ts), where plain `node` processes require it
// (CommonJS) and import it (ES modules), the README's quickstart runs both ways, every
// TypeScript block of the README and docs/ type-checks and runs (fixtures/doc_blocks.ts), the
// CLI runs without its former dependencies, and the packaging checkers (attw, publint) find
// nothing. Runs once (the 'once' project), not once per backend.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {execFileSync, spawnSync} from 'child_process';
import {installApp, packTarball, productionTree} from '../fixtures/app';
import {
  compileBlocks, DocBlock, docFiles, extractBlocks, inTurns, missingOutput, runBlock,
} from '../fixtures/doc_blocks';

const ROOT = path.join(__dirname, '..', '..');
const HEAVY = ['vega', 'vega-lite', 'commander', 'cli-progress', '@tensorflow/tfjs-node'];

describe('package (packed, installed by npm into an app, run by node)', () => {
  let tmp = '';
  let tarball = '';
  let app = '';
  let pkg = '';

  /** Runs `code` with node in the app folder; returns the last line of stdout, throwing with stderr on failure. */
  function run(code: string, type: 'module' | 'commonjs', env: NodeJS.ProcessEnv = {}): string {
    const file = path.join(app, type === 'module' ? 'app.mjs' : 'app.cjs');
    fs.writeFileSync(file, code);
    const r = spawnSync(process.execPath, [file], {cwd: app, encoding: 'utf8', timeout: 120000,
      env: {...process.env, TFJS_ATTENTION_BACKEND: 'cpu', ...env}});
    if (r.status !== 0) throw new Error(`node ${path.basename(file)} exited ${r.status}:\n${r.stderr}`);
    return r.stdout.trim().split('\n').pop()!;
  }

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-package-'));
    tarball = packTarball(tmp);
    app = installApp(tmp, tarball);
    pkg = path.join(app, 'node_modules', 'tfjs-attention');
  }, 300000);

  afterAll(() => {
    if (tmp !== '') fs.rmSync(tmp, {recursive: true, force: true}); // the folder this suite made
  });

  test('the tarball: the builds, models, sample text, docs, LICENSE and CHANGELOG; no source map, no src/', () => {
    const files = execFileSync('tar', ['-tzf', tarball], {encoding: 'utf8'}).trim().split('\n')
      .map((f) => f.replace(/^package\//, ''));
    for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts',
      'dist/node.js', 'dist/esm/index.js', 'dist/esm/index.d.ts', 'dist/esm/package.json', 'dist/train/index.js',
      'dist/internals.js', 'dist/cli/main.js', 'models/gqa/model.json', 'data/text/attention.txt', 'docs/layers.md']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('examples/'))).toEqual([]);
    expect(fs.existsSync(path.join(pkg, 'dist', 'esm', 'cli'))).toBe(false);
  });

  test('every link of the README and docs/ resolves (relative ones to a shipped file, images absolute); ' +
    'the README has at most 200 lines', () => {
    expect(fs.readFileSync(path.join(pkg, 'README.md'), 'utf8').trimEnd().split('\n').length).toBeLessThanOrEqual(200);
    const bad: string[] = [];
    for (const file of docFiles()) {
      const text = fs.readFileSync(path.join(pkg, file), 'utf8').replace(/```[\s\S]*?```/g, '');
      for (const m of text.matchAll(/(!?)\[[^\]]*\]\(([^)\s]+)[^)]*\)/g)) {
        const [, image, target] = m;
        if (/^(https?:|mailto:)/.test(target)) continue;
        if (image !== '') bad.push(`${file}: image ${target} is not an absolute URL`);
        else if (!target.startsWith('#') && !fs.existsSync(path.join(pkg, path.dirname(file), target.split('#')[0]))) {
          bad.push(`${file}: ${target} is not in the package`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  test('the production tree holds the wasm backend and none of vega, vega-lite, commander, cli-progress, ' +
    'tfjs-node', () => {
    const tree = productionTree(app);
    expect(tree).toEqual(expect.arrayContaining(['tfjs-attention', '@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm']));
    expect(tree.filter((n) => HEAVY.includes(n))).toEqual([]);
    expect(HEAVY.filter((n) => fs.existsSync(path.join(app, 'node_modules', n)))).toEqual([]);
  });

  test('importing the library leaves tfjs as it was: a synchronous program runs on the same backend (CommonJS and ESM)', () => {
    const program = (withLibrary: boolean, type: 'module' | 'commonjs') => (type === 'commonjs'
      ? `const tf = require('@tensorflow/tfjs');${withLibrary ? " require('tfjs-attention');" : ''}`
      : `import * as tf from '@tensorflow/tfjs';${withLibrary ? " import 'tfjs-attention';" : ''}`) +
      `\nconst y = tf.ones([1]).dataSync();
      console.log(JSON.stringify({y: Array.from(y), backend: tf.getBackend(), registered: Object.keys(tf.engine().registryFactory)}));`;
    for (const type of ['commonjs', 'module'] as const) {
      const plain = JSON.parse(run(program(false, type), type, {TFJS_ATTENTION_BACKEND: ''}));
      const withLibrary = JSON.parse(run(program(true, type), type, {TFJS_ATTENTION_BACKEND: ''}));
      expect(plain.y).toEqual([1]);
      expect(withLibrary).toEqual(plain);
      expect(withLibrary.registered).not.toContain('wasm');
    }
  });

  test("the README's quickstart runs as written, as an ES module and in CommonJS", async () => {
    const readme = extractBlocks('README.md');
    const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n');
    const start = text.findIndex((l) => /^## Quickstart/.test(l));
    const quickstart = readme.find((b) => b.line > start)!;
    expect(start).toBeGreaterThan(0);
    expect(quickstart.noRun).toBeNull();
    expect(compileBlocks(app, [quickstart], [quickstart])).toEqual([]);
    for (const ext of ['mjs', 'cjs'] as const) {
      const r = await runBlock(app, quickstart, ext);
      expect({ext, code: r.code, stderr: r.stderr}).toEqual({ext, code: 0, stderr: ''});
      const m = /loss ([\d.]+) -> ([\d.]+)/.exec(r.stdout);
      expect(m).not.toBeNull();
      expect(Number(m![2])).toBeLessThan(Number(m![1]) / 4);
    }
  }, 300000);

  test('every TypeScript block of the README and docs/ type-checks against the package and runs', async () => {
    const blocks: DocBlock[] = docFiles().flatMap(extractBlocks);
    expect(blocks.length).toBeGreaterThan(10);
    expect(compileBlocks(app, blocks)).toEqual([]);
    const runs = await inTurns(blocks.filter((b) => b.noRun == null).map((b) => () => runBlock(app, b)), 2);
    const failed = runs.filter((r) => r.code !== 0)
      .map((r) => `${r.block.file}:${r.block.line}: exit ${r.code}\n${r.stderr.trim().split('\n').slice(0, 8).join('\n')}`);
    expect(failed).toEqual([]);
    // Where the text shows a block's output, the block prints it.
    const drifted = runs.filter((r) => missingOutput(r.block, r.stdout).length > 0)
      .map((r) => `${r.block.file}:${r.block.line}: not printed: ${missingOutput(r.block, r.stdout).join(' | ')}`);
    expect(drifted).toEqual([]);
    expect(blocks.filter((b) => b.output != null).length).toBeGreaterThan(3);
    const skipped = blocks.filter((b) => b.noRun != null);
    console.log(`docs: ${blocks.length} TypeScript blocks type-checked, ${runs.length} run; not run: ` +
      (skipped.map((b) => `${b.file}:${b.line} (${b.noRun})`).join(', ') || 'none'));
  }, 600000);

  test('CommonJS: the node condition loads the Node build (a file:// handler, no extra import); every entry requires', () => {
    const router = run(`
      const tf = require('@tensorflow/tfjs');
      const before = tf.io.getSaveHandlers('file:///tmp/x').length;
      require('tfjs-attention');
      console.log(JSON.stringify({before, after: tf.io.getSaveHandlers('file:///tmp/x').length,
        resolved: require.resolve('tfjs-attention').split('node_modules/tfjs-attention/')[1]}));`, 'commonjs');
    expect(JSON.parse(router)).toEqual({before: 0, after: 1, resolved: 'dist/node.js'});
    const out = run(`
      const tf = require('@tensorflow/tfjs');
      const core = require('tfjs-attention');
      const node = require('tfjs-attention/node');
      const train = require('tfjs-attention/train');
      const internals = require('tfjs-attention/internals');
      core.selectBackend().then((b) => {
        const y = new core.MultiHeadAttention({numHeads: 2, headDim: 4}).apply(tf.ones([1, 3, 8]));
        console.log(JSON.stringify({b, shape: y.shape, node: typeof node.loadModel, version: core.VERSION,
          train: typeof train.train, internals: typeof internals.wasmKernelStatus, hidden: 'wasmKernelStatus' in core}));
      });`, 'commonjs');
    expect(JSON.parse(out)).toEqual({b: 'cpu', shape: [1, 3, 8], node: 'function', version: expect.any(String),
      train: 'function', internals: 'function', hidden: false});
  });

  test('ES module: import, model.save to file:// with no extra import, loadModel back equal, selectBackend starts wasm', () => {
    const out = run(`
      import * as tf from '@tensorflow/tfjs';
      import {MultiHeadAttention, loadModel, selectBackend} from 'tfjs-attention';
      const backend = await selectBackend();
      const x = tf.input({shape: [4, 8]});
      const m = tf.model({inputs: x, outputs: new MultiHeadAttention({numHeads: 2, headDim: 4}).apply(x)});
      await m.save('file://${path.join(tmp, 'saved')}');
      const back = await loadModel('${path.join(tmp, 'saved')}');
      const a = tf.randomUniform([2, 4, 8], -1, 1, 'float32', 3);
      const d = tf.max(tf.abs(tf.sub(m.predict(a), back.predict(a))));
      console.log(JSON.stringify({backend, diff: (await d.data())[0], files: (await import('fs')).readdirSync('${path.join(tmp, 'saved')}').sort()}));`,
    'module', {TFJS_ATTENTION_BACKEND: ''});
    expect(JSON.parse(out)).toEqual({backend: 'wasm', diff: 0, files: ['model.json', 'weights.bin']});
  });

  test('the train entry alone brings the fixes too: backprop through a broadcast matMul (tfjs 4.22 throws there)', () => {
    const program = (entry: string) => `
      const tf = require('@tensorflow/tfjs');
      ${entry}
      const b = tf.ones([3, 4, 5]);
      try {
        const g = tf.grad((a) => tf.sum(tf.matMul(a, b)))(tf.ones([1, 2, 4]));
        console.log(JSON.stringify(g.shape));
      } catch (e) {
        console.log(JSON.stringify('throws'));
      }`;
    expect(JSON.parse(run(program(''), 'commonjs'))).toBe('throws'); // the test can fail: tfjs alone throws
    expect(JSON.parse(run(program("require('tfjs-attention/train');"), 'commonjs'))).toEqual([1, 2, 4]);
  });

  test("opting out before the wasm backend starts: setLibraryKernels('tfjs') keeps tfjs's wasm kernels until 'library'", () => {
    const out = run(`
      import {selectBackend, setLibraryKernels} from 'tfjs-attention';
      import {wasmKernelStatus} from 'tfjs-attention/internals';
      setLibraryKernels('tfjs');
      const backend = await selectBackend('wasm');
      const off = wasmKernelStatus();
      setLibraryKernels('library');
      console.log(JSON.stringify({backend, off, on: wasmKernelStatus()}));`, 'module');
    const r = JSON.parse(out);
    expect(r.backend).toBe('wasm');
    expect(r.off).toEqual({Slice: 'kept', UnsortedSegmentSum: 'added', BatchMatMul: 'kept', _FusedMatMul: 'kept',
      Tile: 'kept', Identity: 'kept', GatherV2: 'kept'});
    expect(r.on).toEqual({Slice: 'replaced', UnsortedSegmentSum: 'added', BatchMatMul: 'replaced',
      _FusedMatMul: 'replaced', Tile: 'replaced', Identity: 'replaced', GatherV2: 'replaced'});
  });

  test('ES module on a Node without getBuiltinModule: the node condition still reaches the file system', () => {
    const out = run(`
      delete process.getBuiltinModule;
      const core = await import('tfjs-attention');
      await core.selectBackend();
      const model = await core.loadModel('${path.join(pkg, 'models', 'mha')}');
      console.log(JSON.stringify({layers: model.layers.length > 0}));`, 'module');
    expect(JSON.parse(out)).toEqual({layers: true});
  });

  test('the CLI runs from the install: --version, inspect a shipped model, bench without vega says the plots were skipped', () => {
    const bin = path.join(app, 'node_modules', '.bin', 'tfjs-attention');
    const cli = (...args: string[]) => spawnSync(bin, args, {cwd: app, encoding: 'utf8', timeout: 120000});
    const version = cli('--version');
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version);
    const inspect = cli('inspect', '--model', path.join(pkg, 'models', 'gqa'));
    expect(inspect.stderr).toBe('');
    expect(inspect.stdout).toMatch(/block0_attention \(MultiHeadAttention\)/);
    const bench = cli('bench', '--suite', 'quick', '--only', 'sdpa', '--seq', '16', '--batch', '1', '--heads', '1',
      '--dim', '8', '--reps', '1', '--warmup', '0', '--budget', '5', '--no-heap', '--out', 'bench');
    expect(bench.status).toBe(0);
    expect(bench.stderr).toMatch(/plots skipped: time\.svg and memory\.svg need vega and vega-lite \(npm install vega vega-lite\)/);
    expect(fs.readdirSync(path.join(app, 'bench')).sort()).toEqual(['results.json', 'results.md']);
  });

  test('the packaging checkers find nothing: attw (node10, node16 CJS and ESM, bundler) and publint --strict', () => {
    const bin = (name: string, file: string) => path.join(ROOT, 'node_modules', name, file);
    const attw = spawnSync(process.execPath, [bin('@arethetypeswrong/cli', 'dist/index.js'), tarball,
      '--format', 'table-flipped'], {encoding: 'utf8'});
    expect({status: attw.status, out: attw.stdout}).toEqual({status: 0, out: expect.stringContaining('No problems found')});
    const stage = path.join(tmp, 'stage');
    const publint = spawnSync(process.execPath, [bin('publint', 'src/cli.js'), 'run', stage, '--strict'],
      {encoding: 'utf8'});
    expect({status: publint.status, out: publint.stdout}).toEqual({status: 0, out: expect.stringContaining('All good!')});
  });
});
