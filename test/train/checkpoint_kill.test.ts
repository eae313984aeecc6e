// `tfjs-attention train --out DIR --checkpoint-every 1` and `train --resume DIR` killed with
// SIGKILL at 30 random instants: after each kill the user's other files in DIR are intact,
// model.json, training.json and Adam's `iter` name the same step, and resuming the
// checkpoint in-process to the final step ends with the weights of one uninterrupted run.
// Runs once, in the 'once' project, on cpu (BACKEND): the files do not depend on the backend.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendName, selectBackend} from '../../src/kernels/backend';
import {main} from '../../src/cli/main';
import {loadCheckpoint, loadModel} from '../../src/train/checkpoint';
import {train} from '../../src/train/trainer';
import {TrainOptions} from '../../src/train/train_options';
import {Gated, killChildren, spawnGated} from '../fixtures/gate';
import {BACKEND, maxDiff, title} from '../support/helpers';

const KILLS = 30;
/**
 * Kills go on past KILLS, up to this many, until one has struck inside a save and the
 * checkpoints seen span several steps: the instants are random, and under load (the other
 * core busy) 30 of them can all miss the saves.
 */
const MAX_KILLS = 60;
// About 1 min alone on the 2-core machine; far more while other heavy files share its cores.
const TIMEOUT_MS = 400_000;
const STEPS = 6;
const CHILD = 'test/fixtures/cli_child.ts';
const TINY = ['--length', '3', '--vocab-size', '5', '--model-dim', '8', '--heads', '2', '--kv-heads', '1', '--layers', '1',
  '--batch-size', '2', '--eval-batches', '1', '--steps', String(STEPS), '--checkpoint-every', '1', '--seed', '1', '--quiet'];
/** The names a killed checkpoint save may leave beside the checkpoint's files. */
const LEFTOVER = /^(\.model\.json\.(journal|tmp|lock\.new|lock\.dead)-\d+-[0-9a-z]{8}|\.model\.json\.lock(\.takeover)?|(weights|optimizer|training)\.\d+-[0-9a-z]{8}\.(bin|json))$/;
const OWN = ['model.json', 'optimizer.bin', 'optimizer.json', 'training.json', 'weights.bin'];

async function cli(...argv: string[]): Promise<number> {
  const quiet = {write: () => true};
  return main(argv, {stdout: quiet, stderr: quiet});
}

describe(title('checkpoints killed at random instants'), () => {
  let root: string;
  beforeAll(async () => {
    tf.env().set('PROD', true); // runs once, without the projects' setup: no tfjs-node banner
    await selectBackend(BACKEND as BackendName);
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-ckpt-kill-'));
  });
  afterAll(() => {
    killChildren();
    fs.rmSync(root, {recursive: true, force: true});
  });

  test(`${KILLS} SIGKILLs of train --out / --resume: other files intact, every checkpoint resumes to the uninterrupted weights`,
    async () => {
      const dir = path.join(root, 'ckpt');
      const user: Record<string, Buffer> = {
        'README.md': Buffer.from('# my experiment\n'),
        'weights.mine.bin': Buffer.from([9, 9, 9]),
        [path.join('runs', 'log.txt')]: Buffer.from('step 0\n'),
      };
      fs.mkdirSync(path.join(dir, 'runs'), {recursive: true});
      for (const [name, data] of Object.entries(user)) fs.writeFileSync(path.join(dir, name), data);

      // 1. The reference: one uninterrupted run, in-process, through the same CLI.
      const refDir = path.join(root, 'reference');
      expect(await cli('train', ...TINY, '--out', refDir, '--backend', BACKEND)).toBe(0);
      const reference = await loadModel(refDir);
      const expected = reference.getWeights().map((w) => w.clone());
      reference.dispose();

      const fresh = () => spawnGated(CHILD, ['train', ...TINY, '--out', dir, '--backend', BACKEND]);
      const resume = () => spawnGated(CHILD, ['train', '--resume', dir, '--quiet', '--backend', BACKEND]);
      const checkFolder = () => {
        for (const [name, data] of Object.entries(user)) {
          expect(fs.readFileSync(path.join(dir, name)).equals(data)).toBe(true);
        }
        const ours = fs.readdirSync(dir).filter((n) => !['README.md', 'weights.mine.bin', 'runs'].includes(n));
        expect(ours.filter((n) => !OWN.includes(n) && !LEFTOVER.test(n))).toEqual([]);
        expect(ours).toContain('model.json');
      };
      /** The checkpoint in DIR is consistent and resumes (in-process) to the reference weights. */
      const checkCheckpoint = async (): Promise<number> => {
        const {model, optimizerWeights, record} = await loadCheckpoint(dir);
        const field = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')).checkpoint;
        const iter = optimizerWeights.find((w) => w.name === 'iter')!.tensor.dataSync()[0];
        expect([field.step, iter]).toEqual([record.step, record.step]);
        model.dispose();
        tf.dispose(optimizerWeights.map((w) => w.tensor));
        // outDir '': the resumed run writes nothing, so DIR stays as the kill left it.
        const resumed = await train({steps: STEPS, outDir: ''} as TrainOptions, {}, dir);
        expect(resumed.record.step).toBe(STEPS);
        const got = resumed.model.getWeights();
        expect(got.length).toBe(expected.length);
        // (A resumed run repeats the uninterrupted one exactly: the trainer restores Adam's
        // beta powers as the uninterrupted run computed them; 1e-6 leaves room for nothing else.)
        got.forEach((w, i) => {
          if (!(maxDiff(w, expected[i]) <= 1e-6)) {
            throw new Error(`${resumed.model.weights[i].name} differs by ${maxDiff(w, expected[i])} (step ${record.step})`);
          }
        });
        resumed.model.dispose();
        return record.step;
      };

      // 2. One unkilled fresh run measures a run's time (while the next children start up).
      const first = fresh();
      await first.line(/^ready/);
      const queue: Gated[] = [resume(), fresh()];
      const t0 = Date.now();
      first.go();
      expect(await first.exited).toEqual({code: 0, signal: null});
      const runMs = Date.now() - t0;
      checkFolder();
      expect(await checkCheckpoint()).toBe(STEPS);

      // 3. Resumed and fresh runs in turn, killed at uniform instants in [0, 1.5 x runMs].
      const seen = {midSave: 0, steps: new Set<number>()};
      const enough = () => seen.midSave > 0 && seen.steps.size > 1;
      let kills = 0;
      for (let k = 0; k < KILLS || (k < MAX_KILLS && !enough()); k++) {
        const child = queue.shift()!;
        await child.line(/^ready/);
        child.go();
        queue.push(k % 2 === 0 ? resume() : fresh());
        await child.line(/^running/);
        await new Promise((r) => setTimeout(r, Math.random() * 1.5 * runMs));
        child.child.kill('SIGKILL');
        await child.exited;
        checkFolder();
        if (fs.readdirSync(dir).some((n) => LEFTOVER.test(n))) seen.midSave++;
        seen.steps.add(await checkCheckpoint());
        kills++;
      }
      // The children started for kills that were not needed never ran (they wait to be let go).
      for (const c of queue) c.child.kill('SIGKILL');
      await Promise.all(queue.map((c) => c.exited));
      expect(kills).toBeGreaterThanOrEqual(KILLS);
      // Some kills struck inside a save (they left its temporary files), at several steps.
      expect(seen.midSave).toBeGreaterThan(0);
      expect(seen.steps.size).toBeGreaterThan(1);

      // 4. One more run, unkilled, removes every leftover and keeps the user's files.
      const last = resume();
      await last.line(/^ready/);
      last.go();
      expect(await last.exited).toEqual({code: 0, signal: null});
      expect(fs.readdirSync(dir).sort()).toEqual(['README.md', ...OWN, 'runs', 'weights.mine.bin'].sort());
      checkFolder();
      expect(await checkCheckpoint()).toBe(STEPS);
      tf.dispose(expected);
    }, TIMEOUT_MS);
});
