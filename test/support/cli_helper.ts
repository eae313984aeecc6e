// The CLI run in this process, its output captured: what the CLI tests call.
import {main} from '../../src/cli/main';

/** Runs `tfjs-attention ...argv` in process; the exit code and everything written to stdout and stderr. */
export async function cli(...argv: string[]): Promise<{code: number; stdout: string; stderr: string}> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, {stdout: {write: (s: string) => (stdout += s)},
    stderr: {write: (s: string) => (stderr += s)}});
  return {code, stdout, stderr};
}
