// The gateway: `uri_upstream_list` maps a URI clients open to the libvirt daemon virtauthd opens
// for them, and once that upstream is open the client's connection is passed through to it.
// Parsing and matching live here alone, so other checks (the URI allow list) can ask the same.

import { ErrorCode, ErrorDomain, VirError, isRemoteUri, parseUri, type ConfValue, type DriverConnection } from '@virtauth/core';
import { PassThrough, RemoteConnection, type CallCheck, type EventCheck, type ReplyCheck } from '@virtauth/drivers';
import { streamPump } from '@virtauth/peercred';
import type { ClientSession } from './session.js';

export interface UpstreamRoute {
  /** The name a client's CONNECT_OPEN carries, e.g. `qemu:///system`. */
  clientUri: string;
  /** What virtauthd opens with its remote driver, e.g. `qemu+unix:///system?socket=...`. */
  upstreamUri: string;
}

function confError(file: string, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${file}: uri_upstream_list: ${why}` });
}

/**
 * Reads `uri_upstream_list = [ "CLIENT_URI=UPSTREAM_URI", ... ]`. The first '=' splits an entry
 * (a client URI carries no query; the upstream's may). A client URI is what clients send in
 * CONNECT_OPEN, so it has neither transport nor host; an upstream URI must name a transport or
 * host, since the remote driver opens it.
 */
export function parseUpstreamList(value: ConfValue, file = 'config'): UpstreamRoute[] {
  if (!Array.isArray(value)) throw confError(file, 'expected a [ "CLIENT_URI=UPSTREAM_URI", ... ] list');
  const routes: UpstreamRoute[] = [];
  for (const entry of value) {
    const split = entry.indexOf('=');
    if (split <= 0 || split === entry.length - 1) throw confError(file, `entry '${entry}' is not CLIENT_URI=UPSTREAM_URI`);
    const clientUri = entry.slice(0, split).trim();
    const upstreamUri = entry.slice(split + 1).trim();
    let client;
    let upstream;
    try {
      client = parseUri(clientUri);
      upstream = parseUri(upstreamUri);
    } catch (e) {
      throw confError(file, `entry '${entry}': ${(e as Error).message}`);
    }
    if (client.transport !== null || client.host) {
      throw confError(file, `client URI '${clientUri}' names a transport or host; clients send the driver URI alone (e.g. qemu:///system)`);
    }
    if (!isRemoteUri(upstream)) {
      throw confError(file, `upstream URI '${upstreamUri}' names no transport or host (e.g. qemu+unix:///system, qemu+tls://host/system)`);
    }
    if (routes.some((r) => r.clientUri === clientUri)) throw confError(file, `client URI '${clientUri}' is listed twice`);
    routes.push({ clientUri, upstreamUri });
  }
  return routes;
}

/** The route for the name a client opens: exactly as listed, so no client can steer the upstream. */
export function upstreamFor(routes: readonly UpstreamRoute[], name: string): UpstreamRoute | undefined {
  return routes.find((r) => r.clientUri === name);
}

/** Checks run one after the other; the first refusal stands. */
export function allChecks(checks: readonly CallCheck[]): CallCheck {
  return async (call) => {
    for (const check of checks) await check(call);
  };
}

/**
 * Hands the session's remote program over to the opened upstream. Runs inside CONNECT_OPEN, so
 * the packets after its reply are already forwarded. `checkCall` is where access control decides
 * each call before it leaves; `results` checks replies and events before they reach the client.
 */
export function startPassThrough(
  session: ClientSession,
  conn: DriverConnection,
  checkCall?: CallCheck,
  results?: { checkReply?: ReplyCheck; checkEvent?: EventCheck },
): PassThrough {
  if (!(conn instanceof RemoteConnection)) {
    throw new VirError({
      code: ErrorCode.INTERNAL_ERROR,
      domain: ErrorDomain.RPC,
      detail: `an upstream must be opened by the remote driver, not '${conn.driverName}'`,
    });
  }
  const passThrough = new PassThrough({
    client: session.rpc,
    upstream: conn.rpc,
    log: session.log,
    // Downloads between plain sockets are copied by the native pump; the rest goes through node.
    streamPump,
    ...(checkCall ? { checkCall } : {}),
    ...(results?.checkReply ? { checkReply: results.checkReply } : {}),
    ...(results?.checkEvent ? { checkEvent: results.checkEvent } : {}),
  });
  session.onClose(() => passThrough.close());
  return passThrough;
}
