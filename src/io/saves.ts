/**
 * Save tokens, and whether the save (or lock holder) behind one can still be running.
 *
 * A token is `<pid>-<2 chars of thread><6 random chars>` (8 base36 chars after the pid),
 * so a save's temp names, journal and lock say which process and which of its threads
 * wrote them. A token's save is gone when:
 *   - its pid no longer runs (or, on Linux, runs a process started at another time: a
 *     reused pid), for a pid of this host;
 *   - it is this process and this thread, and no save of this thread uses the token (the
 *     registry is kept on globalThis, so a second copy of the library in the process, a
 *     CommonJS and an ES module build say, sees the same saves).
 * A save of another thread of this process (a worker) is taken to be running: its registry
 * cannot be seen from here.
 */
import {errno, node, nodeBuiltin} from '../core/runtime';

const REGISTRY = Symbol.for('tfjs-attention.activeSaves');

/** Tokens of the saves under way in this thread (shared by every copy of the library in it). */
function activeSaves(): Set<string> {
  const g = globalThis as unknown as Record<symbol, Set<string> | undefined>;
  return g[REGISTRY] ??= new Set<string>();
}

/** Two base36 chars naming this thread (0 is the main thread). */
function threadTag(): string {
  const threads = nodeBuiltin('worker_threads') as {threadId?: number} | null;
  return ((threads?.threadId ?? 0) % 1296).toString(36).padStart(2, '0');
}

/** A new token of this process and thread, registered as under way until `endSave`. */
export function startSave(): string {
  let rand = '';
  for (let i = 0; i < 6; i++) rand += Math.floor(Math.random() * 36).toString(36);
  const token = `${process.pid}-${threadTag()}${rand}`;
  activeSaves().add(token);
  return token;
}

export function endSave(token: string): void {
  activeSaves().delete(token);
}

/** A process's start time from /proc (Linux), or null where unknown. */
export function processStart(pid: number): string | null {
  try {
    const stat = node().fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * True when the save of `token` (pid `pid`, of this host) can no longer be running.
 * @param start The process's start time when the token was made, if recorded (a lock
 *   records it): a live pid started at another time is a reused one.
 */
export function saveGone(pid: number, token: string, start: string | null = null): boolean {
  if (pid === process.pid) {
    const thread = token.slice(token.indexOf('-') + 1, token.indexOf('-') + 3);
    return thread === threadTag() && !activeSaves().has(token);
  }
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (errno(e) === 'ESRCH') return true; // EPERM: alive, another user's
  }
  const now = start != null ? processStart(pid) : null;
  return now != null && now !== start;
}
