// flexAttention's fused kernels on the wasm backend (src/kernels/wasm_flex.ts, native/flex.ts):
// taken for a block mask that keeps its tiles and no score mod, equal to the tf-op engine
// (flex_engine.ts, checked against the float64 reference in test/ops/flex.test.ts, which runs
// through these kernels on wasm too) for the output, the logsumexp and the gradients of q, k,
// v: GQA and MQA, T != S, blocks that are not multiples of 8 (and larger than T), head sizes
// that are not, masks per (batch entry, head), rows that see no key. Only the tiles the block
// mask leaves are computed; the scratch and tile lists are freed; nothing leaks. Threads:
// test/kernels/wasm_threads.test.ts. On the cpu project this file is skipped.
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {NativeHost} from '../../src/kernels/backend_types';
import {setLibraryKernels} from '../../src/kernels/kernel_setting';
import {nativeProducts} from '../../src/kernels/wasm_native';
import {BlockMask, createBlockMask, EMPTY} from '../../src/ops/block_mask';
import {causalMask} from '../../src/ops/causal';
import {flexAttention} from '../../src/ops/flex';
import {andMasks, documentMask, prefixLm, slidingWindow} from '../../src/ops/flex_mods';
import {MaskMod} from '../../src/ops/flex_types';
import {BACKEND, randn, title} from '../support/helpers';

const native = () => nativeProducts((tf.backend() as unknown as {wasm: NativeHost}).wasm)!;

interface Case {
  name: string;
  dims: [number, number, number, number, number, number, number]; // B, H, G, T, S, D, Dv
  blockSize: number | [number, number];
  /** The mask mod and the [batch, heads] the block mask is built for. */
  mask: () => {mod: MaskMod; on: [number, number]; tensors?: tf.Tensor[]};
}

/** Document ids [B, S]: entry b's documents of `len + b` positions. */
function docIds(B: number, S: number, len: number): tf.Tensor {
  return tf.tensor2d(Array.from({length: B * S}, (_, x) => Math.floor((x % S) / (len + Math.floor(x / S)))), [B, S],
    'int32');
}

const CASES: Case[] = [
  {name: 'causal within documents per batch entry, GQA', dims: [2, 4, 2, 130, 130, 16, 16], blockSize: 32,
    mask: () => {
      const ids = docIds(2, 130, 37);
      return {mod: andMasks(causalMask(), documentMask(ids)), on: [2, 1], tensors: [ids]};
    }},
  {name: 'sliding window, MQA, D and Dv not multiples of 8, blocks [8, 4]', dims: [1, 3, 1, 33, 40, 5, 3],
    blockSize: [8, 4], mask: () => ({mod: slidingWindow(6), on: [1, 1]})},
  {name: 'causal bottom-right, T > S (rows with no key), blocks 16', dims: [2, 2, 2, 40, 25, 8, 12], blockSize: 16,
    mask: () => ({mod: causalMask(), on: [1, 1]})},
  {name: 'a mask per (batch entry, head): j <= i + 4h - 6b, blocks 5 (not a multiple of 8)', dims: [2, 4, 2, 23, 19,
    8, 8], blockSize: 5, mask: () => ({mod: (b, h, qi, kj) => tf.lessEqual(kj, tf.add(qi, tf.sub(tf.mul(h, 4),
    tf.mul(b, 6)))), on: [2, 4]})},
  {name: 'prefix LM, T = 7 under one block of 128', dims: [1, 2, 1, 7, 7, 8, 8], blockSize: 128,
    mask: () => ({mod: prefixLm(3), on: [1, 1]})},
];

/** Output, lse (-Infinity as 0, with where it is), and gradients of sum(O * cot) + sum(lse * cotLse). */
function flexResults(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, blockMask: BlockMask): tf.Tensor[] {
  return tf.tidy(() => {
    const [B, H, T] = q.shape;
    const cot = randn([B, H, T, v.shape[3]!], 7);
    const cotLse = randn([B, H, T], 8);
    const finite = (x: tf.Tensor) => tf.where(tf.isFinite(x), x, tf.zerosLike(x));
    const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
      const {output, lse} = flexAttention(a, b, c, {blockMask, returnLse: true});
      return tf.add(tf.sum(tf.mul(output, cot)), tf.sum(tf.mul(finite(lse), cotLse)));
    };
    const {output, lse} = flexAttention(q, k, v, {blockMask, returnLse: true});
    return [output, finite(lse), tf.cast(tf.isFinite(lse), 'float32'), ...tf.grads(f)([q, k, v]),
      ...tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        tf.sum(tf.mul(flexAttention(a, b, c, {blockMask}), cot)))([q, k, v])];
  });
}

/** Tiles of the mask not empty, over every (batch entry, head) pair of the call. */
function nonEmptyTiles(m: BlockMask, B: number, H: number): number {
  let n = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < m.numQueryBlocks; i++) {
        for (let j = 0; j < m.numKeyBlocks; j++) n += +(m.state(b, h, i, j) !== EMPTY);
      }
    }
  }
  return n;
}

(BACKEND === 'wasm' ? describe : describe.skip)(title('flexAttention\'s fused kernels on wasm'), () => {
  afterEach(() => setLibraryKernels('library'));

  for (const c of CASES) {
    it(`== the tf-op engine within 1e-5, forward, lse and gradients; computes only the non-empty tiles (${c.name})`,
      () => {
        const [B, H, G, T, S, D, Dv] = c.dims;
        const {mod, on, tensors} = c.mask();
        const mask = createBlockMask(mod, on[0], on[1], T, S, {blockSize: c.blockSize});
        const [q, k, v] = [randn([B, H, T, D], 1), randn([B, G, S, D], 2), randn([B, G, S, Dv], 3)];
        const before = {...native().stats};
        const fused = flexResults(q, k, v, mask);
        const after = native().stats;
        // Three forwards (the call, and one in each gradient) and two backwards, each of B*H
        // pairs' non-empty tiles; forward items are query blocks, backward ones (b, g) pairs.
        const tiles = nonEmptyTiles(mask, B, H);
        expect(after.flexTiles - before.flexTiles).toBe(5 * tiles);
        expect(after.flexItems - before.flexItems).toBe(3 * B * H * mask.numQueryBlocks + 2 * B * G);
        setLibraryKernels('tfjs');
        const engine = flexResults(q, k, v, mask);
        expect(native().stats.flexItems).toBe(after.flexItems);
        const names = ['output', 'lse', 'lse finite', 'dq', 'dk', 'dv', 'dq (no lse)', 'dk (no lse)', 'dv (no lse)'];
        fused.forEach((x, i) => {
          const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(x, engine[i]))).dataSync()[0]);
          const scale = tf.tidy(() => Math.max(1, tf.max(tf.abs(engine[i])).dataSync()[0]));
          expect({what: names[i], close: diff / scale <= 1e-5}).toEqual({what: names[i], close: true});
        });
        // The rows with no key are there in the T > S case, and agree.
        if (T > S) expect(tf.tidy(() => tf.min(fused[2]).dataSync()[0])).toBe(0);
        tf.dispose([...fused, ...engine, q, k, v, ...(tensors ?? [])]);
        mask.dispose();
      });
  }

  it('is not taken for a score mod, for a block mask that keeps no tiles, or with tfjs\'s kernels', () => {
    const [q, k, v] = [randn([1, 2, 40, 8], 1), randn([1, 2, 40, 8], 2), randn([1, 2, 40, 8], 3)];
    const kept = createBlockMask(causalMask(), 1, 1, 40, 40, {blockSize: 16});
    const notKept = createBlockMask(causalMask(), 1, 1, 40, 40, {blockSize: 16, maxKeptEntries: 0});
    const items = () => native().stats.flexItems;
    const start = items();
    tf.tidy(() => flexAttention(q, k, v, {blockMask: kept}));
    expect(items()).toBe(start + 2 * 3);
    tf.tidy(() => flexAttention(q, k, v, {blockMask: kept, scoreMod: (s) => tf.mul(s, 0.5)}));
    tf.tidy(() => flexAttention(q, k, v, {blockMask: notKept}));
    tf.tidy(() => flexAttention(q, k, v));
    setLibraryKernels('tfjs');
    tf.tidy(() => flexAttention(q, k, v, {blockMask: kept}));
    expect(items()).toBe(start + 2 * 3);
    tf.dispose([q, k, v]);
    kept.dispose();
    notKept.dispose();
  });

  it('frees every allocation it makes and leaks no tensor, forward and backward; a mask disposed after the forward still serves the backward', () => {
    const [q, k, v] = [randn([2, 2, 50, 8], 1), randn([2, 1, 50, 8], 2), randn([2, 1, 50, 8], 3)];
    const h = (tf.backend() as unknown as {wasm: NativeHost}).wasm;
    const [malloc, free] = [h._malloc, h._free];
    // Addresses allocated during the counted run and not freed yet (tensors' data among them).
    const live = new Set<number>();
    let allocs = 0;
    try {
      // A first run (the kernel and its workers set up), then a counted one.
      for (let run = 0; run < 2; run++) {
        const mask = createBlockMask(slidingWindow(9), 1, 1, 50, 50, {blockSize: 16});
        const keptTiles = mask.tileTensors().length;
        const tensors = tf.memory().numTensors;
        if (run === 1) {
          h._malloc = (n: number) => {
            const at = malloc.call(h, n);
            allocs++;
            live.add(at);
            return at;
          };
          h._free = (at: number) => {
            live.delete(at);
            free.call(h, at);
          };
        }
        const grads = tf.tidy(() => tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
          const out = flexAttention(a, b, c, {blockMask: mask});
          mask.dispose();
          return tf.sum(out);
        })([q, k, v]));
        expect(grads.map((g) => g.shape)).toEqual([[2, 2, 50, 8], [2, 1, 50, 8], [2, 1, 50, 8]]);
        expect(grads.every((g) => g.dataSync().every(Number.isFinite))).toBe(true);
        tf.dispose(grads);
        expect(keptTiles).toBeGreaterThan(0);
        expect(tf.memory().numTensors).toBe(tensors - keptTiles);
      }
    } finally {
      h._malloc = malloc;
      h._free = free;
    }
    expect(allocs).toBeGreaterThan(0);
    expect(live.size).toBe(0);
    tf.dispose([q, k, v]);
  });
});
