/**
 * Adam with each variable's update as one kernel: tfjs 4.22's AdamOptimizer runs fourteen
 * kernels per variable and step (products by the betas, sums, square, divisions, square
 * root), 800 of a small transformer's 2,100 kernels per step, each a pass over the variable
 * on one thread. FusedAdamOptimizer is that optimizer with one pass per variable where the
 * backend has the library's ADAM kernel (wasm and cpu, library_kernels.ts) and tfjs's own
 * update elsewhere.
 *
 * It is a tf.AdamOptimizer: the same moments under the same names (`<variable>/m`, `/v`),
 * the same bias-correction variables, getWeights/setWeights and getConfig, so a checkpoint
 * of either resumes in the other and `model.compile({optimizer})` takes it. The update is
 * tfjs's arithmetic in float64 rounded once to float32, so it differs from tf.train.adam's
 * by float32 rounding only (test/kernels/library_kernels.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {ADAM, AdamAttrs, hasLibraryKernel} from '../kernels/library_kernels';
import {assertPositiveNumber, assertRate} from '../core/validate';

/** The parts of tfjs 4.22's AdamOptimizer the fused update reads and keeps (typed private there). */
interface AdamState {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  accumulatedFirstMoment: ({originalName: string; variable: tf.Variable} | undefined)[];
  accumulatedSecondMoment: ({originalName: string; variable: tf.Variable} | undefined)[];
}

type Gradients = Parameters<tf.AdamOptimizer['applyGradients']>[0];

export class FusedAdamOptimizer extends tf.AdamOptimizer {
  /** As tf.train.adam's; learningRate > 0, betas in [0, 1), epsilon > 0 (default: the backend's). */
  constructor(learningRate: number, beta1 = 0.9, beta2 = 0.999, epsilon?: number) {
    assertPositiveNumber('learningRate', learningRate);
    assertRate('beta1', beta1);
    assertRate('beta2', beta2);
    if (epsilon != null) assertPositiveNumber('epsilon', epsilon);
    super(learningRate, beta1, beta2, epsilon);
  }

  override applyGradients(variableGradients: Gradients): void {
    const self = this as unknown as AdamState;
    if (!hasLibraryKernel(ADAM) || !(self.accBeta1 instanceof tf.Variable) ||
        !Array.isArray(self.accumulatedFirstMoment)) {
      super.applyGradients(variableGradients);
      return;
    }
    const list = Array.isArray(variableGradients) ? variableGradients : null;
    const names = list != null ? list.map((v) => v.name) : Object.keys(variableGradients);
    const variables = tf.engine().registeredVariables;
    const gradientOf = (name: string, i: number) =>
      (list != null ? list[i].tensor : (variableGradients as tf.NamedTensorMap)[name]);
    // Checked before any update, so a refused call changes nothing.
    names.forEach((name, i) => {
      const [value, gradient] = [variables[name], gradientOf(name, i)];
      if (gradient != null && (value?.dtype !== 'float32' || gradient.dtype !== 'float32')) {
        throw new AttentionError('UNSUPPORTED', `FusedAdamOptimizer updates float32 variables, received ${name} ` +
          `of ${value?.dtype ?? 'no registered variable'} with a ${gradient.dtype} gradient`);
      }
      if (gradient != null && !tf.util.arraysEqual(value.shape, gradient.shape)) {
        throw new AttentionError('DIMENSION_MISMATCH', `FusedAdamOptimizer: the gradient of ${name} must have its shape ` +
          `${show(value.shape)}, received ${show(gradient.shape)}`);
      }
    });
    tf.tidy(() => {
      const attrs: AdamAttrs = {beta1: self.beta1, beta2: self.beta2, epsilon: self.epsilon,
        learningRate: self.learningRate};
      names.forEach((name, i) => {
        const value = variables[name];
        const moment = (suffix: string) => ({originalName: `${name}/${suffix}`,
          variable: tf.tidy(() => tf.zerosLike(value).variable(false))});
        self.accumulatedFirstMoment[i] ??= moment('m');
        self.accumulatedSecondMoment[i] ??= moment('v');
        const gradient = gradientOf(name, i);
        if (gradient == null) return;
        const m = self.accumulatedFirstMoment[i]!.variable;
        const v = self.accumulatedSecondMoment[i]!.variable;
        const [w1, m1, v1] = tf.engine().runKernel(ADAM, {value, gradient, m, v, accBeta1: self.accBeta1,
          accBeta2: self.accBeta2}, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
        m.assign(m1);
        v.assign(v1);
        value.assign(w1);
      });
      self.accBeta1.assign(tf.mul(self.accBeta1, self.beta1));
      self.accBeta2.assign(tf.mul(self.accBeta2, self.beta2));
    });
    this.incrementIterations();
  }
}

/** A FusedAdamOptimizer (arguments as tf.train.adam's). */
export function fusedAdam(learningRate = 0.001, beta1 = 0.9, beta2 = 0.999, epsilon?: number): FusedAdamOptimizer {
  return new FusedAdamOptimizer(learningRate, beta1, beta2, epsilon);
}
