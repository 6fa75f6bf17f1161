// Peer credentials of a unix-socket client, read through the peercred addon (SO_PEERCRED and
// SO_PEERGROUPS). Node has no API for them; virtauthd needs them to authorize local clients.
// The same addon sends unix datagrams (sd_notify, the journal) and names an inherited socket's
// address (systemd socket activation), two more things Node's net module cannot do.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, ErrorDomain, VirError, type PeerCredentials } from '@virtauth/core';

interface PeercredAddon {
  supported: boolean;
  peerCredentials(fd: number): PeerCredentials;
  sendDatagram(path: string, data: Buffer): void;
  sendDatagramViaMemfd(path: string, data: Buffer): void;
  socketAddress(fd: number): SocketAddress;
}

/** The local address of a socket descriptor, and whether it is a listening stream socket. */
export type SocketAddress = { stream: boolean; listening: boolean } & (
  { family: 'unix'; path: string } | { family: 'inet' | 'inet6'; address: string; port: number } | { family: 'other' }
);

/** Where node-gyp puts the addon: `<package>/build/Release`, next to this file's `dist/`. */
export const ADDON_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'Release', 'peercred.node');

let loaded: { addon: PeercredAddon } | { problem: string } | undefined;

function loadAddon(): { addon: PeercredAddon } | { problem: string } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    loaded = { problem: `peer credentials of unix-socket clients (SO_PEERCRED) are only supported on Linux, not on ${process.platform}` };
  } else if (!existsSync(ADDON_PATH)) {
    loaded = {
      problem: `the peercred addon is not built (${ADDON_PATH} is missing): run \`npm run build\` at the repository root, which compiles it with node-gyp`,
    };
  } else {
    try {
      const addon = createRequire(import.meta.url)(ADDON_PATH) as PeercredAddon;
      loaded = addon.supported
        ? { addon }
        : { problem: `the peercred addon was built without SO_PEERCRED support for ${process.platform}` };
    } catch (e) {
      loaded = {
        problem: `the peercred addon at ${ADDON_PATH} cannot be loaded (${(e as Error).message}): rebuild it with \`npm run build\``,
      };
    }
  }
  return loaded;
}

/** Null when peer credentials can be read here, else why not (and what to do about it). */
export function peerCredentialsUnavailableReason(): string | null {
  const state = loadAddon();
  return 'problem' in state ? state.problem : null;
}

function unavailable(detail: string): VirError {
  return new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `Failed to get client socket identity: ${detail}` });
}

/**
 * The pid, uid, gid and supplementary groups of the process that connected `socket`, as the
 * kernel recorded them at connect time. `groups` is absent on kernels before 4.13.
 * Throws a VirError when the socket is not a connected unix socket or the platform has no
 * SO_PEERCRED.
 */
export function getPeerCredentials(socket: net.Socket): PeerCredentials {
  const state = loadAddon();
  if ('problem' in state) throw new VirError({ code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.RPC, detail: state.problem });
  // Node keeps the descriptor on the socket's libuv handle; it has none once closed.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw unavailable('the socket is closed or has no file descriptor');
  try {
    const { pid, uid, gid, groups } = state.addon.peerCredentials(fd);
    return groups ? { pid, uid, gid, groups } : { pid, uid, gid };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_NOT_UNIX_SOCKET') throw unavailable('peer credentials exist only for unix-domain sockets');
    throw unavailable((e as Error).message);
  }
}

function addonOrThrow(): PeercredAddon {
  const state = loadAddon();
  if ('problem' in state) throw new VirError({ code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.RPC, detail: state.problem });
  return state.addon;
}

/**
 * Sends one datagram to the unix socket at `path` (a leading '@' names an abstract socket).
 * Never blocks: a receiver whose queue is full makes it throw with code EAGAIN. A payload too
 * big for one datagram throws EMSGSIZE; `viaMemfd` then passes it as a sealed memfd instead,
 * which the journal accepts.
 */
export function sendUnixDatagram(path: string, data: Buffer, options: { viaMemfd?: boolean } = {}): void {
  const addon = addonOrThrow();
  if (options.viaMemfd) addon.sendDatagramViaMemfd(path, data);
  else addon.sendDatagram(path, data);
}

/** The local address of the socket behind `fd` (getsockname), for inherited descriptors. */
export function socketAddress(fd: number): SocketAddress {
  return addonOrThrow().socketAddress(fd);
}
