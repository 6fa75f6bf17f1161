// What an authentication step may know about the channel it runs on.

import type { TLSSocket } from 'node:tls';

export type TransportKind = 'unix' | 'tcp' | 'tls' | 'ssh';

/** Peer credentials of a unix-socket client (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  groups?: number[];
}

export interface TransportInfo {
  kind: TransportKind;
  /** libvirt's notion: TLS, SSH and unix sockets are secure channels, plain TCP is not. */
  secure: boolean;
  /** The TLS socket, for channel binding (tls-exporter / tls-server-end-point). */
  tls?: TLSSocket;
  /** Peer credentials, when the transport is a unix socket and the platform provides them. */
  peer?: PeerCredentials;
  /** `ip;port` strings as SASL uses them, when the transport is TCP or TLS. */
  localAddress?: string;
  remoteAddress?: string;
}
