// Runs every program in examples/ on this project's backend.
import {main as quickstart} from '../examples/quickstart';
import {title} from './helpers';

describe(title('examples'), () => {
  test('quickstart trains, saves and reloads to the same predictions', async () => {
    const lines: string[] = [];
    const r = await quickstart((l) => lines.push(l));
    expect(r.lastLoss).toBeLessThan(r.firstLoss);
    expect(r.maxDiff).toBeLessThanOrEqual(1e-6);
    expect(lines.length).toBe(2);
    // No tensor-count check here: tfjs' own model.compile/fit keep 3 tensors past
    // model.dispose() with or without our layers; test/mha*.test.ts check our leaks.
  });
});
