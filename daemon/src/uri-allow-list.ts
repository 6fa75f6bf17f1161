// Which connection URIs a client may make this daemon open (uri_allowed_list). A client names a
// URI in CONNECT_OPEN; without this check it could make the daemon's drivers connect wherever it
// likes (a socket or XenAPI server it owns) with the daemon's own credentials.
//
// An entry is a URI written by the operator. Globs (`*`, `?`) are allowed only where they cannot
// move the connection: in the path and in the values of parameters that do not decide where or how
// securely the daemon connects. Everything else — scheme and transport, user, host, port, and
// parameters such as socket=, server=, scheme=, no_verify=, pkipath=, auth=, authfile= — must be
// literal in the entry, and the client's URI must carry exactly the entry's values.

import { ErrorCode, ErrorDomain, REMOTE_DRIVER_PARAMS, VirError, globMatch, parseUri, type ConnectUri } from '@virtauth/core';

/**
 * Parameters that decide where or how securely a driver connects: the remote driver's own (all but
 * `name`, which is what the next daemon opens and is checked there) and XenAPI's.
 */
export const CONNECTION_PARAMS: ReadonlySet<string> = new Set([
  ...[...REMOTE_DRIVER_PARAMS].filter((k) => k !== 'name'),
  'server',
  'scheme',
]);

const GLOB_CHARS = /[*?]/;

interface UriPattern {
  text: string;
  uri: ConnectUri;
  params: Map<string, string>;
}

function configError(why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: why });
}

/** Parameters by name, or null when one is repeated (libvirt takes the last: ambiguous here). */
function paramMap(uri: ConnectUri): Map<string, string> | null {
  const out = new Map<string, string>();
  for (const [k, v] of uri.params) {
    if (out.has(k)) return null;
    out.set(k, v);
  }
  return out;
}

/** Parses and checks one operator entry; a glob where it could move the connection is refused. */
export function parseUriPattern(text: string): UriPattern {
  let uri: ConnectUri;
  try {
    uri = parseUri(text);
  } catch (e) {
    throw configError(`'${text}' is not a connection URI: ${(e as Error).message}`);
  }
  const fixed: [string, string | null][] = [
    ['scheme', uri.driver + (uri.transport ? `+${uri.transport}` : '')],
    ['user', uri.user],
    ['host', uri.host],
  ];
  for (const [what, value] of fixed) {
    if (value !== null && GLOB_CHARS.test(value)) throw configError(`'${text}': the ${what} must be written literally (no * or ?)`);
  }
  const params = paramMap(uri);
  if (!params) throw configError(`'${text}': a parameter is given twice`);
  for (const [k, v] of params) {
    if (GLOB_CHARS.test(k)) throw configError(`'${text}': parameter names must be written literally`);
    if (CONNECTION_PARAMS.has(k) && GLOB_CHARS.test(v))
      throw configError(`'${text}': ${k}= decides where or how the daemon connects and must be written literally`);
  }
  return { text, uri, params };
}

function matches(pattern: UriPattern, uri: ConnectUri): boolean {
  const p = pattern.uri;
  if (p.driver !== uri.driver || p.transport !== uri.transport || p.user !== uri.user || p.port !== uri.port) return false;
  if ((p.host ?? '').toLowerCase() !== (uri.host ?? '').toLowerCase()) return false;
  if (!globMatch(p.path, uri.path)) return false;
  const params = paramMap(uri);
  if (!params) return false;
  for (const [k, v] of params) {
    const allowed = pattern.params.get(k);
    if (allowed === undefined || !globMatch(allowed, v)) return false;
  }
  // A literal value is required; a glob value may be left out.
  for (const [k, v] of pattern.params) if (!params.has(k) && !GLOB_CHARS.test(v)) return false;
  return true;
}

/**
 * The URIs this daemon opens for its clients. Features that add names of their own (the gateway's
 * uri_upstream_list) `add()` them next to the operator's uri_allowed_list.
 */
export class UriAllowList {
  private readonly patterns: UriPattern[] = [];

  constructor(entries: readonly string[] = []) {
    for (const e of entries) this.add(e);
  }

  add(entry: string): void {
    this.patterns.push(parseUriPattern(entry));
  }

  get entries(): readonly string[] {
    return this.patterns.map((p) => p.text);
  }

  /** Whether a client may open `uriText`: true only when it matches an entry as described above. */
  allows(uriText: string): boolean {
    let uri: ConnectUri;
    try {
      uri = parseUri(uriText);
    } catch {
      return false;
    }
    return this.patterns.some((p) => matches(p, uri));
  }
}

/** Checks entries at configuration time, so a bad one stops the daemon at start. */
export function checkUriAllowedList(entries: readonly string[]): void {
  for (const e of entries) parseUriPattern(e);
}
