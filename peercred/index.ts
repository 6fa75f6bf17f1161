// Peer credentials of a unix-socket client, read through the peercred addon (SO_PEERCRED and
// SO_PEERGROUPS). Node has no API for them; virtauthd needs them to authorize local clients.
// The same addon sends unix datagrams (sd_notify, the journal) and names an inherited socket's
// address (systemd socket activation), two more things Node's net module cannot do. And it
// copies the gateway's stream data between two sockets on a thread of its own (streamPump).

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ErrorCode,
  ErrorDomain,
  VirError,
  type PeerCredentials,
  type ReservedStreamPump,
  type StreamPump,
  type StreamPumpJob,
} from '@virtauth/core';

interface PeercredAddon {
  supported: boolean;
  peerCredentials(fd: number): PeerCredentials;
  sendDatagram(path: string, data: Buffer): void;
  sendDatagramViaMemfd(path: string, data: Buffer): void;
  socketAddress(fd: number): SocketAddress;
  startStreamPump(
    options: NativePumpOptions,
    done: (error: (Error & { code: string }) | null, leftover: Buffer, forwarded: number) => void,
  ): PumpHandle;
  stopStreamPump(handle: PumpHandle): void;
  cancelStreamPump(handle: PumpHandle): void;
}

/** The job, with the sockets' descriptors in place of the sockets. */
type NativePumpOptions = Omit<StreamPumpJob, 'from' | 'to'> & { from: number; to: number; runLimitMs: number };

/** The addon's handle of a running pump; valid until its callback has run. */
declare const pumpHandle: unique symbol;
type PumpHandle = { readonly [pumpHandle]: true };

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
  const fd = descriptorOf(socket);
  if (fd === undefined) throw unavailable('the socket is closed or has no file descriptor');
  try {
    const { pid, uid, gid, groups } = state.addon.peerCredentials(fd);
    return groups ? { pid, uid, gid, groups } : { pid, uid, gid };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_NOT_UNIX_SOCKET') throw unavailable('peer credentials exist only for unix-domain sockets');
    throw unavailable((e as Error).message);
  }
}

/** Node keeps a socket's descriptor on its libuv handle; it has none once closed. */
function descriptorOf(socket: Duplex): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
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

/**
 * How long a pump runs before it stops at a packet boundary anyway, so the connection it reads
 * is seen by JavaScript again (keepalive, its idle timer) even while a download never pauses.
 */
export const STREAM_PUMP_RUN_LIMIT_MS = 1000;

/**
 * Pumps at work at once, each a thread: beyond this, downloads go through node as before, so a
 * crowd of clients cannot make virtauthd start a thread each.
 */
export const STREAM_PUMPS_MAX = 64;
let pumpsRunning = 0;

/** Pumps at work now (for tests and diagnostics). */
export function streamPumpsRunning(): number {
  return pumpsRunning;
}

/** A plain (not TLS) socket that is open: its descriptor carries the protocol's bytes as they are. */
function plainDescriptor(stream: Duplex): number | undefined {
  if (!(stream instanceof net.Socket) || stream instanceof TLSSocket || stream.destroyed) return undefined;
  return descriptorOf(stream);
}

/**
 * Copies libvirt stream data packets between two sockets on a thread of its own: the rest of the
 * packet in progress, then every following data packet (STREAM, CONTINUE) of the same call,
 * stopping at the first packet that is anything else, which is handed back unread. Used by the
 * gateway for downloads, where it saves node's reads, buffers and writes of every 256 KiB packet.
 */
export const streamPump: StreamPump = {
  reserve(from: Duplex, to: Duplex): ReservedStreamPump | undefined {
    const state = loadAddon();
    if ('problem' in state || pumpsRunning >= STREAM_PUMPS_MAX) return undefined;
    if (plainDescriptor(from) === undefined || plainDescriptor(to) === undefined) return undefined;
    pumpsRunning++;
    return reservedPump(state.addon);
  },
};

function reservedPump(addon: PeercredAddon): ReservedStreamPump {
  let reserved = true;
  const giveBack = (): void => {
    if (!reserved) return;
    reserved = false;
    pumpsRunning--;
  };
  return {
    release: giveBack,
    start(job, done) {
      if (!reserved) throw new Error('this stream pump reservation was used already');
      const from = plainDescriptor(job.from);
      const to = plainDescriptor(job.to);
      if (from === undefined || to === undefined) {
        giveBack();
        throw new Error('the stream pump needs two open plain sockets');
      }
      let finished = false;
      let handle: PumpHandle;
      try {
        handle = addon.startStreamPump(
          {
            from,
            to,
            prog: job.prog,
            vers: job.vers,
            proc: job.proc,
            serial: job.serial,
            remaining: job.remaining,
            maxPacket: job.maxPacket,
            runLimitMs: STREAM_PUMP_RUN_LIMIT_MS,
          },
          (error, leftover) => {
            finished = true;
            giveBack();
            done(error, leftover);
          },
        );
      } catch (e) {
        giveBack();
        throw e;
      }
      return {
        stop: () => {
          if (!finished) addon.stopStreamPump(handle);
        },
        cancel: () => {
          if (!finished) addon.cancelStreamPump(handle);
        },
      };
    },
  };
}
