/**
 * Two uses of tfjs's gradient tape that its API does not offer: a gradient taken inside a
 * gradient function (a score mod's, in flexAttention's backward), and work kept off the tape
 * while a gradient is being recorded (building a block mask inside a training step), whose
 * intermediates the tape would otherwise hold until the backward pass ends. Both reach into
 * the engine's state (tfjs 4.x: `state.activeTape`, `state.gradientDepth`).
 */
import * as tf from '@tensorflow/tfjs';

interface TapeState {gradientDepth: number; activeTape: unknown[] | null}

function tapeState(): TapeState {
  return (tf.engine() as unknown as {state: TapeState}).state;
}

/**
 * The gradients of f's result (with cotangent dy) for xs, null where xs[i] does not reach it,
 * during another backward pass: tfjs's engine keeps one tape, which a gradient taken inside a
 * gradient function would replace and drop (its saved tensors then leak and the outer pass
 * fails), so the outer tape is set aside while the inner one runs and frees its own tensors.
 */
export function innerGradients(f: () => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): (tf.Tensor | null)[] {
  const state = tapeState();
  const outer = state.gradientDepth === 0 ? state.activeTape : null;
  if (outer != null) state.activeTape = null;
  try {
    return tf.engine().gradients(f, xs, dy as never, true).grads.map((g) => g ?? null);
  } finally {
    if (outer != null) state.activeTape = outer;
  }
}

/**
 * f() with nothing recorded on the gradient tape: for work that no gradient flows through
 * (index arithmetic, masks), so the tape keeps none of its tensors alive.
 */
export function untaped<T>(f: () => T): T {
  const state = tapeState();
  const depth = state.gradientDepth;
  state.gradientDepth = 0;
  try {
    return f();
  } finally {
    state.gradientDepth = depth;
  }
}
