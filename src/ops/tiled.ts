/**
 * Exact attention in tiles, the engine of flashAttention and of scaledDotProductAttention's
 * wasm path (FlashAttention-2's schedule, arranged for tfjs's backends).
 *
 * The forward keeps, per query row, only the output and the logsumexp (as its two parts, the
 * row max M and log l: at logits of 1e4 a float32 M + log l would lose ~1e-3 of the exponent);
 * the backward recomputes each tile's probabilities from them. So no T x S matrix is held
 * between the passes, and within a pass only a few tiles of `rows x keys` scores at a time;
 * except where the whole attention is one small tile (a short sequence: at most
 * UNIT_WORK_ELEMENTS scores), whose probabilities tiledAttention keeps for the backward.
 *
 * Work goes by units, each a range of (batch entry, key/value group) pairs: single pairs
 * where products are split into 2-D ones; on wasm as many pairs as keep their work within
 * UNIT_WORK_ELEMENTS (long sequences one pair at a time, short ones all at once); elsewhere
 * every pair, with batched products. Within a unit the R = H/G query heads of
 * the group are stacked along the rows, so one product per tile serves them all and the
 * products sum dK and dV over those heads. The small operands are transposed once per unit
 * (k, v) or per query block (q, dO), never a tile: every product is non-transposed, and a
 * query block's dQ and each key tile's dK, dV come from one pass over the tiles.
 *
 * A query block whose visible keys fit in one tile (every block of sdpa's; flash's up to
 * FLASH_TILE_SCORES) takes its probabilities from one tf.softmax of the tile, in the forward
 * and again in the backward, instead of exp(s - M - log l): on wasm the Softmax kernel is
 * several times faster than Exp (XNNPACK's vector code against a scalar loop), and such a
 * block needs no row statistics (its M and log l are returned as zeros, never read).
 *
 * Causal masking and sliding windows (query i sees keys j with |i - j| <= window, the local
 * branch of localGlobalAttention) skip the key tiles a query block cannot see, clip the tiles
 * at the edge of what it sees, and mask the rest with an additive band sliced from one band
 * built per call; rows that see no key at all (and user masks) take a multiplicative 0/1 keep
 * as well, so their probabilities are exact zeros. Key tiles are fixed (blocks of bk from key
 * 0), so a clipped tile's dK and dV are padded back to its width before they are summed; a
 * windowed block works its visible keys as one tile whose dK, dV are split among them.
 */
import * as tf from '@tensorflow/tfjs';
import {swapLast} from './matmul';
import {addMask, applyKeep, blocks, blockTiles, isOneTile, keyTiles, makeBand, queryRows, tileMask, TilePlan, tileUnits,
  unitPart} from './tile_plan';
import {concatAndDispose, disposeAfter, sliceColumns, sliceRows, unitMatMul, unitMatMulTransposeA} from './units';

/** The row max given to rows with no visible key: exp(s - M) is then 0 for every s. */
export const NO_KEYS_MAX = 1e30;

/** A query block's online softmax so far: the row max m, the row sum l and the unnormalised output acc. */
// A type, not an interface: tf.tidy returns it.
export type OnlineSoftmax = {m: tf.Tensor; l: tf.Tensor; acc: tf.Tensor};

/**
 * The online softmax after one more tile of scores s (disposed here): its probabilities
 * keep(exp(s - m')) (keep disposes its input), times the tile's values by `weigh`, in the
 * layout of acc; earlier tiles rescaled by exp(m - m').
 */
export function onlineTile(prev: OnlineSoftmax | null, s: tf.Tensor, keep: (pr: tf.Tensor) => tf.Tensor,
                           weigh: (pr: tf.Tensor) => tf.Tensor): OnlineSoftmax {
  const rowMax = tf.max(s, -1, true);
  const mNew = prev == null ? rowMax : tf.maximum(prev.m, rowMax);
  const pr = keep(disposeAfter(disposeAfter(s, (x) => tf.sub(x, mNew)), tf.exp));
  const pv = weigh(pr);
  const rowSum = tf.sum(pr, -1, true);
  if (prev == null) return {m: mNew, l: rowSum, acc: pv};
  const alpha = tf.exp(tf.sub(prev.m, mNew));
  return {m: mNew, l: tf.add(tf.mul(prev.l, alpha), rowSum), acc: tf.add(tf.mul(prev.acc, alpha), pv)};
}

/**
 * The finished online softmax, divided once at the end: the output acc / l (rows with no visible
 * key, l = 0, stay zero), the row max M (NO_KEYS_MAX for those rows), l with 1 for them, and
 * which rows saw a key.
 */
export function finishOnline({m, l, acc}: OnlineSoftmax): Record<'o' | 'M' | 'lSafe' | 'seen', tf.Tensor> {
  const seen = tf.greater(l, 0);
  const lSafe = tf.where(seen, l, tf.onesLike(l));
  return {o: tf.div(acc, lSafe), M: tf.where(seen, m, tf.fill(m.shape, NO_KEYS_MAX)), lSafe, seen};
}

/**
 * Forward over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv] and an optional float keep
 * [Bm, Hm, Tm, Sm]: the output O [B, H, T, Dv] and the logsumexp parts M, LL [B*H, T, 1];
 * with `keepProbs`, where the attention is one tile (`isOneTile`), its probabilities P
 * [nb, ng, R*T, S] as a fourth tensor, for tiledBackward.
 */
export function tiledForward(p: TilePlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, keep: tf.Tensor | null,
                             keepProbs = false): tf.Tensor[] {
  const {B, H, T, D, Dv} = p;
  const band = makeBand(p);
  const q3 = tf.reshape(q, [B * H, T, D]);
  const us = tileUnits(p);
  const qBlocks = blocks(T, p.bq);
  const withProbs = keepProbs && isOneTile(p, us, qBlocks);
  // Pieces in the order of the output: query blocks outer, units inner (so each concat joins
  // the heads of a block, then the blocks).
  const pieces = qBlocks.map(() => us.map(() => [] as tf.Tensor[]));
  us.forEach((u, ui) => {
    const kT = tf.tidy(() => swapLast(unitPart(u, k)));  // [nb, ng, D, S]
    const vU = unitPart(u, v);                            // [nb, ng, S, Dv]
    qBlocks.forEach(([t0, bq], bi) => {
      pieces[bi][ui] = tf.tidy(() => {
        const heads = u.nb * u.ng * p.R;
        const tiles = blockTiles(p, t0, bq);
        if (tiles.length === 0) {
          return [tf.zeros([heads, bq, Dv]), tf.fill([heads, bq, 1], NO_KEYS_MAX), tf.zeros([heads, bq, 1])];
        }
        const qi = tf.mul(queryRows(p, u, q3, t0, bq), p.scale); // [nb, ng, R*bq, D], scaled
        if (tiles.length === 1) {
          // All the block's keys in one tile: the probabilities in one softmax (see the file
          // comment); the backward takes the same path, so M and LL are not needed here.
          const {a: s0, n} = tiles[0];
          const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
          const s = addMask(p, unitMatMul(qi, sliceColumns(kT, s0, n)), mask.add);  // [nb, ng, R*bq, n]
          const pr = applyKeep(p, disposeAfter(s, (x) => tf.softmax(x)), mask.keep);
          const o = unitMatMul(pr, sliceRows(vU, s0, n));                             // [nb, ng, R*bq, Dv]
          return [tf.reshape(o, [heads, bq, Dv]), tf.zeros([heads, bq, 1]), tf.zeros([heads, bq, 1]),
            ...(withProbs ? [pr] : [])];
        }
        let state: OnlineSoftmax | null = null;
        for (const {a: s0, n} of tiles) {
          const next: OnlineSoftmax = tf.tidy(() => {
            const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
            const s = addMask(p, unitMatMul(qi, sliceColumns(kT, s0, n)), mask.add); // [nb, ng, R*bq, n]
            return onlineTile(state, s, (pr) => applyKeep(p, pr, mask.keep),
              (pr) => unitMatMul(pr, sliceRows(vU, s0, n)));                          // acc: [nb, ng, R*bq, Dv]
          });
          if (state != null) tf.dispose([state.m, state.l, state.acc]);
          state = next;
        }
        const {o, M, lSafe} = finishOnline(state!);
        return [tf.reshape(o, [heads, bq, Dv]), tf.reshape(M, [heads, bq, 1]),
          tf.reshape(tf.log(lSafe), [heads, bq, 1])];
      });
    });
    tf.dispose([kT, vU]);
  });
  // Each block's heads (units in order are heads in order), then the blocks along T.
  const join = (which: number) =>
    concatAndDispose(pieces.map((row) => concatAndDispose(row.map((x) => x[which]), 0)), 1);
  const probs = withProbs ? pieces[0][0][3] : undefined;
  const O = disposeAfter(join(0), (x) => tf.reshape(x, [B, H, T, Dv]));
  const M = join(1);
  const LL = join(2);
  tf.dispose([q3, ...(band != null ? [band.band] : [])]);
  return probs != null ? [O, M, LL, probs] : [O, M, LL];
}

/**
 * Backward: dq, dk, dv from dO and the saved q, k, v, O and logsumexp parts M, LL, and the
 * forward's probabilities where it kept them (tiledForward's keepProbs), else null.
 */
export function tiledBackward(p: TilePlan, dO: tf.Tensor, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, O: tf.Tensor,
                              M: tf.Tensor, LL: tf.Tensor, keep: tf.Tensor | null,
                              probs: tf.Tensor | null = null): tf.Tensor[] {
  const {B, H, G, T, S, D, Dv} = p;
  const band = makeBand(p);
  const q3 = tf.reshape(q, [B * H, T, D]);
  const dO3 = tf.reshape(dO, [B * H, T, Dv]);
  // D = rowsum(dO * O), as row-by-row products: the kernel that computes dO v^T, so where a row
  // sees one key (O = v, P = 1) dP - D is exactly 0, as the softmax's own gradient gives.
  const Dsum = tf.tidy(() => tf.reshape(tf.matMul(tf.reshape(dO3, [B * H * T, 1, Dv]),
    tf.reshape(O, [B * H * T, Dv, 1])), [B * H, T, 1]));                                    // [B*H, T, 1]
  const us = tileUnits(p);
  const qBlocks = blocks(T, p.bq);
  const dqPieces = qBlocks.map(() => us.map(() => null as tf.Tensor | null));
  const dkUnits: tf.Tensor[] = [];
  const dvUnits: tf.Tensor[] = [];
  us.forEach((u, ui) => {
    const kU = unitPart(u, k);                               // [nb, ng, S, D]
    const kT = tf.tidy(() => swapLast(kU));                  // [nb, ng, D, S]
    const vT = tf.tidy(() => swapLast(unitPart(u, v)));      // [nb, ng, Dv, S]
    const kTiles = blocks(S, p.bk);
    const dKt: (tf.Tensor | null)[] = kTiles.map(() => null); // [nb, ng, n, D] each
    const dVt: (tf.Tensor | null)[] = kTiles.map(() => null); // [nb, ng, n, Dv] each
    qBlocks.forEach(([t0, bq], bi) => {
      const heads = u.nb * u.ng * p.R;
      const tiles = blockTiles(p, t0, bq);
      if (tiles.length === 0) {
        dqPieces[bi][ui] = tf.zeros([heads, bq, D]);
        return;
      }
      const qi = tf.tidy(() => tf.mul(queryRows(p, u, q3, t0, bq), p.scale)); // [nb, ng, R*bq, D], scaled
      const dOi = queryRows(p, u, dO3, t0, bq);              // [nb, ng, R*bq, Dv]
      const Mi = queryRows(p, u, M, t0, bq);
      const LLi = queryRows(p, u, LL, t0, bq);
      const Di = queryRows(p, u, Dsum, t0, bq);
      let dQ: tf.Tensor | null = null;
      tiles.forEach(({a: s0, n}) => {
        const next = tf.tidy(() => {
          const pr = probs != null ? tf.clone(probs) : tf.tidy(() => {
            const mask = tileMask(p, u, band, keep, t0, bq, s0, n);
            const s = addMask(p, unitMatMul(qi, sliceColumns(kT, s0, n)), mask.add);
            const unkept = tiles.length === 1 ? disposeAfter(s, (x) => tf.softmax(x))
              : disposeAfter(disposeAfter(disposeAfter(s, (x) => tf.sub(x, Mi)), (x) => tf.sub(x, LLi)), tf.exp);
            return applyKeep(p, unkept, mask.keep);
          });
          // dV and dK as P^T dO and dS^T q, [n, X] per unit: on wasm at least as fast as dO^T P
          // and q^T dS (a product of many rows and few columns), with no transposes of dO or q.
          const dVpart = unitMatMulTransposeA(pr, dOi);                               // [nb, ng, n, Dv]
          const dP = unitMatMul(dOi, sliceColumns(vT, s0, n));                        // [nb, ng, R*bq, n]
          const dS = disposeAfter(disposeAfter(dP, (x) => tf.sub(x, Di)), (x) => tf.mul(pr, x));
          pr.dispose();
          const dQpart = unitMatMul(dS, sliceRows(kU, s0, n));                        // [nb, ng, R*bq, D]
          const dKpart = unitMatMulTransposeA(dS, qi);                                // [nb, ng, n, D]
          return {dV: dVpart, dK: dKpart, dQ: dQ == null ? dQpart : tf.add(dQ, dQpart)};
        });
        if (dQ != null) dQ.dispose();
        dQ = next.dQ;
        // Rows [s0, s0 + n) into the fixed key tiles they cover, each piece padded to its
        // tile's length (a bk x D copy, small beside the tile's products).
        for (const [acc, part] of [[dVt, next.dV], [dKt, next.dK]] as [(tf.Tensor | null)[], tf.Tensor][]) {
          let stored = false; // part itself became a tile's sum
          for (const t of keyTiles(p, s0, s0 + n)) {
            const whole = t.a === s0 && t.n === n;
            if (whole && t.n === t.w && acc[t.j] == null) {
              acc[t.j] = part;
              stored = true;
              continue;
            }
            const sum = tf.tidy(() => {
              const [n1, n2, , X] = part.shape as number[];
              let piece = whole ? part : tf.slice(part, [0, 0, t.a - s0, 0], [n1, n2, t.n, X]);
              if (t.n !== t.w) piece = tf.pad(piece, [[0, 0], [0, 0], [t.a - t.s0, t.s0 + t.w - t.a - t.n], [0, 0]]);
              return acc[t.j] == null ? piece : tf.add(acc[t.j]!, piece);
            });
            if (acc[t.j] != null) acc[t.j]!.dispose();
            acc[t.j] = sum;
          }
          if (!stored) part.dispose();
        }
      });
      dqPieces[bi][ui] = tf.tidy(() => tf.reshape(tf.mul(dQ!, p.scale), [heads, bq, D]));
      tf.dispose([qi, dOi, Mi, LLi, Di, dQ!]);
    });
    // The unit's dK, dV [nb, ng, S, X] from the key tiles (zeros for tiles no query saw).
    const gather = (parts: (tf.Tensor | null)[], X: number) => tf.tidy(() => {
      const full = parts.map((t, j) => t ?? tf.zeros([u.nb, u.ng, kTiles[j][1], X]));
      return full.length === 1 ? tf.clone(full[0]) : tf.concat(full, 2);
    });
    dkUnits.push(gather(dKt, D));
    dvUnits.push(gather(dVt, Dv));
    tf.dispose([kU, kT, vT, ...(dKt.filter((t) => t != null) as tf.Tensor[]),
      ...(dVt.filter((t) => t != null) as tf.Tensor[])]);
  });
  const joinUnits = (parts: tf.Tensor[]) => {
    // Units are (b, g) in order, or one unit of everything: [B, G, S, X]. Units of whole batch
    // entries follow each other along the batch (along the groups, their entries would interleave).
    if (parts.length === 1) return parts[0];
    if (us[0].ng === G) return concatAndDispose(parts, 0);                              // [B, G, S, X]
    const X = parts[0].shape[3] as number;
    return disposeAfter(concatAndDispose(parts, 1), (x) => tf.reshape(x, [B, G, S, X])); // [B, G, S, X]
  };
  const dk = joinUnits(dkUnits);
  const dv = joinUnits(dvUnits);
  const dq3 = concatAndDispose(dqPieces.map((row) => concatAndDispose(row as tf.Tensor[], 0)), 1); // [B*H, T, D]
  const dq = disposeAfter(dq3, (x) => tf.reshape(x, [B, H, T, D]));                               // [B, H, T, D]
  tf.dispose([q3, dO3, Dsum, ...(band != null ? [band.band] : [])]);
  return [dq, dk, dv];
}

/**
 * Exact attention through the engine as one tf.customGrad over q, k, v and an optional
 * float keep mask (a non-differentiated input, so it is saved for the backward pass; it gets
 * zeros): the forward saves the output and the row logsumexp parts, the backward is
 * tiledBackward. The keep mask is the caller's to dispose.
 */
export function tiledAttention(p: TilePlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor,
    keep: tf.Tensor | null): tf.Tensor {
  const run = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const [qq, kk, vv, kp] = args as tf.Tensor[];
    const [O, M, LL, P] = tiledForward(p, qq, kk, vv, kp ?? null, true);
    save([qq, kk, vv, O, M, LL, ...(kp != null ? [kp] : []), ...(P != null ? [P] : [])]);
    return {
      value: O,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sO, sM, sLL, ...rest] = saved;
        const skp = kp != null ? rest.shift()! : null;
        const sP = P != null ? rest.shift()! : null;
        const grads = tiledBackward(p, dy, sq, sk, sv, sO, sM, sLL, skp, sP);
        return skp != null ? [...grads, tf.zerosLike(skp)] : grads;
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return keep != null ? run(q, k, v, keep) : run(q, k, v);
}
