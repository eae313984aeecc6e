/**
 * `tfjs-attention train | eval | predict | inspect`: train a transformer on a toy task (a
 * graph network on the graph task, an n-body network on the n-body task) and save it, then
 * evaluate it, run it on one input, or describe a saved model folder.
 */
import * as tf from '@tensorflow/tfjs';
import {Command, Option} from './command';
import {BackendChoice, NODE_BACKEND_CHOICES, selectBackend} from '../kernels/backend';
import {AttentionError} from '../core/errors';
import {AttentionKind} from '../layers/kinds';
import {loadModel, readTrainingRecord} from '../train/checkpoint';
import {ALL_TASK_NAMES, GRAPH_TASK, makeTask, TEXT_TASK} from '../train/tasks';
import {
  familyAttentions, familyOfAttention, familyOfTask, MODEL_FAMILIES, ModelFamily, ModelFamilyName,
} from '../train/families';
import {GRAPH_ATTENTION} from '../train/graph_network';
import {GraphTask, graphBaselines} from '../train/graph_task';
import {NBODY_ATTENTION, nbodyTestError} from '../train/nbody_network';
import {NBODY_TASK, nbodyBaselines, NBodyTask} from '../train/nbody_task';
import {GRAPH_VERSIONS, GraphVersion} from '../ops/graph';
import {TRANSFORMER_POSITIONS, TransformerPositions} from '../train/model';
import {decodeText, DEFAULT_SEQ_LENGTH, encodeText, TEXT_DOCUMENTS, TextDocuments} from '../train/text';
import {EVAL_SEED_OFFSET, evaluate} from '../train/evaluate';
import {train} from '../train/trainer';
import {Metrics, StepInfo, trainDefaults, TrainOptions} from '../train/train_options';
import {loadKerasModel} from '../keras/load';
import {flagKey} from './command';
import {addKindFlags, kindArgs, kindFlags} from './kind_flags';
import {ProgressBar} from './progress_bar';
import {
  CliIO, describeLayers, floatArg, intArg, kerasUrl, maxBytesOption, threadsOption, transformerOptions,
} from './shared';
import {ThreadsArg} from '../kernels/wasm_threads';

/** The attention kinds that take a document mask (they attend through flexAttention): what --pack needs. */
const FLEX_KINDS: readonly AttentionKind[] = ['mha', 'gqa', 'flash'];

/** What `npm run train` trains with no flags: a small GQA model on `reverse`. */
export const TRAIN_DEFAULTS = {
  task: 'reverse', attention: 'gqa' as AttentionKind, length: 8, vocabSize: 12, noiseLength: 64, modelDim: 64,
  heads: 4, kvHeads: 2, layers: 2, steps: 600, batchSize: 32, learningRate: 3e-3, warmup: 50, clipNorm: 1,
  evalEvery: 50, evalBatches: 4, targetAccuracy: 0.99, seed: 0,
};

interface TrainFlags {
  task: string; data?: string; seqLength?: number; positions: TransformerPositions; documents?: TextDocuments;
  pack?: boolean;
  attention: AttentionKind | typeof GRAPH_ATTENTION | typeof NBODY_ATTENTION;
  length: number; vocabSize: number; noiseLength: number;
  modelDim: number; heads: number; kvHeads: number; layers: number; ffDim?: number; dropout: number; causal: boolean;
  globalEvery?: number;
  steps: number; batchSize: number; lr: number;
  warmup: number; clipNorm: number; evalEvery: number; evalBatches: number; targetAccuracy: number; seed: number;
  out?: string; checkpointEvery: number; resume?: string; backend?: BackendChoice; threads: ThreadsArg; quiet: boolean;
  optimizerState: boolean; maxBytes?: number;
  nodes?: number; colours?: number; maxDegree?: number; hops?: number; graphVersion?: GraphVersion;
  particles?: number; trainExamples?: number; validationExamples?: number; testExamples?: number;
  /** The kinds' own flags (see kindFlags), by their camel-case key. */
  [kindFlag: string]: unknown;
}

/** Progress on stderr: a bar on a terminal, plain lines otherwise (or with --quiet). */
function progress(io: CliIO, quiet: boolean, steps: number) {
  const tty = !quiet && (io.stderr as {isTTY?: boolean}).isTTY === true;
  const bar = tty ? new ProgressBar(io.stderr as {write(s: string): unknown; columns?: number}, steps) : null;
  let acc = '-';
  return {
    step(info: StepInfo) {
      bar?.update(info.step, `loss ${info.loss.toFixed(4)} acc ${acc} ${Math.round(info.tokensPerSecond)} tok/s`, info.steps);
    },
    eval(m: Metrics) {
      acc = m.tokenAccuracy?.toFixed(4) ?? '-';
      if (bar == null) io.stderr.write(`step ${m.step}: eval ${describeMetrics(m)}\n`);
    },
    stop() { bar?.stop(); },
  };
}

/** An evaluation in words: the loss, and a token task's accuracies. */
function describeMetrics(m: Partial<Metrics> | undefined): string {
  if (m?.tokenAccuracy == null) return `loss ${m?.loss?.toFixed(5) ?? '-'}`;
  return `loss ${m.loss?.toFixed(4)} token accuracy ${m.tokenAccuracy.toFixed(4)} sequence accuracy ` +
    `${m.sequenceAccuracy?.toFixed(4)}`;
}

/** How the train command reads a model family's flags. */
interface FamilyFlags {
  /** The flags (camel-case keys) that only runs of this family read. */
  flags: readonly string[];
  /** The message refusing one of them for `task`, a task of another family. */
  refusal(flag: string, task: string): string;
  /** The task's options, from the flags. */
  taskOptions(f: TrainFlags): TrainOptions['taskOptions'];
  /** The model's options, from the flags (`resuming`: the checkpoint's options rule). */
  model(f: TrainFlags, resuming: boolean): TrainOptions['model'];
  /** The family's own defaults of the shared flags where they differ from TRAIN_DEFAULTS, given the flags. */
  defaults?(f: TrainFlags, fromCli: (name: string) => boolean): Partial<Record<'modelDim' | 'layers' | 'batchSize' | 'lr' | 'warmup' | 'clipNorm' |
    'evalEvery' | 'evalBatches' | 'steps', number>>;
  /** Shared flags its runs do not read: refused when given. */
  unread?: readonly string[];
}

const FAMILY_FLAGS: Record<ModelFamilyName, FamilyFlags> = {
  transformer: {
    flags: ['length', 'vocabSize', 'noiseLength', 'kvHeads', 'ffDim', 'causal', 'positions', 'globalEvery'],
    refusal: (flag, task) => `${flag} is not an option of --task ${task}`,
    taskOptions: (f) => f.task === TEXT_TASK
      ? {...(f.data != null ? {data: f.data} : {}), ...(f.seqLength != null ? {seqLength: f.seqLength} : {}),
        ...(f.documents != null ? {documents: f.documents} : {})}
      : {length: f.length, vocabSize: f.vocabSize, noiseLength: f.noiseLength},
    model: (f, resuming) => ({attention: f.attention as AttentionKind, modelDim: f.modelDim, numHeads: f.heads,
      numKvHeads: f.attention === 'gqa' ? f.kvHeads : undefined, numLayers: f.layers, ffDim: f.ffDim,
      // A model that saw the next character would learn nothing: the text task is always causal.
      dropout: f.dropout, causal: f.causal || f.task === TEXT_TASK,
      attentionArgs: kindArgs(f, f.attention as AttentionKind, resuming), positions: f.positions,
      ...(f.globalEvery != null ? {globalEvery: f.globalEvery} : {})}),
  },
  graph: {
    flags: ['nodes', 'colours', 'maxDegree', 'hops', 'graphVersion'],
    refusal: (flag, task) => `${flag} is for --task ${MODEL_FAMILIES.graph.tasks.join(' or ')}, not '${task}'`,
    taskOptions: (f) => Object.fromEntries(Object.entries({nodes: f.nodes, colours: f.colours, maxDegree: f.maxDegree,
      hops: f.hops}).filter(([, v]) => v != null)),
    model: (f) => ({attention: GRAPH_ATTENTION, modelDim: f.modelDim, numHeads: f.heads, numLayers: f.layers,
      dropout: f.dropout, version: f.graphVersion ?? 'gat'}),
  },
  nbody: {
    flags: ['particles', 'trainExamples', 'validationExamples', 'testExamples'],
    refusal: (flag, task) => `${flag} is for --task ${NBODY_TASK}, not '${task}'`,
    taskOptions: (f) => Object.fromEntries(Object.entries({particles: f.particles, trainExamples: f.trainExamples,
      validationExamples: f.validationExamples, testExamples: f.testExamples}).filter(([, v]) => v != null)),
    model: (f) => ({attention: NBODY_ATTENTION, modelDim: f.modelDim, numLayers: f.layers}),
    // EGNN's settings for the task (64 units, 4 layers, batches of 100: 30 an epoch, no clipping), with a peak
    // learning rate of 1e-3 (EGNN: 5e-4 for up to 10,000 epochs) decayed over 200 epochs; every evaluation reads
    // the whole validation split.
    defaults: (f, fromCli) => {
      const batchSize = fromCli('batchSize') ? f.batchSize : 100;
      return {modelDim: 64, layers: 4, batchSize, lr: 1e-3, warmup: 100, clipNorm: 0, evalEvery: 300, steps: 6000,
        evalBatches: Math.max(1, Math.floor((f.validationExamples ?? 2000) / batchSize))};
    },
    unread: ['heads', 'dropout', 'targetAccuracy'],
  },
};

/**
 * Refuses, for a new run, what the task's model family does not read: an attention of
 * another family, a kind's own flag where the family has no such kind, and a flag that
 * only another family's runs read.
 */
function refuseOtherFamilies(f: TrainFlags, family: ModelFamily, fromCli: (name: string) => boolean): void {
  const attentionFamily = familyOfAttention(f.attention);
  if (fromCli('attention') && attentionFamily != null && attentionFamily !== family) {
    throw new AttentionError('INVALID_CONFIG', family.attentions.length === 1
      ? `--task ${f.task} trains ${family.description}: use --attention ${family.attentions[0]} (or leave it out)`
      : `--attention ${f.attention} is for --task ${attentionFamily.tasks.join(' or ')}, not '${f.task}'`);
  }
  const kindFlag = kindFlags().find(({flag, kinds}) => f[flagKey(flag.flag)] != null &&
    !kinds.some((kind) => family.attentions.includes(kind)));
  if (kindFlag != null) {
    throw new AttentionError('INVALID_CONFIG',
      `${kindFlag.flag.flag.replace(/ .*$/, '')} is for --attention ${kindFlag.kinds.join(' or ')}, not --task ${f.task}`);
  }
  for (const other of Object.values(MODEL_FAMILIES).filter((o) => o !== family)) {
    const foreign = FAMILY_FLAGS[other.name].flags.filter(fromCli);
    if (foreign.length > 0) {
      const flag = '--' + foreign[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
      throw new AttentionError('INVALID_CONFIG', FAMILY_FLAGS[other.name].refusal(flag, f.task));
    }
  }
}

export function registerTrain(program: Command, io: CliIO): void {
  const d = TRAIN_DEFAULTS;
  const backendOption = () => new Option('--backend <name>', 'tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)')
    .choices(NODE_BACKEND_CHOICES);
  const command = program.command('train');
  command
    .description('train a small transformer on a toy task and save it (model.json, weights.bin, training.json)')
    .addOption(new Option('--task <name>', "toy task, or 'text': next-character prediction on --data")
      .choices(ALL_TASK_NAMES).default(d.task))
    .option('--data <file>', 'text: a UTF-8 file to learn (default: the shipped data/text/attention.txt)')
    .option('--seq-length <n>', `text: characters per training window (default ${DEFAULT_SEQ_LENGTH})`, intArg(2))
    .addOption(new Option('--documents <mode>', 'text: learn within documents (paragraphs): one per row padded to ' +
      "the batch's longest ('pad'), or packed into full rows with a document mask ('pack')").choices(TEXT_DOCUMENTS))
    .option('--pack', 'text: the same as --documents pack (attention mha, gqa or flash)')
    .addOption(new Option('--positions <kind>', "positions: a learned table of the task's length, or rotary ('rope') " +
      'inside every attention layer').choices(TRANSFORMER_POSITIONS).default('learned'))
    .addOption(new Option('--attention <kind>', 'attention of every block (\'graph\': GraphAttention layers, for --task ' +
      `${GRAPH_TASK}, where it is the default)`).choices(familyAttentions()).default(d.attention))
    .option('--length <n>', 'task length: symbols (selective-copy: marked tokens)', intArg(1), d.length)
    .option('--vocab-size <n>', 'vocabulary, BLANK and SEP included', intArg(3), d.vocabSize)
    .option('--noise-length <n>', 'selective-copy: positions the marked tokens hide in', intArg(1), d.noiseLength)
    .option('--model-dim <n>', 'model width E', intArg(1), d.modelDim)
    .option('--heads <n>', 'query heads H', intArg(1), d.heads)
    .option('--kv-heads <n>', "key/value heads G (attention 'gqa' only)", intArg(1), d.kvHeads)
    .option('--layers <n>', 'transformer blocks (graph-majority: GraphAttention layers)', intArg(1), d.layers)
    .option('--ff-dim <n>', 'feed-forward width (default: 4 * model dim)', intArg(1))
    .option('--dropout <rate>', 'dropout after attention and feed-forward (graph-majority: on the attention weights alpha)', floatArg(0, 0.99), 0)
    .option('--causal', 'causal attention (always on for --task text)', false)
    .option('--global-every <n>', 'with --sliding-window: every n-th block attends globally (2: Gemma 2)', intArg(1))
    .option('--nodes <n>', `${GRAPH_TASK}: nodes per graph, at most (default 16)`, intArg(2))
    .option('--colours <n>', `${GRAPH_TASK}: node colours, the classes (default 3)`, intArg(2))
    .option('--max-degree <n>', `${GRAPH_TASK}: the most edges into a node (default 3)`, intArg(1))
    .option('--hops <n>', `${GRAPH_TASK}: how far upstream a label looks (default 2)`, intArg(1))
    .addOption(new Option('--graph-version <v>', `${GRAPH_TASK}: GraphAttention's scoring rule (default gat)`)
      .choices(GRAPH_VERSIONS))
    .option('--particles <n>', `${NBODY_TASK}: charged particles per system (default 5)`, intArg(2))
    .option('--train-examples <n>', `${NBODY_TASK}: training trajectories (default 3000)`, intArg(1))
    .option('--validation-examples <n>', `${NBODY_TASK}: validation trajectories (default 2000)`, intArg(1))
    .option('--test-examples <n>', `${NBODY_TASK}: test trajectories, what eval scores (default 2000)`, intArg(1));
  addKindFlags(command);
  command
    .option('--steps <n>', 'optimizer steps at most', intArg(1), d.steps)
    .option('--batch-size <n>', 'examples per step', intArg(1), d.batchSize)
    .option('--lr <rate>', 'peak learning rate (Adam)', floatArg(1e-8, 10), d.learningRate)
    .option('--warmup <n>', 'linear warm-up steps, then cosine decay', intArg(0), d.warmup)
    .option('--clip-norm <x>', 'clip gradients to this global norm (0: off)', floatArg(0), d.clipNorm)
    .option('--eval-every <n>', 'evaluate every n steps', intArg(1), d.evalEvery)
    .option('--eval-batches <n>', 'batches per evaluation', intArg(1), d.evalBatches)
    .option('--target-accuracy <x>', 'stop at this evaluation token accuracy (above 1: never)', floatArg(0, 2), d.targetAccuracy)
    .option('--seed <n>', 'seed of the weights and the data', intArg(0), d.seed)
    .option('--out <dir>', 'model folder (default: checkpoints/<task>-<attention>)')
    .option('--checkpoint-every <n>', 'also save every n steps (0: only at the end)', intArg(0), 0)
    .option('--resume <dir>', 'go on from the checkpoint in DIR (its options rule; --steps and --out may change)')
    .option('--no-optimizer-state', "save the final model without Adam's state (smaller; cannot be resumed)")
    .addOption(maxBytesOption().default(undefined, 'with --resume: 2GiB'))
    .addOption(backendOption())
    .addOption(threadsOption())
    .option('--quiet', 'plain progress lines, no bar', false)
    .addHelpText('\n--task nbody has defaults of its own: --model-dim 64 --layers 4 --batch-size 100 --lr 1e-3 ' +
      '--warmup 100 --clip-norm 0 --eval-every 300 --steps 6000, and --eval-batches covering the validation split.\n' +
      '\nExample: train --task reverse --attention gqa --steps 600\n')
    .action(async (f: TrainFlags, cmd: Command) => {
      const fromCli = (name: string) => cmd.getOptionValueSource(name) === 'cli';
      const family = familyOfTask(f.task);
      if (f.resume == null) refuseOtherFamilies(f, family, fromCli);
      const backend = await selectBackend(f.backend, {threads: f.threads});
      const familyFlags = FAMILY_FLAGS[family.name];
      if (f.resume == null) {
        const unread = (familyFlags.unread ?? []).find(fromCli);
        if (unread != null) {
          throw new AttentionError('INVALID_CONFIG', `--${unread.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} ` +
            `is not read by --task ${f.task} (${family.description})`);
        }
      }
      const defaults = familyFlags.defaults?.(f, fromCli) ?? {};
      for (const [flag, value] of Object.entries(defaults)) if (!fromCli(flag)) f[flag] = value;
      const modelOptions = familyFlags.model(f, f.resume != null);
      const out = f.out ?? f.resume ?? `checkpoints/${f.task}-${modelOptions.attention}`;
      const text = f.task === TEXT_TASK;
      if (f.pack === true) {
        if (f.documents != null && f.documents !== 'pack') {
          throw new AttentionError('INVALID_CONFIG', `--pack means --documents pack; it cannot go with --documents ${f.documents}`);
        }
        f.documents = 'pack';
      }
      if (!text && f.resume == null && (f.data != null || f.seqLength != null || f.documents != null)) {
        throw new AttentionError('INVALID_CONFIG', '--data, --seq-length, --documents and --pack are for --task text, ' +
          `not '${f.task}'`);
      }
      if (f.documents === 'pack' && f.resume == null && !FLEX_KINDS.includes(f.attention as AttentionKind)) {
        throw new AttentionError('INVALID_CONFIG', '--pack needs an attention that takes a document mask (' +
          `${FLEX_KINDS.join(', ')}), not '${f.attention}'`);
      }
      const options = trainDefaults({
        task: f.task,
        taskOptions: familyFlags.taskOptions(f),
        model: modelOptions,
        seed: f.seed, steps: f.steps, batchSize: f.batchSize, learningRate: f.lr, warmupSteps: f.warmup,
        clipNorm: f.clipNorm, evalEvery: f.evalEvery, evalBatches: f.evalBatches, targetAccuracy: f.targetAccuracy,
        outDir: out, checkpointEvery: f.checkpointEvery, saveOptimizerState: f.optimizerState,
      });
      const bar = progress(io, f.quiet, options.steps);
      const started = Date.now();
      try {
        // Resuming: the checkpoint's options rule, except --steps and --out when given.
        const run = f.resume == null ? options
          : {...options, steps: fromCli('steps') ? f.steps : undefined, outDir: out}; // out defaults to the resumed folder
        const resume = f.resume != null ? {dir: f.resume, maxBytes: f.maxBytes} : undefined;
        const {model, record} = await train(run, {onStep: bar.step, onEval: bar.eval}, resume);
        bar.stop();
        const last = record.history[record.history.length - 1];
        const measured = last?.tokenAccuracy != null
          ? `token accuracy ${last.tokenAccuracy.toFixed(4)}, sequence accuracy ${last.sequenceAccuracy?.toFixed(4)}`
          : `validation loss ${last?.loss.toFixed(5)}`;
        io.stdout.write(`trained ${record.model.attention} on ${record.task.name} (${backend}): ${record.step} steps in ` +
          `${((Date.now() - started) / 1000).toFixed(1)} s, ${measured}, ${record.parameters} parameters; saved to ${out}\n`);
        model.dispose();
      } finally {
        bar.stop();
      }
    });

  program.command('eval')
    .description('evaluate a saved model on a fresh seeded set of its task')
    .requiredOption('--model <dir>', 'model folder written by train')
    .option('--batches <n>', 'batches of 32 examples', intArg(1), 8)
    .option('--seed <n>', 'seed of the evaluation set (default: the training seed + 1, data never trained on)', intArg(0))
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(maxBytesOption())
    .action(async (f: {model: string; batches: number; seed?: number; backend?: BackendChoice; threads: ThreadsArg;
                       maxBytes?: number;}, cmd: Command) => {
      await selectBackend(f.backend, {threads: f.threads});
      const record = readTrainingRecord(f.model);
      for (const flag of ['batches', 'seed'] as const) {
        if (record.task.name === NBODY_TASK && cmd.getOptionValueSource(flag) === 'cli') {
          throw new AttentionError('INVALID_CONFIG', `--${flag} is not read for an ${NBODY_TASK} model: eval scores ` +
            'its whole test split');
        }
      }
      const model = await loadModel(f.model, {maxBytes: f.maxBytes});
      const task = makeTask(record.task.name, record.options.taskOptions);
      if (task.name === NBODY_TASK) {
        // A fixed benchmark: the whole test split, beside the answers without a model.
        const mse = await nbodyTestError(model, task as NBodyTask);
        io.stdout.write(JSON.stringify({model: f.model, task: task.name, examples: (task as NBodyTask).sizes.test,
          trainingExamples: (task as NBodyTask).sizes.train, parameters: model.countParams(), testMse: mse,
          baselines: nbodyBaselines(task as NBodyTask)}) + '\n');
        model.dispose();
        return;
      }
      const seed = f.seed ?? (record.options.seed ?? 0) + 1;
      const m = await evaluate(model, task, seed, 32, f.batches);
      // A graph task also reports what answers that ignore the graph score on the same nodes.
      const baselines = task.name === GRAPH_TASK
        ? {baselines: graphBaselines(task as GraphTask, seed + EVAL_SEED_OFFSET, 32, f.batches)} : {};
      io.stdout.write(JSON.stringify({model: f.model, task: task.name, examples: 32 * f.batches, ...m, ...baselines}) + '\n');
      model.dispose();
    });

  program.command('predict')
    .description('run a saved model on one input sequence and print its output tokens')
    .requiredOption('--model <dir>', 'model folder written by train')
    .requiredOption('--input <tokens>', 'space-separated token ids of the task\'s inputs (0 BLANK, 1 SEP, 2.. symbols), ' +
      'e.g. "2 3 4 5 6 7 8 9" for models/gqa; shorter inputs are padded with 0 (BLANK)')
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(maxBytesOption())
    .action(async (f: {model: string; input: string; backend?: BackendChoice; threads: ThreadsArg;
      maxBytes?: number;}) => {
      await selectBackend(f.backend, {threads: f.threads});
      const record = readTrainingRecord(f.model);
      const {seqLength: L, vocabSize: V} = transformerOptions(record, 'predict');
      const vocabulary = record.task.name === TEXT_TASK ? String(record.task.vocabulary) : null;
      if (vocabulary != null) {
        // A text model: the next character at every position of the input text.
        const ids = encodeText(vocabulary, f.input);
        if (ids.length === 0 || ids.length > L) {
          throw new AttentionError('INVALID_CONFIG', `--input must be 1 to ${L} characters for this text model, received ${ids.length}`);
        }
        const model = await loadModel(f.model, {maxBytes: f.maxBytes});
        const input = tf.tensor2d([[...ids, ...Array(L - ids.length).fill(0)]], [1, L], 'int32');
        const argMax = tf.tidy(() => tf.argMax(model.predict(input) as tf.Tensor, -1));
        const out = Array.from(await argMax.data()).slice(0, ids.length);
        tf.dispose([input, argMax]);
        io.stdout.write(`${decodeText(vocabulary, out)}\n`);
        model.dispose();
        return;
      }
      const tokens = f.input.trim() === '' ? [] : f.input.trim().split(/\s+/).map(Number);
      if (tokens.length === 0 || tokens.some((t) => !Number.isInteger(t) || t < 0 || t >= V) || tokens.length > L) {
        throw new AttentionError('INVALID_CONFIG',
          `--input must be at most ${L} integers in [0, ${V - 1}] separated by spaces, received '${f.input}'`);
      }
      const model = await loadModel(f.model, {maxBytes: f.maxBytes});
      const padded = [...tokens, ...Array(L - tokens.length).fill(0)];
      const out = tf.tidy(() => Array.from(tf.argMax(model.predict(tf.tensor2d([padded], [1, L], 'int32')) as tf.Tensor, -1)
        .dataSync()));
      io.stdout.write(`${out.join(' ')}\n`);
      model.dispose();
    });

  program.command('inspect')
    .description('describe a model: each layer with its class, output shape and parameters; for a folder written ' +
      'by train, also its task and saved metrics')
    .option('--model <dir>', 'model folder written by train')
    .option('--keras <path>', 'a converted Keras model.json (or its folder), read with loadKerasModel')
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(maxBytesOption())
    .action(async (f: {model?: string; keras?: string; backend?: BackendChoice; threads: ThreadsArg;
      maxBytes?: number;}) => {
      if ((f.model == null) === (f.keras == null)) {
        throw new AttentionError('INVALID_CONFIG', 'inspect takes one of --model <dir> or --keras <path>');
      }
      await selectBackend(f.backend, {threads: f.threads});
      if (f.keras != null) {
        const model = await loadKerasModel(kerasUrl(f.keras), {maxBytes: f.maxBytes});
        io.stdout.write([`model ${f.keras}: ${model.name}, ${model.countParams()} parameters`, ...describeLayers(model)]
          .join('\n') + '\n');
        model.dispose();
        return;
      }
      const dir = f.model as string;
      const record = readTrainingRecord(dir);
      const model = await loadModel(dir, {maxBytes: f.maxBytes});
      const lines = [`model ${dir}: ${model.name}, ${model.countParams()} parameters`,
        `task ${JSON.stringify(record.task)}`, `options ${JSON.stringify(record.model)}`,
        `trained ${record.step} steps in ${record.trainingSeconds.toFixed(1)} s (tfjs-attention ${record.packageVersion})`];
      const last = record.history[record.history.length - 1];
      if (last != null) lines.push(`last evaluation ${JSON.stringify(last)}`);
      lines.push(...describeLayers(model));
      io.stdout.write(lines.join('\n') + '\n');
      model.dispose();
    });
}
