export {
  openAuth,
  open,
  openReadOnly,
  createClientContainer,
  type ClientContainerOptions,
  type OpenOptions,
  type OpenAuthOptions,
  type Connection,
} from './connect.js';
export { loadClientConfig, type ClientConfig, type IdentityProvider, type SignInFlow } from './login/client-config.js';
export type { OidcOptions } from './login/oidc-client.js';
export { lookupDomain, CLIENT_VERSION } from './commands.js';
export { openAdmin, adminSocketPath, paramsObject, type AdminConnection } from './admin.js';
// What an application needs to call openAuth and read its errors, without importing core itself.
export {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  OpenFlag,
  ListDomainsFlag,
  DomainState,
  DomainEventType,
  // The generated remote protocol: types and codecs (`remote.RemoteDomainGetInfoRet`, ...), the
  // procedure table, and the API every connection may implement (all of it over the remote driver).
  remote,
  remoteProcedures,
  RemoteClient,
  type RemoteApi,
  type DomainLifecycleEvent,
  type ConnectAuth,
  type Credential,
  type CredentialCallback,
  type CredentialRequestInfo,
  type OriginHop,
  type RelayVia,
  type DaemonIdentity,
} from '@virtauth/core';
export type {
  RelayPolicy,
  RelayPolicyRule,
  StoredCredentialGrant,
  TrustedDaemon,
  OriginRate,
  ClientRelayAuditRecord,
} from '@virtauth/relay';
