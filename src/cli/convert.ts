/**
 * `tfjs-attention convert --keras PATH --out DIR`: a converted Keras model (model.json
 * from tensorflowjs_converter, Keras 3 or tf.keras 2) rewritten as an ordinary tfjs model
 * of tfjs-layers' and this library's classes, which a web app loads with
 * tf.loadLayersModel once it has imported tfjs-attention.
 */
import {Command, Option} from './command';
import {BackendChoice, NODE_BACKEND_CHOICES, selectBackend} from '../kernels/backend';
import {AttentionError} from '../core/errors';
import {checkOutputFolder} from '../io/output_folder';
import {loadKerasModel} from '../keras/load';
import {node} from '../core/runtime';
import {CliIO, kerasJsonPath, maxBytesOption} from './shared';

/** The real path of `p`, or its resolved path when it does not exist. */
function realOrResolved(p: string): string {
  const {fs, path} = node();
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * Refuses, before any work, an --out that cannot take the model (see checkOutputFolder) or
 * that is the folder of the Keras model itself: the save would replace its own input.
 */
function checkConvertOut(keras: string, out: string): void {
  const prefix = `cannot write the converted model to '${out}'`;
  checkOutputFolder(out, prefix);
  const input = node().path.dirname(realOrResolved(kerasJsonPath(keras)));
  if (realOrResolved(out) === input) {
    throw new AttentionError('IO', `${prefix}: it is the folder of the Keras model it converts ('${input}'), whose ` +
      'model.json and weights the save would replace; give another --out');
  }
}

export function registerConvert(program: Command, io: CliIO): void {
  program.command('convert')
    .description('rewrite a converted Keras model (its model.json, or the folder holding it) as an ordinary tfjs ' +
      'model folder that tf.loadLayersModel reads with tfjs-attention imported')
    .requiredOption('--keras <path>', 'the converted Keras model.json, or its folder')
    .requiredOption('--out <dir>', 'folder to write model.json and weights.bin into (its other files are kept)')
    .addOption(new Option('--backend <name>', 'tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)')
      .choices(NODE_BACKEND_CHOICES))
    .addOption(maxBytesOption())
    .action(async (f: {keras: string; out: string; backend?: BackendChoice; maxBytes?: number}) => {
      checkConvertOut(f.keras, f.out);
      await selectBackend(f.backend);
      const model = await loadKerasModel(`file://${kerasJsonPath(f.keras)}`, {maxBytes: f.maxBytes});
      try {
        await model.save(`file://${f.out}`);
        const attention = model.layers.filter((l) => l.getClassName() === 'MultiHeadAttention').length;
        io.stdout.write(`converted ${f.keras} -> ${f.out}: ${model.layers.length} layers ` +
          `(${attention} attention), ${model.countParams()} parameters\n`);
      } finally {
        model.dispose();
      }
    });
}
