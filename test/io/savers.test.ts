// One saver per folder: two processes saving different models into one folder 20 times
// each leave, after every round, a folder that loads as exactly one of the two models and
// holds no file its model.json does not list; the folder's lock makes a second saver wait,
// fail naming a live holder, and take over a dead one's; orphan weights of dead writers go
// with the next save, a user's files stay. The CLI checks its output folder before it works.
// Runs once (the 'once' project), on cpu: what lands on disk does not depend on the backend.
import {spawn, spawnSync} from 'child_process';
import {Worker} from 'worker_threads';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {selectBackend} from '../../src/kernels/backend';
import {AttentionError} from '../../src/core/errors';
import {fileSystem, registerFileRouter} from '../../src/io/file_system';
import {takeOver} from '../../src/io/lock';
import {loadModel, saveCheckpoint, readTrainingRecord} from '../../src/train/checkpoint';
import {cli} from '../support/cli_helper';
import {denseModel, denseWeights, LOOP_INPUTS} from '../fixtures/dense';
import {killChildren, spawnGated} from '../fixtures/gate';

const ROUNDS = 20;
const LOCK = '.model.json.lock';
const TAKEOVER = '.model.json.lock.takeover';
const KERAS = path.join(__dirname, '..', 'fixtures', 'keras', 'keras3_self');

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** A pid no process has: a child that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

/** A lock file's text for `pid` on `host` (this host by default). */
function lockText(pid: number, host = os.hostname(), extra: object = {}): string {
  return JSON.stringify({pid, host, token: `${pid}-abcdefgh`, since: new Date().toISOString(), start: null, ...extra});
}

/** Files and their bytes (base64) in dir, folders as '<dir>'. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of fs.readdirSync(dir)) {
    const file = path.join(dir, name);
    out[name] = fs.statSync(file).isDirectory() ? '<dir>' : fs.readFileSync(file).toString('base64');
  }
  return out;
}

let root: string;
beforeAll(async () => {
  tf.env().set('PROD', true);
  await selectBackend('cpu');
  registerFileRouter();
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-savers-'));
});
afterAll(() => {
  killChildren();
  fs.rmSync(root, {recursive: true, force: true});
});

describe('two processes saving into one folder', () => {
  test(`2 x ${ROUNDS} saves: after every round the folder loads as one of the two models, nothing unlisted stays`, async () => {
    const dir = path.join(root, 'shared');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'the user keeps notes here');
    const models = [1, 2].map((seed) => denseWeights(seed, LOOP_INPUTS)).map((w) => [bytes(w.kernel), bytes(w.bias)]);
    const children = [1, 2].map((seed) => spawnGated('test/fixtures/save_loop_child.ts', [dir, String(seed)]));
    await Promise.all(children.map((c) => c.line(/^ready/)));
    const wins = [0, 0];
    let overlapping = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      children.forEach((c) => c.go('save'));
      const done = await Promise.all(children.map((c) => c.line(new RegExp(`^saved ${round} `))));
      const [a, b] = done.map((line) => line.split(' ').slice(2).map(Number));
      if (a[0] < b[1] && b[0] < a[1]) overlapping++; // both saves under way at once: the lock made one wait
      // Every name is the model's or the user's: no lock, journal, temp or unlisted weights file.
      const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
      const listed = json.weightsManifest.flatMap((g: {paths: string[]}) => g.paths);
      expect({round, names: fs.readdirSync(dir).sort()}).toEqual({round, names: ['model.json', 'notes.txt', ...listed].sort()});
      const model = await tf.loadLayersModel(`file://${dir}`);
      const got = model.getWeights().map((w) => bytes(w.dataSync() as Float32Array));
      model.dispose();
      const which = models.findIndex((m) => m.every((x, i) => x.equals(got[i])));
      expect({round, which}).toEqual({round, which: expect.any(Number)});
      expect(which).toBeGreaterThanOrEqual(0); // never a mix of the two
      wins[which]++;
    }
    children.forEach((c) => c.go('exit'));
    await Promise.all(children.map((c) => c.exited));
    expect(wins[0] + wins[1]).toBe(ROUNDS);
    expect(overlapping).toBeGreaterThan(0); // the saves did contend for the folder
    expect(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('the user keeps notes here');
    process.stdout.write(`2 x ${ROUNDS} saves: ${overlapping} rounds overlapped, last save won by seed 1 in ${wins[0]}, ` +
      `seed 2 in ${wins[1]}; every round one whole model\n`);
  });

  test('two saves of one process into one folder at once: the second waits, the folder holds one whole model', async () => {
    const dir = path.join(root, 'same-process');
    const [a, b] = [3, 4].map((seed) => denseModel(seed, 10));
    await Promise.all([a.save(`file://${dir}`), b.save(`file://${dir}`)]);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    const got = bytes(loaded.getWeights()[0].dataSync() as Float32Array);
    expect([3, 4].some((seed) => bytes(denseWeights(seed, 10).kernel).equals(got))).toBe(true);
    [a, b, loaded].forEach((m) => m.dispose());
  });
});

describe('savers racing', () => {
  test('three processes racing for a dead holder\'s lock, 5 rounds: every save lands, the folder holds one whole model', async () => {
    const dir = path.join(root, 'three');
    fs.mkdirSync(dir);
    const models = [1, 2, 3].map((seed) => bytes(denseWeights(seed, LOOP_INPUTS).kernel));
    const children = [1, 2, 3].map((seed) => spawnGated('test/fixtures/save_loop_child.ts', [dir, String(seed)]));
    await Promise.all(children.map((c) => c.line(/^ready/)));
    for (let round = 1; round <= 5; round++) {
      fs.writeFileSync(path.join(dir, LOCK), lockText(deadPid()));
      children.forEach((c) => c.go('save'));
      await Promise.all(children.map((c) => c.line(new RegExp(`^saved ${round} `))));
      expect({round, names: fs.readdirSync(dir).sort()}).toEqual({round, names: ['model.json', 'weights.bin']});
      const model = await tf.loadLayersModel(`file://${dir}`);
      const kernel = bytes(model.getWeights()[0].dataSync() as Float32Array);
      model.dispose();
      expect(models.some((m) => m.equals(kernel))).toBe(true);
    }
    children.forEach((c) => c.go('exit'));
    await Promise.all(children.map((c) => c.exited));
    children.forEach((c) => expect(c.output()).not.toMatch(/Error/));
  });

  test('a worker thread and the main thread, 10 saves each into one folder: none fails, one whole model stays', async () => {
    const dir = path.join(root, 'threads');
    const fixture = path.join(__dirname, '..', 'fixtures', 'save_worker.ts');
    const worker = new Worker(`require('ts-node').register({transpileOnly: true}); require(${JSON.stringify(fixture)});`,
      {eval: true, workerData: {dir, seed: 8, saves: 10}});
    const posted = new Promise<{errors: string[]}>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const model = denseModel(9, 10);
    const errors: string[] = [];
    for (let i = 0; i < 10; i++) await model.save(`file://${dir}`).catch((e) => errors.push(e.message));
    expect({main: errors, worker: (await posted).errors}).toEqual({main: [], worker: []});
    await worker.terminate();
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    const kernel = bytes(loaded.getWeights()[0].dataSync() as Float32Array);
    expect([8, 9].some((seed) => bytes(denseWeights(seed, 10).kernel).equals(kernel))).toBe(true);
    [model, loaded].forEach((m) => m.dispose());
  });
});

describe('the folder lock', () => {
  let sleeper: ReturnType<typeof spawn>;
  beforeAll(() => { sleeper = spawn('sleep', ['60']); });
  afterAll(() => { sleeper.kill('SIGKILL'); });

  /** A folder holding model 5 and a lock file with `text`. */
  async function locked(name: string, text: string, mtime?: Date): Promise<string> {
    const dir = path.join(root, name);
    const model = denseModel(5, 10);
    await model.save(`file://${dir}`);
    model.dispose();
    fs.writeFileSync(path.join(dir, LOCK), text);
    if (mtime != null) fs.utimesSync(path.join(dir, LOCK), mtime, mtime);
    return dir;
  }

  async function saveRefused(dir: string, timeout: number): Promise<{error: AttentionError; ms: number}> {
    const model = denseModel(6, 10);
    const t0 = Date.now();
    const error = await model.save(fileSystem(dir, {lockTimeout: timeout})).then(() => null, (e) => e);
    model.dispose();
    expect(error).toBeInstanceOf(AttentionError);
    expect(error.code).toBe('IO');
    return {error, ms: Date.now() - t0};
  }

  test('held by a live process of this host: the save waits lockTimeout, then fails naming the holder; nothing changes', async () => {
    const dir = await locked('live', lockText(sleeper.pid!));
    const before = snapshot(dir);
    const {error, ms} = await saveRefused(dir, 300);
    expect(error.message).toMatch(new RegExp('cannot save model to \'.*live\': another save into this folder holds its lock ' +
      `\\(pid ${sleeper.pid} on host '${os.hostname()}', since .*\\) and did not finish within 300 ms; if that process ` +
      `is gone, delete '.*${LOCK.replace(/\./g, '\\.')}'`));
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(snapshot(dir)).toEqual(before);
  });

  test('held by a process that is gone (same host): taken over at once, the save lands and the lock goes', async () => {
    const dir = await locked('dead', lockText(deadPid()));
    const model = denseModel(6, 10);
    await model.save(fileSystem(dir, {lockTimeout: 0}));
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(bytes(loaded.getWeights()[0].dataSync() as Float32Array)
      .equals(bytes(denseWeights(6, 10).kernel))).toBe(true);
    [model, loaded].forEach((m) => m.dispose());
  });

  test('a reused pid (alive, started at another time) is a dead holder', async () => {
    if (!fs.existsSync(`/proc/${process.pid}/stat`)) return; // start times come from Linux's /proc
    const dir = await locked('reused', lockText(sleeper.pid!, os.hostname(), {start: '1'}));
    const model = denseModel(6, 10);
    await model.save(fileSystem(dir, {lockTimeout: 0}));
    expect(fs.existsSync(path.join(dir, LOCK))).toBe(false);
    model.dispose();
  });

  test('a lock of another host is never taken over, even with a pid that is free here', async () => {
    const dir = await locked('elsewhere', lockText(deadPid(), 'another-host'));
    const {error} = await saveRefused(dir, 100);
    expect(error.message).toMatch(/holds its lock \(pid \d+ on host 'another-host'.*delete '/);
    expect(fs.existsSync(path.join(dir, LOCK))).toBe(true);
  });

  test('an unreadable lock file: waited on while fresh, taken over once 10 s old', async () => {
    const fresh = await locked('garbled-fresh', '{"pid": ');
    expect((await saveRefused(fresh, 100)).error.message).toMatch(/holds its lock \(an unreadable lock file\)/);
    const old = await locked('garbled-old', '{"pid": ', new Date(Date.now() - 60_000));
    const model = denseModel(6, 10);
    await model.save(fileSystem(old, {lockTimeout: 0}));
    expect(fs.readdirSync(old).sort()).toEqual(['model.json', 'weights.bin']);
    model.dispose();
  });

  test('a dead lock replaced by a live one in the same inode is not deleted by a taker that judged it dead', () => {
    const dir = path.join(root, 'same-inode');
    fs.mkdirSync(dir);
    const file = path.join(dir, LOCK);
    const dead = deadPid();
    fs.writeFileSync(file, lockText(dead));
    const judged = {ino: fs.statSync(file).ino, token: `${dead}-abcdefgh`};
    fs.writeFileSync(file, lockText(sleeper.pid!, os.hostname(), {token: `${sleeper.pid}-livelock`})); // same inode
    expect(fs.statSync(file).ino).toBe(judged.ino);
    expect(takeOver(dir, judged, lockText(process.pid))).toBe(true);
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).token).toBe(`${sleeper.pid}-livelock`);
    expect(fs.readdirSync(dir)).toEqual([LOCK]); // and no takeover file stays
    fs.writeFileSync(file, lockText(dead)); // the judged holder again: deleted
    expect(takeOver(dir, judged, lockText(process.pid))).toBe(true);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  test("a live taker's takeover file makes a save wait; a dead taker's goes with the next save", async () => {
    const live = await locked('taker-live', lockText(deadPid()));
    fs.writeFileSync(path.join(live, TAKEOVER), lockText(sleeper.pid!));
    expect((await saveRefused(live, 200)).error.message).toMatch(/holds its lock \(pid \d+ on host/);
    expect(fs.existsSync(path.join(live, LOCK))).toBe(true);
    for (const withLock of [true, false]) {
      const dir = await locked(`taker-dead-${withLock}`, lockText(deadPid()));
      if (!withLock) fs.unlinkSync(path.join(dir, LOCK));
      fs.writeFileSync(path.join(dir, TAKEOVER), lockText(deadPid()));
      const model = denseModel(6, 10);
      await model.save(fileSystem(dir, {lockTimeout: 1000}));
      model.dispose();
      expect({withLock, names: fs.readdirSync(dir).sort()}).toEqual({withLock, names: ['model.json', 'weights.bin']});
    }
  });

  test('a checkpoint save waits for the holder, and goes on once it is gone', async () => {
    const out = path.join(root, 'ckpt');
    expect((await cli('train', '--task', 'reverse', '--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2',
      '--kv-heads', '1', '--layers', '1', '--steps', '1', '--batch-size', '2', '--eval-batches', '1', '--quiet',
      '--out', out, '--backend', 'cpu')).code).toBe(0);
    const holder = spawn('sleep', ['60']);
    fs.writeFileSync(path.join(out, LOCK), lockText(holder.pid!));
    const model = await loadModel(out);
    const record = {...readTrainingRecord(out), step: 7};
    let landed = false;
    const saving = saveCheckpoint(out, model, null, record).then(() => { landed = true; });
    await new Promise((r) => setTimeout(r, 300));
    expect(landed).toBe(false); // waiting for the live holder
    holder.kill('SIGKILL');
    await new Promise((r) => holder.on('exit', r));
    await saving;
    expect(readTrainingRecord(out).step).toBe(7);
    expect(fs.existsSync(path.join(out, LOCK))).toBe(false);
    model.dispose();
  });
});

describe('orphans', () => {
  test("the next save removes the library's weights files of dead writers that no model.json lists; other files stay", async () => {
    const dir = path.join(root, 'orphans');
    const model = denseModel(7, 10);
    await model.save(`file://${dir}`);
    const dead = deadPid();
    const live = process.ppid;
    const orphans = [`weights.${dead}-aaaaaaaa.bin`, `weights.${dead}-bbbbbbbb.bin`, `optimizer.${dead}-cccccccc.bin`,
      `training.${dead}-dddddddd.json`, `weights.${process.pid}-00eeeeee.bin`]; // 00: this thread, no save of it
    const kept = ['weights.mine.bin', 'weights.old.bin', `weights.${live}-ffffffff.bin`, 'weights.123.bin', 'notes.txt',
      `weights.${process.pid}-01eeeeee.bin`]; // 01: another thread of this process, which may be saving
    for (const name of [...orphans, ...kept]) fs.writeFileSync(path.join(dir, name), `file ${name}`);
    await model.save(`file://${dir}`);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin', ...kept].sort());
    for (const name of kept) expect(fs.readFileSync(path.join(dir, name), 'utf8')).toBe(`file ${name}`);
    model.dispose();
  });
});

describe('the CLI checks its output folder before it works', () => {
  test('train --out / exits 2 before the first step', async () => {
    const r = await cli('train', '--steps', '600', '--out', '/', '--backend', 'cpu');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: cannot write checkpoint '\/': it is the root of the file system/);
    expect(r.stderr).not.toMatch(/step \d/);
    expect(r.stdout).toBe('');
  });

  test('convert --out equal to its input exits 2 and leaves the input as it was', async () => {
    const dir = path.join(root, 'keras-in');
    fs.cpSync(KERAS, dir, {recursive: true});
    const before = snapshot(dir);
    for (const keras of [dir, path.join(dir, 'model.json')]) {
      for (const out of [dir, `${dir}/`, path.join(dir, 'sub', '..')]) {
        const r = await cli('convert', '--keras', keras, '--out', out, '--backend', 'cpu');
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(/it is the folder of the Keras model it converts .* give another --out/);
      }
    }
    expect(snapshot(dir)).toEqual(before);
  });

  test('convert --out a file, or under one, exits 2 before reading the model', async () => {
    const file = path.join(root, 'a-file');
    fs.writeFileSync(file, 'x');
    for (const out of [file, path.join(file, 'model')]) {
      const r = await cli('convert', '--keras', path.join(root, 'no-such-model'), '--out', out, '--backend', 'cpu');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/cannot write the converted model to '.*a-file.*': .*not a directory/);
    }
  });

  test('a folder this process cannot write is refused before training', async () => {
    if (process.getuid?.() === 0) return; // root writes everywhere: nothing to refuse
    const dir = path.join(root, 'read-only');
    fs.mkdirSync(dir, {mode: 0o555});
    const r = await cli('train', '--steps', '600', '--out', path.join(dir, 'model'), '--backend', 'cpu');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not writable by this process/);
  });
});
