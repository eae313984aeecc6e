// A web app that imports only MultiHeadAttention: the bundle size test measures what it pulls in.
import {MultiHeadAttention} from 'tfjs-attention';

(window as unknown as {layer: unknown}).layer = new MultiHeadAttention({numHeads: 2, headDim: 4});
