// Backend selection: names, the environment override, failures, and the static-import rule.
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, selectBackend, VERSION} from '../../src';
import {autoBackends, BACKEND_ENV_VAR} from '../../src/internals';
import {BACKEND, title} from '../support/helpers';

describe(title('selectBackend'), () => {
  const saved = process.env[BACKEND_ENV_VAR];
  afterEach(async () => {
    if (saved == null) delete process.env[BACKEND_ENV_VAR]; else process.env[BACKEND_ENV_VAR] = saved;
    await selectBackend(BACKEND as 'wasm' | 'cpu'); // leave the project's backend in place
  });

  test('an explicit name is used and returned', async () => {
    expect(await selectBackend('cpu')).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(await selectBackend('wasm')).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
  });

  test(`${BACKEND_ENV_VAR} overrides auto, not an explicit name`, async () => {
    process.env[BACKEND_ENV_VAR] = 'cpu';
    expect(await selectBackend()).toBe('cpu');
    process.env[BACKEND_ENV_VAR] = 'wasm';
    expect(await selectBackend()).toBe('wasm');
    expect(await selectBackend('cpu')).toBe('cpu');
  });

  test('auto picks tensorflow when tfjs-node loads, else wasm', async () => {
    delete process.env[BACKEND_ENV_VAR];
    let nodeLoads = true;
    try { require('@tensorflow/tfjs-node'); } catch { nodeLoads = false; }
    expect(await selectBackend('auto')).toBe(nodeLoads ? 'tensorflow' : 'wasm');
  });

  test('bad names and unavailable backends throw AttentionError', async () => {
    process.env[BACKEND_ENV_VAR] = 'gpu';
    await expect(selectBackend()).rejects.toThrow(/backend \(from TFJS_ATTENTION_BACKEND\) must be one of auto, tensorflow, webgpu, webgl, wasm, cpu, received 'gpu'/);
    await expect(selectBackend('gpu' as never)).rejects.toMatchObject({code: 'INVALID_CONFIG'});
    // GPU backends are valid names that cannot start in Node.
    await expect(selectBackend('webgl')).rejects.toThrow(/backend 'webgl' could not be started: it needs a browser/);
    await expect(selectBackend('webgpu')).rejects.toThrow(
      /backend 'webgpu' could not be started: it is not registered \(import '@tensorflow\/tfjs-backend-webgpu' first\)/);
    let nodeLoads = true;
    try { require('@tensorflow/tfjs-node'); } catch { nodeLoads = false; }
    if (!nodeLoads) {
      const error = await selectBackend('tensorflow').catch((e) => e);
      expect(error).toBeInstanceOf(AttentionError);
      expect(error.code).toBe('BACKEND');
      expect(error.message).toMatch(/backend 'tensorflow' could not be started/);
    }
  });

  test('auto tries tensorflow, wasm, cpu in Node (webgpu, webgl, wasm, cpu in a browser)', () => {
    expect(autoBackends()).toEqual(['tensorflow', 'wasm', 'cpu']);
  });

  test('nothing under src/ imports tfjs-node statically', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p); else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(path.join(__dirname, '..', '..', 'src'));
    expect(files.length).toBeGreaterThan(5);
    const offenders = files.filter((f) => /(from\s+|require\(\s*|import\(\s*)['"]@tensorflow\/tfjs-node['"]/.test(fs.readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });

  test('VERSION matches package.json', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    expect(VERSION).toBe(pkg.version);
  });
});
