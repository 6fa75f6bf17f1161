// Admitted clients: each connection's session (transport facts, packet limits before and after
// authentication, auth_timeout), its dispatch through the programs, and its clean-up.

import tls from 'node:tls';
import type { Logger } from 'pino';
import {
  AuthType,
  PACKET_MAX,
  RpcConnection,
  createDispatcher,
  type ProgramDefinition,
  type TransportInfo,
  type VirError,
} from '@virtauth/core';
import type { DaemonConfig } from '../config.js';
import { unixPeerIdentity } from '../access.js';
import { ClientSession } from '../session.js';
import type { AcceptedConnection } from './admission-queue.js';

/**
 * The largest packet an unauthenticated client may send: the biggest pre-auth call is a SASL step
 * (64 KiB of data); the rest of what is allowed leaves room for the header and a mechanism name.
 */
export const PRE_AUTH_PACKET_MAX = 128 * 1024;

export interface SessionsOptions {
  /** Read at each use: max_client_requests and auth_timeout. */
  config: Pick<DaemonConfig, 'maxClientRequests' | 'authTimeout'>;
  log: Logger;
  /** The programs a connection is served, once the server has started. */
  programs: () => readonly ProgramDefinition<ClientSession>[];
  /** A client that had to authenticate has. */
  onAuthenticated: () => void;
  /** A session has been made and counted; its connection is not read yet. */
  onStarted: (session: ClientSession) => void;
  /** A session has gone (before its resources are released); `wasUnauthenticated` if it had to authenticate and never did. */
  onEnded: (session: ClientSession, wasUnauthenticated: boolean) => void;
}

export class Sessions {
  private readonly sessions = new Set<ClientSession>();

  constructor(private readonly opts: SessionsOptions) {}

  get size(): number {
    return this.sessions.size;
  }

  list(): ClientSession[] {
    return [...this.sessions];
  }

  /** Calls received from clients and not yet answered, across all clients. */
  callsInProgress(): number {
    let n = 0;
    for (const s of this.sessions) n += s.rpc.callsInProgress;
    return n;
  }

  /** Ends every client's connection. */
  closeAll(): void {
    for (const s of [...this.sessions]) s.rpc.close(null);
  }

  /** Makes an admitted connection a client and starts reading it. */
  start({ socket, spec, tlsDn, peer, acceptedAt }: AcceptedConnection): ClientSession {
    const { config, log } = this.opts;
    const transport: TransportInfo = { kind: spec.kind, secure: spec.kind !== 'tcp' };
    if (socket instanceof tls.TLSSocket) transport.tls = socket;
    let peerIdentity;
    if (spec.kind === 'unix') {
      if (peer) {
        transport.peer = peer;
        peerIdentity = unixPeerIdentity(peer);
      }
    } else {
      transport.localAddress = `${socket.localAddress};${socket.localPort}`;
      transport.remoteAddress = `${socket.remoteAddress};${socket.remotePort}`;
    }
    const mustAuthenticate = spec.auth !== AuthType.NONE;
    // Before authentication only small procedures can be called: a client cannot make us buffer
    // libvirt's 32 MiB packets until it has authenticated.
    const rpc = new RpcConnection(socket, {
      maxConcurrentCalls: config.maxClientRequests,
      ...(mustAuthenticate ? { maxPacketBytes: PRE_AUTH_PACKET_MAX } : {}),
    });
    const bindLog = () => log.child({ conn: rpc.id, transport: spec.kind }) as Logger & ClientSession['log'];
    const session = new ClientSession(
      rpc,
      transport,
      spec.auth,
      spec.readOnly,
      bindLog,
      () => {
        rpc.setMaxPacketBytes(PACKET_MAX);
        this.opts.onAuthenticated();
      },
      peerIdentity,
    );
    if (tlsDn !== undefined) session.identity.tlsDistinguishedName = tlsDn;
    if (mustAuthenticate && config.authTimeout > 0) {
      const timer = setTimeout(
        () => {
          if (session.authenticated || rpc.closed) return;
          session.log.warn({ event: 'client.auth_timeout', seconds: config.authTimeout }, 'client did not authenticate in time');
          rpc.close(null);
        },
        Math.max(0, config.authTimeout * 1000 - (Date.now() - acceptedAt)),
      );
      timer.unref();
      session.onClose(() => clearTimeout(timer));
    }
    this.sessions.add(session);
    rpc.setCallHandler(createDispatcher(this.opts.programs(), { context: session, isAuthenticated: () => session.authenticated }));
    rpc.on('protocolError', (e: Error) =>
      session.peerFaults.warn({ event: 'protocol.error', err: e.message }, 'malformed input from client'),
    );
    // The 'close' event rather than whenClosed(): no promise kept for every idle connection; the
    // clean-up still runs after close() has returned, as a promise reaction did.
    rpc.on('close', (reason: VirError | null) =>
      queueMicrotask(async () => {
        this.sessions.delete(session);
        this.opts.onEnded(session, mustAuthenticate && !session.authenticated);
        session.flushPeerFaults();
        if (log.isLevelEnabled('debug')) session.log.debug({ event: 'client.closed', reason: reason?.message }, 'client disconnected');
        await session.dispose();
      }),
    );
    this.opts.onStarted(session);
    if (log.isLevelEnabled('debug')) session.log.debug({ event: 'client.connected', peerUid: transport.peer?.uid }, 'client connected');
    socket.resume();
    return session;
  }
}
