/**
 * flexAttention: exact attention whose mask and scores are functions (PyTorch's
 * flex_attention, He et al. 2024, for tfjs). A block mask (createBlockMask) says which tiles a
 * mask mod leaves empty (never computed, forward or backward), full (no mask applied) or partial
 * (the mod applied); a score mod changes every computed score and is differentiated with the
 * rest. The work is flex_engine.ts's: no T x S tensor is formed in either pass.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {assertBoolean, checkArgNames, ForeignName} from '../core/validate';
import {noProbabilities} from '../core/arguments';
import {assertFits, attentionDims, AttentionDims, isEmptyAttention, attentionScale} from './heads';
import {BlockMask} from './block_mask';
import {ScoreMod} from './flex_types';
import {DEFAULT_BLOCK_SIZE, FLASH_TILE_SCORES} from './flash';
import {FlexPlan, flexBackward, flexForward} from './flex_engine';
import {fusedFlexAttrs, fusedFlexBackward, fusedFlexForward, fusedFlexRuns} from './flex_native';
import {zerosWithZeroGrads} from './zeros';

export interface FlexOptions {
  /** score(s, b, h, qIdx, kvIdx, context) -> new score, on every computed tile (see ScoreMod). */
  scoreMod?: ScoreMod | null;
  /** From createBlockMask: which tiles are computed and where the mask mod applies. Default: every key visible. */
  blockMask?: BlockMask | null;
  /** Multiplies q k^T before the score mod. Default 1 / sqrt(D). */
  scale?: number;
  /** Also return each row's logsumexp [B, H, T] (-Infinity for a row with no key). Default false. */
  returnLse?: boolean;
}

/** The option names flexAttention takes. */
export const FLEX_OPTIONS = ['scoreMod', 'blockMask', 'scale', 'returnLse'] as const;

const FLEX_NAMES: Readonly<Record<string, ForeignName>> = {
  ...noProbabilities('flexAttention'),
  mask: {code: 'INVALID_CONFIG', inert: (v) => v == null,
    advice: 'give a blockMask: createBlockMask(maskMod, B, H, T, S) with the mask as a mask mod'},
  maskMod: {code: 'INVALID_CONFIG', advice: 'give blockMask: createBlockMask(maskMod, B, H, T, S)'},
  causal: {code: 'INVALID_CONFIG', inert: (v) => v == null || v === false,
    advice: 'give blockMask: createBlockMask(causalMask(), B, H, T, S)'},
  blockSize: {code: 'INVALID_CONFIG', advice: 'blocks are the block mask\'s: createBlockMask(..., {blockSize})'},
  enableGqa: {code: 'INVALID_CONFIG', inert: (v) => v == null || v === true,
    advice: 'grouped-query attention is automatic: give k and v G heads, G dividing the H heads of q'},
};

/** The output with each row's logsumexp. */
export interface FlexWithLse {
  /** [B, H, T, Dv] */
  output: tf.Tensor4D;
  /** Shape [B, H, T]: log sum_j exp(score_ij) over the keys row i sees, -Infinity where it sees none. */
  lse: tf.Tensor3D;
}

/**
 * Attention over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] (G divides H; query head h
 * reads key/value head floor(h / (H / G))) with scores score_ij = scoreMod(scale * q_i.k_j, ...)
 * and keys limited to those the block mask's mask mod allows. A query row with no key gives
 * zeros. Gradients for q, k, v and the tensors the score mod declares (`capturing`).
 *
 * Returns [B, H, T, Dv], or `{output, lse}` with `returnLse`.
 */
export function flexAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor,
                              options: FlexOptions & {returnLse: true}): FlexWithLse;
export function flexAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, options?: FlexOptions): tf.Tensor4D;
export function flexAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor,
                              options: FlexOptions = {}): tf.Tensor4D | FlexWithLse {
  options = options ?? {};
  checkArgNames('flexAttention', options, FLEX_OPTIONS, FLEX_NAMES);
  const dims = attentionDims(q, k, v);
  const {B, H, T, D, Dv} = dims;
  const scale = attentionScale(options.scale, D);
  const returnLse = options.returnLse ?? false;
  assertBoolean('returnLse', returnLse);
  const scoreMod = options.scoreMod ?? null;
  if (scoreMod != null && typeof scoreMod !== 'function') {
    throw new AttentionError('INVALID_CONFIG', `scoreMod must be a function, received ${show(scoreMod)}`);
  }
  const blockMask = options.blockMask ?? null;
  checkBlockMask(blockMask, dims);
  const caps = (scoreMod?.tensors ?? []).filter((t) => t.dtype === 'float32');

  if (isEmptyAttention(dims)) {
    const output = zerosWithZeroGrads([B, H, T, Dv], [q, k, v, ...caps]) as tf.Tensor4D;
    return returnLse ? {output, lse: tf.fill([B, H, T], -Infinity) as tf.Tensor3D} : output;
  }
  const plan = flexPlan(dims, scale, blockMask, scoreMod);
  assertFits('flexAttention', 'the scores of a tile', [B * H, plan.bq, plan.maxRun]);
  // On the fused kernels: their tile lists, made once for the forward and the backward.
  const fused = fusedFlexRuns(plan) ? fusedFlexAttrs(plan) : null;
  // Whether the block mask kept its tiles at the forward (the backward then reads the saved ones, even none).
  let keptTiles = false;
  const run = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [qq, kk, vv] = args as tf.Tensor[];
    // Saved: the row statistics (the fused kernels': the logsumexp alone), and the block mask's
    // kept tiles, which the backward reads even once the caller disposed the mask.
    let O: tf.Tensor;
    let lse: tf.Tensor | undefined;
    if (fused != null) {
      const tiles = blockMask!.tileTensors();
      const [o, rowLse] = fusedFlexForward(fused, tiles, qq, kk, vv);
      O = o;
      save([qq, kk, vv, O, rowLse, ...tiles]);
      if (returnLse) lse = rowLse;
    } else {
      const [o, M, LL, l] = flexForward(plan, qq, kk, vv, returnLse);
      O = o;
      lse = l;
      keptTiles = blockMask?.keepsTiles ?? false;
      save([qq, kk, vv, O, M, LL, ...(blockMask?.tileTensors() ?? [])]);
    }
    // One output (customGrad's rule): the logsumexp rides along as a last channel.
    const value = lse == null ? O : tf.tidy(() => tf.concat([O, tf.reshape(lse!, [B, H, T, 1])], 3));
    if (lse != null) tf.dispose([O, lse]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dO = returnLse ? tf.slice(dy, [0, 0, 0, 0], [B, H, T, Dv]) : dy;
        const dLse = returnLse ? tf.reshape(tf.slice(dy, [0, 0, 0, Dv], [B, H, T, 1]), [B * H, T, 1]) : null;
        let grads: tf.Tensor[];
        if (fused != null) {
          const [sq, sk, sv, sO, sLse, ...tiles] = saved;
          grads = fusedFlexBackward(fused, tiles, dO, dLse, sq, sk, sv, sO, sLse);
        } else {
          const [sq, sk, sv, sO, sM, sLL, ...tiles] = saved;
          const backPlan = blockMask == null ? plan : {...plan, blockMask: blockMask.withTiles(tiles, keptTiles)};
          grads = flexBackward(backPlan, dO, dLse, sq, sk, sv, sO, sM, sLL);
        }
        if (returnLse) tf.dispose([dO, dLse!]);
        // Tensors the mod declares that are not float32 (indices) are no inputs.
        const all = scoreMod?.tensors ?? [];
        const capGrads = grads.slice(3).filter((_, c) => all[c].dtype === 'float32');
        tf.dispose(grads.slice(3).filter((_, c) => all[c].dtype !== 'float32'));
        return [...grads.slice(0, 3), ...capGrads];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  const out = run(q, k, v, ...caps);
  if (!returnLse) return out as tf.Tensor4D;
  const parts = tf.tidy(() => ({
    output: tf.slice(out, [0, 0, 0, 0], [B, H, T, Dv]) as tf.Tensor4D,
    lse: tf.reshape(tf.slice(out, [0, 0, 0, Dv], [B, H, T, 1]), [B, H, T]) as tf.Tensor3D,
  }));
  out.dispose();
  return parts;
}

/** Throws unless blockMask is null or a BlockMask built for these dims (B and H may be 1 there). */
function checkBlockMask(blockMask: unknown, {B, H, T, S}: AttentionDims): void {
  if (blockMask == null) return;
  if (!(blockMask instanceof BlockMask)) {
    throw new AttentionError('INVALID_CONFIG',
      `blockMask must be a BlockMask from createBlockMask(maskMod, B, H, T, S), received ${show(blockMask)}`);
  }
  const m = blockMask;
  if ((m.batch !== 1 && m.batch !== B) || (m.heads !== 1 && m.heads !== H) || m.queryLength !== T ||
      m.keyLength !== S) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `the block mask was built for [B, H, T, S] = ${show([m.batch, m.heads, m.queryLength, m.keyLength])}, ` +
      `the attention is ${show([B, H, T, S])} (B and H may be 1 in the mask)`);
  }
}

/**
 * The tiles of a flex call: the block mask's blocks (query blocks of its size, runs of up to
 * FLASH_TILE_SCORES / (R * bq) keys), or without one flash's default blocks.
 */
function flexPlan(dims: AttentionDims, scale: number, blockMask: BlockMask | null,
                  scoreMod: ScoreMod | null): FlexPlan {
  const {T, S, R} = dims;
  const bq = Math.min(blockMask?.queryBlockSize ?? DEFAULT_BLOCK_SIZE, T);
  const span = Math.max(bq, Math.floor(FLASH_TILE_SCORES / (R * bq)));
  const bk = Math.min(blockMask?.keyBlockSize ?? span, S);
  const maxRun = Math.min(S, Math.max(bk, Math.floor(span / bk) * bk));
  return {...dims, scale, bq, bk, maxRun, blockMask, scoreMod};
}
