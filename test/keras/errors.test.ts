// loadKerasModel refuses what it cannot run, by name: Keras keys with no equivalent and
// KerasHub models and layers (UNSUPPORTED, naming the layer and the key, saying why), and
// corrupt or truncated files (one AttentionError('IO')); keys ignored on purpose load;
// nothing leaks when a load fails.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {AttentionError, loadKerasModel} from '../../src';
import {KERAS_FIXTURES} from '../fixtures/keras/cases';
import {title} from '../support/helpers';

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'keras');

type Dict = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A fixture's model.json (parsed, a fresh copy) and weight bytes. */
function fixture(name: string): {json: Dict; bytes: Buffer} {
  const dir = path.join(FIXTURES, name);
  return {json: JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8')),
    bytes: fs.readFileSync(path.join(dir, 'weights.bin'))};
}

/** An in-memory handler for a model.json and its bytes. */
function handler(json: Dict, bytes: Buffer): tf.io.IOHandler {
  const data = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: json.weightsManifest[0].weights,
    weightData: data});
}

/** The layer entry `name` of a Keras 3 functional topology. */
const layerOf = (json: Dict, name: string): Dict =>
  json.modelTopology.model_config.config.layers.find((l: Dict) => l.name === name);

/** Expects the load to throw an AttentionError with `code` and a message matching `message`, and to leak nothing. */
async function expectRefused(load: () => Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const before = tf.memory().numTensors;
  let error: unknown = null;
  try {
    await load();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(AttentionError);
  expect((error as AttentionError).code).toBe(code);
  expect((error as Error).message).toMatch(message);
  expect((error as Error).message.split('\n')).toHaveLength(1);
  expect(tf.memory().numTensors).toBe(before);
}

/** Loads a mutated fixture and expects it refused. */
async function refused(name: string, mutate: (json: Dict) => void, code: string, message: RegExp): Promise<void> {
  const {json, bytes} = fixture(name);
  mutate(json);
  await expectRefused(() => loadKerasModel(handler(json, bytes)), code, message);
}

const tensorRef = (layer: string, shape: (number | null)[]) =>
  ({class_name: '__keras_tensor__', config: {shape, dtype: 'float32', keras_history: [layer, 0, 0]}});

describe(title('loadKerasModel: refused Keras keys'), () => {
  const mha = (json: Dict) => layerOf(json, 'mha').config;

  test.each([
    ['attention_axes [2]', (j: Dict) => { mha(j).attention_axes = [2]; }, /'mha' \(MultiHeadAttention\): attention_axes \[2\] is not supported/],
    ['attention_axes [1, 2]', (j: Dict) => { mha(j).attention_axes = [1, 2]; }, /attention_axes \[1, 2\]/],
    ['output_shape [4, 5]', (j: Dict) => { mha(j).output_shape = [4, 5]; }, /output_shape \[4, 5\] is not supported/],
    ['activity_regularizer', (j: Dict) => { mha(j).activity_regularizer = {class_name: 'L2', config: {l2: 0.1}}; },
      /activity_regularizer .* is not supported/],
    ['an unknown key', (j: Dict) => { mha(j).future_option = 3; }, /'mha' \(MultiHeadAttention\): the config key 'future_option'/],
    ['an attention_mask tensor', (j: Dict) => { layerOf(j, 'mha').inbound_nodes[0].kwargs.attention_mask = tensorRef('x', [null, 6, 6]); },
      /'mha' \(MultiHeadAttention\): its call takes the tensor 'attention_mask' by keyword/],
    ['a query_mask tensor', (j: Dict) => { layerOf(j, 'mha').inbound_nodes[0].kwargs.query_mask = tensorRef('x', [null, 6]); },
      /takes the tensor 'query_mask' by keyword/],
    ['a float16 dtype policy', (j: Dict) => { mha(j).dtype.config.name = 'float16'; }, /'mha': dtype policy 'float16' is not supported/],
  ])('MultiHeadAttention with %s: UNSUPPORTED naming the layer and the key', async (_label, mutate, message) => {
    await refused('keras3_self', mutate, 'UNSUPPORTED', message);
  });

  test.each([
    ['sliding_window 0', (c: Dict) => { c.sliding_window = 0; }, /'gqa' \(GroupedQueryAttention\): sliding_window must be null or a positive integer, received 0/],
    ['sliding_window 2.5', (c: Dict) => { c.sliding_window = 2.5; }, /sliding_window must be .*received 2\.5/],
    ['use_gate \'yes\'', (c: Dict) => { c.use_gate = 'yes'; }, /'gqa' \(GroupedQueryAttention\): use_gate must be a boolean, received 'yes'/],
  ])('GroupedQueryAttention with %s (values Keras itself refuses): IO', async (_label, mutate, message) => {
    await refused('keras3_gqa', (j) => mutate(layerOf(j, 'gqa').config), 'IO', message);
  });

  test.each([
    ['a legacy h5 KerasHub backbone (class and hyperparameters, no layers)', (j: Dict) => {
      j.modelTopology.model_config = {class_name: 'GemmaBackbone', config: {name: 'gemma_backbone', trainable: true,
        vocabulary_size: 256, num_layers: 2, num_query_heads: 2, num_key_value_heads: 1, hidden_dim: 8,
        intermediate_dim: 16, head_dim: 4, attention_logit_soft_cap: 50, sliding_window_size: 4,
        use_sliding_window_attention: true}};
    }, /'GemmaBackbone' is a KerasHub model, which this loader does not read: KerasHub builds its attention/],
    ['a KerasHub task whose backbone is nested with its module', (j: Dict) => {
      j.modelTopology.model_config = {class_name: 'GemmaCausalLM', config: {backbone: {module:
        'keras_hub.src.models.gemma.gemma_backbone', class_name: 'GemmaBackbone', config: {name: 'b'},
      registered_name: 'keras_hub>GemmaBackbone'}, preprocessor: null, name: 'gemma_causal_lm'}};
    }, /'GemmaCausalLM' is a KerasHub model/],
    ['a registered KerasHub model name', (j: Dict) => {
      j.modelTopology.model_config = {class_name: 'keras_hub>GptOssBackbone', config: {name: 'b'}};
    }, /'keras_hub>GptOssBackbone' is a KerasHub model.*setWeights$/],
  ])('%s: UNSUPPORTED saying why', async (_label, mutate, message) => {
    await refused('keras3_self', mutate, 'UNSUPPORTED', message);
  });

  test.each([
    ['keras_hub>CachedMultiHeadAttention (legacy h5 names a layer by its registered name)',
      (j: Dict) => { layerOf(j, 'mha').class_name = 'keras_hub>CachedMultiHeadAttention'; },
      /Keras layer 'mha' \(CachedMultiHeadAttention\) is a KerasHub layer, which this loader does not read \(its config is MultiHeadAttention's plus a cache/],
    ['a layer whose module is keras_hub (a .keras config)', (j: Dict) => {
      Object.assign(layerOf(j, 'mha'), {class_name: 'TransformerDecoder', module: 'keras_hub.src.layers.modeling.transformer_decoder',
        registered_name: 'keras_hub>TransformerDecoder'});
    }, /Keras layer 'mha' \(TransformerDecoder\) is a KerasHub layer/],
  ])('a KerasHub layer in a Keras model, %s: UNSUPPORTED naming it', async (_label, mutate, message) => {
    await refused('keras3_self', mutate, 'UNSUPPORTED', message);
  });

  test.each([
    ['a LoRA rank on Dense', (j: Dict) => { layerOf(j, 'head').config.lora_rank = 4; }, /'head' \(Dense\): lora_rank 4/],
    ['an activation tfjs computes otherwise', (j: Dict) => { layerOf(j, 'head').config.activation = 'hard_sigmoid'; },
      /'head' \(Dense\): activation 'hard_sigmoid' has no tfjs equivalent/],
    ['RMS scaling', (j: Dict) => { layerOf(j, 'layer_normalization').config.rms_scaling = true; }, /rms_scaling true/],
    ['causal convolution padding', (j: Dict) => { layerOf(j, 'conv1d').config.padding = 'causal'; }, /padding 'causal'/],
    ['a backward layer that is not the mirror', (j: Dict) => { layerOf(j, 'bilstm').config.backward_layer.config.units = 3; },
      /'bilstm' \(Bidirectional\): its backward_layer differs/],
    ['a layer class tfjs lacks', (j: Dict) => { layerOf(j, 'head').class_name = 'EinsumDense'; }, /the class 'EinsumDense' has no tfjs equivalent/],
  ])('the mixed model with %s: UNSUPPORTED', async (_label, mutate, message) => {
    await refused('keras3_mixed', mutate, 'UNSUPPORTED', message);
  });

  test('cross-attention whose value carries a padding mask: UNSUPPORTED (tfjs predict would drop it)', async () => {
    const {json, bytes} = fixture('keras3_cross');
    const layers = json.modelTopology.model_config.config.layers;
    // v becomes token ids through Embedding(mask_zero=True); the attention's value is that embedding.
    layers[1] = {class_name: 'InputLayer', config: {batch_shape: [null, 7], dtype: 'int32', sparse: false, ragged: false,
      name: 'v', optional: false}, name: 'v', inbound_nodes: []};
    layers.splice(2, 0, {module: 'keras.layers', class_name: 'Embedding', config: {name: 'embedding', trainable: true,
      dtype: 'float32', input_dim: 10, output_dim: 6, mask_zero: true, embeddings_initializer: null},
    name: 'embedding', inbound_nodes: [{args: [tensorRef('v', [null, 7])], kwargs: {}}]});
    layerOf(json, 'cross').inbound_nodes[0].kwargs.value = tensorRef('embedding', [null, 7, 6]);
    json.weightsManifest[0].weights.push({name: 'embedding/embeddings', shape: [10, 6], dtype: 'float32'});
    await expectRefused(() => loadKerasModel(handler(json, Buffer.concat([bytes, Buffer.alloc(240)]))), 'UNSUPPORTED',
      /'cross' \(MultiHeadAttention\): its value carries a padding mask, which tfjs-layers' predict \/ fit would not pass on/);
  });

  /** The padding fixture with `extend` applied, its weights grown by `extra` floats. */
  async function paddingRefused(extend: (json: Dict) => void, extra: number, message: RegExp): Promise<void> {
    const {json, bytes} = fixture('keras3_padding');
    extend(json);
    await expectRefused(() => loadKerasModel(handler(json, Buffer.concat([bytes, Buffer.alloc(4 * extra)]))), 'UNSUPPORTED',
      message);
  }
  const entry = (cls: string, name: string, config: Dict, input: Dict) => ({class_name: cls,
    config: {name, trainable: true, dtype: 'float32', ...config}, name, inbound_nodes: [{args: [input], kwargs: {}}]});

  test('a shared attention layer whose later call reads a masked value listed after it: UNSUPPORTED', async () => {
    await paddingRefused((json) => {
      const layers = json.modelTopology.model_config.config.layers;
      layers.push(entry('Dense', 'd', {units: 8}, tensorRef('mha', [null, 7, 8]))); // masked: Dense passes the mask on
      layerOf(json, 'mha').inbound_nodes.push({args: [tensorRef('embedding', [null, 7, 8]), {class_name: '__keras_tensor__',
        config: {shape: [null, 7, 8], dtype: 'float32', keras_history: ['d', 0, 0]}}], kwargs: {}});
      json.modelTopology.model_config.config.output_layers = [['mha', 1, 0]];
      json.weightsManifest[0].weights.push({name: 'd/kernel', shape: [8, 8], dtype: 'float32'},
        {name: 'd/bias', shape: [8], dtype: 'float32'});
    }, 72, /'mha' \(MultiHeadAttention\): its value carries a padding mask/);
  });

  test('a masked sequence into GlobalAveragePooling1D (tfjs ignores the mask Keras uses): UNSUPPORTED', async () => {
    await paddingRefused((json) => {
      json.modelTopology.model_config.config.layers.push(entry('GlobalAveragePooling1D', 'pool', {data_format: 'channels_last',
        keepdims: false}, tensorRef('mha', [null, 7, 8])));
      json.modelTopology.model_config.config.output_layers = [['pool', 0, 0]];
    }, 0, /'pool' \(GlobalAveragePooling1D\): its input carries a padding mask, which Keras uses/);
  });

  test('a GRU with reset_after (Keras 3\'s default, not in tfjs): UNSUPPORTED', async () => {
    await paddingRefused((json) => {
      json.modelTopology.model_config.config.layers.push(entry('GRU', 'gru', {units: 2, reset_after: true},
        tensorRef('mha', [null, 7, 8])));
    }, 0, /'gru' \(GRU\): reset_after true is not supported/);
  });

  test('keys ignored on purpose load: seed, flash_attention, query_shape; attention_axes 1 or null', async () => {
    for (const mutate of [(c: Dict) => { c.seed = 1234; }, (c: Dict) => { c.flash_attention = true; },
      (c: Dict) => { c.query_shape = [null, 6, 8]; c.key_shape = [null, 6, 8]; c.value_shape = [null, 6, 8]; },
      (c: Dict) => { c.attention_axes = 1; }, (c: Dict) => { c.attention_axes = null; },
      (c: Dict) => { c.use_gate = false; c.sliding_window = null; }]) {
      const {json, bytes} = fixture('keras3_self');
      mutate(layerOf(json, 'mha').config);
      const model = await loadKerasModel(handler(json, bytes));
      expect(model.getLayer('mha').getClassName()).toBe('MultiHeadAttention');
      model.dispose();
    }
  });
});

describe(title('loadKerasModel: corrupt and truncated files'), () => {
  let tmp: string;
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keras-errors-')); });
  afterAll(() => fs.rmSync(tmp, {recursive: true, force: true}));

  /** A copy of a fixture folder, changed by `damage`; returns its model.json URL. */
  function damaged(name: string, damage: (dir: string) => void): string {
    const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
    for (const f of ['model.json', 'weights.bin']) fs.copyFileSync(path.join(FIXTURES, name, f), path.join(dir, f));
    damage(dir);
    return `file://${path.join(dir, 'model.json')}`;
  }
  const editJson = (dir: string, edit: (j: Dict) => void) => {
    const j = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    edit(j);
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(j));
  };

  test.each([
    ['a truncated weights.bin', (d: string) => fs.truncateSync(path.join(d, 'weights.bin'), 700), /700 bytes but model.json lists 1152/],
    ['a missing weights.bin', (d: string) => fs.unlinkSync(path.join(d, 'weights.bin')), /cannot read weights file .*it does not exist/],
    ['a model.json cut short', (d: string) => fs.truncateSync(path.join(d, 'model.json'), 300), /corrupt model.json/],
    ['an empty model.json', (d: string) => fs.writeFileSync(path.join(d, 'model.json'), ''), /corrupt model.json/],
    ['a weight missing from the manifest (and its bytes)', (d: string) => {
      editJson(d, (j) => { j.weightsManifest[0].weights = j.weightsManifest[0].weights.filter((w: Dict) => w.name !== 'mha/value/bias'); });
      const bytes = fs.readFileSync(path.join(d, 'weights.bin'));
      fs.writeFileSync(path.join(d, 'weights.bin'), bytes.subarray(0, bytes.length - 32)); // last in path order: 8 floats
    }, /no stored weight for the weight \['mha\/value\/bias'\]/],
    ['a weight of the wrong shape', (d: string) => editJson(d, (j) => {
      j.weightsManifest[0].weights.find((w: Dict) => w.name === 'mha/query/kernel').shape = [8, 4, 2];
    }), /the stored weight 'mha\/query\/kernel' has shape \[8, 4, 2\], but the model's weight 'mha\/query\/kernel' has shape \[8, 2, 4\]/],
    ['a stored weight no layer has', (d: string) => editJson(d, (j) => {
      j.weightsManifest[0].weights.find((w: Dict) => w.name === 'mha/query/bias').name = 'other/bias';
    }), /the stored weight 'other\/bias' \[2, 4\] matches no weight of the model/],
    ['a topology that is not a Keras model', (d: string) => editJson(d, (j) => {
      j.modelTopology.model_config.class_name = 'Graph';
    }), /the topology is not a Keras model \(class_name 'Graph'/],
    ['a node that refers to no layer', (d: string) => editJson(d, (j) => {
      j.modelTopology.model_config.config.layers[1].inbound_nodes = [{args: ['x'], kwargs: {}}];
    }), /layer 'mha': its 'query' is not a tensor reference/],
  ])('%s: one AttentionError IO', async (_label, damage, message) => {
    const url = damaged('keras3_self', damage);
    await expectRefused(() => loadKerasModel(url), 'IO', message);
  });

  test('a weight stored with another dtype, and a weight listed twice: IO', async () => {
    const url1 = damaged('keras3_self', (d) => editJson(d, (j) => {
      j.weightsManifest[0].weights.find((w: Dict) => w.name === 'mha/query/bias').dtype = 'int32';
    }));
    await expectRefused(() => loadKerasModel(url1), 'IO', /the stored weight 'mha\/query\/bias' is int32, but the model's weight 'mha\/query\/bias' is float32/);
    const url2 = damaged('keras3_self', (d) => editJson(d, (j) => {
      j.weightsManifest[0].weights.find((w: Dict) => w.name === 'mha/query/bias').name = 'mha/key/bias';
    }));
    await expectRefused(() => loadKerasModel(url2), 'IO', /the manifest lists the weight 'mha\/key\/bias' twice/);
  });

  test('every fixture with its weights file cut in half: IO', async () => {
    for (const f of KERAS_FIXTURES) {
      const url = damaged(f.name, (d) => {
        const p = path.join(d, 'weights.bin');
        fs.truncateSync(p, Math.floor(fs.statSync(p).size / 2));
      });
      await expectRefused(() => loadKerasModel(url), 'IO', /corrupt weights/);
    }
  });

  test('bad arguments: INVALID_CONFIG; an unknown URL scheme: IO', async () => {
    const url = `file://${path.join(FIXTURES, 'keras3_self', 'model.json')}`;
    await expectRefused(() => loadKerasModel(url, {strict: false} as never), 'INVALID_CONFIG',
      /unknown argument 'strict' for loadKerasModel/);
    await expectRefused(() => loadKerasModel(42 as never), 'INVALID_CONFIG', /takes a URL or a tf.io.IOHandler/);
    await expectRefused(() => loadKerasModel('ftp://example.com/model.json'), 'IO', /no load handler for this URL scheme/);
  });
});
