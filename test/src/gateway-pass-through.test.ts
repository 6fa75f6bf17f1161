// The pass-through between a client connection and its upstream, over real sockets with both far
// ends played by the test in raw packets: what is forwarded byte for byte, what is refused or
// dropped (unknown procedures, stray replies and stream data, oversized packets, descriptors),
// stream endings, backpressure, the access-check hook, and either side going away.

import test, { type ExecutionContext } from 'ava';
import {
  ErrorCode,
  ErrorDomain,
  KEEPALIVE_PROGRAM,
  KEEPALIVE_VERSION,
  KeepaliveProc,
  MessageStatus,
  MessageType,
  PACKET_MAX,
  REMOTE_PROGRAM,
  RpcConnection,
  VirError,
  encodePacket,
  errorPayload,
  xdr,
} from '@virtauth/core';
import { PassThrough, type CallCheck, type EventCheck, type ReplyCheck } from '@virtauth/drivers';
import {
  GET_HOSTNAME,
  RawPeer,
  SCREENSHOT,
  VOL_DOWNLOAD,
  VOL_UPLOAD,
  call,
  errorBody,
  header,
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
  passThrough: PassThrough;
  warnings: object[];
}

async function rig(
  t: ExecutionContext,
  checkCall?: CallCheck,
  checks: { checkReply?: ReplyCheck; checkEvent?: EventCheck } = {},
): Promise<Rig> {
  const [clientFar, clientNear] = await socketPair(t);
  const [upstreamNear, upstreamFar] = await socketPair(t);
  const clientRpc = new RpcConnection(clientNear);
  const upstreamRpc = new RpcConnection(upstreamNear);
  const warnings: object[] = [];
  const log = { warn: (o: object) => warnings.push(o), debug: (o: object) => warnings.push(o) };
  const passThrough = new PassThrough({ client: clientRpc, upstream: upstreamRpc, log, ...(checkCall ? { checkCall } : {}), ...checks });
  return { client: new RawPeer(clientFar), upstream: new RawPeer(upstreamFar), clientRpc, upstreamRpc, passThrough, warnings };
}

test('calls and replies pass byte for byte, many in flight, replies in any order', async (t) => {
  const r = await rig(t);
  const calls = Array.from({ length: 64 }, (_, i) => call(GET_HOSTNAME, i + 10, Buffer.alloc(4 * (i + 1), i)));
  r.client.send(...calls);
  const upstreamSaw = await r.upstream.count(64);
  t.deepEqual(
    upstreamSaw.map((p) => p.raw),
    calls,
  );
  t.is(r.passThrough.inFlight.calls, 64);
  const replies = calls.map((_, i) => reply(GET_HOSTNAME, i + 10, Buffer.alloc(8, i))).reverse();
  r.upstream.send(...replies);
  t.deepEqual(
    (await r.client.count(64)).map((p) => p.raw),
    replies,
  );
  t.is(r.passThrough.inFlight.calls, 0);
});

test("the upstream's error replies and events reach the client unchanged; a reply matching no call is dropped", async (t) => {
  const r = await rig(t);
  r.client.send(call(GET_HOSTNAME, 1));
  await r.upstream.count(1);
  const errorReply = encodePacket(header(GET_HOSTNAME, MessageType.REPLY, 1, MessageStatus.ERROR), errorPayload, {
    code: 42,
    domain: 12,
    message: 'Domain not found: x',
    level: 2,
    dom: null,
    str1: 'Domain not found: %s',
    str2: 'x',
    str3: null,
    int1: -1,
    int2: -1,
    net: null,
  });
  // A stray reply (serial 99) and one whose procedure is not the call's are dropped; the event
  // (a MESSAGE with serial 1, as libvirt 9.0 sends them) passes.
  const event = encodePacket(header(318, MessageType.MESSAGE, 1), xdr.fixedOpaque(12), Buffer.alloc(12, 5));
  r.upstream.send(reply(GET_HOSTNAME, 99), reply(60, 1), event, errorReply);
  const got = await r.client.count(2);
  t.deepEqual(
    got.map((p) => p.raw),
    [event, errorReply],
  );
  t.true(r.warnings.some((w) => (w as { event?: string }).event === 'gateway.reply.stray'));
});

test('unknown procedures are refused with libvirt\'s "unknown procedure" and never reach the upstream; so are descriptors and a reused serial', async (t) => {
  const r = await rig(t);
  r.client.send(call(444, 1), call(0, 2), call(-5, 3));
  r.client.send(encodePacket({ ...header(GET_HOSTNAME, MessageType.CALL_WITH_FDS, 4) }, xdr.uint, 0));
  r.client.send(call(GET_HOSTNAME, 5), call(GET_HOSTNAME, 5));
  const got = await r.client.count(5);
  t.deepEqual(
    got.slice(0, 3).map((p) => [p.header.serial, p.header.type, p.error?.code, p.error?.domain, p.error?.message]),
    [
      [1, MessageType.REPLY, ErrorCode.RPC, ErrorDomain.RPC, 'unknown procedure: 444'],
      [2, MessageType.REPLY, ErrorCode.RPC, ErrorDomain.RPC, 'unknown procedure: 0'],
      [3, MessageType.REPLY, ErrorCode.RPC, ErrorDomain.RPC, 'unknown procedure: -5'],
    ],
  );
  t.is(got[3]!.error?.code, ErrorCode.NO_SUPPORT);
  t.is(got[4]!.header.serial, 5);
  t.regex(got[4]!.error?.message ?? '', /serial 5 is already waiting/);
  const upstream = await r.upstream.count(1);
  t.deepEqual(
    upstream.map((p) => p.header.serial),
    [5],
    'only the first call with serial 5 went on',
  );
});

test("a download stream: data, holes and end of data pass; the client's finish and its confirmation end it; later stream data is dropped both ways", async (t) => {
  const r = await rig(t);
  r.client.send(call(VOL_DOWNLOAD, 7));
  await r.upstream.count(1);
  const data = [
    streamData(VOL_DOWNLOAD, 7, Buffer.alloc(262144, 1)),
    hole(VOL_DOWNLOAD, 7),
    streamData(VOL_DOWNLOAD, 7, Buffer.alloc(100, 2)),
    streamEnd(VOL_DOWNLOAD, 7),
  ];
  r.upstream.send(reply(VOL_DOWNLOAD, 7), ...data);
  t.deepEqual(
    (await r.client.count(5)).slice(1).map((p) => p.raw),
    data,
  );
  t.is(r.passThrough.inFlight.streams, 1, "end of data leaves the stream open for the client's finish");
  r.client.send(streamEnd(VOL_DOWNLOAD, 7));
  await r.upstream.count(2);
  r.upstream.send(streamEnd(VOL_DOWNLOAD, 7));
  await r.client.count(6);
  t.is(r.passThrough.inFlight.streams, 0);
  // Both sides now send stream data for the ended stream, then a call round-trips.
  r.upstream.send(streamData(VOL_DOWNLOAD, 7, Buffer.alloc(16)));
  r.client.send(streamData(VOL_DOWNLOAD, 7, Buffer.alloc(16)), call(GET_HOSTNAME, 8));
  const upstream = await r.upstream.count(3);
  t.is(upstream[2]!.header.proc, GET_HOSTNAME);
  r.upstream.send(reply(GET_HOSTNAME, 8));
  const client = await r.client.count(7);
  t.is(client[6]!.header.proc, GET_HOSTNAME, 'the stray stream packet never reached the client');
});

test("an upload stream ends with the upstream's answer to the client's abort; a failed stream call opens none", async (t) => {
  const r = await rig(t);
  await openStream(r, VOL_UPLOAD, 3);
  const abort = encodePacket(header(VOL_UPLOAD, MessageType.STREAM, 3, MessageStatus.ERROR), errorPayload, errorBody(39, 'stream aborted'));
  r.client.send(streamData(VOL_UPLOAD, 3, Buffer.alloc(1000, 4)), hole(VOL_UPLOAD, 3), abort);
  t.deepEqual(
    (await r.upstream.count(4)).slice(1).map((p) => p.header.type),
    [MessageType.STREAM, MessageType.STREAM_HOLE, MessageType.STREAM],
  );
  r.upstream.send(abort);
  await r.client.count(2);
  t.is(r.passThrough.inFlight.streams, 0);

  r.client.send(call(SCREENSHOT, 4));
  await r.upstream.count(5);
  r.upstream.send(encodePacket(header(SCREENSHOT, MessageType.REPLY, 4, MessageStatus.ERROR), errorPayload, errorBody(3, 'unsupported')));
  await r.client.count(3);
  t.deepEqual(r.passThrough.inFlight, { calls: 0, streams: 0 });
});

const ping = () => keepalive(KeepaliveProc.PING);

/** Waits until the far end of `peer` has read at least `bytes` bytes, whole packets or not. */
const bytesArrived = (peer: RawPeer, bytes: number) => peer.until(() => peer.socket.bytesRead >= bytes, `${bytes} bytes`);

test('a large stream packet passes as its bytes arrive; what virtauthd writes to the client meanwhile waits for its end', async (t) => {
  const r = await rig(t);
  await openStream(r, VOL_DOWNLOAD, 7);
  const before = r.client.socket.bytesRead;
  const packet = streamData(VOL_DOWNLOAD, 7, Buffer.alloc(262144, 1).fill(2, 100_000));
  r.upstream.socket.write(packet.subarray(0, 100_000));
  // Passed on before the rest exists: the gateway holds no whole packet back.
  await bytesArrived(r.client, before + 100_000);
  t.is(r.client.packets.length, 1, 'only the reply is whole so far');
  // An answer of virtauthd's own (a refused call) and a PONG, both while the packet is half written.
  r.client.send(call(444, 8), ping());
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(r.client.socket.bytesRead, before + 100_000, 'nothing was written into the middle of the packet');
  r.upstream.socket.write(packet.subarray(100_000));
  const got = await r.client.count(4);
  t.true(got[1]!.raw.equals(packet), 'the packet arrives byte for byte');
  t.deepEqual(
    got.slice(2).map((p) => [p.header.prog, p.header.serial, p.error?.message]),
    [
      [REMOTE_PROGRAM, 8, 'unknown procedure: 444'],
      [KEEPALIVE_PROGRAM, 0, undefined],
    ],
  );
});

test('the upstream going away in the middle of a stream packet closes the client with not one byte more', async (t) => {
  const r = await rig(t);
  r.client.send(call(GET_HOSTNAME, 1));
  await openStream(r, VOL_DOWNLOAD, 2);
  const before = r.client.socket.bytesRead;
  r.upstream.socket.write(streamData(VOL_DOWNLOAD, 2, Buffer.alloc(262144, 3)).subarray(0, 70_000));
  await bytesArrived(r.client, before + 70_000);
  r.upstream.socket.destroy();
  await r.client.until(() => r.client.ended, 'the client to be closed');
  // The end-of-file answers to the waiting call and the stream would land inside the cut packet.
  t.is(r.client.socket.bytesRead, before + 70_000);
  t.true(r.clientRpc.closed);
});

test("large packets that are no open stream's data are assembled and judged whole: stray data dropped, a large call forwarded", async (t) => {
  const r = await rig(t);
  await openStream(r, VOL_UPLOAD, 1);
  const stray = streamData(VOL_UPLOAD, 99, Buffer.alloc(200_000, 4));
  const largeCall = call(GET_HOSTNAME, 2, Buffer.alloc(150_000, 5));
  // Its end (status OK) is not data either: it ends the stream, so it is judged whole too.
  const bigEnd = encodePacket(header(VOL_UPLOAD, MessageType.STREAM, 1, MessageStatus.OK), xdr.fixedOpaque(100_000), Buffer.alloc(100_000));
  for (const packet of [stray, largeCall, bigEnd]) {
    r.client.socket.write(packet.subarray(0, 65_000));
    await new Promise((resolve) => setTimeout(resolve, 20));
    r.client.socket.write(packet.subarray(65_000));
  }
  const upstream = await r.upstream.count(3);
  t.true(upstream[1]!.raw.equals(largeCall));
  t.true(upstream[2]!.raw.equals(bigEnd));
  t.true(r.warnings.some((w) => (w as { event?: string; serial?: number }).event === 'gateway.stream.stray'));
});

test('stream data for a serial with no stream is dropped, and the connection goes on', async (t) => {
  const r = await rig(t);
  r.client.send(streamData(VOL_UPLOAD, 77, Buffer.alloc(64)), hole(VOL_UPLOAD, 78), call(GET_HOSTNAME, 1));
  const upstream = await r.upstream.count(1);
  t.deepEqual(
    upstream.map((p) => [p.header.type, p.header.serial]),
    [[MessageType.CALL, 1]],
  );
  t.deepEqual(
    r.warnings.filter((w) => (w as { event?: string }).event === 'gateway.stream.stray').map((w) => (w as { serial: number }).serial),
    [77, 78],
  );
  t.false(r.clientRpc.closed);
});

test('an oversized stream chunk closes the client cleanly, and its upstream with it', async (t) => {
  const r = await rig(t);
  await openStream(r, VOL_UPLOAD, 1);
  // A length word past libvirt's 32 MiB limit is refused before anything is buffered for it.
  const head = encodePacket(header(VOL_UPLOAD, MessageType.STREAM, 1, MessageStatus.CONTINUE), xdr.xvoid, undefined);
  head.writeUInt32BE(PACKET_MAX + 4, 0);
  r.client.send(head);
  await r.client.until(() => r.client.ended, 'the client to be closed');
  await r.upstream.until(() => r.upstream.ended, 'the upstream to be closed');
  t.is(r.upstream.packets.length, 1, 'nothing of the oversized packet went on');
});

test("the upstream going away answers waiting calls and open streams with libvirt's end-of-file error, then closes the client", async (t) => {
  const r = await rig(t);
  r.client.send(call(GET_HOSTNAME, 1), call(GET_HOSTNAME, 2), call(SCREENSHOT, 3));
  await r.upstream.count(3);
  r.upstream.send(reply(SCREENSHOT, 3));
  await r.client.count(1);
  r.upstream.socket.destroy();
  const got = await r.client.count(4);
  await r.client.until(() => r.client.ended, 'the client to be closed');
  const eof = [ErrorCode.SYSTEM_ERROR, ErrorDomain.RPC, 'End of file while reading data: Input/output error'];
  t.deepEqual(
    got
      .slice(1)
      .map((p) => [p.header.type, p.header.serial, p.header.proc, p.error?.code, p.error?.domain, p.error?.message])
      .sort((a, b) => (a[1] as number) - (b[1] as number)),
    [
      [MessageType.REPLY, 1, GET_HOSTNAME, ...eof],
      [MessageType.REPLY, 2, GET_HOSTNAME, ...eof],
      [MessageType.STREAM, 3, SCREENSHOT, ...eof],
    ],
  );
});

test('the client going away closes the upstream connection', async (t) => {
  const r = await rig(t);
  r.client.send(call(GET_HOSTNAME, 1));
  await r.upstream.count(1);
  r.client.socket.destroy();
  await r.upstream.until(() => r.upstream.ended, 'the upstream to be closed');
  t.true(r.upstreamRpc.closed);
});

test('keepalive stays on each link: a client PING is answered here and never forwarded', async (t) => {
  const r = await rig(t);
  r.client.send(
    encodePacket(
      { prog: KEEPALIVE_PROGRAM, vers: KEEPALIVE_VERSION, proc: KeepaliveProc.PING, type: MessageType.MESSAGE, serial: 0, status: 0 },
      xdr.xvoid,
      undefined,
    ),
    call(GET_HOSTNAME, 1),
  );
  const got = await r.client.count(1);
  t.deepEqual([got[0]!.header.prog, got[0]!.header.proc], [KEEPALIVE_PROGRAM, KeepaliveProc.PONG]);
  const upstream = await r.upstream.count(1);
  t.deepEqual(
    upstream.map((p) => p.header.prog),
    [REMOTE_PROGRAM],
  );
});

test('a connection whose remote program is passed through makes no call of its own on it', async (t) => {
  const r = await rig(t);
  const error = await t.throwsAsync(r.upstreamRpc.call(REMOTE_PROGRAM, 1, GET_HOSTNAME, xdr.xvoid, undefined, xdr.xvoid));
  t.regex(error?.message ?? '', /passed through/);
});

test("the access-check hook sees the call's arguments; a refusal answers the client; an asynchronous check keeps the order", async (t) => {
  const seen: [number, number, string][] = [];
  const r = await rig(t, (c) => {
    seen.push([c.proc, c.serial, c.args.toString('hex')]);
    if (c.proc === 12) throw new VirError({ code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, detail: 'no' });
    if (c.proc === 13) return new Promise((resolve) => setTimeout(resolve, 30));
    return undefined;
  });
  r.client.send(call(12, 1, Buffer.from('0000000a', 'hex')), call(13, 2), call(GET_HOSTNAME, 3));
  const upstream = await r.upstream.count(2);
  t.deepEqual(
    upstream.map((p) => p.header.serial),
    [2, 3],
    'the slow check held the next call back',
  );
  const refused = await r.client.count(1);
  t.deepEqual(
    [refused[0]!.header.serial, refused[0]!.error?.code, refused[0]!.error?.message],
    [1, ErrorCode.ACCESS_DENIED, 'access denied: no'],
  );
  t.deepEqual(seen[0], [12, 1, '0000000a']);
});

test("reply and event checks: a slow one holds everything the upstream sends after it, so the client sees the upstream's order", async (t) => {
  const LIST = 301;
  const LOOKUP = 23;
  const slow = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  const r = await rig(t, undefined, {
    // The list is filtered slowly (a new, shorter payload); the lookup is refused; the rest pass.
    checkReply: (rep) => {
      if (rep.error) return undefined;
      if (rep.proc === LIST) return slow(40).then(() => Buffer.from('00000001', 'hex'));
      if (rep.proc === LOOKUP) throw new VirError({ code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS });
      return undefined;
    },
    // Events whose first byte is 0 are about a hidden object; decided slowly.
    checkEvent: (e) => slow(10).then(() => e.payload[0] !== 0),
  });
  r.client.send(call(LIST, 1), call(GET_HOSTNAME, 2), call(LOOKUP, 3), call(SCREENSHOT, 4));
  await r.upstream.count(4);
  const hidden = encodePacket(header(318, MessageType.MESSAGE, 1), xdr.fixedOpaque(4), Buffer.alloc(4, 0));
  const shown = encodePacket(header(318, MessageType.MESSAGE, 1), xdr.fixedOpaque(4), Buffer.alloc(4, 7));
  const hostnameReply = reply(GET_HOSTNAME, 2);
  // The stream's data must not overtake its own call's reply, nor the slow list before it.
  const data = streamData(SCREENSHOT, 4, Buffer.alloc(16, 1));
  r.upstream.send(reply(LIST, 1, Buffer.alloc(12, 5)), shown, hostnameReply, hidden, reply(LOOKUP, 3), reply(SCREENSHOT, 4), data);
  // The hidden event came before the later packets: had it passed, it would be among these six.
  const got = await r.client.count(6);
  t.deepEqual(
    got.map((p) => [p.header.type, p.header.proc, p.header.serial]),
    [
      [MessageType.REPLY, LIST, 1],
      [MessageType.MESSAGE, 318, 1],
      [MessageType.REPLY, GET_HOSTNAME, 2],
      [MessageType.REPLY, LOOKUP, 3],
      [MessageType.REPLY, SCREENSHOT, 4],
      [MessageType.STREAM, SCREENSHOT, 4],
    ],
  );
  // The filtered list: same header, the new payload, the length word rewritten.
  t.is(got[0]!.raw.length, 28 + 4);
  t.is(got[0]!.raw.readUInt32BE(0), 32);
  t.is(got[0]!.raw.subarray(28).toString('hex'), '00000001');
  t.deepEqual(
    got.slice(1, 3).map((p) => p.raw),
    [shown, hostnameReply],
  );
  t.deepEqual(
    [got[3]!.header.status, got[3]!.error?.code, got[3]!.error?.message],
    [MessageStatus.ERROR, ErrorCode.ACCESS_DENIED, 'access denied'],
  );
  t.deepEqual(r.passThrough.inFlight, { calls: 0, streams: 1 });
});

test('backpressure: an upstream that does not read stops the client being read; nothing piles up in between', async (t) => {
  const r = await rig(t);
  await openStream(r, VOL_UPLOAD, 1);
  r.upstream.socket.pause();
  const chunk = streamData(VOL_UPLOAD, 1, Buffer.alloc(262144, 6));
  const chunks = 128; // 32 MiB
  let peak = 0;
  const sample = setInterval(() => (peak = Math.max(peak, r.upstreamRpc.stream.writableLength)), 1);
  for (let i = 0; i < chunks; i++) r.client.socket.write(chunk);
  // virtauthd stops reading the client, whose writes then back up on the client's side.
  await r.client.until(() => r.clientRpc.stream.isPaused(), 'virtauthd to stop reading the client');
  peak = Math.max(peak, r.upstreamRpc.stream.writableLength);
  clearInterval(sample);
  t.true(r.client.socket.writableLength > 0, 'the rest waits at the client');
  t.true(peak <= 2 * 1024 * 1024, `at most a couple of chunks wait in virtauthd's output (peak ${peak} bytes)`);
  r.upstream.socket.resume();
  await r.upstream.count(1 + chunks);
  t.true(r.upstream.packets.slice(1).every((p) => p.raw.equals(chunk)));
});

test('backpressure the other way: a client that does not read stops the upstream being read', async (t) => {
  const r = await rig(t);
  r.client.send(call(VOL_DOWNLOAD, 1));
  await r.upstream.count(1);
  r.client.socket.pause();
  const chunk = streamData(VOL_DOWNLOAD, 1, Buffer.alloc(262144, 8));
  const chunks = 128;
  r.upstream.socket.write(reply(VOL_DOWNLOAD, 1));
  for (let i = 0; i < chunks; i++) r.upstream.socket.write(chunk);
  await r.upstream.until(() => r.upstreamRpc.stream.isPaused(), 'virtauthd to stop reading the upstream');
  t.true(
    r.clientRpc.stream.writableLength <= 2 * 1024 * 1024,
    `at most a couple of chunks wait in virtauthd's output (${r.clientRpc.stream.writableLength} bytes)`,
  );
  r.client.socket.resume();
  await r.client.count(1 + chunks);
  t.true(r.client.packets.slice(1).every((p) => p.raw.equals(chunk)));
});
