// Assembles virtauthd: a container with the shipped plugins, the server, its listeners.

import { join } from 'node:path';
import type { Logger } from 'pino';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { AuthType, AUTH_PROVIDER, CONFIG_KEYS, CREDENTIAL_SOURCE, USER_DATABASE } from '@virtauth/core';
import { loadAuthConfSource, registerAccessDrivers, registerDaemonProviders, type DaemonSaslServer } from '@virtauth/providers';
import { getPeerCredentials } from '@virtauth/peercred';
import { relayExtension } from '@virtauth/relay';
import { auditLineWriter, flushAuditRecords } from './audit-log.js';
import { ACCESS_CONFIG_KEYS, createAccessManager } from './access.js';
import { registerDefaultDrivers } from '@virtauth/drivers';
import { DAEMON_CONFIG_KEYS, type DaemonConfig } from './config.js';
import { checkConfigKeys } from './config-keys.js';
import { createLogger } from './logger.js';
import { AdminService, adminExtension } from './admin/service.js';
import { logControlFor } from './log-control.js';
import type { ClientSession } from './session.js';
import { authSchemeTypes, registerConfiguredPlugins, type AuthSchemeKey } from './plugins.js';
import {
  VirtauthServer,
  listenersFromConfig,
  type DaemonExtension,
  type ListenerInfo,
  type ListenerSpec,
  type ServerOptions,
} from './server.js';

export interface CreateDaemonOptions {
  config: DaemonConfig;
  /** A container that already holds extra plugins; the shipped ones are registered into it too. */
  container?: DependencyContainer;
  logger?: Logger;
  /** The listeners, or how to make them from the auth type each auth_* name maps to (socket activation). */
  listeners?: ListenerSpec[] | ((auth: Record<AuthSchemeKey, AuthType>) => ListenerSpec[]);
  extensions?: DaemonExtension[];
  /** How unix-socket clients' pid/uid/gid are read; default SO_PEERCRED through @virtauth/peercred. */
  peerCredentials?: ServerOptions['peerCredentials'];
  /**
   * Where to serve the admin program: a path, a socket systemd passed (`fd`, at `path`), or false
   * for nowhere. Default: virtauth-admin-sock in unix_sock_dir when the listeners come from the
   * config; none when `listeners` are given (an embedded daemon must not claim the system's admin
   * socket).
   */
  adminSocket?: string | { fd: number; path: string } | false;
  /** Called when the daemon timeout an administrator set passes with no client (default: stop). */
  onIdleTimeout?: () => void;
}

export interface DaemonHandle {
  server: VirtauthServer;
  /** The admin endpoint, unless disabled. */
  admin: AdminService | null;
  listeners: ListenerInfo[];
  container: DependencyContainer;
  /** The SASL server's settings, read at each authentication: a reload changes them in place. */
  sasl: DaemonSaslServer;
  extensions: DaemonExtension[];
  stop(): Promise<void>;
  /** What SIGHUP does: access policies re-read, connections kept. */
  reload(): Promise<void>;
}

export async function createDaemon(opts: CreateDaemonOptions): Promise<DaemonHandle> {
  // Shipped plugins go into the caller's container itself: tsyringe's resolveAll in a child
  // container would hide the parent's registrations under the same token.
  const container = opts.container ?? rootContainer.createChildContainer();
  const logger = opts.logger ?? createLogger(opts.config.logLevel);
  // The shipped providers first, then the operator's plugins: each reads its own settings from
  // the keys the daemon does not read, and declares them, before the unknown keys are refused.
  const saslServer = registerDaemonProviders(container, opts.config.extra);
  await registerConfiguredPlugins(opts.config, container, opts.config.extra);
  container.register(CONFIG_KEYS, { useValue: { owner: 'access', keys: ACCESS_CONFIG_KEYS } });
  checkConfigKeys(opts.config, container.resolveAll(CONFIG_KEYS), DAEMON_CONFIG_KEYS, logger);
  const schemeTypes = () => authSchemeTypes(opts.config, container.resolveAll(AUTH_PROVIDER));
  const listenerSpecs =
    typeof opts.listeners === 'function'
      ? opts.listeners(schemeTypes())
      : (opts.listeners ?? listenersFromConfig(opts.config, schemeTypes()));
  if (listenerSpecs.some((l) => l.auth === AuthType.SASL)) {
    // Resolved after the plugins, whose user database replaces the file; read now because an
    // unreadable one is a startup error, not a failure of every later login.
    saslServer.users ??= container.resolve(USER_DATABASE);
    await saslServer.users.list();
  }
  registerDefaultDrivers(container);

  const relay = relayExtension<ClientSession>({
    maxTimeoutMs: opts.config.relayMaxTimeout * 1000,
    maxRequestsPerOpen: opts.config.relayMaxRequestsPerOpen,
    // Audit records are info lines: with info off, none is even built.
    audit: auditLineWriter,
  });
  const adminPath = opts.adminSocket ?? (opts.listeners ? false : join(opts.config.unixSockDir, 'virtauth-admin-sock'));
  const admin = adminPath === false ? null : adminExtension();
  registerAccessDrivers(container);
  const access = await createAccessManager(container, opts.config.extra, logger);
  const extensions = [relay, ...(admin ? [admin] : []), ...(opts.extensions ?? [])];
  const server = new VirtauthServer({
    config: opts.config,
    container,
    logger,
    listeners: listenerSpecs,
    extensions,
    // Registered sources, then the daemon's own auth.conf (LIBVIRT_AUTH_FILE, ~/.config/libvirt,
    // /etc/libvirt), read afresh for each open so edits apply without a restart. The server asks
    // them for a host's own entry only (fillExact).
    credentialSources: async () => {
      const registered = container.isRegistered(CREDENTIAL_SOURCE, true) ? container.resolveAll(CREDENTIAL_SOURCE) : [];
      const authConf = await loadAuthConfSource();
      return authConf ? [...registered, authConf] : registered;
    },
    peerCredentials: opts.peerCredentials ?? getPeerCredentials,
    access,
  });
  const listeners = await server.start();
  let adminService: AdminService | null = null;
  const stop = async () => {
    await adminService?.stop();
    await server.stop();
    // The last lines, the audit records of the requests the closing connections withdrew among them.
    flushAuditRecords();
  };
  if (admin && adminPath !== false) {
    const where = typeof adminPath === 'string' ? { path: adminPath } : adminPath;
    adminService = new AdminService({
      server,
      ...where,
      perms: opts.config.unixSockAdminPerms,
      logger,
      logs: logControlFor(logger),
      extension: admin,
      relayActive: (session) => relay.relayEnabled(session),
      peerCredentials: opts.peerCredentials ?? getPeerCredentials,
      onIdleTimeout: opts.onIdleTimeout ?? (() => void stop()),
    });
    try {
      await adminService.start();
    } catch (e) {
      await server.stop();
      throw e;
    }
  }
  return { server, admin: adminService, listeners, container, sasl: saslServer, extensions, stop, reload: () => server.reload() };
}
