// The native stream pump over real unix sockets: what it copies (the rest of a packet, then each
// following data packet of the same stream, byte for byte), where it stops (the first packet that
// is anything else, handed back exactly as leftover), how it ends (end of input inside a packet or
// at a boundary, stop, cancel against a destination that never reads), and the wrapper's limits.
// Tests run one at a time: the number of pumps at work is process-wide.

import { createRequire } from 'node:module';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough as PassThroughStream } from 'node:stream';
import { TLSSocket } from 'node:tls';
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import type { ReservedStreamPump, StreamPumpError, StreamPumpJob } from '@virtauth/core';
import { ADDON_PATH, STREAM_PUMPS_MAX, streamPump, streamPumpsRunning } from '../index.js';

// --- the addon, driven directly so that the run limit is the test's to choose -------------------

type PumpError = StreamPumpError | null;
interface NativePump {
  startStreamPump(
    options: Omit<StreamPumpJob, 'from' | 'to'> & { from: number; to: number; runLimitMs: number },
    done: (error: PumpError, leftover: Buffer, forwarded: number) => void,
  ): unknown;
  stopStreamPump(handle: unknown): void;
  cancelStreamPump(handle: unknown): void;
}
const addon = createRequire(import.meta.url)(ADDON_PATH) as NativePump;

interface PumpOutcome {
  error: PumpError;
  leftover: Buffer;
  forwarded: number;
}

const PROG = 0x20008086;
const VERS = 1;
const PROC = 209;
const SERIAL = 7;
const TYPE_REPLY = 1;
const TYPE_MESSAGE = 2;
const TYPE_STREAM = 3;
const TYPE_STREAM_HOLE = 6;
const STATUS_OK = 0;
const STATUS_CONTINUE = 2;
const HEADER_BYTES = 28;
const MAX_PACKET = 64 * 1024;
const KEEPALIVE_PROG = 0x6b656570;

interface HeaderFields {
  length?: number;
  prog?: number;
  vers?: number;
  proc?: number;
  type?: number;
  serial?: number;
  status?: number;
}

/** A packet: the header (a data packet of the test's stream unless told otherwise) and `payload`. */
function packet(payload: Buffer, fields: HeaderFields = {}): Buffer {
  const out = Buffer.alloc(HEADER_BYTES + payload.length);
  const words = [
    fields.length ?? out.length,
    fields.prog ?? PROG,
    fields.vers ?? VERS,
    fields.proc ?? PROC,
    fields.type ?? TYPE_STREAM,
    fields.serial ?? SERIAL,
    fields.status ?? STATUS_CONTINUE,
  ];
  words.forEach((word, i) => out.writeUInt32BE(word, i * 4));
  payload.copy(out, HEADER_BYTES);
  return out;
}

const data = (bytes: number, seed = bytes): Buffer => packet(Buffer.from(Array.from({ length: bytes }, (_, i) => (i * 7 + seed) & 0xff)));

/** Packets that are not more data of the stream, each a reason for the pump to stop. */
const notData: Record<string, Buffer> = {
  'a reply': packet(Buffer.alloc(4, 1), { type: TYPE_REPLY }),
  'data of another serial': packet(Buffer.alloc(64, 2), { serial: SERIAL + 1 }),
  'data of another procedure': packet(Buffer.alloc(64, 2), { proc: PROC + 1 }),
  'the end of the stream (status OK)': packet(Buffer.alloc(0), { status: STATUS_OK }),
  'a hole (STREAM_HOLE)': packet(Buffer.alloc(12, 3), { type: TYPE_STREAM_HOLE }),
  'a keepalive PING': packet(Buffer.alloc(0), { prog: KEEPALIVE_PROG, vers: 1, proc: 1, type: TYPE_MESSAGE, serial: 0, status: STATUS_OK }),
  'an event': packet(Buffer.alloc(16, 4), { proc: 320, type: TYPE_MESSAGE, serial: 0, status: STATUS_OK }),
  'a length above maxPacket': packet(Buffer.alloc(100, 5), { length: MAX_PACKET + 1 }),
  'a length of 4 GiB - 1': packet(Buffer.alloc(100, 5), { length: 0xffffffff }),
  'a length below the header': packet(Buffer.alloc(100, 6), { length: HEADER_BYTES - 1 }),
  'a length of zero': packet(Buffer.alloc(100, 6), { length: 0 }),
};

// --- sockets --------------------------------------------------------------------------------------

/**
 * A connected unix socket pair. With `pauseAccepted` node never reads the accepted end (the pump
 * reads it, or it stands for a peer that does not read).
 */
async function socketPair(t: ExecutionContext, pauseAccepted: boolean): Promise<{ connecting: net.Socket; accepted: net.Socket }> {
  const dir = await mkdtemp(join(tmpdir(), 'sp-'));
  const path = join(dir, 'sock');
  const server = net.createServer({ pauseOnConnect: pauseAccepted });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const connecting = net.connect(path);
  await new Promise<void>((resolve, reject) => connecting.once('connect', resolve).once('error', reject));
  const far = await accepted;
  server.close();
  for (const socket of [connecting, far]) socket.on('error', () => {});
  t.teardown(async () => {
    connecting.destroy();
    far.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  return { connecting, accepted: far };
}

interface Rig {
  /** The test writes the source bytes here. */
  writer: net.Socket;
  /** The pump reads this (node does not). */
  from: net.Socket;
  /** The pump writes this. */
  to: net.Socket;
  /** What the pump wrote arrives here. */
  reader: net.Socket;
}

async function rig(t: ExecutionContext, options: { readerReads?: boolean } = {}): Promise<Rig> {
  const source = await socketPair(t, true);
  const destination = await socketPair(t, options.readerReads === false);
  return { writer: source.connecting, from: source.accepted, to: destination.connecting, reader: destination.accepted };
}

/** Everything `socket` receives until its peer ends. */
function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('close', () => resolve(Buffer.concat(chunks)));
    socket.resume();
  });
}

/** What the destination received, once the pump is done and its JS end is closed. */
function received(r: Rig): Promise<Buffer> {
  return collect(r.reader);
}

function descriptor(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('the socket has no descriptor');
  return fd;
}

/** Starts a pump from `r.from` to `r.to`; `outcome` settles with its callback's arguments. */
function startPump(r: Rig, remaining: number, runLimitMs = 60_000): { handle: unknown; outcome: Promise<PumpOutcome> } {
  let handle: unknown;
  const outcome = new Promise<PumpOutcome>((resolve) => {
    handle = addon.startStreamPump(
      {
        from: descriptor(r.from),
        to: descriptor(r.to),
        prog: PROG,
        vers: VERS,
        proc: PROC,
        serial: SERIAL,
        remaining,
        maxPacket: MAX_PACKET,
        runLimitMs,
      },
      (error, leftover, forwarded) => resolve({ error, leftover, forwarded }),
    );
  });
  return { handle, outcome };
}

/** Runs a pump over `source` (written all at once, then ended); the destination's bytes and the rest. */
async function pumpAll(t: ExecutionContext, source: Buffer, remaining: number): Promise<PumpOutcome & { copied: Buffer; unread: Buffer }> {
  const r = await rig(t);
  const copiedPromise = received(r);
  const { outcome } = startPump(r, remaining);
  r.writer.end(source);
  const result = await outcome;
  r.to.end();
  const unread = await collect(r.from);
  return { ...result, copied: await copiedPromise, unread };
}

// --- what is copied, where it stops ---------------------------------------------------------------

test.serial('the rest of a packet and the data packets after it are copied byte for byte; the end at a boundary is no error', async (t) => {
  const first = data(40_000);
  const rest = first.subarray(1000);
  const following = [data(0), data(1), data(MAX_PACKET - HEADER_BYTES), data(12_345)];
  const source = Buffer.concat([rest, ...following]);
  const result = await pumpAll(t, source, rest.length);
  t.is(result.error, null);
  t.true(result.copied.equals(source));
  t.is(result.forwarded, source.length);
  t.is(result.leftover.length, 0);
  t.is(result.unread.length, 0);
});

for (const [what, stopper] of Object.entries(notData)) {
  test.serial(`the pump stops at ${what}, which comes back as leftover with all read after it, never copied`, async (t) => {
    const rest = data(3000).subarray(500);
    const copiedPart = Buffer.concat([rest, data(2000), data(100)]);
    const after = Buffer.concat([data(500), data(7), packet(Buffer.alloc(9), { type: TYPE_REPLY })]);
    const result = await pumpAll(t, Buffer.concat([copiedPart, stopper, after]), rest.length);
    t.is(result.error, null);
    t.true(result.copied.equals(copiedPart), 'exactly the packets before it were copied');
    t.is(result.forwarded, copiedPart.length);
    // The pump may read past the stopper or not; nothing is lost or reordered either way.
    t.true(Buffer.concat([result.leftover, result.unread]).equals(Buffer.concat([stopper, after])));
    t.true(result.leftover.length >= Math.min(HEADER_BYTES, stopper.length), 'the stopping header itself was read');
  });
}

test.serial('the rest of the packet in progress is copied whatever it looks like; only the headers after it are judged', async (t) => {
  // The remaining bytes look like a reply header: they are the packet's payload all the same.
  const rest = Buffer.concat([notData['a reply']!, notData['a length above maxPacket']!]);
  const result = await pumpAll(t, Buffer.concat([rest, data(10), notData['a reply']!]), rest.length);
  t.is(result.error, null);
  t.true(result.copied.equals(Buffer.concat([rest, data(10)])));
  t.true(Buffer.concat([result.leftover, result.unread]).equals(notData['a reply']!));
});

test.serial('a header arriving in pieces is judged once whole', async (t) => {
  const r = await rig(t);
  const copiedPromise = received(r);
  const { outcome } = startPump(r, 0);
  const next = data(300);
  const stopper = notData['a reply']!;
  // The stopper's header is written only once the packet before it is through, so its pieces
  // arrive after a boundary.
  const copiedUpTo = (bytes: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (r.reader.bytesRead < bytes) return;
        r.reader.off('data', check);
        resolve();
      };
      r.reader.on('data', check);
      check();
    });
  for (const piece of [next.subarray(0, 3), next.subarray(3, 20), next.subarray(20, 29)]) {
    r.writer.write(piece);
    await new Promise((resolve) => setImmediate(resolve));
  }
  r.writer.write(next.subarray(29));
  await copiedUpTo(next.length);
  r.writer.write(stopper.subarray(0, 27));
  await new Promise((resolve) => setImmediate(resolve));
  r.writer.end(stopper.subarray(27));
  const result = await outcome;
  r.to.end();
  t.is(result.error, null);
  t.true((await copiedPromise).equals(next));
  t.true(Buffer.concat([result.leftover, await collect(r.from)]).equals(stopper));
});

// --- how it ends ----------------------------------------------------------------------------------

test.serial('the end of input inside a packet fails with EPROTO; so does one inside a header', async (t) => {
  const cut = data(5000);
  const insidePacket = await pumpAll(t, Buffer.concat([data(10), cut.subarray(0, 2000)]), 0);
  t.is(insidePacket.error?.code, 'EPROTO');
  t.is(insidePacket.error?.side, 'source');
  t.true(insidePacket.copied.equals(Buffer.concat([data(10), cut.subarray(0, 2000)])), 'what came was passed on');

  const rest = await pumpAll(t, Buffer.alloc(100, 1), 4000);
  t.is(rest.error?.code, 'EPROTO', 'inside the packet in progress');

  const insideHeader = await pumpAll(t, Buffer.concat([data(10), cut.subarray(0, 27)]), 0);
  t.is(insideHeader.error?.code, 'EPROTO');
  t.true(insideHeader.copied.equals(data(10)));
});

test.serial('a destination that goes away fails the pump on the destination side (EPIPE or ECONNRESET)', async (t) => {
  const r = await rig(t, { readerReads: false });
  const { outcome } = startPump(r, 0);
  r.reader.destroy();
  r.writer.write(Buffer.concat(Array.from({ length: 8 }, (_, i) => data(MAX_PACKET - HEADER_BYTES, i))));
  const result = await outcome;
  t.true(result.error?.code === 'EPIPE' || result.error?.code === 'ECONNRESET', `code ${result.error?.code}`);
  t.is(result.error?.side, 'destination');
});

test.serial('stop() while the pump waits at a boundary returns at once with no error; so does the run limit', async (t) => {
  const r = await rig(t);
  const copiedPromise = received(r);
  const { handle, outcome } = startPump(r, 0);
  r.writer.write(data(1000));
  // Wait until the packet is through, so the pump is waiting at a boundary.
  await new Promise<void>((resolve) => r.reader.once('data', () => resolve()));
  const stoppedAt = Date.now();
  addon.stopStreamPump(handle);
  const result = await outcome;
  t.true(Date.now() - stoppedAt < 5000, 'stop is prompt, not the 60 s run limit');
  t.is(result.error, null);
  t.is(result.leftover.length, 0);
  r.to.end();
  t.true((await copiedPromise).equals(data(1000)));

  const limited = await rig(t);
  const started = Date.now();
  const ended = await startPump(limited, 0, 50).outcome;
  t.is(ended.error, null);
  t.is(ended.forwarded, 0);
  t.true(Date.now() - started < 5000);
});

test.serial(
  'cancel() ends a pump blocked on a destination that never reads with ECANCELED; both peers then see their connection close',
  async (t) => {
    const r = await rig(t, { readerReads: false });
    const { handle, outcome } = startPump(r, 0);
    // Far more than both sockets' buffers hold: the pump ends up blocked in its write.
    const packetBytes = MAX_PACKET - HEADER_BYTES;
    const source = Buffer.concat(Array.from({ length: 64 }, (_, i) => data(packetBytes, i)));
    r.writer.write(source);
    // The pump has filled the destination's buffers once the writer's own buffer stops emptying
    // (cancel must work wherever the pump waits; this makes it wait in its write).
    await new Promise<void>((resolve) => {
      let last = -1;
      let unchanged = 0;
      const check = () => {
        unchanged = r.writer.writableLength === last ? unchanged + 1 : 0;
        last = r.writer.writableLength;
        if (unchanged >= 10) resolve();
        else setTimeout(check, 10);
      };
      check();
    });
    const cancelledAt = Date.now();
    addon.cancelStreamPump(handle);
    const result = await outcome;
    t.is(result.error?.code, 'ECANCELED');
    t.true(Date.now() - cancelledAt < 5000, 'cancel does not wait for the destination');
    t.true(result.forwarded > 0 && result.forwarded < source.length);

    // The pump closed its duplicates: once node's ends go, the peers see the connections close.
    const readerClosed = new Promise((resolve) => r.reader.once('close', resolve));
    const writerClosed = new Promise((resolve) => r.writer.once('close', resolve));
    r.from.destroy();
    r.to.destroy();
    r.reader.resume();
    await Promise.all([readerClosed, writerClosed]);
    t.pass();
  },
);

test.serial('stop() and cancel() after the pump is done, through the wrapper, do nothing', async (t) => {
  const r = await rig(t);
  const copiedPromise = received(r);
  const reserved = streamPump.reserve(r.from, r.to)!;
  t.truthy(reserved);
  let done!: (value: { error: Error | null; leftover: Buffer }) => void;
  const finished = new Promise<{ error: Error | null; leftover: Buffer }>((resolve) => (done = resolve));
  const running = reserved.start(
    { from: r.from, to: r.to, prog: PROG, vers: VERS, proc: PROC, serial: SERIAL, remaining: 0, maxPacket: MAX_PACKET },
    (error, leftover) => done({ error, leftover }),
  );
  t.is(streamPumpsRunning(), 1);
  r.writer.write(Buffer.concat([data(2000), notData['a reply']!]));
  const result = await finished;
  t.is(result.error, null);
  t.true(result.leftover.equals(notData['a reply']!));
  t.is(streamPumpsRunning(), 0);
  running.stop();
  running.cancel();
  t.throws(
    () =>
      reserved.start(
        { from: r.from, to: r.to, prog: PROG, vers: VERS, proc: PROC, serial: SERIAL, remaining: 0, maxPacket: MAX_PACKET },
        () => {},
      ),
    {
      message: /used already/,
    },
  );
  r.to.end();
  t.true((await copiedPromise).equals(data(2000)));
});

// --- the wrapper's limits -------------------------------------------------------------------------

test.serial(`at most ${STREAM_PUMPS_MAX} pumps are reserved at once; release() gives a slot back`, async (t) => {
  const r = await rig(t);
  const reservations: ReservedStreamPump[] = [];
  t.teardown(() => reservations.forEach((reserved) => reserved.release()));
  for (let i = 0; i < STREAM_PUMPS_MAX; i++) reservations.push(streamPump.reserve(r.from, r.to)!);
  t.true(reservations.every(Boolean));
  t.is(streamPumpsRunning(), STREAM_PUMPS_MAX);
  t.is(streamPump.reserve(r.from, r.to), undefined);
  reservations[0]!.release();
  reservations[0]!.release(); // a second release gives nothing back twice
  t.is(streamPumpsRunning(), STREAM_PUMPS_MAX - 1);
  const again = streamPump.reserve(r.from, r.to);
  t.truthy(again);
  reservations[0] = again!;
  t.is(streamPump.reserve(r.from, r.to), undefined);
  for (const reserved of reservations) reserved.release();
  t.is(streamPumpsRunning(), 0);
});

test.serial(
  'reserve() refuses TLS sockets, destroyed sockets and streams that are no socket; start() refuses a socket closed since',
  async (t) => {
    const r = await rig(t);
    t.is(streamPump.reserve(new TLSSocket(new net.Socket()), r.to), undefined);
    t.is(streamPump.reserve(r.from, new TLSSocket(new net.Socket())), undefined);
    t.is(streamPump.reserve(new PassThroughStream(), r.to), undefined);
    const gone = await rig(t);
    gone.to.destroy();
    t.is(streamPump.reserve(gone.from, gone.to), undefined);
    t.is(streamPumpsRunning(), 0);

    const reserved = streamPump.reserve(r.from, r.to)!;
    t.is(streamPumpsRunning(), 1);
    r.from.destroy();
    t.throws(
      () =>
        reserved.start(
          { from: r.from, to: r.to, prog: PROG, vers: VERS, proc: PROC, serial: SERIAL, remaining: 0, maxPacket: MAX_PACKET },
          () => {},
        ),
      { message: /two open plain sockets/ },
    );
    t.is(streamPumpsRunning(), 0, 'the reservation is given back');
  },
);

test.serial('the addon refuses options it cannot pump with', (t) => {
  const bad = { from: 0, to: 1, prog: PROG, vers: VERS, proc: PROC, serial: SERIAL, remaining: 0, maxPacket: 27, runLimitMs: 10 };
  t.throws(() => addon.startStreamPump(bad, () => {}), { code: 'ERR_INVALID_ARG' });
  t.throws(() => addon.startStreamPump({ ...bad, maxPacket: MAX_PACKET, remaining: -1 }, () => {}), { code: 'ERR_INVALID_ARG' });
  t.throws(() => addon.stopStreamPump({}), { code: 'ERR_INVALID_ARG' });
});

// --- any sequence, any chunking -------------------------------------------------------------------

const anyPacket = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 3000 }).map((bytes) => ({ matches: true, bytes: data(bytes) })) },
  { weight: 1, arbitrary: fc.constantFrom(...Object.values(notData)).map((bytes) => ({ matches: false, bytes })) },
);

test.serial(
  'any packets in any chunks: destination plus leftover plus unread is the source, split at the first other header',
  async (t) => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 5000 }),
        fc.array(anyPacket, { maxLength: 30 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 20 }),
        async (remaining, packets, chunkSizes) => {
          const rest = Buffer.alloc(remaining, 0xab);
          const source = Buffer.concat([rest, ...packets.map((p) => p.bytes)]);
          const firstOther = packets.findIndex((p) => !p.matches);
          const split = remaining + packets.slice(0, firstOther < 0 ? packets.length : firstOther).reduce((n, p) => n + p.bytes.length, 0);

          const r = await rig(t);
          const copiedPromise = received(r);
          const { outcome } = startPump(r, remaining);
          for (let at = 0, i = 0; at < source.length; i++) {
            const size = chunkSizes[i % chunkSizes.length]!;
            r.writer.write(source.subarray(at, at + size));
            at += size;
            await new Promise((resolve) => setImmediate(resolve));
          }
          r.writer.end();
          const result = await outcome;
          r.to.end();
          const copied = await copiedPromise;
          const unread = await collect(r.from);
          r.writer.destroy();
          r.reader.destroy();
          return (
            result.error === null &&
            copied.equals(source.subarray(0, split)) &&
            result.forwarded === split &&
            Buffer.concat([copied, result.leftover, unread]).equals(source)
          );
        },
      ),
      { numRuns: 60 },
    );
    t.pass();
  },
);
