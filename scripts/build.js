#!/usr/bin/env node
// Builds dist/: the CommonJS build with type declarations (dist/*.js, dist/*.d.ts, the CLI)
// and the ES module build of the library entries with its own declarations (dist/esm/, no CLI
// or bench). tsc writes relative imports without extensions, which bundlers resolve but
// Node's ES module loader (and TypeScript's node16 resolution of the declarations) does not,
// so they are completed here ('./errors' -> './errors.js'). No source maps: src/ is not shipped.
//
//   node scripts/build.js             builds into dist/ (what npm ci / npm run build do)
//   node scripts/build.js --out DIR   builds into DIR instead (the browser tests do, so
//                                     that they never replace a dist/ other tests run)
'use strict';
const {execFileSync} = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const outAt = process.argv.indexOf('--out');
if (outAt > 0 && (process.argv[outAt + 1] == null || process.argv[outAt + 1].startsWith('--'))) {
  console.error('build: --out needs a folder: node scripts/build.js --out DIR');
  process.exit(2);
}
const dist = outAt > 0 ? path.resolve(process.argv[outAt + 1]) : path.join(root, 'dist');
const esm = path.join(dist, 'esm');
const tsc = require.resolve('typescript/bin/tsc');

/** './x' -> './x.js' or './x/index.js', whichever exists beside `file`. */
function complete(file, spec) {
  if (!spec.startsWith('.') || spec.endsWith('.js')) return spec;
  const base = path.resolve(path.dirname(file), spec);
  if (fs.existsSync(`${base}.js`)) return `${spec}.js`;
  if (fs.existsSync(path.join(base, 'index.js'))) return `${spec}/index.js`;
  throw new Error(`${path.relative(root, file)}: cannot resolve import '${spec}'`);
}

function walk(dir, out = []) {
  for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out); else if (p.endsWith('.js') || p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

// dist/ is this script's own output and is rebuilt from nothing; DIR must be new or empty.
if (outAt > 0) {
  if (fs.existsSync(dist) && fs.readdirSync(dist).length > 0) {
    console.error(`build: --out ${dist} is not empty; give a new or empty folder`);
    process.exit(2);
  }
} else {
  fs.rmSync(dist, {recursive: true, force: true});
}
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', dist], {stdio: 'inherit'});
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.esm.json'), '--outDir', esm], {stdio: 'inherit'});
for (const file of walk(esm)) {
  const text = fs.readFileSync(file, 'utf8');
  const fixed = text.replace(/((?:\bfrom|\bimport)\s*\(?\s*)(['"])(\.[^'"]*)\2/g,
    (_, head, q, spec) => `${head}${q}${complete(file, spec)}${q}`);
  if (fixed !== text) fs.writeFileSync(file, fixed);
}
// Bundlers read the nearest package.json, so dist/esm's repeats the side-effect list for its files.
const sideEffects = require(path.join(root, 'package.json')).sideEffects
  .filter((p) => p.startsWith('./dist/esm/')).map((p) => p.replace('./dist/esm/', './'));
fs.writeFileSync(path.join(esm, 'package.json'), JSON.stringify({type: 'module', sideEffects}, null, 2) + '\n');
