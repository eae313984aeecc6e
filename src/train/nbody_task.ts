/**
 * The n-body task of the EGNN paper (Satorras et al. 2021, section 5.1), with a simulator that
 * follows its authors' generator (vgsatorras/egnn, n_body_system/dataset/synthetic_sim.py,
 * ChargedParticlesSim, and generate_dataset.py with the 'nbody_small' settings):
 *
 * - 5 particles in 3-D with charges +1 or -1 (probability 1/2 each); positions drawn from
 *   N(0, 1) per coordinate (scaled by (particles / 5)^(1/3)), velocities in a uniformly random
 *   direction with norm 0.5, then reflected into the box [-5, 5]^3 once (the walls play no part
 *   after that, as in the authors' code);
 * - the force on i is sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3 (like charges repel), each
 *   component clipped to [-100, 100]; unit masses; time step 0.001: one velocity update, then
 *   per step x += dt v, F(x), v += dt F;
 * - a trajectory is sampled every 100 steps; an example is the positions and velocities at
 *   sample 30 (step 3,100) and, to predict, the positions at sample 40 (step 4,100): 1,000
 *   steps later, one time unit;
 * - 3,000 training, 2,000 validation and 2,000 test trajectories (the authors generate 10,000
 *   training ones and use the first 3,000).
 *
 * Each trajectory is its own seeded stream (the data seed, the split and the index), made when
 * first asked for and kept, so a split is the same in every run and any part of it can be read.
 * The random numbers are this library's (mulberry32 and Box-Muller), not numpy's: the data
 * follow the same distribution, not the same draws.
 *
 * A batch holds float arrays in `values`: positions, velocities, charges [n, N, 1] and the
 * target positions [n, N, 3]. Training batches go through the training set in epochs, each
 * epoch a fresh shuffle (seeded by the run's seed and the epoch) without the last partial
 * batch; validation and test batches read their split in order.
 */
import {AttentionError, show} from '../core/errors';
import {gaussian, uniform} from '../ops/random_features';
import {assertNonNegativeInt, assertOneOf, assertPositiveInt, checkArgNames} from '../core/validate';
import {batchSeed, Split, SPLITS, Task, TaskBatch} from './task_base';

export const NBODY_TASK = 'nbody';

export interface NBodyTaskOptions {
  /** Charged particles per system. Default 5. */
  particles?: number;
  /** Training trajectories. Default 3000. */
  trainExamples?: number;
  /** Validation trajectories. Default 2000. */
  validationExamples?: number;
  /** Test trajectories. Default 2000. */
  testExamples?: number;
  /** Seed of the trajectories (not of the model or the order of training). Default 43. */
  dataSeed?: number;
}

export const NBODY_TASK_OPTIONS = ['particles', 'trainExamples', 'validationExamples', 'testExamples', 'dataSeed'] as const;

/** The simulator's constants (ChargedParticlesSim's defaults and the nbody_small settings). */
export const NBODY_SIMULATION = {
  boxSize: 5, positionStd: 1, speed: 0.5, strength: 1, dt: 0.001, maxForce: 100,
  sampleEvery: 100, inputSample: 30, targetSample: 40,
} as const;

/** One example: positions and velocities at the input sample, charges, positions at the target sample. */
export interface NBodyExample {
  positions: Float64Array;
  velocities: Float64Array;
  charges: Float64Array;
  target: Float64Array;
}

export type NBodyTask = Task<typeof NBODY_TASK, Required<NBodyTaskOptions>> & {
  /** Example `index` of `split` (made on first use, then kept). */
  example(split: Split, index: number): NBodyExample;
  /** The examples in each split. */
  sizes: Record<Split, number>;
};

/** Reflects positions outside [-box, box] back in and turns their velocity inwards (the authors' _clamp). */
function reflect(x: Float64Array, v: Float64Array, box: number): void {
  for (let k = 0; k < x.length; k++) {
    if (x[k] > box) {
      x[k] = 2 * box - x[k];
      v[k] = -Math.abs(v[k]);
    } else if (x[k] < -box) {
      x[k] = -2 * box - x[k];
      v[k] = Math.abs(v[k]);
    }
  }
}

function clip(f: number, limit: number): number {
  return f > limit ? limit : f < -limit ? -limit : f;
}

/**
 * Adds dt * F(x) to v: the clipped Coulomb forces of the file comment. x, v [N, 3] row-major;
 * scale [N, N] scratch. Each pair's q_i q_j / r^3 is computed once (it is the same both ways,
 * to the bit), then each force is summed over j in order, as the authors' code sums it.
 */
function kick(x: Float64Array, v: Float64Array, q: Float64Array, N: number, scale: Float64Array): void {
  const {dt, maxForce, strength} = NBODY_SIMULATION;
  for (let i = 0; i < N; i++) {
    for (let j = i + 1; j < N; j++) {
      const dx = x[i * 3] - x[j * 3], dy = x[i * 3 + 1] - x[j * 3 + 1], dz = x[i * 3 + 2] - x[j * 3 + 2];
      const r2 = dx * dx + dy * dy + dz * dz;
      scale[i * N + j] = scale[j * N + i] = strength * q[i] * q[j] / (r2 * Math.sqrt(r2));
    }
  }
  for (let i = 0; i < N; i++) {
    let fx = 0, fy = 0, fz = 0;
    for (let j = 0; j < N; j++) {
      if (j === i) continue;
      const s = scale[i * N + j];
      fx += s * (x[i * 3] - x[j * 3]);
      fy += s * (x[i * 3 + 1] - x[j * 3 + 1]);
      fz += s * (x[i * 3 + 2] - x[j * 3 + 2]);
    }
    v[i * 3] += dt * clip(fx, maxForce);
    v[i * 3 + 1] += dt * clip(fy, maxForce);
    v[i * 3 + 2] += dt * clip(fz, maxForce);
  }
}

/** The initial state of N particles drawn from `seed`: charges, positions, velocities ([N, 3] row-major). */
export function initialState(N: number, seed: number): {charges: Float64Array; positions: Float64Array;
  velocities: Float64Array;} {
  const c = NBODY_SIMULATION;
  const normal = gaussian(seed);
  const coin = uniform(seed ^ 0x2545f491);
  // Drawn in the authors' order: charges, positions, velocities.
  const charges = Float64Array.from({length: N}, () => (coin() < 0.5 ? -1 : 1));
  const std = c.positionStd * Math.cbrt(N / 5);
  const positions = Float64Array.from({length: N * 3}, () => normal() * std);
  const velocities = Float64Array.from({length: N * 3}, () => normal());
  for (let i = 0; i < N; i++) {
    const norm = Math.hypot(velocities[i * 3], velocities[i * 3 + 1], velocities[i * 3 + 2]);
    for (let a = 0; a < 3; a++) velocities[i * 3 + a] *= c.speed / norm;
  }
  return {charges, positions, velocities};
}

/**
 * Runs the simulation of the file comment from an initial state (copied, not changed) and
 * returns the example: positions and velocities at the input sample, positions at the target.
 */
export function simulateCharged(state: {charges: Float64Array; positions: Float64Array; velocities: Float64Array}):
    NBodyExample {
  const c = NBODY_SIMULATION;
  const q = state.charges;
  const N = q.length;
  const x = state.positions.slice();
  const v = state.velocities.slice();
  const scale = new Float64Array(N * N);
  reflect(x, v, c.boxSize);
  kick(x, v, q, N, scale);
  const out: Partial<NBodyExample> = {charges: q};
  const last = (c.targetSample + 1) * c.sampleEvery;
  for (let step = 1; step <= last; step++) {
    for (let k = 0; k < x.length; k++) x[k] += c.dt * v[k];
    if (step === (c.inputSample + 1) * c.sampleEvery) { // sample s is kept after step (s + 1) * sampleEvery
      out.positions = x.slice();
      out.velocities = v.slice();
    }
    if (step === last) out.target = x.slice();
    kick(x, v, q, N, scale);
  }
  return out as NBodyExample;
}

/** The n-body task (see the file comment). Throws INVALID_CONFIG for bad options. */
export function makeNBodyTask(options: NBodyTaskOptions = {}): NBodyTask {
  checkArgNames('nbody task', options, NBODY_TASK_OPTIONS);
  const o: Required<NBodyTaskOptions> = {particles: 5, trainExamples: 3000, validationExamples: 2000,
    testExamples: 2000, dataSeed: 43, ...options};
  for (const key of ['particles', 'trainExamples', 'validationExamples', 'testExamples'] as const) assertPositiveInt(key, o[key]);
  assertNonNegativeInt('dataSeed', o.dataSeed);
  if (o.particles < 2) throw new AttentionError('INVALID_CONFIG', `nbody needs at least 2 particles, received ${show(o.particles)}`);
  const N = o.particles;
  const sizes: Record<Split, number> = {train: o.trainExamples, validation: o.validationExamples, test: o.testExamples};
  const kept: Record<Split, Map<number, NBodyExample>> = {train: new Map(), validation: new Map(), test: new Map()};
  const example = (split: Split, index: number): NBodyExample => {
    let e = kept[split].get(index);
    if (e == null) {
      e = simulateCharged(initialState(N, batchSeed(o.dataSeed * 3 + SPLITS.indexOf(split), index)));
      kept[split].set(index, e);
    }
    return e;
  };
  return {
    name: NBODY_TASK, options: o, vocabSize: 0, seqLength: N, sizes, example,
    description: `predict where ${N} charged particles are 1,000 simulation steps later from their positions, ` +
      'velocities and charges (the EGNN paper\'s n-body task)',
    batch(n: number, seed: number, index: number, split: Split = 'train'): TaskBatch {
      assertPositiveInt('batch size', n);
      assertOneOf('split', split, SPLITS);
      assertNonNegativeInt('batch index', index);
      let rows: number[];
      if (split === 'train') {
        const perEpoch = Math.floor(sizes.train / n);
        if (perEpoch === 0) {
          throw new AttentionError('INVALID_CONFIG', `batch size ${n} is larger than the training set (${sizes.train})`);
        }
        const epoch = Math.floor(index / perEpoch);
        const order = Array.from({length: sizes.train}, (_, i) => i);
        const next = uniform(batchSeed(seed, epoch));
        for (let i = order.length - 1; i > 0; i--) { // Fisher-Yates
          const j = Math.min(i, Math.floor(next() * (i + 1)));
          [order[i], order[j]] = [order[j], order[i]];
        }
        const at = (index % perEpoch) * n;
        rows = order.slice(at, at + n);
      } else {
        if ((index + 1) * n > sizes[split]) {
          throw new AttentionError('INVALID_CONFIG', `batch ${index} of ${n} examples goes past the ${split} split ` +
            `(${sizes[split]} examples)`);
        }
        rows = Array.from({length: n}, (_, i) => index * n + i);
      }
      const positions = new Float32Array(n * N * 3);
      const velocities = new Float32Array(n * N * 3);
      const charges = new Float32Array(n * N);
      const target = new Float32Array(n * N * 3);
      rows.forEach((row, r) => {
        const e = example(split, row);
        positions.set(e.positions, r * N * 3);
        velocities.set(e.velocities, r * N * 3);
        charges.set(e.charges, r * N);
        target.set(e.target, r * N * 3);
      });
      return {inputs: new Int32Array(0), targets: new Int32Array(0), weights: new Float32Array(0), n, L: N,
        values: {positions, velocities, charges, target}};
    },
  };
}

/** Mean squared error of predictions [n, N, 3] against targets, over every coordinate (PyTorch's MSELoss). */
export function meanSquaredError(predicted: ArrayLike<number>, target: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < target.length; k++) s += (predicted[k] - target[k]) ** 2;
  return s / target.length;
}

/**
 * The test MSE of answers without a model, on `split` (default 'test'): no motion (x), the
 * straight line x + v dt over the 1,000 steps (dt = 1), and the paper's "Linear" row, the
 * line x + v t with the one t that fits the training set best (least squares, as training the
 * authors' Linear_dynamics would find it). Also returns that t.
 */
export function nbodyBaselines(task: NBodyTask, split: Split = 'test'): {noMotion: number; straightLine: number;
  fittedLine: number; fittedTime: number;} {
  let num = 0, den = 0;
  for (let i = 0; i < task.sizes.train; i++) {
    const e = task.example('train', i);
    for (let k = 0; k < e.target.length; k++) {
      num += (e.target[k] - e.positions[k]) * e.velocities[k];
      den += e.velocities[k] ** 2;
    }
  }
  const t = num / den;
  const horizon = (NBODY_SIMULATION.targetSample - NBODY_SIMULATION.inputSample) * NBODY_SIMULATION.sampleEvery *
    NBODY_SIMULATION.dt;
  const sums = {noMotion: 0, straightLine: 0, fittedLine: 0};
  let count = 0;
  for (let i = 0; i < task.sizes[split]; i++) {
    const e = task.example(split, i);
    for (let k = 0; k < e.target.length; k++) {
      sums.noMotion += (e.positions[k] - e.target[k]) ** 2;
      sums.straightLine += (e.positions[k] + horizon * e.velocities[k] - e.target[k]) ** 2;
      sums.fittedLine += (e.positions[k] + t * e.velocities[k] - e.target[k]) ** 2;
    }
    count += e.target.length;
  }
  return {noMotion: sums.noMotion / count, straightLine: sums.straightLine / count, fittedLine: sums.fittedLine / count,
    fittedTime: t};
}
