/**
 * The graph toy task (its model is graph_network.ts's).
 *
 * 'graph-majority': batches of small random directed graphs, each padded to N nodes and
 * E = N * maxDegree edges. A graph has between ceil(N / 2) and N nodes, each coloured with
 * one of `colours` colours; each node receives edges from 1 .. maxDegree distinct other
 * nodes. A node's label is the colour held by most of the nodes within `hops` edges
 * upstream (itself and every node with a path of at most `hops` edges into it); a node
 * whose count ties is not scored. With hops 2 (the default) one GraphAttention layer sees
 * only a node's in-neighbours: the answer needs two stacked layers. The node's own colour
 * alone does not tell it; only the graph does.
 *
 * As token tasks: inputs [n, N] hold the nodes' colours as symbols (FIRST_SYMBOL + colour;
 * BLANK for padding nodes), targets [n, N] the labels, weights [n, N] 1 for real nodes; and
 * edges [n, E, 2] int32 ([source, target], [-1, -1] for padding). So the trainer's loss,
 * accuracy and checkpoints work unchanged; the model takes [tokens, edges].
 */
import {AttentionError, show} from '../core/errors';
import {uniform} from '../ops/random_features';
import {assertPositiveInt, checkArgNames} from '../core/validate';
import {batchSeed, Task, TaskBatch} from './task_base';

export const GRAPH_TASK = 'graph-majority';
const BLANK = 0;
const FIRST_SYMBOL = 2;

export interface GraphTaskOptions {
  /** N: nodes per graph, at most (padded to). Default 16. */
  nodes?: number;
  /** Colours of the nodes (the classes). Default 3. */
  colours?: number;
  /** The most edges into a node. Default 3. */
  maxDegree?: number;
  /** How far upstream a node's label looks: paths of at most this many edges. Default 2. */
  hops?: number;
}

export const GRAPH_TASK_OPTIONS = ['nodes', 'colours', 'maxDegree', 'hops'] as const;

export type GraphTask = Task<typeof GRAPH_TASK, Required<GraphTaskOptions>> & {edgesPerExample: number};

/** The fewest nodes a graph of the task has: half the padded size, and 2, so every node can have an edge into it. */
function smallestGraph(N: number): number {
  return Math.max(2, Math.ceil(N / 2));
}

/** The graph-majority task (see the file comment). Throws INVALID_CONFIG for bad options. */
export function makeGraphTask(options: GraphTaskOptions = {}): GraphTask {
  checkArgNames('graph-majority task', options, GRAPH_TASK_OPTIONS);
  const o: Required<GraphTaskOptions> = {nodes: 16, colours: 3, maxDegree: 3, hops: 2, ...options};
  assertPositiveInt('nodes', o.nodes);
  assertPositiveInt('colours', o.colours);
  assertPositiveInt('maxDegree', o.maxDegree);
  assertPositiveInt('hops', o.hops);
  if (o.nodes < 2 || o.colours < 2) {
    throw new AttentionError('INVALID_CONFIG',
      `graph-majority needs at least 2 nodes and 2 colours, received nodes ${show(o.nodes)}, colours ${show(o.colours)}`);
  }
  const N = o.nodes;
  const E = N * o.maxDegree;
  const smallest = smallestGraph(N);
  return {
    name: GRAPH_TASK, options: o, vocabSize: o.colours + FIRST_SYMBOL, seqLength: N, edgesPerExample: E,
    description: 'label each node with the colour most common among itself and the nodes with a path of at most ' +
      `${o.hops} edge(s) into it (${o.colours} colours, graphs of ${smallest}-${N} nodes, 1-${o.maxDegree} ` +
      'edges into each; ties unscored)',
    batch(n: number, seed: number, index: number): TaskBatch { // one stream: the split makes no difference
      assertPositiveInt('batch size', n);
      const next = uniform(batchSeed(seed, index));
      const pick = (k: number) => Math.min(k - 1, Math.floor(next() * k));
      const inputs = new Int32Array(n * N);
      const targets = new Int32Array(n * N);
      const weights = new Float32Array(n * N);
      const edges = new Int32Array(n * E * 2).fill(-1);
      const counts = new Int32Array(o.colours);
      for (let r = 0; r < n; r++) {
        const size = smallest + pick(N - smallest + 1);
        const colour = Array.from({length: size}, () => pick(o.colours));
        const into: number[][] = [];
        let e = 0;
        for (let i = 0; i < size; i++) {
          const degree = 1 + pick(Math.min(o.maxDegree, size - 1));
          const others = Array.from({length: size - 1}, (_, k) => (k < i ? k : k + 1));
          for (let k = 0; k < degree; k++) { // a partial Fisher-Yates shuffle: distinct sources
            const j = k + pick(others.length - k);
            [others[k], others[j]] = [others[j], others[k]];
          }
          into.push(others.slice(0, degree));
          for (const s of into[i]) {
            edges[(r * E + e) * 2] = s;
            edges[(r * E + e) * 2 + 1] = i;
            e++;
          }
          inputs[r * N + i] = FIRST_SYMBOL + colour[i];
        }
        for (let i = 0; i < size; i++) {
          // The nodes with a path of at most `hops` edges into i, i itself included.
          const reached = new Set([i]);
          let frontier = [i];
          for (let h = 0; h < o.hops; h++) {
            frontier = frontier.flatMap((t) => into[t]).filter((s) => !reached.has(s));
            frontier.forEach((s) => reached.add(s));
          }
          counts.fill(0);
          for (const s of reached) counts[colour[s]]++;
          const top = Math.max(...counts);
          if (counts.filter((c) => c === top).length > 1) continue; // a tie: not scored
          targets[r * N + i] = FIRST_SYMBOL + counts.indexOf(top);
          weights[r * N + i] = 1;
        }
        for (let i = size; i < N; i++) inputs[r * N + i] = BLANK;
      }
      return {inputs, targets, weights, n, L: N, edges, E};
    },
  };
}

/**
 * Accuracy of two answers that ignore the graph, on `batches` batches of `batchSize` of
 * the task's stream `seed`: always the most common label of those batches ('majority'),
 * and each node's own colour ('ownColour').
 */
export function graphBaselines(task: GraphTask, seed: number, batchSize: number,
    batches: number): {majority: number; ownColour: number} {
  const labels = new Map<number, number>();
  let scored = 0;
  let own = 0;
  for (let b = 0; b < batches; b++) {
    const batch = task.batch(batchSize, seed, b);
    batch.weights.forEach((w, i) => {
      if (w === 0) return;
      scored++;
      labels.set(batch.targets[i], (labels.get(batch.targets[i]) ?? 0) + 1);
      if (batch.inputs[i] === batch.targets[i]) own++;
    });
  }
  return {majority: Math.max(...labels.values()) / scored, ownColour: own / scored};
}
