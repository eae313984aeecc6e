/**
 * flexAttention's path through the wasm backend's fused kernels (kernels/wasm_flex.ts): taken
 * for a block mask with kept tiles and no score mod (a score mod is differentiated by tfjs's
 * autograd, which only the tf-op engine of flex_engine.ts runs). The tile lists the kernels
 * read are made here from the block mask: for each (batch entry, head) pair of the mask, each
 * query block's visible key blocks in order, and each key block's query blocks.
 */
import * as tf from '@tensorflow/tfjs';
import {EMPTY, PARTIAL} from './block_mask';
import {FlexPlan} from './flex_engine';
import {FLEX_BACKWARD_KERNEL, FLEX_FORWARD_KERNEL, FlexKernelAttrs, flexKernelRuns} from '../kernels/wasm_flex';

/** True when a call with this plan runs on the fused kernels. */
export function fusedFlexRuns(p: FlexPlan): boolean {
  return p.scoreMod == null && p.blockMask != null && p.blockMask.keepsTiles && flexKernelRuns();
}

/**
 * The kernels' attributes for a call: shapes, and the tile lists of its block mask, each tile
 * named by its place in tileTensors() (the order the gradient saves them in, so the backward
 * reads the same lists over its copies).
 */
export function fusedFlexAttrs(p: FlexPlan): FlexKernelAttrs {
  const bm = p.blockMask!;
  const tiles = bm.tileTensors();
  const index = new Map(tiles.map((t, x) => [t, x]));
  const [nQ, nK] = [bm.numQueryBlocks, bm.numKeyBlocks];
  // Per mask pair and outer block, the inner blocks not empty: (inner block, tile or -1) entries.
  type Tile = (o: number, n: number) => [number, number];
  const lists = (outer: number, inner: number, tile: Tile) => {
    const starts = [0];
    const entries: number[] = [];
    for (let b = 0; b < bm.batch; b++) {
      for (let h = 0; h < bm.heads; h++) {
        for (let o = 0; o < outer; o++) {
          for (let n = 0; n < inner; n++) {
            const [i, j] = tile(o, n);
            const state = bm.state(b, h, i, j);
            if (state !== EMPTY) entries.push(n, state === PARTIAL ? index.get(bm.tileMask(b, h, i, j)!)! : -1);
          }
          starts.push(entries.length / 2);
        }
      }
    }
    return {starts, entries};
  };
  const rows = lists(nQ, nK, (i, j) => [i, j]);
  const cols = lists(nK, nQ, (j, i) => [i, j]);
  const {B, H, G, T, S, D, Dv, scale} = p;
  return {B, H, G, T, S, D, Dv, scale, bq: bm.queryBlockSize, bk: bm.keyBlockSize, maskBatch: bm.batch,
    maskHeads: bm.heads, tiles: tiles.length, rowStarts: rows.starts, rowEntries: rows.entries,
    colStarts: cols.starts, colEntries: cols.entries};
}

function tileInputs(tiles: readonly tf.Tensor[]): Record<string, tf.Tensor> {
  return Object.fromEntries(tiles.map((t, x) => [`t${x}`, t]));
}

/** The output [B, H, T, Dv] and each row's logsumexp [B*H, T] (-Infinity for a row with no key). */
export function fusedFlexForward(attrs: FlexKernelAttrs, tiles: readonly tf.Tensor[], q: tf.Tensor, k: tf.Tensor,
                                 v: tf.Tensor): [tf.Tensor, tf.Tensor] {
  const [o, lse] = tf.engine().runKernel(FLEX_FORWARD_KERNEL, {q, k, v, ...tileInputs(tiles)},
    attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
  const O = tf.reshape(o, [attrs.B, attrs.H, attrs.T, attrs.Dv]);
  o.dispose();
  return [O, lse];
}

/**
 * [dq, dk, dv] from dO [B, H, T, Dv], the logsumexp's gradient (any shape of B*H*T values, or
 * null), the saved q, k, v, O, lse and the saved copies of the tiles the forward read.
 */
export function fusedFlexBackward(attrs: FlexKernelAttrs, tiles: readonly tf.Tensor[], dO: tf.Tensor,
                                  dLse: tf.Tensor | null, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, O: tf.Tensor,
                                  lse: tf.Tensor): tf.Tensor[] {
  const inputs = {q, k, v, o: O, lse, dy: dO, ...(dLse != null ? {dLse} : {}), ...tileInputs(tiles)};
  const [dq, dk, dv] = tf.engine().runKernel(FLEX_BACKWARD_KERNEL, inputs,
    attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
  const {B, H, G, T, S, D, Dv} = attrs;
  const out = [tf.reshape(dq, [B, H, T, D]), tf.reshape(dk, [B, G, S, D]), tf.reshape(dv, [B, G, S, Dv])];
  tf.dispose([dq, dk, dv]);
  return out;
}
