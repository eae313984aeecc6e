// `model.save('file://DIR')` killed with SIGKILL at 30 random instants: after each kill DIR
// loads as exactly the old model or the new one (every one of the 10M weights compared),
// both outcomes occur, and the user's own files in DIR are intact; the next save removes
// what a killed one left, ending with model.json + weights.bin beside the user's files.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {registerFileRouter} from '../../src/io/file_system';
import {denseWeights} from '../fixtures/dense';
import {killChildren, spawnGated} from '../fixtures/gate';
import {title} from '../support/helpers';

registerFileRouter();

const KILLS = 30;
// About 1 min alone on the 2-core machine; far more while other heavy files share its cores.
const TIMEOUT_MS = 400_000;
const CHILD = 'test/fixtures/save_dense_child.ts';
/**
 * The names a killed save may leave beside model.json and weights.bin: among them the lock's
 * takeover file, when the kill struck while the save took over the lock a killed save left
 * (io/lock.ts: the next save removes it, as step 3 checks).
 */
const LEFTOVER =
  /^(\.model\.json\.(journal|tmp|lock\.new|lock\.dead)-\d+-[0-9a-z]{8}|\.model\.json\.lock(\.takeover)?|weights\.\d+-[0-9a-z]{8}\.bin)$/;

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe(title('file:// save killed at random instants'), () => {
  let root: string;
  beforeAll(() => {
    tf.env().set('PROD', true); // runs once, without the projects' setup: no tfjs-node banner
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-kill-'));
  });
  afterAll(() => {
    killChildren();
    fs.rmSync(root, {recursive: true, force: true});
  });

  test(`${KILLS} SIGKILLs of a 40 MB save: DIR loads as the old or the new model; other files intact`, async () => {
    const dir = path.join(root, 'model');
    const user: Record<string, Buffer> = {
      'notes.txt': Buffer.from('the user keeps notes here\n'),
      'weights.old.bin': Buffer.from([1, 2, 3]), // looks like ours, is not: no journal lists it
      [path.join('sub', 'data.json')]: Buffer.from('{"keep": true}'),
    };
    fs.mkdirSync(path.join(dir, 'sub'), {recursive: true});
    for (const [name, data] of Object.entries(user)) fs.writeFileSync(path.join(dir, name), data);
    // Four models, so that each of the next two children saves a model that differs from
    // both the old and the new one of every save before it, and can be built meanwhile.
    const expected = [1, 2, 3, 4].map((seed) => denseWeights(seed)).map((w) => [bytes(w.kernel), bytes(w.bias)]);

    /** Which of the models DIR holds (0..3: seeds 1..4); fails on anything else. */
    const held = async (): Promise<number> => {
      const model = await tf.loadLayersModel(`file://${dir}`);
      const got = model.getWeights().map((w) => bytes(w.dataSync() as Float32Array));
      model.dispose();
      const which = expected.findIndex((e) => e.every((b, i) => b.equals(got[i])));
      if (which < 0) throw new Error('DIR holds none of the models');
      return which;
    };
    const checkFolder = () => {
      for (const [name, data] of Object.entries(user)) {
        expect(fs.readFileSync(path.join(dir, name)).equals(data)).toBe(true);
      }
      const ours = fs.readdirSync(dir).filter((n) => !['notes.txt', 'weights.old.bin', 'sub'].includes(n));
      expect(ours.filter((n) => n !== 'model.json' && n !== 'weights.bin' && !LEFTOVER.test(n))).toEqual([]);
      expect(ours).toContain('model.json');
    };
    const start = (which: number, exit = false) =>
      spawnGated(CHILD, [dir, String(which + 1), ...(exit ? ['--exit'] : [])]);

    // 1. One unkilled save of model 0 (the first old model) measures the save time, while the
    //    first two killed children start up (as a later child's start overlaps each save).
    const first = start(0, true);
    await first.line(/^ready/);
    const queue = [{child: start(1), saving: 1}, {child: start(2), saving: 2}];
    first.go();
    const saveMs = Number((await first.line(/^saved \d+/)).split(' ')[1]);
    expect(await first.exited).toEqual({code: 0, signal: null});
    checkFolder();
    let old = await held();
    expect(old).toBe(0);

    // 2. Saves killed at uniform instants in [0, 1.5 x the save time] after they start. The
    //    next two children load (and build their model) while this one saves and its result
    //    is checked. The save time is an estimate that only grows: to a child's own duration
    //    when it finished before its kill, and past the instant of a kill that struck inside
    //    a save (a save slowed by other work on the machine outlasted it), so the instants
    //    keep covering the whole save whatever the load.
    let estimate = saveMs;
    const outcomes = {old: 0, new: 0, midSave: 0};
    for (let k = 0; k < KILLS; k++) {
      const {child, saving} = queue.shift()!;
      await child.line(/^ready/);
      child.go();
      if (k + 2 < KILLS) {
        const free = [0, 1, 2, 3].find((m) => ![old, saving, queue[0].saving].includes(m))!;
        queue.push({child: start(free), saving: free});
      }
      await child.line(/^saving/);
      const delay = Math.random() * 1.5 * estimate;
      await new Promise((r) => setTimeout(r, delay));
      child.child.kill('SIGKILL');
      expect((await child.exited).signal).toBe('SIGKILL');
      checkFolder();
      const finished = /^saved (\d+)/m.exec(child.output());
      const midSave = fs.readdirSync(dir).some((n) => LEFTOVER.test(n));
      if (midSave) outcomes.midSave++;
      if (finished != null) estimate = Math.max(estimate, Number(finished[1]));
      else if (midSave) estimate = Math.max(estimate, 1.5 * delay);
      const now = await held();
      expect([old, saving]).toContain(now);
      outcomes[now === old ? 'old' : 'new']++;
      old = now;
    }
    // Both happened (else the instants missed the save; the chance of no 'new' is about
    // (2/3)^30), and some kills struck inside a save (they left its temporary files).
    expect(outcomes.old).toBeGreaterThan(0);
    expect(outcomes.new).toBeGreaterThan(0);
    expect(outcomes.midSave).toBeGreaterThan(0);

    // 3. One more save, unkilled, removes every leftover and keeps the user's files.
    const fresh = [0, 1, 2, 3].find((m) => m !== old)!;
    const last = start(fresh, true);
    await last.line(/^ready/);
    last.go();
    expect(await last.exited).toEqual({code: 0, signal: null});
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'notes.txt', 'sub', 'weights.bin', 'weights.old.bin']);
    checkFolder();
    expect(await held()).toBe(fresh);
  }, TIMEOUT_MS);
});
