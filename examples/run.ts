/**
 * How an example runs as a program (`npx ts-node examples/<name>.ts`): selectBackend picks
 * the backend (by default 'auto': tensorflow, then wasm, in Node; an example may ask for
 * one, with options), the program prints it and runs `main`; an error is printed and sets
 * a failing exit code.
 */
import {BackendChoice, BackendOptions, selectBackend} from '../src/node';

export function runAsProgram(main: () => Promise<unknown>, backend?: BackendChoice, options?: BackendOptions): void {
  selectBackend(backend, options).then((name) => {
    console.log(`backend: ${name}`);
    return main();
  }).catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
