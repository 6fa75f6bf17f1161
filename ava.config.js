// ava runs the compiled JavaScript: tsc emits the decorator metadata tsyringe needs.
export default {
  files: ['*/dist/test/**/*.test.js', 'test/dist/src/**/*.test.js'],
  require: ['reflect-metadata'],
  timeout: '120s',
  workerThreads: false,
  concurrency: 2,
};
