// A web app that imports every entry a browser can use (the core, the training harness and the
// internals): each must bundle for browsers without a warning.
import * as attention from 'tfjs-attention';
import * as train from 'tfjs-attention/train';
import * as internals from 'tfjs-attention/internals';

(window as unknown as {attention: unknown}).attention = {...attention, train, internals};
