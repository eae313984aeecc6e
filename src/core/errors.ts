/**
 * Errors thrown by tfjs-attention. Every error carries a stable `code` that callers
 * can switch on, and a message that names the argument and the value received.
 */

/** The reasons an operation or a layer can refuse its arguments. */
export type AttentionErrorCode =
  | 'INVALID_CONFIG'      // a constructor or option argument is out of range or of the wrong type
  | 'DIMENSION_MISMATCH'  // tensor shapes do not fit together
  | 'INVALID_MASK'        // a mask has the wrong dtype or cannot broadcast to [B, H, T, S]
  | 'UNSUPPORTED'         // a valid request that this implementation or backend does not do
  | 'BACKEND'             // a backend could not be loaded or initialised
  | 'INVALID_CACHE'       // a decoding cache that does not fit the layer or the call (batch, layer, cacheIndex)
  | 'CACHE_FULL'          // a decoding step past the cache's maxLength
  | 'IO';                 // reading or writing a model failed

export class AttentionError extends Error {
  readonly code: AttentionErrorCode;

  constructor(code: AttentionErrorCode, message: string) {
    super(message);
    this.name = 'AttentionError';
    this.code = code;
    // Keep `instanceof` working when compiled to ES5-style classes.
    Object.setPrototypeOf(this, AttentionError.prototype);
  }
}

/**
 * The first line of an error's message (or of any text), fit to quote in another message:
 * control characters replaced, at most `max` characters. Messages of other libraries may
 * hold long configs.
 */
export function brief(e: unknown, max = 300): string {
  const m = (e as Error)?.message;
  // eslint-disable-next-line no-control-regex -- control characters are what it replaces
  const text = (typeof m === 'string' ? m : String(e)).split('\n')[0].replace(/[\x00-\x1f\x7f]/g, '?');
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** Formats a value for an error message: arrays as [a, b], strings quoted. */
export function show(value: unknown): string {
  if (Array.isArray(value)) {
    const items = value.slice(0, 8).map(show);
    return `[${items.join(', ')}${value.length > 8 ? `, ... (${value.length} items)` : ''}]`;
  }
  if (typeof value === 'string') return `'${value.length > 80 ? `${value.slice(0, 77)}...` : value}'`;
  if (value != null && typeof value === 'object') {
    // A tensor by its shape and dtype: printing it would read its values.
    const t = value as {shape?: unknown; dtype?: unknown};
    if (Array.isArray(t.shape) && typeof t.dtype === 'string') return `a ${t.dtype} tensor of shape ${show(t.shape)}`;
    if (Object.getPrototypeOf(value) === Object.prototype) {
      const keys = Object.keys(value);
      return `{${keys.slice(0, 6).join(', ')}${keys.length > 6 ? ', ...' : ''}}`;
    }
    return `a ${value.constructor?.name ?? 'object'}`;
  }
  return String(value);
}
