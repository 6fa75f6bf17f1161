export { RelayChannel, type RelayAuditRecord, type ClientRelayCapabilities, type RelayChannelOptions, type ChannelRequest } from './server-channel.js';
export { createRelayClient, policyAllows, type RelayPolicy, type RelayPolicyRule, type RelayClientOptions, type ClientRelayAuditRecord } from './client-relay.js';
