/**
 * A k-d tree over one point cloud (any dimension d >= 1) in plain typed arrays, for the
 * neighbour searches of radiusGraph and knnGraph: never an N x N distance matrix.
 *
 * Build: the points are split at the median of their widest coordinate (equal coordinates in
 * index order) until a node holds at most LEAF_SIZE points: O(d N log N) time (a linear-time
 * selection per level) and O(N d) memory (the points copied in tree order as float64, their
 * original indices and the nodes).
 * Query: the `cap` nearest points to a point of the cloud within a squared distance `limit`,
 * ordered by (squared distance, index), ties going to the lower index. The search keeps the
 * `cap` best in a heap, visits the nearer child first and the farther only when its cell
 * could hold a point that beats the worst kept one (the query's distance to the cell kept per
 * axis, as Arya and Mount's incremental search; a cell at the bound whose indices all exceed
 * the worst kept one's is skipped, which keeps many duplicated points, zero padding say, from
 * costing O(N) per query). A query costs about O(log N + cap log cap) for well-spread points
 * in low d, O(cap) memory; it degrades towards O(N) in high d or when many points are at the
 * same nonzero distance.
 *
 * Distances are float64 sums of squared float64 differences of the (float32) coordinates,
 * summed over c = 0 .. d - 1 in that order, so equal inputs give bit-equal distances.
 */

/** Most points in a leaf: a split is made only above it, so a leaf also holds at least half of it. */
const LEAF_SIZE = 12;
/** 1 + a margin far above rounding: the cells' distance bounds only prune what is clearly farther. */
const SLACK = 1 + 1e-9;

export class KdTree {
  private readonly d: number;
  /** Shape [n, d]: the points in tree order. */
  private readonly pts: Float64Array;
  /** The original index of the point at each tree position. */
  readonly ids: Int32Array;
  /** Per node: its range [lo, hi) of tree positions, its split axis (-1 for a leaf), its split value, its children. */
  private readonly lo: Int32Array;
  private readonly hi: Int32Array;
  private readonly axis: Int32Array;
  private readonly split: Float64Array;
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  /** Per node: the lowest original index among its points (a cell of higher indices cannot win a tie). */
  private readonly minId: Int32Array;
  private nodes = 0;
  // The current query: its coordinates, the tree position it skips, and a max-heap of the best
  // `cap` (squared distance, index) pairs found so far (the worst at the root).
  private readonly q: Float64Array;
  /** Per axis, the query's distance to the current node's cell along that axis (0 inside it). */
  private readonly off: Float64Array;
  private skip = -1;
  private limit = Infinity;
  private cap = 0;
  private size = 0;
  private heapD = new Float64Array(0);
  private heapJ = new Int32Array(0);

  /** Builds the tree over n points of dimension d read from coords[offset + i * d + c]. */
  constructor(coords: ArrayLike<number>, offset: number, n: number, d: number) {
    this.d = d;
    this.q = new Float64Array(d);
    this.off = new Float64Array(d);
    const perm = new Int32Array(n);
    for (let i = 0; i < n; i++) perm[i] = i;
    const src = new Float64Array(n * d);
    for (let i = 0; i < n * d; i++) src[i] = coords[offset + i];
    // Every split leaves at least ceil(LEAF_SIZE / 2) points per side, so the leaves number at most n / that.
    const maxNodes = 2 * Math.max(1, Math.ceil(n / Math.ceil(LEAF_SIZE / 2)));
    this.lo = new Int32Array(maxNodes);
    this.hi = new Int32Array(maxNodes);
    this.axis = new Int32Array(maxNodes);
    this.split = new Float64Array(maxNodes);
    this.left = new Int32Array(maxNodes);
    this.right = new Int32Array(maxNodes);
    this.minId = new Int32Array(maxNodes);
    this.build(src, perm, 0, n);
    this.ids = perm;
    this.pts = new Float64Array(n * d);
    for (let p = 0; p < n; p++) for (let c = 0; c < d; c++) this.pts[p * d + c] = src[perm[p] * d + c];
  }

  /** Node over tree positions [lo, hi) of perm: splits it at its median along its widest axis. */
  private build(src: Float64Array, perm: Int32Array, lo: number, hi: number): number {
    const node = this.nodes++;
    this.lo[node] = lo;
    this.hi[node] = hi;
    this.axis[node] = -1;
    if (hi - lo <= LEAF_SIZE) {
      let min = perm[lo];
      for (let p = lo + 1; p < hi; p++) min = Math.min(min, perm[p]);
      this.minId[node] = min;
      return node;
    }
    const d = this.d;
    let best = 0;
    let widest = -1;
    for (let c = 0; c < d; c++) {
      let min = Infinity;
      let max = -Infinity;
      for (let p = lo; p < hi; p++) {
        const v = src[perm[p] * d + c];
        if (v < min) min = v;
        if (v > max) max = v;
      }
      if (max - min > widest) {
        widest = max - min;
        best = c;
      }
    }
    const mid = (lo + hi) >> 1;
    select(src, d, best, perm, lo, hi - 1, mid);
    // Positions [lo, mid) hold coordinates <= split, [mid, hi) coordinates >= split, and equal
    // coordinates lie in index order, so that the lower indices of a tie share cells.
    this.axis[node] = best;
    this.split[node] = src[perm[mid] * d + best];
    const l = this.build(src, perm, lo, mid);
    const r = this.build(src, perm, mid, hi);
    this.left[node] = l;
    this.right[node] = r;
    this.minId[node] = Math.min(this.minId[l], this.minId[r]);
    return node;
  }

  /**
   * The at most `cap` nearest points to the point at tree position `pos` whose squared distance
   * is <= limit (leaving that point itself out when `self` is false), written in order of
   * (squared distance, original index) into out[at ...] as original indices. Returns their count.
   */
  nearest(pos: number, cap: number, limit: number, self: boolean, out: Int32Array, at: number): number {
    if (cap <= 0) return 0;
    const d = this.d;
    for (let c = 0; c < d; c++) {
      this.q[c] = this.pts[pos * d + c];
      this.off[c] = 0;
    }
    this.skip = self ? -1 : pos;
    this.limit = limit;
    this.cap = cap;
    this.size = 0;
    if (this.heapD.length < cap) {
      this.heapD = new Float64Array(cap);
      this.heapJ = new Int32Array(cap);
    }
    if (this.nodes > 0 && this.hi[0] > 0) this.search(0, 0);
    // Popping the worst repeatedly fills the output from its end: ascending order.
    const count = this.size;
    for (let k = count - 1; k >= 0; k--) {
      out[at + k] = this.heapJ[0];
      this.pop();
    }
    return count;
  }

  /** The squared distance a point must not exceed to enter the heap (ties then go by index). */
  private bound(): number {
    return this.size === this.cap ? this.heapD[0] : this.limit;
  }

  /** Searches node's points; rd is the squared distance from the query to its cell. */
  private search(node: number, rd: number): void {
    const d = this.d;
    const a = this.axis[node];
    if (a < 0) {
      const q = this.q;
      const pts = this.pts;
      for (let p = this.lo[node], end = this.hi[node]; p < end; p++) {
        if (p === this.skip) continue;
        let d2 = 0;
        for (let c = 0; c < d; c++) {
          const diff = q[c] - pts[p * d + c];
          d2 += diff * diff;
        }
        if (d2 <= this.limit) this.offer(d2, this.ids[p]);
      }
      return;
    }
    const diff = this.q[a] - this.split[node];
    // On the plane, the left child first: it holds the lower indices of equal coordinates.
    const nearFirst = diff <= 0 ? this.left[node] : this.right[node];
    const far = diff <= 0 ? this.right[node] : this.left[node];
    this.search(nearFirst, rd);
    // rd2 is the squared distance from the query to the far cell (every far point is at least
    // that far, up to rounding, which SLACK covers). A cell whose indices all exceed the worst
    // kept one's must hold a strictly nearer point to matter.
    const old = this.off[a];
    const rd2 = rd - old * old + diff * diff;
    const bound = this.bound() * SLACK;
    const strict = this.size === this.cap && this.minId[far] > this.heapJ[0];
    if (strict ? rd2 < bound : rd2 <= bound) {
      this.off[a] = diff;
      this.search(far, rd2);
      this.off[a] = old;
    }
  }

  /** (d2, j) before (heapD[k], heapJ[k]): nearer, or as near with the lower index. */
  private before(d2: number, j: number, k: number): boolean {
    return d2 < this.heapD[k] || (d2 === this.heapD[k] && j < this.heapJ[k]);
  }

  private offer(d2: number, j: number): void {
    const hd = this.heapD;
    const hj = this.heapJ;
    if (this.size < this.cap) {
      // Sift up from the new leaf.
      let k = this.size++;
      while (k > 0) {
        const parent = (k - 1) >> 1;
        if (this.before(d2, j, parent)) break;
        hd[k] = hd[parent];
        hj[k] = hj[parent];
        k = parent;
      }
      hd[k] = d2;
      hj[k] = j;
    } else if (this.before(d2, j, 0)) {
      this.siftDown(d2, j);
    }
  }

  private pop(): void {
    const last = --this.size;
    if (last > 0) this.siftDown(this.heapD[last], this.heapJ[last]);
  }

  /** Puts (d2, j) at the root and sifts it down to its place among size entries. */
  private siftDown(d2: number, j: number): void {
    const hd = this.heapD;
    const hj = this.heapJ;
    const n = this.size;
    let k = 0;
    for (;;) {
      let child = 2 * k + 1;
      if (child >= n) break;
      // The worse of the two children.
      if (child + 1 < n && this.before(hd[child], hj[child], child + 1)) child++;
      if (!this.before(d2, j, child)) break;
      hd[k] = hd[child];
      hj[k] = hj[child];
      k = child;
    }
    hd[k] = d2;
    hj[k] = j;
  }
}

/**
 * Reorders perm[l..r] so that perm[k] holds the point that would be k-th in order of
 * (coordinate `axis`, index), those before it not after it in that order and those after it
 * not before (Wirth's selection: Hoare partitions around a middle element, linear expected time).
 */
function select(src: Float64Array, d: number, axis: number, perm: Int32Array, l: number, r: number, k: number): void {
  while (l < r) {
    const xi = perm[k];
    const x = src[xi * d + axis];
    let i = l;
    let j = r;
    do {
      for (;;) {
        const v = src[perm[i] * d + axis];
        if (v < x || (v === x && perm[i] < xi)) i++;
        else break;
      }
      for (;;) {
        const v = src[perm[j] * d + axis];
        if (x < v || (v === x && xi < perm[j])) j--;
        else break;
      }
      if (i <= j) {
        const t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        i++;
        j--;
      }
    } while (i <= j);
    if (j < k) l = i;
    if (k < i) r = j;
  }
}

/**
 * The largest float64 x with Math.sqrt(x) <= r (r >= 0): comparing a squared distance with it
 * is comparing the float64 distance with r, with no square root per candidate.
 */
export function squaredLimit(r: number): number {
  if (r === Infinity) return Infinity;
  const view = new DataView(new ArrayBuffer(8));
  const step = (x: number, by: bigint): number => {
    view.setFloat64(0, x);
    view.setBigUint64(0, view.getBigUint64(0) + by);
    return view.getFloat64(0);
  };
  let x = r * r;
  if (x === Infinity) x = Number.MAX_VALUE;
  while (x > 0 && Math.sqrt(x) > r) x = step(x, -1n);
  for (;;) {
    const next = step(x, 1n);
    if (next === Infinity || Math.sqrt(next) > r) return x;
    x = next;
  }
}
