export {
  RelayChannel,
  relayNotEnabledError,
  type RelayAuditRecord,
  type RelayAuditSink,
  type RelayAuditRequestFields,
  type RelayAuditOutcomeFields,
  type ClientRelayCapabilities,
  type RelayChannelOptions,
  type ChannelRequest,
} from './server-channel.js';
export {
  createRelayClient,
  policyAllows,
  isTrustedDaemon,
  DEFAULT_ORIGIN_RATE,
  type RelayPolicy,
  type RelayPolicyRule,
  type StoredCredentialGrant,
  type TrustedDaemon,
  type OriginRate,
  type RelayClientOptions,
  type ClientRelayAuditRecord,
} from './client-relay.js';
export { parseRelayPolicy, loadRelayPolicy } from './policy-file.js';
