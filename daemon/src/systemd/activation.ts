// systemd socket activation (sd_listen_fds) with libvirt's semantics: sockets are known by the
// names of virtauthd's socket units (LISTEN_FDNAMES), or, when systemd passes no names, by their
// address; a unix socket systemd did not pass is created by the daemon itself; TCP and TLS come
// only from systemd then; a passed socket nobody claims is an error.

import { closeSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError, type AuthType } from '@virtauth/core';
import { socketAddress, type SocketAddress } from '@virtauth/peercred';
import type { DaemonConfig } from '../config.js';
import type { ListenerSpec } from '../server.js';
import type { AuthSchemeKey } from '../plugins.js';

/** systemd passes the first socket as descriptor 3 (SD_LISTEN_FDS_START). */
const FIRST_LISTEN_FD = 3;

/** The unit names, which systemd passes as each socket's name (FileDescriptorName's default). */
export const SOCKET_UNIT_NAMES = {
  rw: 'virtauthd.socket',
  ro: 'virtauthd-ro.socket',
  admin: 'virtauthd-admin.socket',
  tcp: 'virtauthd-tcp.socket',
  tls: 'virtauthd-tls.socket',
} as const;

export type SocketRole = keyof typeof SOCKET_UNIT_NAMES;

export interface InheritedSocket {
  fd: number;
  /** Its LISTEN_FDNAMES entry; null when systemd passed no names. */
  name: string | null;
  address: SocketAddress;
}

function activationError(detail: string): VirError {
  return new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `socket activation: ${detail}` });
}

/**
 * The sockets systemd passed to this process, or null when it passed none (or passed them to
 * another process: LISTEN_PID names the one they are for). Clears LISTEN_* from the environment
 * so that no child process takes them for its own.
 */
export function readInheritedSockets(
  env: NodeJS.ProcessEnv = process.env,
  pid = process.pid,
  addressOf: (fd: number) => SocketAddress = socketAddress,
): InheritedSocket[] | null {
  const listenPid = env.LISTEN_PID;
  const listenFds = env.LISTEN_FDS;
  const listenNames = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (listenPid === undefined || listenFds === undefined) return null;
  if (!/^\d+$/.test(listenPid) || Number(listenPid) !== pid) return null;
  if (!/^\d{1,4}$/.test(listenFds)) throw activationError(`LISTEN_FDS='${listenFds}' is not a count of descriptors`);
  const count = Number(listenFds);
  if (count === 0) return null;
  let names: (string | null)[] = Array.from({ length: count }, () => null);
  if (listenNames !== undefined) {
    const given = listenNames.split(':');
    if (given.length !== count) throw activationError(`LISTEN_FDNAMES names ${given.length} socket(s) but LISTEN_FDS passes ${count}`);
    names = given;
  }
  return names.map((name, i) => {
    const fd = FIRST_LISTEN_FD + i;
    let address: SocketAddress;
    try {
      address = addressOf(fd);
    } catch (e) {
      throw activationError(`descriptor ${fd}${name ? ` (${name})` : ''} is not a usable socket: ${(e as Error).message}`);
    }
    return { fd, name, address };
  });
}

function describe(socket: InheritedSocket): string {
  const a = socket.address;
  const where =
    a.family === 'unix' ? `unix ${a.path}` : a.family === 'other' ? 'a non-IP, non-unix socket' : `${a.family} ${a.address}:${a.port}`;
  return `descriptor ${socket.fd}${socket.name ? ` '${socket.name}'` : ''} (${where})`;
}

/** Which of virtauthd's sockets an unnamed descriptor is, by its address. */
function roleByAddress(socket: InheritedSocket, cfg: DaemonConfig): SocketRole | null {
  const a = socket.address;
  if (a.family === 'unix') {
    if (a.path === join(cfg.unixSockDir, 'virtauth-sock')) return 'rw';
    if (a.path === join(cfg.unixSockDir, 'virtauth-sock-ro')) return 'ro';
    if (a.path === join(cfg.unixSockDir, 'virtauth-admin-sock')) return 'admin';
    return null;
  }
  if (a.family === 'inet' || a.family === 'inet6') {
    if (a.port === cfg.tcpPort) return 'tcp';
    if (a.port === cfg.tlsPort) return 'tls';
  }
  return null;
}

function roleByName(name: string): SocketRole | null {
  for (const [role, unit] of Object.entries(SOCKET_UNIT_NAMES)) if (unit === name) return role as SocketRole;
  return null;
}

export interface ActivationPlan {
  /**
   * Every listener the daemon serves: the passed sockets, plus unix sockets it creates itself,
   * given the auth type each auth_* name maps to (known once the providers are registered).
   */
  listeners(auth: Record<AuthSchemeKey, AuthType>): ListenerSpec[];
  /** Admin sockets passed by systemd, for an admin interface to claim. */
  admin: InheritedSocket[];
  /** Settings that do not apply in this mode, to tell the operator. */
  ignored: string[];
}

/**
 * Maps the inherited sockets onto virtauthd's listeners. Throws, naming the descriptor, for a
 * socket that is not virtauthd's (unknown name or address) or of the wrong kind.
 */
export function planActivatedListeners(sockets: readonly InheritedSocket[], cfg: DaemonConfig): ActivationPlan {
  const byRole = new Map<SocketRole, InheritedSocket[]>();
  for (const socket of sockets) {
    const role = socket.name !== null && socket.name !== 'unknown' ? roleByName(socket.name) : roleByAddress(socket, cfg);
    if (!role) {
      const expected =
        socket.name !== null && socket.name !== 'unknown'
          ? `expected one of ${Object.values(SOCKET_UNIT_NAMES).join(', ')}`
          : `expected ${cfg.unixSockDir}/virtauth-sock, -sock-ro or -admin-sock, or port ${cfg.tcpPort} or ${cfg.tlsPort}`;
      throw activationError(`${describe(socket)} is none of virtauthd's sockets (${expected})`);
    }
    const a = socket.address;
    if (!a.stream || !a.listening)
      throw activationError(`${describe(socket)} is not a listening stream socket (use ListenStream= in ${SOCKET_UNIT_NAMES[role]})`);
    const wantsUnix = role === 'rw' || role === 'ro' || role === 'admin';
    if (wantsUnix !== (a.family === 'unix'))
      throw activationError(`${describe(socket)} must be ${wantsUnix ? 'a unix' : 'a TCP'} socket for ${SOCKET_UNIT_NAMES[role]}`);
    byRole.set(role, [...(byRole.get(role) ?? []), socket]);
  }
  const listeners = (auth: Record<AuthSchemeKey, AuthType>): ListenerSpec[] => {
    const specs: ListenerSpec[] = [];
    const unixListener = (role: 'rw' | 'ro', file: string, scheme: ListenerSpec['auth'], perms: number) => {
      const passed = byRole.get(role);
      if (!passed) {
        specs.push({ kind: 'unix', path: join(cfg.unixSockDir, file), auth: scheme, readOnly: role === 'ro', perms });
        return;
      }
      for (const s of passed)
        specs.push({
          kind: 'unix',
          path: s.address.family === 'unix' ? s.address.path : '',
          auth: scheme,
          readOnly: role === 'ro',
          fd: s.fd,
        });
    };
    unixListener('rw', 'virtauth-sock', auth.authUnixRw, cfg.unixSockRwPerms);
    unixListener('ro', 'virtauth-sock-ro', auth.authUnixRo, cfg.unixSockRoPerms);
    for (const [role, kind, scheme] of [
      ['tcp', 'tcp', auth.authTcp],
      ['tls', 'tls', auth.authTls],
    ] as const) {
      for (const s of byRole.get(role) ?? []) {
        const a = s.address.family === 'inet' || s.address.family === 'inet6' ? s.address : null;
        specs.push({ kind, host: a?.address ?? '', port: a?.port ?? 0, auth: scheme, readOnly: false, fd: s.fd });
      }
    }
    return specs;
  };
  const ignored: string[] = [];
  if (cfg.listenTcp && !byRole.has('tcp')) ignored.push(`listen_tcp (no ${SOCKET_UNIT_NAMES.tcp} was passed)`);
  if (cfg.listenTls && !byRole.has('tls')) ignored.push(`listen_tls (no ${SOCKET_UNIT_NAMES.tls} was passed)`);
  return { listeners, admin: byRole.get('admin') ?? [], ignored };
}

/** Closes inherited descriptors nothing will serve. */
export function closeInheritedSockets(sockets: readonly InheritedSocket[]): void {
  for (const s of sockets) {
    try {
      closeSync(s.fd);
    } catch {
      // Already closed: nothing left to release.
    }
  }
}
