/**
 * The page that test/package/browser.test.ts opens in headless Chromium, bundled (minified) from the
 * built package. `window.checks.run(backend)` computes every case on cpu, then on `backend`,
 * and returns the largest difference per case, plus what the page could see of the wasm
 * kernels, model.fit, indexeddb:// round trips and the Node-only functions. Values are read
 * with `await data()` only: synchronous reads can crash a webgpu page. (GraphAttention reads
 * its int32 edges synchronously, by design; its cases and graphFit show that this one read
 * works on every backend here, webgpu included.)
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import {setWasmPaths} from '@tensorflow/tfjs-backend-wasm';
import {
  AttentionError, FlashAttention, LinearAttention, LocalGlobalAttention, MultiHeadAttention, flashAttention,
  linearAttention, loadModel, localGlobalAttention, scaledDotProductAttention, selectBackend, fileSystem, BackendName,
  loadKerasModel, buildTransformer, generate, GraphAttention, setLibraryKernels, AttentionLayerBase,
  alibi, BlockMask, createBlockMaskAsync, flexAttention, slidingWindow, softcap,
} from 'tfjs-attention';
import {loadCheckpoint, readTrainingRecord, saveCheckpoint, train} from 'tfjs-attention/train';
import {
  cpuKernelStatus, flexKernelRuns, gradientStatus, installSliceFromHeap, wasmKernelStatus,
} from 'tfjs-attention/internals';

setWasmPaths('/wasm/');

type Values = Record<string, Float32Array>;
type Case = () => Record<string, tf.Tensor>;

/** Seeded inputs: tfjs draws seeded values in JavaScript, so every backend gets the same numbers. */
const rand = (shape: number[], seed: number, scale = 1) => tf.randomUniform(shape, -scale, scale, 'float32', seed);

/** The op's output and its gradients with respect to q, k, v (of sum(out * w), w seeded). */
function opCase(op: (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor, H = 2, G = 1): Case {
  return () => {
    const [B, T, D] = [2, 7, 4];
    const q = rand([B, H, T, D], 1);
    const k = rand([B, G, T, D], 2);
    const v = rand([B, G, T, D], 3);
    const w = rand([B, H, T, D], 4);
    const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(op(a, b, c), w));
    const [dq, dk, dv] = tf.grads(f)([q, k, v]);
    return {out: op(q, k, v), dq, dk, dv};
  };
}

/** A layer's output and the gradients of sum(y * w) with respect to its input and every weight. */
function layerCase(make: () => AttentionLayerBase): Case {
  return () => {
    const x = rand([2, 7, 8], 11);
    const layer = make();
    layer.apply(x); // builds the weights
    layer.setWeights(layer.getWeights().map((t, i) => rand(t.shape, 100 + i, 0.5)));
    const w = rand([2, 7, 8], 12);
    const f = (input: tf.Tensor) => tf.sum(tf.mul(layer.apply(input) as tf.Tensor, w)) as tf.Scalar;
    const dx = tf.grad(f)(x);
    const vars = layer.trainableWeights.map((v) => (v as unknown as {val: tf.Variable}).val);
    const {grads} = tf.variableGrads(() => f(x), vars);
    const out: Record<string, tf.Tensor> = {y: layer.apply(x) as tf.Tensor, dx};
    // Keyed without the layer's own name, which differs from one instance to the next.
    layer.trainableWeights.forEach((v, i) => { out[`d ${v.originalName.split('/').slice(1).join('/')}`] = grads[vars[i].name]; });
    layer.dispose();
    return out;
  };
}

/**
 * A GraphAttention layer over two padded graphs (a duplicate edge, a node with no incoming
 * edge, padding edges): its output, alpha, and the gradients of sum(y * w) with respect to
 * the nodes, the edge attributes and every weight.
 */
function graphCase(args: ConstructorParameters<typeof GraphAttention>[0], withAttr: boolean): Case {
  return () => {
    const [B, N, F, E] = [2, 5, 3, 6];
    const edges = tf.tensor3d([
      [[0, 1], [1, 2], [2, 0], [3, 0], [3, 0], [1, 1]],        // a duplicate, a self loop; node 4 has none
      [[4, 3], [3, 2], [2, 1], [1, 0], [-1, -1], [-1, -1]],    // a chain, two padding edges
    ], [B, E, 2], 'int32');
    const nodes = rand([B, N, F], 31);
    const attr = rand([B, E, 2], 32);
    const layer = new GraphAttention(args);
    const inputs = () => (withAttr ? [nodes, edges, attr] : [nodes, edges]);
    layer.apply(inputs()); // builds the weights
    layer.setWeights(layer.getWeights().map((t, i) => rand(t.shape, 200 + i, 0.5)));
    const w = rand(layer.computeOutputShape(inputs().map((t) => t.shape)) as number[], 33);
    const f = (x: tf.Tensor, a: tf.Tensor) =>
      tf.sum(tf.mul(layer.apply(withAttr ? [x, edges, a] : [x, edges]) as tf.Tensor, w)) as tf.Scalar;
    const [dx, da] = withAttr ? tf.grads(f)([nodes, attr]) : tf.grads((x: tf.Tensor) => f(x, attr))([nodes]);
    const vars = layer.trainableWeights.map((v) => (v as unknown as {val: tf.Variable}).val);
    const {grads} = tf.variableGrads(() => f(nodes, attr), vars);
    const [y, alpha] = layer.apply(inputs(), {returnAttentionScores: true}) as tf.Tensor[];
    const out: Record<string, tf.Tensor> = {y, alpha, dx};
    if (withAttr) out.dattr = da;
    layer.trainableWeights.forEach((v, i) => { out[`d ${v.originalName.split('/').slice(1).join('/')}`] = grads[vars[i].name]; });
    layer.dispose();
    return out;
  };
}

/**
 * Products for every transpose, batched and broadcast (batch 1 against 3 both ways, a matrix
 * against a batch), small and large enough for wasm's native path, and their gradients.
 */
function productCase(): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  let seed = 40;
  for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
    for (const [aBatch, bBatch] of [[[3], [3]], [[3], [1]], [[1], [3]], [[3], []]]) {
      for (const [M, K, N] of [[5, 3, 4], [33, 17, 29]]) {
        const a = rand([...aBatch, ...(tA ? [K, M] : [M, K])], seed++);
        const b = rand([...bBatch, ...(tB ? [N, K] : [K, N])], seed++);
        const w = rand([3, M, N], seed++);
        const key = `${tA ? 'T' : ''}${a.shape} x ${tB ? 'T' : ''}${b.shape}`;
        out[key] = tf.matMul(a, b, tA, tB);
        const [da, db] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, tA, tB), w)))([a, b]);
        out[`d ${key} a`] = da;
        out[`d ${key} b`] = db;
      }
    }
  }
  return out;
}

/** Fused products: each activation, a bias of N values and of [M, N], transposed and batched operands. */
function fusedCase(): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  let seed = 400;
  for (const activation of ['linear', 'relu', 'relu6', 'prelu', 'leakyrelu', 'sigmoid', 'elu'] as const) {
    for (const [tA, tB, biasShape] of
      [[false, false, [29]], [true, true, [29]], [false, true, [33, 29]]] as [boolean, boolean, number[]][]) {
      const a = rand([2, ...(tA ? [17, 33] : [33, 17])], seed++);
      const b = rand([2, ...(tB ? [29, 17] : [17, 29])], seed++);
      out[`${activation} ${tA} ${tB} ${biasShape}`] = tf.fused.matMul({a, b, transposeA: tA, transposeB: tB,
        bias: rand(biasShape, seed++), activation, preluActivationWeights: activation === 'prelu' ? rand([29], seed++) : undefined,
        leakyreluAlpha: 0.3});
    }
  }
  return out;
}

/** tf.tile of ranks 1 to 4 and its gradient, and a LayerNormalization's output and gradients (which tile). */
function tileCase(): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  let seed = 600;
  for (const [shape, reps] of [[[3], [4]], [[2, 3], [1, 5]], [[1, 1, 6], [4, 8, 1]], [[2, 1, 3, 1], [1, 4, 2, 3]]]) {
    const x = rand(shape, seed++);
    const w = rand(shape.map((d, i) => d * reps[i]), seed++);
    out[`tile ${shape} ${reps}`] = tf.tile(x, reps);
    out[`d tile ${shape} ${reps}`] = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.tile(t, reps), w)))(x);
  }
  const norm = tf.layers.layerNormalization();
  const x = rand([2, 5, 16], seed++);
  norm.apply(x);
  norm.setWeights([rand([16], seed++), rand([16], seed++)]);
  const w = rand([2, 5, 16], seed++);
  const f = () => tf.sum(tf.mul(norm.apply(x) as tf.Tensor, w)) as tf.Scalar;
  out['layerNorm y'] = norm.apply(x) as tf.Tensor;
  out['layerNorm dx'] = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(norm.apply(t) as tf.Tensor, w)))(x);
  const vars = norm.trainableWeights.map((v) => (v as unknown as {val: tf.Variable}).val);
  const {grads} = tf.variableGrads(f, vars);
  vars.forEach((v, i) => { out[`layerNorm d${i}`] = grads[v.name]; });
  norm.dispose();
  return out;
}

/**
 * Kernels per training step (forward, backward, Adam) of a transformer shaped as the bench's
 * transformer-small (4 heads, 4 layers, causal, vocabulary 100) but small enough for
 * SwiftShader (E=32, T=32, batch 1), with the library's kernels and gradients and with
 * tfjs's own. The library's count does not depend on the sizes; tfjs's grows with them
 * (its Tile gradient takes two kernels per repetition).
 */
async function stepKernels(): Promise<Record<string, number>> {
  const model = buildTransformer({attention: 'mha', vocabSize: 100, seqLength: 32, modelDim: 32, numHeads: 4,
    numLayers: 4, causal: true, seed: 1});
  const x = tf.tensor2d(Array.from({length: 32}, (_, i) => (i * 7) % 100), [1, 32], 'int32');
  const y = tf.oneHot(tf.tensor1d(Array.from({length: 32}, (_, i) => (i * 11) % 100), 'int32'), 100);
  // A plain tfjs model (no layer of the library): 2 x (Dense, LayerNormalization) on [1, 32, 32].
  const input = tf.input({shape: [32, 32]});
  let h = input;
  for (let i = 0; i < 2; i++) {
    h = tf.layers.dense({units: 32, activation: 'relu'}).apply(h) as tf.SymbolicTensor;
    h = tf.layers.layerNormalization().apply(h) as tf.SymbolicTensor;
  }
  const plain = tf.model({inputs: input, outputs: h});
  const px = tf.randomNormal([1, 32, 32], 0, 1, 'float32', 1);
  const runs = {
    transformer: {model, loss: () => tf.losses.softmaxCrossEntropy(y,
      tf.reshape(model.apply(x, {training: true}) as tf.Tensor, [32, 100])) as tf.Scalar},
    plain: {model: plain, loss: () => tf.mean(tf.square(plain.apply(px, {training: true}) as tf.Tensor)) as tf.Scalar},
  };
  const out: Record<string, number> = {};
  for (const [name, {model: m, loss}] of Object.entries(runs)) {
    const optimizer = tf.train.adam(1e-4);
    const vars = m.trainableWeights.map((w) => (w as unknown as {val: tf.Variable}).val);
    const step = () => tf.tidy(() => {
      const {value, grads} = tf.variableGrads(loss, vars);
      optimizer.applyGradients(grads as tf.NamedTensorMap as Parameters<typeof optimizer.applyGradients>[0]);
      return value;
    });
    for (const which of ['library', 'tfjs'] as const) {
      const previous = setLibraryKernels(which);
      try {
        tf.dispose(step()); // Adam's state, made once
        const info = await tf.profile(async () => { await step().data(); });
        out[`${name}${which === 'library' ? '' : 'Tfjs'}`] = info.kernels.length;
      } finally {
        setLibraryKernels(previous);
      }
    }
    optimizer.dispose();
  }
  tf.dispose([x, y, px]);
  model.dispose();
  plain.dispose();
  return out;
}

/** The block mask of the flex case, made on the backend under test. */
let flexMask: BlockMask | null = null;
async function makeFlexMask(): Promise<void> {
  flexMask?.dispose();
  flexMask = await createBlockMaskAsync(slidingWindow(3), 1, 1, 7, 7, {blockSize: 2});
}

/**
 * A layer with mask mods builds a block mask at each call, reading it synchronously: on cpu and
 * wasm only; webgl and webgpu refuse it (UNSUPPORTED), which run() checks instead.
 */
const MODS_LAYER = 'MultiHeadAttention (GQA, causal, maskMod slidingWindow(3), scoreMod softcap(5))';

const CASES: Record<string, Case> = {
  'matMul (transposes, batch broadcast) and gradients': productCase,
  'fused matMul (bias, activations)': fusedCase,
  'tile, LayerNormalization and gradients': tileCase,
  'sdpa (mask, GQA)': opCase((q, k, v) => scaledDotProductAttention(q, k, v,
    {mask: tf.tensor2d([1, 1, 0, 1, 1, 1, 1], [1, 7], 'bool')})),
  'sdpa causal': opCase((q, k, v) => scaledDotProductAttention(q, k, v, {causal: true}), 2, 2),
  'flash causal (blockSize 4)': opCase((q, k, v) => flashAttention(q, k, v, {causal: true, blockSize: 4})),
  'linear causal (M=8)': opCase((q, k, v) => linearAttention(q, k, v,
    {projection: tf.randomNormal([8, 4], 0, 1, 'float32', 5), causal: true, chunkSize: 3})),
  'local-global (W=2, global 0)': opCase((q, k, v) => localGlobalAttention(q, k, v,
    {windowSize: 2, globalIndices: [0], gate: rand([2, 4], 6)})),
  // A block mask of blocks of 2 over T = 7 (empty, full and partial tiles), made on each backend by
  // createBlockMaskAsync (no synchronous read).
  'flex (slidingWindow(3) blocks of 2, ALiBi, GQA)': opCase((q, k, v) =>
    flexAttention(q, k, v, {blockMask: flexMask!, scoreMod: alibi()}), 2, 1),
  // The same mask and no score mod: on wasm the fused kernels (the module without threads).
  'flex (slidingWindow(3) blocks of 2, GQA, no score mod)': opCase((q, k, v) =>
    flexAttention(q, k, v, {blockMask: flexMask!}), 2, 1),
  [MODS_LAYER]: layerCase(() => new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4, causal: true,
    maskMod: slidingWindow(3), scoreMod: softcap(5)})),
  // The options of today's models (layers/attention_options.ts): dense on every backend; FlashAttention
  // tiles them through flexAttention where block masks are read synchronously (cpu, wasm), else dense.
  'MultiHeadAttention (GQA, causal, every attention option)': layerCase(() => new MultiHeadAttention({numHeads: 2,
    numKvHeads: 1, headDim: 4, causal: true, softcap: 5, slidingWindow: 3, attentionSinks: true, qkNorm: 'rms',
    outputGate: 'elementwise', alibi: 'learned'})),
  'FlashAttention (sliding window, sinks, softcap)': layerCase(() => new FlashAttention({numHeads: 2, headDim: 4,
    causal: true, blockSize: 4, slidingWindow: 3, attentionSinks: true, softcap: 5})),
  'MultiHeadAttention (GQA, causal)': layerCase(() => new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4, causal: true})),
  'FlashAttention': layerCase(() => new FlashAttention({numHeads: 2, headDim: 4, blockSize: 4})),
  'LinearAttention (causal)': layerCase(() => new LinearAttention({numHeads: 2, headDim: 4, numFeatures: 8, seed: 3, causal: true})),
  'LocalGlobalAttention': layerCase(() => new LocalGlobalAttention({numHeads: 2, headDim: 4, windowSize: 2, globalIndices: [0]})),
  'GraphAttention (GAT, edge features)': graphCase({units: 4, numHeads: 2}, true),
  'GraphAttention (GATv2, mean of heads)': graphCase({units: 4, numHeads: 2, concatHeads: false, version: 'gatv2'}, false),
};

async function values(c: Case): Promise<Values> {
  const tensors = tf.tidy(c);
  const out: Values = {};
  for (const [name, t] of Object.entries(tensors)) out[name] = (await t.data()) as Float32Array;
  tf.dispose(Object.values(tensors));
  return out;
}

function maxDiff(a: Values, b: Values): number {
  let worst = 0;
  for (const name of Object.keys(a)) {
    if (b[name] == null || b[name].length !== a[name].length) return Infinity;
    for (let i = 0; i < a[name].length; i++) {
      const d = Math.abs(a[name][i] - b[name][i]);
      if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
    }
  }
  return worst;
}

/** Synchronous reads throw while `f` runs, so a call that would make one fails loudly. */
async function withoutSyncReads<T>(f: () => Promise<T>): Promise<T> {
  const proto = tf.Tensor.prototype as unknown as Record<string, unknown>;
  const saved = {dataSync: proto.dataSync, arraySync: proto.arraySync};
  const refuse = () => { throw new Error('synchronous read'); };
  proto.dataSync = refuse;
  proto.arraySync = refuse;
  try {
    return await f();
  } finally {
    Object.assign(proto, saved);
  }
}

/** A small embedding + attention classifier: fit, save to indexeddb://, load back. */
async function fitSaveLoad(backend: string): Promise<Record<string, number | boolean>> {
  const model = tf.sequential({layers: [
    tf.layers.embedding({inputDim: 6, outputDim: 8, inputLength: 5}),
    new MultiHeadAttention({numHeads: 2, headDim: 4}),
    tf.layers.globalAveragePooling1d(),
    tf.layers.dense({units: 2, activation: 'softmax'}),
  ]});
  model.compile({optimizer: tf.train.adam(0.05), loss: 'sparseCategoricalCrossentropy'});
  // Label: does token 1 occur in the sequence?
  const xs: number[][] = [];
  const ys: number[] = [];
  for (let i = 0; i < 64; i++) {
    const row = Array.from({length: 5}, (_, j) => 2 + ((i * 7 + j * 3) % 4));
    if (i % 2 === 0) row[i % 5] = 1;
    xs.push(row);
    ys.push(i % 2 === 0 ? 1 : 0);
  }
  const x = tf.tensor2d(xs, [64, 5], 'int32');
  const y = tf.tensor1d(ys, 'float32');
  const history = await model.fit(x, y, {epochs: 8, batchSize: 16, verbose: 0});
  const losses = history.history.loss as number[];
  const url = `indexeddb://checks-${backend}`;
  await model.save(url);
  const back = await tf.loadLayersModel(url);
  const [p1, p2] = [model.predict(x) as tf.Tensor, back.predict(x) as tf.Tensor];
  const d = tf.max(tf.abs(tf.sub(p1, p2)));
  const diff = (await d.data())[0];
  tf.dispose([x, y, p1, p2, d]);
  model.dispose();
  back.dispose();
  await tf.io.removeModel(url);
  return {firstLoss: losses[0], lastLoss: losses[losses.length - 1], reloadDiff: diff};
}

/**
 * A two-layer GraphAttention model fitted with model.fit and run with predict: here the
 * edges reach the layer as batches sliced by tfjs, in the backend's memory (on webgpu, on
 * the GPU), so the layer's read of them is a real readback.
 */
async function graphFit(): Promise<Record<string, number>> {
  const [n, e, count] = [5, 6, 32];
  const nodes = tf.input({shape: [n, 2]});
  const edges = tf.input({shape: [e, 2], dtype: 'int32'});
  let h = new GraphAttention({units: 4, numHeads: 2}).apply([nodes, edges]) as tf.SymbolicTensor;
  h = new GraphAttention({units: 1, numHeads: 2, concatHeads: false, version: 'gatv2'}).apply([h, edges]) as tf.SymbolicTensor;
  const model = tf.model({inputs: [nodes, edges], outputs: h});
  const optimizer = tf.train.adam(0.05);
  model.compile({optimizer, loss: 'meanSquaredError'});
  // Each node's target: feature 0 of the node its one incoming edge comes from (a ring).
  const x: number[][][] = [];
  const edgeList: number[][][] = [];
  const y: number[][][] = [];
  for (let g = 0; g < count; g++) {
    const feats = Array.from({length: n}, (_, i) => [Math.sin(g * 3 + i * 1.7), Math.cos(g + i)]);
    const shift = 1 + (g % (n - 1));
    const list = Array.from({length: n}, (_, i) => [i, (i + shift) % n]);
    list.push([-1, -1]);
    x.push(feats);
    edgeList.push(list);
    y.push(Array.from({length: n}, (_, i) => [feats[(i - shift + n) % n][0]]));
  }
  const xs = [tf.tensor3d(x), tf.tensor3d(edgeList, undefined, 'int32')];
  const ys = tf.tensor3d(y);
  const history = await model.fit(xs, ys, {epochs: 12, batchSize: 8, verbose: 0});
  const losses = history.history.loss as number[];
  const p = model.predict(xs) as tf.Tensor;
  const finite = (await p.data()).every(Number.isFinite);
  tf.dispose([...xs, ys, p]);
  model.dispose();
  optimizer.dispose();
  return {firstLoss: losses[0], lastLoss: losses[losses.length - 1], predictFinite: finite ? 1 : 0};
}

/** Each Node-only function, called here: the AttentionError code and message it throws. */
async function nodeOnly(): Promise<Record<string, string>> {
  const calls: Record<string, () => unknown> = {
    'loadModel(dir)': () => loadModel('models/mha'),
    'readTrainingRecord(dir)': () => readTrainingRecord('models/mha'),
    'loadCheckpoint(dir)': () => loadCheckpoint('runs/x'),
    'saveCheckpoint(dir)': () => saveCheckpoint('runs/x', tf.sequential(), null, {} as never),
    'fileSystem(path)': () => fileSystem('models/mha'),
    'train({outDir})': () => train({task: 'copy', steps: 1, outDir: 'runs/x', model: {attention: 'mha'}}),
  };
  const out: Record<string, string> = {};
  for (const [name, call] of Object.entries(calls)) {
    try {
      await call();
      out[name] = 'no error';
    } catch (e) {
      out[name] = e instanceof AttentionError ? `${e.code}: ${e.message}` : `not an AttentionError: ${String(e)}`;
    }
  }
  return out;
}

/** On wasm: our Slice kernel is registered and 64 slices of a 16 MiB tensor never read it whole. */
async function sliceCheck(): Promise<Record<string, unknown>> {
  const status = wasmKernelStatus();
  const backend = tf.backend() as unknown as {readSync: (...a: unknown[]) => unknown};
  const x = tf.reshape(tf.range(0, 1024 * 4096, 1, 'float32'), [1024, 4096]); // 16 MiB, entry (r, c) = r * 4096 + c
  const readSync = backend.readSync;
  let reads = 0;
  backend.readSync = (...a: unknown[]) => { reads++; return readSync.apply(backend, a); };
  const t0 = performance.now();
  const parts = Array.from({length: 64}, (_, i) => tf.slice(x, [i * 16, 0], [16, 4096]));
  const ms = performance.now() - t0;
  backend.readSync = readSync;
  // Slice i holds rows 16i .. 16i + 15 whole: its first and last entries say where it was taken.
  let valuesRight = true;
  for (let i = 0; i < parts.length; i++) {
    const v = await parts[i].data();
    valuesRight = valuesRight && v[0] === i * 16 * 4096 && v[v.length - 1] === (i + 1) * 16 * 4096 - 1;
  }
  x.dispose();
  // A Slice kernel the library does not recognise (here, one of the page's own) is left alone.
  const ours = tf.getKernel('Slice', 'wasm')!;
  const users: tf.KernelFunc = (args) => ours.kernelFunc(args);
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel({kernelName: 'Slice', backendName: 'wasm', kernelFunc: users});
  const outcome = installSliceFromHeap();
  const unknownLeftAlone = outcome === 'kept' && tf.getKernel('Slice', 'wasm')!.kernelFunc === users;
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel(ours);
  tf.dispose(parts);
  return {...status, wholeInputReads: reads, sliceMs: Math.round(ms), valuesRight, unknownLeftAlone};
}

/** A converted Keras 3 GroupedQueryAttention model, loaded over http: its prediction for a seeded input. */
async function kerasPrediction(): Promise<Values> {
  const model = await loadKerasModel('/keras/keras3_gqa/model.json');
  const shape = model.inputs[0].shape.map((d) => d ?? 2);
  const y = tf.tidy(() => model.predict(rand(shape, 21)) as tf.Tensor);
  const out = {y: (await y.data()) as Float32Array};
  y.dispose();
  model.dispose();
  return out;
}

/** Greedy continuations of a ragged batch and a seeded sample, from a small causal rotary model. */
async function generated(): Promise<number[][]> {
  const model = buildTransformer({attention: 'gqa', vocabSize: 9, seqLength: 16, modelDim: 16, numHeads: 2,
    numKvHeads: 1, numLayers: 1, causal: true, positions: 'rope', seed: 4});
  const greedy = await generate(model, [[1, 2, 3], [4, 5]], {maxNewTokens: 6, temperature: 0});
  const sampled = await generate(model, [[1, 2, 3]], {maxNewTokens: 6, temperature: 1, seed: 7});
  model.dispose();
  return [...greedy, ...sampled];
}

async function run(backend: BackendName): Promise<Record<string, unknown>> {
  await selectBackend('cpu');
  await makeFlexMask();
  const reference: Record<string, Values> = {};
  for (const [name, c] of Object.entries(CASES)) reference[name] = await values(c);
  const kerasReference = await kerasPrediction();
  const generateReference = await generated();
  const chosen = await selectBackend(backend);
  await makeFlexMask();
  const diffs: Record<string, number> = {};
  const before = tf.memory().numTensors;
  const gpu = ['webgl', 'webgpu'].includes(tf.getBackend());
  let modsLayerRefused: string | null = null;
  for (const [name, c] of Object.entries(CASES)) {
    if (name === MODS_LAYER && gpu) {
      const layer = new MultiHeadAttention({numHeads: 2, numKvHeads: 1, headDim: 4, causal: true,
        maskMod: slidingWindow(3), scoreMod: softcap(5)});
      const x = rand([2, 7, 8], 11);
      try {
        tf.dispose(layer.apply(x) as tf.Tensor);
      } catch (e) {
        modsLayerRefused = (e as AttentionError).code ?? String(e);
      }
      for (const w of layer.weights) w.dispose(); // built before the call refused
      x.dispose();
      continue;
    }
    diffs[name] = maxDiff(reference[name], await values(c));
  }
  diffs['loadKerasModel (Keras 3 GQA, over http)'] = maxDiff(kerasReference, await kerasPrediction());
  const leaked = tf.memory().numTensors - before;
  const fit = await fitSaveLoad(backend);
  const graph = await graphFit();
  // train() without outDir, with every synchronous read refused.
  const trained = await withoutSyncReads(() => train({task: 'copy', steps: 3, batchSize: 4, evalEvery: 3,
    evalBatches: 1, model: {modelDim: 16, numHeads: 2, numLayers: 1, attention: 'mha'}}));
  const trainResult = {steps: trained.record.step, loss: trained.record.history[0]?.loss ?? NaN};
  trained.model.dispose();
  // generate() with every synchronous read refused: the same tokens as on cpu, sampled ones too.
  const generate = {reference: generateReference, tokens: await withoutSyncReads(generated)};
  const slice = tf.getBackend() === 'wasm' ? await sliceCheck() : null;
  flexMask?.dispose();
  flexMask = null;
  return {backend: chosen, active: tf.getBackend(), diffs, leaked, modsLayerRefused, fit, graph, train: trainResult,
    slice, generate, nodeOnly: await nodeOnly(), fusedFlex: flexKernelRuns(),
    kernels: {...wasmKernelStatus(), cpu: cpuKernelStatus(), gradients: gradientStatus()},
    stepKernels: await stepKernels()};
}

(window as unknown as {checks: unknown}).checks = {run, autoPick: () => selectBackend('auto')};
