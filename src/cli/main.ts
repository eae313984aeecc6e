#!/usr/bin/env node
/**
 * The `tfjs-attention` command. Each subcommand lives in its own file and registers
 * itself on the program (`registerBench`); adding a command is one file and one line
 * below.
 *
 * `main` never exits the process: it returns the exit code (see EXIT in shared.ts).
 * Usage errors (unknown command or flag, bad value) print one line on stderr and give 2.
 */
import {AttentionError} from '../core/errors';
import {registerFileRouter} from '../io/file_system';
import {readPackageJson} from '../bench/meta';
import {registerBench} from './bench';
import {Command, UsageError} from './command';
import {registerConvert} from './convert';
import {registerGenerate} from './generate';
import {registerTrain} from './train';
import {CliIO, EXIT} from './shared';

export {CliIO, EXIT} from './shared';

/** Runs the CLI on `argv` (the arguments after the program name) and returns the exit code. */
export async function main(argv: string[], io: CliIO = process): Promise<number> {
  registerFileRouter(); // convert and inspect --keras read and write file:// URLs
  const program = new Command('tfjs-attention')
    .description('Attention layers for TensorFlow.js: train toy and text models, evaluate, inspect and decode them, ' +
      'convert Keras models, benchmark.')
    .version(readPackageJson().version)
    .configureOutput({writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s)});
  registerTrain(program, io);
  registerGenerate(program, io);
  registerBench(program, io);
  registerConvert(program, io);

  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message !== '' && e.exitCode !== 0) io.stderr.write(`error: ${e.message}\n`);
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const message = String((e as Error)?.message ?? e).split('\n')[0];
    io.stderr.write(`error: ${message}\n`);
    // Bad values, missing or corrupt model files, and models this cannot run are the caller's to fix: 2.
    const usage = e instanceof AttentionError &&
      (e.code === 'INVALID_CONFIG' || e.code === 'IO' || e.code === 'UNSUPPORTED');
    return usage ? EXIT.usage : EXIT.failure;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
