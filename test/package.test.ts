// The built package as Node programs use it: the package is built into a temporary folder
// (node scripts/build.js --out) and installed there by hand; plain `node` processes then
// require it (CommonJS) and import it (ES modules), both entries, with and without
// process.getBuiltinModule. Runs once (the browser project), not once per backend.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {spawnSync} from 'child_process';
import {installBuiltPackage} from './fixtures/package';

const ROOT = path.join(__dirname, '..');

describe('package (built with scripts/build.js, run by node)', () => {
  let tmp = '';
  let pkg = '';

  /** Runs `code` with node in the app folder; returns stdout, throwing with stderr on failure. */
  function run(code: string, type: 'module' | 'commonjs'): string {
    const file = path.join(tmp, type === 'module' ? 'app.mjs' : 'app.cjs');
    fs.writeFileSync(file, code);
    const r = spawnSync(process.execPath, [file], {cwd: tmp, encoding: 'utf8', timeout: 120000,
      env: {...process.env, TFJS_ATTENTION_BACKEND: 'cpu'}});
    if (r.status !== 0) throw new Error(`node ${path.basename(file)} exited ${r.status}:\n${r.stderr}`);
    return r.stdout.trim().split('\n').pop()!;
  }

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-package-'));
    pkg = installBuiltPackage(tmp);
    fs.symlinkSync(path.join(ROOT, 'node_modules', '@tensorflow'), path.join(tmp, 'node_modules', '@tensorflow'));
  }, 120000);

  afterAll(() => {
    if (tmp !== '') fs.rmSync(tmp, {recursive: true, force: true}); // the folder this suite made
  });

  test('every relative import in dist/esm names its file (Node ES modules need the extension)', () => {
    const bad: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.js')) {
          for (const m of fs.readFileSync(p, 'utf8').matchAll(/(?:from|import)\s*\(?\s*['"](\.[^'"]*)['"]/g)) {
            if (!m[1].endsWith('.js') || !fs.existsSync(path.resolve(path.dirname(p), m[1]))) bad.push(`${p}: ${m[1]}`);
          }
        }
      }
    };
    walk(path.join(pkg, 'dist', 'esm'));
    expect(bad).toEqual([]);
    expect(fs.existsSync(path.join(pkg, 'dist', 'esm', 'cli'))).toBe(false);
    expect(JSON.parse(fs.readFileSync(path.join(pkg, 'dist', 'esm', 'package.json'), 'utf8')).type).toBe('module');
  });

  test('CommonJS: require of both entries; a layer runs; the node entry is the same API', () => {
    const out = run(`
      const tf = require('@tensorflow/tfjs');
      const core = require('tfjs-attention');
      const node = require('tfjs-attention/node');
      core.selectBackend().then((b) => {
        const y = new core.MultiHeadAttention({numHeads: 2, headDim: 4}).apply(tf.ones([1, 3, 8]));
        console.log(JSON.stringify({b, shape: y.shape, same: node.loadModel === core.loadModel, version: core.VERSION}));
      });`, 'commonjs');
    expect(JSON.parse(out)).toEqual({b: 'cpu', shape: [1, 3, 8], same: true, version: expect.any(String)});
  });

  test('ES module: import, model.save to file://, loadModel back equal', () => {
    const out = run(`
      import * as tf from '@tensorflow/tfjs';
      import {MultiHeadAttention, loadModel, selectBackend} from 'tfjs-attention';
      await selectBackend();
      const x = tf.input({shape: [4, 8]});
      const m = tf.model({inputs: x, outputs: new MultiHeadAttention({numHeads: 2, headDim: 4}).apply(x)});
      await m.save('file://${path.join(tmp, 'saved')}');
      const back = await loadModel('${path.join(tmp, 'saved')}');
      const a = tf.randomUniform([2, 4, 8], -1, 1, 'float32', 3);
      const d = tf.max(tf.abs(tf.sub(m.predict(a), back.predict(a))));
      console.log(JSON.stringify({diff: (await d.data())[0], files: (await import('fs')).readdirSync('${path.join(tmp, 'saved')}').sort()}));`,
    'module');
    expect(JSON.parse(out)).toEqual({diff: 0, files: ['model.json', 'weights.bin']});
  });

  test('ES module on a Node without getBuiltinModule: the node export condition still reaches the file system', () => {
    const out = run(`
      delete process.getBuiltinModule;
      const core = await import('tfjs-attention');
      await core.selectBackend();
      const model = await core.loadModel('${path.join(ROOT, 'models', 'mha')}');
      console.log(JSON.stringify({layers: model.layers.length > 0}));`, 'module');
    expect(JSON.parse(out)).toEqual({layers: true});
  });
});
