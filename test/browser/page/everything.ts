// A web app that imports the whole core entry: it must bundle for browsers without a warning.
import * as attention from 'tfjs-attention';

(window as unknown as {attention: unknown}).attention = attention;
