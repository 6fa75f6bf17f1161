// Packet framing and the packet header: whole packets out of any chunking of the byte stream,
// bad length words refused before anything is allocated, and libvirt's exact header bytes.

import test from 'ava';
import fc from 'fast-check';
import * as x from '../src/xdr/codec.js';
import { XdrReader } from '../src/xdr/codec.js';
import { CUT_THROUGH_MIN, FramingError, PacketFramer } from '../src/rpc/framer.js';
import {
  encodePacket,
  errorPayload,
  errorToPayload,
  MessageStatus,
  MessageType,
  PACKET_MAX,
  PACKET_MIN,
  payloadToError,
  readHeader,
  type Header,
} from '../src/rpc/packet.js';
import { VirError } from '../src/errors.js';

const REMOTE = 0x20008086;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

const call = (proc: number, serial: number, payload: Buffer = Buffer.alloc(0)): Buffer =>
  encodePacket(
    { prog: REMOTE, vers: 1, proc, type: MessageType.CALL, serial, status: MessageStatus.OK },
    x.fixedOpaque(payload.length),
    payload,
  );

function collect(framer: PacketFramer, chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const c of chunks) framer.push(c, (p) => out.push(Buffer.from(p)));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Header bytes (libvirt-wire.md §4.1)

const AUTH_LIST_CALL = '0000001c 20008086 00000001 00000042 00000000 00000000 00000000';
const AUTH_LIST_REPLY_SASL = '00000024 20008086 00000001 00000042 00000001 00000000 00000000 00000001 00000001';

test("the AUTH_LIST call encodes to libvirt's 28 bytes", (t) => {
  const packet = encodePacket(
    { prog: REMOTE, vers: 1, proc: 66, type: MessageType.CALL, serial: 0, status: MessageStatus.OK },
    x.xvoid,
    undefined,
  );
  t.is(hex(packet), hex(bytes(AUTH_LIST_CALL)));
  t.is(packet.length, PACKET_MIN);
});

test("the [SASL] reply to AUTH_LIST encodes to libvirt's 36 bytes", (t) => {
  const types = x.struct({ types: x.array(x.int, 20) });
  const packet = encodePacket({ prog: REMOTE, vers: 1, proc: 66, type: MessageType.REPLY, serial: 0, status: MessageStatus.OK }, types, {
    types: [1],
  });
  t.is(hex(packet), hex(bytes(AUTH_LIST_REPLY_SASL)));
});

test('readHeader decodes both example packets field by field', (t) => {
  const callHeader = readHeader(new XdrReader(bytes(AUTH_LIST_CALL), 4));
  t.deepEqual(callHeader, { prog: REMOTE, vers: 1, proc: 66, type: MessageType.CALL, serial: 0, status: MessageStatus.OK });
  const r = new XdrReader(bytes(AUTH_LIST_REPLY_SASL), 4);
  t.deepEqual(readHeader(r), { prog: REMOTE, vers: 1, proc: 66, type: MessageType.REPLY, serial: 0, status: MessageStatus.OK });
  t.deepEqual(x.array(x.int, 20).decode(r), [1]);
  t.is(r.remaining, 0);
});

test('header fields keep their full unsigned / signed ranges', (t) => {
  const h: Header = {
    prog: 0xffffffff,
    vers: 0x80000000,
    proc: -1,
    type: MessageType.STREAM_HOLE,
    serial: 0xfffffffe,
    status: MessageStatus.CONTINUE,
  };
  const packet = encodePacket(h, x.xvoid, undefined);
  t.is(hex(packet), '0000001c' + 'ffffffff' + '80000000' + 'ffffffff' + '00000006' + 'fffffffe' + '00000002');
  t.deepEqual(readHeader(new XdrReader(packet, 4)), h);
});

test('the length word counts itself, the header and the payload', (t) => {
  const packet = encodePacket({ prog: REMOTE, vers: 1, proc: 59, type: MessageType.REPLY, serial: 7, status: 0 }, x.string(), 'host');
  t.is(packet.readUInt32BE(0), packet.length);
  t.is(packet.length, 28 + 4 + 4);
});

test('an error payload survives encode and decode with every field', (t) => {
  const e = new VirError({ code: 42, domain: 10, detail: "no domain with matching name 'vm9'", int1: 3 });
  const packet = encodePacket(
    { prog: REMOTE, vers: 1, proc: 23, type: MessageType.REPLY, serial: 4, status: MessageStatus.ERROR },
    errorPayload,
    errorToPayload(e),
  );
  const r = new XdrReader(packet, 4);
  readHeader(r);
  const back = payloadToError(errorPayload.decode(r));
  t.is(back.code, 42);
  t.is(back.domain, 10);
  t.is(back.message, "Domain not found: no domain with matching name 'vm9'");
  t.is(back.str1, 'Domain not found: %s');
  t.is(back.str2, "no domain with matching name 'vm9'");
  t.is(back.str3, null);
  t.is(back.int1, 3);
  t.is(back.int2, -1);
  t.is(back.level, 2);
});

test("an error payload without a message gets libvirt's fallback text", (t) => {
  const payload = {
    code: 1,
    domain: 7,
    message: null,
    level: 2,
    dom: null,
    str1: null,
    str2: null,
    str3: null,
    int1: 0,
    int2: 0,
    net: null,
  };
  t.is(payloadToError(payload).message, 'Library function returned error but did not set virError');
});

// ---------------------------------------------------------------------------------------------
// Framing

const threePackets = [call(1, 0), call(59, 1, Buffer.from('abcdefgh')), call(4, 2, Buffer.alloc(40, 7))];
const stream = Buffer.concat(threePackets);

test('a stream split at every byte boundary yields the same packets', (t) => {
  for (let cut = 0; cut <= stream.length; cut++) {
    const got = collect(new PacketFramer(), [stream.subarray(0, cut), stream.subarray(cut)]);
    t.deepEqual(got.map(hex), threePackets.map(hex), `cut at ${cut}`);
  }
});

test('a stream split at every pair of boundaries yields the same packets', (t) => {
  for (let a = 0; a <= stream.length; a++) {
    for (let b = a; b <= stream.length; b++) {
      const got = collect(new PacketFramer(), [stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)]);
      if (got.map(hex).join() !== threePackets.map(hex).join()) t.fail(`cuts at ${a} and ${b}`);
    }
  }
  t.pass();
});

test('one byte at a time yields the same packets, and nothing is held afterwards', (t) => {
  const framer = new PacketFramer();
  const chunks = [...stream].map((b) => Buffer.from([b]));
  t.deepEqual(collect(framer, chunks).map(hex), threePackets.map(hex));
  t.is(framer.pending, 0);
});

test('many packets in one chunk are all delivered, in order', (t) => {
  const many = Array.from({ length: 500 }, (_, i) => call(i % 400, i, Buffer.alloc(i % 13, i & 0xff)));
  const got = collect(new PacketFramer(), [Buffer.concat(many)]);
  t.is(got.length, 500);
  t.deepEqual(got.map(hex), many.map(hex));
});

test('a partial packet is held until it completes', (t) => {
  const framer = new PacketFramer();
  const got = collect(framer, [Buffer.concat([threePackets[0]!, threePackets[1]!.subarray(0, 10)])]);
  t.is(got.length, 1);
  t.is(framer.pending, 10);
  const rest = collect(framer, [threePackets[1]!.subarray(10)]);
  t.deepEqual(rest.map(hex), [hex(threePackets[1]!)]);
  t.is(framer.pending, 0);
});

test('a sink that returns false holds the rest, whole or split, until resume', (t) => {
  const packets = [call(1, 1), call(2, 2, Buffer.alloc(8, 7)), call(3, 3), call(4, 4)];
  const stream = Buffer.concat(packets);
  // Stop after each packet; the rest arrives in two chunks split inside the third packet.
  for (const split of [0, 30, 50, 60, stream.length]) {
    const framer = new PacketFramer();
    const out: Buffer[] = [];
    const takeOne = (p: Buffer) => {
      out.push(Buffer.from(p));
      return false;
    };
    framer.push(stream.subarray(0, split), takeOne);
    if (split < stream.length) framer.push(stream.subarray(split), takeOne);
    t.true(out.length <= 2, `split ${split}: one packet per push at most`);
    for (let n = 0; n < packets.length && out.length < packets.length; n++) framer.resume(takeOne);
    t.deepEqual(out.map(hex), packets.map(hex), `split ${split}`);
    t.is(framer.pending, 0);
  }
});

/** The packets' bytes cut into chunks at the offsets the seeds pick. */
function cutAt(packets: Buffer[], cutSeeds: number[]): Buffer[] {
  const all = Buffer.concat(packets);
  const cuts = [...new Set(cutSeeds.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts, all.length]) {
    chunks.push(all.subarray(prev, c));
    prev = c;
  }
  return chunks;
}

test('property: any chunking of any packet sequence reproduces the packets', (t) => {
  const packetArb = fc
    .tuple(fc.nat(500), fc.nat(), fc.uint8Array({ maxLength: 64 }))
    .map(([proc, serial, p]) => call(proc, serial >>> 0, Buffer.from(p)));
  fc.assert(
    fc.property(fc.array(packetArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (packets, cutSeeds) => {
      return collect(new PacketFramer(), cutAt(packets, cutSeeds)).map(hex).join() === packets.map(hex).join();
    }),
    { numRuns: 500 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// Cut-through: large packets in pieces as they arrive

/**
 * Feeds `chunks`; large packets the handler takes come out as their head and pieces, the rest
 * whole. `order` is every packet in the order it began to come out, pieced ones reassembled.
 */
function collectPieces(chunks: Buffer[], take: (head: Buffer, length: number) => boolean = () => true) {
  const framer = new PacketFramer();
  const whole: Buffer[] = [];
  const pieced: { length: number; parts: Buffer[]; done: boolean; index: number }[] = [];
  const offers: number[] = [];
  const order: Buffer[] = [];
  framer.setCutThrough({
    begin(head, length) {
      offers.push(length);
      if (!take(head, length)) return false;
      pieced.push({ length, parts: [Buffer.from(head)], done: false, index: order.length });
      order.push(Buffer.alloc(0));
      return true;
    },
    piece(bytes, last) {
      const current = pieced[pieced.length - 1]!;
      if (current.done) throw new Error('a piece after the last one');
      current.parts.push(Buffer.from(bytes));
      current.done = last;
    },
  });
  for (const chunk of chunks) {
    framer.push(chunk, (p) => {
      whole.push(Buffer.from(p));
      order.push(Buffer.from(p));
    });
  }
  for (const entry of pieced) order[entry.index] = Buffer.concat(entry.parts);
  return { framer, whole, pieced, offers, order };
}

const big = (serial: number, size: number) => call(1, serial, Buffer.alloc(size, serial));

test('cut-through: a large packet comes out as its head and the pieces that arrive, in order, between whole packets', (t) => {
  const packets = [call(1, 1), big(2, 256 * 1024), call(3, 3), big(4, CUT_THROUGH_MIN), call(5, 5)];
  const all = Buffer.concat(packets);
  const chunks: Buffer[] = [];
  for (let off = 0; off < all.length; off += 65536) chunks.push(all.subarray(off, off + 65536));
  const { whole, pieced, order, framer } = collectPieces(chunks);
  t.deepEqual(
    whole.map(hex),
    [packets[0], packets[2], packets[4]].map((p) => hex(p!)),
  );
  t.is(pieced.length, 2);
  t.true(pieced.every((p) => p.done && p.parts.length > 1));
  t.is(hex(order.find((p) => p.length === packets[1]!.length)!), hex(packets[1]!));
  t.is(framer.pending, 0);
});

test('cut-through: packets below the threshold, or declined, are assembled whole and offered once', (t) => {
  const small = big(1, CUT_THROUGH_MIN - 100);
  const large = big(2, 200 * 1024);
  const all = Buffer.concat([small, large]);
  const chunks = [all.subarray(0, 1000), all.subarray(1000, 80_000), all.subarray(80_000, 150_000), all.subarray(150_000)];
  const { whole, pieced, offers } = collectPieces(chunks, () => false);
  t.deepEqual(whole.map(hex), [hex(small), hex(large)]);
  t.is(pieced.length, 0);
  t.deepEqual(offers, [large.length], 'offered once, when its header had arrived');
});

test('cut-through: a header split over chunks is offered once it is whole; a length word past the limit never is', (t) => {
  const large = big(7, 100 * 1024);
  for (const split of [1, 4, 27, 28, 29]) {
    const { pieced, offers } = collectPieces([large.subarray(0, split), large.subarray(split, 70_000), large.subarray(70_000)]);
    t.is(offers.length, 1, `split ${split}`);
    t.is(hex(Buffer.concat(pieced[0]!.parts)), hex(large), `split ${split}`);
  }
  const head = Buffer.from(large.subarray(0, 28));
  head.writeUInt32BE(PACKET_MAX + 1, 0);
  const framer = new PacketFramer();
  framer.setCutThrough({ begin: () => t.fail('offered') as never, piece: () => t.fail('piece') });
  t.throws(() => framer.push(Buffer.concat([head, Buffer.alloc(70_000)]), () => {}), { instanceOf: FramingError });
});

test('property: cut-through or not, any chunking reproduces the packets in order', (t) => {
  const packetArb = fc
    .tuple(fc.nat(), fc.oneof(fc.nat(200), fc.integer({ min: CUT_THROUGH_MIN - 40, max: CUT_THROUGH_MIN + 70_000 })))
    .map(([serial, size]) => big(serial & 0xff, size));
  fc.assert(
    fc.property(
      fc.array(packetArb, { minLength: 1, maxLength: 5 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      fc.boolean(),
      (packets, cutSeeds, taking) => {
        const { order, pieced } = collectPieces(cutAt(packets, cutSeeds), () => taking);
        return order.map(hex).join() === packets.map(hex).join() && pieced.every((p) => p.done && p.length >= CUT_THROUGH_MIN);
      },
    ),
    { numRuns: 60 },
  );
  t.pass();
});

test('length words below 28 are refused', (t) => {
  for (const len of [0, 1, 4, 27]) {
    const word = Buffer.alloc(4);
    word.writeUInt32BE(len);
    t.throws(() => new PacketFramer().push(word, () => t.fail('no packet expected')), {
      instanceOf: FramingError,
      message: new RegExp(`length ${len} is below the minimum of 28`),
    });
  }
});

test('exactly 28 and exactly 33554436 are accepted as lengths', (t) => {
  t.is(collect(new PacketFramer(), [bytes(AUTH_LIST_CALL)]).length, 1);
  const framer = new PacketFramer();
  const head = Buffer.alloc(8);
  head.writeUInt32BE(PACKET_MAX);
  t.is(PACKET_MAX, 33554436);
  t.notThrows(() => framer.push(head, () => t.fail('incomplete packet delivered')));
  t.is(framer.pending, 8);
});

test('length words above 33554436 are refused before anything is allocated for them', (t) => {
  const originalAllocUnsafe = Buffer.allocUnsafe;
  const originalConcat = Buffer.concat;
  const allocations: number[] = [];
  Buffer.allocUnsafe = ((n: number) => {
    allocations.push(n);
    return originalAllocUnsafe(n);
  }) as typeof Buffer.allocUnsafe;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    allocations.push(total ?? list.reduce((s, b) => s + b.length, 0));
    return originalConcat(list, total);
  }) as typeof Buffer.concat;
  try {
    for (const len of [PACKET_MAX + 1, 0x7fffffff, 0xffffffff]) {
      const word = Buffer.alloc(4);
      word.writeUInt32BE(len);
      // Whole word in one chunk, and the word split over two chunks (the buffered path).
      t.throws(() => new PacketFramer().push(Buffer.concat([word, Buffer.alloc(4)]), () => {}), {
        instanceOf: FramingError,
        message: /exceeds the maximum of 33554436/,
      });
      const framer = new PacketFramer();
      framer.push(word.subarray(0, 2), () => {});
      t.throws(() => framer.push(word.subarray(2), () => {}), { instanceOf: FramingError });
    }
  } finally {
    Buffer.allocUnsafe = originalAllocUnsafe;
    Buffer.concat = originalConcat;
  }
  t.true(
    allocations.every((n) => n <= 16),
    `allocations: ${allocations.join(',')}`,
  );
});

test('a bad length after good packets in the same chunk: the good ones are delivered first', (t) => {
  const framer = new PacketFramer();
  const delivered: Buffer[] = [];
  const bad = Buffer.alloc(4);
  bad.writeUInt32BE(3);
  t.throws(() => framer.push(Buffer.concat([threePackets[0]!, threePackets[1]!, bad]), (p) => delivered.push(p)), {
    instanceOf: FramingError,
  });
  t.is(delivered.length, 2);
});
