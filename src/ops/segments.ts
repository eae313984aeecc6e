/**
 * Segment operations over edge lists, shared by the graph and geometric ops: rows gathered
 * onto edges, each segment's maximum, and a softmax over the rows that share a segment (a
 * node's incoming edges), all in tf ops with gradients. The segment ids are known in
 * JavaScript (they come from integer edge lists), so the index tensors are built there.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * tf.gather of rows. A zero-size params gives zeros of the right shape (tfjs-wasm 4.22's
 * gather returns [1, 1, 0, ...] there), still connected to params for the gradient.
 */
export function gatherRows(params: tf.Tensor, indices: tf.Tensor1D): tf.Tensor {
  if (params.size > 0) return tf.gather(params, indices);
  return tf.add(tf.zeros([indices.shape[0], ...params.shape.slice(1)]), tf.sum(params));
}

/**
 * Each row's segment maximum: shift[k] = the largest of scores [K, H] over the rows k' with
 * dst[k'] == dst[k], per head. tfjs has no segment-max op, and reading the scores back to
 * JavaScript would be a synchronous read of a computed tensor (a GPU readback on webgl and
 * webgpu, which can lose a webgpu device), so this is a segmented scan in tf ops: the rows
 * sorted by segment (the order comes from dst, known in JavaScript), then for d = 1, 2, 4, ...
 * below the longest segment, m[p] = max(m[p], m[max(p - d, start of p's segment)]), after
 * which the last row of each segment holds its maximum. log2(longest segment) gathers of
 * [K, H]; the indices are built from dst alone. When every segment has the same length, one
 * max over the sorted rows reshaped to [segments, length, H] does it.
 */
export function segmentMax(scores: tf.Tensor, dstValues: Int32Array, segments: number): tf.Tensor {
  const K = dstValues.length;
  const count = new Int32Array(segments);
  for (let k = 0; k < K; k++) count[dstValues[k]]++;
  const offset = new Int32Array(segments);
  let longest = 0;
  for (let i = 0, at = 0; i < segments; i++) {
    offset[i] = at;
    at += count[i];
    longest = Math.max(longest, count[i]);
  }
  const order = new Int32Array(K);                      // sorted position -> row (stable counting sort)
  const start = new Int32Array(K);                      // sorted position -> its segment's first position
  const fill = offset.slice();
  for (let k = 0; k < K; k++) {
    const p = fill[dstValues[k]]++;
    order[p] = k;
    start[p] = offset[dstValues[k]];
  }
  const last = Int32Array.from(dstValues, (i) => offset[i] + count[i] - 1); // row -> its segment's last position
  if (K > 0 && count.every((c) => c === longest)) {
    // Every segment has the same length L (a kNN graph with self loops, a complete graph): the sorted
    // rows reshape to [segments, L, ...] and one max over L gives every segment's maximum.
    return tf.tidy(() => {
      const sorted = tf.gather(scores, tf.tensor1d(order, 'int32'));                   // [K, ...]
      const blocks = tf.reshape(sorted, [segments, longest, ...scores.shape.slice(1)]); // [segments, L, ...]
      return tf.gather(tf.max(blocks, 1), tf.tensor1d(dstValues, 'int32'));             // [K, ...]
    });
  }
  return tf.tidy(() => {
    let m = tf.gather(scores, tf.tensor1d(order, 'int32'));
    for (let d = 1; d < longest; d *= 2) {
      // Each step's tensors go as soon as the next m exists: two [K, H] live at a time, not 3 per step.
      const back = tf.tensor1d(Int32Array.from(start, (first, p) => Math.max(p - d, first)), 'int32');
      const earlier = tf.gather(m, back);
      const next = tf.maximum(m, earlier);
      tf.dispose([m, back, earlier]);
      m = next;
    }
    return tf.gather(m, tf.tensor1d(last, 'int32'));
  });
}

/**
 * alpha = the softmax of scores [K, ...] over the rows that share a segment (dst), for
 * `segments` segments, each trailing entry (head, channel) on its own: a custom gradient
 * built from gathers and segment sums.
 */
export function segmentSoftmax(scores: tf.Tensor, dst: tf.Tensor1D, dstValues: Int32Array,
                               segments: number): tf.Tensor {
  const f = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const alpha = tf.tidy(() => {
      const ex = tf.exp(tf.sub(x, segmentMax(x, dstValues, segments)));    // [K, H], each segment's largest is 1
      const sums = tf.unsortedSegmentSum(ex, dst, segments);                 // [segments, H]
      return tf.div(ex, tf.gather(sums, dst));
    });
    save([alpha]);
    return {
      value: alpha,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [a] = saved;
        // The caller's dst is gone by now (its tidy has ended): the backward makes its own.
        const ids = tf.tensor1d(dstValues, 'int32');
        const ag = tf.mul(a, dy);
        return tf.mul(a, tf.sub(dy, tf.gather(tf.unsortedSegmentSum(ag, ids, segments), ids)));
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(scores) as tf.Tensor;
}

/**
 * tf.unsortedSegmentSum of the rows of x [K, ...] by ids (values idValues, every one in
 * [0, segments)): the same sums, with a gradient of one gather of dy. tfjs's gradient also
 * masks out negative ids, with a broadcast logicalAnd and a select over the whole gradient
 * (slow on wasm: docs/benchmarks.md); these ids have none.
 */
export function segmentSum(x: tf.Tensor, ids: tf.Tensor1D, idValues: Int32Array, segments: number): tf.Tensor {
  if (x.shape[0] === 0) return tf.unsortedSegmentSum(x, ids, segments);
  const f = tf.customGrad(((v: tf.Tensor, save: tf.GradSaveFunc) => {
    save([]);
    return {
      value: tf.unsortedSegmentSum(v, ids, segments),
      // The caller's ids may be disposed by the time of the backward: it makes its own.
      gradFunc: (dy: tf.Tensor) => tf.gather(dy, tf.tensor1d(idValues, 'int32')),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x) as tf.Tensor;
}
