// virtauthd's listeners and per-connection plumbing: accept, admission limits, dispatch through
// the registered programs, and orderly shutdown.

import { chmod, chown, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import net from 'node:net';
import tls from 'node:tls';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { DependencyContainer } from 'tsyringe';
import {
  AccessManager,
  RemoteProc,
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
  PACKET_MAX,
  parseUri,
  selectDriver,
  globMatch,
  type AuthProvider,
  type DriverConnection,
  type DriverOpenContext,
  type ProgramDefinition,
  type TransportInfo,
  type CredentialSource,
  type ConnectUri,
  type TransportKind,
} from '@virtauth/core';
import { processStartTime } from '@virtauth/providers';
import type { DaemonConfig } from './config.js';
import { authSchemeName, authSchemeTypes, type AuthSchemeKey } from './plugins.js';
import { resolveGroupId } from './unix-group.js';
import { unixPeerIdentity } from './access.js';
import { createRemoteProgram } from './remote-program.js';
import { loadTlsMaterial, type TlsMaterial } from './tls-material.js';
import { allChecks, startPassThrough, upstreamFor } from './gateway.js';
import { gatewayChecks, procedureInfo } from './gateway-access.js';
import type { CallCheck } from '@virtauth/drivers';
import { ClientSession } from './session.js';
import { UriAllowList } from './uri-allow-list.js';

/**
 * The largest packet an unauthenticated client may send: the biggest pre-auth call is a SASL step
 * (64 KiB of data); the rest of what is allowed leaves room for the header and a mechanism name.
 */
export const PRE_AUTH_PACKET_MAX = 128 * 1024;

/** libvirt's refusal of limits where unauthenticated clients could outnumber all clients. */
export function clientLimitsOrderError(): VirError {
  // libvirt's text, word for word (its two halves are the wrong way round there too).
  return new VirError({
    code: ErrorCode.INVALID_ARG,
    domain: ErrorDomain.NONE,
    detail: 'The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients',
  });
}

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
  /** What the driver really opens when it differs from `uri` (a gateway's upstream route). */
  upstreamUri?: string;
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
  /**
   * For a client passed through to an upstream (uri_upstream_list): a check every call passes
   * before it is forwarded, e.g. access control decoding the call's object and flags.
   */
  forwardedCallCheck?(session: ClientSession): CallCheck | undefined;
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
  /** Access control for every call (default: only the read-only rule). */
  access?: AccessManager;
}

/** The config's listeners; `auth` holds the type each auth_* name maps to (authSchemeTypes). */
export function listenersFromConfig(cfg: DaemonConfig, auth: Record<AuthSchemeKey, AuthType>): ListenerSpec[] {
  const out: ListenerSpec[] = [
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock'), auth: auth.authUnixRw, readOnly: false, perms: cfg.unixSockRwPerms },
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock-ro'), auth: auth.authUnixRo, readOnly: true, perms: cfg.unixSockRoPerms },
  ];
  if (cfg.listenTcp) out.push({ kind: 'tcp', host: cfg.listenAddr, port: cfg.tcpPort, auth: auth.authTcp, readOnly: false });
  if (cfg.listenTls) out.push({ kind: 'tls', host: cfg.listenAddr, port: cfg.tlsPort, auth: auth.authTls, readOnly: false });
  return out;
}

/** The admission limits an administrator can change while the daemon runs (virt-admin srv-clients-set). */
export interface ClientLimits {
  maxClients: number;
  maxAnonymousClients: number;
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
  /** Accepted sockets left unread until the limits admit them, as libvirtd leaves them in its backlog. */
  private readonly waiting: net.Socket[] = [];
  private anonymous = 0;
  private readonly limits: ClientLimits;
  private socketGroupId: number | null = null;
  private readonly specs: ListenerSpec[];
  private readonly extensions: DaemonExtension[];
  private programs: ProgramDefinition<ClientSession>[] = [];
  private providers: AuthProvider[] = [];
  private stopping = false;
  readonly processName: string;
  /** What clients may open: uri_allowed_list, plus what other features add(). */
  /** uri_allowed_list, replaced whole by a reload. */
  uriAllowList: UriAllowList;
  readonly access: AccessManager;

  constructor(private readonly opts: ServerOptions) {
    this.access = opts.access ?? new AccessManager([], { log: opts.logger });
    this.config = opts.config;
    this.container = opts.container;
    this.log = opts.logger;
    this.specs = opts.listeners ?? listenersFromConfig(opts.config, authSchemeTypes(opts.config, opts.container.resolveAll(AUTH_PROVIDER)));
    this.extensions = opts.extensions ?? [];
    this.processName = `${opts.config.daemonName}@${hostname()}`;
    this.limits = { maxClients: opts.config.maxClients, maxAnonymousClients: opts.config.maxAnonymousClients };
    this.uriAllowList = new UriAllowList(opts.config.uriAllowedList);
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
  applyLiveSettings(settings: { tls?: TlsMaterial; tlsAllowedDnList?: string[] | null; uriAllowedList?: string[] }): void {
    if (settings.tls) for (const server of this.tlsServers) server.setSecureContext(settings.tls);
    if (settings.tlsAllowedDnList !== undefined) this.config.tlsAllowedDnList = settings.tlsAllowedDnList;
    if (settings.uriAllowedList !== undefined) {
      this.uriAllowList = new UriAllowList(settings.uriAllowedList);
      this.config.uriAllowedList = settings.uriAllowedList;
    }
  }

  /** The programs each connection is served (remote, relay, ...), once started. */
  get programDefinitions(): readonly ProgramDefinition<ClientSession>[] {
    return this.programs;
  }

  /** Connected clients (admitted; those waiting for a free slot are not clients yet, as in libvirtd). */
  clients(): ClientSession[] {
    return [...this.sessions];
  }

  /** Clients admitted that have not authenticated yet. */
  get unauthenticatedCount(): number {
    return this.anonymous;
  }

  /** Sockets accepted and waiting, unread, for the limits to admit them. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  clientLimits(): Readonly<ClientLimits> {
    return { ...this.limits };
  }

  /**
   * Changes the admission limits at once. Lowering them disconnects no one: clients beyond the
   * new limit stay, and new ones wait until enough have gone. Raising them admits waiting ones.
   */
  setClientLimits(change: Partial<ClientLimits>): void {
    const next = { ...this.limits, ...change };
    if (next.maxClients < next.maxAnonymousClients) throw clientLimitsOrderError();
    Object.assign(this.limits, next);
    this.log.info(
      { event: 'limits.changed', maxClients: next.maxClients, maxAnonymousClients: next.maxAnonymousClients },
      'client limits changed',
    );
    this.admitWaiting();
  }

  /** Calls received from clients and not yet answered, across all clients. */
  callsInProgress(): number {
    let n = 0;
    for (const s of this.sessions) n += s.rpc.callsInProgress;
    return n;
  }

  get hasTlsListener(): boolean {
    return this.tlsServers.length > 0;
  }

  /**
   * Reads the TLS key, certificate and CA again and uses them for new connections (those
   * connected keep theirs), as libvirtd's server-update-tls does.
   */
  async updateTlsFiles(): Promise<void> {
    if (this.tlsServers.length === 0) {
      throw new VirError({
        code: ErrorCode.INTERNAL_ERROR,
        domain: ErrorDomain.RPC,
        detail: 'no tls service found, unable to update tls files',
      });
    }
    // Loading checks the set, so a bad file is an error for whoever asked, not for the next client.
    const material = await loadTlsMaterial(this.config);
    for (const server of this.tlsServers) server.setSecureContext(material);
    this.log.info({ event: 'tls.files.updated', cert: this.config.certFile }, 'TLS files read again');
  }

  async start(): Promise<ListenerInfo[]> {
    this.providers = this.container.resolveAll(AUTH_PROVIDER);
    for (const spec of this.specs) {
      const p = this.providers.find((x) => x.type === spec.auth);
      if (!p?.server && spec.auth !== AuthType.NONE) {
        throw new VirError({
          code: ErrorCode.CONF_SYNTAX,
          domain: ErrorDomain.CONF,
          detail: `no server-side provider is registered for auth scheme '${authSchemeName(this.providers, spec.auth)}'`,
        });
      }
    }
    this.programs = [
      createRemoteProgram({
        providers: this.providers,
        open: (s, name, ro) => this.openDriver(s, name, ro),
        keepaliveInterval: this.config.keepaliveInterval,
        keepaliveCount: this.config.keepaliveCount,
        access: this.access,
      }),
      ...this.extensions.flatMap((e) => e.programs?.(this) ?? []),
    ];
    if (this.config.unixSockGroup !== null) this.socketGroupId = await resolveGroupId(this.config.unixSockGroup);
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
      if (!tlsClientAllowed(cfg.tlsAllowedDnList, dn)) {
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
    const server =
      spec.kind === 'tls'
        ? await this.createTlsServer(spec)
        : net.createServer({ pauseOnConnect: true }, (socket) => this.acceptPlain(socket, spec));
    if (spec.fd !== undefined) {
      await listenOn(server, { fd: spec.fd }, spec, this.log);
      this.servers.push(server);
      if (spec.kind === 'unix') return { ...spec, uri: `test+unix:///default?socket=${spec.path}` };
      const host = spec.host?.includes(':') ? `[${spec.host}]` : spec.host;
      return { ...spec, uri: `test+${spec.kind}://${host}:${spec.port}/default` };
    }
    if (spec.kind === 'unix') {
      const path = spec.path!;
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      await removeStaleSocket(path);
      await bindUnixSocket(
        server,
        path,
        { ...(spec.perms !== undefined ? { perms: spec.perms } : {}), groupId: this.socketGroupId },
        this.log,
      );
      this.boundPaths.push(path);
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

  private acceptPlain(socket: net.Socket, spec: ListenerSpec): void {
    if (spec.kind !== 'unix' || socket.destroyed) return this.accept(socket, spec);
    void this.peerAtAccept(socket, spec).then((peer) => {
      if (peer) (socket as WaitingSocket).virtauthPeer = peer;
      this.accept(socket, spec);
    });
  }

  private accept(socket: net.Socket, spec: ListenerSpec, tlsDn?: string): void {
    if (this.stopping || socket.destroyed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const acceptedAt = Date.now();
    // Clients beyond max_clients (all listeners together), or unauthenticated ones beyond
    // max_anonymous_clients, wait unread: libvirtd stops accepting then, and they wait in its
    // listen backlog. The limits are read live, so an administrator's change applies at once.
    if (this.waiting.length > 0 || !this.admits(spec)) {
      if (this.waiting.length >= this.config.maxQueuedClients) {
        this.log.warn({ event: 'client.refused', reason: 'queue full' }, 'too many clients waiting to authenticate');
        socket.destroy();
        return;
      }
      this.waiting.push(socket);
      this.clientCountChanged();
      socket.pause();
      const waiting = socket as WaitingSocket;
      waiting.virtauthSpec = spec;
      waiting.virtauthAcceptedAt = acceptedAt;
      if (tlsDn !== undefined) waiting.virtauthDn = tlsDn;
      // A queued client's auth_timeout runs from accept: waiting in the queue counts too. One
      // that needs no authentication waits as long as libvirtd's backlog would keep it.
      if (spec.auth !== AuthType.NONE && this.config.authTimeout > 0) {
        const timer = setTimeout(() => {
          this.log.warn(
            { event: 'client.auth_timeout', seconds: this.config.authTimeout, queued: true },
            'client waited in the queue longer than auth_timeout',
          );
          socket.destroy();
        }, this.config.authTimeout * 1000);
        timer.unref();
        waiting.virtauthQueueTimer = timer;
      }
      socket.once('close', () => {
        clearTimeout(waiting.virtauthQueueTimer);
        const i = this.waiting.indexOf(socket);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          this.clientCountChanged();
        }
      });
      this.log.info(
        { event: 'client.waiting', clients: this.sessions.size, maxClients: this.limits.maxClients, waiting: this.waiting.length },
        'client limit reached: the connection waits',
      );
      return;
    }
    this.startSession(socket, spec, tlsDn, acceptedAt);
  }

  private admits(spec: ListenerSpec): boolean {
    if (this.sessions.size >= this.limits.maxClients) return false;
    return spec.auth === AuthType.NONE || this.limits.maxAnonymousClients <= 0 || this.anonymous < this.limits.maxAnonymousClients;
  }

  /** Starts the waiting clients the limits now admit, oldest first. */
  private admitWaiting(): void {
    while (!this.stopping && this.waiting.length > 0) {
      const w = this.waiting[0] as WaitingSocket;
      if (!this.admits(w.virtauthSpec!)) return;
      this.waiting.shift();
      clearTimeout(w.virtauthQueueTimer);
      this.startSession(w, w.virtauthSpec!, w.virtauthDn, w.virtauthAcceptedAt ?? Date.now());
    }
  }

  /**
   * The unix peer's credentials, and for polkit its process start time, read at accept: a client
   * that exits later and leaves its connection to another process cannot pass its pid on.
   */
  private async peerAtAccept(socket: net.Socket, spec: ListenerSpec): Promise<TransportInfo['peer'] | undefined> {
    try {
      const peer = this.opts.peerCredentials?.(socket);
      if (peer && spec.auth === AuthType.POLKIT) peer.startTime = await processStartTime(peer.pid);
      return peer;
    } catch (e) {
      // Without them the client can still use auth "none"; polkit then refuses it, pointing here.
      const level = spec.auth === AuthType.NONE ? 'debug' : 'warn';
      this.log[level](
        { event: 'client.peercred.failed', err: (e as Error).message },
        "cannot read the unix-socket client's peer credentials",
      );
      return undefined;
    }
  }

  private startSession(socket: net.Socket, spec: ListenerSpec, tlsDn: string | undefined, acceptedAt: number): void {
    const transport: TransportInfo = { kind: spec.kind, secure: spec.kind !== 'tcp' };
    if (socket instanceof tls.TLSSocket) transport.tls = socket;
    let peerIdentity;
    if (spec.kind === 'unix') {
      const peer = (socket as WaitingSocket).virtauthPeer;
      if (peer) {
        transport.peer = peer;
        peerIdentity = unixPeerIdentity(peer);
      }
    } else {
      transport.localAddress = `${socket.localAddress};${socket.localPort}`;
      transport.remoteAddress = `${socket.remoteAddress};${socket.remotePort}`;
    }
    const anonymous = spec.auth !== AuthType.NONE;
    // Before authentication only small procedures can be called: a client cannot make us buffer
    // libvirt's 32 MiB packets until it has authenticated.
    const rpc = new RpcConnection(socket, {
      maxConcurrentCalls: this.config.maxClientRequests,
      ...(anonymous ? { maxPacketBytes: PRE_AUTH_PACKET_MAX } : {}),
    });
    if (anonymous) this.anonymous++;
    const bindLog = () => this.log.child({ conn: rpc.id, transport: spec.kind }) as Logger & ClientSession['log'];
    const session = new ClientSession(
      rpc,
      transport,
      spec.auth,
      spec.readOnly,
      bindLog,
      () => {
        rpc.setMaxPacketBytes(PACKET_MAX);
        this.releaseAnonymous();
      },
      peerIdentity,
    );
    if (tlsDn !== undefined) session.identity.tlsDistinguishedName = tlsDn;
    if (anonymous && this.config.authTimeout > 0) {
      const timer = setTimeout(
        () => {
          if (session.authenticated || rpc.closed) return;
          session.log.warn({ event: 'client.auth_timeout', seconds: this.config.authTimeout }, 'client did not authenticate in time');
          rpc.close(null);
        },
        Math.max(0, this.config.authTimeout * 1000 - (Date.now() - acceptedAt)),
      );
      timer.unref();
      session.onClose(() => clearTimeout(timer));
    }
    this.sessions.add(session);
    this.clientCountChanged();
    rpc.setCallHandler(createDispatcher(this.programs, { context: session, isAuthenticated: () => session.authenticated }));
    rpc.on('protocolError', (e: Error) =>
      session.peerFaults.warn({ event: 'protocol.error', err: e.message }, 'malformed input from client'),
    );
    // The 'close' event rather than whenClosed(): no promise kept for every idle connection; the
    // clean-up still runs after close() has returned, as a promise reaction did.
    rpc.on('close', (reason: VirError | null) =>
      queueMicrotask(async () => {
        this.sessions.delete(session);
        this.clientCountChanged();
        session.flushPeerFaults();
        if (anonymous && !session.authenticated) this.anonymous--;
        this.admitWaiting();
        if (this.log.isLevelEnabled('debug')) session.log.debug({ event: 'client.closed', reason: reason?.message }, 'client disconnected');
        await session.dispose();
      }),
    );
    for (const e of this.extensions) e.onSession?.(session);
    if (this.log.isLevelEnabled('debug'))
      session.log.debug({ event: 'client.connected', peerUid: transport.peer?.uid }, 'client connected');
    socket.resume();
  }

  private releaseAnonymous(): void {
    this.anonymous--;
    this.admitWaiting();
  }

  /** Finds the driver for a CONNECT_OPEN name, as virConnectOpen does, and opens it. */
  private async openDriver(session: ClientSession, name: string | null, readOnly: boolean): Promise<DriverConnection> {
    const uriText = name && name !== '' ? name : this.config.defaultUri;
    // A gateway URI opens its configured upstream with the remote driver, whatever else is registered.
    const route = upstreamFor(this.config.uriUpstreamList, uriText);
    // Before the name is even parsed: nothing a client names reaches a driver unless allowed
    // (uri_upstream_list entries are matched exactly, so they are allowed as written).
    if (!route && uriText !== this.config.defaultUri && !this.uriAllowList.allows(uriText)) {
      session.log.warn(
        {
          event: 'connect.open.denied',
          uri: uriForLog(uriText),
          readOnly,
          peerUid: session.identity.unixUid,
          user: session.identity.username,
          method: session.identity.method,
        },
        'connection open refused: the URI is not in uri_allowed_list',
      );
      throw new VirError({
        code: ErrorCode.ACCESS_DENIED,
        domain: ErrorDomain.ACCESS,
        detail: `this daemon does not open '${uriForLog(uriText)}' (its operator can allow it in uri_allowed_list)`,
      });
    }
    const uri = parseUri(route ? route.upstreamUri : uriText);
    const drivers = this.container.resolveAll(DRIVER);
    const driver = route ? drivers.find((d) => d.name === 'remote') : selectDriver(drivers, uri);
    if (!driver) throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.NONE, detail: uriText });
    const abort = new AbortController();
    session.opening = abort;
    const stored = this.opts.credentialSources
      ? await this.opts.credentialSources()
      : this.container.isRegistered(CREDENTIAL_SOURCE, true)
        ? this.container.resolveAll(CREDENTIAL_SOURCE)
        : [];
    const sources = stored.map((s) => this.storedCredentials(s, session));
    let ctx: DriverOpenContext = {
      requestCredentials: makeCredentialRequester(sources, null),
      auth: null,
      readOnly,
      processName: this.processName,
      signal: abort.signal,
    };
    const started = Date.now();
    try {
      for (const e of this.extensions)
        if (e.decorateOpenContext)
          ctx = await e.decorateOpenContext(session, ctx, {
            uri: uriText,
            driver: driver.name,
            ...(route ? { upstreamUri: route.upstreamUri } : {}),
            sources,
          });
      const conn = await driver.open(uri, ctx);
      if (this.log.isLevelEnabled('info'))
        session.log.info(
          {
            event: 'connect.open',
            driver: driver.name,
            uri: uriText,
            ...(route ? { upstream: route.upstreamUri } : {}),
            readOnly,
            ms: Date.now() - started,
          },
          'hypervisor connection opened',
        );
      if (session.rpc.closed) {
        await conn.close();
        throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.RPC, detail: 'client disconnected' });
      }
      if (route) {
        try {
          // Access control needs the hypervisor type and the open's own check before the
          // connection is handed over: after that, virtauthd can no longer call the upstream.
          session.readOnlyOpen = readOnly;
          if (this.access.enabled) {
            session.gatewayConnectDriver = session.connectDriver = await conn.getType();
            await this.access.checkCall(procedureInfo(RemoteProc.CONNECT_OPEN), { name: uriText, flags: 0 }, session.accessSubject, null);
          }
          const access = gatewayChecks(session, this.access);
          const checks = this.extensions.map((e) => e.forwardedCallCheck?.(session)).filter((c): c is CallCheck => c !== undefined);
          if (access) checks.unshift(access.checkCall);
          startPassThrough(session, conn, checks.length === 1 ? checks[0] : checks.length > 1 ? allChecks(checks) : undefined, access);
        } catch (e) {
          await conn.close();
          throw e;
        }
      }
      return conn;
    } catch (e) {
      session.log.info(
        { event: 'connect.open.failed', driver: driver.name, uri: uriText, err: (e as Error).message },
        'hypervisor connection failed',
      );
      throw restrictedClient(session) ? withoutDetails(e, uri, session) : e;
    } finally {
      session.opening = null;
      for (const e of this.extensions) e.openFinished?.(session);
    }
  }

  /**
   * The daemon's stored credentials as its drivers may use them: only from an entry for exactly
   * the host being opened (never `-default`; a source that cannot promise that answers nothing),
   * and never when the answer would travel unencrypted.
   */
  private storedCredentials(source: CredentialSource, session: ClientSession): CredentialSource {
    return {
      fill: (creds, service, host, info) => {
        if (info?.cleartext) {
          session.log.warn(
            { event: 'credentials.stored.withheld', service, host },
            "the daemon's stored credentials are never sent over an unencrypted channel",
          );
          return;
        }
        return source.fillExact?.(creds, service, host);
      },
    };
  }

  /**
   * Re-reads what can change without dropping clients (SIGHUP): the access drivers' policies.
   * A driver whose new policy is bad keeps the old one and logs why.
   */
  async reload(): Promise<void> {
    this.log.info({ event: 'daemon.reload' }, 'reloading access policies');
    await this.access.reload();
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
    await this.access.close();
  }
}

/**
 * Clients that get no details of why an open failed (paths, errno, user names would tell them
 * about the daemon's host): read-only ones, and anonymous ones on plain TCP.
 */
function restrictedClient(session: ClientSession): boolean {
  return session.readOnly || (session.identity.method === 'none' && session.transport.kind === 'tcp');
}

function withoutDetails(e: unknown, uri: ConnectUri, session: ClientSession): VirError {
  const code = e instanceof VirError ? e.code : ErrorCode.INTERNAL_ERROR;
  const domain = e instanceof VirError ? e.domain : ErrorDomain.NONE;
  // The relay's own outcomes say only what this client was asked and why it ended: keep them.
  if (e instanceof VirError && (code === ErrorCode.AUTH_CANCELLED || (code === ErrorCode.AUTH_UNAVAILABLE && domain === ErrorDomain.AUTH)))
    return e;
  return new VirError({
    code,
    domain,
    detail: `cannot open '${uriForLog(uri.raw)}': the daemon's log has the reason (connection ${session.connectionId})`,
  });
}

/** A client-supplied URI as logs and errors show it: bounded, and no password in the user part. */
function uriForLog(text: string): string {
  const bounded = text.length > 256 ? `${text.slice(0, 256)}…` : text;
  return bounded.replace(/^([^:/?#]+:\/\/)([^@/?#:]*):[^@/?#]*@/, '$1$2@');
}

/** What the daemon keeps on a socket between accept and its session (it may wait in the queue). */
type WaitingSocket = net.Socket & {
  virtauthSpec?: ListenerSpec;
  virtauthDn?: string;
  virtauthAcceptedAt?: number;
  virtauthQueueTimer?: NodeJS.Timeout;
  virtauthPeer?: TransportInfo['peer'];
};

/** tls_allowed_dn_list: no list lets any certificate the CA signed in; a list, only DNs a glob matches. */
export function tlsClientAllowed(allowed: readonly string[] | null, dn: string): boolean {
  return allowed === null || allowed.some((glob) => globMatch(glob, dn));
}

/** The client certificate's subject as libvirt writes it for tls_allowed_dn_list: C=..,O=..,CN=.. */
export function clientDistinguishedName(socket: tls.TLSSocket): string {
  const raw = socket.getPeerX509Certificate?.();
  if (!raw) return '';
  return raw.subject.split('\n').join(',');
}

/**
 * Binds a unix socket in a private directory beside `path`, gives it its mode and group there,
 * and only then renames it into place: no client ever sees it with the wrong permissions.
 */
export async function bindUnixSocket(
  server: net.Server,
  path: string,
  opts: { perms?: number; groupId?: number | null },
  log: Logger,
): Promise<void> {
  const privateDir = await mkdtemp(join(dirname(path), `.${basename(path)}-`));
  const staging = join(privateDir, 'sock');
  try {
    await listenOn(server, { path: staging }, { kind: 'unix' }, log, path);
    if (opts.perms !== undefined) await chmod(staging, opts.perms);
    if (opts.groupId !== undefined && opts.groupId !== null) await chown(staging, -1, opts.groupId);
    await rename(staging, path);
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
}

/** Binds or adopts a listener; errors become libvirt's one-line messages naming what failed. */
export async function listenOn(
  server: net.Server,
  where: net.ListenOptions & { fd?: number },
  spec: Pick<ListenerSpec, 'kind'>,
  log: Logger,
  shownPath = where.path,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException) => {
      const reason = describeErrno(e);
      const detail =
        where.fd !== undefined
          ? `Unable to listen on the socket passed by systemd (descriptor ${where.fd}): ${reason}`
          : spec.kind === 'unix'
            ? `Failed to bind socket to '${shownPath}': ${reason}`
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

/** Removes a socket file no daemon answers on; refuses a live one or a file that is not a socket. */
export async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isSocket())
      throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `${path} exists and is not a socket` });
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
  if (live)
    throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `another daemon is already listening on ${path}` });
  await rm(path, { force: true });
}
