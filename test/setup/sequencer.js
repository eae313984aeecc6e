// Orders test files longest first, so that two workers finish together: jest orders by the
// durations it cached on this machine, and a clean clone has none. The long files are named
// here (their own processes or browsers); the rest follow by jest's own order.
const Sequencer = require('@jest/test-sequencer').default;

const LONG_FIRST = ['package/browser', 'package/package', 'train/checkpoint_kill', 'package/examples', 'io/save_kill',
  'io/savers', 'io/untrusted_reads'];

class LongFirst extends Sequencer {
  sort(tests) {
    const rank = (t) => {
      const i = LONG_FIRST.findIndex((name) => t.path.endsWith(`/test/${name}.test.ts`));
      return i < 0 ? LONG_FIRST.length : i;
    };
    return super.sort(tests).map((t, i) => [t, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map(([t]) => t);
  }
}

module.exports = LongFirst;
