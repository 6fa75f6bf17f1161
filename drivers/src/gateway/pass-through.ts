// Passes a client's remote-program connection through to its own upstream libvirt daemon, packet
// by packet, once the upstream is open: calls and their replies, events, and stream data, left as
// the peers encoded them. Keepalive stays with each connection (RpcConnection answers it before
// any packet gets here), so either side's silence is detected on its own link.
//
// Serials are not remapped. Each client has its own upstream connection, and from the hand-over
// on virtauthd makes no call of its own on that connection's remote program (RpcConnection
// refuses them once the program is intercepted, and the open's own calls have all been answered
// by then), so the serial space belongs to the client alone. What the gateway keeps per serial is
// only what it needs to stay honest: which calls await a reply (a reply to anything else is
// dropped) and which streams are open (stream data for any other serial is dropped, as libvirtd
// does with stray stream packets).
//
// Stream data of an open stream is passed on as its bytes arrive, not once a whole packet (up to
// 256 KiB for libvirt's streams) has been read: the header is checked, then the rest is copied
// through piece by piece (RpcConnection's PacketPieces), so a download or upload streams through
// virtauthd as through a plain proxy instead of stopping at every packet.

import {
  ErrorCode,
  ErrorDomain,
  MessageStatus,
  MessageType,
  PACKET_MIN,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  VirError,
  encodePacket,
  errorPayload,
  errorToPayload,
  rpcError,
  type Header,
  type PacketPieces,
  type ReservedStreamPump,
  type RpcConnection,
  type RunningStreamPump,
  type StreamPump,
  type StreamPumpError,
} from '@virtauth/core';
import { stopsReadingOnPause } from '../remote/large-reads.js';
import { REMOTE_PROC_LAST, STREAM_PROCEDURES } from './remote-procedures.js';

/** What an access-control step sees of a call before it is passed on. */
export interface ForwardedCall {
  proc: number;
  serial: number;
  /** The call's XDR arguments, undecoded: a check decodes only what it needs (object, flags). */
  args: Buffer;
}

/**
 * Decides whether a call may go on: returns normally to pass it, throws (or rejects with) a
 * VirError to answer the client with that error instead. While an asynchronous check runs, the
 * client's later packets wait, so calls and stream data keep their order.
 */
export type CallCheck = (call: ForwardedCall) => void | Promise<void>;

/** A successful reply to a forwarded call, before it reaches the client. */
export interface ForwardedReply {
  proc: number;
  serial: number;
  /** The upstream answered with an error (passed on as is; the check only forgets the call). */
  error: boolean;
  /** The reply's XDR result (or error), undecoded. */
  payload: Buffer;
}

/**
 * Looks at a reply before the client gets it: returns nothing to pass it as is, a payload to send
 * instead (a filtered list), or throws (rejects with) a VirError to answer the call with that.
 */
export type ReplyCheck = (reply: ForwardedReply) => void | Buffer | Promise<void | Buffer>;

/** Whether an event (a MESSAGE packet) may reach the client. */
export type EventCheck = (event: { proc: number; payload: Buffer }) => boolean | Promise<boolean>;

export interface PassThroughLogger {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface PassThroughOptions {
  /** The client's connection to virtauthd. */
  client: RpcConnection;
  /** virtauthd's connection to the upstream daemon, authenticated and opened. */
  upstream: RpcConnection;
  log: PassThroughLogger;
  /** The access-control hook: every call passes it before it is forwarded. */
  checkCall?: CallCheck;
  /** Access control of replies (lookups, lists); replies keep the upstream's order either way. */
  checkReply?: ReplyCheck;
  /** Access control of events. */
  checkEvent?: EventCheck;
  /** Calls awaiting their reply at once; beyond it the client is not read (default 4096). */
  maxCallsInFlight?: number;
  /** Bytes waiting to be written to one side before the other side is no longer read (default 1 MiB). */
  maxBuffered?: number;
  /** Copies large stream data from the upstream to the client outside JavaScript, when it can. */
  streamPump?: StreamPump;
}

/** A pump at work (or waiting for the packet's first bytes to leave before it starts). */
interface PumpInProgress {
  reserved: ReservedStreamPump;
  running: RunningStreamPump | undefined;
  /** Something waits to be written to the client: stop at the next packet boundary. */
  stopRequested: boolean;
}

interface OpenStream {
  proc: number;
  /** The client sent its end (finish or abort): the upstream's next end closes the stream. */
  clientEnded: boolean;
}

/** Header plus the length word: where a packet's payload starts. */
const PAYLOAD_OFFSET = PACKET_MIN;

/** The packet with its header and a new payload (the length word rewritten). */
function withPayload(packet: Buffer, payload: Buffer): Buffer {
  const out = Buffer.concat([packet.subarray(0, PAYLOAD_OFFSET), payload]);
  out.writeUInt32BE(out.length, 0);
  return out;
}

export class PassThrough {
  private readonly client: RpcConnection;
  private readonly upstream: RpcConnection;
  private readonly log: PassThroughLogger;
  private readonly checkCall: CallCheck | undefined;
  private readonly checkReply: ReplyCheck | undefined;
  private readonly checkEvent: EventCheck | undefined;
  private readonly maxCallsInFlight: number;
  private readonly maxBuffered: number;
  private readonly streamPump: StreamPump | undefined;
  private pump: PumpInProgress | undefined;
  /** Serial -> procedure of each forwarded call still waiting for its reply. */
  private readonly calls = new Map<number, number>();
  private readonly streams = new Map<number, OpenStream>();
  /** Client packets that arrived while an asynchronous check ran, in order. */
  private readonly queued: { header: Header; packet: Buffer }[] = [];
  private checking = false;
  /**
   * Upstream packets that arrived while an asynchronous reply or event check ran. Everything the
   * upstream sends waits behind it (replies, events, stream data), so the client sees the
   * upstream's own order: a filtered reply neither overtakes nor is overtaken.
   */
  private readonly upstreamQueued: { header: Header; packet: Buffer }[] = [];
  private upstreamChecking = false;
  private heldForCalls = false;
  /** Connections whose output is full: the other side is not read until they drain. */
  private readonly draining = new Set<RpcConnection>();
  private ended = false;

  constructor(opts: PassThroughOptions) {
    this.client = opts.client;
    this.upstream = opts.upstream;
    this.log = opts.log;
    this.checkCall = opts.checkCall;
    this.checkReply = opts.checkReply;
    this.checkEvent = opts.checkEvent;
    this.maxCallsInFlight = opts.maxCallsInFlight ?? 4096;
    this.maxBuffered = opts.maxBuffered ?? 1024 * 1024;
    this.streamPump = opts.streamPump;
    this.client.interceptProgram(REMOTE_PROGRAM, (h, p) => this.fromClient(h, p), this.streamPieces(this.client, this.upstream));
    this.upstream.interceptProgram(REMOTE_PROGRAM, (h, p) => this.fromUpstream(h, p), this.streamPieces(this.upstream, this.client));
    void this.upstream.whenClosed().then((reason) => this.upstreamGone(reason));
    void this.client.whenClosed().then(() => this.close());
  }

  /**
   * Large stream data packets from `from`, passed to `to` as they arrive: only data (CONTINUE)
   * of a stream that is open, while nothing from that side waits behind an access check (the
   * pieces would overtake it). Anything else is assembled and handled whole, as before.
   */
  private streamPieces(from: RpcConnection, to: RpcConnection): PacketPieces {
    const fromClient = from === this.client;
    return {
      begin: (h, head, length) => {
        if (this.ended || (fromClient ? this.checking : this.upstreamChecking)) return false;
        if (h.type !== MessageType.STREAM || h.status !== MessageStatus.CONTINUE || !this.streams.has(h.serial)) return false;
        const reserved = fromClient ? undefined : this.reservePump();
        if (reserved) {
          this.startPump(reserved, h, head, length);
          return 'taken';
        }
        to.writePiece(head, false);
        this.throttle(to, from);
        return true;
      },
      piece: (bytes, last) => {
        if (this.ended) return;
        to.writePiece(bytes, last);
        this.throttle(to, from);
      },
    };
  }

  /**
   * A pump, when one can take over the upstream's socket: one is given, none is at work here,
   * node stops reading that socket as soon as it is paused, and holds none of its bytes unread.
   */
  private reservePump(): ReservedStreamPump | undefined {
    const upstream = this.upstream.stream;
    if (this.streamPump === undefined || this.pump !== undefined || !stopsReadingOnPause(upstream) || upstream.readableLength !== 0) {
      return undefined;
    }
    return this.streamPump.reserve(upstream, this.client.stream);
  }

  /**
   * Hands the rest of a large stream packet from the upstream, and the data packets of that
   * stream after it, to the pump. The upstream is not read meanwhile, and the client's other
   * packets wait (as behind any packet written in pieces) until the pump is done; the pump starts
   * once the packet's first bytes have left, so it writes after everything written before.
   */
  private startPump(reserved: ReservedStreamPump, h: Header, head: Buffer, length: number): void {
    const pump: PumpInProgress = { reserved, running: undefined, stopRequested: false };
    this.pump = pump;
    this.upstream.holdInput();
    this.client.onWriteHeld(() => {
      pump.stopRequested = true;
      pump.running?.stop();
    });
    this.client.writePiece(head, false, () => {
      if (this.ended || this.pump !== pump) {
        reserved.release();
        return;
      }
      try {
        pump.running = reserved.start(
          {
            from: this.upstream.stream,
            to: this.client.stream,
            prog: h.prog,
            vers: h.vers,
            proc: h.proc,
            serial: h.serial,
            remaining: length - head.length,
            maxPacket: this.upstream.maxPacketBytes,
          },
          (error, leftover) => this.pumpDone(pump, error, leftover),
        );
      } catch (e) {
        this.pumpDone(pump, e as Error, Buffer.alloc(0));
        return;
      }
      if (pump.stopRequested) pump.running.stop();
    });
  }

  private pumpDone(pump: PumpInProgress, error: StreamPumpError | null, leftover: Buffer): void {
    if (this.pump !== pump) return;
    this.pump = undefined;
    this.client.onWriteHeld(undefined);
    if (this.ended) return;
    if (error) {
      if (error.side === 'destination' && (error.code === 'EPIPE' || error.code === 'ECONNRESET')) {
        // The client went away in the middle of a download: nothing is wrong here.
        this.log.debug({ event: 'gateway.stream.client.gone', code: error.code }, 'client closed its connection during a download');
        this.close();
        this.client.close(null);
        return;
      }
      this.failMidPacket(error);
      return;
    }
    this.client.endPieces();
    this.upstream.releaseInput();
    // What the pump read past its last packet comes first; the socket is read again after it.
    this.upstream.bytesReadElsewhere(leftover);
  }

  /**
   * The client may have part of a packet: nothing more can be written to it that it could read
   * as a packet, so both connections close.
   */
  private failMidPacket(error: Error): void {
    this.ended = true;
    this.log.warn(
      { event: 'gateway.stream.pump.failed', code: (error as { code?: unknown }).code, err: error.message },
      'stream data could not be passed on to the client; both connections closed',
    );
    this.upstream.close(null);
    this.client.stream.destroy();
    this.client.close(
      new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: `stream data lost: ${error.message}` }),
    );
  }

  /** Calls awaiting a reply and streams open, for tests and diagnostics. */
  get inFlight(): { calls: number; streams: number } {
    return { calls: this.calls.size, streams: this.streams.size };
  }

  /** Ends the pass-through: the upstream connection closes (the client's is the caller's). */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.endPump();
    this.upstream.close(null);
  }

  /**
   * A pump at work is cancelled; one still waiting for its packet's first bytes to leave gives
   * its reservation back (a closed client never reports those bytes written).
   */
  private endPump(): void {
    const pump = this.pump;
    if (!pump) return;
    if (pump.running) pump.running.cancel();
    else pump.reserved.release();
  }

  // --- client -> upstream ------------------------------------------------------------------

  private fromClient(h: Header, packet: Buffer): void {
    if (this.ended) return;
    if (this.checking) {
      this.queued.push({ header: h, packet });
      return;
    }
    switch (h.type) {
      case MessageType.CALL:
        this.clientCall(h, packet);
        return;
      case MessageType.STREAM:
      case MessageType.STREAM_HOLE:
        this.clientStreamData(h, packet);
        return;
      case MessageType.CALL_WITH_FDS:
        // The descriptors travel beside the bytes on a unix socket; they cannot be passed on here.
        this.client.replyError(
          h,
          new VirError({ code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.RPC, detail: 'passing file descriptors through virtauthd' }),
        );
        return;
      default:
        this.log.warn(
          { event: 'gateway.client.unexpected', type: h.type, proc: h.proc, serial: h.serial },
          'client sent a packet of a type a client never sends; dropped',
        );
    }
  }

  private clientCall(h: Header, packet: Buffer): void {
    // Procedures this build does not know are refused, not forwarded: access control cannot
    // check what it cannot name. libvirt's text makes the client fall back as with an older daemon.
    if (h.proc < 1 || h.proc > REMOTE_PROC_LAST) {
      this.client.replyError(h, rpcError(`unknown procedure: ${h.proc}`));
      return;
    }
    if (this.calls.has(h.serial)) {
      this.client.replyError(h, rpcError(`a call with serial ${h.serial} is already waiting for its reply`));
      return;
    }
    if (this.checkCall) {
      let outcome: void | Promise<void>;
      try {
        outcome = this.checkCall({ proc: h.proc, serial: h.serial, args: packet.subarray(PAYLOAD_OFFSET) });
      } catch (e) {
        this.refuse(h, e);
        return;
      }
      if (outcome instanceof Promise) {
        this.checking = true;
        this.client.holdInput();
        outcome.then(
          () => this.afterCheck(h, packet, null),
          (e: unknown) => this.afterCheck(h, packet, e),
        );
        return;
      }
    }
    this.forwardCall(h, packet);
  }

  private afterCheck(h: Header, packet: Buffer, refusal: unknown): void {
    this.checking = false;
    if (this.ended) return;
    if (refusal === null) this.forwardCall(h, packet);
    else this.refuse(h, refusal);
    this.client.releaseInput();
    while (!this.checking && this.queued.length > 0) {
      const next = this.queued.shift()!;
      this.fromClient(next.header, next.packet);
    }
  }

  private refuse(h: Header, e: unknown): void {
    const error =
      e instanceof VirError
        ? e
        : new VirError({
            code: ErrorCode.INTERNAL_ERROR,
            domain: ErrorDomain.RPC,
            detail: `access check failed: ${(e as Error)?.message ?? String(e)}`,
          });
    this.log.debug({ event: 'gateway.call.refused', proc: h.proc, code: error.code }, 'call refused before forwarding');
    this.client.replyError(h, error);
  }

  private forwardCall(h: Header, packet: Buffer): void {
    this.calls.set(h.serial, h.proc);
    if (STREAM_PROCEDURES.has(h.proc)) this.streams.set(h.serial, { proc: h.proc, clientEnded: false });
    if (this.calls.size >= this.maxCallsInFlight && !this.heldForCalls) {
      this.heldForCalls = true;
      this.client.holdInput();
    }
    this.toUpstream(packet);
  }

  private clientStreamData(h: Header, packet: Buffer): void {
    const stream = this.streams.get(h.serial);
    if (!stream) {
      // libvirtd drops these too: stream packets may still be on the way after a stream ended.
      this.log.debug(
        { event: 'gateway.stream.stray', from: 'client', serial: h.serial, type: h.type, bytes: packet.length - PAYLOAD_OFFSET },
        'stream data for a serial with no open stream; dropped',
      );
      return;
    }
    if (h.status !== MessageStatus.CONTINUE) stream.clientEnded = true;
    this.toUpstream(packet);
  }

  private toUpstream(packet: Buffer): void {
    this.pass(packet, this.upstream, this.client);
  }

  // --- upstream -> client ------------------------------------------------------------------

  private fromUpstream(h: Header, packet: Buffer): void {
    if (this.ended) return;
    if (this.upstreamChecking) {
      this.upstreamQueued.push({ header: h, packet });
      return;
    }
    switch (h.type) {
      case MessageType.REPLY:
        if (!this.callAnswered(h)) return;
        if (h.status === MessageStatus.ERROR) this.streams.delete(h.serial);
        if (this.checkReply) return this.checkedReply(h, packet);
        this.toClient(packet);
        return;
      case MessageType.REPLY_WITH_FDS:
        if (!this.callAnswered(h)) return;
        this.streams.delete(h.serial);
        this.client.replyError(
          h,
          new VirError({ code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.RPC, detail: 'passing file descriptors through virtauthd' }),
        );
        return;
      case MessageType.MESSAGE:
        // Events: the upstream is this client's alone, so every one is this client's, unless
        // access control says the client may not see the object it is about.
        if (this.checkEvent) return this.checkedEvent(h, packet);
        this.toClient(packet);
        return;
      case MessageType.STREAM:
      case MessageType.STREAM_HOLE: {
        const stream = this.streams.get(h.serial);
        if (!stream) {
          this.log.debug(
            { event: 'gateway.stream.stray', from: 'upstream', serial: h.serial, type: h.type },
            'upstream sent stream data for a serial with no open stream; dropped',
          );
          return;
        }
        // An error ends the stream; so does the answer to the client's finish or abort. An OK
        // before the client ended is the upstream's end of data, which the client then finishes.
        if (h.status === MessageStatus.ERROR || (h.status === MessageStatus.OK && stream.clientEnded)) this.streams.delete(h.serial);
        this.toClient(packet);
        return;
      }
      default:
        this.log.warn(
          { event: 'gateway.upstream.unexpected', type: h.type, proc: h.proc, serial: h.serial },
          'upstream sent a packet of a type a daemon never sends; dropped',
        );
    }
  }

  private checkedReply(h: Header, packet: Buffer): void {
    const deliver = (replacement: void | Buffer): void => this.toClient(replacement ? withPayload(packet, replacement) : packet);
    const refused = (e: unknown): void => {
      this.streams.delete(h.serial);
      this.refuse(h, e);
    };
    let outcome: void | Buffer | Promise<void | Buffer>;
    try {
      outcome = this.checkReply!({
        proc: h.proc,
        serial: h.serial,
        error: h.status === MessageStatus.ERROR,
        payload: packet.subarray(PAYLOAD_OFFSET),
      });
    } catch (e) {
      refused(e);
      return;
    }
    if (outcome instanceof Promise) this.waitUpstream(outcome.then(deliver, refused));
    else deliver(outcome);
  }

  private checkedEvent(h: Header, packet: Buffer): void {
    const deliver = (allowed: boolean): void => {
      if (allowed) this.toClient(packet);
      else this.log.debug({ event: 'gateway.event.hidden', proc: h.proc }, 'event about an object the client may not see; dropped');
    };
    const failed = (e: unknown): void =>
      this.log.warn(
        { event: 'access.event.failed', proc: h.proc, err: (e as Error)?.message ?? String(e) },
        'event not delivered: its access check failed',
      );
    let outcome: boolean | Promise<boolean>;
    try {
      outcome = this.checkEvent!({ proc: h.proc, payload: packet.subarray(PAYLOAD_OFFSET) });
    } catch (e) {
      failed(e);
      return;
    }
    if (outcome instanceof Promise) this.waitUpstream(outcome.then(deliver, failed));
    else deliver(outcome);
  }

  /** Holds the upstream's later packets until `done` settles, then passes them on in order. */
  private waitUpstream(done: Promise<void>): void {
    this.upstreamChecking = true;
    this.upstream.holdInput();
    void done.then(() => {
      this.upstreamChecking = false;
      this.upstream.releaseInput();
      while (!this.upstreamChecking && this.upstreamQueued.length > 0 && !this.ended) {
        const next = this.upstreamQueued.shift()!;
        this.fromUpstream(next.header, next.packet);
      }
    });
  }

  /** Marks the call of a reply answered; false (and the reply dropped) when there is none. */
  private callAnswered(h: Header): boolean {
    const proc = this.calls.get(h.serial);
    if (proc === undefined || proc !== h.proc) {
      this.log.warn({ event: 'gateway.reply.stray', serial: h.serial, proc: h.proc }, 'upstream reply matches no forwarded call; dropped');
      return false;
    }
    this.calls.delete(h.serial);
    if (this.heldForCalls && this.calls.size < this.maxCallsInFlight) {
      this.heldForCalls = false;
      this.client.releaseInput();
    }
    return true;
  }

  private toClient(packet: Buffer): void {
    this.pass(packet, this.client, this.upstream);
  }

  /**
   * Writes to `to`; when more than `maxBuffered` bytes wait there (`to` reads slower than `from`
   * writes), stops reading `from` until `to` drains. The bound is above the socket's own mark so
   * that a single large stream chunk does not stop and restart reading every time.
   */
  private pass(packet: Buffer, to: RpcConnection, from: RpcConnection): void {
    to.writePacket(packet);
    this.throttle(to, from);
  }

  /** After a write to `to`: past `maxBuffered` waiting there, `from` is not read until `to` drains. */
  private throttle(to: RpcConnection, from: RpcConnection): void {
    if (to.stream.writableLength <= this.maxBuffered || this.draining.has(to)) return;
    this.draining.add(to);
    from.holdInput();
    to.stream.once('drain', () => {
      this.draining.delete(to);
      from.releaseInput();
    });
  }

  // --- endings -----------------------------------------------------------------------------

  /**
   * The upstream connection closed: calls still waiting and open streams get the reason (the
   * error libvirt's own client reports for a lost daemon), then the client is closed.
   */
  private upstreamGone(reason: VirError | null): void {
    if (this.ended) return;
    if (this.pump) {
      // The client may be inside a packet the pump was writing: it cannot be told anything.
      this.endPump();
      this.failMidPacket(reason ?? new Error('the upstream connection closed'));
      return;
    }
    this.ended = true;
    const error =
      reason ??
      new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: 'End of file while reading data: Input/output error' });
    this.log.debug(
      { event: 'gateway.upstream.closed', reason: error.message, calls: this.calls.size, streams: this.streams.size },
      'upstream connection closed',
    );
    const base = { prog: REMOTE_PROGRAM, vers: REMOTE_PROTOCOL_VERSION, status: MessageStatus.ERROR };
    for (const [serial, proc] of this.calls) this.client.replyError({ ...base, proc, serial, type: MessageType.REPLY }, error);
    for (const [serial, stream] of this.streams) {
      if (this.calls.has(serial)) continue;
      this.client.writePacket(
        encodePacket({ ...base, proc: stream.proc, serial, type: MessageType.STREAM }, errorPayload, errorToPayload(error)),
      );
    }
    this.calls.clear();
    this.streams.clear();
    // Closed whole once those are written, not half-closed first: libvirt's client reports a
    // hang-up as VIR_CONNECT_CLOSE_REASON_EOF to its close callback (as when its own daemon
    // dies), but reads a bare end of input as an error.
    const socket = this.client.stream;
    socket.write(Buffer.alloc(0), () => {
      socket.destroy();
      this.client.close(null);
    });
  }
}
