/**
 * What a kind of attention can do (AttentionCapabilities, declared once per layer class)
 * and enforceCapabilities, the one check the base layer runs against it for the layer's
 * arguments, each call and each cached step: a kind never refuses these itself.
 */
import {AttentionError, show} from '../core/errors';
import {CausalAlignment, CausalArg} from '../ops/causal';

/**
 * What a kind of attention can do, declared once per layer class (`capabilitiesFor`) and
 * enforced by the base class: a layer never has to refuse these itself.
 */
export interface AttentionCapabilities {
  /** Can return the [B, H, T, S] attention scores (returnAttentionScores). */
  scores: boolean;
  /** Can drop attention probabilities while training (dropout > 0). */
  dropout: boolean;
  /**
   * Takes any attention mask broadcastable to [B, H, T, S]. When false, only key padding
   * ([B, 1, S]) and query padding ([B, T, 1]) masks: attend() then receives the key padding
   * alone as its mask, and the base zeroes the rows of padded queries.
   */
  fullMasks: boolean;
  /** Queries and keys may have different lengths. */
  crossLengths: boolean;
  /**
   * Whether a cache must be fed in order: true for running states (linear, local-global),
   * whose cacheIndex must equal cache.length; false for key/value buffers, which may also
   * go back (cacheIndex below cache.length overwrites from there).
   */
  appendOnlyCache: boolean;
  /** Takes mask and score mods and block masks (FlexLayerArgs, FlexCallArgs): attends through flexAttention. */
  flexMods: boolean;
  /** The causal alignments `causal` may ask for. */
  causalAlignments: readonly CausalAlignment[];
  /**
   * Why scores and dropout are missing and what to use instead, for the messages that
   * refuse them: "<subject> cannot return attention scores: <why>; <scores>" and
   * "<subject> does not support dropout (received r): <why>; use dropout 0, or <dropout>".
   * subject defaults to the class name.
   */
  limits?: {why: string; scores: string; dropout: string; subject?: string};
}

/** Everything: what MultiHeadAttention with the standard implementation does. */
export const FULL_CAPABILITIES: Readonly<AttentionCapabilities> = {
  scores: true, dropout: true, fullMasks: true, crossLengths: true, causalAlignments: ['top-left', 'bottom-right'],
  appendOnlyCache: false, flexMods: true,
};

const NO_LIMITS = {why: 'it does not form the attention probabilities', scores: 'use MultiHeadAttention for them',
  dropout: 'MultiHeadAttention for attention dropout'};

/** What a layer's arguments, a call or a cached step ask of a kind; each field given is checked. */
export interface CapabilityRequest {
  /** The layer's dropout rate. */
  dropout?: number;
  /** The layer's `causal` as given, and the alignment it asks for (null: not causal). */
  causal?: {arg: CausalArg; alignment: CausalAlignment | null};
  /** Whether the call returns the attention scores. */
  returnScores?: boolean;
  /** The call's query and key lengths (null: not known yet). */
  lengths?: {T: number | null; S: number | null};
  /** A cached step's first position, and the positions its cache holds. */
  cacheIndex?: {index: number; length: number};
}

/**
 * Throws what `caps` cannot do of `request`: UNSUPPORTED, or INVALID_CACHE for a running
 * state fed out of order. `who` names the layer in the messages (a kind's limits.subject
 * stands in for it in those on scores and dropout).
 */
export function enforceCapabilities(caps: AttentionCapabilities, who: string, request: CapabilityRequest): void {
  const {dropout, causal, lengths, cacheIndex} = request;
  if (dropout != null && dropout > 0 && !caps.dropout) {
    throw dropoutError(caps.limits?.subject ?? who, dropout, caps);
  }
  if (causal?.alignment != null && !caps.causalAlignments.includes(causal.alignment)) {
    throw new AttentionError('UNSUPPORTED',
      `${who} does not support causal ${show(causal.arg)}; it supports ` +
      caps.causalAlignments.map((a) => `'${a}'`).join(', '));
  }
  if (request.returnScores === true && !caps.scores) throw scoresError(caps.limits?.subject ?? who, caps);
  if (lengths != null && !caps.crossLengths && lengths.T != null && lengths.S != null && lengths.T !== lengths.S) {
    throw new AttentionError('UNSUPPORTED',
      `${who} needs queries and keys of the same length (positions are shared), ` +
      `received T=${lengths.T} and S=${lengths.S}`);
  }
  if (cacheIndex != null && caps.appendOnlyCache && cacheIndex.index !== cacheIndex.length) {
    throw new AttentionError('INVALID_CACHE',
      `${who} keeps a running state: cacheIndex must be the positions already in the cache (${cacheIndex.length}), ` +
      `received ${cacheIndex.index}`);
  }
}

/** The UNSUPPORTED error for dropout > 0 on a kind that cannot drop probabilities; `who` names the layer. */
function dropoutError(who: string, rate: number, caps: AttentionCapabilities): AttentionError {
  const limits = caps.limits ?? NO_LIMITS;
  return new AttentionError('UNSUPPORTED',
    `${who} does not support dropout (received ${rate}): ${limits.why}; use dropout 0, or ${limits.dropout}`);
}

/** The UNSUPPORTED error for returnAttentionScores on a kind that never forms the scores. */
export function scoresError(who: string, caps: AttentionCapabilities): AttentionError {
  const limits = caps.limits ?? NO_LIMITS;
  return new AttentionError('UNSUPPORTED', `${who} cannot return attention scores: ${limits.why}; ${limits.scores}`);
}
