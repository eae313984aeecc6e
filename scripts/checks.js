// The static checks of `npm test`, two at a time (the machine's two cores; each is one
// process): the type checks, ESLint, dependency-cruiser's import direction and the API
// reference. Prints each one's output when it ends; exits 1 if any failed.
//   node scripts/checks.js
const {spawn} = require('child_process');
const path = require('path');

const bin = (name) => path.join(__dirname, '..', 'node_modules', '.bin', name);
const CHECKS = [
  ['typecheck', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']],
  ['typecheck (browser pages)', bin('tsc'), ['-p', 'tsconfig.browser.json', '--noEmit']],
  ['lint', bin('eslint'), ['src', 'test', 'examples']],
  ['import direction', bin('depcruise'), ['src', '--config', '.dependency-cruiser.cjs']],
  ['API reference', bin('typedoc'), []],
];
const WIDTH = 2;

function run([name, command, args]) {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(command, args, {cwd: path.join(__dirname, '..')});
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', (e) => { out += `${e.message}\n`; });
    child.on('close', (code) => {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      console.log(`${code === 0 ? 'ok  ' : 'FAIL'} ${name} (${seconds} s)`);
      if (out.trim() !== '' && (code !== 0 || name === 'import direction')) console.log(out.trimEnd());
      resolve(code === 0);
    });
  });
}

(async () => {
  const results = [];
  let next = 0;
  await Promise.all(Array.from({length: WIDTH}, async () => {
    while (next < CHECKS.length) {
      const i = next++;
      results[i] = await run(CHECKS[i]);
    }
  }));
  if (results.some((ok) => !ok)) process.exit(1);
})();
