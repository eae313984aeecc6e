/** The header of a benchmark report: where, when and with what it ran. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';

export interface BenchMeta {
  /** Bumped when the shape of results.json changes. */
  format: 1;
  /** ISO 8601 time the run started. */
  date: string;
  backend: string;
  tfjsVersion: string;
  packageVersion: string;
  nodeVersion: string;
  cpuCount: number;
  warmup: number;
  reps: number;
  /** How gflops and peakBytes are counted, in words. */
  flops: string;
  peakBytes: string;
}

/** This package's package.json; `../../package.json` from both src/<dir> and dist/<dir>. */
export function readPackageJson(): {name: string; version: string} {
  return JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
}

export function collectMeta(backend: string, warmup: number, reps: number): BenchMeta {
  const versions = tf.version as Record<string, string>;
  return {
    format: 1,
    date: new Date().toISOString(),
    backend,
    tfjsVersion: versions['tfjs'] ?? tf.version_core,
    packageVersion: readPackageJson().version,
    nodeVersion: process.version,
    cpuCount: os.cpus().length,
    warmup,
    reps,
    flops: 'attention matmuls only: fwd 4*B*H*T*S*D, fwd+bwd 12*B*H*T*S*D; gflops = flops / msMedian / 1e6',
    peakBytes: 'tf.profile().peakBytes minus tf.memory().numBytes before the pass (inputs not counted); ' +
      'tfjs counts every live tensor in full, reshape views included',
  };
}
