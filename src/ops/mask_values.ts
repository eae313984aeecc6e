/**
 * The built-in mask mods in float form (internal): 1 where a key is visible, else 0, computed
 * with float32 arithmetic on differences of positions (step, clip, products). createBlockMask
 * and the flex engine evaluate a mod in this form where it has one (flex_mods.ts
 * maskValuesOf); calling the mod still gives its bool tensor. On wasm every comparison and
 * logical op is a scalar loop: over 10^6 values Equal took 13 ms and LogicalAnd 10, against
 * 0.7 for a subtraction and 0.7 for Step, so a packed training step spent most of its block
 * masks' time there.
 */
import * as tf from '@tensorflow/tfjs';
import {MaskMod, ModContext} from './flex_types';

/** A mask mod's float form: float32 0/1 broadcastable to the tile, as the mod's own result. */
export type MaskValues =
  (b: tf.Tensor, h: tf.Tensor, qIdx: tf.Tensor, kvIdx: tf.Tensor, context: ModContext) => tf.Tensor;

const VALUES = new WeakMap<MaskMod, MaskValues>();

/** Gives `mod` its float form; returns the mod. */
export function withMaskValues(mod: MaskMod, values: MaskValues): MaskMod {
  VALUES.set(mod, values);
  return mod;
}

/** The float form of `mod`, when it has one. */
export function maskValuesFunction(mod: MaskMod): MaskValues | undefined {
  return VALUES.get(mod);
}

/** 1 where x > 0, else 0 (float32). */
export function positive(x: tf.Tensor): tf.Tensor {
  return tf.step(x);
}
