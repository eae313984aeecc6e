// The built-in mask mods' float form (src/ops/mask_values.ts, flex_mods.ts maskValuesOf): what
// createBlockMask and the flex engine evaluate is, entry for entry, the mod's own bool result,
// for every built-in, both alignments, T != S both ways, and nested combinations with a user's
// mod; a mod without a float form goes through maskOf's checks.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {causalMask} from '../../src/ops/causal';
import {andMasks, documentMask, maskOf, maskValuesOf, orMasks, prefixLm, slidingWindow} from '../../src/ops/flex_mods';
import {MaskMod} from '../../src/ops/flex_types';
import {maskValuesFunction} from '../../src/ops/mask_values';
import {expectError, title} from '../support/helpers';

/** Index tensors of a whole [B, H, T, S] grid, queries from t0. */
function grid(B: number, H: number, t0: number, n: number, S: number): tf.Tensor[] {
  return [[B, 1, 1, 1], [1, H, 1, 1], [1, 1, n, 1], [1, 1, 1, S]].map((shape, x) => tf.reshape(
    tf.range(x === 2 ? t0 : 0, (x === 2 ? t0 : 0) + shape.reduce((a, b) => a * b), 1, 'int32'), shape));
}

describe(title('mask mods in float form'), () => {
  const B = 2;
  const H = 3;
  const ids1 = tf.tensor1d([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4], 'int32');   // S = 17
  const ids2 = tf.tensor2d([[0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3],
    [0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4]], [2, 17], 'int32');
  // A user's mod, bool: odd (b + h + j) only.
  const oddSum: MaskMod = (b, h, _q, kv) => tf.equal(tf.mod(tf.add(tf.add(b, h), kv), 2), 1);
  const mods: Array<[string, MaskMod]> = [
    ['causalMask()', causalMask()], ['causalMask(top-left)', causalMask('top-left')],
    ['slidingWindow(4)', slidingWindow(4)], ['slidingWindow(3, top-left)', slidingWindow(3, 'top-left')],
    ['prefixLm(5)', prefixLm(5)], ['prefixLm(0, top-left)', prefixLm(0, 'top-left')],
    ['documentMask([S])', documentMask(ids1)], ['documentMask([B, S])', documentMask(ids2)],
    ['andMasks(causal, documents)', andMasks(causalMask(), documentMask(ids2))],
    ['orMasks(prefixLm(2), slidingWindow(3))', orMasks(prefixLm(2), slidingWindow(3))],
    ['andMasks(orMasks(causal, a user mod), documents)', andMasks(orMasks(causalMask(), oddSum), documentMask(ids1))],
  ];
  for (const [T, t0, n] of [[17, 0, 17], [11, 3, 8], [23, 16, 7]]) {
    for (const [name, mod] of mods) {
      it(`${name}: the float form equals the mod's bool result (T=${T}, S=17, rows ${t0}..${t0 + n - 1})`, () => {
        const context = {batch: B, heads: H, queryLength: T, keyLength: 17};
        const [b, h, q, kv] = grid(B, H, t0, n, 17);
        const [want, got] = tf.tidy(() => [
          tf.broadcastTo(tf.cast(maskOf(mod, b, h, q, kv, context), 'float32'), [B, H, n, 17]),
          tf.broadcastTo(maskValuesOf(mod, b, h, q, kv, context), [B, H, n, 17])]);
        expect(maskValuesFunction(mod)).toBeDefined();
        expect(got.dtype).toBe('float32');
        expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
        tf.dispose([b, h, q, kv, want, got]);
      });
    }
  }

  it('a mod without a float form is checked as a mask (maskOf) and cast to 0/1', () => {
    const context = {batch: 1, heads: 1, queryLength: 4, keyLength: 4};
    const [b, h, q, kv] = grid(1, 1, 0, 4, 4);
    const numbers: MaskMod = (_b, _h, qq, kk) => tf.cast(tf.lessEqual(kk, qq), 'int32');
    expect(maskValuesFunction(numbers)).toBeUndefined();
    const got = tf.tidy(() => tf.broadcastTo(maskValuesOf(numbers, b, h, q, kv, context), [1, 1, 4, 4]));
    expect(got.dtype).toBe('float32');
    expect(Array.from(got.dataSync())).toEqual([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
    expectError(() => maskValuesOf(() => tf.ones([5, 5]), b, h, q, kv, context), 'INVALID_MASK', /broadcastable/);
    tf.dispose([b, h, q, kv, got]);
  });

  afterAll(() => tf.dispose([ids1, ids2]));
});
