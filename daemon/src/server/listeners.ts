// The daemon's listening sockets: which ones the config asks for, binding or adopting them with
// libvirt's one-line errors, and closing them (and removing the socket files this daemon made).

import { chmod, chown, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { AuthType, ErrorCode, ErrorDomain, VirError, type TransportKind } from '@virtauth/core';
import type { DaemonConfig } from '../config.js';
import type { AuthSchemeKey } from '../plugins.js';

export interface ListenerSpec {
  kind: TransportKind;
  /** Unix socket path. */
  path?: string;
  host?: string;
  port?: number;
  auth: AuthType;
  readOnly: boolean;
  perms?: number;
  /** An already listening socket to serve (systemd socket activation) instead of binding one. */
  fd?: number;
}

export interface ListenerInfo extends ListenerSpec {
  /** A URI a client can use to reach this listener with the test driver. */
  uri: string;
}

/** The config's listeners; `auth` holds the type each auth_* name maps to (authSchemeTypes). */
export function listenersFromConfig(cfg: DaemonConfig, auth: Record<AuthSchemeKey, AuthType>): ListenerSpec[] {
  const out: ListenerSpec[] = [
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock'), auth: auth.authUnixRw, readOnly: false, perms: cfg.unixSockRwPerms },
    { kind: 'unix', path: join(cfg.unixSockDir, 'virtauth-sock-ro'), auth: auth.authUnixRo, readOnly: true, perms: cfg.unixSockRoPerms },
  ];
  if (cfg.listenTcp) out.push({ kind: 'tcp', host: cfg.listenAddr, port: cfg.tcpPort, auth: auth.authTcp, readOnly: false });
  if (cfg.listenTls) out.push({ kind: 'tls', host: cfg.listenAddr, port: cfg.tlsPort, auth: auth.authTls, readOnly: false });
  return out;
}

/** The servers a daemon listens with, and the socket files it bound. */
export class ListenerSet {
  private readonly servers: net.Server[] = [];
  /** Socket files this daemon bound, and so removes when it stops (never another daemon's or systemd's). */
  private readonly boundPaths: string[] = [];

  constructor(private readonly log: Logger) {}

  /**
   * Binds `server` where `spec` says (or adopts spec.fd) and tells how a client reaches it; a unix
   * socket it binds gets `socketGroupId` (unix_sock_group) as its group.
   */
  async open(server: net.Server, spec: ListenerSpec, socketGroupId: number | null): Promise<ListenerInfo> {
    if (spec.fd !== undefined) {
      await listenOn(server, { fd: spec.fd }, spec, this.log);
      this.servers.push(server);
      if (spec.kind === 'unix') return { ...spec, uri: `test+unix:///default?socket=${spec.path}` };
      const host = spec.host?.includes(':') ? `[${spec.host}]` : spec.host;
      return { ...spec, uri: `test+${spec.kind}://${host}:${spec.port}/default` };
    }
    if (spec.kind === 'unix') {
      const path = spec.path!;
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      await removeStaleSocket(path);
      await bindUnixSocket(server, path, { ...(spec.perms !== undefined ? { perms: spec.perms } : {}), groupId: socketGroupId }, this.log);
      this.boundPaths.push(path);
      this.servers.push(server);
      return { ...spec, uri: `test+unix:///default?socket=${path}` };
    }
    await listenOn(server, { port: spec.port ?? 0, host: spec.host ?? '127.0.0.1' }, spec, this.log);
    this.servers.push(server);
    const addr = server.address() as net.AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { ...spec, port: addr.port, uri: `test+${spec.kind}://${host}:${addr.port}/default` };
  }

  /**
   * Stops accepting at once; resolves when every server has closed (its connections ended) and
   * the socket files this daemon bound are gone.
   */
  close(): Promise<void> {
    const closes = this.servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    return Promise.all(closes).then(async () => {
      // A socket systemd passed stays in place: systemd owns it and listens on it again.
      for (const path of this.boundPaths.splice(0)) await rm(path, { force: true });
    });
  }
}

/**
 * Binds a unix socket in a private directory beside `path`, gives it its mode and group there,
 * and only then renames it into place: no client ever sees it with the wrong permissions.
 */
export async function bindUnixSocket(
  server: net.Server,
  path: string,
  opts: { perms?: number; groupId?: number | null },
  log: Logger,
): Promise<void> {
  const privateDir = await mkdtemp(join(dirname(path), `.${basename(path)}-`));
  const staging = join(privateDir, 'sock');
  try {
    await listenOn(server, { path: staging }, { kind: 'unix' }, log, path);
    if (opts.perms !== undefined) await chmod(staging, opts.perms);
    if (opts.groupId !== undefined && opts.groupId !== null) await chown(staging, -1, opts.groupId);
    await rename(staging, path);
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
}

/** Binds or adopts a listener; errors become libvirt's one-line messages naming what failed. */
export async function listenOn(
  server: net.Server,
  where: net.ListenOptions & { fd?: number },
  spec: Pick<ListenerSpec, 'kind'>,
  log: Logger,
  shownPath = where.path,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException) => {
      const reason = describeErrno(e);
      const detail =
        where.fd !== undefined
          ? `Unable to listen on the socket passed by systemd (descriptor ${where.fd}): ${reason}`
          : spec.kind === 'unix'
            ? `Failed to bind socket to '${shownPath}': ${reason}`
            : `Unable to bind to port ${where.port} on ${where.host}: ${reason}`;
      reject(new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail }));
    };
    server.once('error', failed);
    // Errors after the listener is up are logged; it keeps serving what it can.
    server.on('listening', () => server.on('error', (e) => log.error({ err: e }, 'listener error')));
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    // An inherited descriptor is a handle to adopt ({fd}); anything else is an address to bind.
    if (where.fd !== undefined) server.listen({ fd: where.fd }, listening);
    else server.listen(where, listening);
  });
}

const ERRNO_TEXT: Record<string, string> = {
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EINVAL: 'Invalid argument',
  EBADF: 'Bad file descriptor',
  ENOTSOCK: 'Socket operation on non-socket',
};

/** strerror()'s wording for the errors a bind meets, as libvirt prints them. */
function describeErrno(e: NodeJS.ErrnoException): string {
  return (e.code && ERRNO_TEXT[e.code]) ?? e.message;
}

/** Removes a socket file no daemon answers on; refuses a live one or a file that is not a socket. */
export async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await stat(path);
    if (!st.isSocket())
      throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `${path} exists and is not a socket` });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  // A live daemon answers a connect; a stale socket file refuses it.
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live)
    throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `another daemon is already listening on ${path}` });
  await rm(path, { force: true });
}
