/**
 * `tfjs-attention convert --keras PATH --out DIR`: a converted Keras model (model.json
 * from tensorflowjs_converter, Keras 3 or tf.keras 2) rewritten as an ordinary tfjs model
 * of tfjs-layers' and this library's classes, which a web app loads with
 * tf.loadLayersModel once it has imported tfjs-attention.
 */
import {Command, Option} from 'commander';
import {BackendChoice, NODE_BACKEND_CHOICES, selectBackend} from '../backend';
import {loadKerasModel} from '../keras/load';
import {CliIO, kerasUrl} from './shared';

export function registerConvert(program: Command, io: CliIO): void {
  program.command('convert')
    .description('rewrite a converted Keras model (its model.json, or the folder holding it) as an ordinary tfjs ' +
      'model folder that tf.loadLayersModel reads with tfjs-attention imported')
    .requiredOption('--keras <path>', 'the converted Keras model.json, or its folder')
    .requiredOption('--out <dir>', 'folder to write model.json and weights.bin into (its other files are kept)')
    .addOption(new Option('--backend <name>', 'tfjs backend (default: $TFJS_ATTENTION_BACKEND, else auto)')
      .choices(NODE_BACKEND_CHOICES))
    .action(async (f: {keras: string; out: string; backend?: BackendChoice}) => {
      await selectBackend(f.backend);
      const model = await loadKerasModel(kerasUrl(f.keras));
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
