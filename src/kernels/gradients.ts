/**
 * Gradients of tfjs 4.22 that the library replaces, for every backend and every model.
 *
 * - Tile: tfjs's gradient takes one Slice and one Add per repetition, so the backward of
 *   `tf.tile(x, reps)` runs 2 x prod(reps) kernels, and tf.layers.layerNormalization tiles
 *   its mean, variance, gain and bias up to the input's shape. The replacement takes a
 *   reshape and a sum per tiled axis (adjacent tiled axes where x has size 1 together).
 * - BatchMatMul: tfjs's gradient gives each operand the gradient of the broadcast output's
 *   batch shape, so `tf.matMul` of a [1, M, K] with a [B, K, N] (or [K, N] with a batch)
 *   fails in backprop ("The gradient of input 'b' has shape ..."). The replacement sums
 *   the gradient over the axes the operand was broadcast along; otherwise it is the same
 *   four transposed products.
 *
 * Each is registered only while the registered gradient behaves as tfjs 4.22's (probes
 * run tfjs's own gradient function on a tiny input: the Tile probe counts the tensors it
 * makes, the BatchMatMul probe checks the gradient's shape), so a later tfjs that fixes
 * either keeps its own; names are not compared, so minified bundles are recognised too.
 */
import * as tf from '@tensorflow/tfjs';

export type GradName = 'Tile' | 'BatchMatMul';
type GradMap = Record<string, () => tf.Tensor>;

/** tfjs's gradient configs the replacements took the place of. */
const originals: Partial<Record<GradName, tf.GradConfig>> = {};

/**
 * dy of tile(x, reps) summed back to x's shape: per tiled axis (runs of tiled axes where x
 * has size 1 taken together), one reshape to [before, repetitions, the rest] and one sum of
 * the middle axis. Rank-3 sums only: webgl cannot transpose above rank 6, and a single
 * reshape splitting every axis would reach rank 8.
 */
function tileGrad(dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): GradMap {
  const dy = dyIn as tf.Tensor;
  const [x] = saved;
  const reps = (attrs as unknown as {reps: number[]}).reps;
  return {
    x: () => {
      let g = dy;
      const shape = [...dy.shape];
      for (let i = 0; i < shape.length; i++) {
        if (reps[i] === 1) continue;
        // Axes i .. j - 1: tiled, x of size 1 on all but maybe the last (their repetitions are contiguous).
        let j = i + 1;
        let repeat = reps[i];
        while (x.shape[j - 1] === 1 && j < shape.length && reps[j] !== 1) repeat *= reps[j++];
        const before = shape.slice(0, i).reduce((a, b) => a * b, 1);
        const rest = g.size / (before * repeat);
        g = tf.sum(tf.reshape(g, [before, repeat, rest]), 1);
        for (let d = i; d < j; d++) shape[d] = x.shape[d];
        i = j - 1;
      }
      return g === dy ? tf.clone(dy) : tf.reshape(g, x.shape);
    },
  };
}

/** g summed over the leading axes and the axes of size 1 in `shape` that it broadcast, shaped as `shape`. */
function reduceTo(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (g.shape.join() === shape.join()) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  return tf.reshape(axes.length > 0 ? tf.sum(g, axes) : g, shape);
}

function batchMatMulGrad(dyIn: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): GradMap {
  const dy = dyIn as tf.Tensor;
  const [a, b] = saved;
  const {transposeA, transposeB} = attrs as unknown as {transposeA: boolean; transposeB: boolean};
  const m = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean) => tf.matMul(x, y, tx, ty);
  let da: () => tf.Tensor;
  let db: () => tf.Tensor;
  if (!transposeA && !transposeB) {
    da = () => m(dy, b, false, true);
    db = () => m(a, dy, true, false);
  } else if (!transposeA && transposeB) {
    da = () => m(dy, b, false, false);
    db = () => m(dy, a, true, false);
  } else if (transposeA && !transposeB) {
    da = () => m(b, dy, false, true);
    db = () => m(a, dy, false, false);
  } else {
    da = () => m(b, dy, true, true);
    db = () => m(dy, a, true, true);
  }
  return {a: () => reduceTo(da(), a.shape), b: () => reduceTo(db(), b.shape)};
}

const REPLACEMENTS: Readonly<Record<GradName, tf.GradConfig>> = {
  Tile: {kernelName: 'Tile', inputsToSave: ['x'], gradFunc: tileGrad},
  BatchMatMul: {kernelName: 'BatchMatMul', inputsToSave: ['a', 'b'], gradFunc: batchMatMulGrad},
};

/**
 * True when Tile's gradient `config` takes work per repetition: for x [1, 1] tiled 16 times
 * it makes more tensors than there are repetitions (tfjs 4.22's makes a slice and a sum
 * for each); one that reshapes and sums makes two or three. Reads no values (a synchronous
 * read can break a webgpu page).
 */
export function isPerRepetitionTileGrad(config: tf.GradConfig): boolean {
  return tf.tidy(() => {
    const x = tf.zeros([1, 1]);
    const dy = tf.ones([1, 16]);
    const before = tf.memory().numTensors;
    try {
      const g = config.gradFunc(dy, [x], {reps: [1, 16]} as unknown as tf.NamedAttrMap) as GradMap;
      // Shapes and counts only: a synchronous read can break a webgpu page.
      return g.x().shape.join() === '1,1' && tf.memory().numTensors - before > 16;
    } catch {
      return false;
    }
  });
}

/**
 * True when BatchMatMul's gradient `config` leaves a broadcast operand with the output's
 * batch shape: a [1, 2, 2] x [3, 2, 2] product's gradient for a comes back [3, 2, 2].
 */
export function isUnreducedMatMulGrad(config: tf.GradConfig): boolean {
  return tf.tidy(() => {
    const a = tf.ones([1, 2, 2]);
    const b = tf.ones([3, 2, 2]);
    const dy = tf.ones([3, 2, 2]);
    try {
      const g = config.gradFunc(dy, [a, b],
        {transposeA: false, transposeB: false} as unknown as tf.NamedAttrMap) as GradMap;
      return g.a().shape.join() === '3,2,2';
    } catch {
      return false;
    }
  });
}

const PROBES: Readonly<Record<GradName, (c: tf.GradConfig) => boolean>> =
  {Tile: isPerRepetitionTileGrad, BatchMatMul: isUnreducedMatMulGrad};

/** 'replaced': the library's gradient is in use; 'kept': another (a later tfjs's, a user's); 'absent': none. */
export type GradientState = 'replaced' | 'kept' | 'absent';
export type GradientStatus = Record<GradName, GradientState>;

/** The gradient each wrapper runs once decided: the library's, or the one it wraps. */
const chosen: Partial<Record<GradName, tf.GradConfig>> = {};
/** The wrappers registered in place of tfjs's gradients. */
const wrappers: Partial<Record<GradName, tf.GradConfig>> = {};
let enabled = true;

/** The gradient the wrapper of `name` runs: probed once, when first needed (tensor ops need a ready backend). */
function gradientInUse(name: GradName): tf.GradConfig {
  const original = originals[name]!;
  if (!enabled) return original;
  if (chosen[name] == null) chosen[name] = PROBES[name](original) ? REPLACEMENTS[name] : original;
  return chosen[name]!;
}

/**
 * Which of the library's gradients are in use now. Runs the probes the first time (a few
 * tiny tensor ops), so call it once the backend is ready.
 */
export function gradientStatus(): GradientStatus {
  const state = (name: GradName): GradientState => {
    const g = tf.getGradient(name);
    if (g == null) return 'absent';
    if (g !== wrappers[name] && g.gradFunc !== wrappers[name]?.gradFunc) return 'kept';
    return gradientInUse(name) === REPLACEMENTS[name] ? 'replaced' : 'kept';
  };
  return {Tile: state('Tile'), BatchMatMul: state('BatchMatMul')};
}

/** Registers `config` without tfjs's warning about overriding a gradient. */
function registerWithoutWarning(config: tf.GradConfig): void {
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    tf.registerGradient(config);
  } finally {
    console.warn = warn;
  }
}

const sameList = (x: readonly string[] | undefined, y: readonly string[] | undefined) =>
  (x ?? []).join() === (y ?? []).join();

/**
 * Wraps the registered Tile and BatchMatMul gradients: when first needed, the wrapper runs
 * the probe above on the gradient it wraps and from then on runs the library's gradient
 * if the probe recognises tfjs 4.22's, else the one it wraps. Only gradients that save the
 * same inputs as the library's (and no outputs) are wrapped. Idempotent; runs when the
 * library is imported, before any backend need be ready (the probes run tensor ops).
 */
export function installGradients(): void {
  for (const name of Object.keys(REPLACEMENTS) as GradName[]) {
    const current = tf.getGradient(name);
    if (current == null || current === wrappers[name] || current.gradFunc === wrappers[name]?.gradFunc) continue;
    const savesTheSame = sameList(current.inputsToSave, REPLACEMENTS[name].inputsToSave) &&
      (current.outputsToSave ?? []).length === 0;
    if (!savesTheSame) continue;
    originals[name] = current;
    delete chosen[name];
    const wrapper: tf.GradConfig = {
      kernelName: name, inputsToSave: REPLACEMENTS[name].inputsToSave,
      gradFunc: (dy, saved, attrs) => gradientInUse(name).gradFunc(dy, saved, attrs),
    };
    wrappers[name] = wrapper;
    registerWithoutWarning(wrapper);
  }
}

/** Runs tfjs's gradients (false) or the library's where chosen (true); for measuring (setLibraryKernels). */
export function useLibraryGradients(on: boolean): void {
  enabled = on;
}
