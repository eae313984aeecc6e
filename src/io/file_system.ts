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
 * leaves DIR loading as the old model or the new one, never half of one.
 *
 * `fs` and `path` are reached lazily (runtime.ts), inside the functions that use them, so
 * importing this module in a browser does not fail; calling them there throws UNSUPPORTED.
 */
import * as tf from '@tensorflow/tfjs';
import {AttentionError} from '../errors';
import {assertNode, errno, errorMessage as message, isNode, node} from '../runtime';
import {MODEL_JSON, saveFolder, weightsPaths} from './folder';
import {manifestBytes} from './specs';

const SCHEME = 'file://';
const WEIGHTS_BIN = 'weights.bin';

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
    modelTopology: artifacts.modelTopology as {},
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

class FileSystemHandler implements tf.io.IOHandler {
  /** Absolute path: the model folder when saving; model.json or its folder when loading. */
  private readonly target: string;

  constructor(target: string) {
    this.target = node().path.resolve(target);
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
    });
    return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts)};
  }

  async load(): Promise<tf.io.ModelArtifacts> {
    const {fs, path} = node();
    // A folder stands for the model.json inside it.
    const info = await fs.promises.stat(this.target).catch(() => null);
    const jsonPath = info?.isDirectory() ? path.join(this.target, MODEL_JSON) : this.target;
    return artifactsFor(readModelJSONFile(jsonPath), jsonPath);
  }
}

/**
 * The parsed model.json at `jsonPath` (read synchronously: it is small).
 * @throws AttentionError('IO') "cannot read model.json at ..." or "corrupt model.json at ...".
 */
export function readModelJSONFile(jsonPath: string): tf.io.ModelJSON {
  const {fs} = node();
  let text: string;
  try {
    text = fs.readFileSync(jsonPath, 'utf8');
  } catch (e) {
    const why = errno(e) === 'ENOENT' ? 'it does not exist' : message(e);
    throw new AttentionError('IO', `cannot read model.json at '${jsonPath}': ${why}`);
  }
  try {
    const json = JSON.parse(text);
    if (json == null || typeof json !== 'object' || json.modelTopology == null) {
      throw new Error('it has no modelTopology');
    }
    return json;
  } catch (e) {
    throw new AttentionError('IO', `corrupt model.json at '${jsonPath}': ${message(e)}`);
  }
}

/** The artifacts of the parsed model.json `json` found at `jsonPath`, with its weights files read. */
async function artifactsFor(json: tf.io.ModelJSON, jsonPath: string): Promise<tf.io.ModelArtifacts> {
  const {fs, path} = node();
  // Weight files are listed relative to model.json; read them all, in manifest order.
  return tf.io.getModelArtifactsForJSON(json, async manifest => {
    const specs: tf.io.WeightsManifestEntry[] = [];
    const buffers: ArrayBuffer[] = [];
    for (const group of manifest) {
      for (const file of group.paths) {
        const weightsPath = path.join(path.dirname(jsonPath), file);
        const data = await fs.promises.readFile(weightsPath).catch(e => {
          const why = errno(e) === 'ENOENT' ? 'it does not exist' : message(e);
          throw new AttentionError('IO',
            `cannot read weights file '${weightsPath}' listed in '${jsonPath}': ${why}`);
        });
        buffers.push(toArrayBuffer(data));
      }
      specs.push(...group.weights);
    }
    // A truncated or padded weights file would otherwise fail later with a shape error.
    const bytes = buffers.reduce((n, b) => n + b.byteLength, 0);
    const expected = manifestBytes(specs);
    if (expected >= 0 && bytes !== expected) {
      throw new AttentionError('IO',
        `corrupt weights for '${jsonPath}': the files hold ${bytes} bytes but model.json lists ${expected} ` +
        '(truncated or overwritten?)');
    }
    return [specs, buffers.length === 1 ? buffers[0] : tf.io.CompositeArrayBuffer.join(buffers)];
  });
}

/**
 * A load-only IOHandler for a model.json already read and parsed (`readModelJSONFile`):
 * its weights files are read relative to `jsonPath`, with the same checks as `fileSystem`.
 */
export function fromModelJSON(json: tf.io.ModelJSON, jsonPath: string): tf.io.IOHandler {
  return {load: () => artifactsFor(json, jsonPath)};
}

/**
 * An IOHandler that saves a model to, and loads it from, the local file system.
 *
 * @param path For saving: the model folder (created if missing; its model.json and weights
 *   are replaced atomically, every other file in it is kept). For loading: the `model.json`
 *   file, or the folder holding it.
 * @returns A handler for `model.save(handler)` and `tf.loadLayersModel(handler)`.
 * @throws AttentionError with code 'IO' (from save/load) when a file is missing,
 *   corrupt or cannot be written; the message names the path.
 */
export function fileSystem(path: string): tf.io.IOHandler {
  assertNode('fileSystem(path)');
  return new FileSystemHandler(path);
}

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
  tf.io.registerSaveRouter(makeRouter(url => tf.io.getSaveHandlers(url)) as Router);
  tf.io.registerLoadRouter(makeRouter(url => tf.io.getLoadHandlers(url)) as Router);
}
