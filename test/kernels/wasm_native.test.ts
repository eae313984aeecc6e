// The library's own product kernel on the wasm backend (src/kernels/wasm_native.ts, native/products.ts):
// batched products of attention's shapes and 2-D transposed products (more rows of B than
// one packed block, column counts that are not multiples of 8, every transposition, batch
// broadcast) against products written out in float64 and against tfjs-backend-wasm's path;
// each scratch allocation freed; nothing leaked; the committed module is what its source
// compiles to, imports tfjs's memory alone and writes nothing into it when instantiated.
// Threads: test/kernels/wasm_threads.test.ts. On the cpu project this file is skipped.
import {execFileSync} from 'child_process';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '../../src';
import {PRODUCTS_PLAIN, PRODUCTS_SHARED} from '../../src/kernels/native_module';
import {NativeHost} from '../../src/kernels/backend_types';
import {nativeProducts, PANEL_MIN_ROWS, panelRows, useNativeProducts} from '../../src/kernels/wasm_native';
import {BACKEND, title, seededValues as values} from '../support/helpers';

/** op(a) op(b) per batch (both operands' batch axes given whole or as 1), summed in float64. */
function written(a: Float32Array, b: Float32Array, batch: [number, number], M: number, K: number, N: number,
                 tA: boolean, tB: boolean): Float64Array {
  const count = Math.max(...batch);
  const out = new Float64Array(count * M * N);
  for (let u = 0; u < count; u++) {
    const [ao, bo] = [(batch[0] === 1 ? 0 : u) * M * K, (batch[1] === 1 ? 0 : u) * K * N];
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ao + (tA ? k * M + i : i * K + k)] * b[bo + (tB ? j * K + k : k * N + j)];
        out[u * M * N + i * N + j] = s;
      }
    }
  }
  return out;
}

/** max |got - want| / max |want|. */
function relError(got: ArrayLike<number>, want: Float64Array): number {
  let [scale, worst] = [0, 0];
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
  return worst;
}

/** The WebAssembly API's parts used here (the project's TypeScript settings carry no WebAssembly types). */
interface ModuleApi {
  new (bytes: Uint8Array): object;
  imports(m: object): Array<{module: string; name: string; kind: string}>;
  exports(m: object): Array<{name: string; kind: string}>;
}
const WasmModule = (globalThis as unknown as {WebAssembly: {Module: ModuleApi}}).WebAssembly.Module;

const host = () => (tf.backend() as unknown as {wasm: NativeHost}).wasm;

/** Byte `i` onward as an unsigned LEB128: [value, next index]. */
function leb(bytes: Uint8Array, i: number): [number, number] {
  let [value, shift] = [0, 0];
  for (;;) {
    const byte = bytes[i++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return [value, i];
  }
}

/** The ids of a WebAssembly binary's sections. */
function sectionIds(bytes: Uint8Array): number[] {
  const ids: number[] = [];
  for (let i = 8; i < bytes.length;) {
    const id = bytes[i];
    const [size, start] = leb(bytes, i + 1);
    ids.push(id);
    i = start + size;
  }
  return ids;
}

describe(title('the rows of a 2-D product\'s work items (panelRows)'), () => {
  it('one thread, or enough column blocks: all rows; else blocks of rows, a multiple of 4, at least PANEL_MIN_ROWS, about 4 items a thread', () => {
    expect(panelRows(1024, 4, 1)).toBe(1024);
    expect(panelRows(1024, 16, 2)).toBe(1024); // 16 column blocks are 8 a thread
    expect(panelRows(1024, 8, 2)).toBe(1024);
    expect(panelRows(1024, 4, 2)).toBe(512); // 4 columns blocks x 2 row blocks
    expect(panelRows(512, 4, 2)).toBe(256);
    expect(panelRows(300, 2, 2)).toBe(76); // 4 row blocks: 76, 76, 76, 72
    expect(panelRows(128, 4, 2)).toBe(PANEL_MIN_ROWS);
    expect(panelRows(48, 3, 2)).toBe(48); // fewer rows than a block: one block
    expect(panelRows(1024, 1, 8)).toBe(PANEL_MIN_ROWS); // 32 items wanted on 8 threads: 32 rows is below the floor
    expect(panelRows(4096, 1, 8)).toBe(128); // 32 blocks of 128 rows
    for (const [M, groups, threads] of [[97, 1, 2], [1000, 3, 3], [5, 1, 4], [4096, 2, 8]]) {
      const rows = panelRows(M, groups, threads);
      expect({M, rows, ok: rows === M || (rows % 4 === 0 && rows >= PANEL_MIN_ROWS && rows < M)})
        .toEqual({M, rows, ok: true});
    }
  });
});

(BACKEND === 'wasm' ? describe : describe.skip)(title('the library\'s product kernel on wasm'), () => {
  test('the committed modules are what native/products.ts compiles to', () => {
    const script = path.join(__dirname, '..', '..', 'scripts', 'build-native.js');
    const out = execFileSync(process.execPath, [script, '--check'], {encoding: 'utf8'});
    expect(out).toMatch(/matches/);
  });

  test('each module imports the memory alone, exports the product kernels and flexAttention\'s, and has no data, global or start section', () => {
    for (const text of [PRODUCTS_SHARED, PRODUCTS_PLAIN]) {
      const bytes = Uint8Array.from(Buffer.from(text, 'base64'));
      const module = new WasmModule(bytes);
      expect(WasmModule.imports(module)).toEqual([{module: 'env', name: 'memory', kind: 'memory'}]);
      expect(WasmModule.exports(module).filter((e) => e.kind === 'function').map((e) => e.name).sort())
        .toEqual(['flexBackward', 'flexForward', 'flexScratchFloats', 'panels', 'products']);
      // 6 globals, 8 start, 11 data: none, so instantiating it on tfjs's memory changes nothing there.
      const ids = sectionIds(bytes);
      expect(ids.filter((id) => id === 6 || id === 8 || id === 11)).toEqual([]);
      expect(ids).toContain(10);
    }
  });

  test('runs on the wasm backend: batched products (attention\'s shapes, edges, broadcast) and 2-D transposed ' +
    'products equal the written-out ones and tfjs-backend-wasm\'s path; scratch freed, nothing leaked', () => {
    const native = nativeProducts(host());
    expect(native).not.toBeNull();
    const h = host();
    const [malloc, free] = [h._malloc, h._free];
    let [allocs, frees] = [0, 0];
    h._malloc = (n: number) => (allocs++, malloc.call(h, n));
    h._free = (p: number) => (frees++, free.call(h, p));
    const before = tf.memory().numTensors;
    try {
      // [batch of a, batch of b], M, K, N: one packed block of B and more (K = 300 > 256), N % 8 != 0, M % 4 != 0.
      const cases: Array<[[number, number], number, number, number]> = [
        [[8, 8], 128, 32, 128], [[8, 8], 128, 128, 32], [[6, 6], 5, 3, 9], [[4, 1], 33, 17, 15], [[1, 3], 7, 40, 8],
        [[1, 1], 130, 300, 21], [[1, 1], 4, 1024, 8], [[1, 1], 1, 1, 1],
      ];
      let seed = 1;
      for (const [batch, M, K, N] of cases) {
        for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
          const flat = batch[0] === 1 && batch[1] === 1;
          if (flat && !tA && !tB) continue; // a plain 2-D product stays on tfjs-backend-wasm's XNNPACK path
          const [av, bv] = [values(batch[0] * M * K, seed++), values(batch[1] * K * N, seed++)];
          const aShape = [...(flat ? [] : [batch[0]]), ...(tA ? [K, M] : [M, K])];
          const bShape = [...(flat ? [] : [batch[1]]), ...(tB ? [N, K] : [K, N])];
          const [a, b] = [tf.tensor(av, aShape), tf.tensor(bv, bShape)];
          const counted = native!.stats.units + native!.stats.panels;
          const ours = tf.matMul(a, b, tA, tB);
          const what = `${aShape} x ${bShape} tA=${tA} tB=${tB}`;
          // Every one of these went through the kernel (tiny batched ones excepted: tfjs's loop).
          if (!(flat === false && M * K * N < 8192)) {
            expect({what, ran: native!.stats.units + native!.stats.panels > counted}).toEqual({what, ran: true});
          }
          const want = written(av, bv, batch, M, K, N, tA, tB);
          expect({what, shape: ours.shape}).toEqual({what, shape: [...(flat ? [] : [Math.max(...batch)]), M, N]});
          expect({what, ok: relError(ours.dataSync(), want) < 1e-5}).toEqual({what, ok: true});
          const previous = useNativeProducts(false);
          const theirs = tf.matMul(a, b, tA, tB);
          useNativeProducts(previous);
          expect({what, ok: relError(ours.dataSync(), Float64Array.from(theirs.dataSync())) < 1e-5})
            .toEqual({what, ok: true});
          tf.dispose([a, b, ours, theirs]);
        }
      }
    } finally {
      h._malloc = malloc;
      h._free = free;
    }
    // Every allocation on the backend's memory (the tensors', the kernel's list and scratch) was freed.
    expect(allocs).toBeGreaterThan(0);
    expect(frees).toBe(allocs);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('useNativeProducts(false) sends products back to tfjs-backend-wasm\'s path', () => {
    const native = nativeProducts(host())!;
    const [a, b] = [tf.ones([4, 32, 16]), tf.ones([4, 16, 32])];
    const counted = native.stats.units;
    const previous = useNativeProducts(false);
    try {
      const y = tf.matMul(a, b);
      expect(Array.from(y.dataSync()).every((v) => v === 16)).toBe(true);
      expect(native.stats.units).toBe(counted);
      y.dispose();
    } finally {
      useNativeProducts(previous);
    }
    const y = tf.matMul(a, b);
    expect(native.stats.units).toBe(counted + 4);
    expect(Array.from(y.dataSync()).every((v) => v === 16)).toBe(true);
    tf.dispose([a, b, y]);
  });
});
