/**
 * The naive reference attention that every fast path is tested against.
 *
 * Deliberately plain and slow: one [T, D] x [D, S] product per (batch, head), the mask
 * turned into a JS table of 0/1 values first, a masked softmax written out step by step,
 * and the heads put back together with tf.stack. It shares no code with src/, and it is
 * built only from differentiable tf ops, so tf.grads gives gradients for q, k and v.
 */
import * as tf from '@tensorflow/tfjs';

export interface ReferenceOptions {
  /** Bool or 0/1 (1 = may attend): [T, S], [B, T, S] or rank 4 broadcastable to [B, H, T, S]. */
  mask?: tf.Tensor;
  /** Query i sees key j iff j <= i + (S - T). */
  causal?: boolean;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
}

/**
 * keep[b][h][i][j] = 1 when query i of head h in batch b may attend to key j, else 0.
 * Plain JS: the mask values are read once and broadcast by hand.
 */
function keepTable(B: number, H: number, T: number, S: number, opts: ReferenceOptions): number[][][][] {
  let mask: ((b: number, h: number, i: number, j: number) => boolean) | null = null;
  if (opts.mask != null) {
    const m = opts.mask;
    // Where each rank puts its axes among [B, H, T, S].
    const ms = m.shape as number[];
    const shape4 = m.rank === 2 ? [1, 1, ms[0], ms[1]]
      : m.rank === 3 ? [ms[0], 1, ms[1], ms[2]]
      : m.rank === 4 ? ms.slice()
      : null;
    const full = [B, H, T, S];
    if (shape4 == null || shape4.some((n, a) => n !== 1 && n !== full[a])) {
      throw new Error(`reference: mask shape [${m.shape}] does not broadcast to [${full}]`);
    }
    const values = m.dataSync();
    const [n0, n1, n2, n3] = shape4 as [number, number, number, number];
    // A size-1 axis broadcasts: its index is always 0.
    const at = (n: number, x: number) => (n === 1 ? 0 : x);
    mask = (b, h, i, j) => {
      const flat = ((at(n0, b) * n1 + at(n1, h)) * n2 + at(n2, i)) * n3 + at(n3, j);
      return Number(values[flat]) !== 0;
    };
  }
  const keep: number[][][][] = [];
  for (let b = 0; b < B; b++) {
    keep.push([]);
    for (let h = 0; h < H; h++) {
      keep[b].push([]);
      for (let i = 0; i < T; i++) {
        const row: number[] = [];
        for (let j = 0; j < S; j++) {
          let ok = true;
          if (opts.causal && !(j <= i + (S - T))) ok = false;
          if (mask != null && !mask(b, h, i, j)) ok = false;
          row.push(ok ? 1 : 0);
        }
        keep[b][h].push(row);
      }
    }
  }
  return keep;
}

/** Checks the shapes the way the contract states them; plain Errors, this is a test helper. */
function referenceDims(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) {
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) throw new Error('reference: q, k, v must be rank 4');
  const [B, H, T, D] = q.shape;
  const [Bk, G, S, Dk] = k.shape;
  const [Bv, Gv, Sv, Dv] = v.shape;
  if (Bk !== B || Bv !== B || Dk !== D || Gv !== G || Sv !== S || H % G !== 0) {
    throw new Error(`reference: bad shapes q [${q.shape}], k [${k.shape}], v [${v.shape}]`);
  }
  return {B, H, G, T, S, D, Dv};
}

/**
 * probs[b][h] is the [T, S] matrix of attention probabilities of head h in batch b.
 * Rows with no visible key are all zero.
 */
function referenceProbs(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, opts: ReferenceOptions): tf.Tensor2D[][] {
  const {B, H, G, T, S, D} = referenceDims(q, k, v);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const keep = keepTable(B, H, T, S, opts);
  const probs: tf.Tensor2D[][] = [];
  for (let b = 0; b < B; b++) {
    probs.push([]);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / G)); // the kv head this query head reads
      const qh = tf.reshape(tf.slice(q, [b, h, 0, 0], [1, 1, T, D]), [T, D]); // [T, D]
      const kh = tf.reshape(tf.slice(k, [b, g, 0, 0], [1, 1, S, D]), [S, D]); // [S, D]
      const logits = tf.mul(tf.matMul(qh, kh, false, true), scale);           // [T, S]

      // Masked softmax, step by step. keepB / keepF: where the row may look.
      const keepF = tf.tensor2d(keep[b][h], [T, S], 'float32');
      const keepB = tf.cast(keepF, 'bool');
      const rowEmpty = keep[b][h].map((row) => [row.some((x) => x === 1) ? 0 : 1]); // [T, 1]
      const rowHasKey = tf.tensor2d(rowEmpty.map(([e]) => 1 - e), [T, 1], 'bool');
      // 1. The max over the visible logits only (0 for a row that sees nothing).
      const visible = tf.where(keepB, logits, tf.fill([T, S], -Infinity));
      const rowMax = tf.where(rowHasKey, tf.max(visible, 1, true), tf.zeros([T, 1])); // [T, 1]
      // 2. exp(logit - max) at visible keys, exactly 0 elsewhere.
      const shifted = tf.where(keepB, tf.sub(logits, rowMax), tf.zeros([T, S]));
      const e = tf.mul(tf.exp(shifted), keepF);                                // [T, S]
      // 3. Divide by the row sum; an empty row has sum 0 and e 0, so add 1 there.
      const sum = tf.add(tf.sum(e, 1, true), tf.tensor2d(rowEmpty, [T, 1]));  // [T, 1]
      probs[b].push(tf.div(e, sum) as tf.Tensor2D);                            // [T, S]
    }
  }
  return probs;
}

/** The attention probabilities [B, H, T, S] for the same arguments as referenceAttention. */
export function referenceWeights(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, opts: ReferenceOptions = {}): tf.Tensor4D {
  return tf.tidy(() => {
    const probs = referenceProbs(q, k, v, opts);
    return tf.stack(probs.map((heads) => tf.stack(heads))) as tf.Tensor4D; // [B, H, T, S]
  });
}

/**
 * softmax(q k^T * scale, masked) v for q [B, H, T, D], k [B, G, S, D], v [B, G, S, Dv];
 * query head h reads kv head floor(h / (H / G)). Returns [B, H, T, Dv].
 */
export function referenceAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, opts: ReferenceOptions = {}): tf.Tensor4D {
  return tf.tidy(() => {
    const {B, H, G, S, Dv} = referenceDims(q, k, v);
    const probs = referenceProbs(q, k, v, opts);
    const batches: tf.Tensor[] = [];
    for (let b = 0; b < B; b++) {
      const heads: tf.Tensor[] = [];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G));
        const vh = tf.reshape(tf.slice(v, [b, g, 0, 0], [1, 1, S, Dv]), [S, Dv]); // [S, Dv]
        heads.push(tf.matMul(probs[b][h], vh));                                  // [T, Dv]
      }
      batches.push(tf.stack(heads));                                             // [H, T, Dv]
    }
    return tf.stack(batches) as tf.Tensor4D;                                     // [B, H, T, Dv]
  });
}

/**
 * Linear attention from features, per prefix, written out: for query i of head h,
 *   out_i = sum_j (qf_i . kf_j) v_j / sum_j (qf_i . kf_j)
 * over the keys j it may see (the same keep table as above: causal and mask). One
 * [T, S] product per (batch, head) with the hidden pairs multiplied by 0; a row that
 * sees no key gives zeros. qf [B, H, T, M], kf [B, G, S, M], v [B, G, S, Dv].
 */
export function referenceLinear(qf: tf.Tensor, kf: tf.Tensor, v: tf.Tensor,
                                opts: Omit<ReferenceOptions, 'scale'> = {}): tf.Tensor4D {
  return tf.tidy(() => {
    const {B, H, G, T, S, D: M, Dv} = referenceDims(qf, kf, v);
    const keep = keepTable(B, H, T, S, opts);
    const batches: tf.Tensor[] = [];
    for (let b = 0; b < B; b++) {
      const heads: tf.Tensor[] = [];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G));
        const qh = tf.reshape(tf.slice(qf, [b, h, 0, 0], [1, 1, T, M]), [T, M]);  // [T, M]
        const kh = tf.reshape(tf.slice(kf, [b, g, 0, 0], [1, 1, S, M]), [S, M]);  // [S, M]
        const vh = tf.reshape(tf.slice(v, [b, g, 0, 0], [1, 1, S, Dv]), [S, Dv]); // [S, Dv]
        const a = tf.mul(tf.matMul(qh, kh, false, true), tf.tensor2d(keep[b][h], [T, S])); // [T, S]
        const empty = keep[b][h].map((row) => [row.some((x) => x === 1) ? 0 : 1]);       // [T, 1]
        const den = tf.add(tf.sum(a, 1, true), tf.tensor2d(empty, [T, 1]));              // [T, 1]
        heads.push(tf.div(tf.matMul(a, vh), den));                                        // [T, Dv]
      }
      batches.push(tf.stack(heads));                                                      // [H, T, Dv]
    }
    return tf.stack(batches) as tf.Tensor4D;                                              // [B, H, T, Dv]
  });
}
