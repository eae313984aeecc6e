/** The header of a benchmark report: where, when and with what it ran. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {getMatMulPath, splitsProducts} from '../ops/matmul';
import {packageRoot} from '../core/runtime';
import {wasmThreads} from '../kernels/wasm_threads';

export interface BenchMeta {
  /**
   * Bumped when the shape of results.json changes (2: rows have `runs`; suite, budgetMs, maxT, matmulPath;
   * 3: rows have heapBytes and floorBytes, meta has heapMeasured and heap; 4: meta has threads).
   */
  format: 4;
  /** ISO 8601 time the run started. */
  date: string;
  backend: string;
  tfjsVersion: string;
  packageVersion: string;
  nodeVersion: string;
  cpuCount: number;
  /** Threads of the backend's kernels (the wasm backend's thread pool; 1 elsewhere). */
  threads: number;
  warmup: number;
  reps: number;
  /** The suite the defaults came from. */
  suite: string;
  /** Time budget per row, ms. */
  budgetMs: number;
  /** Longest T per implementation; longer shapes were skipped. */
  maxT: Record<string, number>;
  /** How the library computed its products: the setting and whether it split them on this backend. */
  matmulPath: string;
  splitProducts: boolean;
  /** How gflops and peakBytes are counted, in words. */
  flops: string;
  peakBytes: string;
  /** Whether rows carry the wasm heap's growth (heap.ts). */
  heapMeasured: boolean;
  heap: string;
}

/** This package's package.json (see packageRoot). */
export function readPackageJson(): {name: string; version: string} {
  return JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8'));
}

export interface RunSettings {
  suite: string;
  budgetMs: number;
  maxT: Readonly<Record<string, number>>;
  /** Whether each row's wasm heap growth is measured. */
  heap: boolean;
}

export function collectMeta(backend: string, warmup: number, reps: number, settings: RunSettings): BenchMeta {
  const versions = tf.version as Record<string, string>;
  return {
    format: 4,
    date: new Date().toISOString(),
    backend,
    tfjsVersion: versions['tfjs'] ?? tf.version_core,
    packageVersion: readPackageJson().version,
    nodeVersion: process.version,
    cpuCount: os.cpus().length,
    threads: wasmThreads(),
    warmup,
    reps,
    suite: settings.suite,
    budgetMs: settings.budgetMs,
    maxT: {...settings.maxT},
    matmulPath: getMatMulPath(),
    splitProducts: splitsProducts(),
    flops: 'attention rows: the attention matmuls only, fwd 4*B*H*T*S*D, fwd+bwd 12*B*H*T*S*D; ' +
      'mha-layer rows: that plus the projections, fwd 2*B*T*E*(H+2G)*D + 2*B*T*H*D*E with E = H*D, fwd+bwd 3x; ' +
      'matmul: 2*T*S*D for [T, D] x [D, S]; geometric, equivariant: their products (and geometric\'s message sums) ' +
      'on N = T points and E = S edges, fwd+bwd 3x; knn-graph: not counted (gflops null); ' +
      'gflops = flops / msMedian / 1e6',
    peakBytes: 'tf.profile().peakBytes minus tf.memory().numBytes before the pass (inputs not counted); ' +
      'tfjs counts every live tensor in full, reshape views included',
    heapMeasured: settings.heap,
    heap: settings.heap ? 'heapBytes is the wasm heap\'s growth over one pass in a fresh child process per row (on one thread), ' +
      'inputs included (the heap never shrinks and grows 20% at a time); floorBytes is what any implementation must ' +
      'hold: q, k, v and the output, plus dOut, dq, dk and dv for fwd+bwd (layer rows: x, the weights and the output, ' +
      'doubled for fwd+bwd; matmul: a, b and the product; point rows: features, positions, edges, weights and ' +
      'outputs, plus cotangents and gradients for fwd+bwd); x floor = heapBytes / floorBytes'
      : 'not measured (wasm in Node only)',
  };
}
