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
 * A lock whose holder is gone is taken over at once: same host and the pid no longer runs
 * (or runs a process started at another time: a reused pid), or this process and a save
 * that has ended. A lock of another host is never taken over (its pid means nothing
 * here): the error says to delete it by hand if that process is gone. A lock file that
 * is not a regular file, or does not parse for 10 s, is treated as a dead holder's.
 * Taking over renames the dead lock away, checks by its inode that it moved the lock it
 * judged dead (not one taken meanwhile, which it puts back), and deletes it.
 *
 * Before each commit the holder checks that the lock is still its own (`verify`), so a
 * save whose lock was taken over in a race of three savers stops rather than mixes.
 */
import {AttentionError} from '../errors';
import {errno, node, nodeBuiltin} from '../runtime';
import {readInFolder, modelFolder} from './confined';

/** The lock's name in the model folder. */
export const LOCK_NAME = '.model.json.lock';
/** Temp names of taking a lock (`new`) and of taking over a dead one (`dead`), by token. */
export const LOCK_TEMP = /^\.model\.json\.lock\.(new|dead)-(\d+)-([0-9a-z]{8})$/;
/** Default wait for another saver, in ms. */
export const DEFAULT_LOCK_TIMEOUT = 30_000;
/** A lock file that does not parse is a dead holder's once it is this old (ms). */
const UNREADABLE_STALE_MS = 10_000;

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
  /** The save's token, `<pid>-<8 base36 chars>`. */
  token: string;
  /** ms to wait for another holder. */
  timeout: number;
  /** Start of error messages: "cannot save model to 'DIR'". */
  prefix: string;
  /** Whether a save of this process with this token is still running. */
  isActive(token: string): boolean;
}

function hostName(): string {
  const os = nodeBuiltin('os') as typeof import('os') | null;
  return os?.hostname() ?? 'unknown';
}

/** A process's start time from /proc (Linux), or null. */
function processStart(pid: number): string | null {
  try {
    const stat = node().fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** True when the holder's process can no longer be saving. */
function holderGone(h: Holder, isActive: (token: string) => boolean): boolean {
  if (h.host !== hostName()) return false;
  if (h.pid === process.pid) return !isActive(h.token);
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if (errno(e) === 'ESRCH') return true; // EPERM: alive, another user's
  }
  const start = processStart(h.pid);
  return h.start != null && start != null && start !== h.start;
}

function isHolder(x: unknown): x is Holder {
  const h = x as Holder | null;
  return h != null && typeof h === 'object' && Number.isInteger(h.pid) && typeof h.host === 'string' &&
    typeof h.token === 'string' && typeof h.since === 'string';
}

/** The lock file `name` of `dir`: its inode and its holder (null: not a regular file, or unparseable); null if absent. */
function readLock(dir: string, name: string): {ino: number; mtimeMs: number; holder: Holder | null} | null {
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
  return {ino: stats.ino, mtimeMs: stats.mtimeMs, holder};
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
  } finally {
    await handle.close();
  }
  return true;
}

/** Moves the dead lock of inode `ino` away and deletes it; a lock taken meanwhile is put back. */
async function takeOver(dir: string, token: string, ino: number): Promise<void> {
  const {fs, path} = node();
  const lock = path.join(dir, LOCK_NAME);
  const dead = path.join(dir, `.model.json.lock.dead-${token}`);
  try {
    await fs.promises.rename(lock, dead);
  } catch (e) {
    if (errno(e) === 'ENOENT') return; // another saver took it over first
    throw e;
  }
  const moved = await fs.promises.lstat(dead).catch(() => null);
  if (moved != null && moved.ino !== ino) await fs.promises.link(dead, lock).catch(() => undefined); // a live one: back
  await fs.promises.unlink(dead).catch(() => undefined);
}

/**
 * Takes the lock of folder `dir` (which exists), waiting up to `options.timeout` ms for
 * another holder and taking over a dead one's.
 * @throws AttentionError('IO') naming the holder when the wait runs out.
 */
export async function lockFolder(dir: string, options: LockOptions): Promise<FolderLock> {
  const {fs, path} = node();
  const {token, timeout, prefix, isActive} = options;
  const record: Holder = {pid: process.pid, host: hostName(), token, since: new Date().toISOString(),
    start: processStart(process.pid)};
  const deadline = Date.now() + timeout;
  for (let delay = 5; ; delay = Math.min(100, delay * 2)) {
    if (await create(dir, token, JSON.stringify(record))) break;
    const seen = readLock(dir, LOCK_NAME);
    if (seen == null) continue; // released meanwhile
    const h = seen.holder;
    const dead = h != null ? holderGone(h, isActive) : Date.now() - seen.mtimeMs > UNREADABLE_STALE_MS;
    if (dead) {
      await takeOver(dir, token, seen.ino);
      continue;
    }
    if (Date.now() >= deadline) {
      const who = h != null ? `pid ${h.pid} on host '${h.host}', since ${h.since}` : 'an unreadable lock file';
      throw new AttentionError('IO', `${prefix}: another save into this folder holds its lock (${who}) and did not ` +
        `finish within ${timeout} ms; if that process is gone, delete '${path.join(dir, LOCK_NAME)}'`);
    }
    await sleep(delay * (0.5 + Math.random()));
  }
  const mine = () => readLock(dir, LOCK_NAME)?.holder?.token === token;
  return {
    async verify() {
      if (!mine()) {
        const now = readLock(dir, LOCK_NAME)?.holder;
        throw new AttentionError('IO', `${prefix}: the folder's lock was taken by another save ` +
          `(${now != null ? `pid ${now.pid} on host '${now.host}'` : 'its lock file is gone'}) while this one ran`);
      }
    },
    async release() {
      if (mine()) await fs.promises.unlink(path.join(dir, LOCK_NAME)).catch(() => undefined);
    },
  };
}
