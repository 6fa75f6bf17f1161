// The credential relay, both halves: `client/` answers what daemons relay back (the wire, the
// policy, the prompts), `daemon/` asks a connection's client (the channel, the daemon extension).
// Drivers see neither: they attach the ClientRelay (core) the daemon or the client library put
// in their open context.

export {
  RelayCancellation,
  runRelayHandler,
  describeRequester,
  type RelayedCredentialRequest,
  type RelayHandler,
  type RelayClientConfig,
} from './request.js';
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
} from './daemon/channel.js';
export { relayExtension, type RelayExtension, type RelaySettings, type RelayOpenTarget } from './daemon/extension.js';
export { enableRelay, relayPeerOf, attachableRelay, type RelayPeer } from './client/wire.js';
export {
  RelayClient,
  createRelayClient,
  type OpenRelay,
  type RelayClientOptions,
  type ClientRelayAuditRecord,
} from './client/relay-client.js';
export {
  policyAllows,
  isTrustedDaemon,
  DEFAULT_ORIGIN_RATE,
  type RelayPolicy,
  type RelayPolicyRule,
  type StoredCredentialGrant,
  type TrustedDaemon,
  type OriginRate,
} from './client/policy.js';
export { parseRelayPolicy, loadRelayPolicy, relayPolicyPath, clientRelayPolicy, reportRefusedRelayRequest } from './client/policy-file.js';
