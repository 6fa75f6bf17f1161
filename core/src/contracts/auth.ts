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

/** The unix-socket peer, read from the socket when the daemon accepts it. */
export interface UnixPeerIdentity {
  uid: number;
  gid: number;
  /** Supplementary group ids of the peer process. */
  groups: number[];
  pid: number;
  /** Field 22 of /proc/PID/stat: with the pid it names the process even after pid reuse. */
  processStartTime: bigint | null;
  /** From the system's user and group databases, when they name the ids. */
  userName?: string;
  groupNames?: string[];
}

/** An OpenID Connect bearer token's identity (OAUTHBEARER). */
export interface OidcIdentity {
  issuer: string;
  subject: string;
  /** The claim configured as the user name (`oauth_username_claim`) and its value. */
  usernameClaim: string;
  username: string;
  /** The token's `groups` and `roles` claims. */
  groups: string[];
  roles: string[];
  scopes: string[];
}

/** One daemon a gateway or relay hop passed through, nearest the client first. */
export interface HopIdentity {
  daemon: string;
  driver?: string;
}

/**
 * Who the daemon's client is, as the transport and authentication establish it. Access drivers,
 * audit records, logs and the admin interface read it; each provider fills its own part.
 */
export interface ClientIdentity {
  /** The user name access control knows the client by: SASL's, the OIDC claim's, or the unix user's. */
  username?: string;
  /** The auth scheme that authenticated the client (`none`, `sasl`, `polkit`). */
  method?: string;
  /** Peer uid/gid/pid for unix sockets (kept flat for older readers; `unix` has the whole peer). */
  unixUid?: number;
  unixGid?: number;
  unixPid?: number;
  unix?: UnixPeerIdentity;
  /** The TLS client certificate's subject DN. */
  tlsDistinguishedName?: string;
  sasl?: { mechanism: string; username: string };
  oidc?: OidcIdentity;
  /** The polkit action the client was authorized for and polkit's answer. */
  polkit?: { action: string; result: 'authorized' | 'root' };
  /** Daemons between the client and this one (gateway or relay), nearest the client first. */
  hops?: HopIdentity[];
}

/** Group names of an identity: unix groups and OIDC groups and roles, each once. */
export function identityGroups(identity: ClientIdentity): string[] {
  const out = new Set<string>();
  for (const g of identity.unix?.groupNames ?? []) out.add(g);
  for (const g of identity.oidc?.groups ?? []) out.add(g);
  for (const g of identity.oidc?.roles ?? []) out.add(g);
  return [...out];
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
  readonly server?: ServerAuthProvider | undefined;
}
