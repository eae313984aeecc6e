/**
 * tfjs-attention/node: the whole public API (see index.ts) for Node programs, with Node's
 * `fs` and `path` imported statically, so the file-backed functions (`loadModel`,
 * `saveCheckpoint`, `train({outDir})`, `fileSystem`, the `file://` router) work in an ES
 * module on every Node version. The core entry reaches them lazily instead (runtime.ts) and
 * stays importable in a browser; this one is for Node only.
 */
import * as fs from 'fs';
import * as path from 'path';
import {provideNodeModules} from './runtime';

provideNodeModules({fs, path});

export * from './index';
