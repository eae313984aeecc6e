process.env.TEST_BACKEND = 'wasm';
