// One client connection as the daemon sees it: authentication state, the open hypervisor
// connection, and the context handed to auth providers and drivers.

import type { Logger } from 'pino';
import {
  ErrorCode,
  ErrorDomain,
  SessionState,
  VirError,
  type AccessSubject,
  type AuthLogger,
  type ClientIdentity,
  type DriverConnection,
  type ExtensionSession,
  type RpcConnection,
  type ServerAuthContext,
  type TransportInfo,
  type TransportKind,
  type UnixPeerIdentity,
} from '@virtauth/core';
import { PeerFaultLog } from './peer-fault-log.js';

export class ClientSession implements ServerAuthContext, ExtensionSession {
  private stateValues: SessionState | undefined;
  readonly identity: ClientIdentity = {};
  private authed: boolean;
  /** Set while CONNECT_OPEN runs, so a second one is refused and relays know an open is pending. */
  opening: AbortController | null = null;
  driverConn: DriverConnection | null = null;
  // The logger bound to this connection and the budget of its warnings are made on first use:
  // together they are most of an idle connection's heap, and most connections never log.
  private boundLog: (Logger & AuthLogger) | undefined;
  private faultLog: PeerFaultLog | undefined;
  private subjectView: AccessSubject | undefined;
  /** Whether the hypervisor connection was opened read-only (socket or CONNECT_OPEN flag). */
  readOnlyOpen = false;
  /** The open hypervisor driver's name as access rules see it (`connect_driver`), e.g. `TEST`. */
  connectDriver = '';
  /** The gateway asked the upstream its type before the hand-over (it can ask nothing after). */
  gatewayConnectDriver: string | null = null;
  /** Resources to release when the connection goes (relay channels, timers). */
  private readonly cleanups: (() => void)[] = [];
  /** When the connection was accepted (ms since the epoch), as virt-admin's client list shows it. */
  readonly connectedAt = Date.now();
  /** Why the daemon ended this connection (e.g. an administrator's client-disconnect), if it did. */
  closeReason: VirError | null = null;

  constructor(
    readonly rpc: RpcConnection,
    readonly transport: TransportInfo,
    readonly socketAuth: number,
    readonly readOnly: boolean,
    private readonly makeLog: () => Logger & AuthLogger,
    private readonly onAuthenticated: (session: ClientSession) => void,
    peerIdentity?: UnixPeerIdentity,
  ) {
    this.authed = socketAuth === 0;
    if (transport.peer) {
      this.identity.unixUid = transport.peer.uid;
      this.identity.unixGid = transport.peer.gid;
      this.identity.unixPid = transport.peer.pid;
    }
    if (peerIdentity) {
      this.identity.unix = peerIdentity;
      if (peerIdentity.userName !== undefined) this.identity.username = peerIdentity.userName;
    }
    if (this.authed) this.identity.method = 'none';
  }

  /** The daemon's logger with this connection's bindings. */
  get log(): Logger & AuthLogger {
    return (this.boundLog ??= this.makeLog());
  }

  /** Warnings about this client's malformed input, rate-limited. */
  get peerFaults(): PeerFaultLog {
    return (this.faultLog ??= new PeerFaultLog(this.log));
  }

  /** When the connection ends: the count of warnings left out, if any were. */
  flushPeerFaults(): void {
    this.faultLog?.flush();
  }

  /** Per-connection state of auth providers; made on first use (most connections never need it). */
  get state(): SessionState {
    return (this.stateValues ??= new SessionState());
  }

  get connectionId(): number {
    return this.rpc.id;
  }

  get openStarted(): boolean {
    return this.opening !== null || this.driverConn !== null;
  }

  get authenticated(): boolean {
    return this.authed;
  }

  /**
   * Who asks and on what connection, for access checks (complete once CONNECT_OPEN has run). One
   * object for the connection's life (made on first use), so drivers can key per-connection
   * decision caches on it.
   */
  get accessSubject(): AccessSubject {
    return (this.subjectView ??= new SessionSubject(this));
  }

  markAuthenticated(identity: ClientIdentity): void {
    if (this.authed) return;
    Object.assign(this.identity, identity);
    this.authed = true;
    const who = this.identity;
    this.log.info(
      {
        event: 'client.authenticated',
        method: who.method,
        user: who.username,
        ...(who.sasl ? { mechanism: who.sasl.mechanism } : {}),
        ...(who.unix ? { uid: who.unix.uid, pid: who.unix.pid } : {}),
        ...(who.tlsDistinguishedName ? { x509Dn: who.tlsDistinguishedName } : {}),
        ...(who.oidc ? { oidcIssuer: who.oidc.issuer, oidcSubject: who.oidc.subject } : {}),
      },
      'client authenticated',
    );
    this.onAuthenticated(this);
  }

  /** The open hypervisor connection, or libvirt's error for a call made before CONNECT_OPEN. */
  conn(): DriverConnection {
    if (!this.driverConn)
      throw new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.RPC, detail: 'hypervisor connection not open' });
    return this.driverConn;
  }

  closeAfterReply(): void {
    setImmediate(() => this.rpc.closeAfterFlush());
  }

  onClose(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /**
   * Ends the connection on the daemon's side: an open in progress and every relayed request are
   * cancelled with `reason` while the socket is still open (so the client hears why), then the
   * socket closes once what is queued has been written.
   */
  disconnect(reason: VirError): void {
    if (this.rpc.closed || this.closeReason) return;
    this.closeReason = reason;
    this.log.info({ event: 'client.disconnected', reason: reason.message }, 'client disconnected by the daemon');
    // The relay channel first: its waits end as CANCELLED with this reason, not as a failed open.
    this.runCleanups();
    this.opening?.abort(reason);
    this.rpc.hangUp();
  }

  private runCleanups(): void {
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (e) {
        this.log.warn({ err: e }, 'cleanup failed');
      }
    }
  }

  async dispose(): Promise<void> {
    this.opening?.abort(
      this.closeReason ?? new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.RPC, detail: 'client disconnected' }),
    );
    this.runCleanups();
    const conn = this.driverConn;
    this.driverConn = null;
    if (conn) {
      try {
        await conn.close();
      } catch (e) {
        this.log.warn({ err: e }, 'closing the hypervisor connection failed');
      }
    }
  }
}

/** The session as access checks see it, live: getters on the prototype, no closure per session. */
class SessionSubject implements AccessSubject {
  constructor(private readonly session: ClientSession) {}
  get identity(): ClientIdentity {
    return this.session.identity;
  }
  get transport(): TransportKind {
    return this.session.transport.kind;
  }
  get readOnly(): boolean {
    return this.session.readOnlyOpen;
  }
  get connectDriver(): string {
    return this.session.connectDriver;
  }
  get connectionId(): number {
    return this.session.connectionId;
  }
}
