// ava runs the compiled JavaScript. tsyringe needs a Reflect metadata polyfill loaded before it is
// imported, though virtauth uses no decorators: reflect-metadata is required first.
export default {
  files: ['*/dist/test/**/*.test.js', 'test/dist/src/**/*.test.js'],
  require: ['reflect-metadata'],
  timeout: '120s',
  workerThreads: false,
  concurrency: 2,
};
