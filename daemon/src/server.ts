// virtauthd's listeners and per-connection plumbing: accept, admission limits, dispatch through
// the registered programs, and orderly shutdown.

import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DependencyContainer } from 'tsyringe';
import {
  AUTH_PROVIDER,
  AuthType,
  CREDENTIAL_SOURCE,
  DRIVER,
  ErrorCode,
  ErrorDomain,
  RpcConnection,
  VirError,
  createDispatcher,
  makeCredentialRequester,
  parseUri,
  selectDriver,
  globMatch,
  type AuthProvider,
  type DriverConnection,
  type DriverOpenContext,
  type ProgramDefinition,
  type TransportInfo,
  type CredentialSource,
  type TransportKind,
} from '@virtauth/core';
import { authTypeName, type DaemonConfig } from './config.js';
import { createRemoteProgram } from './remote-program.js';
import { loadTlsMaterial, type TlsMaterial } from './tls-material.js';
import { ClientSession } from './session.js';

export interface ListenerSpec {
  kind: TransportKind;
  /** Unix socket path. */
  path?: string;
  host?: string;
  port?: number;
  auth: AuthType;
  readOnly: boolean;
  perms?: number;
  /** An already listening socket to serve (systemd socket activation) instead of binding one. */
  fd?: number;
}

export interface ListenerInfo extends ListenerSpec {
  /** A URI a client can use to reach this listener with the test driver. */
  uri: string;
}

/** What a CONNECT_OPEN is opening, and the daemon's own credential sources for it. */
export interface OpenTarget {
  uri: string;
  driver: string;
  sources: readonly CredentialSource[];
}

/** Extra programs (e.g. the credential relay) and hooks that plugins add to the daemon. */
export interface DaemonExtension {
  programs?(server: VirtauthServer): ProgramDefinition<ClientSession>[];
  /** Adds to the context a driver is opened with, for this client (e.g. relayed credentials). */
  decorateOpenContext?(session: ClientSession, ctx: DriverOpenContext, target: OpenTarget): DriverOpenContext | Promise<DriverOpenContext>;
  /** Called when a CONNECT_OPEN has finished, whether it succeeded or not. */
  openFinished?(session: ClientSession): void;
  onSession?(session: ClientSession): void;
  /** Config keys this extension applies on SIGHUP (e.g. an access-control policy's), so none is reported as needing a restart. */
  reloadableKeys?: readonly string[];
  /**
   * SIGHUP: checks the new configuration and returns what applies it. Throwing refuses the whole
   * reload (the running configuration stays); the returned function runs only once every part
   * of the reload has been checked.
   */
  prepareReload?(config: DaemonConfig): Promise<(() => void) | void> | (() => void) | void;
}

export interface ServerOptions {
  config: DaemonConfig;
  container: DependencyContainer;
  logger: Logger;
  listeners?: ListenerSpec[];
  extensions?: DaemonExtension[];
  /**
   * The daemon's own credential sources, read once per CONNECT_OPEN (default: those registered
   * under CREDENTIAL_SOURCE).
   */
  credentialSources?: () => Promise<readonly CredentialSource[]>;
  /** Peer credentials of a unix socket, where the platform offers them. */
  peerCredentials?: (socket: net.Socket) => TransportInfo['peer'] | undefined;
}

export function listenersFromConfig(cfg: DaemonConfig): ListenerSpec[] {
  const out: ListenerSpec[] = [
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock'), auth: cfg.authUnixRw, readOnly: false, perms: cfg.unixSockRwPerms },
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock-ro'), auth: cfg.authUnixRo, readOnly: true, perms: cfg.unixSockRoPerms },
  ];
  if (cfg.listenTcp) out.push({ kind: 'tcp', host: cfg.listenAddr, port: cfg.tcpPort, auth: cfg.authTcp, readOnly: false });
  if (cfg.listenTls) out.push({ kind: 'tls', host: cfg.listenAddr, port: cfg.tlsPort, auth: cfg.authTls, readOnly: false });
  return out;
}

export class VirtauthServer {
  readonly config: DaemonConfig;
  readonly container: DependencyContainer;
  readonly log: Logger;
  private readonly servers: net.Server[] = [];
  private readonly tlsServers: tls.Server[] = [];
  /** Socket files this daemon bound, and so removes when it stops (never another daemon's or systemd's). */
  private readonly boundPaths: string[] = [];
  private readonly clientCountListeners = new Set<(count: number) => void>();
  private readonly sessions = new Set<ClientSession>();
  private readonly waiting: net.Socket[] = [];
  private anonymous = 0;
  private readonly specs: ListenerSpec[];
  private readonly extensions: DaemonExtension[];
  private programs: ProgramDefinition<ClientSession>[] = [];
  private providers: AuthProvider[] = [];
  private stopping = false;
  readonly processName: string;

  constructor(private readonly opts: ServerOptions) {
    this.config = opts.config;
    this.container = opts.container;
    this.log = opts.logger;
    this.specs = opts.listeners ?? listenersFromConfig(opts.config);
    this.extensions = opts.extensions ?? [];
    this.processName = `${opts.config.daemonName}@${hostname()}`;
  }

  /** Connected clients, including those waiting for a free authentication slot. */
  get clientCount(): number {
    return this.sessions.size + this.waiting.length;
  }

  /** Calls `listener` with the new client count whenever a client connects or leaves. */
  onClientCountChange(listener: (count: number) => void): () => void {
    this.clientCountListeners.add(listener);
    return () => this.clientCountListeners.delete(listener);
  }

  private clientCountChanged(): void {
    const count = this.clientCount;
    for (const listener of this.clientCountListeners) listener(count);
  }

  /**
   * Settings that change without a restart (SIGHUP): new TLS credentials apply to connections
   * accepted from now on; clients already connected keep the ones they were accepted with.
   */
  applyLiveSettings(settings: { tls?: TlsMaterial; tlsAllowedDnList?: string[] | null }): void {
    if (settings.tls) for (const server of this.tlsServers) server.setSecureContext(settings.tls);
    if (settings.tlsAllowedDnList !== undefined) this.config.tlsAllowedDnList = settings.tlsAllowedDnList;
  }

  async start(): Promise<ListenerInfo[]> {
    this.providers = this.container.resolveAll(AUTH_PROVIDER);
    for (const spec of this.specs) {
      const p = this.providers.find((x) => x.type === spec.auth);
      if (!p?.server && spec.auth !== AuthType.NONE) {
        throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `no server-side provider is registered for auth scheme '${authTypeName(spec.auth)}'` });
      }
    }
    this.programs = [
      createRemoteProgram({
        providers: this.providers,
        open: (s, name, ro) => this.openDriver(s, name, ro),
        keepaliveInterval: this.config.keepaliveInterval,
        keepaliveCount: this.config.keepaliveCount,
      }),
      ...this.extensions.flatMap((e) => e.programs?.(this) ?? []),
    ];
    const infos: ListenerInfo[] = [];
    try {
      for (const spec of this.specs) infos.push(await this.listen(spec));
    } catch (e) {
      await this.stop();
      throw e;
    }
    return infos;
  }

  private async createTlsServer(spec: ListenerSpec): Promise<net.Server> {
    const cfg = this.config;
    const material = await loadTlsMaterial(cfg);
    // libvirt requires a client certificate signed by the CA; the handshake enforces both.
    const server = tls.createServer({ ...material, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
    this.tlsServers.push(server);
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      const dn = clientDistinguishedName(socket);
      if (cfg.tlsAllowedDnList && !cfg.tlsAllowedDnList.some((g) => globMatch(g, dn))) {
        this.log.warn({ event: 'client.refused', reason: 'tls_allowed_dn_list', dn }, 'client certificate DN not allowed');
        socket.destroy();
        return;
      }
      // The one byte libvirt's server sends once it has accepted the client's certificate.
      socket.write(Buffer.from([1]));
      this.accept(socket, spec, dn);
    });
    server.on('tlsClientError', (e) => this.log.warn({ event: 'tls.handshake.failed', err: e.message }, 'TLS handshake failed'));
    return server;
  }

  private async listen(spec: ListenerSpec): Promise<ListenerInfo> {
    const server = spec.kind === 'tls' ? await this.createTlsServer(spec) : net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket, spec));
    server.maxConnections = this.config.maxClients;
    if (spec.fd !== undefined) {
      await listenOn(server, { fd: spec.fd }, spec, this.log);
      this.servers.push(server);
      if (spec.kind === 'unix') return { ...spec, uri: `test+unix:///default?socket=${spec.path}` };
      const host = spec.host?.includes(':') ? `[${spec.host}]` : spec.host;
      return { ...spec, uri: `test+${spec.kind}://${host}:${spec.port}/default` };
    }
    if (spec.kind === 'unix') {
      const path = spec.path!;
      await mkdir(join(path, '..'), { recursive: true, mode: 0o755 });
      await removeStaleSocket(path);
      await listenOn(server, { path }, spec, this.log);
      this.boundPaths.push(path);
      if (spec.perms !== undefined) await chmod(path, spec.perms);
      this.servers.push(server);
      const scheme = 'test+unix';
      return { ...spec, uri: `${scheme}:///default?socket=${path}` };
    }
    await listenOn(server, { port: spec.port ?? 0, host: spec.host ?? '127.0.0.1' }, spec, this.log);
    this.servers.push(server);
    const addr = server.address() as net.AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { ...spec, port: addr.port, uri: `test+${spec.kind}://${host}:${addr.port}/default` };
  }

  private accept(socket: net.Socket, spec: ListenerSpec, tlsDn?: string): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // Unauthenticated clients beyond max_anonymous_clients wait unread, as in libvirtd's backlog.
    if (spec.auth !== AuthType.NONE && this.config.maxAnonymousClients > 0 && this.anonymous >= this.config.maxAnonymousClients) {
      if (this.waiting.length >= this.config.maxQueuedClients) {
        this.log.warn({ event: 'client.refused', reason: 'queue full' }, 'too many clients waiting to authenticate');
        socket.destroy();
        return;
      }
      this.waiting.push(socket);
      this.clientCountChanged();
      socket.pause();
      (socket as WaitingSocket).virtauthSpec = spec;
      if (tlsDn !== undefined) (socket as WaitingSocket).virtauthDn = tlsDn;
      socket.once('close', () => {
        const i = this.waiting.indexOf(socket);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          this.clientCountChanged();
        }
      });
      return;
    }
    this.startSession(socket, spec, tlsDn);
  }

  private startSession(socket: net.Socket, spec: ListenerSpec, tlsDn?: string): void {
    const transport: TransportInfo = { kind: spec.kind, secure: spec.kind !== 'tcp' };
    if (socket instanceof tls.TLSSocket) transport.tls = socket;
    if (spec.kind === 'unix') {
      // Without them the client can still use auth "none"; polkit then refuses it, pointing here.
      try {
        const peer = this.opts.peerCredentials?.(socket);
        if (peer) transport.peer = peer;
      } catch (e) {
        const level = spec.auth === AuthType.NONE ? 'debug' : 'warn';
        this.log[level]({ event: 'client.peercred.failed', err: (e as Error).message }, 'cannot read the unix-socket client\'s peer credentials');
      }
    } else {
      transport.localAddress = `${socket.localAddress};${socket.localPort}`;
      transport.remoteAddress = `${socket.remoteAddress};${socket.remotePort}`;
    }
    const rpc = new RpcConnection(socket, { maxConcurrentCalls: this.config.maxClientRequests });
    const log = this.log.child({ conn: rpc.id, transport: spec.kind }) as Logger & ClientSession['log'];
    const anonymous = spec.auth !== AuthType.NONE;
    if (anonymous) this.anonymous++;
    const session = new ClientSession(rpc, transport, spec.auth, spec.readOnly, log, () => this.releaseAnonymous());
    if (tlsDn !== undefined) session.identity.tlsDistinguishedName = tlsDn;
    if (anonymous && this.config.authTimeout > 0) {
      const timer = setTimeout(() => {
        if (session.authenticated || rpc.closed) return;
        log.warn({ event: 'client.auth_timeout', seconds: this.config.authTimeout }, 'client did not authenticate in time');
        rpc.close(null);
      }, this.config.authTimeout * 1000);
      timer.unref();
      session.onClose(() => clearTimeout(timer));
    }
    this.sessions.add(session);
    this.clientCountChanged();
    rpc.setCallHandler(createDispatcher(this.programs, { context: session, isAuthenticated: () => session.authenticated }));
    rpc.on('protocolError', (e: Error) => log.warn({ event: 'protocol.error', err: e.message }, 'malformed input from client'));
    rpc.whenClosed().then(async (reason) => {
      this.sessions.delete(session);
      this.clientCountChanged();
      if (anonymous && !session.authenticated) this.releaseAnonymous();
      log.debug({ event: 'client.closed', reason: reason?.message }, 'client disconnected');
      await session.dispose();
    });
    for (const e of this.extensions) e.onSession?.(session);
    log.debug({ event: 'client.connected', peerUid: transport.peer?.uid }, 'client connected');
    socket.resume();
  }

  private releaseAnonymous(): void {
    this.anonymous--;
    const next = this.waiting.shift();
    if (next) {
      const w = next as WaitingSocket;
      this.startSession(next, w.virtauthSpec!, w.virtauthDn);
    }
  }

  /** Finds the driver for a CONNECT_OPEN name, as virConnectOpen does, and opens it. */
  private async openDriver(session: ClientSession, name: string | null, readOnly: boolean): Promise<DriverConnection> {
    const uriText = name && name !== '' ? name : this.config.defaultUri;
    const uri = parseUri(uriText);
    const drivers = this.container.resolveAll(DRIVER);
    const driver = selectDriver(drivers, uri);
    if (!driver) throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.NONE, detail: uriText });
    const abort = new AbortController();
    session.opening = abort;
    const sources = this.opts.credentialSources
      ? await this.opts.credentialSources()
      : this.container.isRegistered(CREDENTIAL_SOURCE, true)
        ? this.container.resolveAll(CREDENTIAL_SOURCE)
        : [];
    let ctx: DriverOpenContext = {
      requestCredentials: makeCredentialRequester(sources, null),
      auth: null,
      readOnly,
      processName: this.processName,
      signal: abort.signal,
    };
    const started = Date.now();
    try {
      for (const e of this.extensions) if (e.decorateOpenContext) ctx = await e.decorateOpenContext(session, ctx, { uri: uriText, driver: driver.name, sources });
      const conn = await driver.open(uri, ctx);
      session.log.info({ event: 'connect.open', driver: driver.name, uri: uriText, readOnly, ms: Date.now() - started }, 'hypervisor connection opened');
      if (session.rpc.closed) {
        await conn.close();
        throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.RPC, detail: 'client disconnected' });
      }
      return conn;
    } catch (e) {
      session.log.info({ event: 'connect.open.failed', driver: driver.name, uri: uriText, err: (e as Error).message }, 'hypervisor connection failed');
      throw e;
    } finally {
      session.opening = null;
      for (const e of this.extensions) e.openFinished?.(session);
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closes = this.servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const w of this.waiting.splice(0)) w.destroy();
    for (const s of [...this.sessions]) s.rpc.close(null);
    await Promise.all(closes);
    // A socket systemd passed stays in place: systemd owns it and listens on it again.
    for (const path of this.boundPaths.splice(0)) await rm(path, { force: true });
  }
}

type WaitingSocket = net.Socket & { virtauthSpec?: ListenerSpec; virtauthDn?: string };

/** The client certificate's subject as libvirt writes it for tls_allowed_dn_list: C=..,O=..,CN=.. */
export function clientDistinguishedName(socket: tls.TLSSocket): string {
  const raw = socket.getPeerX509Certificate?.();
  if (!raw) return '';
  return raw.subject.split('\n').join(',');
}

/** Binds or adopts a listener; errors become libvirt's one-line messages naming what failed. */
async function listenOn(server: net.Server, where: net.ListenOptions & { fd?: number }, spec: ListenerSpec, log: Logger): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException) => {
      const reason = describeErrno(e);
      const detail = where.fd !== undefined
        ? `Unable to listen on the socket passed by systemd (descriptor ${where.fd}): ${reason}`
        : spec.kind === 'unix'
          ? `Failed to bind socket to '${where.path}': ${reason}`
          : `Unable to bind to port ${where.port} on ${where.host}: ${reason}`;
      reject(new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail }));
    };
    server.once('error', failed);
    // Errors after the listener is up are logged; it keeps serving what it can.
    server.on('listening', () => server.on('error', (e) => log.error({ err: e }, 'listener error')));
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    // An inherited descriptor is a handle to adopt ({fd}); anything else is an address to bind.
    if (where.fd !== undefined) server.listen({ fd: where.fd }, listening);
    else server.listen(where, listening);
  });
}

const ERRNO_TEXT: Record<string, string> = {
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EINVAL: 'Invalid argument',
  EBADF: 'Bad file descriptor',
  ENOTSOCK: 'Socket operation on non-socket',
};

/** strerror()'s wording for the errors a bind meets, as libvirt prints them. */
function describeErrno(e: NodeJS.ErrnoException): string {
  return (e.code && ERRNO_TEXT[e.code]) ?? e.message;
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isSocket()) throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `${path} exists and is not a socket` });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  // A live daemon answers a connect; a stale socket file refuses it.
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `another daemon is already listening on ${path}` });
  await rm(path, { force: true });
}
