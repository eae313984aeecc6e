// kerasOptionsReference (Keras 3.15's sliding_window and use_gate in plain loops) against
// cases small enough to work out by hand: every expected number is written from Math.exp,
// never taken from the reference. Pure JS: no tf, nothing from src/.
import {kerasMhaReference, KerasMhaWeights} from '../support/reference';
import {kerasOptionsReference} from '../support/keras_options_reference';

const label = (name: string) => `${name} [${process.env.TEST_BACKEND ?? 'cpu'}]`;
const f32 = (xs: number[]) => Float32Array.from(xs);

/** H = 1, D = Dv = 1, every kernel [1, 1, 1] = 1, no bias: the logit is q * k, the output the average value. */
const IDENTITY: KerasMhaWeights = {queryKernel: f32([1]), queryBias: null, keyKernel: f32([1]), keyBias: null,
  valueKernel: f32([1]), valueBias: null, outputKernel: f32([1]), outputBias: null};
const ONE_HEAD = {numHeads: 1, headDim: 1};

/** sum_s v_s e^{l_s} / sum_s e^{l_s}. */
const softAvg = (logits: number[], values: number[]) =>
  logits.reduce((a, l, i) => a + values[i] * Math.exp(l), 0) / logits.reduce((a, l) => a + Math.exp(l), 0);
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function expectNested(actual: number[][][], expected: number[][][]): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((rows, b) => rows.forEach((row, t) => row.forEach((x, e) => {
    const want = expected[b][t][e];
    if (Math.abs(x - want) > 1e-12 * Math.max(1, Math.abs(want))) throw new Error(`[${b}][${t}][${e}]: got ${x}, expected ${want}`);
  })));
}

describe(label('kerasOptionsReference'), () => {
  // Two queries (1, 2) over three keys (= values) 1, 2, -3: logits q * k.
  const query = [[[1], [2]]];
  const value = [[[1], [2], [-3]]];

  test('sliding_window, not causal, T = 2 < S = 3: |t - s| < W counted from 0 (top-left)', () => {
    // W = 1: row t sees key t alone -> outputs 1 and 2. Bottom-right (|t + 1 - s| < 1) would give 2 and -3.
    expectNested(kerasOptionsReference(query, value, null, IDENTITY, {...ONE_HEAD, slidingWindow: 1}), [[[1], [2]]]);
    // W = 2: row 0 sees keys 0, 1; row 1 sees keys 0, 1, 2.
    expectNested(kerasOptionsReference(query, value, null, IDENTITY, {...ONE_HEAD, slidingWindow: 2}),
      [[[softAvg([1, 2], [1, 2])], [softAvg([2, 4, -6], [1, 2, -3])]]]);
  });

  test('sliding_window with use_causal_mask: 0 <= t - s < W', () => {
    // W = 2, causal top-left: row 0 sees key 0; row 1 keys 0, 1 (key 2 is in the band but in the future).
    const causal = {...ONE_HEAD, useCausalMask: true};
    expectNested(kerasOptionsReference(query, value, null, IDENTITY, {...causal, slidingWindow: 2}),
      [[[1], [softAvg([2, 4], [1, 2])]]]);
    // W = 1 with a causal mask: each row sees its own key.
    expectNested(kerasOptionsReference(query, value, null, IDENTITY, {...causal, slidingWindow: 1}), [[[1], [2]]]);
  });

  test('sliding_window ANDs with attention_mask: a row left with no key takes the fused path\'s uniform mean', () => {
    // W = 1 keeps key t; the mask hides key 1 from row 1, which then sees nothing: the mean
    // of all values (1 + 2 + 6) / 3 on the fused path, zeros on the Softmax layer's.
    const values = [[[1], [2], [6]]];
    const attentionMask = [[[1, 1, 1], [1, 0, 1]]];
    expectNested(kerasOptionsReference(query, values, null, IDENTITY, {...ONE_HEAD, slidingWindow: 1, attentionMask}),
      [[[1], [3]]]);
    expectNested(kerasOptionsReference(query, values, null, IDENTITY,
      {...ONE_HEAD, slidingWindow: 1, attentionMask, path: 'softmaxLayer'}), [[[1], [0]]]);
  });

  test('use_gate: o * sigmoid(x Wg + bg) before the output projection, per head and value channel', () => {
    // H = 2, D = Dv = 1, Eq = 1. Query kernel [1, 2, 1] = [1, 1]; key kernel [1, 1]; value kernel [1, -1]:
    // head 0 averages the values, head 1 their negation. Gate kernel [1, 2, 1] = [2, -1], bias [-1, 0.5].
    // Output kernel [2, 1, 1] = [1, 3], bias [0.25]: out = o0 g0 + 3 o1 g1 + 0.25.
    const w: KerasMhaWeights = {queryKernel: f32([1, 1]), queryBias: null, keyKernel: f32([1, 1]), keyBias: null,
      valueKernel: f32([1, -1]), valueBias: null, outputKernel: f32([1, 3]), outputBias: f32([0.25])};
    const gate = {gateKernel: f32([2, -1]), gateBias: f32([-1, 0.5])};
    const out = kerasOptionsReference(query, value, null, w, {numHeads: 2, headDim: 1, gate});
    const expected = query[0].map(([x]) => {
      const o0 = softAvg(value[0].map(([k]) => x * k), value[0].map(([v]) => v));
      return [o0 * sigmoid(2 * x - 1) + 3 * -o0 * sigmoid(-x + 0.5) + 0.25];
    });
    expectNested(out, [expected]);
    // Without the gate bias (use_bias=False): g = sigmoid(x Wg).
    const noBias = kerasOptionsReference(query, value, null, w, {numHeads: 2, headDim: 1,
      gate: {gateKernel: gate.gateKernel, gateBias: null}});
    expectNested(noBias, [query[0].map(([x]) => {
      const o0 = softAvg(value[0].map(([k]) => x * k), value[0].map(([v]) => v));
      return [o0 * sigmoid(2 * x) - 3 * o0 * sigmoid(-x) + 0.25];
    })]);
  });

  test('neither option: exactly kerasMhaReference', () => {
    const opts = {...ONE_HEAD, useCausalMask: true};
    expect(kerasOptionsReference(query, value, null, IDENTITY, opts))
      .toEqual(kerasMhaReference(query, value, null, IDENTITY, opts));
  });

  test('bad arguments: a window that is not a positive integer, a gate of the wrong size', () => {
    expect(() => kerasOptionsReference(query, value, null, IDENTITY, {...ONE_HEAD, slidingWindow: 0})).toThrow(/slidingWindow/);
    expect(() => kerasOptionsReference(query, value, null, IDENTITY,
      {...ONE_HEAD, gate: {gateKernel: f32([1, 2]), gateBias: null}})).toThrow(/gate must be/);
  });
});
