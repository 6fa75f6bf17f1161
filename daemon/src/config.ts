// virtauthd's configuration: libvirtd.conf syntax and libvirt's key names, with defaults that
// serve out of the box.

import { readFileSync } from 'node:fs';
import { ErrorCode, ErrorDomain, VirError, defaultVirtauthSocketDir, parseConf, type ConfValue } from '@virtauth/core';
import { parseLogFilters, parseLogOutputs, type LogFilter, type LogOutput } from './logging/settings.js';
import type { ConfigSource } from './config-keys.js';
import { checkUriAllowedList } from './uri-allow-list.js';
import { parseUpstreamList, type UpstreamRoute } from './gateway.js';

export interface DaemonConfig {
  unixSockDir: string;
  unixSockGroup: string | null;
  unixSockRwPerms: number;
  unixSockRoPerms: number;
  /** Mode of virtauth-admin-sock; its permissions are the admin interface's only access control. */
  unixSockAdminPerms: number;
  /** Auth scheme names (`none`, `sasl`, `polkit`, or a plugin's); the registered providers map them to types. */
  authUnixRw: string;
  authUnixRo: string;
  listenTcp: boolean;
  listenAddr: string;
  tcpPort: number;
  authTcp: string;
  listenTls: boolean;
  tlsPort: number;
  authTls: string;
  keyFile: string;
  certFile: string;
  caFile: string;
  /** Certificate revocation list checked against client certificates; null for none. */
  crlFile: string | null;
  /** Globs matched against the client certificate's subject DN; null allows any valid one. */
  tlsAllowedDnList: string[] | null;
  /** Seconds an unauthenticated client may take to authenticate before it is disconnected. */
  authTimeout: number;
  /** Longest a relayed credential request may wait, in seconds, whatever the client asks. */
  relayMaxTimeout: number;
  /** Most relayed credential requests during one CONNECT_OPEN. */
  relayMaxRequestsPerOpen: number;
  maxClients: number;
  maxQueuedClients: number;
  maxAnonymousClients: number;
  maxClientRequests: number;
  keepaliveInterval: number;
  keepaliveCount: number;
  /** libvirt's log levels: 1 debug, 2 info, 3 warning, 4 error. */
  logLevel: number;
  /** Per-source priorities (log_filters); the first whose match is in the source file applies. */
  logFilters: LogFilter[];
  /** Where log lines go (log_outputs); null: the journal under systemd, else stderr. */
  logOutputs: LogOutput[] | null;
  /** Name this daemon gives itself in relayed requests' origin chains. */
  daemonName: string;
  /** The URI opened when a client's CONNECT_OPEN carries no name. */
  defaultUri: string;
  /** The connection URIs clients may make this daemon open (see uri-allow-list.ts). */
  uriAllowedList: string[];
  /** Client URIs passed through to upstream libvirt daemons (uri_upstream_list). */
  uriUpstreamList: UpstreamRoute[];
  /** Plugin modules loaded at start (package names or file paths; see plugins.ts). */
  plugins: string[];
  /** Settings this version does not interpret, kept for plugins. */
  extra: Map<string, ConfValue>;
  /** The file and lines the settings came from, when read from a file. */
  source?: ConfigSource;
}

export function defaultConfig(): DaemonConfig {
  return {
    unixSockDir: defaultVirtauthSocketDir(),
    unixSockGroup: null,
    unixSockRwPerms: 0o700,
    unixSockRoPerms: 0o777,
    unixSockAdminPerms: 0o700,
    authUnixRw: 'none',
    authUnixRo: 'none',
    listenTcp: false,
    listenAddr: '127.0.0.1',
    tcpPort: 16509,
    authTcp: 'sasl',
    listenTls: false,
    tlsPort: 16514,
    authTls: 'none',
    keyFile: '/etc/pki/libvirt/private/serverkey.pem',
    certFile: '/etc/pki/libvirt/servercert.pem',
    caFile: '/etc/pki/CA/cacert.pem',
    crlFile: null,
    tlsAllowedDnList: null,
    authTimeout: 60,
    relayMaxTimeout: 120,
    relayMaxRequestsPerOpen: 8,
    maxClients: 5000,
    maxQueuedClients: 1000,
    maxAnonymousClients: 20,
    maxClientRequests: 5,
    keepaliveInterval: 5,
    keepaliveCount: 5,
    logLevel: 3,
    logFilters: [],
    logOutputs: null,
    daemonName: 'virtauthd',
    defaultUri: 'test:///default',
    uriAllowedList: ['test:///default'],
    uriUpstreamList: [],
    plugins: [],
    extra: new Map(),
  };
}

/** The keys buildConfig reads itself (the rest are left in `extra` for plugins). */
export const DAEMON_CONFIG_KEYS: readonly string[] = [
  'unix_sock_dir',
  'unix_sock_group',
  'unix_sock_rw_perms',
  'unix_sock_ro_perms',
  'unix_sock_admin_perms',
  'auth_unix_rw',
  'auth_unix_ro',
  'listen_tcp',
  'listen_addr',
  'tcp_port',
  'auth_tcp',
  'listen_tls',
  'tls_port',
  'auth_tls',
  'key_file',
  'cert_file',
  'ca_file',
  'crl_file',
  'tls_allowed_dn_list',
  'auth_timeout',
  'relay_max_timeout',
  'relay_max_requests_per_open',
  'max_clients',
  'max_queued_clients',
  'max_anonymous_clients',
  'max_client_requests',
  'keepalive_interval',
  'keepalive_count',
  'log_level',
  'log_filters',
  'log_outputs',
  'daemon_name',
  'default_uri',
  'uri_allowed_list',
  'uri_upstream_list',
  'plugins',
];

/** Applies parsed settings over the defaults, checking each value's type and range. */
export function buildConfig(settings: Map<string, ConfValue>, file = 'config', lines?: ReadonlyMap<string, number>): DaemonConfig {
  const cfg = defaultConfig();
  if (lines) cfg.source = { file, lines };
  const at = (key: string) => (lines?.has(key) ? `${file}:${lines.get(key)}` : file);
  const bad = (key: string, why: string) =>
    new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${at(key)}: ${key}: ${why}` });
  const list = (key: string, v: ConfValue): string[] => {
    if (!Array.isArray(v)) throw bad(key, 'expected a [ "list", "of", "strings" ]');
    return v;
  };
  const str = (key: string, v: ConfValue): string => {
    if (typeof v !== 'string') throw bad(key, 'expected a "string"');
    return v;
  };
  const int = (key: string, v: ConfValue, min: number, max: number): number => {
    const num = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
    if (typeof num !== 'number' || !Number.isInteger(num) || num < min || num > max)
      throw bad(key, `expected an integer from ${min} to ${max}`);
    return num;
  };
  const perms = (key: string, v: ConfValue): number => {
    const s = str(key, v);
    if (!/^0?[0-7]{3,4}$/.test(s)) throw bad(key, 'expected an octal mode such as "0770"');
    return parseInt(s, 8);
  };
  // Which names exist depends on the plugins loaded, so names are checked when the listeners are made.
  const auth = (key: string, v: ConfValue): string => {
    const name = str(key, v);
    if (!/^[a-z0-9][a-z0-9_.-]*$/.test(name)) throw bad(key, `'${name}' is not an authentication scheme name (e.g. "sasl")`);
    return name;
  };
  for (const [key, v] of settings) {
    switch (key) {
      case 'unix_sock_dir':
        cfg.unixSockDir = str(key, v);
        break;
      case 'unix_sock_group':
        cfg.unixSockGroup = str(key, v);
        break;
      case 'unix_sock_rw_perms':
        cfg.unixSockRwPerms = perms(key, v);
        break;
      case 'unix_sock_ro_perms':
        cfg.unixSockRoPerms = perms(key, v);
        break;
      case 'unix_sock_admin_perms':
        cfg.unixSockAdminPerms = perms(key, v);
        break;
      case 'auth_unix_rw':
        cfg.authUnixRw = auth(key, v);
        break;
      case 'auth_unix_ro':
        cfg.authUnixRo = auth(key, v);
        break;
      case 'listen_tcp':
        cfg.listenTcp = int(key, v, 0, 1) === 1;
        break;
      case 'listen_addr':
        cfg.listenAddr = str(key, v);
        break;
      case 'tcp_port':
        cfg.tcpPort = int(key, v, 0, 65535);
        break;
      case 'auth_tcp':
        cfg.authTcp = auth(key, v);
        break;
      case 'listen_tls':
        cfg.listenTls = int(key, v, 0, 1) === 1;
        break;
      case 'tls_port':
        cfg.tlsPort = int(key, v, 0, 65535);
        break;
      case 'auth_tls':
        cfg.authTls = auth(key, v);
        break;
      case 'key_file':
        cfg.keyFile = str(key, v);
        break;
      case 'cert_file':
        cfg.certFile = str(key, v);
        break;
      case 'ca_file':
        cfg.caFile = str(key, v);
        break;
      case 'crl_file':
        cfg.crlFile = str(key, v);
        break;
      case 'tls_allowed_dn_list':
        cfg.tlsAllowedDnList = list(key, v);
        break;
      case 'uri_allowed_list':
        cfg.uriAllowedList = list(key, v);
        try {
          checkUriAllowedList(cfg.uriAllowedList);
        } catch (e) {
          throw bad(key, (e as VirError).str2 ?? (e as Error).message);
        }
        break;
      case 'auth_timeout':
        cfg.authTimeout = int(key, v, 0, 86400);
        break;
      case 'relay_max_timeout':
        cfg.relayMaxTimeout = int(key, v, 1, 86400);
        break;
      case 'relay_max_requests_per_open':
        cfg.relayMaxRequestsPerOpen = int(key, v, 0, 1000);
        break;
      case 'max_clients':
        cfg.maxClients = int(key, v, 1, 1_000_000);
        break;
      case 'max_queued_clients':
        cfg.maxQueuedClients = int(key, v, 0, 1_000_000);
        break;
      case 'max_anonymous_clients':
        cfg.maxAnonymousClients = int(key, v, 0, 1_000_000);
        break;
      case 'max_client_requests':
        cfg.maxClientRequests = int(key, v, 1, 10_000);
        break;
      case 'keepalive_interval':
        cfg.keepaliveInterval = int(key, v, -1, 86400);
        break;
      case 'keepalive_count':
        cfg.keepaliveCount = int(key, v, 0, 1000);
        break;
      case 'log_level':
        cfg.logLevel = int(key, v, 1, 4);
        break;
      case 'log_filters':
        cfg.logFilters = parseLogFilters(str(key, v), `${at(key)}: ${key}`);
        break;
      case 'log_outputs':
        cfg.logOutputs = parseLogOutputs(str(key, v), `${at(key)}: ${key}`);
        break;
      case 'daemon_name':
        cfg.daemonName = str(key, v);
        break;
      case 'default_uri':
        cfg.defaultUri = str(key, v);
        break;
      case 'uri_upstream_list':
        cfg.uriUpstreamList = parseUpstreamList(v, file);
        break;
      case 'plugins':
        cfg.plugins = list(key, v);
        break;
      default:
        cfg.extra.set(key, v);
    }
  }
  return cfg;
}

/** The settings a config file holds, as written (for comparing two versions of it on reload), and their lines. */
export function readConfigSettings(file: string): { settings: Map<string, ConfValue>; lines: Map<string, number> } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `cannot read configuration file ${file}: ${(e as Error).message}`,
    });
  }
  const lines = new Map<string, number>();
  return { settings: parseConf(text, file, lines), lines };
}

export function loadConfig(file: string | null): DaemonConfig {
  if (!file) return defaultConfig();
  const { settings, lines } = readConfigSettings(file);
  return buildConfig(settings, file, lines);
}
