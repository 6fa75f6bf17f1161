// Assembles virtauthd: a container with the shipped plugins, the server, its listeners.

import type { Logger } from 'pino';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { CONFIG_KEYS, CREDENTIAL_SOURCE } from '@virtauth/core';
import { loadAuthConfSource, registerDaemonProviders } from '@virtauth/providers';
import { getPeerCredentials } from '@virtauth/peercred';
import { relayExtension } from './relay-extension.js';
import { registerDefaultDrivers } from '@virtauth/drivers';
import { DAEMON_CONFIG_KEYS, type DaemonConfig } from './config.js';
import { checkConfigKeys } from './config-keys.js';
import { createLogger } from './logger.js';
import { registerConfiguredPlugins } from './plugins.js';
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
}

export interface DaemonHandle {
  server: VirtauthServer;
  listeners: ListenerInfo[];
  container: DependencyContainer;
  stop(): Promise<void>;
}

export async function createDaemon(opts: CreateDaemonOptions): Promise<DaemonHandle> {
  // Shipped plugins go into the caller's container itself: tsyringe's resolveAll in a child
  // container would hide the parent's registrations under the same token.
  const container = opts.container ?? rootContainer.createChildContainer();
  const logger = opts.logger ?? createLogger(opts.config.logLevel);
  // The shipped providers first, then the operator's plugins: each reads its own settings from
  // the keys the daemon does not read, and declares them, before the unknown keys are refused.
  registerDaemonProviders(container, opts.config.extra);
  await registerConfiguredPlugins(opts.config, container, opts.config.extra);
  checkConfigKeys(opts.config, container.resolveAll(CONFIG_KEYS), DAEMON_CONFIG_KEYS, logger);
  registerDefaultDrivers(container);

  const relay = relayExtension({
    maxTimeoutMs: opts.config.relayMaxTimeout * 1000,
    maxRequestsPerOpen: opts.config.relayMaxRequestsPerOpen,
  });
  const server = new VirtauthServer({
    config: opts.config,
    container,
    logger,
    ...(opts.listeners ? { listeners: opts.listeners } : {}),
    extensions: [relay, ...(opts.extensions ?? [])],
    // Registered sources, then the daemon's own auth.conf (LIBVIRT_AUTH_FILE, ~/.config/libvirt,
    // /etc/libvirt), read afresh for each open so edits apply without a restart. The server asks
    // them for a host's own entry only (fillExact).
    credentialSources: async () => {
      const registered = container.isRegistered(CREDENTIAL_SOURCE, true) ? container.resolveAll(CREDENTIAL_SOURCE) : [];
      const authConf = await loadAuthConfSource();
      return authConf ? [...registered, authConf] : registered;
    },
    peerCredentials: opts.peerCredentials ?? getPeerCredentials,
  });
  const listeners = await server.start();
  return { server, listeners, container, stop: () => server.stop() };
}
