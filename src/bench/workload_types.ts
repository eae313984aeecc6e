/**
 * What a bench row is: a workload (its passes, FLOP counts, floor and inputs), a prepared
 * row, and the attention implementations that become workloads (impls.ts). Apart from
 * workloads.ts, so that the tables of rows in other files (the point-cloud rows, the flex
 * rows) and the files that gather them do not import each other.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionShape, Pass, PassFn} from './measure';

/** A prepared row: its pass functions and the tensors to free afterwards. */
export interface Prepared {
  pass(p: Pass): PassFn | null;
  dispose(): void;
}

export interface Workload {
  description: string;
  /** The passes it has. */
  passes: readonly Pass[];
  /**
   * The largest T it runs at on wasm: above it a pass needs more than the 4 GiB a wasm heap can
   * have, and running out aborts the whole process, so larger shapes are recorded as error rows
   * without running there. Default: no limit.
   */
  wasmMaxT?: number;
  /** Multiply-adds * 2 of one pass (what gflops divides by); null when not counted (gflops null). */
  flops(shape: AttentionShape, pass: Pass): number | null;
  /**
   * Multiply-adds * 2 of the products the implementation actually computes (its tiles,
   * masked entries included), where that differs from `flops`; what performedGflops divides by.
   */
  performedFlops?(shape: AttentionShape, pass: Pass): number;
  /** The share of the T x S tiles it computes (rows with a block mask), reported beside its time. */
  computedFraction?(shape: AttentionShape): number;
  /**
   * The bytes any implementation of the pass must hold: its inputs, its outputs and, for
   * fwd+bwd, the forward output and the cotangent (see heap.ts). Float32 throughout.
   */
  floorBytes(shape: AttentionShape, pass: Pass): number;
  /**
   * Makes the row's inputs; `passes` are those that will be asked for (default all), so a fwd
   * run makes no cotangent.
   */
  prepare(shape: AttentionShape, seed: number, passes?: readonly Pass[]): Prepared;
}

/** Options every implementation receives; all are optional so defaults match the ops. */
export interface BenchRunOptions {
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
}

export interface BenchImpl {
  /** One line for `--help` and the report. */
  description: string;
  /** q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] -> [B, H, T, Dv]. Must be differentiable. */
  run(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options: BenchRunOptions): tf.Tensor;
  /** Multiply-adds * 2 of the products it actually computes (see Workload.performedFlops). */
  performedFlops?(shape: AttentionShape, pass: Pass): number;
  /** The share of the T x S tiles it computes (rows with a block mask). */
  computedFraction?(shape: AttentionShape): number;
}
