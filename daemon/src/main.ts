#!/usr/bin/env node
// virtauthd: serves libvirt's remote protocol with pluggable authentication.
import 'reflect-metadata';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AUTH_PROVIDER, VirError } from '@virtauth/core';
import type { DaemonConfig } from './config.js';
import { authSchemeName } from './plugins.js';
import { createDaemon, type DaemonHandle } from './daemon.js';
import { createDaemonLogging } from './logging/daemon-logging.js';
import type { LogSettings } from './logging/settings.js';
import { watchIdleTimeout } from './service/idle-timeout.js';
import { loadConfigFile, reloadConfiguration, type LoadedConfig } from './service/reload.js';
import { closeInheritedSockets, planActivatedListeners, readInheritedSockets } from './systemd/activation.js';
import { createServiceNotifier } from './systemd/notify.js';

const USAGE = `Usage: virtauthd [--config FILE] [--timeout SECONDS] [--verbose]

Serves libvirt's remote protocol (virsh, python3-libvirt and the virtauth client can connect).
Without --config it runs on embedded defaults: unix sockets, auth none, the test driver.

  -f, --config FILE      libvirtd.conf-style configuration (see README)
  -t, --timeout SECONDS  exit after SECONDS without any client (as under socket activation)
  -v, --verbose          log info lines too (log_level 2)
  -h, --help             this text

Sockets passed by systemd (LISTEN_FDS) are served instead of creating them; SIGHUP reloads the
configuration; NOTIFY_SOCKET receives READY=1, RELOADING=1 and STOPPING=1.`;

/** A startup failure worth one line and exit 1, never a stack trace. */
class StartupError extends Error {}

function parseTimeout(text: string | undefined): number | null {
  if (text === undefined) return null;
  if (!/^\d{1,9}$/.test(text) || Number(text) === 0)
    throw new StartupError(`invalid --timeout '${text}': expected a number of seconds greater than 0`);
  return Number(text);
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'f' },
        timeout: { type: 'string', short: 't' },
        verbose: { type: 'boolean', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`virtauthd: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (args.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const timeout = parseTimeout(args.values.timeout);
  // SIGHUP's default is to terminate: one arriving while the daemon starts is kept for later.
  let hangupWhileStarting = false;
  const holdHangup = () => {
    hangupWhileStarting = true;
  };
  process.on('SIGHUP', holdHangup);
  // Handlers go in before READY=1 can leave: a SIGTERM right after it must stop the daemon
  // cleanly, not kill it with the signal's default action.
  let shutdownReason: string | null = null;
  let wakeForShutdown: (() => void) | null = null;
  const shutdown = (why: string) => {
    if (shutdownReason !== null) return;
    shutdownReason = why;
    wakeForShutdown?.();
  };
  process.once('SIGTERM', () => shutdown('SIGTERM received'));
  process.once('SIGINT', () => shutdown('SIGINT received'));
  let loaded: LoadedConfig = loadConfigFile(args.values.config ?? null);
  const logSettingsOf = (config: DaemonConfig): LogSettings => {
    const level = (args.values.verbose ? Math.min(config.logLevel, 2) : config.logLevel) as LogSettings['level'];
    return { level, filters: config.logFilters, outputs: config.logOutputs ?? [] };
  };
  const config = loaded.config;
  config.logLevel = logSettingsOf(config).level;
  const logging = createDaemonLogging(logSettingsOf(config), { identifier: config.daemonName });
  const log = logging.logger;
  const notifier = createServiceNotifier({
    onError: (message, e) => log.warn({ event: 'systemd.notify.failed', notification: message, err: e.message }, 'cannot notify systemd'),
  });

  const inherited = readInheritedSockets();
  const plan = inherited ? planActivatedListeners(inherited, config) : null;
  let activatedAdmin: { fd: number; path: string } | null = null;
  if (plan) {
    for (const setting of plan.ignored)
      log.warn(
        { event: 'activation.ignored', setting },
        `${setting.split(' ')[0]} is ignored under socket activation: the unit's sockets decide what is served`,
      );
    // One admin socket is served; any further one (a second ListenStream=) is not virtauthd's to keep.
    const [adminSocket, ...extraAdmin] = plan.admin;
    if (adminSocket) activatedAdmin = { fd: adminSocket.fd, path: adminSocket.address.family === 'unix' ? adminSocket.address.path : '' };
    if (extraAdmin.length) {
      log.warn(
        { event: 'activation.admin.extra', fds: extraAdmin.map((s) => s.fd) },
        'systemd passed more than one admin socket: serving the first, closing the others',
      );
      closeInheritedSockets(extraAdmin);
    }
  }

  let daemon: DaemonHandle;
  try {
    daemon = await createDaemon({
      config,
      logger: log,
      // An administrator's daemon-timeout ends the daemon as a signal would.
      onIdleTimeout: () => shutdown('no client for the daemon timeout'),
      // Under activation the admin socket is systemd's when it passed one, else virtauthd's own.
      ...(plan ? { listeners: plan.listeners, adminSocket: activatedAdmin ?? join(config.unixSockDir, 'virtauth-admin-sock') } : {}),
    });
  } catch (e) {
    if (inherited) closeInheritedSockets(inherited);
    throw e;
  }
  const providers = daemon.container.resolveAll(AUTH_PROVIDER);
  for (const l of daemon.listeners) {
    const where = l.kind === 'unix' ? l.path : `${l.host}:${l.port}`;
    const origin = l.fd !== undefined ? ', from systemd' : '';
    process.stdout.write(
      `virtauthd listening on ${l.kind} ${where} (auth ${authSchemeName(providers, l.auth)}${l.readOnly ? ', read-only' : ''}${origin}): virsh -c '${l.uri}' hostname\n`,
    );
  }
  notifier.ready(`serving ${daemon.listeners.length} listener(s)`);
  log.info({ event: 'daemon.ready', listeners: daemon.listeners.length, activated: Boolean(plan) }, 'virtauthd is ready');

  const reload = serializeReloads(async () => {
    notifier.reloading();
    try {
      const outcome = await reloadConfiguration(loaded, { daemon, logging, logSettingsOf, log });
      loaded = outcome.loaded;
      // Access-control policies are re-read too; a driver whose new policy is bad keeps its old one.
      await daemon.reload();
      log.info({ event: 'daemon.reloaded', file: loaded.file }, 'configuration reloaded');
      if (outcome.needRestart.length) {
        log.warn(
          { event: 'daemon.reload.restart_needed', keys: outcome.needRestart },
          `changed settings that apply only after a restart: ${outcome.needRestart.join(', ')}`,
        );
      }
    } catch (e) {
      log.error(
        { event: 'daemon.reload.failed', err: (e as Error).message },
        `reload failed, keeping the running configuration: ${(e as Error).message}`,
      );
    } finally {
      notifier.ready();
    }
  });
  process.on('SIGHUP', reload);
  process.off('SIGHUP', holdHangup);
  if (hangupWhileStarting) reload();

  if (timeout !== null) {
    // The admin's daemon-timeout changes this same timeout, and counts its own clients too.
    if (daemon.admin) daemon.admin.setDaemonTimeout(timeout, () => shutdown(`no client for ${timeout} s (--timeout)`));
    else watchIdleTimeout(daemon.server, timeout, () => shutdown(`no client for ${timeout} s (--timeout)`));
  }
  if (shutdownReason === null) {
    await new Promise<void>((resolve) => {
      wakeForShutdown = resolve;
    });
  }
  notifier.stopping();
  process.stderr.write(`virtauthd: ${shutdownReason}, shutting down\n`);
  await daemon.stop().catch(() => undefined);
  process.off('SIGHUP', reload);
  logging.close();
  return 0;
}

/** One reload at a time; a SIGHUP during a reload runs one more afterwards. */
function serializeReloads(run: () => Promise<void>): () => void {
  let running: Promise<void> | null = null;
  let again = false;
  const start = () => {
    running = run().finally(() => {
      running = null;
      if (again) {
        again = false;
        start();
      }
    });
  };
  return () => {
    if (running) again = true;
    else start();
  };
}

/** libvirtd's kind of startup error: one line, the daemon's name, the reason; no stack. */
function startupErrorLine(e: unknown): string {
  if (e instanceof VirError || e instanceof StartupError) return e.message;
  const error = e as NodeJS.ErrnoException;
  return error?.message ?? String(e);
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`virtauthd: ${startupErrorLine(e).replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(1);
  },
);
