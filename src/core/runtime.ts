/**
 * Where the library runs, and Node's modules reached without bundlers following them.
 *
 * The core entry must import in a browser, so nothing here imports `fs` or `path`. In Node
 * they are found on first use, without `eval`: from `tfjs-attention/node` when that entry
 * was imported (it imports them statically), else Node's `process.getBuiltinModule`
 * (Node >= 20.16), else the CommonJS module-scope `require`. Outside Node every caller gets
 * AttentionError('UNSUPPORTED') saying what to use there instead.
 */
import {AttentionError} from './errors';

type Fs = typeof import('fs');
type Path = typeof import('path');
export interface NodeModules {fs: Fs; path: Path}

let provided: NodeModules | null = null;

/** True when running under Node (not in a browser or a web worker). */
export function isNode(): boolean {
  return typeof process !== 'undefined' && process.versions?.node != null;
}

/** Hands the library Node's `fs` and `path` (what `tfjs-attention/node` does on import). */
export function provideNodeModules(modules: NodeModules): void {
  provided = modules;
}

/** What to use in a browser instead of the library's file-backed functions. */
export const BROWSER_SAVE_HINT =
  "in a browser, save with model.save('indexeddb://NAME') (or 'downloads://NAME') " +
  "and load with tf.loadLayersModel('indexeddb://NAME') or tf.loadLayersModel(url)";

/**
 * Throws AttentionError('UNSUPPORTED') unless running under Node.
 * @param what The function and argument that needs Node, e.g. "loadModel(dir)".
 * @param instead What to use outside Node (defaults to BROWSER_SAVE_HINT).
 */
export function assertNode(what: string, instead = BROWSER_SAVE_HINT): void {
  if (!isNode()) {
    throw new AttentionError('UNSUPPORTED', `${what} reads or writes files and needs Node; ${instead}`);
  }
}

/** A built-in Node module by name, or null when none of the ways above reaches it. */
export function nodeBuiltin(name: string): unknown {
  const p = process as unknown as {getBuiltinModule?: (n: string) => unknown};
  if (typeof p.getBuiltinModule === 'function') return p.getBuiltinModule(name);
  // CommonJS: the module-scope require (never `eval`, so bundlers have nothing to warn of).
  // In an ES module bundle `require` may be a bundler's stand-in that throws: none, then.
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a Node builtin, found only when asked for
    return typeof require === 'function' ? require(name) : null;
  } catch {
    return null;
  }
}

/**
 * Node's `fs` and `path`, found on first use.
 * @throws AttentionError('UNSUPPORTED') outside Node, or in an ES module on a Node without
 *   `process.getBuiltinModule` that did not import 'tfjs-attention/node'.
 */
export function node(what = 'saving or loading files'): NodeModules {
  if (provided != null) return provided;
  assertNode(what);
  const [fsName, pathName] = ['fs', 'path'];
  const fs = nodeBuiltin(fsName) as Fs | null;
  const path = nodeBuiltin(pathName) as Path | null;
  if (fs == null || path == null) {
    throw new AttentionError('UNSUPPORTED',
      `${what} needs Node's fs, which this ES module cannot reach: import 'tfjs-attention/node' once, ` +
      'or run on Node >= 20.16');
  }
  provided = {fs, path};
  return provided;
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

/** This package's name, as its package.json says. */
export const PACKAGE_NAME = 'tfjs-attention';

/** True when `dir` holds this package: a package.json named PACKAGE_NAME. */
function isPackageRoot(dir: string): boolean {
  const {fs, path} = node('finding the package folder');
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).name === PACKAGE_NAME;
  } catch {
    return false;
  }
}

/**
 * The folder of this package (its package.json, models/, data/): the first folder, walking
 * up from this module (src, dist or dist/esm: no fixed depth), whose package.json is this
 * package's, or that holds it as node_modules/tfjs-attention; an ES module, which has no
 * __dirname, walks up from the working directory instead. Node only; throws
 * AttentionError('IO') when no folder holds the package.
 */
export function packageRoot(): string {
  const {path} = node('finding the package folder');
  const from = path.resolve(typeof __dirname === 'string' ? __dirname : process.cwd());
  for (let dir = from; ; dir = path.dirname(dir)) {
    for (const root of [dir, path.join(dir, 'node_modules', PACKAGE_NAME)]) {
      if (isPackageRoot(root)) return root;
    }
    if (path.dirname(dir) === dir) break;
  }
  throw new AttentionError('IO', `no folder above '${from}' holds the ${PACKAGE_NAME} package`);
}
