/**
 * What the benchmark suite runs: the attention shapes and presets of `--suite quick` and
 * `--suite full`, the longest length of the dense implementations, and the CLI's overrides
 * of a list of shapes (--seq, --batch, --heads, --kv-heads, --dim).
 */
import {AttentionError} from '../core/errors';
import {assertPositiveInt} from '../core/validate';
import {AttentionShape} from './measure';
import {LAYER_SHAPE} from './workloads';

/** The multi-head shape the built-in shape lists and --seq start from: B=1, H=G=8, D=64. */
const MHA_BASE = {B: 1, H: 8, G: 8, D: 64};

/** B=1, H=8, D=64, T=S in {128, 512} with G=8 (multi-head), plus one GQA row (G=2): the quick suite's shapes. */
export const QUICK_SHAPES: readonly AttentionShape[] = [
  {...MHA_BASE, T: 128, S: 128},
  {...MHA_BASE, T: 512, S: 512},
  {...MHA_BASE, G: 2, T: 512, S: 512},
];

/** The lengths of the full suite's sweep. */
export const SWEEP_LENGTHS: readonly number[] = [128, 256, 512, 1024, 2048, 4096, 8192, 16384];
/** The sweep's heads: B=1, H=G=4, D=64 (H=8 would not let the dense rows reach T=4096 in wasm's 4 GiB). */
export const SWEEP_BASE = {B: 1, H: 4, G: 4, D: 64};

/**
 * The full suite's attention shapes: B=1, H=8, T=1024, D=64 (the exact-attention
 * throughput shape), the GQA shape, then the sweep over SWEEP_LENGTHS.
 */
export const FULL_SHAPES: readonly AttentionShape[] = [
  {...MHA_BASE, T: 1024, S: 1024},
  {...MHA_BASE, G: 2, T: 512, S: 512},
  ...SWEEP_LENGTHS.map((T) => ({...SWEEP_BASE, T, S: T})),
];

/**
 * The longest T the implementations that form T x S matrices run at: at T=8192 their
 * forward+backward needs more than the 4 GiB a wasm heap can have, and running out
 * aborts the whole process (no catch can stop it). Others run at every length.
 */
export const DENSE_MAX_T = 4096;
export const DENSE_IMPLS: readonly string[] = ['naive', 'sdpa', 'sdpa-causal', 'local-global-dense'];

export type SuiteName = 'quick' | 'full';
export const SUITE_NAMES: readonly SuiteName[] = ['quick', 'full'];

export interface BenchPreset {
  /** Shapes of the attention rows. */
  shapes: readonly AttentionShape[];
  /** Shapes of the layer rows (mha-layer, mha-layer-naive). */
  layerShapes: readonly AttentionShape[];
  /** Sizes n of the matmul row. */
  matmulSizes: readonly number[];
  /** Edges E of the graph rows (graphShape). */
  graphEdges: readonly number[];
  /** Points N of the point rows: knn-graph, geometric, equivariant (k = 16; geometric_workloads.ts). */
  points: readonly number[];
  /** Untimed runs before timing; the first is also the peak-memory run. */
  warmup: number;
  /** Timed runs; the median is reported. */
  reps: number;
  /** A row stops adding warm-up runs after half of this and timed runs after all of it (ms); one timed run at least. */
  budgetMs: number;
}

/** The default run: every row at every length memory allows. */
export const FULL_PRESET: BenchPreset = {
  shapes: FULL_SHAPES, layerShapes: [LAYER_SHAPE], matmulSizes: [1024], graphEdges: [10_000, 100_000, 1_000_000],
  points: [1_000, 10_000, 100_000], warmup: 2, reps: 3, budgetMs: 60_000,
};
/** `--suite quick`: T <= 512, the layer rows and matmul, with fewer runs and a smaller budget per row. */
export const QUICK_PRESET: BenchPreset = {
  shapes: QUICK_SHAPES, layerShapes: [LAYER_SHAPE], matmulSizes: [1024], graphEdges: [10_000], points: [1_000],
  warmup: 1, reps: 3, budgetMs: 12_000,
};
export const SUITES: Readonly<Record<SuiteName, BenchPreset>> = {quick: QUICK_PRESET, full: FULL_PRESET};

/** What the CLI's --seq, --batch, --heads, --kv-heads and --dim change in a list of shapes. */
export interface ShapeOverrides {
  /** Lengths T (= S): one multi-head shape per length (B=1, H=8, D=64 unless overridden) replaces the list. */
  seq?: readonly number[];
  /** B */
  batch?: number;
  /** H */
  heads?: number;
  /** G. Default: H for multi-head shapes (G == H), the shape's own G otherwise. */
  kvHeads?: number;
  /** D (= Dv) */
  dim?: number;
}

/**
 * `shapes` with the overrides applied, duplicates dropped, in order. Throws
 * AttentionError('INVALID_CONFIG') for a value that is not a positive integer or
 * heads not divisible by the key/value heads.
 */
export function overrideShapes(shapes: readonly AttentionShape[], o: ShapeOverrides): AttentionShape[] {
  if (o.seq != null) {
    if (o.seq.length === 0) throw new AttentionError('INVALID_CONFIG', 'seq must list at least one length');
    o.seq.forEach((T) => assertPositiveInt('seq', T));
  }
  for (const [name, value] of [['batch', o.batch], ['heads', o.heads], ['kvHeads', o.kvHeads], ['dim', o.dim]] as const) {
    if (value != null) assertPositiveInt(name, value);
  }
  const start = o.seq != null ? o.seq.map((T) => ({...MHA_BASE, T, S: T})) : shapes;
  const out: AttentionShape[] = [];
  for (const s of start) {
    const H = o.heads ?? s.H;
    const G = o.kvHeads ?? (s.G === s.H ? H : s.G);
    if (H % G !== 0) {
      throw new AttentionError('INVALID_CONFIG',
        `heads (${H}) must be divisible by kvHeads (${G}) in the shape with T=${s.T}, S=${s.S}; ` +
        'set kvHeads (--kv-heads) to a divisor of heads');
    }
    const shape = {B: o.batch ?? s.B, H, G, T: s.T, S: s.S, D: o.dim ?? s.D};
    const same = (x: AttentionShape) => (['B', 'H', 'G', 'T', 'S', 'D'] as const).every((key) => x[key] === shape[key]);
    if (!out.some(same)) out.push(shape);
  }
  return out;
}
