// Assembles virtauthd: a container with the shipped plugins, the server, its listeners.

import { join } from 'node:path';
import type { Logger } from 'pino';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { CREDENTIAL_SOURCE } from '@virtauth/core';
import { FileUserDatabase, loadAuthConfSource, oauthBearerSettingsFrom, polkitSettingsFrom, registerDefaultProviders, registerOAuthBearer, saslSettingsFrom } from '@virtauth/providers';
import { getPeerCredentials } from '@virtauth/peercred';
import { relayExtension } from './relay-extension.js';
import { registerDefaultDrivers } from '@virtauth/drivers';
import type { DaemonConfig } from './config.js';
import { createLogger, logControlOf } from './logger.js';
import { AdminService, adminExtension } from './admin/service.js';
import { levelOnlyLogControl } from './log-control.js';
import { VirtauthServer, type DaemonExtension, type ListenerInfo, type ListenerSpec, type ServerOptions } from './server.js';

export interface CreateDaemonOptions {
  config: DaemonConfig;
  /** A container that already holds extra plugins; the shipped ones are registered into it too. */
  container?: DependencyContainer;
  logger?: Logger;
  listeners?: ListenerSpec[];
  extensions?: DaemonExtension[];
  /** How unix-socket clients' pid/uid/gid are read; default SO_PEERCRED through @virtauth/peercred. */
  peerCredentials?: ServerOptions['peerCredentials'];
  /**
   * Where to serve the admin program, or false for nowhere. Default: virtauth-admin-sock in
   * unix_sock_dir when the listeners come from the config; none when `listeners` are given (an
   * embedded daemon must not claim the system's admin socket).
   */
  adminSocket?: string | false;
  /** Called when the daemon timeout an administrator set passes with no client (default: stop). */
  onIdleTimeout?: () => void;
}

export interface DaemonHandle {
  server: VirtauthServer;
  /** The admin endpoint, unless disabled. */
  admin: AdminService | null;
  listeners: ListenerInfo[];
  container: DependencyContainer;
  stop(): Promise<void>;
}

export async function createDaemon(opts: CreateDaemonOptions): Promise<DaemonHandle> {
  // Shipped plugins go into the caller's container itself: tsyringe's resolveAll in a child
  // container would hide the parent's registrations under the same token.
  const container = opts.container ?? rootContainer.createChildContainer();
  const sasl = saslSettingsFrom(opts.config.extra);
  registerDefaultProviders(container, {
    scramIterations: sasl.iterations,
    concealUnknownUsers: sasl.concealUnknownUsers,
    saslServer: {
      users: new FileUserDatabase({ path: sasl.userDatabasePath, iterations: sasl.iterations }),
      ...(sasl.mechanisms ? { mechanisms: sasl.mechanisms } : {}),
      allowedUsernames: sasl.allowedUsernames,
      maxFailuresPerConnection: sasl.maxFailuresPerConnection,
      maxFailuresPerUser: sasl.maxFailuresPerUser,
      failureWindowMs: sasl.failureWindowMs,
      failureDelayMs: sasl.failureDelayMs,
    },
    polkitServer: polkitSettingsFrom(opts.config.extra),
  });
  // OAUTHBEARER is a plugin like any third party's: registered only when the config has oauth_* keys.
  const oauthBearer = oauthBearerSettingsFrom(opts.config.extra);
  if (oauthBearer) registerOAuthBearer(container, oauthBearer);
  registerDefaultDrivers(container);

  const relay = relayExtension({
    maxTimeoutMs: opts.config.relayMaxTimeout * 1000,
    maxRequestsPerOpen: opts.config.relayMaxRequestsPerOpen,
  });
  const logger = opts.logger ?? createLogger(opts.config.logLevel);
  const adminPath = opts.adminSocket ?? (opts.listeners ? false : join(opts.config.unixSockDir, 'virtauth-admin-sock'));
  const admin = adminPath === false ? null : adminExtension();
  const server = new VirtauthServer({
    config: opts.config,
    container,
    logger,
    ...(opts.listeners ? { listeners: opts.listeners } : {}),
    extensions: [relay, ...(admin ? [admin] : []), ...(opts.extensions ?? [])],
    // Registered sources, then the daemon's own auth.conf (LIBVIRT_AUTH_FILE, ~/.config/libvirt,
    // /etc/libvirt), read afresh for each open so edits apply without a restart.
    credentialSources: async () => {
      const registered = container.isRegistered(CREDENTIAL_SOURCE, true) ? container.resolveAll(CREDENTIAL_SOURCE) : [];
      const authConf = await loadAuthConfSource();
      return authConf ? [...registered, authConf] : registered;
    },
    peerCredentials: opts.peerCredentials ?? getPeerCredentials,
  });
  const listeners = await server.start();
  let adminService: AdminService | null = null;
  const stop = async () => {
    await adminService?.stop();
    await server.stop();
  };
  if (admin && adminPath !== false) {
    adminService = new AdminService({
      server,
      path: adminPath,
      perms: opts.config.unixSockAdminPerms,
      logger,
      logs: logControlOf(logger) ?? levelOnlyLogControl(logger),
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
  return { server, admin: adminService, listeners, container, stop };
}
