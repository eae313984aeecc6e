/**
 * The core entry (index.ts) for Node: what `import 'tfjs-attention'` loads in Node (the
 * package's `node` export condition), also reachable as `tfjs-attention/node`. It imports
 * Node's `fs` and `path` statically, so the file-backed functions (`loadModel`,
 * `fileSystem`, `train({outDir})`) work in an ES module on every Node version, and registers
 * a `file://` router, so that `model.save('file://DIR')` and
 * `tf.loadLayersModel('file://DIR/model.json')` work with plain `@tensorflow/tfjs` (where
 * tfjs-node is loaded, its own router keeps precedence).
 */
import * as fs from 'fs';
import * as path from 'path';
import {provideNodeModules} from './core/runtime';
import {registerFileRouter} from './io/file_system';

provideNodeModules({fs, path});
registerFileRouter();

export * from './index';
