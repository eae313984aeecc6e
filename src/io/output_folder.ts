/**
 * Checks of a folder a model is about to be saved into, made before any work is done for
 * it, so that a run stops at once rather than at its first save.
 */
import {AttentionError} from '../core/errors';
import {errno, node} from '../core/runtime';

/**
 * Refuses a target folder that cannot be one: `dir` or its nearest existing ancestor is
 * not a directory. Throws AttentionError('IO') with `prefix` (e.g. "cannot save model to 'DIR'").
 */
export function checkFolderTarget(dir: string, prefix: string): void {
  const {fs, path} = node();
  let at = path.resolve(dir);
  for (;;) {
    let info: import('fs').Stats | undefined;
    try {
      info = fs.statSync(at, {throwIfNoEntry: false});
    } catch (e) {
      if (errno(e) !== 'ENOTDIR') throw e; // an ancestor is a file: found further up
    }
    if (info != null) {
      if (!info.isDirectory()) {
        const why = at === path.resolve(dir) ? 'it exists and is not a directory' : `'${at}' is not a directory`;
        throw new AttentionError('IO', `${prefix}: ${why}`);
      }
      return;
    }
    if (path.dirname(at) === at) return;
    at = path.dirname(at);
  }
}

/**
 * Refuses an output folder before any work is done for it: the root of the file system, an
 * existing file (or a path under one), or a folder this process cannot write (when missing:
 * its nearest existing ancestor). Throws AttentionError('IO') with `prefix`.
 */
export function checkOutputFolder(dir: string, prefix: string): void {
  const {fs, path} = node();
  let abs = path.resolve(dir);
  try {
    abs = fs.realpathSync(abs); // a symlink to the root is the root
  } catch {
    // missing: checked below through its ancestors
  }
  if (path.parse(abs).root === abs) {
    throw new AttentionError('IO', `${prefix}: it is the root of the file system; give a folder of its own for the model`);
  }
  checkFolderTarget(abs, prefix);
  let at = abs;
  while (!fs.existsSync(at)) at = path.dirname(at);
  try {
    fs.accessSync(at, fs.constants.W_OK);
  } catch {
    throw new AttentionError('IO', `${prefix}: ${at === abs ? 'it' : `'${at}'`} is not writable by this process`);
  }
}
