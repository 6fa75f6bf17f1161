export { openAuth, open, openReadOnly, createClientContainer, type ClientContainerOptions, type OpenOptions, type Connection } from './connect.js';
export { lookupDomain, CLIENT_VERSION } from './commands.js';
// What an application needs to call openAuth and read its errors, without importing core itself.
export {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  OpenFlag,
  ListDomainsFlag,
  DomainState,
  type ConnectAuth,
  type Credential,
  type CredentialCallback,
  type CredentialRequestInfo,
  type OriginHop,
  type RelayVia,
  type DaemonIdentity,
} from '@virtauth/core';
export type { RelayPolicy, RelayPolicyRule, StoredCredentialGrant, TrustedDaemon, OriginRate, ClientRelayAuditRecord } from '@virtauth/relay';
