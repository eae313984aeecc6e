/**
 * `tfjs-attention generate`: continue a prompt with a causal model saved by `train`. A text
 * model takes and prints characters; a toy-task model takes and prints token ids (or the
 * names BLANK and SEP). On a terminal the continuation is printed token by token as it is
 * decoded; otherwise in one piece. The model sees at most the length it was trained on: past
 * it, decoding goes on from the last half of the text (generate's contextLength).
 */
import {Command, Option} from './command';
import {BackendChoice, NODE_BACKEND_CHOICES, selectBackend} from '../kernels/backend';
import {AttentionError} from '../core/errors';
import {loadModel, readTrainingRecord} from '../train/checkpoint';
import {generate} from '../train/generate';
import {BLANK, SEP, TEXT_TASK} from '../train/tasks';
import {decodeText, encodeText} from '../train/text';
import {CliIO, floatArg, intArg, maxBytesOption, threadsOption, transformerOptions} from './shared';
import {ThreadsArg} from '../kernels/wasm_threads';

interface GenerateFlags {
  model: string; prompt: string; maxNewTokens: number; temperature: number; topK: number; topP: number;
  seed?: number; stop?: string; backend?: BackendChoice; threads: ThreadsArg; maxBytes?: number;
}

/** Toy-task tokens: ids, or the names BLANK and SEP, separated by spaces. */
export function parseTokens(text: string, vocabSize: number): number[] {
  const words = text.trim() === '' ? [] : text.trim().split(/\s+/);
  return words.map((w) => {
    const id = w.toUpperCase() === 'SEP' ? SEP : w.toUpperCase() === 'BLANK' ? BLANK : Number(w);
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new AttentionError('INVALID_CONFIG',
        `'${w}' is not a token of this model: give ids in [0, ${vocabSize - 1}] or SEP / BLANK, separated by spaces`);
    }
    return id;
  });
}

export function registerGenerate(program: Command, io: CliIO): void {
  program.command('generate')
    .description('continue a prompt with a causal model saved by train (text models: characters; toy tasks: token ids)')
    .requiredOption('--model <dir>', 'model folder written by train (trained with --causal, or on --task text)')
    .requiredOption('--prompt <text>', 'text for a text model; token ids or SEP / BLANK for a toy-task model')
    .option('--max-new-tokens <n>', 'tokens to add at most', intArg(1), 200)
    .option('--temperature <t>', 'softmax temperature; 0 is greedy', floatArg(0, 100), 0.8)
    .option('--top-k <k>', 'sample among the k likeliest tokens only (0: all)', intArg(0), 0)
    .option('--top-p <p>', 'sample among the likeliest tokens of total probability p (1: all)', floatArg(0, 1, true), 1)
    .option('--seed <n>', 'seed of the sampling (default: random)', intArg(0))
    .option('--stop <token>', 'end after this token (a character, or a toy-task id)')
    .addOption(new Option('--backend <name>', 'tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)')
      .choices(NODE_BACKEND_CHOICES))
    .addOption(threadsOption())
    .addOption(maxBytesOption())
    .addHelpText('\nExample: generate --model checkpoints/text-gqa --prompt "Attention is" --max-new-tokens 300\n')
    .action(async (f: GenerateFlags) => {
      await selectBackend(f.backend, {threads: f.threads});
      const record = readTrainingRecord(f.model);
      const V = transformerOptions(record, 'generate').vocabSize;
      const vocabulary = record.task.name === TEXT_TASK ? String(record.task.vocabulary) : null;
      const prompt = vocabulary != null ? encodeText(vocabulary, f.prompt) : parseTokens(f.prompt, V);
      if (prompt.length === 0) throw new AttentionError('INVALID_CONFIG', '--prompt is empty');
      let stopToken: number | null = null;
      if (f.stop != null) {
        stopToken = vocabulary != null ? encodeText(vocabulary, f.stop)[0] : parseTokens(f.stop, V)[0];
      }
      const show = (ids: number[]) => (vocabulary != null ? decodeText(vocabulary, ids) : `${ids.join(' ')} `);
      const tty = (io.stdout as {isTTY?: boolean}).isTTY === true;
      const model = await loadModel(f.model, {maxBytes: f.maxBytes});
      try {
        const [tokens] = await generate(model, [prompt], {
          maxNewTokens: f.maxNewTokens, temperature: f.temperature, topK: f.topK, topP: f.topP, seed: f.seed,
          stopToken, onToken: tty ? (token) => io.stdout.write(show([token])) : undefined,
          // The length the model was trained on: a longer text slides its context, as nanoGPT does.
          contextLength: record.model.seqLength,
        });
        io.stdout.write(tty ? '\n' : `${show(tokens).trimEnd()}\n`);
      } finally {
        model.dispose();
      }
    });
}
