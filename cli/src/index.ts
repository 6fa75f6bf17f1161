export { openAuth, open, openReadOnly, createClientContainer, type OpenOptions, type Connection } from './connect.js';
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
} from '@virtauth/core';
export type { RelayPolicy, RelayPolicyRule } from '@virtauth/relay';
