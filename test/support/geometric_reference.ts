// A plain float64 geometric attention (PointTransformerConv, see src/ops/geometric.ts): loops
// over one node, one edge and one channel at a time, no tf op. Its gradients are central
// differences in float64 over every entry of every input.
import * as tf from '@tensorflow/tfjs';

/** A float64 array with its shape, row-major. */
export interface Flat {data: Float64Array; shape: number[]}

/** The inputs of the reference, each a Flat; the MLP lists may be empty (gamma: identity). */
export interface GeometricReferenceInputs {
  features: Flat;
  positions: Flat;
  kernel: Flat;
  sourceKernel: Flat;
  targetKernel: Flat;
  positionKernels: Flat[];
  positionBiases: Flat[];
  attentionKernels: Flat[];
  attentionBiases: Flat[];
  bias: Flat | null;
}

export interface GeometricReferenceOptions {
  selfLoops: boolean;
  numHeads: number | null;
}

export function flat(t: tf.Tensor): Flat {
  return {data: Float64Array.from(t.dataSync()), shape: t.shape.slice()};
}

export function tensorOf(f: Flat): tf.Tensor {
  return tf.tensor(Float32Array.from(f.data), f.shape, 'float32');
}

/**
 * Every input in the order the tests pass them to tf.grads: features, positions, kernel,
 * sourceKernel, targetKernel, each position kernel then its bias, each attention kernel then
 * its bias, then the bias (the GeometricAttention layer's getWeights() order after the inputs).
 */
export function inputList(inp: GeometricReferenceInputs): Flat[] {
  const pairs = (ks: Flat[], bs: Flat[]) => ks.flatMap((k, i) => [k, bs[i]]);
  return [inp.features, inp.positions, inp.kernel, inp.sourceKernel, inp.targetKernel,
    ...pairs(inp.positionKernels, inp.positionBiases), ...pairs(inp.attentionKernels, inp.attentionBiases),
    ...(inp.bias != null ? [inp.bias] : [])];
}

/** x W + b for one row x, W [in, out] (row-major), b [out]. */
function linear(x: number[], W: Flat, b: Flat | null): number[] {
  const [rows, cols] = W.shape;
  const y: number[] = [];
  for (let c = 0; c < cols; c++) {
    let sum = b != null ? b.data[c] : 0;
    for (let r = 0; r < rows; r++) sum += x[r] * W.data[r * cols + c];
    y.push(sum);
  }
  return y;
}

/** Linear-ReLU-...-Linear. */
function mlp(x: number[], kernels: Flat[], biases: Flat[]): number[] {
  let h = x;
  kernels.forEach((k, i) => {
    h = linear(h, k, biases[i]);
    if (i < kernels.length - 1) h = h.map((u) => Math.max(u, 0));
  });
  return h;
}

/** Row n of graph b of a [B, N, X] Flat. */
function row(f: Flat, b: number, n: number): number[] {
  const [, N, X] = f.shape;
  return Array.from(f.data.subarray((b * N + n) * X, (b * N + n + 1) * X));
}

/**
 * x'_i = sum over i's incoming edges j of softmax_j(gamma(W_dst x_i - W_src x_j + delta_ij))
 * * (W x_j + delta_ij), delta_ij = h(p_i - p_j), per channel (or per head for C / H channels),
 * plus the bias. Returns [B, N, C].
 */
export function referenceGeometric(inp: GeometricReferenceInputs, edges: number[][][],
                                   opts: GeometricReferenceOptions): Flat {
  const [B, N] = inp.features.shape;
  const C = inp.kernel.shape[1];
  const H = opts.numHeads;
  const out = new Float64Array(B * N * C);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < N; i++) {
      // Node i's sources: its input edges less padding (and less self loops when it gets its own).
      const sources: number[] = [];
      for (const [s, t] of edges[b]) {
        if (s === -1 && t === -1) continue;
        if (t !== i || (opts.selfLoops && s === t)) continue;
        sources.push(s);
      }
      if (opts.selfLoops) sources.push(i);
      const xi = row(inp.features, b, i);
      const pi = row(inp.positions, b, i);
      const target = linear(xi, inp.targetKernel, null);
      const logits: number[][] = [];
      const values: number[][] = [];
      for (const j of sources) {
        const xj = row(inp.features, b, j);
        const pj = row(inp.positions, b, j);
        const delta = mlp(pi.map((u, a) => u - pj[a]), inp.positionKernels, inp.positionBiases);
        const source = linear(xj, inp.sourceKernel, null);
        const z = target.map((u, c) => u - source[c] + delta[c]);
        logits.push(inp.attentionKernels.length > 0 ? mlp(z, inp.attentionKernels, inp.attentionBiases) : z);
        values.push(linear(xj, inp.kernel, null).map((u, c) => u + delta[c]));
      }
      for (let c = 0; c < C; c++) {
        const h = H == null ? c : Math.floor(c / (C / H)); // the logit this channel takes
        let top = -Infinity;
        for (const l of logits) top = Math.max(top, l[h]);
        let sum = 0;
        for (const l of logits) sum += Math.exp(l[h] - top);
        let y = inp.bias != null ? inp.bias.data[c] : 0;
        logits.forEach((l, k) => { y += Math.exp(l[h] - top) / sum * values[k][c]; });
        out[(b * N + i) * C + c] = y;
      }
    }
  }
  return {data: out, shape: [B, N, C]};
}

/**
 * The gradient of sum(reference * cot) for every entry of every input (inputList order):
 * central differences in float64, step eps.
 */
export function referenceGradients(inp: GeometricReferenceInputs, edges: number[][][], opts: GeometricReferenceOptions,
                                   cot: Flat, eps = 1e-5): Flat[] {
  const loss = () => {
    const y = referenceGeometric(inp, edges, opts).data;
    let s = 0;
    for (let k = 0; k < y.length; k++) s += y[k] * cot.data[k];
    return s;
  };
  return inputList(inp).map((f) => {
    const g = new Float64Array(f.data.length);
    for (let k = 0; k < f.data.length; k++) {
      const v = f.data[k];
      f.data[k] = v + eps;
      const up = loss();
      f.data[k] = v - eps;
      const down = loss();
      f.data[k] = v;
      g[k] = (up - down) / (2 * eps);
    }
    return {data: g, shape: f.shape};
  });
}
