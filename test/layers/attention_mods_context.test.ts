// withAttentionMods: the mods it gives every MultiHeadAttention and FlashAttention call made
// during f equal the same mods passed to each call (forward and gradients); they join the call's
// and the layer's own mods and an outer withAttentionMods' (masks ANDed, score mods chained);
// refusals (other kinds, cached steps, two block masks, bad mods); the mods gone once f returns,
// throws or awaits; no leaked tensors.
import * as tf from '@tensorflow/tfjs';
import {
  alibi, andMasks, AttentionCache, AttentionLayerBase, buildTransformer, chainScores, createBlockMask, documentMask,
  FlashAttention, LinearAttention, LocalGlobalAttention, MaskMod, MultiHeadAttention, slidingWindow, softcap,
  withAttentionMods,
} from '../../src';
import {expectClose, expectError, expectNoLeaks, maxDiff, randn, title} from '../support/helpers';

const B = 2;
const T = 7;
const E = 8;

type Kwargs = Record<string, unknown>;
type Keep = (b: number, i: number, j: number) => boolean;

/** [B, T, T] 0/1 from a plain-JS rule (1 = may attend). */
function denseMask(keep: Keep): tf.Tensor3D {
  return tf.tensor3d(Array.from({length: B}, (_, b) => Array.from({length: T}, (_, i) =>
    Array.from({length: T}, (_, j) => (keep(b, i, j) ? 1 : 0)))));
}

/** Documents of each row: [0 0 0 1 1 1 1] and [0 1 1 1 1 2 2]. */
const DOC_IDS = [[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 2, 2]];
const sameDoc: Keep = (b, i, j) => DOC_IDS[b][i] === DOC_IDS[b][j];
const causal: Keep = (_b, i, j) => j <= i;
const window3: Keep = (_b, i, j) => i - j < 3;
const all = (...rules: Keep[]): Keep => (b, i, j) => rules.every((r) => r(b, i, j));

function apply(layer: AttentionLayerBase, x: tf.Tensor, kwargs: Kwargs = {}): tf.Tensor {
  return layer.apply(x, kwargs) as tf.Tensor;
}

/** The output, dx and the gradients of every trainable weight of sum(layer(x)^2), from one tf.variableGrads. */
function outputAndGrads(layer: AttentionLayerBase, x: tf.Tensor, kwargs: Kwargs = {}): tf.Tensor[] {
  const xv = tf.variable(x, true, undefined, 'float32');
  const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  let y: tf.Tensor | null = null;
  const {value, grads} = tf.variableGrads(() => {
    y = tf.keep(apply(layer, xv, kwargs));
    return tf.sum(tf.square(y)) as tf.Scalar;
  }, [xv, ...weights]);
  const out = [y!, grads[xv.name], ...weights.map((w) => grads[w.name])];
  tf.dispose([value, xv]);
  return out;
}

/** Every tensor of `got` within tol of `want` (the key bias's gradient, zero up to rounding, by absolute size). */
function expectAllClose(got: tf.Tensor[], want: tf.Tensor[], tol: number): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    if (tf.tidy(() => tf.max(tf.abs(want[i])).dataSync()[0]) < 1e-5) expect(maxDiff(g, want[i])).toBeLessThan(1e-5);
    else expectClose(g, want[i], tol);
  });
}

const KINDS: [string, () => AttentionLayerBase][] = [
  ['MultiHeadAttention H=2', () => new MultiHeadAttention({numHeads: 2, causal: true})],
  ['FlashAttention H=4 G=2 D=3 blockSize 3', () => new FlashAttention({numHeads: 4, numKvHeads: 2, headDim: 3,
    blockSize: 3, causal: true})],
];

describe(title('withAttentionMods == the same mods on each call'), () => {
  let x: tf.Tensor;
  let ids: tf.Tensor;
  let slopes: tf.Tensor;
  beforeAll(() => {
    x = randn([B, T, E], 1);
    ids = tf.tensor2d(DOC_IDS, [B, T], 'int32');
    slopes = tf.tensor1d([0.5, 0.25, 0.125, 0.0625]);
  });
  afterAll(() => tf.dispose([x, ids, slopes]));

  for (const [what, make] of KINDS) {
    test(`${what}, causal: documentMask + softcap(2) in the context == given to the call (output, dx, every ` +
         'weight\'s gradient; 1e-6) == the dense mask; not the plain call', () => {
      const layer = make();
      tf.dispose(apply(layer, x));
      const mods = {maskMod: documentMask(ids), scoreMod: softcap(2)};
      const got = withAttentionMods(mods, () => outputAndGrads(layer, x));
      const want = outputAndGrads(layer, x, mods);
      expect(got.length).toBe(2 + layer.trainableWeights.length);
      expectAllClose(got, want, 1e-6);
      const maskOnly = withAttentionMods({maskMod: documentMask(ids)}, () => apply(layer, x));
      const dense = denseMask(sameDoc);
      const reference = apply(layer, x, {attentionMask: dense});
      expectClose(maskOnly, reference, 1e-5);
      const plain = apply(layer, x);
      expect(maxDiff(plain, reference)).toBeGreaterThan(1e-3);
      expect(maxDiff(plain, got[0])).toBeGreaterThan(1e-3);
      tf.dispose([...got, ...want, maskOnly, dense, reference, plain]);
      layer.dispose();
    });

    test(`${what}: a block mask in the context == the block mask given to the call`, () => {
      const layer = make();
      tf.dispose(apply(layer, x));
      const blockMask = createBlockMask(documentMask(ids), B, 1, T, T, {blockSize: 3});
      const got = withAttentionMods({blockMask}, () => apply(layer, x));
      const want = apply(layer, x, {blockMask});
      const dense = denseMask(sameDoc);
      const reference = apply(layer, x, {attentionMask: dense});
      expect(maxDiff(got, want)).toBeLessThan(1e-6);
      expectClose(got, reference, 1e-5);
      blockMask.dispose();
      tf.dispose([got, want, dense, reference]);
      layer.dispose();
    });

    test(`${what}: the context's mods join the call's and the layer's (masks ANDed, score mods chained: ` +
         'context then call)', () => {
      const layer = make();
      tf.dispose(apply(layer, x));
      const H = make === KINDS[0][1] ? 2 : 4;
      const bias = alibi(tf.slice(slopes, 0, H));
      // Masks: context documents AND call window AND the layer's causal rule.
      const joined = withAttentionMods({maskMod: documentMask(ids)}, () =>
        apply(layer, x, {maskMod: slidingWindow(3)}));
      const anded = apply(layer, x, {maskMod: andMasks(documentMask(ids), slidingWindow(3))});
      const dense = denseMask(all(sameDoc, window3, causal));
      const reference = apply(layer, x, {attentionMask: dense});
      expect(maxDiff(joined, anded)).toBeLessThan(1e-6);
      expectClose(joined, reference, 1e-5);
      // Score mods: the context's softcap, then the call's alibi (they do not commute).
      const chained = withAttentionMods({scoreMod: softcap(2)}, () => apply(layer, x, {scoreMod: bias}));
      const inOrder = apply(layer, x, {scoreMod: chainScores(softcap(2), bias)});
      const reversed = apply(layer, x, {scoreMod: chainScores(bias, softcap(2))});
      expect(maxDiff(chained, inOrder)).toBeLessThan(1e-6);
      expect(maxDiff(inOrder, reversed)).toBeGreaterThan(1e-4);
      tf.dispose([joined, anded, dense, reference, chained, inOrder, reversed]);
      layer.dispose();
    });
  }

  test('a layer\'s own maskMod (slidingWindow(3)) joins the context\'s documentMask', () => {
    const layer = new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3)});
    tf.dispose(apply(layer, x));
    const got = withAttentionMods({maskMod: documentMask(ids)}, () => apply(layer, x));
    const plain = new MultiHeadAttention({numHeads: 2});
    tf.dispose(apply(plain, x));
    plain.setWeights(layer.getWeights());
    const dense = denseMask(all(sameDoc, window3, causal));
    const reference = apply(plain, x, {attentionMask: dense});
    expectClose(got, reference, 1e-5);
    tf.dispose([got, dense, reference]);
    [layer, plain].forEach((l) => l.dispose());
  });

  test('nested withAttentionMods join (outer AND inner); the outer\'s alone again once the inner returns', () => {
    const layer = KINDS[0][1]();
    tf.dispose(apply(layer, x));
    const [inner, between] = withAttentionMods({maskMod: documentMask(ids)}, () => {
      const y = withAttentionMods({maskMod: slidingWindow(3)}, () => apply(layer, x));
      return [y, apply(layer, x)];
    });
    const masks = [denseMask(all(sameDoc, window3, causal)), denseMask(sameDoc)];
    const [both, outer] = masks.map((m) => apply(layer, x, {attentionMask: m}));
    expectClose(inner, both, 1e-5);
    expectClose(between, outer, 1e-5);
    expect(maxDiff(both, outer)).toBeGreaterThan(1e-3);
    // Score mods: outer then inner.
    const bias = alibi([0.5, 0.25]);
    const nested = withAttentionMods({scoreMod: softcap(2)}, () => withAttentionMods({scoreMod: bias}, () =>
      apply(layer, x)));
    const chained = apply(layer, x, {scoreMod: chainScores(softcap(2), bias)});
    expect(maxDiff(nested, chained)).toBeLessThan(1e-6);
    tf.dispose([inner, between, ...masks, both, outer, nested, chained]);
    layer.dispose();
  });

  test('a model\'s attention layers (buildTransformer, called by predict) take the context\'s mods', () => {
    const model = buildTransformer({attention: 'mha', vocabSize: 5, seqLength: T, modelDim: 8, numHeads: 2,
      numLayers: 2, causal: true, seed: 1});
    const tokens = tf.tensor2d([[1, 2, 3, 4, 0, 1, 2], [4, 3, 2, 1, 0, 4, 3]], [B, T], 'int32');
    // Documents that split nothing change nothing; real ones change the later documents' outputs only.
    const one = tf.zeros([B, T], 'int32');
    const plain = model.predict(tokens) as tf.Tensor;
    const trivial = withAttentionMods({maskMod: documentMask(one)}, () => model.predict(tokens) as tf.Tensor);
    const split = withAttentionMods({maskMod: documentMask(ids)}, () => model.predict(tokens) as tf.Tensor);
    expect(maxDiff(trivial, plain)).toBeLessThan(1e-6);
    // Row 0's first document (positions 0-2) sees nothing else either way.
    const head = (t: tf.Tensor) => tf.slice(t, [0, 0, 0], [1, 3, -1]);
    expect(maxDiff(head(split), head(plain))).toBeLessThan(1e-6);
    expect(maxDiff(split, plain)).toBeGreaterThan(1e-5);
    tf.dispose([tokens, one, plain, trivial, split]);
    model.dispose();
  });
});

describe(title('withAttentionMods: one block mask for the calls made from the same masks'), () => {
  test('two causal layers in a row evaluate a mask mod as often as one layer does, with the outputs and gradients ' +
       'of the mod given to each call; a third layer with its own maskMod builds its own; nothing is left', () => {
    const ids = tf.tensor2d(DOC_IDS, [B, T], 'int32');
    const documents = documentMask(ids);
    let evaluations = 0;
    // A user's mod (no float form): each evaluation is one block row of one block mask.
    const counted: MaskMod = (b, h, q, kv, context) => {
      evaluations++;
      return documents(b, h, q, kv, context);
    };
    const [first, second] = [1, 2].map((seed) => new MultiHeadAttention({numHeads: 2, numKvHeads: 1, causal: true,
      kernelInitializer: tf.initializers.glorotUniform({seed})}));
    const third = new MultiHeadAttention({numHeads: 2, causal: true, maskMod: slidingWindow(3)});
    const x = randn([B, T, E], 3);
    const two = (kwargs: Kwargs) => apply(second, apply(first, x, kwargs), kwargs);
    tf.dispose([two({}), apply(third, x)]); // builds the weights
    const weights = [...first.trainableWeights, ...second.trainableWeights].map((w) => w.read() as tf.Variable);
    const lossOf = (f: () => tf.Tensor) => tf.variableGrads(() => tf.sum(tf.square(f())) as tf.Scalar, weights);

    evaluations = 0;
    tf.dispose(withAttentionMods({maskMod: counted}, () => apply(first, x)));
    const perLayer = evaluations;
    expect(perLayer).toBeGreaterThan(0);
    evaluations = 0;
    const tensors = tf.memory().numTensors;
    const shared = withAttentionMods({maskMod: counted}, () => lossOf(() => two({})));
    expect(evaluations).toBe(perLayer);
    evaluations = 0;
    const each = lossOf(() => two({maskMod: counted}));
    expect(evaluations).toBe(2 * perLayer);
    expect(shared.value.dataSync()[0]).toBeCloseTo(each.value.dataSync()[0], 5);
    for (const w of weights) expect(maxDiff(shared.grads[w.name], each.grads[w.name])).toBeLessThan(1e-6);
    tf.dispose([shared.value, each.value, ...Object.values(shared.grads), ...Object.values(each.grads)]);
    expect(tf.memory().numTensors).toBe(tensors);
    // The third layer's own maskMod joins the context's: another block mask, also freed.
    evaluations = 0;
    tf.dispose(withAttentionMods({maskMod: counted}, () => tf.tidy(() => apply(third, apply(first, x)))));
    expect(evaluations).toBe(2 * perLayer);
    expect(tf.memory().numTensors).toBe(tensors);
    tf.dispose([x, ids]);
    [first, second, third].forEach((l) => l.dispose());
  });
});

describe(title('withAttentionMods: refusals'), () => {
  let x: tf.Tensor;
  let ids: tf.Tensor;
  beforeAll(() => {
    x = randn([B, T, E], 2);
    ids = tf.tensor2d(DOC_IDS, [B, T], 'int32');
  });
  afterAll(() => tf.dispose([x, ids]));

  test('LinearAttention and LocalGlobalAttention called within it throw UNSUPPORTED (also inside a model); ' +
       'fine outside', () => {
    for (const layer of [new LinearAttention({numHeads: 2, seed: 1, causal: true}),
      new LocalGlobalAttention({numHeads: 2, windowSize: 2, causal: true})]) {
      tf.dispose(apply(layer, x));
      expectError(() => withAttentionMods({maskMod: documentMask(ids)}, () => apply(layer, x)), 'UNSUPPORTED',
        new RegExp(`${layer.getClassName()} was called within withAttentionMods, but takes no mask or score mods`));
      expectError(() => withAttentionMods({scoreMod: softcap(2)}, () => apply(layer, x)), 'UNSUPPORTED',
        /MultiHeadAttention and FlashAttention/);
      tf.dispose(apply(layer, x));
      layer.dispose();
    }
    const model = buildTransformer({attention: 'linear', vocabSize: 5, seqLength: T, modelDim: 8, numHeads: 2,
      numLayers: 1, causal: true, seed: 1});
    const tokens = tf.zeros([B, T], 'int32');
    expectError(() => withAttentionMods({maskMod: documentMask(ids)}, () => model.predict(tokens)), 'UNSUPPORTED',
      /LinearAttention was called within withAttentionMods/);
    tf.dispose([tokens, model.predict(tokens) as tf.Tensor]);
    model.dispose();
  });

  test('a cached decode step within it throws UNSUPPORTED; the same step outside runs', () => {
    for (const [, make] of KINDS) {
      const layer = make();
      tf.dispose(apply(layer, x));
      const cache = layer.createCache(B, 4);
      const xs = tf.slice(x, [0, 0, 0], [B, 1, E]);
      expectError(() => withAttentionMods({maskMod: slidingWindow(2)}, () => layer.apply(xs, {cache})), 'UNSUPPORTED',
        /a cached step cannot take the mods of withAttentionMods/);
      const [y, next] = layer.apply(xs, {cache}) as unknown as [tf.Tensor, AttentionCache];
      expect(next.length).toBe(1);
      tf.dispose([xs, y, Object.values(cache.tensors), Object.values(next.tensors)]);
      layer.dispose();
    }
  });

  test('two block masks (the context\'s and the call\'s, or two nested contexts) throw INVALID_CONFIG', () => {
    const layer = KINDS[0][1]();
    tf.dispose(apply(layer, x));
    const a = createBlockMask(documentMask(ids), B, 1, T, T);
    const b = createBlockMask(slidingWindow(3), 1, 1, T, T);
    expectError(() => withAttentionMods({blockMask: a}, () => apply(layer, x, {blockMask: b})), 'INVALID_CONFIG',
      /two block masks for one call/);
    let ran = false;
    expectError(() => withAttentionMods({blockMask: a}, () => withAttentionMods({blockMask: b}, () => {
      ran = true;
    })), 'INVALID_CONFIG', /two block masks/);
    expect(ran).toBe(false);
    // One block mask with mask mods is fine: the context's block mask AND the call's window.
    const y = withAttentionMods({blockMask: a}, () => apply(layer, x, {maskMod: slidingWindow(3)}));
    const dense = denseMask(all(sameDoc, window3, causal));
    const reference = apply(layer, x, {attentionMask: dense});
    expectClose(y, reference, 1e-5);
    a.dispose();
    b.dispose();
    tf.dispose([y, dense, reference]);
    layer.dispose();
  });

  test('mods that are not mods throw INVALID_CONFIG before f runs', () => {
    let ran = false;
    const f = () => { ran = true; };
    expectError(() => withAttentionMods({maskMod: 3 as unknown as MaskMod}, f), 'INVALID_CONFIG',
      /maskMod must be a function, received 3/);
    expectError(() => withAttentionMods({scoreMod: {name: 'softcap'} as never}, f), 'INVALID_CONFIG',
      /scoreMod must be a function/);
    expectError(() => withAttentionMods({blockMask: {} as never}, f), 'INVALID_CONFIG',
      /blockMask must come from createBlockMask/);
    expect(ran).toBe(false);
  });
});

describe(title('withAttentionMods: only while f runs'), () => {
  let x: tf.Tensor;
  let ids: tf.Tensor;
  let layer: AttentionLayerBase;
  let plain: tf.Tensor;
  let linear: LinearAttention;
  beforeAll(() => {
    x = randn([B, T, E], 3);
    ids = tf.tensor2d(DOC_IDS, [B, T], 'int32');
    layer = KINDS[0][1]();
    plain = apply(layer, x);
    linear = new LinearAttention({numHeads: 2, seed: 1});
    tf.dispose(apply(linear, x));
  });
  afterAll(() => {
    tf.dispose([x, ids, plain]);
    layer.dispose();
    linear.dispose();
  });

  /** The layer called now gives its plain output, and LinearAttention runs: no mods in force. */
  function expectNoContext(): void {
    const y = apply(layer, x);
    expect(maxDiff(y, plain)).toBe(0);
    tf.dispose([y, apply(linear, x)]);
  }

  test('returns what f returns; gone after f returns', () => {
    const y = withAttentionMods({maskMod: documentMask(ids)}, () => apply(layer, x));
    expect(maxDiff(y, plain)).toBeGreaterThan(1e-3);
    expect(withAttentionMods({scoreMod: softcap(2)}, () => 'value')).toBe('value');
    expectNoContext();
    tf.dispose(y);
  });

  test('gone after f throws (the error passes through), and an inner throw restores the outer\'s mods', () => {
    const boom = new Error('boom');
    expect(() => withAttentionMods({maskMod: documentMask(ids)}, () => {
      tf.dispose(apply(layer, x));
      throw boom;
    })).toThrow(boom);
    expectNoContext();
    const dense = denseMask(sameDoc);
    const reference = apply(layer, x, {attentionMask: dense});
    const y = withAttentionMods({maskMod: documentMask(ids)}, () => {
      try {
        withAttentionMods({maskMod: slidingWindow(1)}, () => { throw boom; });
      } catch {
        // the outer's documents alone again
      }
      return apply(layer, x);
    });
    expectClose(y, reference, 1e-5);
    expectNoContext();
    tf.dispose([dense, reference, y]);
  });

  test('synchronous: a call after an await in an async f runs without the mods', async () => {
    const pending = withAttentionMods({maskMod: documentMask(ids)}, async () => {
      await Promise.resolve();
      return apply(layer, x);
    });
    const y = await pending;
    expect(maxDiff(y, plain)).toBe(0);
    expectNoContext();
    tf.dispose(y);
  });
});

describe(title('withAttentionMods: no leaked tensors'), () => {
  test('forward, dx and weight gradients within it, with a documentMask + softcap and with a block mask ' +
       '(layers built before)', () => {
    const x = randn([B, T, E], 4);
    const ids = tf.tensor2d(DOC_IDS, [B, T], 'int32');
    for (const [, make] of KINDS) {
      const layer = make();
      tf.dispose(apply(layer, x));
      const mods = {maskMod: documentMask(ids), scoreMod: softcap(2)};
      expectNoLeaks(() => withAttentionMods(mods, () => tf.dispose(apply(layer, x))));
      expectNoLeaks(() => withAttentionMods(mods, () =>
        tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(apply(layer, a, {maskMod: slidingWindow(3)})))([x]))));
      expectNoLeaks(() => withAttentionMods(mods, () => {
        const {value, grads} = tf.variableGrads(() => tf.sum(apply(layer, x)) as tf.Scalar,
          layer.trainableWeights.map((w) => w.read() as tf.Variable));
        tf.dispose([value, Object.values(grads)]);
      }));
      expectNoLeaks(() => {
        const blockMask = createBlockMask(documentMask(ids), B, 1, T, T, {blockSize: 4});
        withAttentionMods({blockMask}, () => {
          tf.dispose(apply(layer, x));
          tf.dispose(tf.grads((a: tf.Tensor) => tf.sum(apply(layer, a)))([x]));
        });
        blockMask.dispose();
      });
      // A refused call leaves nothing behind either.
      const linear = new LinearAttention({numHeads: 2, seed: 1});
      tf.dispose(apply(linear, x));
      expectNoLeaks(() => expectError(() => withAttentionMods(mods, () => apply(linear, x)), 'UNSUPPORTED', /within/));
      linear.dispose();
      layer.dispose();
    }
    tf.dispose([x, ids]);
  });
});
