// The whole suite runs twice: once on the wasm backend and once on cpu.
// Each project's setup file selects its backend before any test runs, and the
// project's displayName labels every test file with the backend it ran on.
// The browser suite (test/package/browser.test.ts) and the package suite (test/package/package.test.ts)
// run once, in their own project: the first drives headless Chromium on every backend
// itself, the second runs the built package in plain node processes. So do the suites whose
// work does not depend on the project's backend: real memory and threads (their own
// processes on wasm), untrusted model folders (wasm, selected in the file), the savers,
// whose children save on cpu (test/io/savers.test.ts, test/io/save_kill.test.ts), and the
// checkpoints killed mid-save (test/train/checkpoint_kill.test.ts: what it checks is the files on
// disk, which its children write the same way on any backend; they train on cpu).
const ONCE = ['<rootDir>/test/package/browser.test.ts', '<rootDir>/test/package/package.test.ts', '<rootDir>/test/bench/heap.test.ts',
  '<rootDir>/test/kernels/wasm_threads.test.ts', '<rootDir>/test/io/untrusted_reads.test.ts', '<rootDir>/test/io/savers.test.ts',
  '<rootDir>/test/io/save_kill.test.ts', '<rootDir>/test/train/checkpoint_kill.test.ts'];
const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', ...ONCE],
  setupFilesAfterEnv: ['<rootDir>/test/setup/backend.ts'],
  transform: {'^.+\\.ts$': ['ts-jest', {tsconfig: '<rootDir>/tsconfig.json', diagnostics: false}]},
};

module.exports = {
  maxWorkers: 2,
  testTimeout: 120000,
  projects: [
    {...common, displayName: 'wasm', setupFiles: ['<rootDir>/test/setup/use-wasm.js']},
    {...common, displayName: 'cpu', setupFiles: ['<rootDir>/test/setup/use-cpu.js']},
    {...common, displayName: 'once', testMatch: ONCE, testPathIgnorePatterns: ['/node_modules/'],
      setupFilesAfterEnv: []},
  ],
};
