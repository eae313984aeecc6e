/**
 * The worker threads of the library's product kernel (wasm_native.ts), in Node: each runs the
 * kernel's module on the backend's shared memory and takes work from the control block whose
 * layout wasm_native.ts defines. Only backend.ts imports this file (when it starts the
 * threaded build in Node), so the core reaches no Node module through it.
 */
import {ARGS, COUNT, DONE, FAILED, FLEX_BACKWARD, FLEX_FORWARD, KIND, NEXT, READY, SCRATCH, STATE, STOPPED, UNITS,
  WorkerData, WorkerLike} from './wasm_native';
import {nodeBuiltin} from '../core/runtime';

/** The worker's program (run with `eval`: no file to find in a bundle or an installed package). */
const WORKER_SOURCE = `
const {workerData} = require('worker_threads');
const {module, memory, control, slot} = workerData;
const ctl = new Int32Array(control);
let exports = null;
try {
  exports = new WebAssembly.Instance(module, {env: {memory}}).exports;
  Atomics.store(ctl, slot + ${READY}, 1);
} catch (e) {
  Atomics.store(ctl, slot + ${READY}, -1);
}
const a = (i) => ctl[${ARGS} + i];
while (exports != null) {
  const s = Atomics.load(ctl, slot + ${STATE});
  if (s === 0 || s < ${STOPPED}) {
    Atomics.wait(ctl, slot + ${STATE}, s);
    continue;
  }
  if (s === ${STOPPED}) break;
  if (Atomics.compareExchange(ctl, slot + ${STATE}, s, -(s + 1)) !== s) continue;
  try {
    const count = ctl[${COUNT}];
    const scratch = ctl[slot + ${SCRATCH}];
    for (let u = Atomics.add(ctl, ${NEXT}, 1); u < count; u = Atomics.add(ctl, ${NEXT}, 1)) {
      const kind = ctl[${KIND}];
      if (kind === ${UNITS}) {
        exports.products(a(0), u, u + 1, a(1), a(2), a(3), a(4), a(5), scratch);
      } else if (kind === ${FLEX_FORWARD}) {
        exports.flexForward(a(0), u, u + 1, scratch);
      } else if (kind === ${FLEX_BACKWARD}) {
        exports.flexBackward(a(0), u, u + 1, scratch);
      } else {
        exports.panels(a(0), a(1), a(2), a(3), a(4), a(5), a(6), a(7), a(8), a(9), a(10), u, u + 1, scratch);
      }
    }
  } catch (e) {
    Atomics.store(ctl, slot + ${FAILED}, 1);
  }
  Atomics.compareExchange(ctl, slot + ${STATE}, -(s + 1), 0);
  Atomics.store(ctl, slot + ${DONE}, s);
  Atomics.notify(ctl, slot + ${DONE});
}
`;

type WorkerThreads = {Worker: new (source: string, options: object) => WorkerLike};

/** Starts one worker of the kernel, or throws when Node's worker_threads cannot be reached. */
export function startNativeWorker(data: WorkerData): WorkerLike {
  const wt = nodeBuiltin('worker_threads') as WorkerThreads | null;
  if (wt == null) throw new Error("Node's worker_threads cannot be reached");
  return new wt.Worker(WORKER_SOURCE, {eval: true, workerData: data});
}
