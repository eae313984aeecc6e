/**
 * `file://` saving and loading for plain `@tensorflow/tfjs` in Node, without tfjs-node.
 *
 * Writes the same layout as tfjs-node's `NodeFileSystem`, so either can read what the
 * other wrote:
 *
 *   DIR/model.json   modelTopology, format, generatedBy, convertedBy, weightsManifest
 *                    ([{paths: ['weights.bin'], weights: specs}]), plus trainingConfig,
 *                    signature, userDefinedMetadata, modelInitializer when present
 *   DIR/weights.bin  every weight, concatenated in manifest order
 *
 * Saving writes only these files (and, while it runs, temporary ones beside them) and
 * leaves every other entry of DIR as it was: it goes through `saveFolder` (folder.ts),
 * whose one commit point is the rename of model.json, so a process killed at any instant
 * leaves DIR loading as the old model or the new one, never half of one; the folder's lock
 * (lock.ts) makes a second saver wait.
 *
 * Loading reads only regular files inside DIR, each sized before it is read (confined.ts),
 * and refuses a model whose weights pass `maxBytes`, by the manifest and by what the config
 * builds (model_plan.ts), before anything is read or allocated.
 *
 * `fs` and `path` are reached lazily (runtime.ts), inside the functions that use them, so
 * importing this module in a browser does not fail; calling them there throws UNSUPPORTED.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError, brief} from '../core/errors';
import {formatBytes} from '../core/limits';
import {assertNode, isNode, node} from '../core/runtime';
import {checkArgNames} from '../core/validate';
import {
  checkRelativeName, closeFile, ModelFolder, modelFolder, OpenFile, openInFolder, readJsonInFolder, readOpenFile,
} from './confined';
import {saveFolder} from './folder';
import {MODEL_JSON, WEIGHTS_BIN, weightsPaths} from './folder_files';
import {FILE_HANDLER, LoadLimits, loadLimits, MAX_JSON_BYTES, provideFileLoader} from './load_limits';
import {checkPlan, ModelPlan, planModel} from './model_plan';
import {decodedBytes, manifestBytes} from './specs';

const SCHEME = 'file://';

/** A Node Buffer as a standalone ArrayBuffer (a Buffer may be a view into a larger pool; copied only then). */
function toArrayBuffer(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return b.buffer as ArrayBuffer;
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** Weight data as one byte array, copied only when it comes in several pieces. */
export function weightBytes(data: tf.io.WeightData | undefined): Uint8Array {
  const pieces = data == null ? [] : Array.isArray(data) ? data : [data];
  return new Uint8Array(pieces.length === 1 ? pieces[0] : tf.io.CompositeArrayBuffer.join(pieces));
}

/**
 * The model.json content for `artifacts`, with the fields tfjs-node writes; the weights
 * are in the one file `weightsFile` (a name relative to model.json).
 */
export function modelJSONFor(artifacts: tf.io.ModelArtifacts, weightsFile = WEIGHTS_BIN): tf.io.ModelJSON {
  const json: tf.io.ModelJSON = {
    modelTopology: artifacts.modelTopology as object,
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy,
    weightsManifest: [{paths: [weightsFile], weights: artifacts.weightSpecs ?? []}],
  };
  if (artifacts.trainingConfig != null) json.trainingConfig = artifacts.trainingConfig;
  if (artifacts.signature != null) json.signature = artifacts.signature;
  if (artifacts.userDefinedMetadata != null) json.userDefinedMetadata = artifacts.userDefinedMetadata;
  if (artifacts.modelInitializer != null) json.modelInitializer = artifacts.modelInitializer;
  if (artifacts.initializerSignature != null) json.initializerSignature = artifacts.initializerSignature;
  return json;
}

/** Options of `fileSystem(path, options)`. */
export interface FileSystemOptions {
  /**
   * Loading: the most bytes of weights the model may hold, by its manifest and by what its
   * config builds, checked before anything is read or allocated. Default 2 GiB.
   */
  maxBytes?: number;
  /** Loading: the largest model.json read, in bytes. Default MAX_JSON_BYTES (64 MiB). */
  maxJsonBytes?: number;
  /** Saving: how long to wait for another save into the same folder to finish, in ms. Default 30000. */
  lockTimeout?: number;
}

export const FILE_SYSTEM_OPTIONS: readonly string[] = ['maxBytes', 'maxJsonBytes', 'lockTimeout'];

class FileSystemHandler implements tf.io.IOHandler {
  /** Absolute path: the model folder when saving; model.json or its folder when loading. */
  private readonly target: string;

  /** Where and how it loads, for loadKerasModel, which rewrites the config before sizing it. */
  readonly [FILE_HANDLER]: {path: string; limits: LoadLimits};

  constructor(target: string, private readonly limits: LoadLimits, private readonly lockTimeout?: number) {
    this.target = node().path.resolve(target);
    this[FILE_HANDLER] = {path: this.target, limits};
  }

  /**
   * Writes DIR/model.json and DIR/weights.bin through `saveFolder`: DIR and its parents
   * are created if missing; the old model's weights files are the only other files it
   * deletes, once the new model.json is in place.
   */
  async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
    if (artifacts.modelTopology instanceof ArrayBuffer) {
      throw new AttentionError('UNSUPPORTED',
        `saving a binary (GraphDef) model topology to '${this.target}' is not supported`);
    }
    await saveFolder(this.target, {
      files: [{name: WEIGHTS_BIN, data: weightBytes(artifacts.weightData)}],
      modelJSON: (names) => JSON.stringify(modelJSONFor(artifacts, names[WEIGHTS_BIN])),
      replaces: (old) => weightsPaths(old), // like tfjs-node: only the model's own files
      lockTimeout: this.lockTimeout,
    });
    return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts)};
  }

  async load(): Promise<tf.io.ModelArtifacts> {
    const {fs, path} = node();
    // A folder stands for the model.json inside it.
    const info = await fs.promises.stat(this.target).catch(() => null);
    const [dir, name] = info?.isDirectory() ? [this.target, MODEL_JSON]
      : [path.dirname(this.target), path.basename(this.target)];
    if (await fs.promises.lstat(path.join(dir, name)).then(() => false, () => true)) {
      throw new AttentionError('IO', `cannot read model.json at '${path.join(dir, name)}': it does not exist`);
    }
    const folder = modelFolder(dir);
    return artifactsFor(readModelJSON(folder, name, this.limits.maxJsonBytes), folder, name, this.limits);
  }
}

/**
 * The parsed model.json `name` of `folder`, read confined (confined.ts) and refused unread
 * above `maxJsonBytes`.
 * @throws AttentionError('IO') "cannot read model.json ..." or "corrupt model.json ...".
 */
export function readModelJSON(folder: ModelFolder, name = MODEL_JSON, maxJsonBytes = MAX_JSON_BYTES): tf.io.ModelJSON {
  const json = readJsonInFolder(folder, name, 'model.json', maxJsonBytes) as tf.io.ModelJSON | null;
  if (json == null || typeof json !== 'object' || Array.isArray(json) || json.modelTopology == null) {
    throw new AttentionError('IO', `corrupt model.json '${node().path.join(folder.dir, name)}': it has no modelTopology`);
  }
  return json;
}

/** The manifest of `json`, checked: a list of {paths, weights} whose paths are names inside the folder. */
function checkedManifest(json: tf.io.ModelJSON, jsonPath: string): tf.io.WeightsManifestConfig {
  const manifest = json.weightsManifest as unknown;
  if (manifest == null) return [];
  if (!Array.isArray(manifest) ||
      !manifest.every((g) => g != null && Array.isArray(g.paths) && Array.isArray(g.weights))) {
    throw new AttentionError('IO', `corrupt model.json '${jsonPath}': weightsManifest is not a list of {paths, weights}`);
  }
  for (const group of manifest as tf.io.WeightsManifestConfig) {
    for (const file of group.paths) checkRelativeName(file, 'weights file', jsonPath);
  }
  return manifest;
}

/**
 * Refuses a config that builds more than `limits.maxBytes` of weights, sized with stand-ins
 * (model_plan.ts). A config that does not build (an unknown class, a bad layer config) is
 * refused too: tfjs would create the weights of the layers before the failing one first.
 */
async function checkConfigBytes(topology: unknown, folder: ModelFolder, jsonPath: string,
    limits: LoadLimits): Promise<void> {
  let plan: ModelPlan;
  try {
    plan = await planModel(topology as object);
  } catch (e) {
    throw new AttentionError('IO', `cannot load the model in '${folder.dir}': ${brief(e)}`);
  }
  try {
    checkPlan(plan, limits.maxBytes, `'${jsonPath}'`, limits.raise);
  } finally {
    plan.model.dispose();
  }
}

/**
 * The artifacts of the parsed model.json `json` (the file `jsonName` of `folder`), with its
 * weights files read. Before a byte of weights is read: the manifest's paths are checked,
 * its byte count and (with limits.planTopology) what the config builds are held to
 * limits.maxBytes, and each group's files are opened confined and their sizes compared
 * with what the manifest declares.
 */
export async function artifactsFor(json: tf.io.ModelJSON, folder: ModelFolder, jsonName: string,
                                   limits: LoadLimits): Promise<tf.io.ModelArtifacts> {
  const jsonPath = node().path.join(folder.dir, jsonName);
  const groups = checkedManifest(json, jsonPath);
  const specs = groups.flatMap((g) => g.weights);
  const declared = decodedBytes(specs); // a quantized weight is decoded to its dtype
  if (declared > limits.maxBytes) {
    throw new AttentionError('IO', `'${jsonPath}': its manifest lists ${specs.length} weights of ` +
      `${formatBytes(declared)}, over the limit of ${formatBytes(limits.maxBytes)}; nothing was read. ${limits.raise}`);
  }
  if (limits.planTopology) await checkConfigBytes(json.modelTopology, folder, jsonPath, limits);
  return tf.io.getModelArtifactsForJSON(json, async () => {
    const opened: OpenFile[] = [];
    try {
      // Every file opened and sized first: a file of the wrong size is refused before any is read.
      for (const group of groups) {
        const files = group.paths.map((file) => openInFolder(folder, file, 'weights file', jsonPath));
        opened.push(...files);
        const have = files.reduce((n, f) => n + f.size, 0);
        const want = manifestBytes(group.weights);
        if (Number.isFinite(want) && have !== want) {
          throw new AttentionError('IO', `corrupt weights for '${jsonPath}': the files hold ${have} bytes but ` +
            `model.json lists ${want} (${files.map((f) => `'${f.path}'`).join(', ')}: truncated or overwritten?)`);
        }
      }
      const total = opened.reduce((n, f) => n + f.size, 0);
      if (total > limits.maxBytes) {
        throw new AttentionError('IO', `'${jsonPath}': its weights files hold ${formatBytes(total)}, over the limit ` +
          `of ${formatBytes(limits.maxBytes)}; nothing was read. ${limits.raise}`);
      }
      const buffers = opened.map((f) => readOpenFile(f, 'weights file'));
      const data = buffers.length === 1 ? toArrayBuffer(buffers[0])
        : tf.io.CompositeArrayBuffer.join(buffers.map(toArrayBuffer));
      return [specs, data];
    } finally {
      opened.forEach(closeFile);
    }
  });
}

/** A load-only handler for the model.json at `path` (or in the folder `path`), with `limits`. */
export function fileSystemLoader(path: string, limits: LoadLimits): tf.io.IOHandler {
  assertNode('fileSystem(path)');
  return new FileSystemHandler(path, limits);
}

/**
 * A load-only IOHandler for a model.json already read and parsed (`readModelJSON`): its
 * weights files are read from `folder` with the same checks as `fileSystem`.
 */
export function fromModelJSON(json: tf.io.ModelJSON, folder: ModelFolder, jsonName: string,
                              limits: LoadLimits): tf.io.IOHandler {
  return {load: () => artifactsFor(json, folder, jsonName, limits)};
}

/**
 * An IOHandler that saves a model to, and loads it from, the local file system.
 *
 * Loading reads only regular files inside the model's folder, of the sizes the manifest
 * declares, and refuses a model whose weights pass `options.maxBytes` before anything is
 * read or allocated (see "Loading models you did not make" in the README). Saving holds the
 * folder's lock from its first write to its commit, so two savers never mix a model.
 *
 * @param path For saving: the model folder (created if missing; its model.json and weights
 *   are replaced atomically, every other file in it is kept). For loading: the `model.json`
 *   file, or the folder holding it.
 * @param options maxBytes, maxJsonBytes (loading) and lockTimeout (saving).
 * @returns A handler for `model.save(handler)` and `tf.loadLayersModel(handler)`.
 * @throws AttentionError with code 'IO' (from save/load) when a file is missing,
 *   corrupt, outside the folder, too large or cannot be written; the message names the path.
 */
export function fileSystem(path: string, options: FileSystemOptions = {}): tf.io.IOHandler {
  assertNode('fileSystem(path)');
  checkArgNames('fileSystem', options, FILE_SYSTEM_OPTIONS);
  const lockTimeout = options?.lockTimeout;
  if (lockTimeout !== undefined && (typeof lockTimeout !== 'number' || !(lockTimeout >= 0))) {
    throw new AttentionError('INVALID_CONFIG', `fileSystem: lockTimeout must be a number of ms >= 0, received ${String(lockTimeout)}`);
  }
  return new FileSystemHandler(path, loadLimits(options ?? {}, 'fileSystem'), lockTimeout);
}

// loadKerasModel reads file:// URLs in Node through this module's loader (io/load_limits.ts
// holds it, so that keras/ does not import the file system).
provideFileLoader(fileSystemLoader);

let registered = false;
let routing = false;

/**
 * A router for `file://` URLs that yields to any other router handling the same URL
 * (tfjs-node's, when loaded), because tfjs refuses to save when two handlers match.
 * It asks the registry for the other handlers while a guard makes itself answer null.
 */
function makeRouter(lookup: (url: string) => tf.io.IOHandler[]) {
  return (url: string | string[]): tf.io.IOHandler | null => {
    if (routing || typeof url !== 'string' || !url.startsWith(SCHEME)) return null;
    routing = true;
    let others: tf.io.IOHandler[];
    try {
      others = lookup(url);
    } finally {
      routing = false;
    }
    return others.length > 0 ? null : fileSystem(url.slice(SCHEME.length));
  };
}

/**
 * Registers save and load routers for `file://` URLs, so that in Node
 * `model.save('file://DIR')` and `tf.loadLayersModel('file://DIR/model.json')` work with
 * plain `@tensorflow/tfjs`. Safe to call more than once; a no-op outside Node.
 * Where tfjs-node is loaded, its own `file://` handler keeps precedence.
 */
export function registerFileRouter(): void {
  if (registered || !isNode()) return;
  registered = true;
  // tfjs types a router as always returning a handler, but its registry skips null.
  type Router = Parameters<typeof tf.io.registerSaveRouter>[0];
  tf.io.registerSaveRouter(makeRouter((url) => tf.io.getSaveHandlers(url)) as Router);
  tf.io.registerLoadRouter(makeRouter((url) => tf.io.getLoadHandlers(url)) as Router);
}
