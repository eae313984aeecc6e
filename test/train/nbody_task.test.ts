// The n-body task: the simulator equals the EGNN authors' generator run from the same initial
// states (a fixture computed with their numpy code), conserves momentum, and gives the paper's
// "Linear" baseline; batches are deterministic, go through the training set once per epoch,
// read validation and test in order, and refuse what does not fit; bad options are refused.
import * as fs from 'fs';
import * as path from 'path';
import {
  initialState, makeNBodyTask, meanSquaredError, NBODY_SIMULATION, nbodyBaselines, simulateCharged,
} from '../../src/train/nbody_task';
import {expectError, title} from '../support/helpers';

interface ReferenceCase {
  seed: number; charges: number[]; positions0: number[]; velocities0: number[];
  positions: number[]; velocities: number[]; target: number[];
}
const REFERENCE = JSON.parse(fs.readFileSync(path.join(__dirname, '../fixtures/nbody_reference.json'), 'utf8')) as
  {cases: ReferenceCase[]};

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k] - b[k]));
  return m;
}

describe(title('n-body task'), () => {
  test.each(REFERENCE.cases.map((c) => [c.seed, c] as const))(
    'simulation == the authors\' ChargedParticlesSim from the same initial state (seed %i), within 1e-9', (seed, c) => {
      const state = initialState(5, seed);
      expect(Array.from(state.charges)).toEqual(c.charges);
      expect(maxAbsDiff(state.positions, c.positions0)).toBeLessThan(1e-12);
      expect(maxAbsDiff(state.velocities, c.velocities0)).toBeLessThan(1e-12);
      const e = simulateCharged(state);
      expect(maxAbsDiff(e.positions, c.positions)).toBeLessThan(1e-9);
      expect(maxAbsDiff(e.velocities, c.velocities)).toBeLessThan(1e-9);
      expect(maxAbsDiff(e.target, c.target)).toBeLessThan(1e-9);
      expect(maxAbsDiff(state.positions, c.positions0)).toBe(0); // the initial state is not changed
    });

  test('initial states: charges +-1, speeds 0.5; total momentum is conserved while no force is clipped', () => {
    let charges = 0;
    for (let seed = 10; seed < 40; seed++) {
      const s = initialState(5, seed);
      s.charges.forEach((q) => expect(Math.abs(q)).toBe(1));
      charges += s.charges.reduce((a, q) => a + q, 0);
      for (let i = 0; i < 5; i++) {
        expect(Math.hypot(s.velocities[i * 3], s.velocities[i * 3 + 1], s.velocities[i * 3 + 2])).toBeCloseTo(0.5, 12);
      }
    }
    expect(Math.abs(charges)).toBeLessThan(40); // 150 fair coin flips of +-1
    // Momentum: unit masses, pairwise opposite forces. Checked where no pair comes close enough to be clipped.
    let checked = 0;
    for (let seed = 10; seed < 40 && checked < 5; seed++) {
      const e = simulateCharged(initialState(5, seed));
      const momentum = (v: Float64Array) => [0, 1, 2].map((a) => [0, 1, 2, 3, 4].reduce((s, i) => s + v[i * 3 + a], 0));
      const p0 = momentum(initialState(5, seed).velocities);
      const p = momentum(e.velocities);
      if (maxAbsDiff(p, p0) < 1e-6) checked++;
    }
    expect(checked).toBe(5);
  });

  test('the paper\'s Linear baseline: the best straight line x + v t scores ~0.08 (paper: 0.0819)', () => {
    const task = makeNBodyTask({trainExamples: 100, validationExamples: 10, testExamples: 100});
    const b = nbodyBaselines(task);
    expect(b.fittedLine).toBeGreaterThan(0.06);
    expect(b.fittedLine).toBeLessThan(0.11); // 100 trajectories: a few per cent of sampling error
    expect(b.fittedTime).toBeGreaterThan(0.5); // the charges' pull bends paths: less than the 1 time unit
    expect(b.fittedTime).toBeLessThan(0.9);
    expect(b.straightLine).toBeGreaterThan(b.fittedLine);
    expect(b.noMotion).toBeGreaterThan(b.straightLine);
    // The horizon: 1,000 steps of 0.001.
    expect((NBODY_SIMULATION.targetSample - NBODY_SIMULATION.inputSample) * NBODY_SIMULATION.sampleEvery *
      NBODY_SIMULATION.dt).toBeCloseTo(1, 12);
  });

  test('batches: deterministic; an epoch visits every training example once; validation and test in order', () => {
    const task = makeNBodyTask({trainExamples: 10, validationExamples: 6, testExamples: 4});
    expect(task.seqLength).toBe(5);
    const b = task.batch(3, 7, 0);
    expect(b.n).toBe(3);
    expect(b.L).toBe(5);
    expect(b.values!.positions).toHaveLength(3 * 5 * 3);
    expect(b.values!.charges).toHaveLength(3 * 5);
    expect(task.batch(3, 7, 0).values).toEqual(b.values);
    // 10 examples, batches of 3: 3 batches an epoch (the last partial one dropped), each row once.
    const firstOf = (batch: ReturnType<typeof task.batch>) => Array.from(batch.values!.target.subarray(0, 15));
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const batch = task.batch(3, 7, i);
      for (let r = 0; r < 3; r++) seen.add(String(batch.values!.target[r * 15]));
    }
    expect(seen.size).toBe(9);
    expect(firstOf(task.batch(3, 7, 3))).not.toEqual(firstOf(task.batch(3, 8, 3))); // the seed shuffles
    const v = task.batch(2, 0, 1, 'validation');
    expect(Array.from(v.values!.target.subarray(0, 15))).toEqual(Array.from(task.example('validation', 2).target,
      (x) => Math.fround(x)));
    expect(task.batch(2, 99, 1, 'validation').values).toEqual(v.values); // the seed does not matter there
    expectError(() => task.batch(3, 0, 1, 'test'), 'INVALID_CONFIG', /batch 1 of 3 examples goes past the test split \(4/);
    expectError(() => task.batch(11, 0, 0), 'INVALID_CONFIG', /batch size 11 is larger than the training set \(10\)/);
    expectError(() => task.batch(2, 0, 0, 'dev' as 'test'), 'INVALID_CONFIG', /split/);
  });

  test('meanSquaredError is the mean over every coordinate', () => {
    expect(meanSquaredError([1, 2, 3, 4], [1, 0, 3, 0])).toBeCloseTo((4 + 16) / 4, 12);
  });

  test('bad options are refused with codes', () => {
    expectError(() => makeNBodyTask({particles: 1}), 'INVALID_CONFIG', /at least 2 particles/);
    expectError(() => makeNBodyTask({trainExamples: 0}), 'INVALID_CONFIG', /trainExamples/);
    expectError(() => makeNBodyTask({dataSeed: -1}), 'INVALID_CONFIG', /dataSeed/);
    expectError(() => makeNBodyTask({nodes: 5} as never), 'INVALID_CONFIG', /nodes/);
  });
});
