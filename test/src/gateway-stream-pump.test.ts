// The gateway's pass-through with the native stream pump, over real unix sockets whose far ends
// the test plays in raw packets: downloads arrive byte for byte with everything else the upstream
// sends in its order, the client's own traffic is answered while the pump runs, and either side
// going away, or a hostile length word inside the download, closes both connections with no pump
// left behind. (The pass-through lives in drivers and the pump in peercred, which drivers may not
// depend on: they meet here, as they do in the daemon.)
// Tests run one at a time: the number of pumps at work is process-wide.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { KEEPALIVE_PROGRAM, KeepaliveProc, MessageStatus, MessageType, PACKET_MAX, RpcConnection, type StreamPump } from '@virtauth/core';
import { PassThrough } from '@virtauth/drivers';
import { streamPump, streamPumpsRunning } from '@virtauth/peercred';
import {
  DOMAIN_EVENT_LIFECYCLE,
  GET_HOSTNAME,
  RawPeer,
  type Packet,
  VOL_DOWNLOAD,
  call,
  event,
  hole,
  keepalive,
  openStream,
  reply,
  socketPair,
  streamData,
  streamEnd,
} from './gateway-rig.js';

interface Rig {
  client: RawPeer;
  upstream: RawPeer;
  clientRpc: RpcConnection;
  upstreamRpc: RpcConnection;
  warnings: { event?: string; code?: string }[];
  /** Pumps started by the pass-through. */
  pumpsStarted(): number;
  /** Pumps the pass-through asked to stop at the next packet boundary. */
  pumpsStopped(): number;
}

/** A pass-through between a plain client socket and an upstream made as the remote driver makes it. */
async function rig(t: ExecutionContext): Promise<Rig> {
  const [clientFar, clientNear] = await socketPair(t);
  const [upstreamNear, upstreamFar] = await socketPair(t, true);
  const clientRpc = new RpcConnection(clientNear);
  const upstreamRpc = new RpcConnection(upstreamNear);
  const warnings: { event?: string; code?: string }[] = [];
  const log = { warn: (o: object) => warnings.push(o), debug: () => {} };
  let started = 0;
  let stopped = 0;
  const countingPump: StreamPump = {
    reserve(from: Duplex, to: Duplex) {
      const reserved = streamPump.reserve(from, to);
      if (!reserved) return undefined;
      return {
        release: () => reserved.release(),
        start: (job, done) => {
          started++;
          const running = reserved.start(job, (error, leftover) => {
            done(error, leftover);
            wakePeers();
          });
          wakePeers();
          return {
            stop: () => {
              stopped++;
              running.stop();
            },
            cancel: () => running.cancel(),
          };
        },
      };
    },
  };
  new PassThrough({ client: clientRpc, upstream: upstreamRpc, log, streamPump: countingPump });
  const client = new RawPeer(clientFar);
  const upstream = new RawPeer(upstreamFar);
  // Waits on the pumps' count are told when one starts or ends.
  const wakePeers = () => {
    client.wake();
    upstream.wake();
  };
  t.teardown(() => {
    clientRpc.close(null);
    upstreamRpc.close(null);
  });
  return {
    client,
    upstream,
    clientRpc,
    upstreamRpc,
    warnings,
    pumpsStarted: () => started,
    pumpsStopped: () => stopped,
  };
}

const CHUNK = 256 * 1024;

/** Data packet `i` of a download: its bytes differ from every other's. */
const chunk = (serial: number, i: number) => {
  const data = Buffer.alloc(CHUNK, i & 0xff);
  data.writeUInt32BE(i, 0);
  data.writeUInt32BE(i, CHUNK - 4);
  return streamData(VOL_DOWNLOAD, serial, data);
};

/** The client calls vol-download and the upstream accepts: the stream is open. */
const openDownload = (r: Rig, serial: number) => openStream(r, VOL_DOWNLOAD, serial);

/** Waits until `socket` can take more, or is closed (false). */
function writable(socket: net.Socket): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const settle = (open: boolean) => () => {
      socket.off('drain', onDrain).off('close', onClose);
      resolve(open);
    };
    const onDrain = settle(true);
    const onClose = settle(false);
    socket.on('drain', onDrain).on('close', onClose);
  });
}

/** Writes `packets` to the upstream's far end as fast as it is read, until it closes. */
async function writeAll(socket: net.Socket, packets: Iterable<Buffer>): Promise<void> {
  for (const p of packets) if (!socket.write(p) && !(await writable(socket))) return;
}

test.serial(
  'a long download arrives byte for byte, with replies, events and holes in their places; an upstream PING is answered there',
  async (t) => {
    const r = await rig(t);
    r.client.send(call(GET_HOSTNAME, 20), call(GET_HOSTNAME, 21));
    await r.upstream.count(2);
    await openDownload(r, 7);
    const sent: Buffer[] = [];
    for (let i = 0; i < 120; i++) {
      sent.push(chunk(7, i));
      if (i === 10) sent.push(reply(GET_HOSTNAME, 20));
      if (i === 30) sent.push(event(DOMAIN_EVENT_LIFECYCLE, Buffer.alloc(24, 1)));
      if (i === 50) sent.push(keepalive(KeepaliveProc.PING));
      if (i === 70) sent.push(hole(VOL_DOWNLOAD, 7));
      if (i === 90) sent.push(reply(GET_HOSTNAME, 21), streamData(VOL_DOWNLOAD, 7, Buffer.alloc(100, 5)));
    }
    sent.push(streamEnd(VOL_DOWNLOAD, 7));
    await writeAll(r.upstream.socket, sent);
    const expected = sent.filter((p) => p.readUInt32BE(4) !== KEEPALIVE_PROGRAM);
    const got = await r.client.count(1 + expected.length);
    t.is(got.length, 1 + expected.length, 'nothing more arrived');
    const mismatch = expected.findIndex((p, i) => !got[i + 1]!.raw.equals(p));
    t.is(mismatch, -1, `packet ${mismatch} arrived changed or out of order`);
    await r.upstream.until(() => r.upstream.packets.some((p) => p.header.prog === KEEPALIVE_PROGRAM), 'the PONG');
    t.is(r.upstream.packets.at(-1)!.header.proc, KeepaliveProc.PONG);
    t.true(r.pumpsStarted() >= 5, `the pump carried the data (${r.pumpsStarted()} pumps started)`);
    await r.upstream.until(() => streamPumpsRunning() === 0, 'no pump at work');
    t.false(r.clientRpc.closed);
  },
);

test.serial("the client's calls and PINGs during a download are answered while it runs: the pump yields", async (t) => {
  const r = await rig(t);
  await openDownload(r, 7);
  const limit = 400;
  let written = 0;
  let stop = false;
  const pendingReplies: Buffer[] = [];
  const writer = (async () => {
    while (!stop && written < limit) {
      const next = [...pendingReplies.splice(0), chunk(7, written++)];
      if (!r.upstream.socket.write(Buffer.concat(next)) && !(await writable(r.upstream.socket))) return;
    }
  })();
  await r.client.until(() => streamPumpsRunning() > 0 && r.client.packets.length > 4, 'the download to be under way');

  // A PING's PONG waits behind the packet the pump is in; the pump is asked to stop for it.
  r.client.send(keepalive(KeepaliveProc.PING));
  await r.client.until(() => r.client.packets.some((p) => p.header.prog === KEEPALIVE_PROGRAM), 'the PONG');
  t.true(written < limit, 'the PONG arrived while the download was still going');
  t.true(r.pumpsStopped() >= 1, 'the pump was asked to stop for it');

  // A call goes to the upstream at once; its reply stops the pump on the way back.
  r.client.send(call(GET_HOSTNAME, 30));
  const callsBefore = r.upstream.packets.length;
  await r.upstream.count(callsBefore + 1);
  t.is(r.upstream.packets.at(-1)!.header.serial, 30);
  pendingReplies.push(reply(GET_HOSTNAME, 30));
  await r.client.until(() => r.client.packets.some((p) => p.header.serial === 30), 'the reply');
  t.true(written < limit, 'the reply arrived while the download was still going');
  stop = true;
  await writer;
  r.upstream.send(streamEnd(VOL_DOWNLOAD, 7));
  const isEnd = (p: Packet | undefined) => p?.header.type === MessageType.STREAM && p.header.status === MessageStatus.OK;
  await r.client.until(() => isEnd(r.client.packets.at(-1)), 'the end of the stream');
  const data = r.client.packets.filter((p) => p.header.type === MessageType.STREAM && p.header.status === MessageStatus.CONTINUE);
  t.is(data.length, written);
  t.true(
    data.every((p, i) => p.raw.equals(chunk(7, i))),
    'every data packet arrived whole and in order',
  );
  t.true(r.pumpsStarted() > 1);
});

test.serial('the upstream dying inside a packet the pump copies closes the client and logs the failure', async (t) => {
  const r = await rig(t);
  await openDownload(r, 2);
  const before = r.client.socket.bytesRead;
  const cut = Buffer.concat([chunk(2, 0), chunk(2, 1), chunk(2, 2).subarray(0, 100_000)]);
  r.upstream.socket.write(cut);
  await r.client.until(() => r.client.socket.bytesRead >= before + cut.length, 'the bytes before the cut');
  t.is(streamPumpsRunning(), 1, 'the pump is inside the packet');
  r.upstream.socket.destroy();
  await r.client.until(() => r.client.ended, 'the client to be closed');
  t.is(r.client.socket.bytesRead, before + cut.length, 'not one byte more after the cut');
  t.true(r.clientRpc.closed);
  t.true(r.upstreamRpc.closed);
  const failure = r.warnings.find((w) => w.event === 'gateway.stream.pump.failed');
  t.is(failure?.code, 'EPROTO');
  t.is(streamPumpsRunning(), 0);
});

for (const reading of [false, true]) {
  const client = reading ? 'a client that reads' : 'a client that has stopped reading';
  test.serial(`${client} dying during a download closes the upstream and ends the pump, with no warning`, async (t) => {
    const r = await rig(t);
    await openDownload(r, 3);
    // Not reading, the pump ends up waiting to write to the client; reading, it is mid-copy.
    if (!reading) r.client.socket.pause();
    const writing = writeAll(
      r.upstream.socket,
      Array.from({ length: 64 }, (_, i) => chunk(3, i)),
    );
    await r.upstream.until(() => streamPumpsRunning() > 0, 'the pump to start');
    r.client.socket.destroy();
    await r.upstream.until(() => r.upstream.ended, 'the upstream to be closed');
    t.true(r.upstreamRpc.closed);
    t.true(r.clientRpc.closed);
    await r.upstream.until(() => streamPumpsRunning() === 0, 'the pump to end');
    r.upstream.socket.destroy();
    await writing;
    t.false(
      r.warnings.some((w) => w.event === 'gateway.stream.pump.failed'),
      'a client leaving is no failure of the gateway',
    );
  });
}

test.serial('an oversized length word in the middle of a download closes both sides; nothing of it reaches the client', async (t) => {
  const r = await rig(t);
  await openDownload(r, 4);
  const oversized = streamData(VOL_DOWNLOAD, 4, Buffer.alloc(64, 6));
  oversized.writeUInt32BE(PACKET_MAX + 4, 0);
  const good = [chunk(4, 0), chunk(4, 1), chunk(4, 2)];
  await writeAll(r.upstream.socket, [...good, oversized, chunk(4, 3)]);
  await r.client.until(() => r.client.ended, 'the client to be closed');
  await r.upstream.until(() => r.upstream.ended, 'the upstream to be closed');
  const data = r.client.packets.filter((p) => p.header.type === MessageType.STREAM && p.header.status === MessageStatus.CONTINUE);
  t.deepEqual(
    data.map((p) => p.raw),
    good,
  );
  t.false(
    r.client.packets.some((p) => p.raw.readUInt32BE(0) === PACKET_MAX + 4),
    'the oversized header was not passed on',
  );
  t.true(r.pumpsStarted() >= 1);
  t.is(streamPumpsRunning(), 0);
});
