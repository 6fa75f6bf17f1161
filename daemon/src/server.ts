// virtauthd's server: composes the listeners, the admission queue, the sessions and driver
// opening (each in server/), and runs their start, live changes and orderly shutdown.

import { hostname } from 'node:os';
import net from 'node:net';
import type { Logger } from 'pino';
import type { DependencyContainer } from 'tsyringe';
import {
  AccessManager,
  AUTH_PROVIDER,
  AuthType,
  ErrorCode,
  ErrorDomain,
  VirError,
  type ProgramDefinition,
  type TransportInfo,
  type CredentialSource,
} from '@virtauth/core';
import { processStartTime } from '@virtauth/providers';
import type { DaemonConfig } from './config.js';
import { authSchemeName, authSchemeTypes } from './plugins.js';
import { resolveGroupId } from './unix-group.js';
import { createRemoteProgram } from './remote-program.js';
import type { TlsMaterial } from './tls-material.js';
import type { ClientSession } from './session.js';
import { UriAllowList } from './uri-allow-list.js';
import { ListenerSet, listenersFromConfig, type ListenerInfo, type ListenerSpec } from './server/listeners.js';
import { TlsListeners } from './server/tls.js';
import { AdmissionQueue, type AcceptedConnection, type ClientLimits } from './server/admission-queue.js';
import { Sessions } from './server/sessions.js';
import { DriverOpening, type OpenHooks } from './server/driver-opening.js';
import { registeredCredentialSources } from './server/credential-sources.js';

export {
  listenersFromConfig,
  bindUnixSocket,
  listenOn,
  removeStaleSocket,
  type ListenerSpec,
  type ListenerInfo,
} from './server/listeners.js';
export { tlsClientAllowed, clientDistinguishedName } from './server/tls.js';
export { clientLimitsOrderError, type ClientLimits } from './server/admission-queue.js';
export { PRE_AUTH_PACKET_MAX } from './server/sessions.js';
export type { OpenTarget } from './server/driver-opening.js';

/** Extra programs (e.g. the credential relay) and hooks that plugins add to the daemon. */
export interface DaemonExtension extends OpenHooks {
  programs?(server: VirtauthServer): ProgramDefinition<ClientSession>[];
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
  /** Access control for every call (default: only the read-only rule). */
  access?: AccessManager;
}

export class VirtauthServer {
  readonly config: DaemonConfig;
  readonly container: DependencyContainer;
  readonly log: Logger;
  private readonly listeners: ListenerSet;
  private readonly tlsListeners: TlsListeners;
  private readonly clientCountListeners = new Set<(count: number) => void>();
  private readonly sessions: Sessions;
  private readonly admission: AdmissionQueue;
  private readonly driverOpening: DriverOpening;
  private readonly specs: ListenerSpec[];
  private readonly extensions: DaemonExtension[];
  private programs: ProgramDefinition<ClientSession>[] = [];
  private stopping = false;
  readonly processName: string;
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
    this.uriAllowList = new UriAllowList(opts.config.uriAllowedList);
    this.listeners = new ListenerSet(this.log);
    this.tlsListeners = new TlsListeners(this.config, this.log);
    this.sessions = new Sessions({
      config: this.config,
      log: this.log,
      programs: () => this.programs,
      onAuthenticated: () => this.admission.authenticated(),
      onStarted: (session) => {
        this.clientCountChanged();
        for (const e of this.extensions) e.onSession?.(session);
      },
      onEnded: (_session, wasUnauthenticated) => {
        this.clientCountChanged();
        this.admission.left(wasUnauthenticated);
      },
    });
    this.admission = new AdmissionQueue({
      limits: { maxClients: opts.config.maxClients, maxAnonymousClients: opts.config.maxAnonymousClients },
      config: this.config,
      log: this.log,
      admittedCount: () => this.sessions.size,
      admit: (connection) => this.sessions.start(connection),
      onWaitingChange: () => this.clientCountChanged(),
    });
    this.driverOpening = new DriverOpening({
      config: this.config,
      container: this.container,
      access: this.access,
      uriAllowList: () => this.uriAllowList,
      extensions: this.extensions,
      credentialSources: opts.credentialSources ?? registeredCredentialSources(this.container),
      processName: this.processName,
      log: this.log,
    });
  }

  /** Connected clients, including those waiting for a free authentication slot. */
  get clientCount(): number {
    return this.sessions.size + this.admission.waitingCount;
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
    if (settings.tls) this.tlsListeners.use(settings.tls);
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
    return this.sessions.list();
  }

  /** Clients admitted that have not authenticated yet. */
  get unauthenticatedCount(): number {
    return this.admission.unauthenticatedCount;
  }

  /** Sockets accepted and waiting, unread, for the limits to admit them. */
  get waitingCount(): number {
    return this.admission.waitingCount;
  }

  clientLimits(): Readonly<ClientLimits> {
    return this.admission.currentLimits();
  }

  /**
   * Changes the admission limits at once. Lowering them disconnects no one: clients beyond the
   * new limit stay, and new ones wait until enough have gone. Raising them admits waiting ones.
   */
  setClientLimits(change: Partial<ClientLimits>): void {
    this.admission.setLimits(change);
  }

  /** Calls received from clients and not yet answered, across all clients. */
  callsInProgress(): number {
    return this.sessions.callsInProgress();
  }

  get hasTlsListener(): boolean {
    return this.tlsListeners.any;
  }

  /**
   * Reads the TLS key, certificate and CA again and uses them for new connections (those
   * connected keep theirs), as libvirtd's server-update-tls does.
   */
  async updateTlsFiles(): Promise<void> {
    await this.tlsListeners.updateFiles();
  }

  async start(): Promise<ListenerInfo[]> {
    const providers = this.container.resolveAll(AUTH_PROVIDER);
    for (const spec of this.specs) {
      const p = providers.find((x) => x.type === spec.auth);
      if (!p?.server && spec.auth !== AuthType.NONE) {
        throw new VirError({
          code: ErrorCode.CONF_SYNTAX,
          domain: ErrorDomain.CONF,
          detail: `no server-side provider is registered for auth scheme '${authSchemeName(providers, spec.auth)}'`,
        });
      }
    }
    this.programs = [
      createRemoteProgram({
        providers,
        open: (s, name, ro) => this.driverOpening.open(s, name, ro),
        keepaliveInterval: this.config.keepaliveInterval,
        keepaliveCount: this.config.keepaliveCount,
        access: this.access,
      }),
      ...this.extensions.flatMap((e) => e.programs?.(this) ?? []),
    ];
    const socketGroupId = this.config.unixSockGroup !== null ? await resolveGroupId(this.config.unixSockGroup) : null;
    const infos: ListenerInfo[] = [];
    try {
      for (const spec of this.specs) {
        const server =
          spec.kind === 'tls'
            ? await this.tlsListeners.create((socket, dn) => this.accept(socket, spec, { tlsDn: dn }))
            : net.createServer({ pauseOnConnect: true }, (socket) => this.acceptPlain(socket, spec));
        infos.push(await this.listeners.open(server, spec, socketGroupId));
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    return infos;
  }

  private acceptPlain(socket: net.Socket, spec: ListenerSpec): void {
    if (spec.kind !== 'unix' || socket.destroyed) return this.accept(socket, spec, {});
    void this.peerAtAccept(socket, spec).then((peer) => this.accept(socket, spec, peer ? { peer } : {}));
  }

  private accept(socket: net.Socket, spec: ListenerSpec, facts: Pick<AcceptedConnection, 'tlsDn' | 'peer'>): void {
    if (this.stopping || socket.destroyed) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.admission.offer({ socket, spec, acceptedAt: Date.now(), ...facts });
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
    const listenersClosed = this.listeners.close();
    this.admission.close();
    this.sessions.closeAll();
    await listenersClosed;
    await this.access.close();
  }
}
