// The kind table: the factory and the model builder read it; per-implementation capabilities.
// What every kind must do (refusals of what its capabilities rule out included) is in contract.test.ts.
import {ATTENTION_KINDS, attentionLayer, AttentionLayerBase, buildTransformer} from '../../src';
import {ATTENTION_KIND_TABLE, attentionKinds} from '../../src/internals';

describe('kind table', () => {
  it('has one entry per kind, in ATTENTION_KINDS order, each naming its kind', () => {
    expect(attentionKinds().map((e) => e.kind)).toEqual([...ATTENTION_KINDS]);
    for (const kind of ATTENTION_KINDS) expect(ATTENTION_KIND_TABLE[kind].kind).toBe(kind);
  });

  it('MultiHeadAttention declares per implementation: flash has no scores or dropout', () => {
    const standard = attentionLayer('mha', {numHeads: 2});
    const flash = attentionLayer('mha', {numHeads: 2, implementation: 'flash'});
    expect(standard.capabilities.scores && standard.capabilities.dropout).toBe(true);
    expect(flash.capabilities.scores || flash.capabilities.dropout).toBe(false);
  });

  it("buildTransformer takes each kind's key/value heads and block arguments from the table", () => {
    const model = buildTransformer({attention: 'linear', vocabSize: 5, seqLength: 4, modelDim: 8, numHeads: 2,
      numLayers: 2, seed: 7});
    const seeds = model.layers.filter((l) => l instanceof AttentionLayerBase)
      .map((l) => (l as unknown as {seed: number}).seed);
    expect(seeds).toEqual([7, 8]);
    model.dispose();
    const gqa = buildTransformer({attention: 'gqa', vocabSize: 5, seqLength: 4, modelDim: 8, numHeads: 4, numLayers: 1});
    const layer = gqa.layers.find((l) => l instanceof AttentionLayerBase) as AttentionLayerBase;
    expect(layer.numKvHeads).toBe(ATTENTION_KIND_TABLE.gqa.kvHeads(4, undefined));
    expect(layer.numKvHeads).toBe(2);
    gqa.dispose();
  });
});
