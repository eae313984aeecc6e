// The CLI's flags for the kinds' own arguments: one table keyed by kind (src/cli/kind_flags.ts).
import {ATTENTION_KIND_TABLE} from '../../src/internals';
import {kindFlags} from '../../src/cli/kind_flags';

describe('kind flags', () => {
  it('every CLI kind flag appears once and names the kinds that take it', () => {
    const flags = kindFlags();
    expect(new Set(flags.map((f) => f.flag.flag)).size).toBe(flags.length);
    const block = flags.find((f) => f.flag.arg === 'blockSize')!;
    expect(block.kinds).toEqual(['flash', 'local-global']);
    for (const {flag, kinds} of flags) {
      for (const kind of kinds) expect(ATTENTION_KIND_TABLE[kind].layer.ownArgs).toContain(flag.arg);
    }
  });

});
