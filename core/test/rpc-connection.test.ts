// RpcConnection end to end over a real unix socket: serial matching with out-of-order replies,
// error replies, the dispatcher's order of checks, keepalive, closing, and a fuzzed server.

import test from 'ava';
import fc from 'fast-check';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { EventEmitter, once } from 'node:events';
import * as x from '../src/xdr/codec.js';
import { XdrReader } from '../src/xdr/codec.js';
import { RpcConnection, type CallHandler } from '../src/rpc/connection.js';
import { createDispatcher, type ProgramDefinition, type Procedure } from '../src/rpc/dispatcher.js';
import { encodePacket, errorPayload, MessageStatus, MessageType, payloadToError, readHeader, type Header } from '../src/rpc/packet.js';
import { PacketFramer } from '../src/rpc/framer.js';
import { KEEPALIVE_PROGRAM, KeepaliveProc } from '../src/rpc/keepalive.js';
import { ErrorCode, ErrorDomain, VirError } from '../src/errors.js';

const PROG = 0x20008086;
const VERS = 1;

let socketCounter = 0;

/** A listening unix socket on a temp path; each accepted socket is handed to `onServerSocket`. */
async function listen(onServerSocket: (s: net.Socket) => void): Promise<{ path: string; close(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'virtauth-rpc-'));
  const socketPath = path.join(dir, `s${socketCounter++}.sock`);
  const server = net.createServer(onServerSocket);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    path: socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}

function connectSocket(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => resolve(s));
    s.once('error', reject);
  });
}

/** A client RpcConnection and the server RpcConnection at the other end of one socket. */
async function pair(setup: (server: RpcConnection) => void = () => {}) {
  let resolveServer!: (c: RpcConnection) => void;
  const serverReady = new Promise<RpcConnection>((resolve) => (resolveServer = resolve));
  const l = await listen((s) => {
    const conn = new RpcConnection(s);
    setup(conn);
    resolveServer(conn);
  });
  const client = new RpcConnection(await connectSocket(l.path));
  const server = await serverReady;
  return {
    client,
    server,
    async dispose() {
      client.close();
      server.close();
      await l.close();
    },
  };
}

/** Sends raw bytes on a fresh socket and collects whatever packets come back until the peer closes. */
class RawPeer {
  readonly packets: Buffer[] = [];
  readonly closed: Promise<void>;
  private readonly framer = new PacketFramer();
  private waiters: (() => void)[] = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.framer.push(chunk, (p) => this.packets.push(Buffer.from(p)));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
  }

  /** The next whole packet, once the data that completes it arrives; `timeoutMs` bounds a hung test. */
  async nextPacket(timeoutMs = 30_000): Promise<Buffer> {
    while (this.packets.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no packet arrived within ${timeoutMs} ms`)), timeoutMs);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.packets.shift()!;
  }
}

function decodeReply(packet: Buffer): { header: Header; error: VirError | null; body: XdrReader } {
  const body = new XdrReader(packet, 4);
  const header = readHeader(body);
  const error = header.status === MessageStatus.ERROR ? payloadToError(errorPayload.decode(body)) : null;
  return { header, error, body };
}

const callPacket = (h: Partial<Header>, payload: Buffer = Buffer.alloc(0)): Buffer =>
  encodePacket(
    { prog: PROG, vers: VERS, proc: 1, type: MessageType.CALL, serial: 1, status: MessageStatus.OK, ...h },
    x.fixedOpaque(payload.length),
    payload,
  );

const intArgs = x.struct({ n: x.int });
const intRet = x.struct({ n: x.int });

// ---------------------------------------------------------------------------------------------
// Calls and replies

test('concurrent calls get their own replies even when they complete in reverse order', async (t) => {
  const finished: number[] = [];
  const seenSerials: number[] = [];
  // Each call waits for its release; once all five are in, they are released last first.
  const releases = new Map<number, () => void>();
  let allArrived!: () => void;
  const arrived = new Promise<void>((resolve) => (allArrived = resolve));
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(async (h, body) => {
      seenSerials.push(h.serial);
      const { n } = intArgs.decode(body);
      const released = new Promise<void>((resolve) => releases.set(n, resolve));
      if (releases.size === 5) allArrived();
      await released;
      finished.push(n);
      return { codec: intRet, value: { n: n * 10 } };
    }),
  );
  try {
    const inputs = [1, 2, 3, 4, 5];
    const replies = inputs.map((n) => client.call(PROG, VERS, 7, intArgs, { n }, intRet));
    await arrived;
    for (const n of [...inputs].reverse()) {
      releases.get(n)!();
      await replies[n - 1];
    }
    const results = await Promise.all(replies);
    t.deepEqual(
      results.map((r) => r.n),
      [10, 20, 30, 40, 50],
    );
    t.deepEqual(finished, [5, 4, 3, 2, 1], 'the server really answered out of order');
    t.deepEqual(
      seenSerials.sort((a, b) => a - b),
      [0, 1, 2, 3, 4],
      'serials start at 0 and count up',
    );
  } finally {
    await dispose();
  }
});

test('forty pipelined calls all get their own replies', async (t) => {
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(async (_h, body) => {
      await new Promise((r) => setTimeout(r, 5));
      return { codec: intRet, value: intArgs.decode(body) };
    }),
  );
  try {
    const results = await Promise.all(Array.from({ length: 40 }, (_, n) => client.call(PROG, VERS, 7, intArgs, { n }, intRet)));
    t.deepEqual(
      results.map((r) => r.n),
      Array.from({ length: 40 }, (_, n) => n),
    );
  } finally {
    await dispose();
  }
});

// Calls framed from one chunk beyond maxConcurrentCalls wait in order; pausing the socket alone
// would not hold them back.
test('pipelined calls are held back to the limit of 5 running at once', async (t) => {
  let running = 0;
  let peak = 0;
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(async (_h, body) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return { codec: intRet, value: intArgs.decode(body) };
    }),
  );
  try {
    await Promise.all(Array.from({ length: 40 }, (_, n) => client.call(PROG, VERS, 7, intArgs, { n }, intRet)));
    t.true(peak <= 5, `at most 5 calls ran at once (peak ${peak})`);
  } finally {
    await dispose();
  }
});

test('an error reply becomes the VirError the server threw', async (t) => {
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(() => {
      throw new VirError({ code: ErrorCode.NO_DOMAIN, domain: ErrorDomain.QEMU, detail: "no domain with matching name 'vm9'" });
    }),
  );
  try {
    const e = await t.throwsAsync(client.call(PROG, VERS, 23, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(e!.code, ErrorCode.NO_DOMAIN);
    t.is(e!.domain, ErrorDomain.QEMU);
    t.is(e!.message, "Domain not found: no domain with matching name 'vm9'");
    t.is(e!.str2, "no domain with matching name 'vm9'");
  } finally {
    await dispose();
  }
});

test('a plain Error thrown by a handler reaches the client as an internal error', async (t) => {
  const { client, dispose } = await pair((server) => server.setCallHandler(() => Promise.reject(new Error('disk on fire'))));
  try {
    const e = await t.throwsAsync(client.call(PROG, VERS, 3, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(e!.code, ErrorCode.INTERNAL_ERROR);
    t.is(e!.message, 'internal error: disk on fire');
  } finally {
    await dispose();
  }
});

test('"unknown procedure: N" from the peer is reported as NO_SUPPORT with the text kept', async (t) => {
  const { client, dispose } = await pair((server) =>
    server.setCallHandler((h) => {
      throw new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: `unknown procedure: ${h.proc}` });
    }),
  );
  try {
    const e = await t.throwsAsync(client.call(PROG, VERS, 443, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(e!.code, ErrorCode.NO_SUPPORT);
    t.is(e!.domain, ErrorDomain.RPC);
    t.is(e!.message, 'unknown procedure: 443');
  } finally {
    await dispose();
  }
});

test('other RPC errors are not rewritten', async (t) => {
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(() => {
      throw new VirError({ code: ErrorCode.RPC, domain: ErrorDomain.RPC, detail: 'authentication required' });
    }),
  );
  try {
    const e = await t.throwsAsync(client.call(PROG, VERS, 1, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(e!.code, ErrorCode.RPC);
    t.is(e!.message, 'authentication required');
  } finally {
    await dispose();
  }
});

test('a reply that does not decode with the expected codec rejects that call only', async (t) => {
  const { client, dispose } = await pair((server) => server.setCallHandler((h) => ({ codec: x.int, value: h.proc === 1 ? 5 : 6 })));
  try {
    const e = await t.throwsAsync(client.call(PROG, VERS, 1, x.xvoid, undefined, x.string()), { instanceOf: VirError });
    t.regex(e!.message, /^Unable to decode message payload/);
    t.is(await client.call(PROG, VERS, 2, x.xvoid, undefined, x.int), 6);
  } finally {
    await dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// The dispatcher's order of checks, seen on the wire

function dispatchingServer(authenticated: { value: boolean }) {
  const procedures = new Map<number, Procedure<any, any, { calls: number }>>([
    [1, { args: intArgs, ret: intRet, handle: (_ctx, a: { n: number }) => ({ n: a.n + 1 }) }],
    [66, { args: x.xvoid, ret: x.struct({ types: x.array(x.int, 20) }), needsAuth: false, handle: () => ({ types: [1] }) }],
    [67, { args: intArgs, ret: intRet, needsAuth: false, handle: async (_ctx, a: { n: number }) => ({ n: -a.n }) }],
  ]);
  const program: ProgramDefinition<{ calls: number }> = { prog: PROG, vers: VERS, procedures };
  return (conn: RpcConnection) =>
    conn.setCallHandler(createDispatcher([program], { context: { calls: 0 }, isAuthenticated: () => authenticated.value }));
}

async function rawExchange(setup: (c: RpcConnection) => void, packets: Buffer[]): Promise<ReturnType<typeof decodeReply>[]> {
  const l = await listen((s) => setup(new RpcConnection(s)));
  const peer = new RawPeer(await connectSocket(l.path));
  try {
    const replies = [];
    for (const p of packets) {
      peer.socket.write(p);
      replies.push(decodeReply(await peer.nextPacket()));
    }
    return replies;
  } finally {
    peer.socket.destroy();
    await l.close();
  }
}

test('dispatcher: unknown program or version, before anything else', async (t) => {
  const [a, b] = await rawExchange(dispatchingServer({ value: false }), [
    callPacket({ prog: 0x12345678, proc: 999, serial: 9 }),
    callPacket({ vers: 2, proc: 1, serial: 10 }),
  ]);
  t.is(a!.error!.code, 39);
  t.is(a!.error!.domain, 7);
  t.is(a!.error!.message, `Cannot find program ${0x12345678} version 1`);
  t.deepEqual({ ...a!.header }, { prog: 0x12345678, vers: 1, proc: 999, type: MessageType.REPLY, serial: 9, status: MessageStatus.ERROR });
  t.is(b!.error!.message, `Cannot find program ${PROG} version 2`);
});

test('dispatcher: unknown procedure is reported before the auth gate', async (t) => {
  const [r] = await rawExchange(dispatchingServer({ value: false }), [callPacket({ proc: 999 })]);
  t.is(r!.error!.code, 39);
  t.is(r!.error!.domain, 7);
  t.is(r!.error!.message, 'unknown procedure: 999');
});

test('dispatcher: auth gate refuses procedures that need auth, allows those that do not', async (t) => {
  const [gated, allowed] = await rawExchange(dispatchingServer({ value: false }), [
    callPacket({ proc: 1, serial: 3 }),
    callPacket({ proc: 66, serial: 4 }),
  ]);
  t.is(gated!.error!.code, 39);
  t.is(gated!.error!.domain, 7);
  t.is(gated!.error!.message, 'authentication required');
  t.is(gated!.header.serial, 3);
  t.is(allowed!.error, null);
  t.deepEqual(x.array(x.int, 20).decode(allowed!.body), [1]);
});

test('dispatcher: the auth gate comes before payload decoding', async (t) => {
  // An empty payload would not decode as proc 1's int, yet the answer is "authentication required".
  const [r] = await rawExchange(dispatchingServer({ value: false }), [callPacket({ proc: 1 })]);
  t.is(r!.error!.message, 'authentication required');
});

test('dispatcher: a payload that does not decode is answered, not fatal', async (t) => {
  const [bad, good] = await rawExchange(dispatchingServer({ value: true }), [
    callPacket({ proc: 1, serial: 5 }),
    callPacket({ proc: 1, serial: 6 }, Buffer.from([0, 0, 0, 41])),
  ]);
  t.is(bad!.error!.code, 39);
  t.is(bad!.error!.domain, 7);
  t.is(bad!.error!.message, 'Unable to decode message payload');
  t.is(good!.error, null);
  t.is(good!.header.serial, 6);
  t.deepEqual(intRet.decode(good!.body), { n: 42 });
});

test('dispatcher: wrong message type or status on a call', async (t) => {
  const [withFds, badStatus] = await rawExchange(dispatchingServer({ value: true }), [
    callPacket({ proc: 1, type: MessageType.CALL_WITH_FDS }, Buffer.from([0, 0, 0, 0, 0, 0, 0, 1])),
    callPacket({ proc: 1, status: MessageStatus.CONTINUE }, Buffer.from([0, 0, 0, 1])),
  ]);
  t.is(withFds!.error!.message, 'Unexpected message type 4');
  t.is(badStatus!.error!.message, 'Unexpected message status 2');
});

test('dispatcher through RpcConnection: authenticated calls work, async handlers too', async (t) => {
  const auth = { value: false };
  const { client, dispose } = await pair(dispatchingServer(auth));
  try {
    await t.throwsAsync(client.call(PROG, VERS, 1, intArgs, { n: 1 }, intRet), { message: 'authentication required' });
    auth.value = true;
    t.deepEqual(await client.call(PROG, VERS, 1, intArgs, { n: 1 }, intRet), { n: 2 });
    t.deepEqual(await client.call(PROG, VERS, 67, intArgs, { n: 8 }, intRet), { n: -8 });
    const e = await t.throwsAsync(client.call(PROG, VERS, 500, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(e!.code, ErrorCode.NO_SUPPORT, 'the client sees unknown procedures as NO_SUPPORT');
  } finally {
    await dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// Keepalive and connections without a handler

const ping = encodePacket(
  { prog: KEEPALIVE_PROGRAM, vers: 1, proc: KeepaliveProc.PING, type: MessageType.MESSAGE, serial: 0, status: 0 },
  x.xvoid,
  undefined,
);

test('a PING is answered with a 28-byte PONG even when no call handler is set', async (t) => {
  const l = await listen((s) => new RpcConnection(s));
  const peer = new RawPeer(await connectSocket(l.path));
  try {
    peer.socket.write(ping);
    const pong = await peer.nextPacket();
    t.is(pong.toString('hex'), '0000001c' + '6b656570' + '00000001' + '00000002' + '00000002' + '00000000' + '00000000');
  } finally {
    peer.socket.destroy();
    await l.close();
  }
});

test('a call to a connection without a handler gets "Cannot find program"', async (t) => {
  const [r] = await rawExchange(() => {}, [callPacket({ proc: 3, serial: 77 })]);
  t.is(r!.error!.message, `Cannot find program ${PROG} version 1`);
  t.is(r!.header.serial, 77);
});

test('keepalive: the client sends PINGs when the peer is silent and closes after unanswered ones', async (t) => {
  const received: Buffer[] = [];
  const l2 = await listen((s) => {
    const framer = new PacketFramer();
    s.on('data', (c) => framer.push(c, (p) => received.push(Buffer.from(p))));
    s.on('error', () => {});
  });
  const conn = new RpcConnection(await connectSocket(l2.path));
  try {
    conn.startKeepalive(1, 1);
    const reason = await conn.whenClosed();
    t.truthy(reason);
    t.is(reason!.message, 'connection closed due to keepalive timeout');
    t.true(received.length >= 1);
    const h = readHeader(new XdrReader(received[0]!, 4));
    t.deepEqual(h, { prog: KEEPALIVE_PROGRAM, vers: 1, proc: KeepaliveProc.PING, type: MessageType.MESSAGE, serial: 0, status: 0 });
  } finally {
    conn.close();
    await l2.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Closing

test('closing the client rejects the calls still waiting', async (t) => {
  const received = new EventEmitter();
  let calls = 0;
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(() => {
      calls++;
      received.emit('call');
      return new Promise(() => {});
    }),
  );
  try {
    const pending = [client.call(PROG, VERS, 1, x.xvoid, undefined, x.xvoid), client.call(PROG, VERS, 2, x.xvoid, undefined, x.xvoid)];
    // Both calls are with the server, which never answers.
    while (calls < 2) await once(received, 'call');
    client.close();
    for (const p of pending) await t.throwsAsync(p, { instanceOf: VirError, message: 'client socket is closed' });
    await t.throwsAsync(client.call(PROG, VERS, 3, x.xvoid, undefined, x.xvoid), { instanceOf: VirError });
    t.is(await client.whenClosed(), null);
  } finally {
    await dispose();
  }
});

test("the server going away rejects the client's waiting calls with a system error", async (t) => {
  const received = new EventEmitter();
  const { client, server, dispose } = await pair((s) =>
    s.setCallHandler(() => {
      received.emit('call');
      return new Promise(() => {});
    }),
  );
  try {
    const arrived = once(received, 'call');
    const pending = client.call(PROG, VERS, 1, x.xvoid, undefined, x.xvoid);
    await arrived;
    server.stream.destroy();
    const e = await t.throwsAsync(pending, { instanceOf: VirError });
    t.is(e!.code, ErrorCode.SYSTEM_ERROR);
    t.is(e!.domain, ErrorDomain.RPC);
    t.true(client.closed);
  } finally {
    await dispose();
  }
});

test('an aborted call rejects with the abort reason and its late reply is dropped', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { client, dispose } = await pair((server) =>
    server.setCallHandler(async (_h, body) => {
      const args = intArgs.decode(body);
      if (args.n === 1) await gate;
      return { codec: intRet, value: args };
    }),
  );
  try {
    const controller = new AbortController();
    const first = client.call(PROG, VERS, 1, intArgs, { n: 1 }, intRet, { signal: controller.signal });
    controller.abort(new Error('deadline'));
    await t.throwsAsync(first, { message: 'deadline' });
    release();
    t.deepEqual(await client.call(PROG, VERS, 1, intArgs, { n: 2 }, intRet), { n: 2 });
    const already = new AbortController();
    already.abort(new Error('too late'));
    await t.throwsAsync(client.call(PROG, VERS, 1, intArgs, { n: 3 }, intRet, { signal: already.signal }), { message: 'too late' });
  } finally {
    await dispose();
  }
});

test('a bogus length word closes the connection with a protocol error', async (t) => {
  const l = await listen((s) => {
    const conn = new RpcConnection(s);
    conn.on('protocolError', () => {});
  });
  const peer = new RawPeer(await connectSocket(l.path));
  try {
    peer.socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
    await peer.closed;
    t.is(peer.packets.length, 0);
  } finally {
    await l.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Fuzz: hostile byte streams against a dispatching server

const headerTypes = fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, -1);
const fuzzPacket = fc
  .record({
    prog: fc.constantFrom(PROG, KEEPALIVE_PROGRAM, 0x20008087, 0),
    vers: fc.constantFrom(1, 2),
    proc: fc.constantFrom(1, 66, 67, 999, -1, KeepaliveProc.PING),
    type: headerTypes,
    serial: fc.nat(),
    status: fc.constantFrom(0, 1, 2, 9),
    payload: fc.uint8Array({ maxLength: 48 }),
  })
  .map(({ payload, ...h }) => encodePacket(h, x.fixedOpaque(payload.length), Buffer.from(payload)));

const fuzzStream = fc
  .array(
    fc.oneof(
      // Mostly whole packets, so the dispatcher is reached and not only the framer.
      { weight: 6, arbitrary: fuzzPacket },
      fuzzPacket.chain((p) => fc.nat(p.length).map((n) => p.subarray(0, n))),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc
        .tuple(
          fc.oneof(fc.nat(40), fc.constant(0xffffffff), fc.integer({ min: 33554437, max: 0xfffffffe })),
          fc.uint8Array({ maxLength: 16 }),
        )
        .map(([len, rest]) => {
          const b = Buffer.alloc(4 + rest.length);
          b.writeUInt32BE(len >>> 0);
          Buffer.from(rest).copy(b, 4);
          return b;
        }),
    ),
    { minLength: 1, maxLength: 5 },
  )
  .map((parts) => Buffer.concat(parts));

test('fuzz: garbage, truncated packets and bogus lengths never hang or break the server', async (t) => {
  const auth = { value: false };
  const serverConnections: RpcConnection[] = [];
  const setup = dispatchingServer(auth);
  const l = await listen((s) => {
    const conn = new RpcConnection(s);
    conn.on('protocolError', () => {});
    setup(conn);
    serverConnections.push(conn);
  });
  // A healthy client connected for the whole run must keep working afterwards.
  const healthy = new RpcConnection(await connectSocket(l.path));
  let runs = 0;
  let errorReplies = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fuzzStream, async (input) => {
        runs++;
        const peer = new RawPeer(await connectSocket(l.path));
        peer.socket.write(input);
        // Let the server answer what it can, then stop sending: it must then close, not hang.
        await Promise.race([peer.closed, new Promise((r) => setTimeout(r, 15))]);
        peer.socket.end();
        const closedInTime = await Promise.race([
          peer.closed.then(() => true),
          // A bound for a server that hangs, generous for a loaded machine.
          new Promise<boolean>((r) => setTimeout(() => r(false), 20_000)),
        ]);
        if (!closedInTime) {
          peer.socket.destroy();
          throw new Error(`server did not close after input ${input.toString('hex')}`);
        }
        for (const p of peer.packets) {
          const { header, error } = decodeReply(p);
          const isPong = header.prog === KEEPALIVE_PROGRAM && header.proc === KeepaliveProc.PONG && header.type === MessageType.MESSAGE;
          const isErrorReply = header.type === MessageType.REPLY && error instanceof VirError && error.domain === ErrorDomain.RPC;
          // Procs 66 and 67 need no auth: a well-formed call to either legitimately succeeds.
          const isPreAuthReply =
            header.type === MessageType.REPLY &&
            header.status === MessageStatus.OK &&
            header.prog === PROG &&
            (header.proc === 66 || header.proc === 67);
          if (isErrorReply) errorReplies++;
          if (!isPong && !isErrorReply && !isPreAuthReply)
            throw new Error(`unexpected packet ${p.toString('hex')} for input ${input.toString('hex')}`);
        }
      }),
      { numRuns: 250 },
    );
    auth.value = true;
    t.deepEqual(await healthy.call(PROG, VERS, 1, intArgs, { n: 99 }, intRet), { n: 100 });
    const fresh = new RpcConnection(await connectSocket(l.path));
    t.deepEqual(await fresh.call(PROG, VERS, 67, intArgs, { n: 5 }, intRet), { n: -5 });
    fresh.close();
    t.is(runs, 250);
    t.true(errorReplies > 20, `the fuzzer reached the dispatcher (${errorReplies} error replies)`);
    // The fuzzing peers have all gone: their server sides close, each in its own time.
    const openNow = () => serverConnections.filter((c) => !c.closed);
    while (openNow().length > 2) await Promise.race(openNow().map((c) => c.whenClosed()));
    const stillOpen = openNow();
    t.true(stillOpen.length <= 2, `only the healthy connections remain open (${stillOpen.length})`);
  } finally {
    healthy.close();
    for (const c of serverConnections) c.close();
    await l.close();
  }
});

test('handlers that throw synchronously do not take the connection down', async (t) => {
  const handler: CallHandler = (h) => {
    if (h.proc === 1) throw new TypeError('bad state');
    return { codec: x.int, value: 1 };
  };
  const { client, dispose } = await pair((s) => s.setCallHandler(handler));
  try {
    await t.throwsAsync(client.call(PROG, VERS, 1, x.xvoid, undefined, x.int), { message: 'internal error: bad state' });
    t.is(await client.call(PROG, VERS, 2, x.xvoid, undefined, x.int), 1);
  } finally {
    await dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// A peer that sends and never reads (issue 10, item 5)

const CALL_SIZE = 28;
const REPLY_PAYLOAD = Buffer.alloc(256, 0x5a);
const bigReply = { codec: x.fixedOpaque(REPLY_PAYLOAD.length), value: REPLY_PAYLOAD };
const REPLY_SIZE = 28 + REPLY_PAYLOAD.length;

/** `count` void calls (28 bytes each) with serials 0..count-1, as one buffer. */
function manyCalls(count: number): Buffer {
  const one = callPacket({ serial: 0 });
  const out = Buffer.allocUnsafe(count * one.length);
  for (let n = 0; n < count; n++) {
    one.copy(out, n * one.length);
    out.writeUInt32BE(n, n * one.length + 20);
  }
  return out;
}

/**
 * Resolves once the server's socket has stayed paused for `quietMs` (the connection stopped
 * reading); fails if that has not happened within 20 s.
 */
async function stopsReading(socket: net.Socket, quietMs = 400): Promise<void> {
  const deadline = performance.now() + 20_000;
  const within = <T>(p: Promise<T>, ms: number, fallback: T) => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([p, new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)))]).finally(() =>
      clearTimeout(timer),
    );
  };
  while (performance.now() < deadline) {
    if (
      !socket.isPaused() &&
      !(await within(
        once(socket, 'pause').then(() => true),
        deadline - performance.now(),
        false,
      ))
    )
      break;
    const resumed = await within(
      once(socket, 'resume').then(() => true),
      quietMs,
      false,
    );
    if (!resumed) return;
  }
  throw new Error('the server kept reading');
}

/** A server connection on one end of a unix socket and a raw socket on the other that does not read yet. */
async function unreadPeer(setup: (server: RpcConnection) => void, opts: ConstructorParameters<typeof RpcConnection>[1] = {}) {
  let resolveServer!: (c: { conn: RpcConnection; serverSocket: net.Socket }) => void;
  const ready = new Promise<{ conn: RpcConnection; serverSocket: net.Socket }>((resolve) => (resolveServer = resolve));
  const l = await listen((s) => {
    const conn = new RpcConnection(s, opts);
    setup(conn);
    resolveServer({ conn, serverSocket: s });
  });
  const socket = await connectSocket(l.path);
  socket.on('error', () => {});
  const server = await ready;
  return {
    ...server,
    socket,
    /** Starts reading; resolves once `count` packets have come, with their serials. */
    readPackets(count: number): Promise<number[]> {
      const serials: number[] = [];
      const framer = new PacketFramer();
      return new Promise((resolve) => {
        socket.on('data', (chunk) => {
          framer.push(chunk, (p) => serials.push(p.readUInt32BE(20)));
          if (serials.length >= count) resolve(serials);
        });
      });
    },
    async dispose() {
      socket.destroy();
      server.conn.close();
      await l.close();
    },
  };
}

test('a peer that sends calls and never reads stops being read; once it reads, every call is answered in order', async (t) => {
  let handled = 0;
  const peer = await unreadPeer((server) =>
    server.setCallHandler(() => {
      handled++;
      return bigReply;
    }),
  );
  try {
    const count = Math.floor((4 << 20) / CALL_SIZE); // 4 MiB of calls, each answered with 284 bytes
    peer.socket.write(manyCalls(count));
    await stopsReading(peer.serverSocket);
    const taken = peer.serverSocket.bytesRead;
    // The kernel holds some replies (the socket buffers); past those, the server stops reading.
    t.true(taken < 1 << 20, `the server read ${taken} bytes of ${count * CALL_SIZE}`);
    t.true(handled < count / 4, `${handled} of ${count} calls were handled`);
    t.true(peer.conn.unsentBytes <= 65536 + 5 * REPLY_SIZE, `${peer.conn.unsentBytes} bytes wait to be sent`);

    const serials = await peer.readPackets(count);
    t.is(serials.length, count);
    t.true(
      serials.every((s, n) => s === n),
      'replies in call order',
    );
    t.is(handled, count);
  } finally {
    await peer.dispose();
  }
});

test('once a peer stops reading, a call counts against maxConcurrentCalls until its reply has left, not until its handler returns', async (t) => {
  let handled = 0;
  // An output bound too large to matter: only the count of calls in flight holds input back.
  const peer = await unreadPeer(
    (server) =>
      server.setCallHandler(() => {
        handled++;
        return bigReply;
      }),
    { maxConcurrentCalls: 5, maxUnsentBytes: 1 << 30 },
  );
  try {
    const count = Math.floor((2 << 20) / CALL_SIZE);
    peer.socket.write(manyCalls(count));
    await stopsReading(peer.serverSocket);
    t.true(handled < count / 4, `${handled} of ${count} calls were handled`);
    // Replies queued behind less than the high-water mark leave in the same turn while a peer
    // reads; past it, at most the 5 replies of the calls in flight are added.
    const highWaterMark = peer.conn.stream.writableHighWaterMark;
    t.true(peer.conn.unsentBytes <= highWaterMark + 5 * REPLY_SIZE, `${peer.conn.unsentBytes} bytes wait in the process`);
    t.is((await peer.readPackets(count)).length, count);
  } finally {
    await peer.dispose();
  }
});

test('a PING flood from a peer that never reads gets PONGs up to the output bound only', async (t) => {
  const peer = await unreadPeer(() => {});
  try {
    const count = Math.floor((4 << 20) / ping.length);
    const flood = Buffer.allocUnsafe(count * ping.length);
    for (let n = 0; n < count; n++) ping.copy(flood, n * ping.length);
    peer.socket.write(flood);
    await stopsReading(peer.serverSocket);
    const taken = peer.serverSocket.bytesRead;
    t.true(taken < 2 << 20, `the server read ${taken} bytes of ${flood.length}`);
    t.true(peer.conn.outputBlocked, 'reading stopped for unsent output');
    t.true(peer.conn.unsentBytes <= 65536 + ping.length, `${peer.conn.unsentBytes} bytes of PONGs wait to be sent`);
    t.is((await peer.readPackets(count)).length, count, 'every PING is answered once the peer reads');
    t.false(peer.conn.outputBlocked);
  } finally {
    await peer.dispose();
  }
});

test('holdInput stops taking packets until releaseInput', async (t) => {
  let handled = 0;
  const { client, server, dispose } = await pair((s) =>
    s.setCallHandler((_h, body) => {
      handled++;
      return { codec: intRet, value: intArgs.decode(body) };
    }),
  );
  try {
    server.holdInput();
    const reply = client.call(PROG, VERS, 7, intArgs, { n: 42 }, intRet);
    // Give the call time to arrive: it must stay unread.
    await new Promise((r) => setTimeout(r, 100));
    t.is(handled, 0);
    server.releaseInput();
    t.deepEqual(await reply, { n: 42 });
    t.is(handled, 1);
  } finally {
    await dispose();
  }
});
