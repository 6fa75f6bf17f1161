export * from './config.js';
export * from './server.js';
export * from './session.js';
export * from './logger.js';
export { createRemoteProgram, authFailed } from './remote-program.js';
export { createDaemon, type DaemonHandle, type CreateDaemonOptions } from './daemon.js';
export { flushAuditRecords } from './audit-log.js';
export { daemonLogControl, logControlFor, type LogControl } from './log-control.js';
export { AdminService, adminExtension, MAIN_SERVER_NAME, ADMIN_SERVER_NAME, type AdminExtension } from './admin/service.js';
export { createAdminProgram, adminDisconnectReason, type ManagedServer, type ManagedClient, type AdminBackend } from './admin/program.js';
export { clientInfoParams, sessionFacts, type ClientFacts } from './admin/client-info.js';

export {
  renderUnits,
  neededCapabilities,
  extraWritablePaths,
  UNIT_FILES,
  UNIT_TEMPLATE_DIR,
  DAEMON_MAIN,
  DAEMON_NODE_FLAGS,
} from './systemd/units.js';
export {
  readInheritedSockets,
  planActivatedListeners,
  closeInheritedSockets,
  SOCKET_UNIT_NAMES,
  type InheritedSocket,
  type ActivationPlan,
} from './systemd/activation.js';
export { createServiceNotifier, type ServiceNotifier } from './systemd/notify.js';
export { watchIdleTimeout, type ClientCountSource } from './service/idle-timeout.js';
export { reloadConfiguration, loadConfigFile, RELOADABLE_KEYS, type LoadedConfig, type ReloadOutcome } from './service/reload.js';
export {
  createDaemonLogging,
  daemonLoggingOf,
  effectiveOutputs,
  sourceFileName,
  DEFAULT_JOURNAL_SOCKET,
  type DaemonLogging,
  type DaemonLoggingOptions,
} from './logging/daemon-logging.js';
export {
  parseLogFilters,
  parseLogOutputs,
  defaultLogOutputs,
  type LogFilter,
  type LogOutput,
  type LogPriority,
  type LogSettings,
} from './logging/settings.js';
export { encodeJournalEntry, decodeJournalEntry, journalFieldsOf, journalFieldName, type JournalField } from './logging/journal.js';
export { JournalSink, formatReadableLine } from './logging/sinks.js';
export { loadTlsMaterial, type TlsMaterial } from './tls-material.js';
export * from './uri-allow-list.js';
export * from './config-keys.js';
export { registerConfiguredPlugins, authSchemeTypes, authSchemeName, type AuthSchemeKey } from './plugins.js';
export { parseUpstreamList, upstreamFor, startPassThrough, type UpstreamRoute } from './gateway.js';
export * from './peer-fault-log.js';
export { ACCESS_CONFIG_KEYS, accessSettingsFrom, createAccessManager, unixPeerIdentity, type AccessSettings } from './access.js';
