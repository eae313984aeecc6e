/**
 * Loading a model folder someone else made: the checks a load makes before it reads or
 * allocates anything, and how to raise the size limit for a model you trust. A copy of
 * models/gqa is damaged three ways (a weights path out of the folder, a weights file of
 * another size, an attention layer asking for 10 million heads) and each load is refused
 * with an AttentionError('IO') that names the path; then the intact copy is loaded under a
 * limit too small for it, and under one that fits. Two saves into one folder at once take
 * turns (the folder's lock).
 *
 *   npx ts-node examples/untrusted_folder.ts
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, loadModel, MultiHeadAttention} from '../src/node';
import {runAsProgram} from './run';

// A parsed model.json, edited in place.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON of any shape
type Json = Record<string, any>;

/** A copy of models/gqa in `root`, with `damage` done to its parsed model.json (and its folder). */
function copyOfGqa(root: string, name: string, damage: (json: Json, dir: string) => void = () => undefined): string {
  const dir = path.join(root, name);
  fs.cpSync(path.join(__dirname, '..', 'models', 'gqa'), dir, {recursive: true});
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  damage(json, dir);
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
  return dir;
}

/** The error code and message of a load, or 'loaded'. */
async function tryLoad(dir: string, maxBytes?: number): Promise<string> {
  try {
    (await loadModel(dir, {maxBytes})).dispose();
    return 'loaded';
  } catch (e) {
    if (!(e instanceof AttentionError)) throw e;
    return `${e.code}: ${e.message.replace(dir, 'DIR').slice(0, 110)}...`;
  }
}

export async function main(
    log: (line: string) => void = console.log): Promise<{outcomes: string[]; savedFiles: string[]}> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'untrusted-'));
  const outcomes: string[] = [];
  try {
    const attention = (json: Json) =>
      json.modelTopology.config.layers.find((l: Json) => l.class_name === 'MultiHeadAttention');
    const folders = {
      'a weights path out of the folder': copyOfGqa(root, 'escape', (j) => {
        j.weightsManifest[0].paths = ['../weights.bin'];
      }),
      'weights.bin cut short': copyOfGqa(root, 'short', (_, d) => fs.truncateSync(path.join(d, 'weights.bin'), 100)),
      'num_heads: 1e7': copyOfGqa(root, 'heads', (j) => {
        Object.assign(attention(j).config, {num_heads: 1e7, num_kv_heads: 1e7, head_dim: 16});
      }),
    };
    for (const [what, dir] of Object.entries(folders)) outcomes.push(`${what}: ${await tryLoad(dir)}`);

    // A model you trust: the default limit is 2 GiB; maxBytes lowers or raises it.
    const intact = copyOfGqa(root, 'intact');
    const bytes = fs.statSync(path.join(intact, 'weights.bin')).size;
    outcomes.push(`maxBytes ${bytes - 1}: ${await tryLoad(intact, bytes - 1)}`);
    outcomes.push(`maxBytes ${bytes}: ${await tryLoad(intact, bytes)}`);

    // What a layer would hold, without allocating it.
    const shapes = new MultiHeadAttention({numHeads: 4, numKvHeads: 2}).weightShapes([null, 8, 64]);
    outcomes.push(`weightShapes: ${shapes.map((w) => `${w.name} [${w.shape.join(', ')}]`).join(', ')}`);

    // Two saves into one folder at once: the second waits for the first; one whole model stays.
    const model = await loadModel(intact);
    const out = path.join(root, 'saved');
    await Promise.all([model.save(`file://${out}`), model.save(`file://${out}`)]);
    model.dispose();
    outcomes.forEach((line) => log(line));
    const savedFiles = fs.readdirSync(out).sort();
    log(`two saves at once left: ${savedFiles.join(', ')}`);
    return {outcomes, savedFiles};
  } finally {
    fs.rmSync(root, {recursive: true, force: true});
  }
}

if (require.main === module) {
  runAsProgram(() => {
    tf.env().set('PROD', true);
    return main();
  });
}
