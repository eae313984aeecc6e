/**
 * The library's own product kernel on the wasm backend (batched and transposed products),
 * and its threads.
 *
 * Attention multiplies many small matrices, one pair per (batch, head): at T = 128 and
 * D = 32, 768 products of 1 MFLOP in one training step of a 4-layer model. Through
 * tfjs-backend-wasm each is one native call that creates an XNNPACK operator and packs its
 * second operand first, on one thread. The kernel here (native/products.ts, AssemblyScript
 * compiled to WebAssembly SIMD, src/kernels/native_module.ts) computes them in place on the
 * backend's own memory, which it imports: no operator, no copy, both operands read where
 * they lie (transposed ones by strides, or a transposed second operand packed once per
 * product into a scratch row block).
 *
 * With the threaded build in Node (`selectBackend('wasm', {threads})`, which hands this
 * module a way to start worker threads: native_workers.ts) the units of a batched product,
 * or the blocks of 32 columns of a 2-D one, are shared between the calling thread and
 * `threads - 1` worker threads of the library's own, each running the same module on the
 * same shared memory and taking items one at a time from a shared counter; the caller waits
 * for them with `Atomics.wait`, so a kernel stays synchronous. A worker takes work only once
 * it has said it is ready, and one that has not taken the job by the time the caller runs
 * out of items is not waited for; one that fails (or does not answer for a minute) turns the
 * workers off and the call throws. Workers are `unref()`ed: they never keep a program alive.
 * In a browser the calling thread does all the products.
 *
 * The same module holds flexAttention's fused forward and backward (native/flex.ts,
 * wasm_flex.ts), whose work items (query blocks; (batch, group) pairs) go to the same threads.
 *
 * Anything unavailable (a backend module without the memory or `_malloc`, a module that
 * does not compile) makes `nativeProducts` answer null and the callers keep their other
 * path.
 */
import {PRODUCTS_PLAIN, PRODUCTS_SHARED} from './native_module';
import {AttentionError} from '../core/errors';
import {NativeHost, WasmMemory} from './backend_types';

type WasmModuleObject = object;
/** The WebAssembly API's parts used here. */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => WasmModuleObject;
  Instance: new (module: WasmModuleObject, imports: object) => {exports: Record<string, unknown>};
}

/** One batched product: C_u = op(A_u) op(B_u) for each unit u. */
export interface UnitProducts {
  /** Byte offsets into the backend's memory: a, b and c of unit u at 3u, 3u + 1, 3u + 2. */
  offsets: Int32Array;
  M: number;
  K: number;
  N: number;
  /** A_u is stored [K, M] (else [M, K]). */
  transposeA: boolean;
  /** B_u is stored [N, K] (else [K, N]). */
  transposeB: boolean;
}

/** One 2-D product: C = op(A) op(B), by byte offsets into the backend's memory. */
export interface Product {
  a: number;
  b: number;
  c: number;
  M: number;
  K: number;
  N: number;
  transposeA: boolean;
  transposeB: boolean;
}

/** The module's exports (native/products.ts). */
interface Kernels {
  products(list: number, from: number, to: number, M: number, K: number, N: number, transA: number, transB: number,
           scratch: number): void;
  panels(a: number, ars: number, acs: number, b: number, brs: number, bcs: number, c: number, M: number, K: number,
         N: number, rows: number, from: number, to: number, scratch: number): void;
  flexForward(params: number, from: number, to: number, scratch: number): void;
  flexBackward(params: number, from: number, to: number, scratch: number): void;
  flexScratchFloats(bq: number, bk: number, D: number, Dv: number, backward: number): number;
}

// The control block shared with the workers (Int32 slots): the job's kind and arguments,
// its count of work items and the next one to take, then SLOT slots per worker. A worker's
// state is 0 (nothing offered), the job's generation g >= 1 (offered), -(g + 1) (taken) or
// STOPPED; the caller offers each ready worker the job, takes items itself until none are
// left, then withdraws every offer not yet taken and waits only for the workers that took
// it (DONE = g): a worker that wakes late costs nothing. READY is 1 once the worker's module
// is instantiated (-1: failed).
export const ARGS = 0;
export const KIND = 16;
export const COUNT = 17;
export const NEXT = 18;
export const FIRST_SLOT = 24;
export const SLOT = 8;
export const [STATE, DONE, SCRATCH, FAILED, READY] = [0, 1, 2, 3, 4];
export const STOPPED = -1;
/**
 * Job kinds: the units of a batched product (`products`), the column panels of one product
 * (`panels`), and flexAttention's query blocks (`flexForward`) and (batch, group) pairs
 * (`flexBackward`: wasm_flex.ts).
 */
export const [UNITS, PANELS, FLEX_FORWARD, FLEX_BACKWARD] = [0, 1, 2, 3];
/** How long the caller waits for a worker without news before it gives up on the workers. */
const WORKER_TIMEOUT_MS = 60_000;
/** Floats of `panels`' scratch: GROUP (4) panels of PANEL_DEPTH (128) x 8, and a 4 x 8 tile. */
const PANEL_SCRATCH = 4 * 128 * 8 + 32;
/** Columns of a 2-D product per work item of `panels`. */
const PANEL_COLUMNS = 32;
/** The fewest rows of a 2-D product's work item when its rows are split (each item packs its columns of B again). */
export const PANEL_MIN_ROWS = 64;
/** Work items per thread a 2-D product is cut into, when its columns alone give fewer. */
const ITEMS_PER_THREAD = 4;

/**
 * Rows per work item of a 2-D product of M rows and `groups` blocks of 32 columns on
 * `threads` threads: all M on one thread or when the column blocks alone give
 * ITEMS_PER_THREAD items a thread; else blocks of rows (a multiple of 4, at least
 * PANEL_MIN_ROWS) so that the items are about that many. A worker that starts late then
 * still finds work: a layer's weight gradient [1024, 512]^T x [1024, 128] has only 4 blocks
 * of columns. Each output is still computed by one thread in one order: the same bits.
 */
export function panelRows(M: number, groups: number, threads: number): number {
  const blocks = Math.ceil(ITEMS_PER_THREAD * threads / groups);
  if (threads <= 1 || blocks <= 1) return M;
  return Math.min(M, Math.max(PANEL_MIN_ROWS, 4 * Math.ceil(M / blocks / 4)));
}

/** A started worker thread (Node's Worker). */
export type WorkerLike =
  {unref(): void; terminate(): Promise<number>; on(event: string, f: (...args: unknown[]) => void): void};
/** What a worker is started with: the kernel's module, the backend's memory, the control block and its slot. */
export interface WorkerData {module: object; memory: WasmMemory; control: SharedArrayBuffer; slot: number}
/** Starts one worker of the kernel (native_workers.ts in Node). */
export type WorkerStarter = (data: WorkerData) => WorkerLike;

/** The kernel bound to one backend module: its instance and, in Node's threaded build, its workers. */
class NativeProducts {
  private ctl: Int32Array | null = null;
  private workers: WorkerLike[] = [];
  private generation = 0;
  /**
   * Work done so far (tests and the bench read it): batched products' units, 2-D products'
   * panels, flexAttention's work items and the tiles they computed (each (batch entry, head)
   * pair's, forward and backward), and how many items of any job the workers did.
   */
  readonly stats = {units: 0, panels: 0, flexItems: 0, flexTiles: 0, byWorkers: 0};

  constructor(private readonly host: NativeHost, private readonly kernels: Kernels,
              private readonly module: WasmModuleObject, private readonly memory: WasmMemory,
              private readonly threads: number) {}

  /** Starts the workers (once, on first use): threads - 1 of them, in Node, on a shared memory only. */
  private startWorkers(): void {
    if (this.ctl != null || this.threads <= 1) return;
    const start = workerStarter;
    if (start == null) return;
    const count = this.threads - 1;
    this.ctl = new Int32Array(new SharedArrayBuffer(4 * (FIRST_SLOT + SLOT * count)));
    for (let w = 0; w < count; w++) {
      const slot = FIRST_SLOT + SLOT * w;
      let worker: WorkerLike;
      try {
        worker = start({module: this.module, memory: this.memory, control: this.ctl.buffer as SharedArrayBuffer, slot});
      } catch {
        return; // the workers started so far (perhaps none) take work; the calling thread does the rest
      }
      worker.unref();
      // A worker that fails or ends is never given work again.
      const off = () => Atomics.store(this.ctl!, slot + READY, -1);
      worker.on('error', off);
      worker.on('exit', off);
      this.workers.push(worker);
    }
  }

  /** The workers ready for work now (their slots). */
  private readyWorkers(): number[] {
    const ctl = this.ctl;
    if (ctl == null) return [];
    return this.workers.map((_, w) => FIRST_SLOT + SLOT * w).filter((s) => Atomics.load(ctl, s + READY) === 1);
  }

  /** The workers that may share a job of at most `items` items (started on first use); none for one item. */
  private readyFor(items: number): number[] {
    this.startWorkers();
    return items > 1 ? this.readyWorkers() : [];
  }

  /** Runs a batched product: each unit on whichever thread takes it. */
  run(job: UnitProducts): void {
    const {offsets, M, K, N} = job;
    const count = offsets.length / 3;
    if (count === 0 || M * N === 0) return;
    const list = this.host._malloc(offsets.byteLength) >>> 0;
    if (list === 0) throw new AttentionError('UNSUPPORTED', "the wasm backend's memory could not hold a product's list");
    try {
      // The memory may have grown in the allocation: the view is taken after it.
      new Int32Array(this.memory.buffer, list, offsets.length).set(offsets);
      const [ta, tb] = [job.transposeA ? 1 : 0, job.transposeB ? 1 : 0];
      this.dispatch(UNITS, [list, M, K, N, ta, tb], count, K * Math.ceil(N / 8) * 8 + 32, this.readyFor(count),
        (from, to, scratch) => this.kernels.products(list, from, to, M, K, N, ta, tb, scratch));
    } finally {
      this.host._free(list);
    }
  }

  /**
   * Runs one 2-D product: each item (a block of 32 columns, or with workers a block of 32
   * columns times a block of rows: see panelRows) on whichever thread takes it.
   */
  product(p: Product): void {
    const {a, b, c, M, K, N} = p;
    if (M * N === 0) return;
    const [ars, acs] = p.transposeA ? [4, 4 * M] : [4 * K, 4];
    const [brs, bcs] = p.transposeB ? [4, 4 * K] : [4 * N, 4];
    const groups = Math.ceil(N / PANEL_COLUMNS);
    const ready = this.readyFor(groups * Math.ceil(M / PANEL_MIN_ROWS));
    const rows = panelRows(M, groups, 1 + ready.length);
    this.dispatch(PANELS, [a, ars, acs, b, brs, bcs, c, M, K, N, rows], groups * Math.ceil(M / rows), PANEL_SCRATCH,
      ready, (from, to, scratch) => this.kernels.panels(a, ars, acs, b, brs, bcs, c, M, K, N, rows, from, to, scratch));
  }

  /**
   * Runs work items [0, count) of flexAttention's forward (query blocks) or backward ((batch,
   * group) pairs) over the parameter block at `params` (native/flex.ts), shared with the
   * workers. `tiles`: the tiles those items compute, for the stats.
   */
  flex(backward: boolean, params: number, count: number, dims: {bq: number; bk: number; D: number; Dv: number},
       tiles: number): void {
    if (count === 0) return;
    this.stats.flexTiles += tiles;
    const scratch = this.kernels.flexScratchFloats(dims.bq, dims.bk, dims.D, dims.Dv, backward ? 1 : 0);
    const run = backward ? this.kernels.flexBackward : this.kernels.flexForward;
    this.dispatch(backward ? FLEX_BACKWARD : FLEX_FORWARD, [params], count, scratch, this.readyFor(count),
      (from, to, at) => run(params, from, to, at));
  }

  /**
   * Runs items [0, count) of a job: on the calling thread alone, or shared with the `ready`
   * workers (readyFor), each thread with its own scratch of `scratchFloats` floats.
   */
  private dispatch(kind: number, args: number[], count: number, scratchFloats: number, ready: number[],
                   run: (from: number, to: number, scratch: number) => void): void {
    const scratchBytes = 4 * scratchFloats + 16;
    const scratch = this.host._malloc((1 + ready.length) * scratchBytes + 16) >>> 0;
    if (scratch === 0) {
      throw new AttentionError('UNSUPPORTED', "the wasm backend's memory could not hold a product's scratch space");
    }
    const aligned = (p: number) => (scratch + p * scratchBytes + 15) & ~15;
    this.stats[kind === UNITS ? 'units' : kind === PANELS ? 'panels' : 'flexItems'] += count;
    const ctl = this.ctl;
    if (ctl == null || ready.length === 0) {
      try {
        run(0, count, aligned(0));
      } finally {
        this.host._free(scratch);
      }
      return;
    }
    const gen = ++this.generation;
    try {
      ctl.set(args, ARGS);
      ctl.set([kind, count, 0], KIND);
      ready.forEach((slot, w) => {
        Atomics.store(ctl, slot + SCRATCH, aligned(w + 1));
        Atomics.store(ctl, slot + STATE, gen);
        Atomics.notify(ctl, slot + STATE);
      });
      const own = aligned(0);
      let done = 0;
      for (let u = Atomics.add(ctl, NEXT, 1); u < count; u = Atomics.add(ctl, NEXT, 1), done++) run(u, u + 1, own);
      this.stats.byWorkers += count - done;
    } finally {
      // Offers not taken are withdrawn; the workers that took one are waited for, even when
      // the calling thread's share threw: they use the operands and the scratch.
      Atomics.store(ctl, NEXT, count);
      const taken = ready.filter((slot) => Atomics.compareExchange(ctl, slot + STATE, gen, 0) !== gen);
      const failed = this.await(ctl, taken, gen);
      this.host._free(scratch);
      if (failed) {
        this.stop();
        /* eslint-disable-next-line no-unsafe-finally --
           a failed worker is the error to report, whatever the share threw */
        throw new AttentionError('UNSUPPORTED', 'a worker thread of the wasm product kernel failed; ' +
          'its workers are off, and later products run on the calling thread');
      }
    }
  }

  /** Waits until every worker in `slots` has done generation `gen`; true when one failed or did not answer. */
  private await(ctl: Int32Array, slots: number[], gen: number): boolean {
    let failed = false;
    for (const slot of slots) {
      const start = Date.now();
      for (;;) {
        const done = Atomics.load(ctl, slot + DONE);
        if (done === gen) break;
        if (Atomics.load(ctl, slot + READY) !== 1 || Date.now() - start > WORKER_TIMEOUT_MS) {
          failed = true;
          break;
        }
        Atomics.wait(ctl, slot + DONE, done, 100);
      }
      if (Atomics.load(ctl, slot + FAILED) !== 0) failed = true;
    }
    return failed;
  }

  /** Stops the workers; later calls run on the calling thread. */
  stop(): void {
    const ctl = this.ctl;
    if (ctl == null) return;
    this.workers.forEach((worker, w) => {
      const slot = FIRST_SLOT + SLOT * w;
      Atomics.store(ctl, slot + READY, -1);
      Atomics.store(ctl, slot + STATE, STOPPED);
      Atomics.notify(ctl, slot + STATE);
      void worker.terminate();
    });
    this.workers = [];
  }

  /** Workers started and ready (for tests and the bench). */
  get readyThreads(): number {
    return this.readyWorkers().length;
  }
}

const bound = new WeakMap<object, NativeProducts | null>();
let enabled = true;
let workerStarter: WorkerStarter | null = null;

/**
 * Gives the kernel a way to start its worker threads (backend.ts does, with
 * native_workers.ts, when it starts the threaded build in Node): without one the calling
 * thread does every product. Kept apart so that nothing here reaches Node's modules (the
 * core must bundle for browsers).
 */
export function provideWorkerStarter(start: WorkerStarter | null): void {
  workerStarter = start;
}

/** Bytes of a base64 string (atob: Node >= 16 and browsers). */
function base64Bytes(text: string): Uint8Array {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/**
 * The batched product kernel bound to `host` (a tfjs-backend-wasm module), or null when it
 * cannot run there or is turned off (useNativeProducts(false)).
 */
export function nativeProducts(host: NativeHost): NativeProducts | null {
  if (!enabled) return null;
  if (bound.has(host)) return bound.get(host)!;
  let kernel: NativeProducts | null = null;
  try {
    const memory = host.wasmMemory ?? host.asm?.memory;
    if (memory != null && typeof host._malloc === 'function' && typeof host._free === 'function') {
      const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
      const wasm = (globalThis as unknown as {WebAssembly: WebAssemblyApi}).WebAssembly;
      const module = new wasm.Module(base64Bytes(shared ? PRODUCTS_SHARED : PRODUCTS_PLAIN));
      const instance = new wasm.Instance(module, {env: {memory}});
      const threads = shared && workerStarter != null ? Math.max(1, host.tfjs?.getThreadsCount?.() ?? 1) : 1;
      kernel = new NativeProducts(host, instance.exports as unknown as Kernels, module, memory, threads);
    }
  } catch {
    kernel = null;
  }
  bound.set(host, kernel);
  return kernel;
}

/**
 * Turns the kernel on (the default) or off for every backend; returns the previous setting.
 * Off, batched products take tfjs-backend-wasm's fast path one product at a time.
 */
export function useNativeProducts(on: boolean): boolean {
  const previous = enabled;
  enabled = on;
  return previous;
}
