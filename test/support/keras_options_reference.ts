/**
 * Keras 3.15's MultiHeadAttention / GroupedQueryAttention with `sliding_window` and
 * `use_gate`, at inference, in plain float64 loops: the attention itself is
 * kerasMhaReference (reference.ts), given the window the way Keras applies it, as one more
 * mask; the gate and the output projection are written out here. No tf.
 *
 * From keras-team/keras v3.15.1 (Apache-2.0), keras/src/layers/attention/
 * multi_head_attention.py (grouped_query_attention.py is the same for these):
 *   _compute_sliding_window_mask   band[t][s] = |t - s| < W, t and s counted from 0 (so
 *                                  aligned top-left whatever T and S are)
 *   _compute_attention_mask        the band ANDed with the padding masks, use_causal_mask's
 *                                  s <= t and attention_mask
 *   build                          gate = EinsumDense("abc,cde->abde", [H, value_dim],
 *                                  bias [H, value_dim] when use_bias, activation sigmoid)
 *   call                           gate = self._gate_dense(query) on the query input, then
 *                                  attention_output = self._output_dense(o * gate)
 * so out[t][e] = sum_{h, dv} o[t][h][dv] g[t][h][dv] Wo[h, dv, e] + bo[e], with
 * g[t][h][dv] = sigmoid(sum_c xq[t][c] Wg[c, h, dv] + bg[h, dv]).
 */
import {kerasMhaReference, KerasMhaOptions, KerasMhaWeights, KerasMaskValue} from './reference';

/** use_gate's weights: gate/kernel [Eq, H, Dv] and gate/bias [H, Dv] (null for use_bias=False), flat row-major. */
export interface KerasGateWeights {
  gateKernel: Float32Array;
  gateBias: Float32Array | null;
}

export interface KerasOptionsReferenceOptions extends KerasMhaOptions {
  /** sliding_window W (null: none). */
  slidingWindow?: number | null;
  /** use_gate=True: the gate's weights (null: no gate). */
  gate?: KerasGateWeights | null;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * The layer's output [B][T][Eout] for query [B][T][Eq], value [B][S][Ev] and key [B][S][Ek]
 * (null: the value), as plain nested arrays.
 */
export function kerasOptionsReference(query: number[][][], value: number[][][], key: number[][][] | null,
                                      w: KerasMhaWeights, opts: KerasOptionsReferenceOptions): number[][][] {
  const {slidingWindow: W = null, gate = null, ...mha} = opts;
  const B = query.length;
  const T = B > 0 ? query[0].length : 0;
  const S = value.length > 0 ? value[0].length : 0;
  const H = opts.numHeads;
  const Dv = opts.valueDim ?? opts.headDim;
  if (W != null && !(Number.isInteger(W) && W > 0)) throw new Error(`kerasOptionsReference: bad slidingWindow ${W}`);

  // 1. The window as Keras applies it: one more mask, ANDed with attention_mask.
  let attentionMask: ArrayLike<KerasMaskValue>[][] | undefined = mha.attentionMask;
  if (W != null) {
    const given = mha.attentionMask;
    attentionMask = Array.from({length: B}, (_, b) => Array.from({length: T}, (_, t) =>
      Array.from({length: S}, (_, s) => Math.abs(t - s) < W && (given == null || Number(given[b][t][s]) !== 0))));
  }
  if (gate == null) return kerasMhaReference(query, value, key, w, {...mha, attentionMask});

  // 2. o [B][T][H * Dv]: the attention before the output projection (an identity
  //    projection [H, Dv, H * Dv] with no bias gives it exactly: every other term adds 0).
  const n = H * Dv;
  const identity = new Float32Array(n * n);
  for (let i = 0; i < n; i++) identity[i * n + i] = 1;
  const o = kerasMhaReference(query, value, key, {...w, outputKernel: identity, outputBias: null},
    {...mha, attentionMask});

  // 3. The gate from the query input, o * gate, and the output projection.
  const Eq = T > 0 ? query[0][0].length : 0;
  const Eout = w.outputKernel.length / n;
  if (gate.gateKernel.length !== Eq * n || (gate.gateBias != null && gate.gateBias.length !== n)) {
    throw new Error(`kerasOptionsReference: the gate must be [${Eq}, ${H}, ${Dv}] with bias [${H}, ${Dv}]`);
  }
  return query.map((rows, b) => rows.map((x, t) => {
    const gated: number[] = [];
    for (let hd = 0; hd < n; hd++) { // hd = h * Dv + dv
      let z = gate.gateBias != null ? gate.gateBias[hd] : 0;
      for (let c = 0; c < Eq; c++) z += x[c] * gate.gateKernel[c * n + hd];
      gated.push(o[b][t][hd] * sigmoid(z));
    }
    const row: number[] = [];
    for (let e = 0; e < Eout; e++) {
      let acc = w.outputBias != null ? w.outputBias[e] : 0;
      for (let hd = 0; hd < n; hd++) acc += gated[hd] * w.outputKernel[hd * Eout + e];
      row.push(acc);
    }
    return row;
  }));
}
