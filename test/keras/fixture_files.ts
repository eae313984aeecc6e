// What the Keras load tests read from a fixture folder and feed a model, shared by
// load.test.ts and options.test.ts: the stored tensors (read with no tfjs), seeded inputs,
// and the error measure they compare outputs with.
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {denseValues} from '../fixtures/dense';

export type StoredWeights = Map<string, {shape: number[]; values: Float32Array}>;

/** The stored tensors of a model folder, read from its model.json and weight files with no tfjs. */
export function storedWeights(dir: string): StoredWeights {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const out: StoredWeights = new Map();
  for (const group of json.weightsManifest) {
    const bytes = Buffer.concat(group.paths.map((p: string) => fs.readFileSync(path.join(dir, p))));
    let offset = 0;
    for (const w of group.weights) {
      const n = w.shape.reduce((a: number, b: number) => a * b, 1);
      const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset, bytes.byteOffset + offset + 4 * n));
      out.set(w.name, {shape: w.shape, values});
      offset += 4 * n;
    }
  }
  return out;
}

/** Model inputs for a fixture: seeded floats, or token ids with zeros (padding) in row 0. */
export function inputsFor(shapes: {shape: number[]; dtype: 'float32' | 'int32'}[]): tf.Tensor[] {
  return shapes.map(({shape, dtype}, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (dtype === 'int32') {
      const T = shape[1];
      const ids = Array.from({length: n}, (_, k) => 1 + (k * 7) % 19);
      for (const t of [2, T - 3, T - 2, T - 1]) ids[t] = 0; // row 0: a gap and a padded tail
      return tf.tensor(ids, shape, 'int32');
    }
    return tf.tensor(denseValues(101 + i, n), shape);
  });
}

export const arr3 = (t: tf.Tensor) => t.arraySync() as number[][][];

/** Max |a - b| over max |b|, over the rows where `rows[b][t]` holds (all rows without it). */
export function relError(a: number[][][], b: number[][][], rows?: boolean[][]): number {
  let scale = 0;
  let worst = 0;
  a.forEach((ab, i) => ab.forEach((at, t) => {
    if (rows != null && !rows[i][t]) return;
    at.forEach((x, j) => {
      scale = Math.max(scale, Math.abs(b[i][t][j]));
      worst = Math.max(worst, Math.abs(x - b[i][t][j]));
    });
  }));
  return worst / Math.max(scale, 1e-30);
}
