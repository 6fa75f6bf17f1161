// Larger socket reads for the sockets the remote driver connects. Node reads at most 64 KiB per
// system call, so one of libvirt's 256 KiB stream packets took four reads in virtauthd, and, when
// the gateway passes it on, four writes and four wake-ups of the client. `onread` lets a socket
// we create read into memory we give it; reads that fill what they were given get more room next
// time, up to LARGE_READ_MAX, and a connection that only makes small calls keeps a small buffer.

import net from 'node:net';
import type { Duplex } from 'node:stream';

/** The first read buffer of a connection: enough for most replies. */
export const LARGE_READ_FIRST = 16 * 1024;
/**
 * The most one read may take. Reads of ~220 KiB (all a unix socket's buffer holds) made some
 * benchmark runs fall into a slow lock-step with the client, whose socket buffer one such write
 * overfills; 128 KiB did not.
 */
export const LARGE_READ_MAX = 128 * 1024;
/** Reads this small are copied out, so their buffer serves the next read too. */
const COPY_AT_MOST = 4 * 1024;
/**
 * Small reads in a row before the buffer shrinks: a stream's data comes with the odd small read
 * between the large ones (the tail of a packet), which must not cost the large buffer.
 */
const SMALL_READS_TO_SHRINK = 16;

/**
 * `onread` options for net.connect. Bytes read go straight to the stream's 'data' listeners
 * while it flows and holds nothing, and through push (node's buffering) otherwise. Going around
 * the readable buffer keeps pause() meaning "read no more": after a push, node's stream machinery
 * reads ahead up to its high-water mark even when paused, restarting the socket's reads. A read
 * larger than COPY_AT_MOST is passed on as a view, and the next read gets fresh memory, since the
 * bytes passed on may still be queued for writing to another socket or held by a framer. The
 * buffer is never written into while any part of it is out.
 */
export function largeReads(): net.OnReadOpts {
  let room = LARGE_READ_FIRST;
  let current: Buffer | undefined;
  let smallReads = 0;
  return {
    buffer: () => (current ??= Buffer.allocUnsafeSlow(room)),
    callback(this: net.Socket, bytes: number, into: Uint8Array): boolean {
      const read = Buffer.from(into.buffer, into.byteOffset, bytes);
      let chunk: Buffer;
      if (bytes <= COPY_AT_MOST) {
        chunk = Buffer.allocUnsafe(bytes);
        read.copy(chunk);
      } else {
        chunk = read;
        current = undefined;
      }
      if (bytes === into.byteLength && room < LARGE_READ_MAX) {
        room = Math.min(room * 4, LARGE_READ_MAX);
        current = undefined;
      }
      smallReads = bytes < room / 8 ? smallReads + 1 : 0;
      if (smallReads >= SMALL_READS_TO_SHRINK && room > LARGE_READ_FIRST) {
        // Bulk data is over: small replies need no (and should not pin a) large buffer.
        room = Math.max(room / 4, LARGE_READ_FIRST);
        current = undefined;
        smallReads = 0;
      }
      if (this.readableFlowing === true && this.readableLength === 0 && this.listenerCount('data') > 0) {
        this.emit('data', chunk);
        return true;
      }
      return this.push(chunk);
    },
  };
}

/** Sockets made by connectWithLargeReads: pause() stops their reads before it returns. */
const readingIntoOwnBuffers = new WeakSet<Duplex>();

/**
 * net.connect with largeReads(). Such a socket also stops reading as soon as it is paused, and
 * stays stopped until resumed (node stops reads on pause only for `onread` sockets, and its
 * readable buffer would read ahead after a push), which is what lets another reader (the
 * gateway's stream pump) take over its descriptor for a while.
 */
export function connectWithLargeReads(options: net.NetConnectOpts): net.Socket {
  const socket = net.connect({ ...options, onread: largeReads() });
  readingIntoOwnBuffers.add(socket);
  return socket;
}

/** Whether `stream` is a socket from connectWithLargeReads. */
export function stopsReadingOnPause(stream: Duplex): boolean {
  return readingIntoOwnBuffers.has(stream);
}
