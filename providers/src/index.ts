export { noneAuthProvider } from './none.js';
export {
  registerDefaultProviders,
  registerDaemonProviders,
  registerProviderConfigKeys,
  type ProviderRegistrationOptions,
  type DaemonSaslServer,
} from './register.js';
export {
  PolkitAuthProvider,
  PolkitServer,
  DbusPolkitAuthority,
  polkitClient,
  polkitSettingsFrom,
  POLKIT_CONFIG_KEYS,
  processStartTime,
  parseStartTime,
  DEFAULT_POLKIT_ACTION_RO,
  DEFAULT_POLKIT_ACTION_RW,
  DBUS_SERVICE_ERROR_CODE,
  type PolkitServerOptions,
  type PolkitSettings,
  type PolkitAuthorityClient,
  type AuthorizationResult,
  type UnixProcessSubject,
} from './polkit/index.js';
export { SaslAuthProvider, saslAuthFailed, type SaslClientOptions, type SaslServerOptions } from './sasl-provider.js';
export { saslSettingsFrom, loadSaslSettings, defaultUserDatabasePath, SASL_CONFIG_KEYS, type SaslSettings } from './sasl-settings.js';
export { ScramSha256Mechanism } from './sasl/scram-sha-256.js';
export { ScramSha256PlusMechanism } from './sasl/scram-sha-256-plus.js';
export { PlainMechanism } from './sasl/plain.js';
export { channelBindingFor } from './sasl/channel-binding.js';
export { FileUserDatabase, type FileUserDatabaseOptions } from './userdb/file-user-database.js';
export { InMemoryUserDatabase } from './userdb/in-memory-user-database.js';
export {
  AuthConfig,
  AuthConfCredentialSource,
  findAuthConfPath,
  loadAuthConfSource,
  SYSTEM_AUTH_CONF_PATH,
} from './credentials/auth-conf.js';
export {
  createConsoleAuth,
  describeOrigin,
  describeRelayedRequest,
  RELAYED_PROMPT_MARK,
  CONSOLE_CREDENTIAL_TYPES,
  type ConsoleAuthOptions,
} from './credentials/console-prompter.js';
export * from './oauthbearer/index.js';
export {
  FailureThrottle,
  failureSource,
  addressNetwork,
  type FailureThrottleOptions,
  type ThrottleClock,
} from './sasl/failure-throttle.js';
export { registerAccessDrivers } from './access/register.js';
export {
  CedarAccessDriver,
  cedarAccessDriverFactory,
  cedarRequest,
  principalName,
  CEDAR_ENTITY_TYPES,
  type CedarAccessDriverOptions,
} from './access/cedar.js';
export {
  PolkitAccessDriver,
  polkitAccessDriverFactory,
  polkitActionId,
  polkitActionsXml,
  aclPermissions,
  isReadPermission,
  type PolkitAccessDriverOptions,
} from './access/polkit.js';
