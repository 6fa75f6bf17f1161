// virtauthd's systemd units, rendered from the templates in daemon/systemd/ for one machine:
// the node binary and daemon script to run, and a configuration that decides socket paths,
// modes, ports, writable paths and the capabilities the service keeps.

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DaemonConfig } from '../config.js';

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const UNIT_TEMPLATE_DIR = join(PACKAGE_ROOT, 'systemd');
export const DAEMON_MAIN = join(PACKAGE_ROOT, 'dist', 'src', 'main.js');
/**
 * Node's flags for the daemon. V8's young generation grows to 32 MiB while thousands of clients
 * connect at once (most of what they allocate survives) and keeps it: 3.3 KiB per connection of
 * 10,000. Capped at 8 MiB, it costs no measurable CPU per login (docs/performance.md).
 * daemon/bin/virtauthd.js carries the same flags in its first line.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=4'];

export const UNIT_FILES = [
  'virtauthd.service',
  'virtauthd.socket',
  'virtauthd-ro.socket',
  'virtauthd-admin.socket',
  'virtauthd-tcp.socket',
  'virtauthd-tls.socket',
] as const;

/** Directories the service writes without extra permission (its Runtime/State/LogsDirectory). */
const SERVICE_OWNED_DIRS = ['/run/virtauth', '/var/lib/virtauth', '/var/log/virtauth'];

export interface UnitOptions {
  config: DaemonConfig;
  /** The configuration file the service runs with. */
  configFile: string;
  node?: string;
  daemonMain?: string;
  documentation?: string;
}

function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(`${dir}/`);
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

function ipListen(host: string, port: number): string {
  if (host === '' || host === '0.0.0.0' || host === '::' || host === '*') return String(port);
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The capabilities the configured features need; none by default. */
export function neededCapabilities(config: DaemonConfig): string[] {
  const caps: string[] = [];
  if (config.unixSockGroup) caps.push('CAP_CHOWN');
  if ((config.listenTcp && config.tcpPort < 1024) || (config.listenTls && config.tlsPort < 1024)) caps.push('CAP_NET_BIND_SERVICE');
  return caps;
}

/** Paths outside the service's own directories it must write: another user database or log file, or socket directory. */
export function extraWritablePaths(config: DaemonConfig, userDatabase: string): string[] {
  const wanted = [
    config.unixSockDir,
    dirname(userDatabase),
    ...(config.logOutputs ?? []).flatMap((o) => (o.kind === 'file' ? [dirname(o.path)] : [])),
  ];
  return [...new Set(wanted.filter((p) => !SERVICE_OWNED_DIRS.some((dir) => within(p, dir))))];
}

export function renderUnits(options: UnitOptions, userDatabase: string): Map<string, string> {
  const { config } = options;
  const daemonMain = options.daemonMain ?? DAEMON_MAIN;
  const writable = extraWritablePaths(config, userDatabase);
  const values: Record<string, string> = {
    NODE: options.node ?? process.execPath,
    NODE_FLAGS: DAEMON_NODE_FLAGS.join(' '),
    DAEMON_MAIN: daemonMain,
    CONFIG: options.configFile,
    DOCUMENTATION: options.documentation ?? `file://${resolve(PACKAGE_ROOT, '..', 'README.md')}`,
    // The code itself may live under /home or /root (a clone): then it has to stay readable.
    PROTECT_HOME:
      within(daemonMain, '/home') ||
      within(daemonMain, '/root') ||
      within(options.configFile, '/home') ||
      within(options.configFile, '/root')
        ? 'read-only'
        : 'yes',
    READ_WRITE_PATHS: writable.length ? `ReadWritePaths=${writable.join(' ')}` : '',
    CAPABILITIES: neededCapabilities(config).join(' '),
    SOCKET_DIR: config.unixSockDir,
    RW_MODE: octal(config.unixSockRwPerms),
    RO_MODE: octal(config.unixSockRoPerms),
    SOCKET_GROUP: config.unixSockGroup ? `SocketGroup=${config.unixSockGroup}` : '',
    TCP_LISTEN: ipListen(config.listenAddr, config.tcpPort),
    TLS_LISTEN: ipListen(config.listenAddr, config.tlsPort),
  };
  const units = new Map<string, string>();
  for (const name of UNIT_FILES) {
    const template = readFileSync(join(UNIT_TEMPLATE_DIR, `${name}.in`), 'utf8');
    const text = template.replace(/@([A-Z_]+)@/g, (whole, key: string) => {
      const value = values[key];
      if (value === undefined) throw new Error(`${name}.in: unknown placeholder ${whole}`);
      return value;
    });
    // A setting that does not apply leaves an empty line rather than an empty assignment.
    units.set(name, text.replace(/\n\n\n+/g, '\n\n'));
  }
  return units;
}
