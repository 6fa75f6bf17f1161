export { TestDriver, uuidToBytes, uuidToString, escapeXml } from './test/test-driver.js';
export { RemoteDriver, RemoteConnection, REMOTE_OPEN_HOOKS, type RemoteDriverOptions, type RemoteOpenHooks, type AuthSchemeName } from './remote/remote-driver.js';
export { openTransport, defaultUnixSocket, DEFAULT_TCP_PORT, DEFAULT_TLS_PORT } from './remote/transport.js';
export { registerDefaultDrivers } from './register.js';
export * from './xenapi/index.js';
