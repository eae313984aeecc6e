// file:// saves into folders that hold other files (io/folder.ts): the user's files stay
// byte for byte, `save('file://.')` keeps the working directory, what killed or failed
// saves leave is removed by the next save (and nothing else is), hard-link fallback, and
// tfjs's own readers read what is written.
import {spawnSync} from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {registerFileRouter} from '../../src/io/file_system';
import {recoverFolder} from '../../src/io/folder';
import {randn, title} from '../support/helpers';

registerFileRouter();

function denseModel(seed: number): tf.Sequential {
  const model = tf.sequential();
  model.add(tf.layers.dense({units: 6, inputShape: [4], activation: 'relu', kernelInitializer: tf.initializers.glorotNormal({seed})}));
  model.add(tf.layers.dense({units: 2, kernelInitializer: tf.initializers.glorotNormal({seed: seed + 1})}));
  return model;
}

function gap(a: tf.LayersModel, b: tf.LayersModel, x: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a.predict(x) as tf.Tensor, b.predict(x) as tf.Tensor))).dataSync()[0]);
}

/** Every file under dir (relative path -> bytes), folders included as entries of their files. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, {recursive: true}) as string[]) {
    const file = path.join(dir, entry);
    out[entry] = fs.statSync(file).isDirectory() ? '<dir>' : fs.readFileSync(file).toString('base64');
  }
  return out;
}

/** A pid that is not running: that of a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

describe(title('file:// saves into folders with other files'), () => {
  let root: string;
  let x: tf.Tensor;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-folder-'));
    x = randn([3, 4], 1);
  });
  afterEach(() => {
    x.dispose();
    fs.rmSync(root, {recursive: true, force: true});
  });

  /** A folder holding the user's own files, some with names like ours, and a subfolder. */
  function userFolder(dir: string): Record<string, string> {
    const files: Record<string, string | Buffer> = {
      'notes.txt': 'mine', 'weights.txt': 'not weights', 'model.json.bak': '{"old": true}', '.hidden': '',
      'weights.1-abcdefgh.bin': Buffer.from([1, 2]), '.model.json.tmp-notes': 'not a temp file',
      [path.join('sub', 'weights.bin')]: Buffer.from([3]), [path.join('sub', 'deeper', 'model.json')]: '{}',
    };
    for (const [name, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), {recursive: true});
      fs.writeFileSync(path.join(dir, name), data);
    }
    return snapshot(dir);
  }

  test('a save keeps every other file and subfolder byte for byte, and so does a second save over it', async () => {
    const dir = path.join(root, 'model');
    const before = userFolder(dir);
    const [a, b] = [denseModel(1), denseModel(2)];
    const tensors = tf.memory().numTensors;
    await a.save(`file://${dir}`);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(snapshot(dir)).toEqual({...before, 'model.json': expect.any(String), 'weights.bin': expect.any(String)});
    await b.save(`file://${dir}`);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(snapshot(dir)).toEqual({...before, 'model.json': expect.any(String), 'weights.bin': expect.any(String)});
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, b, x)).toBeLessThanOrEqual(1e-6);
    [a, b, loaded].forEach((m) => m.dispose());
  });

  test("save('file://.') from a working directory keeps everything in it", async () => {
    const work = path.join(root, 'project');
    const before = userFolder(work);
    const model = denseModel(3);
    const cwd = process.cwd();
    try {
      process.chdir(work);
      await model.save('file://.');
      await model.save('file://.');
    } finally {
      process.chdir(cwd);
    }
    expect(snapshot(work)).toEqual({...before, 'model.json': expect.any(String), 'weights.bin': expect.any(String)});
    const loaded = await tf.loadLayersModel(`file://${work}`);
    expect(gap(loaded, model, x)).toBeLessThanOrEqual(1e-6);
    [model, loaded].forEach((m) => m.dispose());
  });

  test('the next save removes what dead saves left (journal, temp model.json, orphan weights of dead writers) and nothing else', async () => {
    const dir = path.join(root, 'model');
    const model = denseModel(4);
    await model.save(`file://${dir}`);
    const before = userFolder(dir);
    const dead = deadPid();
    const live = process.ppid; // running, and not us
    const stale = {
      [`.model.json.journal-${dead}-aaaaaaaa`]: JSON.stringify({format: 1,
        names: [`weights.${dead}-aaaaaaaa.bin`, 'weights.bin', `.model.json.tmp-${dead}-aaaaaaaa`, '../escape.txt']}),
      [`weights.${dead}-aaaaaaaa.bin`]: 'orphan weights',
      [`.model.json.tmp-${dead}-aaaaaaaa`]: '{"modelTopology": ',
      [`.model.json.tmp-${dead}-bbbbbbbb`]: 'a temp model.json whose journal is gone',
      [`.model.json.journal-${dead}-cccccccc`]: '{"format": 1, "na', // cut off while written
      // Tokens are <pid>-<2 chars of thread><6 random>: 00 is this (main) thread.
      [`.model.json.journal-${process.pid}-00dddddd`]: JSON.stringify({format: 1, names: [`weights.${process.pid}-00dddddd.bin`]}),
      [`weights.${process.pid}-00dddddd.bin`]: 'an earlier failed save of this process',
      // Ours by its name, its writer gone, and listed by no model.json: an orphan of saves that raced.
      [`weights.${dead}-ffffffff.bin`]: 'named like ours, listed by no journal',
    };
    const kept = {
      [`.model.json.journal-${live}-eeeeeeee`]: JSON.stringify({format: 1, names: [`weights.${live}-eeeeeeee.bin`]}),
      [`weights.${live}-eeeeeeee.bin`]: 'a save under way in another process',
      [`weights.${live}-ffffffff.bin`]: 'named like ours, its writer still running',
      [`.model.json.journal-${process.pid}-01gggggg`]: JSON.stringify({format: 1, names: [`weights.${process.pid}-01gggggg.bin`]}),
      [`weights.${process.pid}-01gggggg.bin`]: 'a save of another thread (a worker) of this process, under way',
    };
    fs.writeFileSync(path.join(root, 'escape.txt'), 'outside');
    for (const [name, text] of Object.entries({...stale, ...kept})) fs.writeFileSync(path.join(dir, name), text);
    const again = denseModel(5);
    await again.save(`file://${dir}`);
    const after = snapshot(dir);
    for (const name of Object.keys(stale)) expect(after[name]).toBeUndefined();
    for (const [name, text] of Object.entries(kept)) expect(Buffer.from(after[name], 'base64').toString()).toBe(text);
    expect(fs.readFileSync(path.join(root, 'escape.txt'), 'utf8')).toBe('outside');
    const ours = {...before, ...Object.fromEntries(Object.keys(kept).map((n) => [n, after[n]]))};
    expect(after).toEqual({...ours, 'model.json': expect.any(String), 'weights.bin': expect.any(String)});
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, again, x)).toBeLessThanOrEqual(1e-6);
    [model, again, loaded].forEach((m) => m.dispose());
  });

  test('recovery keeps what the current model.json lists, and leaves everything when model.json is corrupt', async () => {
    const dir = path.join(root, 'model');
    const model = denseModel(6);
    await model.save(`file://${dir}`);
    const dead = deadPid();
    const journal = `.model.json.journal-${dead}-aaaaaaaa`;
    fs.writeFileSync(path.join(dir, journal), JSON.stringify({format: 1, names: ['weights.bin', 'model.json', 'gone.bin']}));
    fs.writeFileSync(path.join(dir, 'gone.bin'), 'leftover');
    const good = fs.readFileSync(path.join(dir, 'model.json'));
    fs.writeFileSync(path.join(dir, 'model.json'), '{"modelTopology": '); // cannot tell what is listed
    await recoverFolder(dir);
    expect(fs.readdirSync(dir).sort()).toEqual([journal, 'gone.bin', 'model.json', 'weights.bin']);
    fs.writeFileSync(path.join(dir, 'model.json'), good);
    await recoverFolder(dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, model, x)).toBeLessThanOrEqual(1e-6);
    [model, loaded].forEach((m) => m.dispose());
  });

  test('where hard links fail the weights keep their unique name; the next save ends with weights.bin', async () => {
    const dir = path.join(root, 'model');
    const [a, b] = [denseModel(7), denseModel(8)];
    const spy = jest.spyOn(fs.promises, 'link').mockRejectedValue(Object.assign(new Error('no links here'), {code: 'EPERM'}));
    try {
      await a.save(`file://${dir}`);
    } finally {
      spy.mockRestore();
    }
    const names = fs.readdirSync(dir).sort();
    expect(names).toEqual(['model.json', expect.stringMatching(/^weights\.\d+-[0-9a-z]{8}\.bin$/)]);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')).weightsManifest[0].paths).toEqual([names[1]]);
    const first = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(first, a, x)).toBeLessThanOrEqual(1e-6);
    await b.save(`file://${dir}`);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const second = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(second, b, x)).toBeLessThanOrEqual(1e-6);
    [a, b, first, second].forEach((m) => m.dispose());
  });

  test("a user's own weights.bin (not listed by any model.json) is never replaced", async () => {
    const dir = path.join(root, 'model');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'weights.bin'), 'mine');
    const model = denseModel(9);
    await model.save(`file://${dir}`);
    expect(fs.readFileSync(path.join(dir, 'weights.bin'), 'utf8')).toBe('mine');
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, model, x)).toBeLessThanOrEqual(1e-6);
    [model, loaded].forEach((m) => m.dispose());
  });

  test('a save failing while it writes the weights keeps the old model and leaves nothing behind', async () => {
    const dir = path.join(root, 'model');
    const [kept, other] = [denseModel(10), denseModel(11)];
    await kept.save(`file://${dir}`);
    const before = userFolder(dir);
    const open = fs.promises.open.bind(fs.promises);
    const spy = jest.spyOn(fs.promises, 'open').mockImplementation(async (file, ...rest) => {
      if (/weights\.\d+-/.test(String(file))) throw Object.assign(new Error('simulated ENOSPC'), {code: 'ENOSPC'});
      return open(file, ...(rest as [string]));
    });
    try {
      await expect(other.save(`file://${dir}`)).rejects.toThrow(/cannot save model to '.*model': simulated ENOSPC/);
    } finally {
      spy.mockRestore();
    }
    expect(snapshot(dir)).toEqual(before);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, kept, x)).toBeLessThanOrEqual(1e-6);
    [kept, other, loaded].forEach((m) => m.dispose());
  });

  test('a failure after the commit (the second rename) still leaves the new model, loadable, and no leftovers', async () => {
    const dir = path.join(root, 'model');
    const [a, b] = [denseModel(12), denseModel(13)];
    await a.save(`file://${dir}`);
    const rename = fs.promises.rename.bind(fs.promises);
    let calls = 0;
    const spy = jest.spyOn(fs.promises, 'rename').mockImplementation(async (from, to) => {
      if (String(from).includes('.tmp-') && ++calls === 2) throw Object.assign(new Error('simulated EIO'), {code: 'EIO'});
      return rename(from, to);
    });
    try {
      await b.save(`file://${dir}`);
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', expect.stringMatching(/^weights\.\d+-[0-9a-z]{8}\.bin$/)]);
    const loaded = await tf.loadLayersModel(`file://${dir}`);
    expect(gap(loaded, b, x)).toBeLessThanOrEqual(1e-6);
    [a, b, loaded].forEach((m) => m.dispose());
  });

  test("tfjs's own readers read what is written: loadLayersModel and getModelArtifactsForJSON", async () => {
    const dir = path.join(root, 'model');
    userFolder(dir);
    const model = denseModel(14);
    await model.save(`file://${dir}`);
    await model.save(`file://${dir}`);
    const viaRouter = await tf.loadLayersModel(`file://${dir}/model.json`);
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
    const artifacts = await tf.io.getModelArtifactsForJSON(json, async (manifest) => {
      const specs = manifest.flatMap((group) => group.weights);
      const buffers = manifest.flatMap((group) => group.paths)
        .map((p) => new Uint8Array(fs.readFileSync(path.join(dir, p))));
      const data = new Uint8Array(buffers.reduce((n, b) => n + b.length, 0));
      buffers.reduce((at, b) => (data.set(b, at), at + b.length), 0);
      return [specs, data.buffer];
    });
    const viaArtifacts = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    expect(gap(viaRouter, model, x)).toBeLessThanOrEqual(1e-6);
    expect(gap(viaArtifacts, model, x)).toBeLessThanOrEqual(1e-6);
    [model, viaRouter, viaArtifacts].forEach((m) => m.dispose());
  });
});
