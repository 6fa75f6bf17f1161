// virtauthd's admin endpoint: a unix socket only root can open (virtauth-admin-sock, mode 0700,
// like libvirt-admin-sock) serving libvirt's ADMIN program to virt-admin and `virtauth admin`.
// It manages two servers, as libvirtd's daemons have: `virtauthd` (the clients of the remote
// protocol) and `admin` (the admin socket's own clients).

import { chmod, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, ErrorDomain, RpcConnection, VirError, createDispatcher, type TransportInfo } from '@virtauth/core';
import { removeStaleSocket, type DaemonExtension, type VirtauthServer } from '../server.js';
import type { ClientSession } from '../session.js';
import type { LogControl } from '../log-control.js';
import { ClientTransport, sessionFacts, type ClientFacts } from './client-info.js';
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
  /** Told when a daemon client connects or goes (the idle timeout watches this). */
  clientsChanged: (() => void) | null;
}

export function adminExtension(): AdminExtension {
  const opened = new WeakMap<ClientSession, string>();
  const pending = new WeakMap<ClientSession, string>();
  const ext: AdminExtension = {
    clientsChanged: null,
    onSession(session) {
      ext.clientsChanged?.();
      void session.rpc.whenClosed().then(() => ext.clientsChanged?.());
    },
    decorateOpenContext(session, ctx, target) {
      // A driver that talks to another daemon: the client's requests go upstream to this URI.
      if (target.driver === 'remote') pending.set(session, target.upstreamUri ?? target.uri);
      return ctx;
    },
    openFinished(session) {
      const uri = pending.get(session);
      pending.delete(session);
      if (uri !== undefined && session.driverConn) opened.set(session, uri);
    },
    seen(session) {
      // While the open runs, the URI it is reaching; afterwards the one it reached.
      const uri = opened.get(session) ?? pending.get(session);
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
  private limits = { maxClients: ADMIN_MAX_CLIENTS, maxUnauthenticated: 0 };
  private idleTimeoutSeconds = 0;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: AdminServiceOptions) {
    this.program = createAdminProgram({
      // libvirtd lists its admin server first.
      servers: () => [this.adminServer(), this.mainServer()],
      logs: opts.logs,
      setDaemonTimeout: (seconds) => this.setDaemonTimeout(seconds),
    });
    opts.extension.clientsChanged = () => this.armIdleTimer();
  }

  get path(): string {
    return this.opts.path;
  }

  async start(): Promise<void> {
    const path = this.opts.path;
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await removeStaleSocket(path);
    const listener = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    listener.on('error', (e) => this.opts.logger.error({ err: e, event: 'admin.listener.error' }, 'admin listener error'));
    // Access to the socket is the authentication (root only, as libvirt-admin-sock), so it is
    // bound in a private directory, given its mode there, and only then moved into place: no
    // one can connect while it still has the umask's mode.
    const privateDir = await mkdtemp(join(dirname(path), '.virtauth-admin-'));
    const staging = join(privateDir, 'sock');
    try {
      await new Promise<void>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen(staging, () => {
          listener.off('error', reject);
          resolve();
        });
      });
      await chmod(staging, this.opts.perms);
      await rename(staging, path);
    } catch (e) {
      listener.close();
      throw e;
    } finally {
      await rm(privateDir, { recursive: true, force: true });
    }
    this.listener = listener;
  }

  async stop(): Promise<void> {
    this.idleTimeoutSeconds = 0;
    this.clearIdleTimer();
    const listener = this.listener;
    this.listener = null;
    for (const c of [...this.connections]) c.rpc.close(null);
    if (listener) await new Promise<void>((r) => listener.close(() => r()));
    await rm(this.opts.path, { force: true });
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
      this.opts.logger.debug({ event: 'admin.peercred.failed', err: (e as Error).message }, 'cannot read the admin client\'s peer credentials');
    }
    // libvirt's admin calls are small; one at a time per client is plenty.
    const rpc = new RpcConnection(socket, { maxConcurrentCalls: 1 });
    const connection: AdminConnection = { rpc, connectedAt: Date.now(), peer };
    const log = this.opts.logger.child({ conn: rpc.id, transport: 'admin' });
    const context: AdminConnectionContext = { closeAfterReply: () => setImmediate(() => rpc.closeAfterFlush()) };
    this.connections.add(connection);
    this.clearIdleTimer();
    rpc.setCallHandler(createDispatcher([this.program], { context, isAuthenticated: () => true }));
    rpc.on('protocolError', (e: Error) => log.warn({ event: 'protocol.error', err: e.message }, 'malformed input from admin client'));
    rpc.whenClosed().then(() => {
      this.connections.delete(connection);
      log.debug({ event: 'admin.client.closed' }, 'admin client disconnected');
      this.armIdleTimer();
    });
    log.info({ event: 'admin.client.connected', peerUid: peer?.uid, peerPid: peer?.pid }, 'admin client connected');
    socket.resume();
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
        return { maxClients: l.maxClients, clients: server.clientCount, maxUnauthenticated: l.maxAnonymousClients, unauthenticated: server.unauthenticatedCount };
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
      limits: () => ({ maxClients: this.limits.maxClients, clients: this.connections.size, maxUnauthenticated: this.limits.maxUnauthenticated, unauthenticated: 0 }),
      setLimits: (change) => {
        const next = { ...this.limits, ...change };
        if (next.maxClients < next.maxUnauthenticated) {
          throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail: 'The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients' });
        }
        this.limits = next;
      },
      workerPool: () => {
        let calls = 0;
        for (const c of this.connections) calls += c.rpc.callsInProgress;
        return eventLoopPool(calls);
      },
      setWorkerPool: refuseWorkerPoolChange,
      updateTlsFiles: () => Promise.reject(new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.RPC, detail: 'no tls service found, unable to update tls files' })),
    };
  }

  /** libvirtd's --timeout: exit once no client (of either server) has been connected for this long. */
  private setDaemonTimeout(seconds: number): void {
    this.idleTimeoutSeconds = seconds;
    this.opts.logger.info({ event: 'admin.daemon_timeout', seconds }, 'daemon idle timeout set');
    this.clearIdleTimer();
    this.armIdleTimer();
  }

  private armIdleTimer(): void {
    if (this.idleTimeoutSeconds === 0) return;
    if (this.connections.size > 0 || this.opts.server.clientCount > 0) {
      this.clearIdleTimer();
      return;
    }
    if (this.idleTimer) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.connections.size > 0 || this.opts.server.clientCount > 0) return;
      this.opts.logger.warn({ event: 'daemon.idle_timeout', seconds: this.idleTimeoutSeconds }, 'no client for the daemon timeout: shutting down');
      this.opts.onIdleTimeout();
    }, this.idleTimeoutSeconds * 1000);
    this.idleTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}
