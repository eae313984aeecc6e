// bench --suite step: one training step of a model, timed and counted, with the library's
// kernels and gradients and with tfjs's own. Small here (the layernorm row, a 128^2 matMul);
// the real figures come from `tfjs-attention bench --suite step` (README, "Training steps").
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {BackendChoice} from '../../src/kernels/backend';
import {runStepBench, summarizeSteps} from '../../src/bench/step';
import {cli} from '../support/cli_helper';
import {BACKEND, title} from '../support/helpers';

// On wasm only: the suite measures what the library's kernels do there, and on cpu tfjs's
// per-repetition Tile gradient alone takes about a minute of the whole test run.
(BACKEND === 'wasm' ? describe : describe.skip)(title('bench --suite step'), () => {
  let out: string;
  beforeAll(() => { out = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-step-')); });
  afterAll(() => fs.rmSync(out, {recursive: true, force: true}));

  test('the layernorm row both ways: counts, model FLOPs and their rate, peak memory; tfjs\'s gradients take more kernels',
    async () => {
      const tensors = tf.memory().numTensors;
      const report = await runStepBench({rows: ['layernorm'], kernels: ['library', 'tfjs'], backend: BACKEND as BackendChoice, reps: 1,
        warmup: 1, matmulSize: 128, outDir: out});
      expect(tf.memory().numTensors).toBe(tensors);
      expect(report.rows.map((r) => [r.row, r.kernels, r.error])).toEqual([['layernorm', 'library', undefined],
        ['layernorm', 'tfjs', undefined]]);
      const [lib, own] = report.rows;
      // 4 Dense layers of 128 x 128 on 8 x 128 tokens: 6 x tokens x weights.
      expect(lib.flops).toBe(6 * 8 * 128 * 4 * 128 * 128);
      for (const r of report.rows) {
        expect(r.gflops).toBeCloseTo(r.flops! / r.msMedian! / 1e6, 6);
        // Against the matMul timed beside the row's own steps.
        expect(r.matmulGflops).toBeGreaterThan(0);
        expect(r.ofMatMul).toBeCloseTo(r.gflops! / r.matmulGflops!, 6);
        expect(r.peakBytes).toBeGreaterThan(4 * (4 * 128 * 128) * 3); // the weights and Adam's two moments at least
        expect(r.runs).toBe(1);
      }
      // tfjs's Tile gradient: a slice and an add per repetition of each LayerNormalization's tiles.
      expect(own.kernelsPerStep!).toBeGreaterThan(10 * lib.kernelsPerStep!);
      expect(summarizeSteps(report.rows)[0]).toMatch(/^layernorm: \d+\.\d\dx faster with the library's kernels \(\d+ -> \d+ kernels/);
      expect(fs.readdirSync(out).sort()).toEqual(['step.json', 'step.md']);
      expect(JSON.parse(fs.readFileSync(path.join(out, 'step.json'), 'utf8')).rows).toHaveLength(2);
      expect(fs.readFileSync(path.join(out, 'step.md'), 'utf8')).toMatch(/\| layernorm +\| tfjs +\|/);
    });

  test('the CLI refuses rows and kernel settings the suite does not have', async () => {
    const wrong = await cli('bench', '--suite', 'step', '--only', 'sdpa', '--backend', BACKEND, '--out', out);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/--suite step rows are transformer-small, transformer-large, mlp, layernorm, transformer-options; received sdpa/);
    const kernels = await cli('bench', '--suite', 'step', '--kernels', 'mine', '--backend', BACKEND, '--out', out);
    expect(kernels.code).toBe(2);
    expect(kernels.stderr).toMatch(/Unknown kernel setting 'mine'; choose from library, tfjs/);
  });
});
