// A plain float64 reference of one EGNN layer with attention (equivariantAttention's
// formulas, see src/ops/equivariant.ts), one node and one channel at a time, and central
// finite differences of it for the gradients. Nothing here uses tf ops.
import * as tf from '@tensorflow/tfjs';

/** A float64 array with its shape, row-major. */
export interface Arr {
  shape: number[];
  data: Float64Array;
}

export function arr(t: tf.Tensor): Arr {
  return {shape: t.shape.slice(), data: Float64Array.from(t.dataSync())};
}

export interface ReferenceOptions {
  coordsWeight: number;
  aggregation: 'mean' | 'sum';
  activation: 'swish' | 'relu' | 'tanh';
  residual: boolean;
}

/** Inputs and weights by name: features, positions, edgeAttr?, velocities? and the EquivariantWeights keys. */
export type ReferenceInputs = Record<string, Arr>;

const ACT = {
  swish: (v: number) => v / (1 + Math.exp(-v)),
  relu: (v: number) => Math.max(v, 0),
  tanh: (v: number) => Math.tanh(v),
};

/** The (r, c) entry of a 2-D Arr, or entry r of a 1-D one. */
function at(a: Arr, r: number, c = 0): number {
  return a.data[a.shape.length === 1 ? r : r * a.shape[1] + c];
}

/** act(sum_k in[k] W[k][c] + b[c]) for each output channel c (b may be missing; act null: none). */
function layer(input: number[], w: Arr, b: Arr | undefined, act: ((v: number) => number) | null): number[] {
  const out: number[] = [];
  for (let c = 0; c < w.shape[1]; c++) {
    let s = b != null ? at(b, c) : 0;
    for (let k = 0; k < input.length; k++) s += input[k] * at(w, k, c);
    out.push(act != null ? act(s) : s);
  }
  return out;
}

export interface ReferenceOutput {
  /** [b][i][c] */
  h: number[][][];
  /** [b][i][axis] */
  x: number[][][];
  /** [b][e]: the gate of edge e, 0 for padding. */
  gate: number[][];
}

/**
 * One EGNN layer with attention in float64: for each graph b and node i, every edge j -> i
 * listed in edges[b] (padding [-1, -1] skipped, self loops kept) in turn.
 */
export function referenceEquivariant(inp: ReferenceInputs, edges: number[][][], o: ReferenceOptions): ReferenceOutput {
  const [B, N, F] = inp.features.shape;
  const d = inp.positions.shape[2];
  const A = inp.edgeAttr != null ? inp.edgeAttr.shape[2] : 0;
  const E = edges[0]?.length ?? 0;
  const act = ACT[o.activation];
  const hOf = (b: number, n: number) => Array.from({length: F}, (_, c) => inp.features.data[(b * N + n) * F + c]);
  const xOf = (b: number, n: number) => Array.from({length: d}, (_, a) => inp.positions.data[(b * N + n) * d + a]);
  const out: ReferenceOutput = {h: [], x: [], gate: []};
  for (let b = 0; b < B; b++) {
    out.h.push([]);
    out.x.push([]);
    out.gate.push(new Array(E).fill(0));
    for (let i = 0; i < N; i++) {
      const hi = hOf(b, i);
      const xi = xOf(b, i);
      const msgSum: number[] = new Array(inp.edgeKernel1.shape[1]).fill(0);
      const shift: number[] = new Array(d).fill(0);
      let count = 0;
      edges[b].forEach(([j, t], e) => {
        if (t !== i || j === -1) return;
        count++;
        const xj = xOf(b, j);
        const offset = xi.map((v, a) => v - xj[a]);
        const radial = offset.reduce((s, v) => s + v * v, 0);
        const attr = Array.from({length: A}, (_, k) => inp.edgeAttr.data[(b * E + e) * A + k]);
        const m1 = layer([...hi, ...hOf(b, j), radial, ...attr], inp.edgeKernel0, inp.edgeBias0, act);
        const m2 = layer(m1, inp.edgeKernel1, inp.edgeBias1, act);
        const z = layer(m2, inp.attentionKernel, inp.attentionBias, null)[0];
        const gate = 1 / (1 + Math.exp(-z));
        out.gate[b][e] = gate;
        const m = m2.map((v) => gate * v);
        m.forEach((v, c) => { msgSum[c] += v; });
        const phiX = layer(layer(m, inp.coordKernel0, inp.coordBias0, act), inp.coordKernel1, undefined, null)[0];
        offset.forEach((v, a) => { shift[a] += v * phiX; });
      });
      const scale = o.coordsWeight / (o.aggregation === 'mean' ? Math.max(count, 1) : 1);
      const xNew = xi.map((v, a) => v + scale * shift[a]);
      if (inp.velocities != null) {
        const phiV = layer(layer(hi, inp.velocityKernel0, inp.velocityBias0, act), inp.velocityKernel1,
          inp.velocityBias1, null)[0];
        for (let a = 0; a < d; a++) xNew[a] += phiV * inp.velocities.data[(b * N + i) * d + a];
      }
      const hNew = layer(layer([...hi, ...msgSum], inp.nodeKernel0, inp.nodeBias0, act), inp.nodeKernel1,
        inp.nodeBias1, null);
      out.h[b].push(o.residual ? hNew.map((v, c) => v + hi[c]) : hNew);
      out.x[b].push(xNew);
    }
  }
  return out;
}

/**
 * Gradients of L = sum(cotH * h') + sum(cotX * x') for every named input, by central
 * differences of the float64 reference (step 1e-6: truncation and rounding near 1e-10).
 */
export function referenceGradients(inp: ReferenceInputs, edges: number[][][], o: ReferenceOptions,
                                   cotH: Arr, cotX: Arr): Record<string, Float64Array> {
  const loss = () => {
    const r = referenceEquivariant(inp, edges, o);
    let s = 0;
    r.h.flat(2).forEach((v, k) => { s += v * cotH.data[k]; });
    r.x.flat(2).forEach((v, k) => { s += v * cotX.data[k]; });
    return s;
  };
  const eps = 1e-6;
  const grads: Record<string, Float64Array> = {};
  for (const [name, a] of Object.entries(inp)) {
    const g = new Float64Array(a.data.length);
    for (let k = 0; k < a.data.length; k++) {
      const v = a.data[k];
      a.data[k] = v + eps;
      const up = loss();
      a.data[k] = v - eps;
      const down = loss();
      a.data[k] = v;
      g[k] = (up - down) / (2 * eps);
    }
    grads[name] = g;
  }
  return grads;
}
