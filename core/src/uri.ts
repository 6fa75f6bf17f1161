// libvirt connection URIs: driver[+transport]://[user@][host][:port]/path?params

import { ErrorCode, ErrorDomain, VirError } from './errors.js';

export interface ConnectUri {
  /** The whole URI as given. */
  readonly raw: string;
  /** Driver part of the scheme, e.g. `test`, `qemu`, `xenapi`, `remote`. */
  readonly driver: string;
  /** Transport part of the scheme (`unix`, `tcp`, `tls`, ...), or null when absent. */
  readonly transport: string | null;
  readonly user: string | null;
  readonly host: string | null;
  readonly port: number | null;
  /** Path including the leading slash (`/default`, `/system`), `''` when absent. */
  readonly path: string;
  /** Query parameters in order, decoded. */
  readonly params: ReadonlyArray<readonly [string, string]>;
}

/** Parameters the remote driver consumes and strips before forwarding the URI (libvirt's list). */
export const REMOTE_DRIVER_PARAMS: ReadonlySet<string> = new Set([
  'name',
  'command',
  'socket',
  'auth',
  'sshauth',
  'netcat',
  'keyfile',
  'pkipath',
  'known_hosts',
  'known_hosts_verify',
  'tls_priority',
  'mode',
  'proxy',
  'no_sanity',
  'no_verify',
  'no_tty',
  'authfile',
  // virtauth's own addition, consumed the same way.
  'channel_binding',
]);

const URI_RE =
  /^([A-Za-z][A-Za-z0-9.-]*)(?:\+([A-Za-z0-9.-]+))?:\/\/(?:([^@/?#]*)@)?(\[[^\]]*\]|[^:/?#]*)(?::(\d*))?([^?#]*)(?:\?([^#]*))?(?:#.*)?$/;

function invalid(raw: string, why: string): VirError {
  return new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail: `Unable to parse URI ${raw}: ${why}` });
}

function decodePart(s: string, raw: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, '%20'));
  } catch {
    throw invalid(raw, `bad percent-encoding in '${s}'`);
  }
}

export function parseUri(raw: string): ConnectUri {
  const m = URI_RE.exec(raw);
  if (!m) throw invalid(raw, 'expected driver[+transport]://[user@][host][:port]/[path][?params]');
  const [, driver, transport, user, hostPart, portPart, path, query] = m;
  let port: number | null = null;
  if (portPart !== undefined && portPart !== '') {
    port = Number(portPart);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(raw, `port ${portPart} is out of range`);
  }
  const host = hostPart ? (hostPart.startsWith('[') ? hostPart.slice(1, -1) : decodePart(hostPart, raw)) : null;
  const params: [string, string][] = [];
  if (query) {
    for (const part of query.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const k = decodePart(eq < 0 ? part : part.slice(0, eq), raw);
      const v = eq < 0 ? '' : decodePart(part.slice(eq + 1), raw);
      params.push([k, v]);
    }
  }
  return {
    raw,
    driver: driver!.toLowerCase(),
    transport: transport ? transport.toLowerCase() : null,
    user: user ? decodePart(user, raw) : null,
    host,
    port,
    path: path ?? '',
    params,
  };
}

/** The last value of a query parameter (libvirt takes the last occurrence), or null. */
export function uriParam(uri: ConnectUri, name: string): string | null {
  let v: string | null = null;
  for (const [k, val] of uri.params) if (k === name) v = val;
  return v;
}

function encodeQuery(params: ReadonlyArray<readonly [string, string]>): string {
  return params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v).replace(/%2F/g, '/').replace(/%3A/g, ':')}`).join('&');
}

export function formatUri(u: Omit<ConnectUri, 'raw'>): string {
  const scheme = u.transport ? `${u.driver}+${u.transport}` : u.driver;
  const user = u.user ? `${encodeURIComponent(u.user)}@` : '';
  const host = u.host ? (u.host.includes(':') ? `[${u.host}]` : u.host) : '';
  const port = u.port !== null ? `:${u.port}` : '';
  const q = u.params.length ? `?${encodeQuery(u.params)}` : '';
  return `${scheme}://${user}${host}${port}${u.path}${q}`;
}

/**
 * The URI the remote driver sends in CONNECT_OPEN: transport, host, user and port dropped, the
 * parameters it consumed stripped, `name=` taking precedence, a `remote` scheme sent as ''.
 */
export function driverUriForServer(uri: ConnectUri): string {
  const name = uriParam(uri, 'name');
  if (name !== null) return name;
  if (uri.driver === 'remote') return '';
  const params = uri.params.filter(([k]) => !REMOTE_DRIVER_PARAMS.has(k));
  return formatUri({ driver: uri.driver, transport: null, user: null, host: null, port: null, path: uri.path, params });
}

/** Whether the URI names a remote server (a transport or a host), as libvirt decides. */
export function isRemoteUri(uri: ConnectUri): boolean {
  return uri.transport !== null || (uri.host !== null && uri.host !== '') || uri.driver === 'remote';
}

/** Where virtauthd puts its unix sockets by default: /run/virtauth as root, else per user. */
export function defaultVirtauthSocketDir(): string {
  if (process.getuid?.() === 0) return '/run/virtauth';
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? `${runtime}/virtauth` : `${process.env.HOME ?? '/tmp'}/.cache/virtauth/run`;
}
