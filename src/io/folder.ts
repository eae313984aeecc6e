/**
 * Atomic saves of a set of files into a folder that holds other files too.
 *
 * `saveFolder` writes the files of one save (a model's `weights.bin`, and whatever
 * companion files the caller keeps beside it: a checkpoint's `optimizer.json`,
 * `optimizer.bin`, `training.json`) and the `model.json` that lists them. Its single commit
 * point is the rename of `model.json`; it never renames, moves or deletes the folder, nor
 * any entry in it that it did not write or that the old `model.json` does not list as
 * replaced. It ends with the canonical names, through hard links, so the final layout is
 * what tfjs-node writes (`model.json` + `weights.bin`).
 *
 * One save with token t = `<pid>-<8 base36 chars>`:
 *   0. mkdir -p DIR (a DIR that is not a folder: IO error); take the folder's lock (lock.ts:
 *      a second saver waits; it is verified again before each commit and given back at the
 *      end); recover leftovers (below); remove orphans (removeOrphans).
 *   1. Read the old DIR/model.json, if any; unparseable: no old files are known.
 *   2. A canonical name is usable when it does not exist in DIR or is among the replaced
 *      old names. Every file is first written under a unique name `<stem>.<t><ext>`.
 *   3. Write the journal DIR/.model.json.journal-<t>, listing every name this save may
 *      create or delete (unique, usable canonical, replaced, temp json); fsync it and DIR.
 *   4. Write every file under its unique name; fsync each.
 *   5. Commit 1: model.json listing the unique names goes to .model.json.tmp-<t>, fsync,
 *      rename over model.json, fsync DIR.
 *   6. Delete the replaced old files.
 *   7. Link each unique name to its usable canonical name; where link fails (EPERM,
 *      ENOTSUP, EEXIST, ...) the unique name stays that file's final name. fsync DIR.
 *   8. Commit 2: model.json listing the final names (temp, fsync, rename, fsync DIR).
 *   9. Unlink the unique names that were linked; delete the journal.
 * A failure before commit 1 removes what the save wrote and throws AttentionError('IO');
 * after commit 1 the new model is in place, so a failure there only stops the tidying
 * (the model then keeps its unique names; a journal that could not be settled stays for
 * the next save's recovery).
 *
 * Recovery, at step 0 of every save: for each `.model.json.journal-<pid>-*` whose pid is
 * not a live process (or is ours but no save of this process is using it), delete every
 * name it lists that the current model.json does not list, then the journal (an
 * unparseable journal is deleted alone: it was written before anything else). If
 * model.json exists but cannot be parsed, recovery leaves everything. Stray
 * `.model.json.tmp-<pid>-*` of such pids are deleted. Nothing else is ever deleted.
 *
 * Why a kill (SIGKILL) at any instant leaves DIR loading as the old model or the new one,
 * and recovery removes exactly the leftovers. M0, M1, M2: model.json before the save, after
 * commit 1, after commit 2; L(M) the names M accounts for (folder_files.ts: its weights and
 * the companion files of every described format); R the replaced names, U the unique
 * names, C the usable canonical names.
 *   1. model.json only changes by rename, which is atomic: at every instant it is M0, M1 or
 *      M2, each complete (written and fsynced under its temp name first).
 *   2. R is a subset of L(M0) (enforced here), and step 6 runs after commit 1: while M0 is
 *      current its files are whole. No other name of DIR is touched: C only holds names
 *      that did not exist or are in R, and U and the temp json are new by their token.
 *   3. M1 lists U, written and fsynced at step 4, before commit 1, and unlinked at step 9,
 *      after commit 2: while M1 is current its files are whole.
 *   4. M2 lists links made at step 7 (the inodes of U, already whole) and U names never
 *      unlinked, all made before commit 2 and kept after it.
 *   5. So whichever of M0, M1, M2 a kill leaves, all it lists is whole: DIR loads as the old
 *      model (M0) or the new one (M1, M2: the same bytes). In a folder with no model.json a
 *      kill before commit 1 leaves none: there was none before.
 *   6. Besides the current model's files a kill can leave only the journal (created before
 *      any other name, deleted last) and names it lists (U, C, R, the temp json).
 *   7. Recovery deletes a listed name only when the current model.json does not list it.
 *      M0 current: it deletes U and the temp json (C \ L(M0) do not exist yet) and keeps
 *      L(M0), R included. M1 current: it deletes R, the links C and the temp json, keeps U.
 *      M2 current: it deletes R, the linked U and the temp json, keeps the final names.
 *      Each time what stays is the current model's files plus what the save never named.
 *   8. L may count names M does not list (a legacy checkpoint's model.json, without a
 *      `checkpoint` field, lists only its weights, but a checkpoint save replaces its
 *      training.json and optimizer.*: train/checkpoint_format.ts counts them for such a
 *      model.json): sparing a name can only keep a file, never delete one. L is the same
 *      for every save of the process (one set of described formats), so a plain model save
 *      spares a checkpoint's files as a checkpoint save does.
 *   9. Recovery is itself safe to kill: it only deletes names no model.json lists, and the
 *      journal goes last, so the next recovery finishes the work.
 *
 * Every file this module reads back (the old model.json, journals) is read confined to DIR
 * (confined.ts): a symlink out or a FIFO there counts as unreadable, never followed or
 * waited on.
 *
 * `fs` and `path` are required lazily so that importing this module in a browser works.
 */
import {AttentionError} from '../core/errors';
import {errno, errorMessage as message, node} from '../core/runtime';
import {existsInFolder, modelFolder, readInFolder, readJsonInFolder} from './confined';
import {isPlainName, listedNames, MODEL_JSON, uniqueName, uniqueNameWriter} from './folder_files';
import {MAX_JSON_BYTES} from './load_limits';
import {DEFAULT_LOCK_TIMEOUT, FolderLock, LOCK_TEMP, lockFolder, removeDeadTakeover} from './lock';
import {checkFolderTarget} from './output_folder';
import {endSave, saveGone, startSave} from './saves';

/** A save's journal and temp model.json: `.model.json.journal-<token>`, `.model.json.tmp-<token>`. */
const TEMP_NAME = /^\.model\.json\.(journal|tmp)-(\d+)-([0-9a-z]{8})$/;

/** One file of a save: its canonical name (`weights.bin`) and its bytes. */
export interface FolderFile {
  name: string;
  data: Uint8Array;
}

/** What one `saveFolder` call writes. */
export interface FolderSave {
  /** The files, under their canonical names. */
  files: FolderFile[];
  /** model.json's text, given the name each canonical name ended up with. */
  modelJSON(names: Record<string, string>): string;
  /**
   * The old files this save replaces, from the old model.json (null: none, or unparseable); only names that
   * model.json accounts for (folder_files.ts) count.
   */
  replaces(old: object | null): string[] | Promise<string[]>;
  /** Start of the error message; default `cannot save model to '<dir>'`. */
  errorPrefix?: string;
  /** How long to wait for another save's lock on the folder, in ms; default 30000. */
  lockTimeout?: number;
}

/** fsync of a folder, so that the names in it survive a power cut; a no-op where folders cannot be opened (Windows). */
async function syncDir(dir: string): Promise<void> {
  const {fs} = node();
  const handle = await fs.promises.open(dir, 'r').catch(() => null);
  if (handle == null) return;
  try {
    await handle.sync().catch((e) => {
      if (!['EISDIR', 'EINVAL', 'EPERM', 'EBADF'].includes(errno(e) ?? '')) throw e;
    });
  } finally {
    await handle.close();
  }
}

/** Creates file (it must not exist), writes data and fsyncs it; on failure, removes what it created. */
async function writeSynced(file: string, data: Uint8Array | string): Promise<void> {
  const {fs} = node();
  const handle = await fs.promises.open(file, 'wx');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (e) {
    await handle.close().catch(() => undefined);
    await fs.promises.unlink(file).catch(() => undefined);
    throw e;
  }
  await handle.close();
}

/** Deletes dir/name; true when it is gone (or never was). */
async function remove(dir: string, name: string): Promise<boolean> {
  const {fs, path} = node();
  return fs.promises.unlink(path.join(dir, name)).then(() => true, (e) => errno(e) === 'ENOENT');
}

/** Deletes every name of `names` not in `keep`, then the journal if all went; never model.json. */
async function settle(dir: string, journal: string, names: string[], keep: Set<string>): Promise<void> {
  let clean = true;
  for (const name of names) {
    if (isPlainName(name) && !keep.has(name) && !(await remove(dir, name))) clean = false;
  }
  if (clean) await remove(dir, journal);
}

/**
 * The parsed DIR/model.json: null when absent, 'corrupt' when it cannot be read or parsed,
 * or is not a regular file inside DIR (a symlink out, a FIFO: read confined, never followed).
 */
async function readModelJSON(dir: string): Promise<object | null | 'corrupt'> {
  try {
    const folder = modelFolder(dir);
    if (!existsInFolder(folder, MODEL_JSON)) return null;
    const json = readJsonInFolder(folder, MODEL_JSON, 'model.json');
    return json != null && typeof json === 'object' && !Array.isArray(json) ? json : 'corrupt';
  } catch {
    return 'corrupt';
  }
}

/**
 * Removes what saves that died (killed, crashed) left in `dir`: every name their journals
 * list that the current model.json does not, the journals, and their temp model.json files.
 * Best effort: what cannot be removed stays for a later save. Nothing else is touched.
 */
export async function recoverFolder(dir: string): Promise<void> {
  const {fs} = node();
  const entries = await fs.promises.readdir(dir).catch(() => [] as string[]);
  // A dead lock-taker's temp names and takeover file go first: they never hold anything a model lists.
  removeDeadTakeover(dir);
  for (const name of entries) {
    const m = LOCK_TEMP.exec(name);
    if (m != null && saveGone(Number(m[1]), `${m[1]}-${m[2]}`)) await remove(dir, name);
  }
  const stale = entries.map((name) => ({name, m: TEMP_NAME.exec(name)}))
    .filter(({m}) => m != null && saveGone(Number(m[2]), `${m[2]}-${m[3]}`));
  if (stale.length === 0) return;
  // The current model.json decides what stays; a corrupt one: leave everything.
  const current = await readModelJSON(dir);
  if (current === 'corrupt') return;
  const keep = current == null ? new Set<string>() : listedNames(current);
  for (const {name, m} of stale) {
    if (m![1] === 'tmp') {
      await remove(dir, name);
      continue;
    }
    let text: string | null;
    try {
      text = readInFolder(modelFolder(dir), name, 'journal', {maxBytes: MAX_JSON_BYTES}).toString('utf8');
    } catch {
      text = null;
    }
    if (text == null) continue; // gone (another recovery), unreadable, or not a regular file: leave it
    let names: unknown;
    try {
      names = JSON.parse(text).names;
    } catch {
      await remove(dir, name); // cut off while written: nothing else existed yet
      continue;
    }
    await settle(dir, name, Array.isArray(names) ? names : [], keep);
  }
}

/**
 * Removes the library's own weights and companion files (`weights.<pid>-<8 chars>.bin`, a
 * checkpoint's `optimizer.<...>.json|bin` and `training.<...>.json`: uniqueNameWriter, names
 * only a save writes) whose writer is gone (the pid no longer runs, or is this process and no save of it uses the
 * token), that the current model.json does not list and no remaining journal names: what
 * saves racing without a lock (earlier versions) left behind. Run under the folder's lock,
 * after recovery. Any other name is the user's and is never touched; so is everything when
 * model.json cannot be read.
 */
async function removeOrphans(dir: string): Promise<void> {
  const {fs} = node();
  const current = await readModelJSON(dir);
  if (current === 'corrupt') return;
  const keep = current == null ? new Set<string>() : listedNames(current);
  const entries = await fs.promises.readdir(dir).catch(() => [] as string[]);
  for (const name of entries.filter((n) => TEMP_NAME.exec(n)?.[1] === 'journal')) {
    try {
      const names = (readJsonInFolder(modelFolder(dir), name, 'journal') as {names?: unknown}).names;
      if (Array.isArray(names)) names.forEach((n) => keep.add(String(n)));
    } catch {
      return; // a journal that cannot be read may list any of them: leave all
    }
  }
  for (const name of entries) {
    const writer = uniqueNameWriter(name);
    if (writer != null && !keep.has(name) && saveGone(writer.pid, writer.token)) await remove(dir, name);
  }
}

/**
 * Saves `save.files` and the model.json that lists them into `dir` (created with its
 * parents if missing), atomically: a process killed at any instant leaves `dir` loading as
 * the old model or the new one. Only model.json, the new files and the old files
 * `save.replaces` names are written or deleted; every other entry of `dir` stays as it was.
 * Leftovers of earlier saves that died are removed first.
 *
 * @throws AttentionError('IO') "cannot save model to '<dir>': <cause>" when the new model
 *   could not be put in place; `dir` then holds what it held before.
 */
export async function saveFolder(dir: string, save: FolderSave): Promise<void> {
  const {fs, path} = node();
  const token = startSave();
  const journal = `.model.json.journal-${token}`;
  const tmp = `.model.json.tmp-${token}`;
  const unique = save.files.map((f) => uniqueName(f.name, token));
  const written: string[] = []; // names this save created, until commit 1
  const prefix = save.errorPrefix ?? `cannot save model to '${dir}'`;
  const at = (name: string) => path.join(dir, name);
  let listed: string[] = []; // the journal's names
  let current: Record<string, string>; // canonical name -> the name the current model.json lists
  let usable: boolean[];
  let replaced: string[];
  let lock: FolderLock | null = null;
  try {
    // 0. The folder (created if missing), locked against other saves; leftovers of dead saves.
    checkFolderTarget(dir, prefix);
    await fs.promises.mkdir(dir, {recursive: true});
    lock = await lockFolder(dir, {token, timeout: save.lockTimeout ?? DEFAULT_LOCK_TIMEOUT, prefix});
    await recoverFolder(dir);
    await removeOrphans(dir);

    // 1. The old model.json names the files this save replaces; never this save's own names.
    const old = await readModelJSON(dir);
    const oldListed = old == null || old === 'corrupt' ? new Set<string>() : listedNames(old);
    const ours = new Set([...unique, journal, tmp]);
    replaced = [...new Set(await save.replaces(old === 'corrupt' ? null : old))]
      .filter((name) => isPlainName(name) && oldListed.has(name) && !ours.has(name));

    // 2. Canonical names that are free, or replaced.
    const present = new Set(await fs.promises.readdir(dir));
    usable = save.files.map((f) => !present.has(f.name) || replaced.includes(f.name));

    // 3. The journal: every name this save may create or delete.
    listed = [...unique, ...save.files.filter((_, i) => usable[i]).map((f) => f.name), ...replaced, tmp];
    await writeSynced(at(journal), JSON.stringify({format: 1, names: listed}));
    written.push(journal);
    await syncDir(dir);

    // 4. The files, under their unique names.
    for (let i = 0; i < save.files.length; i++) {
      await writeSynced(at(unique[i]), save.files[i].data);
      written.push(unique[i]);
    }

    // 5. Commit 1: model.json lists the unique names.
    current = Object.fromEntries(save.files.map((f, i) => [f.name, unique[i]]));
    await writeSynced(at(tmp), save.modelJSON(current));
    written.push(tmp);
    await lock.verify();
    await fs.promises.rename(at(tmp), at(MODEL_JSON));
  } catch (e) {
    // model.json lists nothing of this save: remove all it wrote, the journal last.
    for (const name of written.reverse()) await remove(dir, name);
    await lock?.release();
    endSave(token);
    if (e instanceof AttentionError) throw e;
    throw new AttentionError('IO', `${prefix}: ${message(e)}`);
  }

  // The new model is in place; what follows makes the names canonical and tidies up.
  let lostLock = false;
  try {
    await syncDir(dir);
    // 6. The replaced old files.
    let clean = true;
    for (const name of replaced) if (!(await remove(dir, name))) clean = false;

    // 7. Canonical names as hard links to the unique ones.
    const final = {...current};
    for (let i = 0; i < save.files.length; i++) {
      const name = save.files[i].name;
      if (usable[i] && await fs.promises.link(at(unique[i]), at(name)).then(() => true, () => false)) {
        final[name] = name;
      }
    }
    const linked = unique.filter((u, i) => final[save.files[i].name] !== u);
    if (linked.length > 0) {
      await syncDir(dir);
      // 8. Commit 2: model.json lists the final names.
      await writeSynced(at(tmp), save.modelJSON(final));
      try {
        await lock.verify();
      } catch {
        lostLock = true; // another save owns the folder now: leave the journal to its recovery
        await remove(dir, tmp);
        return;
      }
      await fs.promises.rename(at(tmp), at(MODEL_JSON));
      current = final;
      await syncDir(dir);
    }

    // 9. The unique names that now have canonical ones; the journal.
    for (const name of linked) if (!(await remove(dir, name))) clean = false;
    if (clean) await remove(dir, journal);
  } catch {
    // A write or sync failed after commit 1: the current model.json and its files are whole.
    // Remove what it does not list; a journal that cannot be settled is left to the next save.
    await settle(dir, journal, listed, new Set(Object.values(current))).catch(() => undefined);
  } finally {
    if (!lostLock) await lock.release();
    endSave(token);
  }
}
