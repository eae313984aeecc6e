// Selects the backend named by the jest project (wasm or cpu) before any test runs.
import * as tf from '@tensorflow/tfjs';
import '../../src/node'; // what `import 'tfjs-attention'` loads in Node (the package's node condition)
import {selectBackend, BackendName} from '../../src/kernels/backend';

const name = (process.env.TEST_BACKEND ?? 'cpu') as BackendName;

beforeAll(async () => {
  const chosen = await selectBackend(name);
  if (chosen !== name || tf.getBackend() !== name) {
    throw new Error(`test setup asked for backend ${name} but got ${tf.getBackend()}`);
  }
});

// Keeps tfjs from printing its "install the node backend" banner in every test file.
tf.env().set('PROD', true);
