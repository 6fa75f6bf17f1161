export * from './config.js';
export * from './server.js';
export * from './session.js';
export * from './logger.js';
export { createRemoteProgram, authFailed } from './remote-program.js';
export { createDaemon, type DaemonHandle, type CreateDaemonOptions } from './daemon.js';
export { relayExtension, type RelaySettings } from './relay-extension.js';
export { ACCESS_CONFIG_KEYS, accessSettingsFrom, createAccessManager, unixPeerIdentity, type AccessSettings } from './access.js';
