/**
 * linearAttention's FAVOR+ engine: one custom gradient from q, k, v and the projection that
 * saves only them, its output and its inverse denominators ([B, H, T, 1]): no features are
 * kept between the passes, the backward pass recomputes them. It works per unit (one batch
 * entry and key/value group, the group's query heads stacked along rows, so every product is
 * a plain 2-D one; all of them at once on backends whose batched products are fast) and per
 * chunk of queries: causal attention carries one running [M, Dv+1] state of phi(k)^T [v, 1]
 * over the keys before each chunk, forward (the output, dq) and backward (a running sum of
 * phi(q)^T g for dk, dv), with masked (chunk x chunk) products for the chunk's own keys. So
 * beyond its inputs and outputs a call holds the features of one unit's keys (and, in the
 * backward pass, of its queries) and a few [chunk, M] pieces: memory linear in T
 * (src/bench/heap.ts measures it).
 */
import * as tf from '@tensorflow/tfjs';
import {keyShift, scaledRows, unitFeatureGrad, unitFeatures} from './linear_features';
import {
  chunkMask, chunkMasks, FavorPlan, favorUnits, GroupRows, groupRows, maskCols, maskRows, Unit, unitKeep, unitRows,
} from './linear_plan';
import {swapLast} from './matmul';
import {concatAndDispose, disposeAfter, sliceColumns, sliceRows, unitMatMul} from './units';

/** What a unit's passes read: the row sources and the per-call constants. */
interface UnitInputs {
  q: GroupRows; k: GroupRows; v: GroupRows;
  /** projection^T [D, M] and projection [M, D]. */
  PT: tf.Tensor; P: tf.Tensor;
  masks: Map<string, tf.Tensor[]>;
}

/**
 * Features, scaled rows and [v, 1] of the unit's keys [s0, s0 + n) (shift: unitShift's):
 * kf [N, n, M], xk [N, n, D], va [N, n, X].
 */
function keyRows(p: FavorPlan, u: Unit, inp: UnitInputs, shift: tf.Tensor | null, keep: tf.Tensor | null,
                 s0: number, n: number): tf.Tensor[] {
  return tf.tidy(() => {
    const keys = unitRows(inp.k, u, s0, n);                                         // [N, n, D]
    const {phi, xw} = unitFeatures(p, keys, inp.PT, shift ?? 'all', keep != null ? sliceRows(keep, s0, n) : null);
    return [phi, xw, tf.concat([unitRows(inp.v, u, s0, n), tf.ones([u.N, n, 1])], 2)];
  });
}

/**
 * The unit's softmax key shift [N, 1, 1], for keys taken in pieces; null where the keys come
 * in one piece (not causal), whose features take it themselves, and for relu, which has none.
 */
function unitShift(p: FavorPlan, u: Unit, inp: UnitInputs): tf.Tensor | null {
  if (p.kernel === 'relu' || p.first === p.S) return null;
  return tf.tidy(() => {
    const xw = scaledRows(p, unitRows(inp.k, u, 0, p.S));                            // [N, S, D]
    return keyShift(p, xw, unitMatMul(xw, inp.PT));
  });
}

/**
 * The unit's output [N, R*T, Dv] and inverse denominators [N, R*T, 1] (0 for rows that see
 * no key). Per chunk c, with the state S_c = sum of kf^T [v, 1] over the keys before its block:
 *   out_c = qf_c S_c + (mask ⊙ qf_c kf_blk^T) [v, 1]_blk,   then S_{c+1} = S_c + kf_blk^T [v, 1]_blk.
 * One state at a time; the features of one chunk and one block at a time.
 */
function unitForward(p: FavorPlan, u: Unit, inp: UnitInputs, keep: tf.Tensor | null): tf.Tensor[] {
  const {N} = u;
  const {R, Dv, M} = p;
  const shift = unitShift(p, u, inp);
  let state = p.first === 0 ? tf.zeros([N, M, Dv + 1]) : tf.tidy(() => {           // [N, M, X]
    const [kf, , va] = keyRows(p, u, inp, shift, keep, 0, p.first);
    return swapLast(unitMatMul(swapLast(va), kf));
  });
  const outs: tf.Tensor[] = [];
  const invs: tf.Tensor[] = [];
  for (const c of p.chunks) {
    const next = tf.tidy(() => {
      const qc = unitFeatures(p, unitRows(inp.q, u, c.t0, c.nq), inp.PT, 'row', null).phi; // [N, R*nq, M]
      let acc = unitMatMul(qc, state);                                              // [N, R*nq, X]
      let grown = state;
      if (c.nb > 0) {
        const [kb, , vb] = keyRows(p, u, inp, shift, keep, c.s0, c.nb);            // [N, nb, M], [N, nb, X]
        const kbT = swapLast(kb);                                                   // [N, M, nb]
        const a = maskRows(p, unitMatMul(qc, kbT), chunkMask(inp.masks, c)[0]);     // [N, R*nq, nb]
        acc = tf.add(acc, unitMatMul(a, vb));
        grown = tf.add(state, unitMatMul(kbT, vb));
      }
      const den = sliceColumns(acc, Dv, 1);                                         // [N, R*nq, 1]
      const inv = tf.where(tf.greater(den, 0), tf.div(1, den), tf.zerosLike(den));  // rows that see no key: 0
      const out = tf.mul(sliceColumns(acc, 0, Dv), inv);                            // [N, R*nq, Dv]
      return {out: tf.reshape(out, [N, R, c.nq, Dv]), inv: tf.reshape(inv, [N, R, c.nq, 1]), state: grown};
    });
    if (next.state !== state) state.dispose();
    state = next.state;
    outs.push(next.out);
    invs.push(next.inv);
  }
  tf.dispose([state, ...(shift != null ? [shift] : [])]);
  const out = disposeAfter(concatAndDispose(outs, 2), (x) => tf.reshape(x, [N, R * p.T, Dv]));  // [N, R*T, Dv]
  const inv = disposeAfter(concatAndDispose(invs, 2), (x) => tf.reshape(x, [N, R * p.T, 1]));   // [N, R*T, 1]
  return [out, inv];
}

/**
 * The unit's dq [N, R*T, D], dk [N, S, D], dv [N, S, Dv] and d projection^T [D, M], from
 * the features recomputed and g = d out_aug = [dO / den, -rowsum(dO * out) / den]:
 *   1. forward over the chunks (the state S_c as in the forward pass):
 *      dqf_c = g_c S_c^T + (mask ⊙ g_c [v, 1]_blk^T) kf_blk, and on to dq_c at once;
 *   2. backward over the chunks, dS = sum of qf^T g over the later chunks (before adding c's own):
 *      dkf_blk = [v, 1]_blk dS^T + (mask ⊙ g_c [v, 1]_blk^T)^T qf_c,
 *      d[v, 1]_blk = kf_blk dS + (mask ⊙ qf_c kf_blk^T)^T g_c;
 *   3. the keys before the first block (seen by every query): [v, 1] dS^T and kf dS;
 *   4. zeros for the keys no query sees.
 * States are carried transposed ([N, X, M]) so every product is a plain one. The features
 * of step 1 are kept for step 2 and freed chunk by chunk there.
 */
function unitBackward(p: FavorPlan, u: Unit, inp: UnitInputs, grad: {dO: GroupRows; out: GroupRows; inv: GroupRows},
                      keep: tf.Tensor | null): tf.Tensor[] {
  const {N} = u;
  const {R, T, S, D, Dv, M} = p;
  const X = Dv + 1;
  const shift = unitShift(p, u, inp);
  let dPT = tf.zeros([D, M]);
  // 1. dq, chunk by chunk, through the state S_c^T.
  const prefix = p.first > 0 ? keyRows(p, u, inp, shift, keep, 0, p.first) : null;  // kf, xk, va
  let state = prefix == null ? tf.zeros([N, X, M])                                  // [N, X, M]
    : tf.tidy(() => unitMatMul(swapLast(prefix[2]), prefix[0]));
  const held: tf.Tensor[][] = [];  // per chunk: qf, xq, g and, with a block, its kf, xk, va
  const dqs: tf.Tensor[] = [];
  for (const c of p.chunks) {
    const next = tf.tidy(() => {
      const queries = unitRows(inp.q, u, c.t0, c.nq);                               // [N, R*nq, D]
      const {phi: qc, xw: xq} = unitFeatures(p, queries, inp.PT, 'row', null);      // [N, R*nq, M], [N, R*nq, D]
      const dO = unitRows(grad.dO, u, c.t0, c.nq);                                  // [N, R*nq, Dv]
      const inv = unitRows(grad.inv, u, c.t0, c.nq);                                // [N, R*nq, 1]
      const dDen = tf.neg(tf.mul(tf.sum(tf.mul(dO, unitRows(grad.out, u, c.t0, c.nq)), -1, true), inv));
      // [N, R*nq, X], 0 on rows that see no key
      const gc = tf.concat([tf.mul(dO, inv), dDen], 2);
      let dqf = unitMatMul(gc, state);                                              // [N, R*nq, M]
      let grown = state;
      const block = c.nb > 0 ? keyRows(p, u, inp, shift, keep, c.s0, c.nb) : [];
      if (c.nb > 0) {
        const [kb, , vb] = block;                                                   // [N, nb, M], [N, nb, X]
        const vbT = swapLast(vb);                                                   // [N, X, nb]
        const a = maskRows(p, unitMatMul(gc, vbT), chunkMask(inp.masks, c)[0]);     // [N, R*nq, nb]
        dqf = tf.add(dqf, unitMatMul(a, kb));
        grown = tf.add(state, unitMatMul(vbT, kb));
      }
      const {dx, dPT: share} = unitFeatureGrad(p, dqf, qc, xq, inp.P);
      return {dq: tf.reshape(dx, [N, R, c.nq, D]), dPT: tf.add(dPT, share), state: grown, held: [qc, xq, gc, ...block]};
    });
    if (next.state !== state) state.dispose();
    dPT.dispose();
    ({state, dPT} = next);
    dqs.push(next.dq);
    held.push(next.held);
  }
  state.dispose();
  // 2. dk, dv of each block, from the last chunk back, through dS^T.
  let dS = tf.zeros([N, X, M]);                                                     // [N, X, M]
  const dks: tf.Tensor[] = [];
  const dvs: tf.Tensor[] = [];
  for (let ci = p.chunks.length - 1; ci >= 0; ci--) {
    const c = p.chunks[ci];
    const next = tf.tidy(() => {
      const [qc, , gc, kb, xb, vb] = held[ci];
      const gcT = swapLast(gc);                                                     // [N, X, R*nq]
      const block: tf.Tensor[] = []; // dk, dv of the block, when it has keys
      let dPTNext = dPT;
      if (c.nb > 0) {
        const [mask, maskT] = chunkMask(inp.masks, c);
        const aT = maskCols(p, unitMatMul(vb, gcT), maskT);                         // [N, nb, R*nq]
        let dkf = tf.add(unitMatMul(vb, dS), unitMatMul(aT, qc));                   // [N, nb, M]
        const bT = swapLast(maskRows(p, unitMatMul(qc, swapLast(kb)), mask));       // [N, nb, R*nq]
        const dva = tf.add(unitMatMul(kb, swapLast(dS)), unitMatMul(bT, gc));       // [N, nb, X]
        if (keep != null) dkf = tf.mul(dkf, sliceRows(keep, c.s0, c.nb));
        const {dx, dPT: share} = unitFeatureGrad(p, dkf, kb, xb, inp.P);
        block.push(dx, sliceColumns(dva, 0, Dv));                                   // [N, nb, D], [N, nb, Dv]
        dPTNext = tf.add(dPT, share);
      }
      return {block, dPT: dPTNext, dS: tf.add(dS, unitMatMul(gcT, qc))};
    });
    tf.dispose(held[ci]);
    if (next.dPT !== dPT) dPT.dispose();
    dS.dispose();
    ({dS, dPT} = next);
    if (next.block.length > 0) {
      dks.unshift(next.block[0]);
      dvs.unshift(next.block[1]);
    }
  }
  // 3. The keys every query sees.
  if (prefix != null) {
    const next = tf.tidy(() => {
      // [N, first, M], [N, first, D], [N, first, X]
      const [kp, xp, vp] = prefix;
      let dkf = unitMatMul(vp, dS);                                                 // [N, first, M]
      const dva = unitMatMul(kp, swapLast(dS));                                     // [N, first, X]
      if (keep != null) dkf = tf.mul(dkf, sliceRows(keep, 0, p.first));
      const {dx, dPT: share} = unitFeatureGrad(p, dkf, kp, xp, inp.P);
      return {dk: dx, dv: sliceColumns(dva, 0, Dv), dPT: tf.add(dPT, share)};
    });
    tf.dispose([dPT, ...prefix]);
    dPT = next.dPT;
    dks.unshift(next.dk);
    dvs.unshift(next.dv);
  }
  tf.dispose([dS, ...(shift != null ? [shift] : [])]);
  // 4. The keys no query sees.
  const seen = dks.reduce((n, t) => n + (t.shape[1] as number), 0);
  if (seen < S) {
    dks.push(tf.zeros([N, S - seen, D]));
    dvs.push(tf.zeros([N, S - seen, Dv]));
  }
  const dq = disposeAfter(concatAndDispose(dqs, 2), (x) => tf.reshape(x, [N, R * T, D])); // [N, R*T, D]
  return [dq, concatAndDispose(dks, 1), concatAndDispose(dvs, 1), dPT];
}

/**
 * linearAttention's result for a plan: one tf.customGrad over q, k, v, the projection (and
 * the key keep [Bm, S]) that saves only its inputs, the output and the inverse
 * denominators [B*G, R*T, 1], never the features.
 */
export function favorAttention(p: FavorPlan, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, projection: tf.Tensor,
                               keep: tf.Tensor | null): tf.Tensor4D {
  const {B, H, G, R, T, S, D, Dv} = p;
  // [B, H, T, C] -> [B*G, R*T, C]: the R query heads of a group stacked along rows.
  const inputs = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, P: tf.Tensor): UnitInputs => ({
    q: groupRows(tf.reshape(a, [B * G, R * T, D]), R), k: groupRows(tf.reshape(b, [B * G, S, D]), 1),
    v: groupRows(tf.reshape(c, [B * G, S, Dv]), 1), PT: tf.transpose(P), P, masks: chunkMasks(p),
  });
  const release = (inp: UnitInputs, ...more: GroupRows[]) =>
    tf.dispose([inp.q.x, inp.k.x, inp.v.x, inp.PT, ...more.map((s) => s.x), ...[...inp.masks.values()].flat()]);
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [a, b, c, P, kp] = args.slice(0, -1) as tf.Tensor[];
    const inp = inputs(a, b, c, P);
    const outs: tf.Tensor[] = [];
    const invs: tf.Tensor[] = [];
    for (const u of favorUnits(p)) {
      const [out, inv] = tf.tidy(() => unitForward(p, u, inp, unitKeep(p, u, kp ?? null)));
      outs.push(out);
      invs.push(inv);
    }
    release(inp);
    const out = disposeAfter(concatAndDispose(outs, 0), (x) => tf.reshape(x, [B, H, T, Dv])); // [B, H, T, Dv]
    const inv = concatAndDispose(invs, 0);                                          // [B*G, R*T, 1]
    save([a, b, c, P, out, inv, ...(kp != null ? [kp] : [])]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sP, sOut, sInv, sKeep] = saved;
        const inp2 = inputs(sq, sk, sv, sP);
        const grad = {
          dO: groupRows(tf.reshape(dy, [B * G, R * T, Dv]), R), out: groupRows(tf.reshape(sOut, [B * G, R * T, Dv]), R),
          inv: groupRows(tf.reshape(sInv, sInv.shape), R),
        };
        const parts: tf.Tensor[][] = [[], [], []];
        let dPT: tf.Tensor | null = null;
        for (const u of favorUnits(p)) {
          const [dq, dk, dv, share] = tf.tidy(() => unitBackward(p, u, inp2, grad, unitKeep(p, u, sKeep ?? null)));
          [dq, dk, dv].forEach((t, i) => parts[i].push(t));
          dPT = dPT == null ? share : disposeAfter(share, (x) => tf.add(dPT!, x));
        }
        release(inp2, grad.dO, grad.out, grad.inv);
        const dP = disposeAfter(dPT!, (x) => tf.transpose(x));                      // [M, D]
        const joined = (i: number, shape: number[]) =>
          disposeAfter(concatAndDispose(parts[i], 0), (x) => tf.reshape(x, shape));
        const dq = joined(0, [B, H, T, D]);                                         // [B, H, T, D]
        const dk = joined(1, [B, G, S, D]);                                         // [B, G, S, D]
        const dv = joined(2, [B, G, S, Dv]);                                        // [B, G, S, Dv]
        return sKeep != null ? [dq, dk, dv, dP, tf.zerosLike(sKeep)] : [dq, dk, dv, dP];
      },
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(...(keep != null ? [q, k, v, projection, keep] : [q, k, v, projection])) as tf.Tensor4D;
}
