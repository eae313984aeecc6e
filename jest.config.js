// What runs where (`npm test` runs every project; `--selectProjects NAME` one of them):
//
//   wasm, cpu  the numerics that depend on the backend: test/ops (every op against the
//              reference), test/kernels (the kernels the library registers; the wasm_* files
//              test the wasm backend on both), and the fused dense and layer-norm layers,
//              whose custom gradients run on each backend's kernels. Run twice, once per backend.
//   node       everything else that runs in the jest process: layer anatomy and the contract
//              suite of every kind, decoding, IO, Keras, training, the CLI and the bench, and
//              the examples. Their math is the ops', checked twice above; they run once, on
//              wasm (the backend Node programs use).
//   once       the suites that run their own processes or browsers and pick their backends
//              themselves: the packed package, headless Chromium on four backends, real memory,
//              threads, untrusted folders, concurrent and killed saves and checkpoints.
const BOTH = ['ops', 'kernels'].map((d) => `<rootDir>/test/${d}/**/*.test.ts`)
  .concat(['<rootDir>/test/layers/fused_layers.test.ts']);
const ONCE = ['package/browser', 'package/package', 'bench/heap', 'kernels/wasm_threads', 'io/untrusted_reads',
  'io/savers', 'io/save_kill', 'train/checkpoint_kill'].map((f) => `<rootDir>/test/${f}.test.ts`);

const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testPathIgnorePatterns: ['/node_modules/', ...ONCE.map((f) => f.replace('<rootDir>', ''))],
  setupFilesAfterEnv: ['<rootDir>/test/setup/backend.ts'],
  transform: {'^.+\\.ts$': ['ts-jest', {tsconfig: '<rootDir>/tsconfig.jest.json', diagnostics: false}]},
};

module.exports = {
  maxWorkers: 2,
  testTimeout: 120000,
  testSequencer: '<rootDir>/test/setup/sequencer.js',
  projects: [
    {...common, displayName: 'wasm', testMatch: BOTH, setupFiles: ['<rootDir>/test/setup/use-wasm.js']},
    {...common, displayName: 'cpu', testMatch: BOTH, setupFiles: ['<rootDir>/test/setup/use-cpu.js']},
    {...common, displayName: 'node', testMatch: ['<rootDir>/test/**/*.test.ts'],
      testPathIgnorePatterns: [...common.testPathIgnorePatterns, '/test/ops/', '/test/kernels/', '/test/layers/fused_layers'],
      setupFiles: ['<rootDir>/test/setup/use-wasm.js']},
    {...common, displayName: 'once', testMatch: ONCE, testPathIgnorePatterns: ['/node_modules/'], setupFilesAfterEnv: []},
  ],
};
