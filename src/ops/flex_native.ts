/**
 * flexAttention's path through the wasm backend's fused kernels (kernels/wasm_flex.ts): taken
 * for a block mask with kept tiles and no score mod (a score mod is differentiated by tfjs's
 * autograd, which only the tf-op engine of flex_engine.ts runs). The tile lists the kernels
 * read are made here from the block mask: for each (batch entry, head) pair of the mask, each
 * query block's visible key blocks in order, and each key block's query blocks.
 */
import * as tf from '@tensorflow/tfjs';
import {BlockMask, EMPTY, PARTIAL} from './block_mask';
import {FlexPlan} from './flex_engine';
import {FLEX_BACKWARD_KERNEL, FLEX_FORWARD_KERNEL, FlexKernelAttrs, flexKernelRuns} from '../kernels/wasm_flex';

/** True when a call with this plan runs on the fused kernels. */
export function fusedFlexRuns(p: FlexPlan): boolean {
  return p.scoreMod == null && p.blockMask != null && p.blockMask.keepsTiles && flexKernelRuns();
}

/** The kernels' attributes: shapes and the tile lists of `bm`, tiles named by their index in `tiles`. */
function kernelAttrs(p: FlexPlan, bm: BlockMask, tiles: readonly tf.Tensor[]): FlexKernelAttrs {
  const index = new Map(tiles.map((t, x) => [t, x]));
  const [nQ, nK] = [bm.numQueryBlocks, bm.numKeyBlocks];
  const lists = {rowStarts: [0], rowEntries: [] as number[], colStarts: [0], colEntries: [] as number[]};
  const tileOf = (b: number, h: number, i: number, j: number) =>
    (bm.state(b, h, i, j) === PARTIAL ? index.get(bm.tileMask(b, h, i, j)!)! : -1);
  for (let b = 0; b < bm.batch; b++) {
    for (let h = 0; h < bm.heads; h++) {
      for (let i = 0; i < nQ; i++) {
        for (let j = 0; j < nK; j++) if (bm.state(b, h, i, j) !== EMPTY) lists.rowEntries.push(j, tileOf(b, h, i, j));
        lists.rowStarts.push(lists.rowEntries.length / 2);
      }
    }
  }
  for (let b = 0; b < bm.batch; b++) {
    for (let h = 0; h < bm.heads; h++) {
      for (let j = 0; j < nK; j++) {
        for (let i = 0; i < nQ; i++) if (bm.state(b, h, i, j) !== EMPTY) lists.colEntries.push(i, tileOf(b, h, i, j));
        lists.colStarts.push(lists.colEntries.length / 2);
      }
    }
  }
  const {B, H, G, T, S, D, Dv, scale} = p;
  return {B, H, G, T, S, D, Dv, scale, bq: bm.queryBlockSize, bk: bm.keyBlockSize, maskBatch: bm.batch,
    maskHeads: bm.heads, tiles: tiles.length, ...lists};
}

function tileInputs(tiles: readonly tf.Tensor[]): Record<string, tf.Tensor> {
  return Object.fromEntries(tiles.map((t, x) => [`t${x}`, t]));
}

/** The output [B, H, T, Dv] and each row's logsumexp [B*H, T] (-Infinity for a row with no key). */
export function fusedFlexForward(p: FlexPlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor): [tf.Tensor, tf.Tensor] {
  const bm = p.blockMask!;
  const tiles = bm.tileTensors();
  const attrs = kernelAttrs(p, bm, tiles);
  const [o, lse] = tf.engine().runKernel(FLEX_FORWARD_KERNEL, {q, k, v, ...tileInputs(tiles)},
    attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
  const O = tf.reshape(o, [p.B, p.H, p.T, p.Dv]);
  o.dispose();
  return [O, lse];
}

/**
 * [dq, dk, dv] from dO [B, H, T, Dv], the logsumexp's gradient (any shape of B*H*T values, or
 * null), the saved q, k, v, O, lse and the tiles the block mask (built over those tiles) reads.
 */
export function fusedFlexBackward(p: FlexPlan, dO: tf.Tensor, dLse: tf.Tensor | null, q: tf.Tensor, k: tf.Tensor,
                                  v: tf.Tensor, O: tf.Tensor, lse: tf.Tensor,
                                  tiles: readonly tf.Tensor[]): tf.Tensor[] {
  const attrs = kernelAttrs(p, p.blockMask!, tiles);
  const inputs = {q, k, v, o: O, lse, dy: dO, ...(dLse != null ? {dLse} : {}), ...tileInputs(tiles)};
  const [dq, dk, dv] = tf.engine().runKernel(FLEX_BACKWARD_KERNEL, inputs,
    attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
  const {B, H, G, T, S, D, Dv} = p;
  const out = [tf.reshape(dq, [B, H, T, D]), tf.reshape(dk, [B, G, S, D]), tf.reshape(dv, [B, G, S, Dv])];
  tf.dispose([dq, dk, dv]);
  return out;
}
