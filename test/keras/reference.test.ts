// kerasMhaReference (Keras 3 MultiHeadAttention / GroupedQueryAttention in plain loops)
// against cases small enough to work out by hand: every expected number below is written
// from Math.exp, never taken from the reference. Pure JS: no tf, nothing from src/.
import {kerasMhaReference, KerasMhaWeights} from '../support/reference';

const label = (name: string) => `${name} [${process.env.TEST_BACKEND ?? 'cpu'}]`;
const f32 = (xs: number[]) => Float32Array.from(xs);

/** Every weight has the given values; biases null unless given. */
function weights(w: Partial<Record<keyof KerasMhaWeights, number[]>> & {
  queryKernel: number[]; keyKernel: number[]; valueKernel: number[]; outputKernel: number[];
}): KerasMhaWeights {
  return {
    queryKernel: f32(w.queryKernel), queryBias: w.queryBias ? f32(w.queryBias) : null,
    keyKernel: f32(w.keyKernel), keyBias: w.keyBias ? f32(w.keyBias) : null,
    valueKernel: f32(w.valueKernel), valueBias: w.valueBias ? f32(w.valueBias) : null,
    outputKernel: f32(w.outputKernel), outputBias: w.outputBias ? f32(w.outputBias) : null,
  };
}

/** All features 1 -> 1: H = 1, D = Dv = 1, every kernel [1, 1, 1] = 1, no bias. */
const IDENTITY = weights({queryKernel: [1], keyKernel: [1], valueKernel: [1], outputKernel: [1]});

/** Same shape, every entry within 1e-12 (the reference runs in float64). */
function expectNested(actual: number[][][], expected: number[][][]): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((rows, b) => {
    expect(rows.length).toBe(expected[b].length);
    rows.forEach((row, t) => {
      expect(row.length).toBe(expected[b][t].length);
      row.forEach((x, e) => {
        const want = expected[b][t][e];
        if (Math.abs(x - want) > 1e-12 * Math.max(1, Math.abs(want))) {
          throw new Error(`[${b}][${t}][${e}]: got ${x}, expected ${want}`);
        }
      });
    });
  });
}

/** sum_s v_s e^{l_s} / sum_s e^{l_s}, written out for two keys. */
const softAvg2 = (l0: number, l1: number, v0: number, v1: number) =>
  (v0 * Math.exp(l0) + v1 * Math.exp(l1)) / (Math.exp(l0) + Math.exp(l1));

describe(label('kerasMhaReference'), () => {
  test('H = D = 1, identity weights: softmax over two keys with scores q*k', () => {
    // query 2, keys (= values) 1 and 3: logits 2 and 6, scale 1 / sqrt(1).
    const out = kerasMhaReference([[[2]]], [[[1], [3]]], null, IDENTITY, {numHeads: 1, headDim: 1});
    const p1 = Math.exp(6) / (Math.exp(2) + Math.exp(6));
    expectNested(out, [[[(1 - p1) * 1 + p1 * 3]]]);
    // The same from flat Float32Array inputs with their shapes.
    const flat = kerasMhaReference({data: f32([2]), shape: [1, 1, 1]}, {data: f32([1, 3]), shape: [1, 2, 1]}, null,
      IDENTITY, {numHeads: 1, headDim: 1});
    expectNested(flat, out);
  });

  test('1 / sqrt(D) scale, biases, a key apart from the value, two batches and query rows', () => {
    // D = 4: Wq = Wk = [1, 1, 1, 1], bq = 0.5 -> q_d = x + 0.5, k_d = key, so the logit is
    // 4 (x + 0.5) key / sqrt(4) = 2 (x + 0.5) key. Wv = 2, bv = 1 -> v = 2 value + 1.
    // Wo [1, 1, 2] = [1, -1], bo = [0, 10] -> out = [o, 10 - o].
    const w = weights({
      queryKernel: [1, 1, 1, 1], queryBias: [0.5, 0.5, 0.5, 0.5], keyKernel: [1, 1, 1, 1],
      valueKernel: [2], valueBias: [1], outputKernel: [1, -1], outputBias: [0, 10],
    });
    const query = [[[1], [0]], [[-1], [0.5]]];
    const key = [[[0], [1]], [[2], [-1]]];
    const value = [[[1], [4]], [[0], [3]]];
    const out = kerasMhaReference(query, value, key, w, {numHeads: 1, headDim: 4, valueDim: 1});
    const expected = query.map((rows, b) => rows.map(([x]) => {
      const l0 = 2 * (x + 0.5) * key[b][0][0];
      const l1 = 2 * (x + 0.5) * key[b][1][0];
      const o = softAvg2(l0, l1, 2 * value[b][0][0] + 1, 2 * value[b][1][0] + 1);
      return [o, 10 - o];
    }));
    expectNested(out, expected);
  });

  test('a query row that sees no key: uniform over all S values (dot_product_attention), or zeros (Softmax layer)', () => {
    // value_mask hides key 1 from every row; query_mask hides row 1 entirely.
    // Row 0 sees key 0 alone: o = v0 on both paths.
    // Row 1, path 'dotProductAttention' (dropout 0): every logit is -0.7 * float32 max, the
    // softmax is uniform over both keys, masked key 1 included: o = (v0 + v1) / 2.
    // Row 1, path 'softmaxLayer' (dropout > 0 or return_attention_scores): probabilities
    // zeroed where masked, o = 0 and the output is the output bias alone.
    const w = weights({queryKernel: [1], keyKernel: [1], valueKernel: [1], outputKernel: [2], outputBias: [0.25]});
    const query = [[[1], [3]]];
    const value = [[[5], [-1]]];
    const masks = {queryMask: [[1, 0]], valueMask: [[true, false]]};
    const fused = kerasMhaReference(query, value, null, w, {numHeads: 1, headDim: 1, ...masks});
    expectNested(fused, [[[2 * 5 + 0.25], [2 * ((5 + -1) / 2) + 0.25]]]);
    const layer = kerasMhaReference(query, value, null, w, {numHeads: 1, headDim: 1, ...masks, path: 'softmaxLayer'});
    expectNested(layer, [[[2 * 5 + 0.25], [0.25]]]);
    // An all-zero attention_mask row does the same.
    const am = {attentionMask: [[[1, 1], [0, 0]]]};
    const p1 = Math.exp(-1) / (Math.exp(5) + Math.exp(-1)); // row 0: logits 5, -1
    const row0 = 2 * ((1 - p1) * 5 + p1 * -1) + 0.25;
    expectNested(kerasMhaReference(query, value, null, w, {numHeads: 1, headDim: 1, ...am}),
      [[[row0], [2 * 2 + 0.25]]]);
    expectNested(kerasMhaReference(query, value, null, w, {numHeads: 1, headDim: 1, ...am, path: 'softmaxLayer'}),
      [[[row0], [0.25]]]);
  });

  test('use_causal_mask with T = 2, S = 3 is top-left: row t sees keys s <= t', () => {
    // Row 0 sees key 0 only (bottom-right would let it see keys 0 and 1); row 1 keys 0, 1.
    const query = [[[1], [2]]];
    const value = [[[1], [2], [-3]]];
    const out = kerasMhaReference(query, value, null, IDENTITY, {numHeads: 1, headDim: 1, useCausalMask: true});
    expectNested(out, [[[1], [softAvg2(2 * 1, 2 * 2, 1, 2)]]]);
    // The bottom-right answer for row 0 differs, so the test tells the alignments apart.
    expect(Math.abs(out[0][0][0] - softAvg2(1, 2, 1, 2))).toBeGreaterThan(0.1);
    // Causal ANDs with the other masks: hiding key 0 leaves row 0 with no key (uniform
    // over all three values) and row 1 with key 1 alone.
    const both = kerasMhaReference(query, value, null, IDENTITY,
      {numHeads: 1, headDim: 1, useCausalMask: true, keyMask: [[0, 1, 1]]});
    expectNested(both, [[[(1 + 2 - 3) / 3], [2]]]);
  });

  test('GroupedQueryAttention, H = 4, G = 2: query heads 0, 1 read kv head 0 and heads 2, 3 kv head 1', () => {
    // Eq = Ek = Ev = 1, D = Dv = 1. Every query head: q = x = 1. Key heads: k0 = x_s, k1 = -x_s.
    // Value heads: v0 = x_s, v1 = x_s + 10. With x = [0, 1] over S = 2:
    //   kv head 0: logits [0, 1],  o = e / (1 + e)
    //   kv head 1: logits [0, -1], o = 10 + e^-1 / (1 + e^-1) = 10 + 1 / (1 + e).
    // Wo [4, 1, 4] = identity, so the output row is the four head outputs.
    const identity4 = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
    const w = weights({
      queryKernel: [1, 1, 1, 1], keyKernel: [1, -1], valueKernel: [1, 1], valueBias: [0, 10], outputKernel: identity4,
    });
    const out = kerasMhaReference([[[1]]], [[[0], [1]]], null, w, {numHeads: 4, numKvHeads: 2, headDim: 1});
    const e = Math.E;
    const head0 = e / (1 + e);
    const head1 = 10 + 1 / (1 + e);
    expectNested(out, [[[head0, head0, head1, head1]]]);
    // Not the tiled mapping h % G, which would give [head0, head1, head0, head1].
    expect(out[0][0][1]).not.toBeCloseTo(head1, 3);
  });

  test('bad arguments: H not a multiple of G, a kernel of the wrong size', () => {
    expect(() => kerasMhaReference([[[1]]], [[[1]]], null, IDENTITY, {numHeads: 3, numKvHeads: 2, headDim: 1}))
      .toThrow(/multiple/);
    expect(() => kerasMhaReference([[[1, 2]]], [[[1]]], null, IDENTITY, {numHeads: 1, headDim: 1}))
      .toThrow(/queryKernel/);
  });
});
