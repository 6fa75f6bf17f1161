// virtauthd's admin endpoint: a unix socket only root can open (virtauth-admin-sock, mode 0700,
// like libvirt-admin-sock) serving libvirt's ADMIN program to virt-admin and `virtauth admin`.
// It manages two servers, as libvirtd's daemons have: `virtauthd` (the clients of the remote
// protocol) and `admin` (the admin socket's own clients).

import { mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, ErrorDomain, RpcConnection, VirError, createDispatcher, type TransportInfo } from '@virtauth/core';
import {
  bindUnixSocket,
  clientLimitsOrderError,
  listenOn,
  removeStaleSocket,
  type DaemonExtension,
  type VirtauthServer,
} from '../server.js';
import type { ClientSession } from '../session.js';
import type { LogControl } from '../log-control.js';
import { ClientTransport, sessionFacts, type ClientFacts } from './client-info.js';
import { watchIdleTimeout, type ClientCountSource } from '../service/idle-timeout.js';
import { createAdminProgram, type AdminConnectionContext, type ManagedClient, type ManagedServer, type WorkerPool } from './program.js';

/** The main server's name, as libvirtd's is its daemon's name. */
export const MAIN_SERVER_NAME = 'virtauthd';
export const ADMIN_SERVER_NAME = 'admin';
/** Clients the admin server takes at once (libvirtd's admin_max_clients). */
const ADMIN_MAX_CLIENTS = 5;

/**
 * What the admin endpoint records about daemon clients during CONNECT_OPEN: the upstream URI of
 * a remote (gateway) connection. Registered with the server as an extension.
 */
export interface AdminExtension extends DaemonExtension {
  seen(session: ClientSession): { upstreamUri?: string };
}

export function adminExtension(): AdminExtension {
  const opened = new WeakMap<ClientSession, string>();
  const pending = new WeakMap<ClientSession, string>();
  const ext: AdminExtension = {
    decorateOpenContext(session, ctx, target) {
      // A driver that talks to another daemon: the client's requests go upstream to this URI.
      if (target.driver === 'remote') pending.set(session, target.upstreamUri ?? target.uri);
      return ctx;
    },
    openFinished(session) {
      // The remote program keeps the connection only after this (and its access check) returns,
      // so whether the open succeeded is read when the facts are asked for.
      const uri = pending.get(session);
      pending.delete(session);
      if (uri !== undefined) opened.set(session, uri);
    },
    seen(session) {
      // While the open runs, the URI it is reaching; afterwards the one it reached.
      const uri = pending.get(session) ?? (session.driverConn ? opened.get(session) : undefined);
      return uri === undefined ? {} : { upstreamUri: uri };
    },
  };
  return ext;
}

/**
 * Node runs every call on one event loop; there is no pool of worker threads to size. The
 * numbers say so honestly: one worker, never blocked by a call (calls wait on I/O, not on it),
 * and the queue is the calls received and not yet answered.
 */
function eventLoopPool(callsInProgress: number): WorkerPool {
  return { minWorkers: 1, maxWorkers: 1, prioWorkers: 0, nWorkers: 1, freeWorkers: 1, jobQueueDepth: callsInProgress };
}

function refuseWorkerPoolChange(change: Partial<Pick<WorkerPool, 'minWorkers' | 'maxWorkers' | 'prioWorkers'>>): void {
  const current = eventLoopPool(0);
  for (const [key, value] of Object.entries(change) as [keyof WorkerPool, number][]) {
    if (value !== current[key]) {
      throw new VirError({
        code: ErrorCode.OPERATION_UNSUPPORTED,
        domain: ErrorDomain.ADMIN,
        detail: `virtauthd runs every call on one event loop, so ${key} is always ${current[key]}; to allow more calls at once per client, raise max_client_requests`,
      });
    }
  }
}

interface AdminConnection {
  rpc: RpcConnection;
  connectedAt: number;
  peer: TransportInfo['peer'] | undefined;
}

export interface AdminServiceOptions {
  server: VirtauthServer;
  /** Path of the admin socket (virtauth-admin-sock in unix_sock_dir). */
  path: string;
  /** A listening socket to serve instead of binding `path` (systemd's virtauthd-admin.socket). */
  fd?: number;
  perms: number;
  logger: Logger;
  logs: LogControl;
  extension: AdminExtension;
  /** Whether a client enabled the credential relay. */
  relayActive(session: ClientSession): boolean;
  peerCredentials?: (socket: net.Socket) => TransportInfo['peer'] | undefined;
  /** Called when the daemon timeout passes with no client connected. */
  onIdleTimeout(): void;
}

export class AdminService {
  private listener: net.Server | null = null;
  private readonly connections = new Set<AdminConnection>();
  private readonly program;
  /** The clients of both servers, as the idle timeout counts them. */
  private readonly allClients: ClientCountSource;
  private limits = { maxClients: ADMIN_MAX_CLIENTS, maxUnauthenticated: 0 };
  private cancelIdleWatch: (() => void) | null = null;
  private readonly adminCountListeners = new Set<(count: number) => void>();

  constructor(private readonly opts: AdminServiceOptions) {
    this.program = createAdminProgram({
      // libvirtd lists its admin server first.
      servers: () => [this.adminServer(), this.mainServer()],
      logs: opts.logs,
      setDaemonTimeout: (seconds) => this.setDaemonTimeout(seconds),
    });
    const total = () => opts.server.clientCount + this.connections.size;
    this.allClients = {
      get clientCount() {
        return total();
      },
      onClientCountChange: (listener) => {
        const changed = () => listener(total());
        const offServer = opts.server.onClientCountChange(changed);
        this.adminCountListeners.add(changed);
        return () => {
          offServer();
          this.adminCountListeners.delete(changed);
        };
      },
    };
  }

  get path(): string {
    return this.opts.path;
  }

  async start(): Promise<void> {
    const path = this.opts.path;
    const listener = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    const fd = this.opts.fd;
    if (fd !== undefined) {
      // systemd's virtauthd-admin.socket: its unit sets the mode, and the file stays systemd's.
      await listenOn(listener, { fd }, { kind: 'unix' }, this.opts.logger);
    } else {
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      await removeStaleSocket(path);
      // Access to the socket is the authentication (root only, as libvirt-admin-sock): it must
      // never be reachable with the umask's mode.
      await bindUnixSocket(listener, path, { perms: this.opts.perms }, this.opts.logger);
    }
    this.listener = listener;
  }

  async stop(): Promise<void> {
    this.cancelIdleWatch?.();
    this.cancelIdleWatch = null;
    const listener = this.listener;
    this.listener = null;
    for (const c of [...this.connections]) c.rpc.close(null);
    if (listener) await new Promise<void>((r) => listener.close(() => r()));
    // A socket systemd passed is its to remove (RemoveOnStop); a live one is never ours to unlink.
    if (listener && this.opts.fd === undefined) await rm(this.opts.path, { force: true });
  }

  private accept(socket: net.Socket): void {
    if (!this.listener || this.connections.size >= this.limits.maxClients) {
      this.opts.logger.warn({ event: 'admin.client.refused', clients: this.connections.size }, 'too many admin clients');
      socket.destroy();
      return;
    }
    let peer: TransportInfo['peer'] | undefined;
    try {
      peer = this.opts.peerCredentials?.(socket);
    } catch (e) {
      this.opts.logger.debug(
        { event: 'admin.peercred.failed', err: (e as Error).message },
        "cannot read the admin client's peer credentials",
      );
    }
    // libvirt's admin calls are small; one at a time per client is plenty.
    const rpc = new RpcConnection(socket, { maxConcurrentCalls: 1 });
    const connection: AdminConnection = { rpc, connectedAt: Date.now(), peer };
    const log = this.opts.logger.child({ conn: rpc.id, transport: 'admin' });
    const context: AdminConnectionContext = { closeAfterReply: () => setImmediate(() => rpc.closeAfterFlush()) };
    this.connections.add(connection);
    this.adminClientsChanged();
    rpc.setCallHandler(createDispatcher([this.program], { context, isAuthenticated: () => true }));
    rpc.on('protocolError', (e: Error) => log.warn({ event: 'protocol.error', err: e.message }, 'malformed input from admin client'));
    rpc.whenClosed().then(() => {
      this.connections.delete(connection);
      log.debug({ event: 'admin.client.closed' }, 'admin client disconnected');
      this.adminClientsChanged();
    });
    log.info({ event: 'admin.client.connected', peerUid: peer?.uid, peerPid: peer?.pid }, 'admin client connected');
    socket.resume();
  }

  private adminClientsChanged(): void {
    for (const listener of this.adminCountListeners) listener(this.connections.size);
  }

  private mainServer(): ManagedServer {
    const server = this.opts.server;
    return {
      name: MAIN_SERVER_NAME,
      clients: () =>
        server.clients().map((session): ManagedClient => ({
          id: BigInt(session.connectionId),
          connectedAt: session.connectedAt,
          facts: () => sessionFacts(session, { ...this.opts.extension.seen(session), relayActive: this.opts.relayActive(session) }),
          disconnect: (reason) => session.disconnect(reason),
        })),
      limits: () => {
        const l = server.clientLimits();
        return {
          maxClients: l.maxClients,
          clients: server.clients().length,
          maxUnauthenticated: l.maxAnonymousClients,
          unauthenticated: server.unauthenticatedCount,
        };
      },
      setLimits: (change) =>
        server.setClientLimits({
          ...(change.maxClients !== undefined ? { maxClients: change.maxClients } : {}),
          ...(change.maxUnauthenticated !== undefined ? { maxAnonymousClients: change.maxUnauthenticated } : {}),
        }),
      workerPool: () => eventLoopPool(server.callsInProgress()),
      setWorkerPool: refuseWorkerPoolChange,
      updateTlsFiles: () => server.updateTlsFiles(),
    };
  }

  private adminServer(): ManagedServer {
    return {
      name: ADMIN_SERVER_NAME,
      clients: () =>
        [...this.connections].map((c): ManagedClient => ({
          id: BigInt(c.rpc.id),
          connectedAt: c.connectedAt,
          facts: (): ClientFacts => ({
            readOnly: false,
            transport: ClientTransport.UNIX,
            ...(c.peer ? { unixUid: c.peer.uid, unixGid: c.peer.gid, unixPid: c.peer.pid } : {}),
          }),
          disconnect: () => c.rpc.hangUp(),
        })),
      limits: () => ({
        maxClients: this.limits.maxClients,
        clients: this.connections.size,
        maxUnauthenticated: this.limits.maxUnauthenticated,
        unauthenticated: 0,
      }),
      setLimits: (change) => {
        const next = { ...this.limits, ...change };
        if (next.maxClients < next.maxUnauthenticated) throw clientLimitsOrderError();
        this.limits = next;
      },
      workerPool: () => {
        let calls = 0;
        for (const c of this.connections) calls += c.rpc.callsInProgress;
        return eventLoopPool(calls);
      },
      setWorkerPool: refuseWorkerPoolChange,
      updateTlsFiles: () =>
        Promise.reject(
          new VirError({
            code: ErrorCode.INTERNAL_ERROR,
            domain: ErrorDomain.RPC,
            detail: 'no tls service found, unable to update tls files',
          }),
        ),
    };
  }

  /**
   * libvirtd's --timeout, which daemon-timeout changes: exit once no client of either server has
   * been connected for this long (0: never).
   */
  setDaemonTimeout(seconds: number, onIdle: () => void = this.opts.onIdleTimeout): void {
    this.cancelIdleWatch?.();
    this.cancelIdleWatch = null;
    this.opts.logger.info({ event: 'admin.daemon_timeout', seconds }, 'daemon idle timeout set');
    if (seconds === 0) return;
    this.cancelIdleWatch = watchIdleTimeout(this.allClients, seconds, () => {
      this.cancelIdleWatch = null;
      this.opts.logger.warn({ event: 'daemon.idle_timeout', seconds }, 'no client for the daemon timeout: shutting down');
      onIdle();
    });
  }
}
