// Cached (incremental) decoding: every causal kind, with learned and rotary positions, gives
// the logits of a full pass at the same positions at every step (prefill, single tokens,
// steps of 3; the full pass over the whole sequence at every step, and over exactly the
// prefix at six of them), in a model (transformerDecoder) and in a single layer; cache
// sizes (GQA and MQA shrink it by G / H, local-global and linear do not grow with
// maxLength); no leaks over 200 steps; rewinding an exact-attention cache; and the errors
// of a misused cache.
import * as tf from '@tensorflow/tfjs';
import {AttentionLayerBase} from '../../src/layers/base_attention';
import {AttentionCache, cacheBytes} from '../../src/layers/decoding';
import {ATTENTION_KINDS, AttentionKind, attentionLayer} from '../../src/layers/factory';
import {LocalGlobalAttention} from '../../src/layers/local_global_attention';
import {buildTransformer, TransformerPositions} from '../../src/train/model';
import {DecoderCache, disposeDecoderCache, transformerDecoder} from '../../src/train/generate';
import {decodeAttention} from '../../src/ops/kv_cache';
import {scaledDotProductAttention} from '../../src/ops/sdpa';
import {expectError, maxDiff, randn, title} from '../support/helpers';
import {referenceAttention} from '../support/reference';

const V = 11;
const E = 16;
const POSITIONS: TransformerPositions[] = ['learned', 'rope'];

/** The arguments each kind gets beyond numHeads 4 and causal (gqa: G = 2). */
function kindArgs(kind: AttentionKind) {
  if (kind === 'gqa') return {numKvHeads: 2};
  if (kind === 'flash') return {blockSize: 8};
  if (kind === 'local-global') return {windowSize: 4, globalIndices: [0, 9]};
  if (kind === 'linear') return {seed: 1};
  return {};
}

function causalModel(kind: AttentionKind, positions: TransformerPositions, seqLength = 60): tf.LayersModel {
  const {numKvHeads, ...attentionArgs} = kindArgs(kind) as {numKvHeads?: number};
  return buildTransformer({
    attention: kind, vocabSize: V, seqLength, modelDim: E, numHeads: 4, numKvHeads, numLayers: 2, causal: true,
    positions, seed: 3, attentionArgs,
  });
}

/** A causal layer of this kind, built on [B, 1, E]. */
function causalLayer(kind: AttentionKind, extra: Record<string, unknown> = {}): AttentionLayerBase {
  const layer = attentionLayer(kind, {numHeads: 4, causal: true, ...kindArgs(kind), ...extra});
  tf.dispose(layer.apply(tf.zeros([1, 1, E])) as tf.Tensor);
  return layer;
}

/** Token rows of two sequences, columns from .. to - 1. */
function tokens(seqs: number[][], from: number, to: number): tf.Tensor2D {
  return tf.tensor2d(seqs.map((s) => s.slice(from, to)), [seqs.length, to - from], 'int32');
}

/** One cached layer call; the old cache is disposed. */
function step(layer: AttentionLayerBase, x: tf.Tensor, cache: AttentionCache,
    cacheIndex?: number): [tf.Tensor, AttentionCache] {
  const [y, next] = layer.apply(x, {cache, ...(cacheIndex != null ? {cacheIndex} : {})}) as unknown as
    [tf.Tensor, AttentionCache];
  tf.dispose(Object.values(cache.tensors));
  return [y, next];
}

const SEQS = [
  Array.from({length: 60}, (_, i) => (i * 7 + 3) % V),
  Array.from({length: 60}, (_, i) => (i * i + 5 * i + 1) % V),
];
// Prefill 6, then 40 single tokens, then 4 steps of 3: 58 positions.
const STEPS = [6, ...Array(40).fill(1), 3, 3, 3, 3];

describe(title('transformerDecoder: cached == full pass'), () => {
  for (const kind of ATTENTION_KINDS) {
    for (const positions of POSITIONS) {
      test(`${kind}, ${positions} positions: prefill 6, 40 steps of 1, 4 of 3: every cached call == the full pass ` +
           'at the same positions (max |logit diff| < 1e-4), and the history matters', () => {
        const model = causalModel(kind, positions);
        const decoder = transformerDecoder(model);
        expect(decoder.maxPositions).toBe(positions === 'learned' ? 60 : null);
        // The full pass over all 58 positions (a causal model: what each prefix's full pass gives there),
        // and, at some steps, the full pass over exactly the prefix decoded so far.
        const whole = tf.tidy(() => decoder.logits(tokens(SEQS, 0, 58)));
        const prefixChecks = new Set([6, 7, 26, 46, 49, 58]);
        let cache: DecoderCache = decoder.createCache(2, 60);
        let pos = 0;
        let worst = 0;
        let worstPrefix = 0;
        let last: tf.Tensor | null = null;
        for (const t of STEPS) {
          const input = tokens(SEQS, pos, pos + t);
          const [y, next] = decoder.logits(input, cache);
          disposeDecoderCache(cache);
          cache = next;
          expect(y.shape).toEqual([2, t, V]);
          expect(cache.length).toBe(pos + t);
          worst = Math.max(worst, tf.tidy(() => maxDiff(y, tf.slice(whole, [0, pos, 0], [2, t, V]))));
          if (prefixChecks.has(pos + t)) {
            worstPrefix = Math.max(worstPrefix, tf.tidy(() =>
              maxDiff(y, tf.slice(decoder.logits(tokens(SEQS, 0, pos + t)), [0, pos, 0], [2, t, V]))));
          }
          tf.dispose(last == null ? [input] : [input, last]);
          last = y;
          pos += t;
        }
        expect(pos).toBe(58);
        expect(worst).toBeLessThan(1e-4);
        expect(worstPrefix).toBeLessThan(1e-4);
        // Another first token changes the last logits: the cache carried the history.
        const changed = SEQS.map((s) => [(s[0] + 1) % V, ...s.slice(1)]);
        const other = tf.tidy(() => tf.slice(decoder.logits(tokens(changed, 0, pos)), [0, pos - 3, 0], [2, 3, V]));
        expect(maxDiff(other, last!)).toBeGreaterThan(1e-3);
        tf.dispose([other, last!, whole]);
        disposeDecoderCache(cache);
        model.dispose();
      });
    }
  }

  for (const positions of POSITIONS) {
    test(`the decoder's full pass is the model: softmax(logits) == model.predict (1e-5), every kind, ${positions}`, () => {
      for (const kind of ATTENTION_KINDS) {
        const model = causalModel(kind, positions);
        const L = positions === 'learned' ? 60 : 37;
        tf.tidy(() => {
          const input = tokens(SEQS, 0, L);
          const probs = model.predict(input) as tf.Tensor;
          const fromDecoder = tf.softmax(transformerDecoder(model).logits(input));
          expect(fromDecoder.shape).toEqual([2, L, V]);
          const diff = maxDiff(fromDecoder, probs);
          if (!(diff <= 1e-5)) throw new Error(`${kind}: max |prob diff| ${diff}`);
        });
        model.dispose();
      }
    });
  }
});

describe(title('layer.apply with a cache == the whole sequence'), () => {
  const pieces = [7, 1, 1, 3, 3, 1, 5, 9]; // 30 positions
  const cases: [string, AttentionKind, Record<string, unknown>][] = [
    ['mha', 'mha', {}],
    ['gqa (G=2)', 'gqa', {}],
    ['mqa (G=1)', 'gqa', {numKvHeads: 1}],
    ['flash (blockSize 8)', 'flash', {}],
    ['linear', 'linear', {}],
    ['local-global (W=4, globals [0, 9])', 'local-global', {}],
    ['local-global (W=3, globals [3, 11], early rows see none)', 'local-global', {windowSize: 3, globalIndices: [3, 11]}],
  ];
  for (const [name, kind, extra] of cases) {
    for (const rope of [false, true]) {
      test(`${name}${rope ? ', rope' : ''}: pieces ${pieces.join('+')} == one call on x [2, 30, 16] (1e-4)`, () => {
        const layer = causalLayer(kind, {...extra, ...(rope ? {positionEncoding: 'rope'} : {})});
        tf.tidy(() => {
          const x = randn([2, 30, E], 5);
          const full = layer.apply(x) as tf.Tensor;
          let cache = layer.createCache(2, 32);
          const outs: tf.Tensor[] = [];
          let pos = 0;
          pieces.forEach((t, i) => {
            const piece = tf.slice(x, [0, pos, 0], [2, t, E]);
            let y: tf.Tensor;
            [y, cache] = step(layer, piece, cache, i % 2 === 0 ? pos : undefined); // explicit and default cacheIndex
            outs.push(y);
            piece.dispose();
            pos += t;
          });
          expect(cache.length).toBe(30);
          const cached = tf.concat(outs, 1);
          expect(maxDiff(cached, full)).toBeLessThan(1e-4);
          // Position 29 depends on position 27 (inside every window): a cache that lost it would differ.
          const other = layer.apply(tf.concat([tf.slice(x, [0, 0, 0], [2, 27, E]), randn([2, 1, E], 6),
            tf.slice(x, [0, 28, 0], [2, 2, E])], 1)) as tf.Tensor;
          expect(maxDiff(tf.slice(other, [0, 29, 0], [2, 1, E]), tf.slice(full, [0, 29, 0], [2, 1, E])))
            .toBeGreaterThan(1e-4);
        });
        layer.dispose();
      });
    }
  }

  for (const kind of ['mha', 'gqa', 'flash'] as const) {
    for (const rope of [false, true]) {
      test(`${kind}${rope ? ', rope' : ''} rewinds: cacheIndex below cache.length overwrites from there`, () => {
        const layer = causalLayer(kind, rope ? {positionEncoding: 'rope'} : {});
        tf.tidy(() => {
          const x = randn([1, 10, E], 7);
          const x2 = randn([1, 5, E], 8); // other inputs at positions 5 .. 9
          let cache = layer.createCache(1, 16);
          let y: tf.Tensor;
          [y, cache] = step(layer, x, cache);
          y.dispose();
          // 1. Re-decode positions 5 .. 9 with other inputs: a full pass on the new prefix.
          [y, cache] = step(layer, x2, cache, 5);
          expect(cache.length).toBe(10);
          const newPrefix = tf.concat([tf.slice(x, [0, 0, 0], [1, 5, E]), x2], 1); // [1, 10, E]
          const full = layer.apply(newPrefix) as tf.Tensor;
          expect(maxDiff(y, tf.slice(full, [0, 5, 0], [1, 5, E]))).toBeLessThan(1e-4);
          expect(maxDiff(y, tf.slice(layer.apply(x) as tf.Tensor, [0, 5, 0], [1, 5, E]))).toBeGreaterThan(1e-3);
          y.dispose();
          // 2. Back to 7 (rows 7 .. 9 are stale now), then append: a full pass on 8 positions.
          const x3 = randn([1, 1, E], 9);
          [y, cache] = step(layer, tf.slice(x2, [0, 0, 0], [1, 2, E]), cache, 5);
          y.dispose();
          expect(cache.length).toBe(7);
          [y, cache] = step(layer, x3, cache);
          expect(cache.length).toBe(8);
          const prefix8 = tf.concat([tf.slice(newPrefix, [0, 0, 0], [1, 7, E]), x3], 1);
          const full8 = layer.apply(prefix8) as tf.Tensor;
          expect(maxDiff(y, tf.slice(full8, [0, 7, 0], [1, 1, E]))).toBeLessThan(1e-4);
        });
        layer.dispose();
      });
    }
  }
});

describe(title('decodeAttention (the broadcast form of a short cached step)'), () => {
  for (const [H, G] of [[4, 4], [4, 2], [4, 1]]) {
    for (const t of [1, 2, 3, 4]) {
      test(`== sdpa causal bottom-right and the reference (H=${H}, G=${G}, t=${t}, S=13, D=5, Dv=3)`, () => {
        const q = randn([2, H, t, 5], 1) as tf.Tensor4D;
        const k = randn([2, G, 13, 5], 2) as tf.Tensor4D;
        const v = randn([2, G, 13, 3], 3) as tf.Tensor4D;
        const before = tf.memory().numTensors;
        const got = decodeAttention(q, k, v);
        expect(tf.memory().numTensors).toBe(before + 1);
        const sdpa = scaledDotProductAttention(q, k, v, {causal: 'bottom-right'});
        const ref = referenceAttention(q, k, v, {causal: true});
        expect(got.shape).toEqual([2, H, t, 3]);
        expect(maxDiff(got, sdpa)).toBeLessThan(1e-5);
        expect(maxDiff(got, ref)).toBeLessThan(1e-5);
        tf.dispose([q, k, v, got, sdpa, ref]);
      });
    }
  }
});

describe(title('cache sizes (cacheBytes)'), () => {
  test('GQA (H=4, G=2) holds exactly G/H of MHA\'s cache, MQA 1/H: B * G * L * (D + Dv) * 4 bytes for L positions held', () => {
    const [mha, gqa, mqa] = [causalLayer('mha'), causalLayer('gqa'), causalLayer('gqa', {numKvHeads: 1})];
    const bytes = [mha, gqa, mqa].map((layer) => {
      const empty = layer.createCache(3, 64);
      expect(cacheBytes(empty)).toBe(0); // rows are added as positions arrive
      const [y, cache] = layer.apply(randn([3, 40, E], 5), {cache: empty}) as unknown as [tf.Tensor, AttentionCache];
      const n = cacheBytes(cache);
      tf.dispose([y, Object.values(empty.tensors), Object.values(cache.tensors)]);
      return n;
    });
    expect(bytes[0]).toBe(3 * 4 * 40 * (4 + 4) * 4);
    expect(bytes[1]).toBe(bytes[0] * 2 / 4);
    expect(bytes[2]).toBe(bytes[0] / 4);
    [mha, gqa, mqa].forEach((l) => l.dispose());
  });

  test('local-global (W=4, globals [0, 9], G=2): the same bytes at maxLength 64 and 4096, (W + Ng) * G * (D + Dv) * 4 * B', () => {
    const layer = causalLayer('local-global', {numKvHeads: 2});
    const at = (L: number) => {
      const cache = layer.createCache(3, L);
      const n = cacheBytes(cache);
      tf.dispose(Object.values(cache.tensors));
      return n;
    };
    expect(at(4096)).toBe(at(64));
    expect(at(64)).toBe((4 + 2) * 2 * (4 + 4) * 4 * 3);
    expect(at(5)).toBe((4 + 1) * 2 * (4 + 4) * 4 * 3); // global 9 is past a cache of 5 positions
    layer.dispose();
  });

  test('linear (M=8 features): the same bytes at maxLength 16 and 4096, B * G * (M (Dv + 1) + Dv + 2) * 4', () => {
    const layer = causalLayer('linear', {numFeatures: 8});
    const at = (L: number) => {
      const cache = layer.createCache(2, L);
      const n = cacheBytes(cache);
      tf.dispose(Object.values(cache.tensors));
      return n;
    };
    expect(at(4096)).toBe(at(16));
    expect(at(16)).toBe(2 * 4 * (8 * 5 + 5 + 1) * 4);
    layer.dispose();
  });
});

describe(title('no leaked tensors'), () => {
  for (const kind of ATTENTION_KINDS) {
    test(`${kind} (rope): 200 single-token cached calls, each old cache disposed, leave no tensor`, () => {
      // Two heads of 4 on 8 features, one key/value head where the kind allows it: the cpu backend's
      // slices of a cache cost its size on every step.
      const layer = attentionLayer(kind, {numHeads: 2, causal: true, ...kindArgs(kind), positionEncoding: 'rope',
        ...(kind === 'mha' ? {} : {numKvHeads: 1}), ...(kind === 'flash' ? {blockSize: 64} : {})});
      const x = randn([1, 1, 8], 2);
      tf.dispose(layer.apply(x) as tf.Tensor);
      const before = tf.memory().numTensors;
      let cache = layer.createCache(1, 200);
      for (let s = 0; s < 200; s++) {
        let y: tf.Tensor;
        [y, cache] = step(layer, x, cache);
        y.dispose();
      }
      expect(cache.length).toBe(200);
      tf.dispose(Object.values(cache.tensors));
      expect(tf.memory().numTensors).toBe(before);
      x.dispose();
      layer.dispose();
    });
  }

  test('a decoder (gqa, rope): 50 single-token steps leave no tensor', () => {
    const model = causalModel('gqa', 'rope');
    const decoder = transformerDecoder(model);
    const before = tf.memory().numTensors;
    let cache = decoder.createCache(1, 50);
    for (let s = 0; s < 50; s++) {
      const input = tf.tensor2d([[(s * 5 + 1) % V]], [1, 1], 'int32');
      const [y, next] = decoder.logits(input, cache);
      disposeDecoderCache(cache);
      cache = next;
      tf.dispose([input, y]);
    }
    disposeDecoderCache(cache);
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});

describe(title('cache errors'), () => {
  const x1 = () => randn([1, 1, E], 1);

  test('CACHE_FULL past maxLength, in a layer and in a decoder of learned positions', () => tf.tidy(() => {
    const layer = causalLayer('mha');
    const cache = layer.createCache(1, 4);
    expectError(() => layer.apply(randn([1, 5, E], 1), {cache}), 'CACHE_FULL',
      /positions 0 \.\. 4 do not fit a cache of maxLength 4; make a longer one with createCache/);
    const [y, full] = layer.apply(randn([1, 4, E], 1), {cache}) as unknown as [tf.Tensor, AttentionCache];
    expectError(() => layer.apply(x1(), {cache: full}), 'CACHE_FULL', /positions 4 \.\. 4 do not fit a cache of maxLength 4/);
    tf.dispose([y, Object.values(cache.tensors), Object.values(full.tensors)]);
    layer.dispose();

    const model = causalModel('mha', 'learned', 8);
    const decoder = transformerDecoder(model);
    expectError(() => decoder.createCache(1, 9), 'CACHE_FULL', /has learned positions for 8 tokens, so it cannot decode 9/);
    for (const maxLength of [6, 8]) {
      const c = decoder.createCache(1, maxLength);
      const input = tf.tensor2d([Array(maxLength + 1).fill(1)], [1, maxLength + 1], 'int32');
      expectError(() => decoder.logits(input, c), 'CACHE_FULL', new RegExp(`do not fit a cache of maxLength ${maxLength}`));
      tf.dispose(input);
      disposeDecoderCache(c);
    }
    model.dispose();
  }));

  test('INVALID_CACHE: wrong batch, another layer\'s cache, a disposed cache, cacheIndex past length, a non-cache',
    () => tf.tidy(() => {
    const [a, b] = [causalLayer('mha', {name: 'dec_a'}), causalLayer('mha', {name: 'dec_b'})];
    const cache = a.createCache(2, 8);
    expectError(() => a.apply(x1(), {cache}), 'INVALID_CACHE', /the cache holds a batch of 2, received 1 rows/);
    expectError(() => b.apply(randn([2, 1, E], 1), {cache}), 'INVALID_CACHE',
      /'dec_b': the cache belongs to layer 'dec_a', not to this one/);
    const [y, next] = a.apply(randn([2, 3, E], 1), {cache}) as unknown as [tf.Tensor, AttentionCache];
    expectError(() => a.apply(randn([2, 1, E], 1), {cache: next, cacheIndex: 4}), 'INVALID_CACHE',
      /cacheIndex must be an integer in \[0, 3\] \(the positions the cache holds\), received 4/);
    tf.dispose(Object.values(cache.tensors));
    expectError(() => a.apply(randn([2, 1, E], 1), {cache}), 'INVALID_CACHE', /the cache's tensors are disposed/);
    expectError(() => a.apply(x1(), {cache: {foo: 1} as never}), 'INVALID_CACHE', /cache must come from createCache, received/);
    // cache: null is a plain call, as Keras' cache=None.
    const plain = [a.apply(x1(), {cache: null as never}) as tf.Tensor, a.apply(x1()) as tf.Tensor];
    expect(maxDiff(plain[0], plain[1])).toBe(0);
    tf.dispose(plain);
    expectError(() => a.apply(x1(), {cacheIndex: 0}), 'INVALID_CACHE', /cacheIndex needs a cache/);
    tf.dispose([y, Object.values(next.tensors)]);
    [a, b].forEach((l) => l.dispose());
  }));

  test.each(['linear', 'local-global'] as const)(
    'INVALID_CACHE: %s keeps a running state, so cacheIndex must equal cache.length', (kind) => tf.tidy(() => {
    const layer = causalLayer(kind);
    const [y, cache] = layer.apply(randn([1, 3, E], 1), {cache: layer.createCache(1, 8)}) as unknown as
      [tf.Tensor, AttentionCache];
    expectError(() => layer.apply(x1(), {cache, cacheIndex: 1}), 'INVALID_CACHE',
      /keeps a running state: cacheIndex must be the positions already in the cache \(3\), received 1/);
    tf.dispose([y, Object.values(cache.tensors)]);
    layer.dispose();
  }));

  test('UNSUPPORTED: a non-causal layer\'s cache, a cached call on symbolic input, with attentionMask, with scores',
    () => tf.tidy(() => {
    const open = attentionLayer('mha', {numHeads: 4, name: 'open'});
    tf.dispose(open.apply(x1()) as tf.Tensor);
    expectError(() => open.createCache(1, 8), 'UNSUPPORTED', /'open' is not causal: only a causal layer decodes from a cache/);
    const layer = causalLayer('mha');
    const cache = layer.createCache(1, 8);
    expectError(() => layer.apply(tf.input({shape: [3, E]}), {cache}), 'UNSUPPORTED',
      /a cache works on tensors \(eager decoding\), not when building a model graph/);
    expectError(() => layer.apply(x1(), {cache, attentionMask: tf.ones([1, 1, 1])}), 'UNSUPPORTED',
      /attentionMask cannot be given with a cache/);
    expectError(() => layer.apply(x1(), {cache, returnAttentionScores: true}), 'UNSUPPORTED',
      /a cached call is inference: returnAttentionScores and training cannot be true/);
    tf.dispose(Object.values(cache.tensors));
    [open, layer].forEach((l) => l.dispose());
  }));

  test('INVALID_CONFIG: createCache on a layer not built yet', () => tf.tidy(() => {
    expectError(() => attentionLayer('gqa', {numHeads: 4, numKvHeads: 2, causal: true, name: 'raw'}).createCache(1, 8),
      'INVALID_CONFIG', /'raw' is not built yet: apply it to an input \(or build it\) before createCache/);
  }));

  test('INVALID_CACHE: a local-global cache made before setGlobalIndices changed the number of globals', () => tf.tidy(() => {
    const layer = causalLayer('local-global') as LocalGlobalAttention;
    const cache = layer.createCache(1, 16);
    layer.setGlobalIndices([0, 5, 9]);
    expectError(() => layer.apply(x1(), {cache}), 'INVALID_CACHE',
      /the cache holds 2 global positions, the layer now has 3 \(setGlobalIndices was called after createCache\)/);
    layer.setGlobalIndices([0, 9]); // back to two: the cache works again
    const [y, next] = layer.apply(x1(), {cache}) as unknown as [tf.Tensor, AttentionCache];
    expect(next.length).toBe(1);
    tf.dispose([y, Object.values(cache.tensors), Object.values(next.tensors)]);
    layer.dispose();
  }));
});
