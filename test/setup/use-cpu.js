process.env.TEST_BACKEND = 'cpu';
