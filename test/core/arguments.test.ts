// No silent arguments: every layer constructor, every op's options and every apply()
// kwargs object refuses a name it does not know (INVALID_CONFIG naming the nearest known
// one), Keras and PyTorch names with no equivalent are UNSUPPORTED with what to use
// instead, and tfjs' own arguments (LayerArgs, the executor's mask and training) pass.
import * as tf from '@tensorflow/tfjs';
import {attentionLayer, FlashAttention, flashAttention, HnswMask, LinearAttention, linearAttention, LocalGlobalAttention, localGlobalAttention, MultiHeadAttention, orthogonalProjection, PositionEmbedding, scaledDotProductAttention, buildTransformer} from '../../src';
import {favorFeatures, linearAttentionFromFeatures} from '../../src/internals';
import {makeToyTask, train} from '../../src/train';
import {editDistance, nearestName} from '../../src/core/validate';
import {expectError, maxDiff, randn, title} from '../support/helpers';

type Args = Record<string, unknown>;
type Build = (extra: Args) => tf.layers.Layer;

/** Each layer class with the smallest arguments it takes, and one of its own names misspelt. */
const LAYERS: [string, Build, string, string][] = [
  ['MultiHeadAttention', (a) => new MultiHeadAttention({numHeads: 2, ...a} as never), 'implementaton', 'implementation'],
  ['FlashAttention', (a) => new FlashAttention({numHeads: 2, ...a} as never), 'blokSize', 'blockSize'],
  ['LinearAttention', (a) => new LinearAttention({numHeads: 2, seed: 1, ...a} as never), 'numFeature', 'numFeatures'],
  ['LocalGlobalAttention', (a) => new LocalGlobalAttention({numHeads: 2, windowSize: 2, ...a} as never),
    'globalIndex', 'globalIndices'],
];

describe(title('no silent arguments'), () => {
  test('nearestName: typos, swapped letters and snake_case find the name; far names find none', () => {
    const known = ['numHeads', 'numKvHeads', 'blockSize', 'causal', 'attentionMask'];
    expect(nearestName('numHead', known)).toBe('numHeads');
    expect(nearestName('casual', known)).toBe('causal');
    expect(nearestName('num_kv_heads', known)).toBe('numKvHeads');
    expect(nearestName('attentionMsk', known)).toBe('attentionMask');
    expect(nearestName('temperature', known)).toBeNull();
    expect(editDistance('casual', 'causal')).toBe(1);
    expect(editDistance('abc', 'abc')).toBe(0);
  });

  describe.each(LAYERS)('%s constructor', (name, build, typo, right) => {
    test('a misspelt shared name: INVALID_CONFIG naming the nearest', () => {
      expectError(() => build({numHead: 2}), 'INVALID_CONFIG',
        new RegExp(`^unknown argument 'numHead' for ${name}; did you mean 'numHeads'\\?$`));
    });

    test(`a misspelt own name ('${typo}')`, () => {
      expectError(() => build({[typo]: 4}), 'INVALID_CONFIG',
        new RegExp(`^unknown argument '${typo}' for ${name}; did you mean '${right}'\\?$`));
    });

    test('a name far from every known one lists the known names', () => {
      expectError(() => build({temperature: 2}), 'INVALID_CONFIG',
        new RegExp(`unknown argument 'temperature' for ${name}; known arguments: 'numHeads', .*'name'`));
    });

    test('Keras names say what to use: those with an equivalent INVALID_CONFIG, the rest UNSUPPORTED', () => {
      expectError(() => build({useGate: true}), 'INVALID_CONFIG',
        /does not take 'useGate' \(received true\): gated attention is outputGate: 'elementwise' here/);
      if (name === 'LinearAttention' || name === 'LocalGlobalAttention') {
        expectError(() => build({slidingWindow: 4}), 'UNSUPPORTED',
          /does not take 'slidingWindow' .*is an option of MultiHeadAttention and FlashAttention; this kind has none/);
      } else {
        const layer = build({slidingWindow: 4}) as unknown as {attentionOptions: {slidingWindow: number}};
        expect(layer.attentionOptions.slidingWindow).toBe(4);
      }
      expectError(() => build({loraRank: 4}), 'UNSUPPORTED', /LoRA is not implemented/);
      expectError(() => build({attentionAxes: [2]}), 'UNSUPPORTED', /attention runs over axis 1/);
      expectError(() => build({activityRegularizer: 'l2'}), 'UNSUPPORTED', /activity regularizers/);
    });

    test('Keras names that have another name here say which', () => {
      expectError(() => build({keyDim: 4}), 'INVALID_CONFIG', /does not take 'keyDim' \(received 4\): did you mean 'headDim' \(Keras's key_dim\)\?/);
      expectError(() => build({numKeyValueHeads: 1}), 'INVALID_CONFIG', /did you mean 'numKvHeads' \(Keras's num_key_value_heads\)\?/);
      expectError(() => build({isCausal: true}), 'INVALID_CONFIG', /use causal: 'top-left'/);
      expectError(() => build({useCausalMask: true}), 'INVALID_CONFIG', /'useCausalMask' is an argument of apply\(\)/);
      expectError(() => build({attentionMask: tf.ones([1, 1])}), 'INVALID_CONFIG', /argument of apply\(\), not of the constructor/);
    });

    test("Keras defaults that ask for nothing, tfjs' LayerArgs and undefined values are accepted", () => {
      const layer = build({
        attentionAxes: [1], useGate: false, slidingWindow: null, lora: false, activityRegularizer: null,
        extra: undefined,
        name: `ok_${name}`, trainable: true, dtype: 'float32', inputShape: [3, 8], batchSize: 2, inputDType: 'float32',
      });
      const model = tf.sequential({layers: [layer]});
      const y = model.predict(randn([2, 3, 8], 1)) as tf.Tensor;
      expect(y.shape).toEqual([2, 3, 8]);
      tf.dispose(y);
      model.dispose();
    });

    test('non-object arguments are INVALID_CONFIG', () => {
      const Cls = build({}).constructor as new (a: unknown) => unknown;
      for (const bad of [null, 7, [2]]) {
        expectError(() => new Cls(bad), 'INVALID_CONFIG', new RegExp(`^${name} arguments must be an object, received`));
      }
    });
  });

  test('PositionEmbedding refuses unknown names too', () => {
    expectError(() => new PositionEmbedding({maxLenght: 4} as never), 'INVALID_CONFIG',
      /unknown argument 'maxLenght' for PositionEmbedding; did you mean 'maxLength'\?/);
  });

  test('the training helpers refuse unknown options too', () => {
    expectError(() => makeToyTask('copy', {lenght: 4} as never), 'INVALID_CONFIG',
      /unknown argument 'lenght' for makeToyTask; did you mean 'length'\?/);
    expectError(() => buildTransformer({attention: 'mha', vocabSize: 5, seqLength: 3, numLayer: 1} as never), 'INVALID_CONFIG',
      /unknown argument 'numLayer' for buildTransformer; did you mean 'numLayers'\?/);
  });

  test('train refuses unknown options and model options before any step', async () => {
    await expect(train({task: 'copy', model: {attention: 'mha'}, stpes: 2} as never)).rejects.toMatchObject({
      code: 'INVALID_CONFIG', message: "unknown argument 'stpes' for train; did you mean 'steps'?"});
    await expect(train({task: 'copy', model: {attention: 'mha', seqLength: 4}} as never)).rejects.toMatchObject({
      code: 'INVALID_CONFIG', message: expect.stringMatching(/unknown argument 'seqLength' for train options.model/)});
  });

  test('attentionLayer keeps its kind-specific message', () => {
    expectError(() => attentionLayer('mha', {numHeads: 2, blockSize: 4} as never), 'INVALID_CONFIG',
      /attention kind 'mha' does not take 'blockSize' \('flash', 'local-global' does\)/);
    expectError(() => attentionLayer('flash', {numHeads: 2, blokSize: 4} as never), 'INVALID_CONFIG',
      /does not take 'blokSize' \(no attention kind does\); did you mean 'blockSize'\?/);
    // Keras names go to the constructor: their "off" values pass, the others say what to use.
    expect(attentionLayer('mha', {numHeads: 2, useGate: false, attentionAxes: [1]} as never).numHeads).toBe(2);
    expectError(() => attentionLayer('gqa', {numHeads: 2, numKvHeads: 1, useGate: true} as never), 'INVALID_CONFIG',
      /outputGate/);
    expectError(() => attentionLayer('linear', {numHeads: 2, keyDim: 4} as never), 'INVALID_CONFIG', /did you mean 'headDim' \(Keras's key_dim\)/);
  });

  describe.each(LAYERS)('%s.apply kwargs', (name, build) => {
    const x = () => randn([2, 3, 8], 2);

    test('a misspelt kwarg names the nearest, for tensors and symbolic inputs', () => {
      const layer = build({});
      tf.dispose(layer.apply(x()) as tf.Tensor);
      const m = tf.ones([2, 3, 3]);
      expectError(() => layer.apply(x(), {attentionMsk: m}), 'INVALID_CONFIG',
        new RegExp(`^unknown argument 'attentionMsk' for ${name}.apply; did you mean 'attentionMask'\\?$`));
      expectError(() => layer.apply(tf.input({shape: [3, 8]}), {useCausalMsk: true}), 'INVALID_CONFIG',
        /unknown argument 'useCausalMsk' .*did you mean 'useCausalMask'\?/);
      expectError(() => layer.apply(x(), {causal: true}), 'INVALID_CONFIG',
        /'causal' is a constructor argument; at call time pass useCausalMask: true/);
      expectError(() => layer.apply(x(), {cache: m}), 'UNSUPPORTED', /not causal: only a causal layer decodes from a cache/);
      expectError(() => layer.apply(x(), {pastKeyValues: m}), 'INVALID_CONFIG', /use cache: layer.createCache/);
      expectError(() => layer.apply(x(), {returnWeights: true}), 'INVALID_CONFIG', /returnAttentionScores/);
      expectError(() => layer.apply(x(), {training: 'yes'}), 'INVALID_CONFIG', /training must be a boolean/);
      expectError(() => layer.apply(x(), {useCausalMask: 1}), 'INVALID_CONFIG', /useCausalMask must be a boolean/);
      expectError(() => layer.apply(x(), 'kw' as never), 'INVALID_CONFIG', /options must be an object/);
      expectError(() => layer.apply(null as never), 'INVALID_CONFIG', /takes x, \[query, value\] or \[query, value, key\]/);
      expectError(() => layer.apply([] as never), 'INVALID_CONFIG', /received \[\]/);
      m.dispose();
      layer.dispose();
    });

    test("tfjs' own kwargs (mask, training) pass and mean what they meant", () => {
      const layer = build({});
      const input = x();
      const padding = tf.tensor2d([[1, 1, 0], [1, 1, 1]]);
      const viaMask = layer.apply(input, {mask: padding, training: false}) as tf.Tensor;
      const viaKeyMask = layer.apply(input, {queryMask: padding, keyMask: padding}) as tf.Tensor;
      expect(maxDiff(viaMask, viaKeyMask)).toBeLessThanOrEqual(1e-6);
      const plain = layer.apply(input) as tf.Tensor;
      expect(maxDiff(viaMask, plain)).toBeGreaterThan(1e-4); // the mask did something
      tf.dispose([input, padding, viaMask, viaKeyMask, plain]);
      layer.dispose();
    });
  });

  describe('op options', () => {
    const q = () => randn([1, 2, 4, 4], 3);
    const proj = () => orthogonalProjection(6, 4, 1);

    test('scaledDotProductAttention', () => {
      const a = q();
      expectError(() => scaledDotProductAttention(a, a, a, {casual: true} as never), 'INVALID_CONFIG',
        /^unknown argument 'casual' for scaledDotProductAttention; did you mean 'causal'\?$/);
      expectError(() => scaledDotProductAttention(a, a, a, {isCausal: true} as never), 'INVALID_CONFIG',
        /use causal: 'top-left' \(PyTorch's is_causal\)/);
      expectError(() => scaledDotProductAttention(a, a, a, {attnMask: a} as never), 'INVALID_CONFIG', /use mask/);
      expectError(() => scaledDotProductAttention(a, a, a, {dropoutP: 0.1} as never), 'INVALID_CONFIG', /use dropout/);
      expectError(() => scaledDotProductAttention(a, a, a, {returnAttentionScores: true} as never), 'INVALID_CONFIG',
        /returnWeights/);
      expectError(() => scaledDotProductAttention(a, a, a, {enableGqa: false} as never), 'INVALID_CONFIG',
        /grouped-query attention is automatic/);
      expectError(() => scaledDotProductAttention(a, a, a, 3 as never), 'INVALID_CONFIG', /options must be an object/);
      tf.dispose(scaledDotProductAttention(a, a, a, {enableGqa: true} as object)); // what it asks for is what happens
      a.dispose();
    });

    test('flashAttention: typos, and what it cannot do', () => {
      const a = q();
      expectError(() => flashAttention(a, a, a, {blokSize: 64} as never), 'INVALID_CONFIG',
        /^unknown argument 'blokSize' for flashAttention; did you mean 'blockSize'\?$/);
      expectError(() => flashAttention(a, a, a, {dropout: 0.1} as never), 'UNSUPPORTED',
        /never forms the attention probabilities; use scaledDotProductAttention for attention dropout/);
      expectError(() => flashAttention(a, a, a, {returnWeights: true} as never), 'UNSUPPORTED', /the weights/);
      expectError(() => flashAttention(a, a, a, {training: 'no'} as never), 'INVALID_CONFIG', /training must be a boolean/);
      // Options that ask for nothing it lacks: no dropout, no weights, any training flag.
      const same = flashAttention(a, a, a, {dropout: 0, returnWeights: false, training: true} as never);
      const plain = flashAttention(a, a, a);
      expect(maxDiff(same, plain)).toBe(0);
      tf.dispose([a, same, plain]);
    });

    test('linearAttention, linearAttentionFromFeatures and favorFeatures', () => {
      const a = q();
      const p = proj();
      expectError(() => linearAttention(a, a, a, {projection: p, chunksize: 2} as never), 'INVALID_CONFIG',
        /unknown argument 'chunksize' for linearAttention; did you mean 'chunkSize'\?/);
      expectError(() => linearAttention(a, a, a, {projection: p, numFeatures: 6} as never), 'INVALID_CONFIG',
        /pass projection: orthogonalProjection\(numFeatures, D, seed\)/);
      expectError(() => linearAttention(a, a, a, {projection: p, returnWeights: true} as never), 'UNSUPPORTED', /weights/);
      const f = tf.abs(a);
      expectError(() => linearAttentionFromFeatures(f, f, a, {chunk: 2} as never), 'INVALID_CONFIG',
        /unknown argument 'chunk' for linearAttentionFromFeatures/);
      expectError(() => favorFeatures(a, p, {role: 'key', scal: 1} as never), 'INVALID_CONFIG',
        /unknown argument 'scal' for favorFeatures; did you mean 'scale'\?/);
      tf.dispose([a, p, f]);
    });

    test('localGlobalAttention', () => {
      const a = q();
      const gate = tf.zeros([2, 4]);
      expectError(() => localGlobalAttention(a, a, a, {window: 2, gate} as never), 'INVALID_CONFIG', /use windowSize/);
      expectError(() => localGlobalAttention(a, a, a, {windowSize: 2, gate, globals: [0]} as never), 'INVALID_CONFIG',
        /use globalIndices/);
      expectError(() => localGlobalAttention(a, a, a, {windowSize: 2, gate, blocksize: 4} as never), 'INVALID_CONFIG',
        /did you mean 'blockSize'\?/);
      expectError(() => localGlobalAttention(a, a, a, {windowSize: 2, gate, dropout: 0.5} as never), 'UNSUPPORTED',
        /attention dropout/);
      tf.dispose([a, gate]);
    });

    test('HnswMask options', () => {
      expectError(() => HnswMask.fromLayers(4, [[0]], {drop: true} as never), 'INVALID_CONFIG',
        /unknown argument 'drop' for HnswMask/);
    });
  });
});
