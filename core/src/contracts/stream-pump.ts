// The contract of a stream pump: something that copies a stream's data packets from one socket to
// another without JavaScript reading them (virtauthd's is native code, in @virtauth/peercred).
// The gateway's pass-through (@virtauth/drivers) decides what may be pumped; the pump only
// copies, and stops at anything else.

import type { Duplex } from 'node:stream';

export interface StreamPumpJob {
  /** The socket read from; nothing else reads it until the pump is done. */
  from: Duplex;
  /** The socket written to; nothing else writes it until the pump is done. */
  to: Duplex;
  /** The stream's call: only its data packets (type STREAM, status CONTINUE) are passed on. */
  prog: number;
  vers: number;
  proc: number;
  serial: number;
  /** Bytes of the packet in progress not read yet: passed on first, whatever they are. */
  remaining: number;
  /** A longer packet stops the pump (and is refused by the framer it goes back to). */
  maxPacket: number;
}

export interface RunningStreamPump {
  /** Stop at the next packet boundary: something else waits to be written to `to`. */
  stop(): void;
  /** Give up at once, mid-packet if need be: the connection is closing. */
  cancel(): void;
}

/**
 * `done` runs once: with null and the bytes read past the last packet passed on (the start of a
 * packet that is not more data, to be handled as usual), or with an error, after which the
 * destination may hold part of a packet and both connections must close.
 */
export type StreamPumpDone = (error: StreamPumpError | null, leftover: Buffer) => void;

/** Why a pump failed: an errno name (or EPROTO for input that ended inside a packet), and where. */
export type StreamPumpError = Error & { code?: string; side?: 'source' | 'destination' };

export interface StreamPump {
  /**
   * A pump set aside for these two streams, or undefined when they cannot be pumped (not plain
   * sockets with descriptors, e.g. TLS) or too many pumps are at work.
   */
  reserve(from: Duplex, to: Duplex): ReservedStreamPump | undefined;
}

export interface ReservedStreamPump {
  /** Starts copying; throws when it cannot start. Either way the reservation is used up. */
  start(job: StreamPumpJob, done: StreamPumpDone): RunningStreamPump;
  /** Gives the reservation back unused (the connection closed before the pump could start). */
  release(): void;
}
