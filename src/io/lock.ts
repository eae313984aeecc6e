/**
 * One saver per model folder at a time: the lock file DIR/.model.json.lock.
 *
 * A save takes the lock before its first write into the folder and gives it back after its
 * commit and tidying (folder.ts), so two processes (or two saves of one process) saving
 * into one folder take turns: the folder always ends holding one whole model, never one
 * save's model.json over the other's weights.
 *
 * Taking it: the holder's record ({pid, host, token, since, start}) is written to a unique
 * temp name and hard-linked to the lock name, which fails if the lock exists, so the lock
 * never exists half-written (where hard links are not supported it is created with O_EXCL
 * and written after). A saver that finds the lock held waits, polling every 5 to 100 ms,
 * up to `timeout` (default 30 s), then fails with AttentionError('IO') naming the holder.
 *
 * A lock whose holder is gone (saves.ts: same host and the pid no longer runs, or runs a
 * process started at another time; or this thread and a save that has ended) is taken
 * over at once. A lock of another host is never taken over (its pid means nothing here):
 * the error says to delete it by hand if that process is gone. A lock file that is not a
 * regular file, or does not parse for 10 s, is treated as a dead holder's.
 *
 * Taking over never removes a live lock: only the saver that creates the takeover file
 * DIR/.model.json.lock.takeover (O_EXCL) may delete a dead lock, and only if the lock is
 * still the file it judged dead (same inode and holder); a lock is otherwise deleted by its
 * holder alone. A takeover file left by a taker that died is removed by the next taker or
 * the next save's tidying (once its pid is gone, or it is 10 s old). Before each
 * commit the holder checks that the lock is still its own (`verify`).
 */
import {AttentionError, brief} from '../core/errors';
import {errno, node, nodeBuiltin} from '../core/runtime';
import {modelFolder, readInFolder} from './confined';
import {processStart, saveGone} from './saves';

/** The lock's name in the model folder. */
export const LOCK_NAME = '.model.json.lock';
/** Temp names of taking a lock, by token. */
export const LOCK_TEMP = /^\.model\.json\.lock\.new-(\d+)-([0-9a-z]{8})$/;
/** The file whose creator alone may delete a dead lock. */
const TAKEOVER = '.model.json.lock.takeover';
/** Default wait for another saver, in ms. */
export const DEFAULT_LOCK_TIMEOUT = 30_000;
/** A lock file that does not parse, or a takeover file, is a dead process's once it is this old (ms). */
const STALE_MS = 10_000;

/** What the lock file holds. */
interface Holder {
  pid: number;
  host: string;
  token: string;
  since: string;
  /** The holder process's start time (Linux /proc), to tell a reused pid; null where unknown. */
  start: string | null;
}

/** A taken lock. */
export interface FolderLock {
  /** Throws IO unless the lock file is still this save's. */
  verify(): Promise<void>;
  /** Deletes the lock file if it is still this save's. */
  release(): Promise<void>;
}

export interface LockOptions {
  /** The save's token (saves.ts). */
  token: string;
  /** ms to wait for another holder. */
  timeout: number;
  /** Start of error messages: "cannot save model to 'DIR'". */
  prefix: string;
}

function hostName(): string {
  const os = nodeBuiltin('os') as typeof import('os') | null;
  return os?.hostname() ?? 'unknown';
}

function isHolder(x: unknown): x is Holder {
  const h = x as Holder | null;
  return h != null && typeof h === 'object' && Number.isInteger(h.pid) && typeof h.host === 'string' &&
    typeof h.token === 'string' && typeof h.since === 'string';
}

/** True when the holder's process can no longer be saving (never for another host's). */
function holderGone(h: Holder): boolean {
  return h.host === hostName() && saveGone(h.pid, h.token, typeof h.start === 'string' ? h.start : null);
}

/**
 * The file `name` of `dir`: its inode, age and parsed holder (null: not a regular file, or
 * unparseable); null if absent.
 */
function readLock(dir: string, name = LOCK_NAME): {ino: number; ageMs: number; holder: Holder | null} | null {
  const {fs, path} = node();
  let stats: import('fs').Stats;
  try {
    stats = fs.lstatSync(path.join(dir, name));
  } catch {
    return null;
  }
  let holder: Holder | null = null;
  if (stats.isFile()) {
    try {
      const parsed = JSON.parse(readInFolder(modelFolder(dir), name, 'lock file', {maxBytes: 4096}).toString('utf8'));
      holder = isHolder(parsed) ? parsed : null;
    } catch {
      holder = null;
    }
  }
  return {ino: stats.ino, ageMs: Date.now() - stats.mtimeMs, holder};
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Creates the lock file holding `record`; false if it exists. */
async function create(dir: string, token: string, record: string): Promise<boolean> {
  const {fs, path} = node();
  const lock = path.join(dir, LOCK_NAME);
  const temp = path.join(dir, `.model.json.lock.new-${token}`);
  await fs.promises.writeFile(temp, record, {flag: 'wx'});
  try {
    await fs.promises.link(temp, lock);
    return true;
  } catch (e) {
    if (errno(e) === 'EEXIST') return false;
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(errno(e) ?? '')) throw e;
  } finally {
    await fs.promises.unlink(temp).catch(() => undefined);
  }
  // No hard links here: O_EXCL, then the record (a reader may briefly see it empty).
  const handle = await fs.promises.open(lock, 'wx').catch((e) => {
    if (errno(e) === 'EEXIST') return null;
    throw e;
  });
  if (handle == null) return false;
  try {
    await handle.writeFile(record);
  } catch (e) {
    await handle.close().catch(() => undefined);
    await fs.promises.unlink(lock).catch(() => undefined);
    throw e;
  }
  await handle.close();
  return true;
}

/** The lock as judged dead: its inode and holder's token (null: not a regular file, or unparseable). */
export interface Judged {
  ino: number;
  token: string | null;
}

/** True when the takeover file `seen` was left by a taker that is gone (or is unreadable and old). */
function takerGone(seen: {ageMs: number; holder: Holder | null}): boolean {
  return seen.holder != null ? holderGone(seen.holder) || seen.ageMs > STALE_MS : seen.ageMs > STALE_MS;
}

/**
 * Deletes the dead lock `judged`, if this saver gets the takeover file and the lock is
 * still that file: same inode and same holder (an inode number is reused at once, so a
 * new holder's lock can have the dead one's). True when the lock may be free now, false
 * when another saver is taking it over (wait). Synchronous, so the takeover file exists
 * for microseconds and no other save of this thread runs meanwhile.
 */
export function takeOver(dir: string, judged: Judged, record: string): boolean {
  const {fs, path} = node();
  const takeover = path.join(dir, TAKEOVER);
  try {
    fs.writeFileSync(takeover, record, {flag: 'wx'});
  } catch (e) {
    if (errno(e) !== 'EEXIST') throw e;
    const other = readLock(dir, TAKEOVER);
    if (other != null && takerGone(other)) removeFile(takeover);
    return false;
  }
  try {
    const now = readLock(dir);
    if (now != null && now.ino === judged.ino && (now.holder?.token ?? null) === judged.token &&
      (judged.token != null || now.ageMs > STALE_MS)) {
      removeFile(path.join(dir, LOCK_NAME));
    }
  } finally {
    removeFile(takeover);
  }
  return true;
}

function removeFile(file: string): void {
  try {
    node().fs.unlinkSync(file);
  } catch {
    // gone already
  }
}

/**
 * Removes the takeover file of `dir` if its taker is gone (killed inside `takeOver`):
 * run by a save holding the lock, with the folder's other leftovers (folder.ts).
 */
export function removeDeadTakeover(dir: string): void {
  const seen = readLock(dir, TAKEOVER);
  if (seen != null && takerGone(seen)) removeFile(node().path.join(dir, TAKEOVER));
}

/**
 * Takes the lock of folder `dir` (which exists), waiting up to `options.timeout` ms for
 * another holder and taking over a dead one's.
 * @throws AttentionError('IO') naming the holder when the wait runs out.
 */
export async function lockFolder(dir: string, options: LockOptions): Promise<FolderLock> {
  const {fs, path} = node();
  const {token, timeout, prefix} = options;
  const record = JSON.stringify({pid: process.pid, host: hostName(), token, since: new Date().toISOString(),
    start: processStart(process.pid)} satisfies Holder);
  const deadline = Date.now() + timeout;
  for (let delay = 5; ; delay = Math.min(100, delay * 2)) {
    if (await create(dir, token, record)) break;
    const seen = readLock(dir);
    if (seen == null) continue; // released meanwhile
    const h = seen.holder;
    const dead = h != null ? holderGone(h) : seen.ageMs > STALE_MS;
    if (dead && takeOver(dir, {ino: seen.ino, token: h?.token ?? null}, record)) continue;
    if (Date.now() >= deadline) {
      const who = h != null ? `pid ${h.pid} on host '${brief(h.host, 80)}', since ${brief(h.since, 40)}` : 'an unreadable lock file';
      throw new AttentionError('IO', `${prefix}: another save into this folder holds its lock (${who}) and did not ` +
        `finish within ${timeout} ms; if that process is gone, delete '${path.join(dir, LOCK_NAME)}'`);
    }
    await sleep(delay * (0.5 + Math.random()));
  }
  const mine = () => readLock(dir)?.holder?.token === token;
  return {
    async verify() {
      if (!mine()) {
        const now = readLock(dir)?.holder;
        throw new AttentionError('IO', `${prefix}: the folder's lock was taken by another save ` +
          `(${now != null ? `pid ${now.pid} on host '${brief(now.host, 80)}'` : 'its lock file is gone'}) while this one ran`);
      }
    },
    async release() {
      if (mine()) await fs.promises.unlink(path.join(dir, LOCK_NAME)).catch(() => undefined);
    },
  };
}
