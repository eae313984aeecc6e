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

/** Formats a value for an error message: arrays as [a, b], strings quoted. */
export function show(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
  if (typeof value === 'string') return `'${value}'`;
  return String(value);
}
