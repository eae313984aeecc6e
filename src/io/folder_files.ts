/**
 * The names of a model folder that saves (folder.ts) reason about: model.json, the files a
 * model.json accounts for, and the unique names a save writes its files under first.
 *
 * A model.json accounts for its weights (`weightsManifest[].paths`) and for the companion
 * files that a format kept beside the model names in it (a training checkpoint's state,
 * say). io/ knows no such format: the module that owns one describes it here
 * (`describeCompanions`, when that module is loaded), and from then on every save, recovery
 * and orphan sweep of any folder counts its files, whichever kind of save runs. Every entry
 * of the package loads train/checkpoint_format.ts, so a process that saves counts a
 * checkpoint's files.
 */

/** The commit point of every save. */
export const MODEL_JSON = 'model.json';
/** The weights file of a saved model, as tfjs-node names it. */
export const WEIGHTS_BIN = 'weights.bin';

/** A format of companion files kept beside a model's weights, described by the module that owns it. */
export interface CompanionFiles {
  /** The canonical names of the files its saves write (training.json, ...), for the orphan sweep. */
  names: readonly string[];
  /**
   * The companion files a parsed model.json accounts for: what the folder must keep while it
   * is current. Counting a name it does not list can only keep a file, never delete one.
   */
  listedBy(json: object): readonly string[];
}

const companions: CompanionFiles[] = [];

/** Makes every save, recovery and orphan sweep count `format`'s files from now on; once per format. */
export function describeCompanions(format: CompanionFiles): void {
  if (!companions.includes(format)) companions.push(format);
}

/** True for a plain file name inside the folder: no separator, not `.`/`..`, not model.json. */
export function isPlainName(name: unknown): name is string {
  return typeof name === 'string' && name !== '' && name !== '.' && name !== '..' && name !== MODEL_JSON &&
    !name.includes('/') && !name.includes('\\') && !name.includes('\0');
}

/** The weights files a parsed model.json lists (`weightsManifest[].paths`), plain names only. */
export function weightsPaths(json: unknown): string[] {
  const manifest = (json as {weightsManifest?: unknown} | null)?.weightsManifest;
  if (!Array.isArray(manifest)) return [];
  return manifest.flatMap((group) => (Array.isArray(group?.paths) ? group.paths : [])).filter(isPlainName);
}

/** Every name a parsed model.json accounts for: its weights, and each described format's companion files. */
export function listedNames(json: object): Set<string> {
  return new Set([...weightsPaths(json), ...companions.flatMap((c) => c.listedBy(json)).filter(isPlainName)]);
}

/** `<stem>.<token><ext>`: weights.bin -> weights.<token>.bin. */
export function uniqueName(name: string, token: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? `${name.slice(0, dot)}.${token}${name.slice(dot)}` : `${name}.${token}`;
}

const TOKEN = /^(\d+)-([0-9a-z]{8})$/;

/**
 * The writer of `name` when it is the unique name a save gives one of the files saves write
 * (weights.bin, or a described companion: `weights.<pid>-<8 chars>.bin`, ...); else null.
 */
export function uniqueNameWriter(name: string): {pid: number; token: string} | null {
  for (const canonical of [WEIGHTS_BIN, ...companions.flatMap((c) => c.names)]) {
    const dot = canonical.lastIndexOf('.');
    const [stem, ext] = dot > 0 ? [canonical.slice(0, dot), canonical.slice(dot)] : [canonical, ''];
    if (!name.startsWith(`${stem}.`) || !name.endsWith(ext)) continue;
    const m = TOKEN.exec(name.slice(stem.length + 1, name.length - ext.length));
    if (m != null) return {pid: Number(m[1]), token: `${m[1]}-${m[2]}`};
  }
  return null;
}
