export * as xdr from './xdr/codec.js';
export { XdrError, XdrReader, XdrWriter, type Codec, type Infer } from './xdr/codec.js';
export * from './errors.js';
export * from './credentials.js';
export * from './uri.js';
export * from './conf.js';
export * from './glob.js';
export * from './uuid.js';
export * from './terminal.js';
export * from './tokens.js';
export * as remote from './protocol/remote.js';
export {
  AuthType,
  RemoteProc,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  LIBVIRT_API_VERSION,
  PRE_AUTH_PROCS,
  Feature,
  DomainState,
  ListDomainsFlag,
  OpenFlag,
  DomainEventId,
  DomainEventType,
  DOMAIN_EVENT_ID_LAST,
  RemoteClient,
  remoteProcedures,
  remoteProcedureByNumber,
  type RemoteApi,
} from './protocol/remote.js';
export * as admin from './protocol/generated/admin.js';
export * as virnet from './protocol/generated/virnet.js';
export * from './protocol/procedures.js';
export * from './contracts/auth.js';
export * from './contracts/session-state.js';
export * from './contracts/plugin.js';
export * from './contracts/sasl.js';
export * from './contracts/driver.js';
export * from './contracts/named-methods.js';
export * from './contracts/transport.js';
export * from './contracts/userdb.js';
export * from './rpc/index.js';
export * as relayProtocol from './protocol/relay.js';
export { RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc, RelayStatus, RELAY_MAX_HOPS } from './protocol/relay.js';
export * from './contracts/relay.js';
export * from './contracts/extension.js';
export * from './contracts/stream-pump.js';
export * from './contracts/access.js';
export * from './access/objects.js';
export * from './access/manager.js';
