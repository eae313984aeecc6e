// Lint and layout of the TypeScript sources (`npm run lint`, part of `npm test`).
// A small rule set: typescript-eslint's recommended rules (no type information, so it runs in
// seconds) and the layout rules of ESLint Stylistic, which `npm run format` applies (eslint
// --fix). The layout is the one the code was written in: 2-space indent, single quotes,
// semicolons, `{a, b}`, lines up to 120 characters, aligned trailing shape comments kept.
import js from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {ignores: ['dist/**', 'api/**', 'node_modules/**', 'bench-results/**', 'models/**', '**/*.js', '**/*.mjs',
    'src/kernels/native_module.ts', 'test/browser/page/bundle*']},
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: {'@stylistic': stylistic},
    rules: {
      '@typescript-eslint/no-unused-vars': ['error',
        {argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true}],
      '@stylistic/quotes': ['error', 'single', {avoidEscape: true}],
      '@stylistic/semi': ['error', 'always'],
      '@stylistic/object-curly-spacing': ['error', 'never'],
      '@stylistic/comma-dangle': ['error', 'always-multiline'],
      '@stylistic/no-trailing-spaces': 'error',
      '@stylistic/eol-last': 'error',
      '@stylistic/no-multiple-empty-lines': ['error', {max: 1, maxBOF: 0, maxEOF: 0}],
      '@stylistic/max-len': ['error', {code: 120, ignoreUrls: true, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true}],
      '@stylistic/keyword-spacing': 'error',
      '@stylistic/space-before-blocks': 'error',
      '@stylistic/space-infix-ops': 'error',
      '@stylistic/comma-spacing': 'error',
      '@stylistic/key-spacing': 'error',
      '@stylistic/arrow-parens': ['error', 'always'],
      '@stylistic/arrow-spacing': 'error',
      '@stylistic/brace-style': ['error', '1tbs', {allowSingleLine: true}],
      '@stylistic/member-delimiter-style': 'error',
      '@stylistic/type-annotation-spacing': 'error',
      '@stylistic/indent': ['error', 2, {SwitchCase: 1, ignoredNodes: ['*']}],
    },
  },
  {
    // Tests load some modules with require() at the moment a test needs them.
    files: ['test/**/*.ts'],
    rules: {'@typescript-eslint/no-require-imports': 'off'},
  },
);
