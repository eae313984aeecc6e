// The kind table and the capabilities each layer class declares: the factory, the model
// builder and the CLI read the table; the base class enforces the capabilities.
import * as tf from '@tensorflow/tfjs';
import {ATTENTION_KINDS, attentionLayer, AttentionLayerBase, buildTransformer} from '../../src';
import {ATTENTION_KIND_TABLE, attentionKinds} from '../../src/internals';
import {kindFlags} from '../../src/cli/kind_flags';
import {expectError, expectNoLeaks} from '../support/helpers';

/** Arguments every kind takes, plus what a kind needs (windowSize, fewer kv heads). */
function argsFor(kind: string): Record<string, unknown> {
  return {numHeads: 2, ...(kind === 'gqa' ? {numKvHeads: 1} : {}), ...(kind === 'local-global' ? {windowSize: 2} : {})};
}

describe('kind table', () => {
  it('has one entry per kind, in ATTENTION_KINDS order, each naming its kind', () => {
    expect(attentionKinds().map((e) => e.kind)).toEqual([...ATTENTION_KINDS]);
    for (const kind of ATTENTION_KINDS) expect(ATTENTION_KIND_TABLE[kind].kind).toBe(kind);
  });

  for (const entry of attentionKinds()) {
    it(`attentionLayer('${entry.kind}') builds the entry's class and refuses what the class does not declare`, () => {
      const layer = attentionLayer(entry.kind, argsFor(entry.kind) as never);
      expect(layer).toBeInstanceOf(entry.layer);
      expect(layer).toBeInstanceOf(AttentionLayerBase);
      const caps = layer.capabilities;
      const x = tf.randomNormal([1, 5, 4]);
      tf.dispose(layer.apply(x) as tf.Tensor); // builds the weights
      expectNoLeaks(() => {
        if (!caps.scores) {
          expectError(() => layer.apply(x, {returnAttentionScores: true}), 'UNSUPPORTED', /cannot return attention scores/);
        } else {
          const out = layer.apply(x, {returnAttentionScores: true}) as tf.Tensor[];
          expect(out[1].shape).toEqual([1, 2, 5, 5]);
          tf.dispose(out);
        }
      });
      if (!caps.dropout) {
        expectError(() => attentionLayer(entry.kind, {...argsFor(entry.kind), dropout: 0.1} as never), 'UNSUPPORTED',
          /does not support dropout \(received 0\.1\)/);
      }
      if (!caps.fullMasks) {
        const mask = tf.ones([1, 5, 5], 'bool');
        expectError(() => layer.apply(x, {attentionMask: mask}), 'UNSUPPORTED', /takes only key padding/);
        mask.dispose();
      }
      if (!caps.crossLengths) {
        const v = tf.randomNormal([1, 3, 4]);
        expectError(() => layer.apply([x, v]), 'UNSUPPORTED', /same length.*T=5 and S=3/);
        v.dispose();
      }
      x.dispose();
    });
  }

  it('MultiHeadAttention declares per implementation: flash has no scores or dropout', () => {
    const standard = attentionLayer('mha', {numHeads: 2});
    const flash = attentionLayer('mha', {numHeads: 2, implementation: 'flash'});
    expect(standard.capabilities.scores && standard.capabilities.dropout).toBe(true);
    expect(flash.capabilities.scores || flash.capabilities.dropout).toBe(false);
  });

  it('every CLI kind flag appears once and names the kinds that take it', () => {
    const flags = kindFlags();
    expect(new Set(flags.map((f) => f.flag.flag)).size).toBe(flags.length);
    const block = flags.find((f) => f.flag.arg === 'blockSize')!;
    expect(block.kinds).toEqual(['flash', 'local-global']);
    for (const {flag, kinds} of flags) {
      for (const kind of kinds) expect(ATTENTION_KIND_TABLE[kind].layer.ownArgs).toContain(flag.arg);
    }
  });

  it("buildTransformer takes each kind's key/value heads and block arguments from the table", () => {
    const model = buildTransformer({attention: 'linear', vocabSize: 5, seqLength: 4, modelDim: 8, numHeads: 2,
      numLayers: 2, seed: 7});
    const seeds = model.layers.filter((l) => l instanceof AttentionLayerBase).map((l) => (l as unknown as {seed: number}).seed);
    expect(seeds).toEqual([7, 8]);
    model.dispose();
    const gqa = buildTransformer({attention: 'gqa', vocabSize: 5, seqLength: 4, modelDim: 8, numHeads: 4, numLayers: 1});
    const layer = gqa.layers.find((l) => l instanceof AttentionLayerBase) as AttentionLayerBase;
    expect(layer.numKvHeads).toBe(ATTENTION_KIND_TABLE.gqa.kvHeads(4, undefined));
    expect(layer.numKvHeads).toBe(2);
    gqa.dispose();
  });
});
