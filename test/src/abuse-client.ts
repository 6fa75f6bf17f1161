// A client that misbehaves on purpose, for the resource-limit tests and bench/abuse.mjs: packets
// built in bulk, and sending without ever reading.

import type net from 'node:net';
import { encodePacket, xdr } from '@virtauth/core';

type HeaderFields = Parameters<typeof encodePacket>[0];

/** `count` copies of one packet with serials 0..count-1, as one buffer. */
export function repeatedPackets(fields: Omit<HeaderFields, 'serial'>, count: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const one = encodePacket({ ...fields, serial: 0 }, xdr.fixedOpaque(body.length), body);
  const out = Buffer.allocUnsafe(count * one.length);
  for (let n = 0; n < count; n++) {
    one.copy(out, n * one.length);
    out.writeUInt32BE(n, n * one.length + 20);
  }
  return out;
}

/**
 * Sends `bytes` in 16 KiB pieces, each once the last has gone (so what the kernel took is known
 * to a piece), and never reads. Resolves with the bytes taken once that count has not moved for
 * `quietMs`, or all of them.
 */
export async function sendWithoutReading(socket: net.Socket, bytes: Buffer, quietMs = 400): Promise<number> {
  let accepted = 0;
  let lastMove = performance.now();
  const sendFrom = (off: number): void => {
    if (off >= bytes.length || socket.destroyed) return;
    const piece = bytes.subarray(off, off + 16_384);
    socket.write(piece, (error) => {
      if (error) return;
      accepted += piece.length;
      lastMove = performance.now();
      sendFrom(off + piece.length);
    });
  };
  sendFrom(0);
  while (accepted < bytes.length && performance.now() - lastMove < quietMs) {
    await new Promise((resolve) => setTimeout(resolve, quietMs / 4));
  }
  return accepted;
}
