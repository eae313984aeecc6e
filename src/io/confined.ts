/**
 * Reads of a model folder's files that cannot leave the folder, hang or run away.
 *
 * A model folder often comes from someone else, so every file the library reads for a
 * model (model.json, the weights files its manifest lists, a checkpoint's training.json
 * and optimizer state) goes through `openInFolder`:
 *
 *   1. The name is relative: not absolute, no `..` segment, no NUL (a manifest path such as
 *      `../secret.bin` or `/dev/zero` is refused before the file system is asked).
 *   2. Its real path (symlinks followed) lies inside the real path of the folder. A symlink
 *      that stays inside is read; one that leads out is refused.
 *   3. It is a regular file: a FIFO, a device, a socket or a folder is refused. The file is
 *      opened non-blocking (a FIFO swapped in meanwhile cannot hang the open) and without
 *      following a last symlink, and checked again on the open descriptor: its type, its
 *      inode, and the path it was opened at (from /proc on Linux; elsewhere resolved again).
 *      A hard link in the folder is a file of the folder: it cannot be told from its twin.
 *   4. Its size (fstat) is compared with what the caller expects (a manifest's byte count,
 *      a JSON size limit) before one byte is read; the read takes exactly that many bytes
 *      and fails if the file shrank or grew meanwhile.
 *
 * Every error is AttentionError('IO') naming the path and the sizes, never the file's
 * contents (a JSON parse error says where, not what).
 */
import {AttentionError, brief} from '../core/errors';
import {errno, errorMessage, node} from '../core/runtime';
import {MAX_JSON_BYTES} from './load_limits';

/** A model's folder: the path as given and its real path, which every file read must lie inside. */
export interface ModelFolder {
  dir: string;
  real: string;
}

/** An open regular file, its path for messages and its size. */
export interface OpenFile {
  fd: number;
  path: string;
  size: number;
}

function ioError(message: string): AttentionError {
  return new AttentionError('IO', message);
}

/** Why an fs call failed, in words. */
function why(e: unknown): string {
  switch (errno(e)) {
    case 'ENOENT': return 'it does not exist';
    case 'ENOTDIR': return 'a part of its path is not a folder';
    case 'ELOOP': return 'it is a symlink loop, or was replaced by a symlink';
    case 'EACCES': case 'EPERM': return 'permission denied';
    default: return errorMessage(e);
  }
}

/** The kind of a non-regular file, for messages. */
function kindOf(stats: import('fs').Stats): string {
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return 'a device';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** True when `real` lies strictly inside the folder `root` (both real paths). */
function inside(root: string, real: string): boolean {
  const {path} = node();
  const rel = path.relative(root, real);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

/** The real path of `p` (symlinks followed); IO "cannot read <label>: <why>" when it cannot be resolved. */
function realPath(p: string, label: string): string {
  try {
    return node().fs.realpathSync(p);
  } catch (e) {
    throw ioError(`cannot read ${label}: ${why(e)}`);
  }
}

/**
 * The folder `dir` for confined reads.
 * @throws AttentionError('IO') when it does not exist or is not a folder.
 */
export function modelFolder(dir: string): ModelFolder {
  const {fs, path} = node();
  const abs = path.resolve(dir);
  const real = realPath(abs, `the model folder '${abs}'`);
  if (!fs.statSync(real).isDirectory()) throw ioError(`cannot read the model folder '${abs}': it is not a folder`);
  return {dir: abs, real};
}

/**
 * Throws IO unless `name` is a relative name inside a folder: a non-empty string, not
 * absolute, no `..` segment, no NUL. `what` and `listedIn` say whose name it is.
 */
export function checkRelativeName(name: unknown, what: string, listedIn: string): asserts name is string {
  const {path} = node();
  const shown = typeof name === 'string' ? `'${brief(name, 120)}'` : brief(JSON.stringify(name) ?? String(name), 120);
  const fault = typeof name !== 'string' || name === '' ? 'it is not a file name'
    : name.includes('\0') ? 'it holds a NUL character'
    : path.isAbsolute(name) || path.posix.isAbsolute(name) || path.win32.isAbsolute(name) ? 'it is an absolute path'
    : name.split(/[\\/]/).includes('..') ? "it contains '..'"
    : null;
  if (fault != null) {
    throw ioError(`${what} ${shown} listed in '${listedIn}' is refused: ${fault}; a model's files are named ` +
      'relative to its folder and lie inside it');
  }
}

/** The path the descriptor `fd` was opened at, where the system tells (Linux /proc); else null. */
function openedPath(fd: number): string | null {
  try {
    return node().fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/**
 * Opens `real` (a real path: no symlink in it) for reading, non-blocking and without
 * following a last symlink, and checks on the descriptor that it is a regular file, the
 * one stat saw (and, where /proc tells, inside `root`).
 */
function openRegular(real: string, shown: string, label: string, root: string | null): OpenFile {
  const {fs} = node();
  let before: import('fs').Stats;
  try {
    before = fs.statSync(real);
  } catch (e) {
    throw ioError(`cannot read ${label}: ${why(e)}`);
  }
  if (!before.isFile()) throw ioError(`cannot read ${label}: it is ${kindOf(before)}, not a regular file`);
  const flags = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0) | (fs.constants.O_NOFOLLOW ?? 0);
  let fd: number;
  try {
    fd = fs.openSync(real, flags);
  } catch (e) {
    throw ioError(`cannot read ${label}: ${why(e)}`);
  }
  try {
    const stats = fs.fstatSync(fd);
    if (!stats.isFile()) throw ioError(`cannot read ${label}: it is ${kindOf(stats)}, not a regular file`);
    if (stats.ino !== before.ino || stats.dev !== before.dev) {
      throw ioError(`cannot read ${label}: it was replaced while being opened`);
    }
    if (root != null) {
      // Where the system tells (Linux), the path it was opened at; else the path resolved again.
      const at = openedPath(fd) ?? fs.realpathSync(real);
      if (!inside(root, at)) {
        throw ioError(`cannot read ${label}: it was opened at '${at}', outside the model's folder '${root}'`);
      }
    }
    return {fd, path: shown, size: stats.size};
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * Opens the file `name` of `folder` for reading: a regular file whose real path lies inside
 * the folder's real path (see the module comment). Close it with `closeFile`.
 * @param what What the file is, for messages: 'weights file', 'model.json', ...
 * @param listedIn The file that names it (model.json), for messages; default the folder.
 */
export function openInFolder(folder: ModelFolder, name: string, what: string, listedIn?: string): OpenFile {
  const {path} = node();
  checkRelativeName(name, what, listedIn ?? folder.dir);
  const full = path.join(folder.dir, name);
  const label = `${what} '${full}'${listedIn != null ? ` listed in '${listedIn}'` : ''}`;
  const real = realPath(full, label);
  if (!inside(folder.real, real)) {
    throw ioError(`cannot read ${label}: it resolves to '${real}', outside the model's folder '${folder.real}'`);
  }
  return openRegular(real, full, label, folder.real);
}

/**
 * Opens a file the user named directly (a training text, say): not confined to a folder,
 * but a regular file, opened non-blocking and checked on the descriptor as above.
 */
function openUserFile(file: string, what: string): OpenFile {
  const label = `${what} '${file}'`;
  return openRegular(realPath(node().path.resolve(file), label), file, label, null);
}

export function closeFile(file: OpenFile): void {
  node().fs.closeSync(file.fd);
}

/** The most bytes one read asks for: a single read of 2 GiB or more fails. */
const READ_CHUNK = 2 ** 30;

/** All `file.size` bytes of an open file, in a buffer of its own; IO if the file changed size meanwhile. */
export function readOpenFile(file: OpenFile, what: string, chunk = READ_CHUNK): Buffer {
  const {fs} = node();
  const data = Buffer.allocUnsafeSlow(file.size); // not pooled: byteOffset 0, its own ArrayBuffer
  for (let at = 0; at < file.size;) {
    const n = fs.readSync(file.fd, data, at, Math.min(chunk, file.size - at), at);
    if (n === 0) throw ioError(`cannot read ${what} '${file.path}': it shrank from ${file.size} to ${at} bytes while read`);
    at += n;
  }
  if (fs.readSync(file.fd, Buffer.alloc(1), 0, 1, file.size) > 0) {
    throw ioError(`cannot read ${what} '${file.path}': it grew past ${file.size} bytes while read`);
  }
  return data;
}

/** Size rules of a read: exactly `bytes`, or at most `maxBytes`, checked before reading. */
export interface ReadLimits {
  bytes?: number;
  maxBytes?: number;
  /** How to raise maxBytes, for the message. */
  raise?: string;
}

/** Throws IO when `file`'s size breaks `limits`. */
function checkSize(file: OpenFile, what: string, limits: ReadLimits): void {
  if (limits.bytes != null && file.size !== limits.bytes) {
    throw ioError(`corrupt ${what} '${file.path}': it holds ${file.size} bytes but the manifest declares ` +
      `${limits.bytes} (${file.size < limits.bytes ? 'truncated' : 'not the file the manifest describes'}?)`);
  }
  if (limits.maxBytes != null && file.size > limits.maxBytes) {
    throw ioError(`cannot read ${what} '${file.path}': it is ${file.size} bytes, over the limit of ${limits.maxBytes}` +
      (limits.raise != null ? `; ${limits.raise}` : ''));
  }
}

/** Reads an opened file under `limits`, then closes it. */
function readChecked(file: OpenFile, what: string, limits: ReadLimits): Buffer {
  try {
    checkSize(file, what, limits);
    return readOpenFile(file, what);
  } finally {
    closeFile(file);
  }
}

/** The bytes of the file `name` of `folder`, confined and sized as `limits` say before reading. */
export function readInFolder(folder: ModelFolder, name: string, what: string, limits: ReadLimits = {},
                             listedIn?: string): Buffer {
  return readChecked(openInFolder(folder, name, what, listedIn), what, limits);
}

/** The bytes of a file the user named (see openUserFile), sized as `limits` say before reading. */
export function readUserFile(file: string, what: string, limits: ReadLimits = {}): Buffer {
  return readChecked(openUserFile(file, what), what, limits);
}

/** `text` parsed as JSON; IO naming `file` and where the syntax broke, never the text. */
export function parseJson(text: string, what: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const at = /position (\d+)/.exec(errorMessage(e));
    throw ioError(`corrupt ${what} '${file}': it is not valid JSON` +
      (at != null ? ` (at character ${at[1]})` : /end of JSON/i.test(errorMessage(e)) ? ' (it ends too soon)' : ''));
  }
}

/** The parsed JSON file `name` of `folder`, confined, and refused unread above `maxBytes`. */
export function readJsonInFolder(folder: ModelFolder, name: string, what: string, maxBytes = MAX_JSON_BYTES,
                                 listedIn?: string): unknown {
  const raise = 'pass a larger maxJsonBytes if this file is trusted';
  const data = readInFolder(folder, name, what, {maxBytes, raise}, listedIn);
  return parseJson(data.toString('utf8'), what, node().path.join(folder.dir, name));
}

/** True when `folder` has an entry `name` (a dangling symlink counts: reading it then says why it fails). */
export function existsInFolder(folder: ModelFolder, name: string): boolean {
  const {fs, path} = node();
  try {
    fs.lstatSync(path.join(folder.dir, name));
    return true;
  } catch {
    return false;
  }
}
