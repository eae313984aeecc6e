// Import direction of src/ (checked by `npm run lint:deps`, part of `npm test`):
//
//   core <- kernels <- ops <- layers <- io <- keras <- train <- bench <- cli
//
// A folder imports only from the folders to its left and from itself; the entries
// (src/index.ts, src/node.ts, src/internals.ts) import anything and nothing imports them
// (src/node.ts extends src/index.ts). No cycles, type-only imports included.
const ORDER = ['core', 'kernels', 'ops', 'layers', 'io', 'keras', 'train', 'bench', 'cli'];

const direction = ORDER.map((folder, i) => ({
  name: `${folder}-imports-only-below`,
  comment: `src/${folder} may import only from ${ORDER.slice(0, i + 1).join(', ')}`,
  severity: 'error',
  from: {path: `^src/${folder}/`},
  to: {path: '^src/', pathNot: `^src/(${ORDER.slice(0, i + 1).join('|')})/`},
}));

module.exports = {
  forbidden: [
    ...direction,
    {
      name: 'no-circular',
      comment: 'no import cycles, type-only imports included',
      severity: 'error',
      from: {path: '^src/'},
      to: {circular: true},
    },
    {
      name: 'entries-import-nothing-back',
      comment: 'only the node entry imports another entry (the core it extends)',
      severity: 'error',
      from: {path: '^src/', pathNot: '^src/node\\.ts$'},
      to: {path: '^src/(index|node|internals)\\.ts$'},
    },
    {
      name: 'no-stray-files',
      comment: 'every module of src/ lives in a folder of ORDER, or is an entry',
      severity: 'error',
      from: {path: '^src/[^/]+\\.ts$', pathNot: '^src/(index|node|internals)\\.ts$'},
      to: {},
    },
  ],
  options: {
    doNotFollow: {path: 'node_modules'},
    exclude: {path: '^(node_modules|dist)/'},
    tsPreCompilationDeps: true,
    tsConfig: {fileName: 'tsconfig.json'},
  },
};
