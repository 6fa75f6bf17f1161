// What an authentication step may know about the channel it runs on.

import type { TLSSocket } from 'node:tls';

export type TransportKind = 'unix' | 'tcp' | 'tls' | 'ssh';

/** Peer credentials of a unix-socket client (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
  groups?: number[];
  /**
   * The client process's start time (clock ticks after boot) read when the connection was
   * accepted, for polkit; null when the process had already gone. Absent when not read.
   */
  startTime?: bigint | null;
}

/**
 * Who the client reached, as far as the transport proved it (never what the server says of
 * itself): the socket path the user named, a TLS certificate that verified against the CA for
 * the host named, or an SSH host key that known_hosts vouched for.
 */
export type DaemonIdentity =
  | { transport: 'unix'; socket: string }
  | { transport: 'tls'; host: string; port: number; subject: string; fingerprint256: string }
  | { transport: 'ssh'; host: string; port: number; hostKey: string };

/** One line for prompts and messages: `TLS certificate of hostA.example:16514 (CN=hostA)`. */
export function describeDaemonIdentity(identity: DaemonIdentity | null): string {
  if (identity === null) return 'an unverified daemon';
  switch (identity.transport) {
    case 'unix':
      return `unix socket ${identity.socket}`;
    case 'tls':
      return `TLS certificate of ${identity.host}:${identity.port} (${identity.subject})`;
    case 'ssh':
      return `SSH host key of ${identity.host}:${identity.port} (${identity.hostKey})`;
  }
}

export interface TransportInfo {
  kind: TransportKind;
  /** libvirt's notion: TLS, SSH and unix sockets are secure channels, plain TCP is not. */
  secure: boolean;
  /** The TLS socket, for channel binding (tls-exporter / tls-server-end-point). */
  tls?: TLSSocket;
  /** Peer credentials, when the transport is a unix socket and the platform provides them. */
  peer?: PeerCredentials;
  /** Client side: what the transport proved about the server; absent when nothing (plain TCP, no_verify=1). */
  identity?: DaemonIdentity;
  /** `ip;port` strings as SASL uses them, when the transport is TCP or TLS. */
  localAddress?: string;
  remoteAddress?: string;
}
