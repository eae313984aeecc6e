// Runs every program in examples/, once, on wasm.
import {main as encoderDecoder} from '../../examples/encoder_decoder';
import {main as generateExample} from '../../examples/generate';
import {main as kerasModel} from '../../examples/keras_model';
import {main as kerasSemantics} from '../../examples/keras_semantics';
import {main as geometricExample} from '../../examples/geometric_attention';
import {main as flexExample} from '../../examples/flex_attention';
import {main as optionsExample} from '../../examples/attention_options';
import {main as graphExample} from '../../examples/graph_attention';
import {main as linearLong} from '../../examples/linear_long';
import {main as localGlobalHnsw} from '../../examples/local_global_hnsw';
import {main as longContext} from '../../examples/long_context';
import {main as predictFromModels} from '../../examples/predict_from_models';
import {main as productPaths} from '../../examples/product_paths';
import {main as quickstart} from '../../examples/quickstart';
import {main as trainingStep} from '../../examples/training_step';
import {main as untrustedFolder} from '../../examples/untrusted_folder';
import * as tf from '@tensorflow/tfjs';
import {getMatMulPath} from '../../src/internals';
import {BACKEND, title} from '../support/helpers';

// The programs run as they would for a user: on wasm (the node project's backend), what
// selectBackend() picks in Node without tfjs-node. Their ops and layers run on cpu in their own suites.

describe(title('examples'), () => {
  test('quickstart trains, saves and reloads to the same predictions', async () => {
    const lines: string[] = [];
    const r = await quickstart((l) => lines.push(l));
    expect(r.lastLoss).toBeLessThan(r.firstLoss);
    expect(r.maxDiff).toBeLessThanOrEqual(1e-6);
    expect(lines.length).toBe(2);
    // No tensor-count check here: tfjs' own model.compile/fit keep 3 tensors past
    // model.dispose() with or without our layers; test/mha*.test.ts check our leaks.
  });

  test('generate trains a rotary char model below the unigram entropy, streams a continuation, keeps a constant linear cache', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await generateExample((l) => lines.push(l));
    expect(r.entropy).toBeGreaterThan(2.9); // the shipped text: about 3.0 nats per character
    expect(r.loss).toBeLessThan(r.entropy - 0.3);
    expect([...r.text]).toHaveLength(60);
    expect(lines[1]).not.toMatch(/stream differs/);
    expect(r.cacheBytes[0]).toBe(r.cacheBytes[1]);
    expect(lines).toHaveLength(3);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('encoder_decoder trains an encoder-decoder with cross-attention (loss falls)', async () => {
    const lines: string[] = [];
    const r = await encoderDecoder((l) => lines.push(l));
    expect(r.lastLoss).toBeLessThan(0.7 * r.firstLoss);
    expect(lines[0]).toMatch(/^encoder-decoder: loss/);
  });

  test('linear_long runs causal linear attention forward and backward on 8192 tokens', async () => {
    const lines: string[] = [];
    const r = await linearLong((l) => lines.push(l));
    expect(r.shape).toEqual([1, 8192, 32]);
    expect(r.finite).toBe(true);
    expect(r.peakMiB).toBeLessThan(256); // less than one 8192 x 8192 float32 matrix
    expect(lines[0]).toMatch(/^linear attention, T=8192/);
  });

  test('graph_attention: alpha sums to 1 over each node\'s incoming edges, every weight trains; the layers learn from the edges with model.fit and reload equal; no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await graphExample((l) => lines.push(l));
    expect(r.shape).toEqual([2, 4, 10]);
    for (const graph of r.alphaSums) {
      for (const node of graph) for (const s of node) expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    }
    expect(r.gradsOk).toBe(true);
    // The targets are the in-neighbours' mean: a model blind to the edges does no better than a constant.
    expect(r.lastLoss).toBeLessThan(r.firstLoss);
    expect(r.lastLoss).toBeLessThan(0.6 * r.constantLoss);
    expect(r.weightNames).toEqual(['kernel', 'attention_source', 'attention_target', 'edge_kernel', 'attention_edge', 'bias']);
    expect(r.reloadDiff).toBe(0);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^graph attention: output \[2,4,10\]; graph 1, node 0/);
    expect(lines[1]).toMatch(/^graph attention layers: model\.fit mse [\d.]+ -> [\d.]+ over 40 epochs/);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('attention_options: Gemma-2-style and gpt-oss-style layers learn a copy within their window and reload equal; ' +
       'a window cache holds 8 positions at 16 and at 64 tokens, equal to the full pass; no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await optionsExample((l) => lines.push(l));
    expect(r.styles.map((s) => s.name)).toEqual(['Gemma-2-style (softcap 20, window 4)', 'gpt-oss-style (sinks, window 4)']);
    for (const s of r.styles) {
      expect(s.lastLoss).toBeLessThan(0.5 * s.firstLoss);
      expect(s.reloadDiff).toBe(0);
    }
    expect(r.styles.map((s) => s.weights)).toEqual([[], ['sinks [2]']]);
    expect(r.cachePositions).toEqual([8, 8]);
    expect(r.decodeDiff).toBeLessThan(1e-4);
    expect(lines).toHaveLength(3);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('flex_attention: packed documents == dense attention with most tiles empty; a learned relative bias fits; ' +
       'a model with a sliding window and softcap in its config fits and reloads equal; no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await flexExample((l) => lines.push(l));
    // Documents of 100, 60 and 96 in blocks of 32: tiles on the diagonal of each document only.
    expect(r.packedTiles).toBeLessThan(0.5);
    expect(r.packedDiff).toBeLessThan(1e-5);
    expect(r.biasLastLoss).toBeLessThan(0.25 * r.biasFirstLoss);
    expect(r.maskModSpec).toEqual({name: 'slidingWindow', window: 3, alignment: 'bottom-right'});
    expect(r.scoreModSpec).toEqual({name: 'softcap', cap: 20});
    expect(r.lastLoss).toBeLessThan(0.5 * r.firstLoss);
    expect(r.reloadDiff).toBe(0);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^packed documents 100, 60, 96 in T=256: [\d.]+% of the tiles computed; max \|flex - dense\| /);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('geometric_attention: a GeometricAttention model learns a density only the positions tell and reloads equal; EquivariantAttention moves with a rotated, reflected, translated cloud; no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await geometricExample((l) => lines.push(l));
    expect(r.edgeShape).toEqual([48, 24 * 4, 2]);
    // Every point has the same features: a model blind to the positions does no better than a constant.
    expect(r.lastLoss).toBeLessThan(r.firstLoss);
    expect(r.lastLoss).toBeLessThan(0.1 * r.constantLoss);
    expect(r.weightNames).toEqual(['kernel', 'source_kernel', 'target_kernel', 'position_kernel_0', 'position_bias_0',
      'position_kernel_1', 'position_bias_1', 'attention_kernel_0', 'attention_bias_0']);
    expect(r.reloadDiff).toBe(0);
    expect(r.moved).toBeGreaterThan(0.1);
    expect(r.positionError).toBeLessThan(1e-4);
    expect(r.featureError).toBeLessThan(1e-4);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^geometric attention: knnGraph edges \[48,96,2\]; model\.fit mse [\d.]+ -> [\d.]+ over 20 epochs/);
    expect(lines[1]).toMatch(/^equivariant attention: points moved up to [\d.]+; rotated, reflected and translated input: /);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('long_context: a FlashAttention layer with blockSize and keyBlockSize equals MultiHeadAttention, trains, no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    // 3 query blocks, 2 key tiles (the last one short)
    const r = await longContext((l) => lines.push(l), 384, 128, 256);
    expect(r.tile).toEqual([128, 256]);
    expect(r.shape).toEqual([1, 384, 32]);
    expect(r.maxDiff).toBeLessThan(1e-5);
    expect(r.gradsOk).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^flash attention, T=384, tiles 128 x 256: forward\+backward in \d+ ms on /);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('local_global_hnsw builds an HNSW mask and runs both attention forms', async () => {
    const lines: string[] = [];
    const r = await localGlobalHnsw((l) => lines.push(l));
    expect(r.picture.split('\n')).toHaveLength(17);
    expect(r.sparsity).toBeGreaterThan(0.3);
    expect(r.shapes).toEqual([[2, 16, 32], [2, 16, 32]]);
  });

  test('predict_from_models loads models/gqa and reverses its inputs', async () => {
    const inputs = [[2, 3, 4, 5, 6, 7, 8, 9], [11, 2, 11, 5, 5, 3, 10, 4], [7, 7, 2, 9, 3, 11, 6, 8]];
    const lines: string[] = [];
    const {outputs} = await predictFromModels((l) => lines.push(l), inputs);
    const right = outputs.flatMap((row, i) => row.map((t, j) => Number(t === inputs[i][7 - j])));
    expect(right.reduce((a, b) => a + b) / right.length).toBeGreaterThanOrEqual(0.95);
    expect(lines[0]).toMatch(/^reverse: 2 3 4 5 6 7 8 9 -> /);
  });

  test('untrusted_folder: three damaged copies refused (IO), a tight maxBytes refused and a fitting one loaded, two saves at once', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const {outcomes, savedFiles} = await untrustedFolder((l) => lines.push(l));
    expect(outcomes[0]).toMatch(/^a weights path out of the folder: IO: .*it contains '\.\.'/);
    expect(outcomes[1]).toMatch(/^weights\.bin cut short: IO: corrupt weights .*the files hold 100 bytes/);
    expect(outcomes[2]).toMatch(/^num_heads: 1e7: IO: .*MultiHeadAttention's weight 'query\/kernel' of shape \[64, 10000000, 16\]/);
    expect(outcomes[3]).toMatch(/^maxBytes \d+: IO: .*over the limit/);
    expect(outcomes[4]).toMatch(/^maxBytes \d+: loaded$/);
    expect(outcomes[5]).toMatch(/^weightShapes: query\/kernel \[64, 4, 16\], query\/bias \[4, 16\], key\/kernel \[64, 2, 16\]/);
    expect(savedFiles).toEqual(['model.json', 'weights.bin']);
    expect(lines).toHaveLength(7);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('keras_model loads a converted Keras model with MultiHeadAttention, predicts, and reloads it as a tfjs model', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await kerasModel((l) => lines.push(l));
    expect(r.attention).toEqual([4, 32]);
    expect(r.shapes).toEqual([[3, 1], [3, 4]]);
    r.rowSums.forEach((s) => expect(Math.abs(s - 1)).toBeLessThan(1e-5));
    expect(r.reloadDiff).toBeLessThanOrEqual(1e-6);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^loaded 23 layers, 435173 parameters; 'attention' is this library's MultiHeadAttention/);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('keras_semantics: useCausalMask is top-left, arguments are checked, a save keeps the folder\'s files', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await kerasSemantics((l) => lines.push(l));
    expect(r.topLeftDiffs[0]).toBeLessThanOrEqual(1e-6);
    expect(r.topLeftDiffs[1]).toBeLessThanOrEqual(1e-6);
    expect(r.alignmentsDiffer).toBeGreaterThan(1e-3);
    expect(r.refused).toEqual(['INVALID_CONFIG', "unknown argument 'numHead' for MultiHeadAttention; did you mean 'numHeads'?"]);
    expect(r.notesAfter).toBe('my notes\n');
    expect(r.loadDiff).toBeLessThanOrEqual(1e-6);
    expect(lines[2]).toMatch(/^saved twice into .*: model.json, notes.txt, weights.bin; /);
    // (Model compile/fit is not used, so no tfjs-internal tensors stay behind.)
    expect(tf.memory().numTensors).toBe(tensors);
  });

  test('training_step: a plain tfjs model has the same losses with the library\'s kernels and tfjs\'s; the fused layers equal tfjs\'s with fewer tensor bytes; the transformer learns its batch with the logits loss; no leaks', async () => {
    const lines: string[] = [];
    const tensors = tf.memory().numTensors;
    const r = await trainingStep((l) => lines.push(l), 3);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(r.plainLosses.library).toHaveLength(3);
    r.plainLosses.library.forEach((l, i) =>
      expect(Math.abs(l - r.plainLosses.tfjs[i])).toBeLessThan(1e-4 * Math.abs(l)));
    expect(r.plainLosses.library[2]).toBeLessThan(r.plainLosses.library[0]);
    // The fused layers compute what tfjs's do, holding fewer tensor bytes through the step.
    expect(Math.abs(r.fused.fused.loss - r.fused.tfjs.loss)).toBeLessThan(1e-4 * r.fused.tfjs.loss);
    expect(r.fusedGradDiff).toBeLessThan(1e-4);
    expect(r.fused.fused.peakBytes).toBeLessThan(r.fused.tfjs.peakBytes);
    expect(r.transformerLosses).toHaveLength(15);
    expect(r.transformerLosses[14]).toBeLessThan(0.5 * r.transformerLosses[0]);
    expect(r.kernels).toBeGreaterThan(0);
    expect(r.peakBytes).toBeGreaterThan(0);
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^fused layers on \[16, 32, 64\]: loss [\d.]+ \(tfjs's layers [\d.]+\)/);
    expect(lines[3]).toMatch(/^transformer \(B=4 T=32 E=32, 2 layers\): loss [\d.]+ -> [\d.]+ in 15 steps; \d+ kernels/);
  });

  test('product_paths gives the same layer output and gradients on both product paths and restores the setting', async () => {
    const lines: string[] = [];
    const before = getMatMulPath();
    const tensors = tf.memory().numTensors;
    const r = await productPaths((l) => lines.push(l), 1, 16);
    expect(getMatMulPath()).toBe(before);
    expect(tf.memory().numTensors).toBe(tensors);
    // With the library's wasm product kernels in place, 'auto' splits nowhere.
    expect(r.autoSplits).toBe(false);
    expect(r.maxDiff).toBeLessThan(1e-4);
    expect(r.productShape).toEqual([2, 3, 5]);
    // The wasm replacements are installed when selectBackend imports the wasm backend (the cpu project never
    // does); the kernel tfjs-wasm lacks is registered at import.
    const [replaced, added] = BACKEND === 'wasm' ? ['replaced', 'added'] : ['absent', 'added'];
    expect(r.kernels).toEqual({Slice: replaced, UnsortedSegmentSum: added, BatchMatMul: replaced,
      _FusedMatMul: replaced, Tile: replaced, Identity: replaced, GatherV2: replaced});
    expect(lines[0]).toMatch(new RegExp(`\\(auto tries tensorflow, wasm, cpu\\).*; wasm Slice ${replaced}, ` +
      `UnsortedSegmentSum ${added}, BatchMatMul ${replaced}, _FusedMatMul ${replaced}, Tile ${replaced}, ` +
      `Identity ${replaced}, GatherV2 ${replaced}$`));
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^MultiHeadAttention forward\+backward .*split \d+ ms, batched \d+ ms/);
  });
});
