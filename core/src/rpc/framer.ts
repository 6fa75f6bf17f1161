// Splits a byte stream into whole packets. The length word is checked before anything is
// allocated for the packet, so a peer cannot make us reserve more than PACKET_MAX bytes.

import { PACKET_MAX, PACKET_MIN } from './packet.js';

export class FramingError extends Error {
  override readonly name = 'FramingError';
}

/** Takes one packet; returning exactly false asks the framer to hold the rest (the reader is busy). */
export type PacketSink = (packet: Buffer) => unknown;

/**
 * Takes large packets in pieces as their bytes arrive, instead of whole once the last byte is in
 * (a relay of stream data then neither waits for nor copies 256 KiB packets). Only packets of at
 * least CUT_THROUGH_MIN bytes whose header has arrived are offered.
 */
export interface PacketCutThrough {
  /**
   * The first bytes of a packet of `length` bytes (the header among them): true to take the rest
   * as pieces; 'taken' when the handler reads the rest of the packet from the source itself, so
   * the framer starts on a new packet with the next bytes it is given.
   */
  begin(head: Buffer, length: number): boolean | 'taken';
  /** The next bytes of the packet begun; `last` with its final bytes. */
  piece(bytes: Buffer, last: boolean): void;
}

/** Packets shorter than this are always assembled: one socket read (64 KiB) holds them. */
export const CUT_THROUGH_MIN = 64 * 1024;

export class PacketFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expected = -1;
  private maxPacket = PACKET_MAX;
  private cutThrough: PacketCutThrough | undefined;
  /** Bytes of the packet being passed on in pieces that have not arrived yet. */
  private pieceRemaining = 0;
  /** The packet being assembled was offered and declined: it is not offered again. */
  private declined = false;

  /** Offers large packets to `handler` in pieces from now on (see PacketCutThrough). */
  setCutThrough(handler: PacketCutThrough | undefined): void {
    this.cutThrough = handler;
  }

  /** Lowers (or restores) the largest packet accepted, e.g. to a few KiB before authentication. */
  setMaxPacket(bytes: number): void {
    this.maxPacket = Math.min(Math.max(bytes, PACKET_MIN), PACKET_MAX);
  }

  /**
   * Feeds bytes; calls `onPacket` for each complete packet (length word included). When
   * `onPacket` returns false, delivery stops there and the rest stays buffered until `resume`.
   */
  push(chunk: Buffer, onPacket: PacketSink): void {
    if (this.pieceRemaining > 0) {
      // The next bytes of a packet passed on in pieces; nothing is buffered meanwhile.
      const take = Math.min(this.pieceRemaining, chunk.length);
      this.pieceRemaining -= take;
      this.cutThrough!.piece(take === chunk.length ? chunk : chunk.subarray(0, take), this.pieceRemaining === 0);
      if (take === chunk.length) return;
      chunk = chunk.subarray(take);
    }
    // Fast path: nothing buffered and the chunk holds whole packets.
    if (this.buffered === 0) {
      let off = 0;
      let stopped = false;
      while (chunk.length - off >= 4) {
        const len = chunk.readUInt32BE(off);
        this.check(len);
        if (chunk.length - off < len) {
          if (this.beginPieces(chunk.subarray(off), len)) return;
          break;
        }
        off += len;
        if (onPacket(chunk.subarray(off - len, off)) === false) {
          stopped = true;
          break;
        }
      }
      if (off === chunk.length) return;
      chunk = chunk.subarray(off);
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (stopped) return;
    } else {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    this.resume(onPacket);
  }

  /** Delivers the packets already buffered, until `onPacket` returns false or none is whole. */
  resume(onPacket: PacketSink): void {
    for (;;) {
      if (this.expected < 0) {
        if (this.buffered < 4) return;
        const head = this.peek4();
        this.check(head);
        this.expected = head;
      }
      if (this.buffered < this.expected) {
        if (this.buffered >= PACKET_MIN && this.beginPieces(null, this.expected)) this.expected = -1;
        return;
      }
      const packet = this.take(this.expected);
      this.expected = -1;
      this.declined = false;
      if (onPacket(packet) === false) return;
    }
  }

  /**
   * Offers the start of a packet that has not fully arrived (`head`, or else all that is
   * buffered) to the cut-through handler; true when it took it.
   */
  private beginPieces(head: Buffer | null, length: number): boolean {
    const handler = this.cutThrough;
    if (!handler || length < CUT_THROUGH_MIN || this.declined) return false;
    let outcome: boolean | 'taken';
    if (head === null) {
      // Peeked, not taken: a handler that declines leaves the bytes to be assembled.
      head = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      outcome = handler.begin(head, length);
      if (!outcome) {
        this.chunks = [head];
        this.declined = true;
        return false;
      }
      this.chunks = [];
      this.buffered = 0;
    } else {
      if (head.length < PACKET_MIN) return false;
      outcome = handler.begin(head, length);
      if (!outcome) {
        this.declined = true;
        return false;
      }
    }
    this.pieceRemaining = outcome === 'taken' ? 0 : length - head.length;
    return true;
  }

  /** The largest packet accepted now. */
  get maxPacketBytes(): number {
    return this.maxPacket;
  }

  /** Bytes held for a packet that has not fully arrived. */
  get pending(): number {
    return this.buffered;
  }

  private check(len: number): void {
    if (len < PACKET_MIN) throw new FramingError(`packet length ${len} is below the minimum of ${PACKET_MIN}`);
    if (len > this.maxPacket) throw new FramingError(`packet length ${len} exceeds the maximum of ${this.maxPacket}`);
  }

  private peek4(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const b = Buffer.concat(this.chunks, Math.min(4, this.buffered));
    return b.readUInt32BE(0);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    return out;
  }
}
