export { TestDriver, escapeXml } from './test/test-driver.js';
export { RemoteDriver, RemoteConnection, type RemoteDriverOptions, type AuthSchemeName } from './remote/remote-driver.js';
export {
  openTransport,
  registerTransport,
  defaultUnixSocket,
  DEFAULT_TCP_PORT,
  DEFAULT_TLS_PORT,
  type TransportOpener,
} from './remote/transport.js';
export { registerDefaultDrivers } from './register.js';
export * from './xenapi/index.js';
export * from './gateway/index.js';
export { connectWithLargeReads, stopsReadingOnPause } from './remote/large-reads.js';
