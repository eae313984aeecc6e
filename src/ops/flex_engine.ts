/**
 * The engine of flexAttention: ops/tiled.ts's schedule (units of (batch, group) pairs, query
 * blocks, FlashAttention-2's online softmax and its backward from the saved row statistics)
 * over the tiles a block mask leaves, with a score mod on every computed tile and the mask mod
 * on the partial ones only.
 *
 * For each unit and query block the visible key blocks (the union over the unit's batch entries
 * and heads) are merged into runs of consecutive blocks, each one product of R * bq rows by up to
 * `maxRun` keys; empty blocks are never computed, forward or backward. Consecutive query blocks
 * with the same runs are worked as one group (larger products). A run with partial blocks adds
 * their masks, the block mask's kept tiles joined with zeros for the full blocks (or, where it
 * keeps none, the mask mod evaluated on the partial blocks alone); where a group has one run its
 * probabilities come from one tf.softmax (as in tiled.ts). The backward walks the same runs: dQ
 * is summed over a group's runs, dK and dV over the groups into the fixed key blocks of the grid.
 * A score mod's gradient (for the score and for the tensors it declares) comes from autograd over
 * the mod on each tile.
 *
 * On wasm a call with a block mask that keeps its tiles and no score mod does not come here:
 * flex_native.ts runs it on the fused kernels (kernels/wasm_flex.ts, native/flex.ts).
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, show} from '../core/errors';
import {AttentionDims} from './heads';
import {MASKED_LOGIT} from './masks';
import {swapLast} from './matmul';
import {BlockMask, EMPTY, FULL, PARTIAL} from './block_mask';
import {maskValuesOf} from './flex_mods';
import {ModContext, ScoreMod} from './flex_types';
import {blocks, queryRows, TilePlan, tileUnits, Unit, unitPart} from './tile_plan';
import {innerGradients} from './tape';
import {finishOnline, NO_KEYS_MAX, OnlineSoftmax, onlineTile} from './tiled';
import {concatAndDispose, disposeAfter, sliceColumns, sliceRows, unitMatMul, unitMatMulTransposeA} from './units';

export interface FlexPlan extends AttentionDims {
  scale: number;
  /** Query positions per block. */
  bq: number;
  /** Keys per block of the grid (the block mask's, else maxRun). */
  bk: number;
  /** Keys one product spans at most: a multiple of bk. */
  maxRun: number;
  blockMask: BlockMask | null;
  scoreMod: ScoreMod | null;
}

/** A run of consecutive visible key blocks: keys [a, a + n), with the key ranges of its partial blocks. */
interface Run {a: number; n: number; partial: [number, number][]}

/** The plan as tile_plan's helpers take it: no causal band, tiles of a group's rows by maxRun keys at most. */
function tilePlan(p: FlexPlan): TilePlan {
  const fit = Math.min(FLEX_GROUP_ROWS, Math.floor(FLEX_GROUP_SCORES / (p.R * p.maxRun)));
  const rows = Math.min(p.T, Math.max(p.bq, fit));
  return {...p, causal: false, offset: 0, bq: rows, bk: p.maxRun};
}

/** The units of a flex call (tile_plan's, with tiles of R * bq rows by maxRun keys). */
function flexUnits(p: FlexPlan): Unit[] {
  return tileUnits(tilePlan(p));
}

/** The runs of query block i for unit u. */
function runsOf(p: FlexPlan, u: Unit, i: number): Run[] {
  const grid = blocks(p.S, p.bk);
  const bm = p.blockMask;
  const perRun = Math.max(1, Math.floor(p.maxRun / p.bk));
  const runs: Run[] = [];
  let cur: Run | null = null;
  let count = 0;
  grid.forEach(([s0, w], j) => {
    const st = bm == null ? FULL : bm.unionState(u.b, u.nb, u.g * p.R, u.ng * p.R, i, j);
    if (st === EMPTY) {
      cur = null;
      return;
    }
    if (cur == null || count === perRun) {
      cur = {a: s0, n: 0, partial: []};
      runs.push(cur);
      count = 0;
    }
    cur.n += w;
    count++;
    if (st === PARTIAL) {
      const last = cur.partial[cur.partial.length - 1];
      if (last != null && last[0] + last[1] === s0) last[1] += w;
      else cur.partial.push([s0, w]);
    }
  });
  return runs;
}

/**
 * Scores a group of query blocks may span (2^21, 8 MiB of float32) and the query rows it may
 * have (512): consecutive blocks that see the same runs (a document's blocks, every block
 * without a mask) are worked as one, so their products are larger and fewer. Without the row
 * cap T = 2048 without a mask held 3.9x the floor of real memory (groups of 1024 rows); with
 * 2^20 scores, T = 4096 ran groups of 256 rows, 1.24x sdpa's time (docs/benchmarks.md).
 */
export const FLEX_GROUP_SCORES = 2 ** 21;
export const FLEX_GROUP_ROWS = 512;

/** Consecutive query blocks [i0, i0 + count) worked as one: rows [t0, t0 + bq) and their common runs. */
interface Group {t0: number; bq: number; i0: number; count: number; runs: Run[]}

/** The query blocks of unit u, grouped where consecutive ones see the same runs. */
function groupsOf(p: FlexPlan, u: Unit): Group[] {
  const out: Group[] = [];
  let key = '';
  blocks(p.T, p.bq).forEach(([t0, bq], i) => {
    const runs = runsOf(p, u, i);
    const k = JSON.stringify(runs);
    const last = out[out.length - 1];
    const widest = Math.max(1, ...runs.map((r) => r.n));
    if (last != null && k === key && p.R * (last.bq + bq) * widest <= FLEX_GROUP_SCORES &&
        last.bq + bq <= FLEX_GROUP_ROWS) {
      last.bq += bq;
      last.count++;
    } else {
      out.push({t0, bq, i0: i, count: 1, runs});
      key = k;
    }
  });
  return out;
}

/** The index tensors of a unit's tiles (int32, shaped to broadcast over [nb, heads, bq, n]). */
interface Indices {b: tf.Tensor; h: tf.Tensor; context: ModContext}

function unitIndices(p: FlexPlan, u: Unit): Indices {
  return {
    b: tf.reshape(tf.range(u.b, u.b + u.nb, 1, 'int32'), [u.nb, 1, 1, 1]),
    h: tf.reshape(tf.range(u.g * p.R, (u.g + u.ng) * p.R, 1, 'int32'), [1, u.ng * p.R, 1, 1]),
    context: {batch: p.B, heads: p.H, queryLength: p.T, keyLength: p.S},
  };
}

function positions(start: number, n: number, shape: number[]): tf.Tensor {
  return tf.reshape(tf.range(start, start + n, 1, 'int32'), shape);
}

/** A run's masks, heads view, broadcastable to [nb, heads, bq, n]: added to the scores, and the 0/1 keep. */
interface RunMask {
  add: tf.Tensor | null;
  /** Multiplies the probabilities where some row of the block sees no key (their exp would not vanish). */
  keep: tf.Tensor | null;
}

/**
 * The masks of a run of a group of query blocks: the block mask's kept tiles for its partial
 * blocks (0 on full ones, MASKED_LOGIT on blocks empty for some of the unit's pairs), or where
 * it keeps none the mask mod evaluated on the partial blocks, ones elsewhere. Nulls when no block
 * of the run is partial.
 */
function runMask(p: FlexPlan, u: Unit, ix: Indices, g: Group, run: Run): RunMask {
  if (run.partial.length === 0) return {add: null, keep: null};
  const bm = p.blockMask!;
  const {t0, bq} = g;
  const [h0, nh] = [u.g * p.R, u.ng * p.R];
  const blockIds = Array.from({length: g.count}, (_, x) => g.i0 + x);
  const keyless = blockIds.some((i) => bm.hasKeylessRows(u.b, u.nb, h0, nh, i));
  if (bm.keepsTiles) {
    const bs = bm.batch === 1 ? [0] : Array.from({length: u.nb}, (_, x) => u.b + x);
    const hs = bm.heads === 1 ? [0] : Array.from({length: nh}, (_, x) => h0 + x);
    const j0 = Math.floor(run.a / p.bk);
    const grid = blocks(p.S, p.bk).slice(j0).filter(([s0]) => s0 < run.a + run.n);
    const rows = blocks(p.T, p.bq);
    // Pair (b, h)'s mask over the group's rows and the run's keys: block by block, [bq, n].
    const maskOfPair = (b: number, h: number) => concatAndDispose(blockIds.map((i) => concatAndDispose(
      grid.map(([, w], x) => {
        const st = bm.state(b, h, i, j0 + x);
        const n = rows[i][1];
        return st === PARTIAL ? tf.clone(bm.tileMask(b, h, i, j0 + x)!) : st === EMPTY ? tf.fill([n, w], MASKED_LOGIT)
          : tf.zeros([n, w]);
      }), 1)), 0);
    const add = tf.reshape(tf.stack(bs.map((b) => tf.stack(hs.map((h) => maskOfPair(b, h))))),
      [bs.length, hs.length, bq, run.n]);                                         // [nb|1, heads|1, bq, n]
    return {add, keep: keyless ? tf.cast(tf.equal(add, 0), 'float32') : null};
  }
  const qIdx = positions(t0, bq, [1, 1, bq, 1]);
  const parts = run.partial.map(([a, n]) =>
    maskValuesOf(bm.maskMod, ix.b, ix.h, qIdx, positions(a, n, [1, 1, 1, n]), ix.context));
  let keep: tf.Tensor;
  if (parts.length === 1 && run.partial[0][0] === run.a && run.partial[0][1] === run.n) {
    keep = parts[0];
  } else {
    // A common shape for the pieces: each axis of the tile where any piece varies along it.
    const lead = [0, 1, 2].map((ax) => Math.max(...parts.map((x) => x.shape[ax + x.rank - 4] ?? 1)));
    const pieces: tf.Tensor[] = [];
    let at = run.a;
    run.partial.forEach(([a, n], x) => {
      if (a > at) pieces.push(tf.ones([...lead, a - at]));
      pieces.push(tf.broadcastTo(parts[x], [...lead, n]));
      at = a + n;
    });
    if (at < run.a + run.n) pieces.push(tf.ones([...lead, run.a + run.n - at]));
    keep = tf.concat(pieces, 3);                                                  // [nb|1, heads|1, bq|1, n]
  }
  return {add: tf.mul(tf.sub(1, keep), MASKED_LOGIT), keep: keyless ? keep : null};
}

/** The unit's heads view of scores [nb, ng, R*bq, n] <-> [nb, heads, bq, n] (the same data). */
function headsView(s: tf.Tensor, bq: number): tf.Tensor {
  const [nb, ng, rows, n] = s.shape as number[];
  return tf.reshape(s, [nb, ng * (rows / bq), bq, n]);
}

function groupsView(s: tf.Tensor, ng: number): tf.Tensor {
  const [nb, heads, bq, n] = s.shape as number[];
  return tf.reshape(s, [nb, ng, (heads / ng) * bq, n]);
}

/** The score mod on a tile's scores [nb, heads, bq, n], checked to keep the shape. */
function modScores(mod: ScoreMod, s4: tf.Tensor, ix: Indices, t0: number, bq: number, a: number, n: number): tf.Tensor {
  const out = mod(s4, ix.b, ix.h, positions(t0, bq, [1, 1, bq, 1]), positions(a, n, [1, 1, 1, n]), ix.context);
  if (!(out instanceof tf.Tensor) || out.dtype !== 'float32' || out.shape.join() !== s4.shape.join()) {
    throw new AttentionError('DIMENSION_MISMATCH',
      `a score mod must return a float32 tensor of the score's shape ${show(s4.shape)}, received ${show(out)}`);
  }
  return out;
}

/**
 * A run's scores, heads view [nb, heads, bq, n]: q k^T (q scaled), the score mod, the additive
 * mask; with the pre-mod scores when the backward needs them.
 */
function runScores(p: FlexPlan, ix: Indices | null, qi: tf.Tensor, kT: tf.Tensor, t0: number, bq: number, run: Run,
                   add: tf.Tensor | null): {s: tf.Tensor; pre: tf.Tensor | null} {
  const pre = disposeAfter(unitMatMul(qi, sliceColumns(kT, run.a, run.n)), (x) => headsView(x, bq));
  let s = p.scoreMod != null ? modScores(p.scoreMod, pre, ix!, t0, bq, run.a, run.n) : pre;
  if (add != null) s = tf.add(s, add);
  return {s, pre: p.scoreMod != null ? pre : null};
}

/** x * keep (heads view), or x when keep is null. */
function kept(x: tf.Tensor, keep: tf.Tensor | null): tf.Tensor {
  return keep == null ? x : disposeAfter(x, (y) => tf.mul(y, keep));
}

/**
 * Forward over q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv]: the output O [B, H, T, Dv],
 * the row statistics M, LL [B*H, T, 1] (zeros for blocks of one run, which the backward works
 * with one softmax) and the logsumexp [B*H, T, 1] (-Infinity for rows with no key) when `lse`.
 */
export function flexForward(p: FlexPlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, lse: boolean): tf.Tensor[] {
  const {B, H, T, D, Dv} = p;
  const q3 = tf.reshape(q, [B * H, T, D]);                                        // [B*H, T, D]
  const us = flexUnits(p);
  const mods = p.blockMask != null || p.scoreMod != null;
  // Per unit its outputs [heads, T, X], from its groups' pieces joined along T.
  const units = us.map((u) => {
    const ix = mods ? unitIndices(p, u) : null;
    const kT = tf.tidy(() => swapLast(unitPart(u, k)));                           // [nb, ng, D, S]
    const vU = unitPart(u, v);                                                    // [nb, ng, S, Dv]
    const pieces = groupsOf(p, u).map((g) => {
      const {t0, bq, runs} = g;
      return tf.tidy(() => {
        const heads = u.nb * u.ng * p.R;
        const none = () => [tf.zeros([heads, bq, Dv]), tf.fill([heads, bq, 1], NO_KEYS_MAX), tf.zeros([heads, bq, 1]),
          ...(lse ? [tf.fill([heads, bq, 1], -Infinity)] : [])];
        if (runs.length === 0) return none();
        const qi = tf.mul(queryRows(p, u, q3, t0, bq), p.scale);                // [nb, ng, R*bq, D], scaled
        if (runs.length === 1) {
          const run = runs[0];
          const {add, keep} = runMask(p, u, ix!, g, run);
          const {s} = runScores(p, ix, qi, kT, t0, bq, run, add);                 // [nb, heads, bq, n]
          const pr = kept(tf.softmax(s), keep);
          const o = unitMatMul(groupsView(pr, u.ng), sliceRows(vU, run.a, run.n)); // [nb, ng, R*bq, Dv]
          const out = [tf.reshape(o, [heads, bq, Dv]), tf.zeros([heads, bq, 1]), tf.zeros([heads, bq, 1])];
          if (lse) {
            // Rows whose every key is masked have a max near MASKED_LOGIT: no key, -Infinity.
            const rowMax = tf.max(s, -1, true);
            const noKey = tf.less(rowMax, MASKED_LOGIT / 2);
            const l = tf.where(noKey, tf.fill(rowMax.shape, -Infinity), tf.logSumExp(s, -1, true));
            out.push(tf.reshape(l, [heads, bq, 1]));
          }
          return out;
        }
        let state: OnlineSoftmax | null = null;
        for (const run of runs) {
          const next: OnlineSoftmax = tf.tidy(() => {
            const {add, keep} = runMask(p, u, ix!, g, run);
            const {s} = runScores(p, ix, qi, kT, t0, bq, run, add);               // [nb, heads, bq, n]
            return onlineTile(state, s, (pr) => kept(pr, keep),                   // acc: [nb, heads, bq, Dv]
              (pr) => headsView(unitMatMul(groupsView(pr, u.ng), sliceRows(vU, run.a, run.n)), bq));
          });
          if (state != null) tf.dispose([state.m, state.l, state.acc]);
          state = next;
        }
        const {o, M, lSafe, seen} = finishOnline(state!);
        const out = [tf.reshape(o, [heads, bq, Dv]), tf.reshape(M, [heads, bq, 1]),
          tf.reshape(tf.log(lSafe), [heads, bq, 1])];
        if (lse) {
          const rowLse = tf.where(seen, tf.add(state!.m, tf.log(lSafe)), tf.fill(state!.m.shape, -Infinity));
          out.push(tf.reshape(rowLse, [heads, bq, 1]));
        }
        return out;
      });
    });
    tf.dispose([kT, vU, ...(ix != null ? [ix.b, ix.h] : [])]);
    return pieces[0].map((_, which) => concatAndDispose(pieces.map((x) => x[which]), 1));
  });
  // Units in order are heads in order.
  const join = (which: number) => concatAndDispose(units.map((x) => x[which]), 0);
  const O = disposeAfter(join(0), (x) => tf.reshape(x, [B, H, T, Dv]));
  const out = [O, join(1), join(2), ...(lse ? [join(3)] : [])];
  q3.dispose();
  return out;
}

/**
 * Backward: [dq, dk, dv, ...one gradient per score-mod tensor] from dO [B, H, T, Dv], the
 * logsumexp's gradient dLse [B*H, T, 1] (or null), the saved q, k, v, O and row statistics.
 */
export function flexBackward(p: FlexPlan, dO: tf.Tensor, dLse: tf.Tensor | null, q: tf.Tensor, k: tf.Tensor,
                             v: tf.Tensor, O: tf.Tensor, M: tf.Tensor, LL: tf.Tensor): tf.Tensor[] {
  const {B, H, G, T, S, D, Dv} = p;
  const q3 = tf.reshape(q, [B * H, T, D]);
  const dO3 = tf.reshape(dO, [B * H, T, Dv]);
  // D = rowsum(dO * O) (minus the logsumexp's gradient: d lse / d s = P), as row-by-row products.
  const Dsum = tf.tidy(() => {
    const rows = tf.matMul(tf.reshape(dO3, [B * H * T, 1, Dv]), tf.reshape(O, [B * H * T, Dv, 1]));
    const d = tf.reshape(rows, [B * H, T, 1]);
    return dLse == null ? d : tf.sub(d, dLse);                                    // [B*H, T, 1]
  });
  const caps = (p.scoreMod?.tensors ?? []);
  const capGrads: tf.Tensor[] = caps.map((c) => tf.zeros(c.shape));
  const differentiable = caps.map((c) => c.dtype === 'float32');
  const us = flexUnits(p);
  const grid = blocks(S, p.bk);
  const dqUnits: tf.Tensor[] = [];
  const dkUnits: tf.Tensor[] = [];
  const dvUnits: tf.Tensor[] = [];
  const mods = p.blockMask != null || p.scoreMod != null;
  us.forEach((u) => {
    const ix = mods ? unitIndices(p, u) : null;
    const kU = unitPart(u, k);                                                    // [nb, ng, S, D]
    const kT = tf.tidy(() => swapLast(kU));                                       // [nb, ng, D, S]
    const vT = tf.tidy(() => swapLast(unitPart(u, v)));                           // [nb, ng, Dv, S]
    const dKb: (tf.Tensor | null)[] = grid.map(() => null);                       // [nb, ng, w, D] each
    const dVb: (tf.Tensor | null)[] = grid.map(() => null);                       // [nb, ng, w, Dv] each
    const dqPieces = groupsOf(p, u).map((g) => {
      const {t0, bq, runs} = g;
      const heads = u.nb * u.ng * p.R;
      if (runs.length === 0) return tf.zeros([heads, bq, D]);
      const qi = tf.tidy(() => tf.mul(queryRows(p, u, q3, t0, bq), p.scale));   // [nb, ng, R*bq, D], scaled
      const dOi = queryRows(p, u, dO3, t0, bq);                                   // [nb, ng, R*bq, Dv]
      const [Mi, LLi, Di] = [M, LL, Dsum].map((x) => tf.tidy(() => headsView(queryRows(p, u, x, t0, bq), bq)));
      let dQ: tf.Tensor | null = null;
      for (const run of runs) {
        const next = tf.tidy(() => {
          // 1. The probabilities, as the forward had them.
          const {add, keep} = runMask(p, u, ix!, g, run);
          const {s, pre} = runScores(p, ix, qi, kT, t0, bq, run, add);            // [nb, heads, bq, n]
          const pr = kept(runs.length === 1 ? tf.softmax(s) : tf.exp(tf.sub(tf.sub(s, Mi), LLi)), keep);
          const pg = groupsView(pr, u.ng);                                        // [nb, ng, R*bq, n]
          // 2. dV = P^T dO; dP = dO V^T; dS = P (dP - D).
          const dV = unitMatMulTransposeA(pg, dOi);                               // [nb, ng, n, Dv]
          const dP = headsView(unitMatMul(dOi, sliceColumns(vT, run.a, run.n)), bq);
          let dS = tf.mul(pr, tf.sub(dP, Di));                                    // [nb, heads, bq, n]
          // 3. Through the score mod: the gradient of its input and of the tensors it declares.
          const capParts: tf.Tensor[] = [];
          if (p.scoreMod != null) {
            const xs = [pre!, ...caps.filter((_, c) => differentiable[c])];
            const grads = innerGradients(() => modScores(p.scoreMod!, pre!, ix!, t0, bq, run.a, run.n), xs, dS);
            dS = grads[0] ?? tf.zerosLike(dS);
            let g = 1;
            caps.forEach((cap, c) => capParts.push((differentiable[c] ? grads[g++] : null) ?? tf.zeros(cap.shape)));
          }
          // 4. dQ += dS K; dK = dS^T q (q scaled).
          const dSg = groupsView(dS, u.ng);                                       // [nb, ng, R*bq, n]
          const dQpart = unitMatMul(dSg, sliceRows(kU, run.a, run.n));            // [nb, ng, R*bq, D]
          const dK = unitMatMulTransposeA(dSg, qi);                               // [nb, ng, n, D]
          return {dV, dK, capParts, dQ: dQ == null ? dQpart : tf.add(dQ, dQpart)};
        });
        if (dQ != null) dQ.dispose();
        dQ = next.dQ;
        next.capParts.forEach((g, c) => {
          const sum = tf.add(capGrads[c], g);
          tf.dispose([capGrads[c], g]);
          capGrads[c] = sum;
        });
        // 5. The run's dK, dV into the key blocks of the grid it covers.
        for (const [acc, part] of [[dVb, next.dV], [dKb, next.dK]] as [(tf.Tensor | null)[], tf.Tensor][]) {
          const j0 = Math.floor(run.a / p.bk);
          const covered = grid.slice(j0).filter(([s0]) => s0 < run.a + run.n);
          covered.forEach(([s0, w], x) => {
            const j = j0 + x;
            const piece = covered.length === 1 ? part : tf.tidy(() => sliceRows(part, s0 - run.a, w));
            if (acc[j] == null) {
              acc[j] = piece;
              return;
            }
            const sum = tf.add(acc[j]!, piece);
            tf.dispose([acc[j]!, piece]);
            acc[j] = sum;
          });
          if (covered.length > 1) part.dispose();
        }
      }
      const dq = tf.tidy(() => tf.reshape(tf.mul(dQ!, p.scale), [heads, bq, D]));
      tf.dispose([qi, dOi, Mi, LLi, Di, dQ!]);
      return dq;
    });
    dqUnits.push(concatAndDispose(dqPieces, 1));                                  // [heads, T, D]
    const gather = (parts: (tf.Tensor | null)[], X: number) => tf.tidy(() => {
      const full = parts.map((t, j) => t ?? tf.zeros([u.nb, u.ng, grid[j][1], X]));
      return full.length === 1 ? tf.clone(full[0]) : tf.concat(full, 2);         // [nb, ng, S, X]
    });
    dkUnits.push(gather(dKb, D));
    dvUnits.push(gather(dVb, Dv));
    tf.dispose([kU, kT, vT, ...(ix != null ? [ix.b, ix.h] : []),
      ...[...dKb, ...dVb].filter((t) => t != null) as tf.Tensor[]]);
  });
  const joinUnits = (parts: tf.Tensor[]) => {
    // Units of whole batch entries follow each other along the batch; units of some groups of
    // one entry along the groups, (b, g) in order.
    if (us[0].ng === G) return concatAndDispose(parts, 0);                        // [B, G, S, X]
    const X = parts[0].shape[3] as number;
    return disposeAfter(concatAndDispose(parts, 1), (x) => tf.reshape(x, [B, G, S, X])); // [B, G, S, X]
  };
  const dk = joinUnits(dkUnits);
  const dv = joinUnits(dvUnits);
  const dq3 = concatAndDispose(dqUnits, 0);                                       // [B*H, T, D]
  const dq = disposeAfter(dq3, (x) => tf.reshape(x, [B, H, T, D]));
  tf.dispose([q3, dO3, Dsum]);
  return [dq, dk, dv, ...capGrads];
}
