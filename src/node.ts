/**
 * Node's modules, required lazily so that importing the library in a browser works: the
 * names sit in variables, so bundlers do not follow them, and nothing is required until a
 * Node-only function runs. Plus the two ways of reading a failed fs call.
 */
type Fs = typeof import('fs');
type Path = typeof import('path');

/** Node's `require` (module scope, or the global one of a bundle). */
function nodeRequire(): NodeRequire {
  return typeof require === 'function' ? require : eval('require');
}

/** Requires the module `name` (e.g. '@tensorflow/tfjs-node'); throws what require throws. */
export function requireModule(name: string): unknown {
  return nodeRequire()(name);
}

/** Node's `fs` and `path`, required on first use. */
export function node(): {fs: Fs; path: Path} {
  const [fsName, pathName] = ['fs', 'path'];
  return {fs: requireModule(fsName) as Fs, path: requireModule(pathName) as Path};
}

/** The error code of a failed fs call ('ENOENT', ...), or undefined. */
export function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/** An error's message (also for errors of another realm, such as Node's fs errors under jest). */
export function errorMessage(e: unknown): string {
  const m = (e as Error)?.message;
  return typeof m === 'string' ? m : String(e);
}
