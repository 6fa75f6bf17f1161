// What an unauthenticated client can make virtauthd hold or write (issue 10, item 5): a client
// that sends and never reads stops being read, junk costs a bounded number of log lines, and
// nothing stays behind once the client has gone.

import net from 'node:net';

import test from 'ava';

import {
  ErrorCode,
  MessageStatus,
  MessageType,
  PacketFramer,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RelayProc,
  RemoteProc,
  encodePacket,
  errorPayload,
  payloadToError,
  xdr,
  XdrReader,
  readHeader,
} from '@virtauth/core';

import { PRE_AUTH_PACKET_MAX } from '@virtauth/daemon';

import { repeatedPackets, sendWithoutReading } from './abuse-client.js';
import { untilClientCount } from './peers/util.js';
import { RawClient } from './sasl-test-helpers.js';
import { TestVirtauthd } from './sasl-support.js';

const hostnameCall = {
  prog: REMOTE_PROGRAM,
  vers: REMOTE_PROTOCOL_VERSION,
  proc: RemoteProc.CONNECT_GET_HOSTNAME,
  type: MessageType.CALL,
  status: MessageStatus.OK,
};

function connectRaw(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Reads until `count` packets have come; resolves with the last one. */
function readPackets(socket: net.Socket, count: number): Promise<Buffer> {
  const framer = new PacketFramer();
  let seen = 0;
  return new Promise((resolve) => {
    socket.on('data', (chunk) =>
      framer.push(chunk, (p) => {
        if (++seen === count) resolve(Buffer.from(p));
      }),
    );
  });
}

test.serial(
  'a client that sends calls before authenticating and never reads stops being read; after it leaves nothing is held for it',
  async (t) => {
    const daemon = await TestVirtauthd.start();
    t.teardown(() => daemon.stop());
    const socket = await connectRaw(daemon.listener('unix').path!);
    t.teardown(() => socket.destroy());

    const count = Math.floor((8 << 20) / 28);
    const calls = repeatedPackets(hostnameCall, count);
    // What left this process: the kernel's socket buffers plus what virtauthd read.
    const accepted = await sendWithoutReading(socket, calls);
    t.true(accepted < 2 << 20, `virtauthd took ${accepted} of ${calls.length} bytes from a client that reads nothing`);
    t.is(daemon.handle.server.clientCount, 1);

    // Once the client reads, every call is answered, each with "authentication required".
    const last = await readPackets(socket, count);
    const body = new XdrReader(last, 4);
    const header = readHeader(body);
    t.is(header.serial, count - 1);
    t.is(header.status, MessageStatus.ERROR);
    t.is(payloadToError(errorPayload.decode(body)).code, ErrorCode.RPC);

    socket.destroy();
    await untilClientCount([daemon.handle.server], 0, 30_000, 'the session to be released');
    t.is(daemon.handle.server.clientCount, 0);
  },
);

test.serial('a flood of junk REPLY packets costs a bounded number of log lines, and the connection still answers', async (t) => {
  const daemon = await TestVirtauthd.start();
  t.teardown(() => daemon.stop());
  const socket = await connectRaw(daemon.listener('unix').path!);
  t.teardown(() => socket.destroy());

  const junkCount = 20_000; // 560 KB of replies that match no call
  socket.write(repeatedPackets({ ...hostnameCall, type: MessageType.REPLY }, junkCount));
  // A call after the junk: its reply means the daemon has been through all of it.
  const answered = readPackets(socket, 1);
  socket.write(encodePacket({ ...hostnameCall, proc: RemoteProc.AUTH_LIST, serial: 7 }, xdr.xvoid, undefined));
  t.is(readHeader(new XdrReader(await answered, 4)).serial, 7);

  const lines = daemon.events('protocol.error');
  t.true(lines.length >= 1 && lines.length <= 20, `${lines.length} protocol.error lines for ${junkCount} junk packets`);
  t.regex(String(lines[0]?.err), /matches no call/);
  socket.destroy();
  const [summary] = await daemon.whenEvents('protocol.error.suppressed');
  t.is(Number(summary!.count) + lines.length, junkCount, 'every junk packet is counted, in a line or in the summary');
  t.true(daemon.logText().length < 64 * 1024, `${daemon.logText().length} bytes of log`);
});

test.serial('relay ANSWERs on a connection that did not enable the relay are dropped without decoding', async (t) => {
  const daemon = await TestVirtauthd.start();
  t.teardown(() => daemon.stop());
  const socket = await connectRaw(daemon.listener('unix').path!);
  t.teardown(() => socket.destroy());

  const answers = 2_000;
  // Bodies that would not decode as an ANSWER: decoding them would log why, one line each.
  const answer = {
    prog: RELAY_PROGRAM,
    vers: RELAY_PROTOCOL_VERSION,
    proc: RelayProc.ANSWER,
    type: MessageType.MESSAGE,
    status: MessageStatus.OK,
  };
  socket.write(repeatedPackets(answer, answers, Buffer.from([0xff, 0xff, 0xff, 0xff])));
  const answered = readPackets(socket, 1);
  socket.write(encodePacket({ ...hostnameCall, proc: RemoteProc.AUTH_LIST, serial: 9 }, xdr.xvoid, undefined));
  t.is(readHeader(new XdrReader(await answered, 4)).serial, 9);

  const rejected = daemon.events('relay.answer.rejected');
  t.true(rejected.length >= 1 && rejected.length <= 20, `${rejected.length} lines for ${answers} stray answers`);
  t.true(
    rejected.every((r) => /not enabled/.test(String(r.reason))),
    'none was decoded',
  );
});

test.serial(
  "before authentication a packet over 128 KiB ends the connection before it is buffered; after it, libvirt's sizes hold",
  async (t) => {
    const alicePassword = 'alice-Pa55-b1g-packets';
    const daemon = await TestVirtauthd.start({ users: { alice: alicePassword } });
    t.teardown(() => daemon.stop());

    const socket = await connectRaw(daemon.listener('unix').path!);
    t.teardown(() => socket.destroy());
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    socket.resume();
    // The length word of a 1 MiB call and its header: the daemon hangs up without waiting for the rest.
    const head = encodePacket({ ...hostnameCall, serial: 1 }, xdr.xvoid, undefined);
    head.writeUInt32BE(1 << 20, 0);
    socket.write(head);
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([
      closed,
      new Promise((_, reject) => (giveUp = setTimeout(() => reject(new Error('the daemon kept waiting for the 1 MiB packet')), 10_000))),
    ]).finally(() => clearTimeout(giveUp));
    t.regex(
      String(daemon.events('protocol.error').at(-1)?.err),
      new RegExp(`packet length ${1 << 20} exceeds the maximum of ${PRE_AUTH_PACKET_MAX}`),
    );

    const client = await RawClient.connect(daemon.uri());
    t.teardown(() => client.close());
    await client.login({ authname: 'alice', passphrase: alicePassword });
    // An authenticated client may send a 1 MiB packet: a procedure the daemon lacks is refused, and the connection stays.
    const big = Buffer.alloc(1 << 20, 0x61);
    const refused = await client.rpc
      .call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, 0x7fff, xdr.fixedOpaque(big.length), big, xdr.xvoid)
      .then(
        () => null,
        (e: Error) => e.message,
      );
    t.regex(String(refused), /unknown procedure/);
    t.is(await client.openAndGetHostname(), (await import('node:os')).hostname());
  },
);
