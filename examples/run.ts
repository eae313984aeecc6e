/**
 * How an example runs as a program (`npx ts-node examples/<name>.ts`): selectBackend() picks
 * the backend ('auto': tensorflow, then wasm, in Node), the program prints it and runs
 * `main`; an error is printed and sets a failing exit code.
 */
import {selectBackend} from '../src/node';

export function runAsProgram(main: () => Promise<unknown>): void {
  selectBackend().then((name) => {
    console.log(`backend: ${name}`);
    return main();
  }).catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
