// What the pass-through tests share: real unix socket pairs whose far ends the test plays in raw
// packets, and builders of the packets a libvirt client or daemon sends.

import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import {
  KEEPALIVE_PROGRAM,
  KEEPALIVE_VERSION,
  MessageStatus,
  MessageType,
  PacketFramer,
  REMOTE_PROGRAM,
  XdrReader,
  encodePacket,
  errorPayload,
  readHeader,
  xdr,
  type ErrorPayload,
  type Header,
} from '@virtauth/core';
import { connectWithLargeReads } from '@virtauth/drivers';

export interface Packet {
  header: Header;
  raw: Buffer;
  /** The error of an error reply or stream packet. */
  error?: ErrorPayload;
}

/** One far end of a socket, driven by the test in raw packets. */
export class RawPeer {
  readonly packets: Packet[] = [];
  private readonly framer = new PacketFramer();
  private waiters: (() => void)[] = [];
  ended = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) =>
      this.framer.push(chunk, (p) => {
        const r = new XdrReader(p, 4);
        const header = readHeader(r);
        const packet: Packet = { header, raw: Buffer.from(p) };
        if (header.status === MessageStatus.ERROR && header.type !== MessageType.CALL) packet.error = errorPayload.decode(r);
        this.packets.push(packet);
        this.wake();
      }),
    );
    for (const event of ['end', 'close']) {
      socket.on(event, () => {
        this.ended = true;
        this.wake();
      });
    }
    socket.on('error', () => {});
  }

  /** Makes waiting `until` calls look at their condition again (something they wait on changed). */
  wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(...packets: Buffer[]): void {
    for (const p of packets) this.socket.write(p);
  }

  /**
   * Resolves once `condition` holds, checked on each packet, at the end, on wake(), and every
   * 50 ms besides (a timer that keeps the process waiting: with both connections closed nothing
   * else may).
   */
  async until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async count(n: number): Promise<Packet[]> {
    await this.until(() => this.packets.length >= n, `${n} packets (have ${this.packets.length})`);
    return this.packets;
  }
}

/**
 * A connected pair of unix sockets, closed at the test's end. `largeReads`: the near end is made
 * as the remote driver makes its upstream sockets.
 */
export async function socketPair(t: ExecutionContext, largeReads = false): Promise<[near: net.Socket, far: net.Socket]> {
  const dir = mkdtempSync(join(tmpdir(), 'vgt-'));
  const path = join(dir, 's');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const near = largeReads ? connectWithLargeReads({ path }) : net.connect(path);
  await once(near, 'connect');
  const far = await accepted;
  server.close();
  t.teardown(() => {
    near.destroy();
    far.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  return [near, far];
}

export const header = (proc: number, type: number, serial: number, status: number = MessageStatus.OK): Header => ({
  prog: REMOTE_PROGRAM,
  vers: 1,
  proc,
  type,
  serial,
  status,
});
export const call = (proc: number, serial: number, payload = Buffer.alloc(8, 3)) =>
  encodePacket(header(proc, MessageType.CALL, serial), xdr.fixedOpaque(payload.length), payload);
export const reply = (proc: number, serial: number, payload = Buffer.alloc(4, 9)) =>
  encodePacket(header(proc, MessageType.REPLY, serial), xdr.fixedOpaque(payload.length), payload);
export const event = (proc: number, payload: Buffer) =>
  encodePacket(header(proc, MessageType.MESSAGE, 0), xdr.fixedOpaque(payload.length), payload);
export const streamData = (proc: number, serial: number, data: Buffer, status: number = MessageStatus.CONTINUE) =>
  encodePacket(header(proc, MessageType.STREAM, serial, status), xdr.fixedOpaque(data.length), data, data.length);
export const streamEnd = (proc: number, serial: number) =>
  encodePacket(header(proc, MessageType.STREAM, serial, MessageStatus.OK), xdr.xvoid, undefined);
export const hole = (proc: number, serial: number) =>
  encodePacket(header(proc, MessageType.STREAM_HOLE, serial, MessageStatus.CONTINUE), xdr.struct({ length: xdr.hyper, flags: xdr.uint }), {
    length: 1n << 20n,
    flags: 0,
  });
export const keepalive = (proc: number) =>
  encodePacket(
    { prog: KEEPALIVE_PROGRAM, vers: KEEPALIVE_VERSION, proc, type: MessageType.MESSAGE, serial: 0, status: 0 },
    xdr.xvoid,
    undefined,
  );

/** A libvirt error payload with the fields that matter here. */
export const errorBody = (code: number, message: string): ErrorPayload => ({
  code,
  domain: 7,
  message,
  level: 2,
  dom: null,
  str1: null,
  str2: null,
  str3: null,
  int1: -1,
  int2: -1,
  net: null,
});

/** The client calls a stream procedure and the upstream accepts it: the stream is open. */
export async function openStream(r: { client: RawPeer; upstream: RawPeer }, proc: number, serial: number): Promise<void> {
  const [upstreamBefore, clientBefore] = [r.upstream.packets.length, r.client.packets.length];
  r.client.send(call(proc, serial));
  await r.upstream.count(upstreamBefore + 1);
  r.upstream.send(reply(proc, serial));
  await r.client.count(clientBefore + 1);
}

export const SCREENSHOT = 211;
export const VOL_UPLOAD = 208;
export const VOL_DOWNLOAD = 209;
export const GET_HOSTNAME = 59;
export const DOMAIN_EVENT_LIFECYCLE = 107;
