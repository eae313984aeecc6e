/**
 * The naive reference attention that every fast path is tested against.
 *
 * Deliberately plain and slow: one [T, D] x [D, S] product per (batch, head), the mask
 * turned into a JS table of 0/1 values first, a masked softmax written out step by step,
 * and the heads put back together with tf.stack. It shares no code with src/, and it is
 * built only from differentiable tf ops, so tf.grads gives gradients for q, k and v.
 *
 * At the end, kerasMhaReference: Keras 3's MultiHeadAttention / GroupedQueryAttention
 * forward pass (projections, masks, softmax, output projection) for checking a loader of
 * Keras models. It uses no tf at all: plain loops over JS numbers (float64), weights read
 * from Float32Arrays.
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

// ---------------------------------------------------------------------------------------
// Keras 3 MultiHeadAttention / GroupedQueryAttention, inference, in plain loops.
//
// Read from keras-team/keras at 3.16.0.dev (master, Aug 2026; the behaviour below, both
// paths included, is also that of the releases v3.10.0 to v3.15.1):
//   keras/src/layers/attention/multi_head_attention.py
//   keras/src/layers/attention/grouped_query_attention.py
//   keras/src/layers/activations/softmax.py
//   keras/src/backend/{tensorflow,jax,torch,numpy}/nn.py (dot_product_attention)
//
// What the layer does with rank-3 inputs and no gate, sliding window or attention_axes
// (those options are not covered here):
//   q = query . Wq + bq  [B, T, H, D],  k = key . Wk + bk  [B, S, G, D],
//   v = value . Wv + bv  [B, S, G, Dv]   (EinsumDense "abc,cde->abde"; key defaults to value)
//   GQA: ops.repeat(k, H / G, axis=2), so query head h reads kv head floor(h / (H / G)).
//   mask[b, t, s] = query_mask[b, t] & value_mask[b, s] & key_mask[b, s]
//                   & attention_mask[b, t, s] & (s <= t if use_causal_mask)
//   (_compute_causal_mask: cumsum rows >= cumsum cols of ones(1, T, S), top-left also
//   for T != S; the backends' is_causal is tril(ones(T, S)), the same.)
//   logits = q . k * (1 / sqrt(D)), softmax over s, o = probs . v,
//   out = o . Wo + bo  (Wo [H, Dv, Eout]).
//
// Masked logits go through one of two code paths, chosen in _compute_attention:
//  - 'dotProductAttention': when the layer's dropout is 0 and return_attention_scores is
//    false (rank-4 projections always hold here): ops.dot_product_attention. Every backend
//    sets masked logits to -0.7 * float32 max (tf/numpy/jax: where(mask, logits, -0.7 *
//    3.38953e38); torch adds the same value) and takes a plain softmax. A query row with no
//    visible key therefore gets a uniform 1/S over ALL S keys, masked ones included.
//  - 'softmaxLayer': when dropout > 0 (even at inference: the test is on the dropout
//    rate, not on training) or return_attention_scores=True: the Softmax layer. It sets
//    masked logits to -1e9 (-3e4 in float16), takes the softmax, then, since Keras 3.10
//    (#21149, Apr 2025; now `where(mask, outputs, 0.0)`), zeroes the masked positions, so a
//    row with no visible key gives all-zero probabilities and its output is just bo.
// Rows with at least one visible key are the same on both paths. Dropout itself is never
// applied (inference).
// ---------------------------------------------------------------------------------------

/**
 * The weights of a Keras MultiHeadAttention (G = H) or GroupedQueryAttention layer, flat
 * row-major as Keras stores them. A bias is null for use_bias=False.
 */
export interface KerasMhaWeights {
  /** query/kernel [Eq, H, D] and query/bias [H, D]. */
  queryKernel: Float32Array; queryBias: Float32Array | null;
  /** key/kernel [Ek, G, D] and key/bias [G, D]. */
  keyKernel: Float32Array; keyBias: Float32Array | null;
  /** value/kernel [Ev, G, Dv] and value/bias [G, Dv]. */
  valueKernel: Float32Array; valueBias: Float32Array | null;
  /** attention_output/kernel [H, Dv, Eout] and attention_output/bias [Eout]. */
  outputKernel: Float32Array; outputBias: Float32Array | null;
}

/**
 * A mask value: true, or any nonzero number, means "may attend" (Keras casts masks to bool).
 * Use 0/1 or booleans: GroupedQueryAttention hands a lone attention_mask to the Softmax
 * layer uncast, which keeps only values > 0.5.
 */
export type KerasMaskValue = number | boolean;

export interface KerasMhaOptions {
  /** H: query heads (num_heads, or GroupedQueryAttention's num_query_heads). */
  numHeads: number;
  /** G: key/value heads (GroupedQueryAttention's num_key_value_heads). Default numHeads. */
  numKvHeads?: number;
  /** D: key_dim / head_dim; the logits are scaled by 1 / sqrt(D). */
  headDim: number;
  /** Dv: value_dim. Default headDim (GroupedQueryAttention always has Dv = D). */
  valueDim?: number;
  /**
   * [B][T]: query positions that may attend at all. Note that Keras 3's MultiHeadAttention
   * (since 3.8) takes it only from the query tensor's Keras mask (call() overwrites its
   * query_mask argument with backend.get_keras_mask(query)); GroupedQueryAttention uses the
   * argument. Pass the mask the layer actually ends up with.
   */
  queryMask?: ArrayLike<KerasMaskValue>[];
  /** [B][S]: value positions that may be attended to. */
  valueMask?: ArrayLike<KerasMaskValue>[];
  /** [B][S]: key positions that may be attended to. */
  keyMask?: ArrayLike<KerasMaskValue>[];
  /** [B][T][S]: attention_mask. */
  attentionMask?: ArrayLike<KerasMaskValue>[][];
  /** use_causal_mask: query t sees key s iff s <= t (top-left, also for T != S). */
  useCausalMask?: boolean;
  /**
   * Which Keras code path to mirror; they differ only on a query row that sees no key
   * (see the comment above): 'dotProductAttention' (default; what Keras runs for a layer
   * with dropout 0 and return_attention_scores=False) gives that row a uniform average over
   * all S values, 'softmaxLayer' (dropout > 0 or return_attention_scores=True) gives it
   * zeros, so its output is the output bias alone.
   */
  path?: 'dotProductAttention' | 'softmaxLayer';
}

/**
 * A [B][L][E] input: nested arrays (the innermost rows may be Float32Arrays), or flat
 * row-major data with its shape.
 */
export type KerasInput3 = ArrayLike<number>[][] | {data: ArrayLike<number>; shape: [number, number, number]};

/** -0.7 * float32 max: what ops.dot_product_attention writes at masked logits. */
const KERAS_DPA_MASKED_LOGIT = -0.7 * 3.38953e38;
/** What the Softmax layer writes at masked logits (float32 and wider). */
const KERAS_SOFTMAX_MASKED_LOGIT = -1e9;

/** An input as plain nested float64 arrays [B][L][E], its shape checked to be a box. */
function kerasRead3(name: string, x: KerasInput3): number[][][] {
  if (!Array.isArray(x)) {
    const {data, shape} = x as {data: ArrayLike<number>; shape: [number, number, number]};
    const [B, L, E] = shape;
    if (data.length !== B * L * E) {
      throw new Error(`kerasMhaReference: ${name} has ${data.length} values for shape [${shape}]`);
    }
    return Array.from({length: B}, (_, b) => Array.from({length: L}, (_, l) =>
      Array.from({length: E}, (_, e) => Number(data[(b * L + l) * E + e]))));
  }
  const nested = x as ArrayLike<number>[][];
  const B = nested.length;
  const L = B > 0 ? nested[0].length : 0;
  const E = L > 0 ? nested[0][0].length : 0;
  const out: number[][][] = [];
  for (let b = 0; b < B; b++) {
    if (nested[b].length !== L) throw new Error(`kerasMhaReference: ${name}[${b}] has ${nested[b].length} rows, not ${L}`);
    out.push([]);
    for (let l = 0; l < L; l++) {
      const row = nested[b][l];
      if (row.length !== E) throw new Error(`kerasMhaReference: ${name}[${b}][${l}] has ${row.length} values, not ${E}`);
      out[b].push(Array.from(row, Number));
    }
  }
  return out;
}

/** Checks that a flat weight holds exactly the product of its dims. */
function kerasCheckLength(name: string, w: ArrayLike<number>, dims: number[]): void {
  const n = dims.reduce((a, c) => a * c, 1);
  if (w.length !== n) throw new Error(`kerasMhaReference: ${name} has ${w.length} values, expected [${dims}] = ${n}`);
}

/**
 * EinsumDense "abc,cde->abde": y[b][l][n][d] = sum_e x[b][l][e] * W[e, n, d] + bias[n, d],
 * with W [E, N, Dh] and bias [N, Dh] (or null) flat row-major.
 */
function kerasProject(x: number[][][], W: Float32Array, bias: Float32Array | null,
                      N: number, Dh: number): number[][][][] {
  const y: number[][][][] = [];
  for (let b = 0; b < x.length; b++) {
    y.push([]);
    for (let l = 0; l < x[b].length; l++) {
      const row = x[b][l];
      const heads: number[][] = [];
      for (let n = 0; n < N; n++) {
        const vec: number[] = [];
        for (let d = 0; d < Dh; d++) {
          let acc = bias != null ? bias[n * Dh + d] : 0;
          for (let e = 0; e < row.length; e++) acc += row[e] * W[(e * N + n) * Dh + d];
          vec.push(acc);
        }
        heads.push(vec);
      }
      y[b].push(heads);
    }
  }
  return y;
}

/** Reads mask[b][i] as Keras' cast to bool: true, or any nonzero number. */
function kerasMaskAt(name: string, m: ArrayLike<KerasMaskValue>[], b: number, i: number, n: number): boolean {
  if (m.length <= b || m[b].length !== n) {
    throw new Error(`kerasMhaReference: ${name}[${b}] must hold ${n} values`);
  }
  return Number(m[b][i]) !== 0;
}

/**
 * Keras 3's MultiHeadAttention / GroupedQueryAttention forward pass at inference, in plain
 * float64 loops: query [B][T][Eq], value [B][S][Ev], key [B][S][Ek] (null: the value).
 * Returns [B][T][Eout]. See the comment above for the math and for the two masking paths.
 */
export function kerasMhaReference(query: KerasInput3, value: KerasInput3, key: KerasInput3 | null,
                                  w: KerasMhaWeights, opts: KerasMhaOptions): number[][][] {
  const H = opts.numHeads;
  const G = opts.numKvHeads ?? H;
  const D = opts.headDim;
  const Dv = opts.valueDim ?? D;
  for (const [n, v] of [['numHeads', H], ['numKvHeads', G], ['headDim', D], ['valueDim', Dv]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`kerasMhaReference: ${n} must be a positive integer, got ${v}`);
  }
  if (H % G !== 0) throw new Error(`kerasMhaReference: numHeads ${H} is not a multiple of numKvHeads ${G}`);

  const qIn = kerasRead3('query', query);
  const vIn = kerasRead3('value', value);
  const kIn = key == null ? vIn : kerasRead3('key', key);
  const B = qIn.length;
  const T = B > 0 ? qIn[0].length : 0;
  const S = vIn.length > 0 ? vIn[0].length : 0;
  if (vIn.length !== B || kIn.length !== B || (B > 0 && kIn[0].length !== S)) {
    throw new Error('kerasMhaReference: query, value and key must share B, and value and key S');
  }
  const dimOf = (x: number[][][]) => (x.length > 0 && x[0].length > 0 ? x[0][0].length : 0);
  const Eq = dimOf(qIn);
  const Ek = dimOf(kIn);
  const Ev = dimOf(vIn);
  const Eout = w.outputKernel.length / (H * Dv);
  if (!Number.isInteger(Eout)) {
    throw new Error(`kerasMhaReference: outputKernel has ${w.outputKernel.length} values, not a multiple of H * Dv = ${H * Dv}`);
  }
  kerasCheckLength('queryKernel', w.queryKernel, [Eq, H, D]);
  kerasCheckLength('keyKernel', w.keyKernel, [Ek, G, D]);
  kerasCheckLength('valueKernel', w.valueKernel, [Ev, G, Dv]);
  if (w.queryBias != null) kerasCheckLength('queryBias', w.queryBias, [H, D]);
  if (w.keyBias != null) kerasCheckLength('keyBias', w.keyBias, [G, D]);
  if (w.valueBias != null) kerasCheckLength('valueBias', w.valueBias, [G, Dv]);
  if (w.outputBias != null) kerasCheckLength('outputBias', w.outputBias, [Eout]);

  // The three projections; q scaled by 1 / sqrt(D) as the Softmax-layer path does (the
  // fused path scales the logits instead: the same in exact arithmetic).
  const scale = 1 / Math.sqrt(D);
  const q = kerasProject(qIn, w.queryKernel, w.queryBias, H, D);    // [B][T][H][D]
  const k = kerasProject(kIn, w.keyKernel, w.keyBias, G, D);        // [B][S][G][D]
  const v = kerasProject(vIn, w.valueKernel, w.valueBias, G, Dv);   // [B][S][G][Dv]

  const softmaxLayer = (opts.path ?? 'dotProductAttention') === 'softmaxLayer';
  if (opts.path != null && opts.path !== 'dotProductAttention' && opts.path !== 'softmaxLayer') {
    throw new Error(`kerasMhaReference: unknown path ${String(opts.path)}`);
  }
  const maskedLogit = softmaxLayer ? KERAS_SOFTMAX_MASKED_LOGIT : KERAS_DPA_MASKED_LOGIT;

  const out: number[][][] = [];
  for (let b = 0; b < B; b++) {
    out.push([]);
    for (let t = 0; t < T; t++) {
      // keep[s]: the AND of every mask Keras merges, for this (b, t).
      const keep: boolean[] = [];
      for (let s = 0; s < S; s++) {
        let ok = true;
        if (opts.queryMask != null && !kerasMaskAt('queryMask', opts.queryMask, b, t, T)) ok = false;
        if (opts.valueMask != null && !kerasMaskAt('valueMask', opts.valueMask, b, s, S)) ok = false;
        if (opts.keyMask != null && !kerasMaskAt('keyMask', opts.keyMask, b, s, S)) ok = false;
        if (opts.attentionMask != null) {
          const am = opts.attentionMask;
          if (am.length !== B || am[b].length !== T) throw new Error('kerasMhaReference: attentionMask must be [B][T][S]');
          if (!kerasMaskAt(`attentionMask[${b}]`, am[b], t, s, S)) ok = false;
        }
        if (opts.useCausalMask && !(s <= t)) ok = false;
        keep.push(ok);
      }

      // o[h][dv]: attention output of head h at (b, t).
      const o: number[][] = [];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / G)); // ops.repeat(k, H / G, axis=2)
        // 1. Logits, masked ones replaced by the path's large negative value.
        const logits: number[] = [];
        for (let s = 0; s < S; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += (q[b][t][h][d] * scale) * k[b][s][g][d];
          logits.push(keep[s] ? dot : maskedLogit);
        }
        // 2. A plain softmax over s: exp(x - max) / sum.
        let max = -Infinity;
        for (const x of logits) if (x > max) max = x;
        const e = logits.map((x) => Math.exp(x - max));
        const sum = e.reduce((a, c) => a + c, 0);
        const probs = e.map((x) => x / sum);
        // 3. The Softmax layer then zeroes the masked positions (Keras >= 3.10).
        if (softmaxLayer) for (let s = 0; s < S; s++) if (!keep[s]) probs[s] = 0;
        // 4. probs . v of kv head g.
        const head: number[] = [];
        for (let dv = 0; dv < Dv; dv++) {
          let acc = 0;
          for (let s = 0; s < S; s++) acc += probs[s] * v[b][s][g][dv];
          head.push(acc);
        }
        o.push(head);
      }

      // EinsumDense "abcd,cde->abe": out[e] = sum_{h, dv} o[h][dv] * Wo[h, dv, e] + bo[e].
      const row: number[] = [];
      for (let eo = 0; eo < Eout; eo++) {
        let acc = w.outputBias != null ? w.outputBias[eo] : 0;
        for (let h = 0; h < H; h++) {
          for (let dv = 0; dv < Dv; dv++) acc += o[h][dv] * w.outputKernel[(h * Dv + dv) * Eout + eo];
        }
        row.push(acc);
      }
      out[b].push(row);
    }
  }
  return out;
}

export interface GraphReferenceWeights {
  kernel: tf.Tensor; attentionSource?: tf.Tensor; attentionTarget?: tf.Tensor; targetKernel?: tf.Tensor;
  attention?: tf.Tensor; edgeKernel?: tf.Tensor; attentionEdge?: tf.Tensor; bias?: tf.Tensor;
}

/**
 * Graph attention by its definition, one node and one head at a time: x [B, N, F], edges a
 * JS list [B][E] of [source, target] ([-1, -1] = padding), attr [B, E, edgeDim] or null.
 * For node i the incoming edges j -> i are listed by hand (self loops dropped and one added,
 * with the mean attribute of the others, when selfLoops), each score written out as a sum
 * of products, a tf.softmax over the list, and the weighted sum of the sources' rows.
 * Returns the output [B, N, H * C] (or [B, N, C]) and the alpha of each listed edge.
 */
export function referenceGraph(x: tf.Tensor, edges: number[][][], w: GraphReferenceWeights, attr: tf.Tensor | null,
                               opts: {version: 'gat' | 'gatv2'; slope: number; selfLoops: boolean; concat: boolean}):
  {output: tf.Tensor; alpha: number[][][][]} {
  const [B, N, F] = x.shape as [number, number, number];
  const [, H, C] = w.kernel.shape as [number, number, number];
  const alpha: number[][][][] = []; // [b][i][k] -> per-head alpha of node i's k-th listed edge
  const output = tf.tidy(() => {
    const graphs: tf.Tensor[] = [];
    for (let b = 0; b < B; b++) {
      alpha.push([]);
      const xb = tf.reshape(tf.slice(x, [b, 0, 0], [1, N, F]), [N, F]);
      const nodesOut: tf.Tensor[] = [];
      for (let i = 0; i < N; i++) {
        // Incoming edges of i: [source, attr row or 'mean'].
        const list: [number, number | 'mean'][] = [];
        edges[b].forEach(([s, t], e) => {
          if (s === -1 && t === -1) return;
          if (t !== i) return;
          if (opts.selfLoops && s === t) return;
          list.push([s, e]);
        });
        const others = list.map(([, e]) => e as number);
        if (opts.selfLoops) list.push([i, 'mean']);
        const attrOf = (e: number | 'mean'): tf.Tensor => {
          const D = attr!.shape[2] as number;
          if (e !== 'mean') return tf.reshape(tf.slice(attr!, [b, e, 0], [1, 1, D]), [1, D]);
          if (others.length === 0) return tf.zeros([1, D]);
          return tf.div(tf.addN(others.map((o) => tf.reshape(tf.slice(attr!, [b, o, 0], [1, 1, D]), [1, D]))),
            others.length);
        };
        const heads: tf.Tensor[] = [];
        const headAlpha: number[][] = list.map(() => []);
        for (let h = 0; h < H; h++) {
          const Wh = tf.reshape(tf.slice(w.kernel, [0, h, 0], [F, 1, C]), [F, C]);
          const proj = (n: number, W: tf.Tensor) => tf.matMul(tf.slice(xb, [n, 0], [1, F]), W); // [1, C]
          const vec = (t: tf.Tensor) => tf.reshape(tf.slice(t, [h, 0], [1, C]), [1, C]);
          const edgeProj = (e: number | 'mean') => {
            const D = attr!.shape[2] as number;
            return tf.matMul(attrOf(e), tf.reshape(tf.slice(w.edgeKernel!, [0, h, 0], [D, 1, C]), [D, C]));
          };
          const lrelu = (t: tf.Tensor) => tf.maximum(t, tf.mul(t, opts.slope)); // 0 <= slope <= 1
          const scores = list.map(([s, e]) => {
            if (opts.version === 'gat') {
              let z = tf.add(tf.sum(tf.mul(proj(s, Wh), vec(w.attentionSource!))),
                tf.sum(tf.mul(proj(i, Wh), vec(w.attentionTarget!))));
              if (attr != null) z = tf.add(z, tf.sum(tf.mul(edgeProj(e), vec(w.attentionEdge!))));
              return lrelu(z);
            }
            const Wt = tf.reshape(tf.slice(w.targetKernel!, [0, h, 0], [F, 1, C]), [F, C]);
            let z = tf.add(proj(s, Wh), proj(i, Wt));
            if (attr != null) z = tf.add(z, edgeProj(e));
            return tf.sum(tf.mul(lrelu(z), vec(w.attention!)));
          });
          if (list.length === 0) {
            heads.push(tf.zeros([1, C]));
            continue;
          }
          const a = tf.softmax(tf.reshape(tf.stack(scores), [1, list.length]));   // [1, k]
          const rows = tf.concat(list.map(([s]) => proj(s, Wh)), 0);               // [k, C]
          a.dataSync().forEach((v, k) => headAlpha[k].push(v));
          heads.push(tf.matMul(a, rows));                                          // [1, C]
        }
        alpha[b].push(headAlpha);
        nodesOut.push(opts.concat ? tf.concat(heads, 1) : tf.div(tf.addN(heads), H));
      }
      graphs.push(tf.concat(nodesOut, 0));
    }
    let out = tf.stack(graphs);
    if (w.bias != null) out = tf.add(out, w.bias);
    return out;
  });
  return {output, alpha};
}
