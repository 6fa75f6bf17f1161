// The authentication provider contract: one provider per remote_auth_type, each with a client
// half (run by the remote driver) and a server half (run by the daemon).

import type { Codec } from '../xdr/codec.js';
import type { ConnectAuth, CredentialRequester } from '../credentials.js';
import type { ConnectUri } from '../uri.js';
import type { TransportInfo } from './transport.js';
import type { ChannelBindingPolicy } from './sasl.js';
import type { SessionState } from './session-state.js';

/** Issues one call of the REMOTE program on the connection being authenticated. */
export interface RemoteCaller {
  call<A, R>(proc: number, argsCodec: Codec<A>, args: A, retCodec: Codec<R>): Promise<R>;
}

export interface ClientAuthContext {
  rpc: RemoteCaller;
  uri: ConnectUri;
  /** The part after `sasl.` in `auth=sasl.MECH`, when given. */
  mechanism: string | null;
  transport: TransportInfo;
  auth: ConnectAuth | null;
  requestCredentials: CredentialRequester;
  /** auth.conf service (`libvirt`) and host (URI host or `localhost`). */
  service: string;
  host: string;
  channelBindingPolicy: ChannelBindingPolicy;
  signal?: AbortSignal;
}

export interface ClientAuthProvider {
  authenticate(ctx: ClientAuthContext): Promise<void>;
}

/** Who the daemon's client is, as authentication establishes it. */
export interface ClientIdentity {
  /** Set by the provider that authenticated the client, e.g. SASL's user name. */
  username?: string;
  /** The auth scheme that authenticated the client (`none`, `sasl`, `polkit`). */
  method?: string;
  /** Peer uid/gid/pid for unix sockets. */
  unixUid?: number;
  unixGid?: number;
  unixPid?: number;
  tlsDistinguishedName?: string;
}

/** Per-connection state a server provider works with. */
export interface ServerAuthContext {
  readonly connectionId: number;
  readonly transport: TransportInfo;
  /** The auth scheme the listening socket requires. */
  readonly socketAuth: number;
  readonly readOnly: boolean;
  readonly identity: ClientIdentity;
  readonly authenticated: boolean;
  /** Marks the connection authenticated (the daemon then accepts every procedure). */
  markAuthenticated(identity: ClientIdentity): void;
  /** Closes the connection once the reply in progress has been sent (e.g. after too many failures). */
  closeAfterReply(): void;
  /** Provider-private state for this connection (e.g. a SASL session), one typed slot per value. */
  readonly state: SessionState;
  readonly log: AuthLogger;
}

export interface AuthLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface ServerAuthProcedure<A = any, R = any> {
  args: Codec<A>;
  ret: Codec<R>;
  handle(ctx: ServerAuthContext, args: A): Promise<R>;
}

export interface ServerAuthProvider {
  /** REMOTE program procedures this provider answers (e.g. 67-69 for SASL, 70 for polkit). */
  readonly procedures: Readonly<Record<number, ServerAuthProcedure>>;
  /**
   * Called on AUTH_LIST when the socket requires this provider; may authenticate the client at
   * once (as libvirtd does for root on a polkit socket) and return the list to send instead.
   */
  onAuthList?(ctx: ServerAuthContext): Promise<number[] | null>;
}

export interface AuthProvider {
  /** remote_auth_type number. */
  readonly type: number;
  /**
   * Name used in `auth=` and in the daemon config (`auth_unix_rw = "sasl"`): the daemon maps
   * config names to types through the registered providers, so names must be unique.
   */
  readonly name: string;
  /**
   * How much a client prefers this scheme when the server offers several and the application
   * names no order: highest first, ties in the server's order. Shipped: sasl 300, polkit 200,
   * none 0; a provider without one ranks at 100.
   */
  readonly priority?: number;
  readonly client?: ClientAuthProvider;
  readonly server?: ServerAuthProvider;
}
