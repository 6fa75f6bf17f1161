// One RPC connection over a byte stream, usable from both ends: calls with serials matched to
// replies (many in flight), dispatch of incoming calls with a per-connection concurrency bound,
// MESSAGE packets routed by program, and keepalive. It knows nothing of any particular program.
//
// Input is read only while the connection can take more work: fewer calls than the bound are
// running or waiting for their reply to leave (past a few KiB queued), and the peer is taking
// what we send. A peer that
// sends and never reads therefore stops being read, and costs at most the bound of unsent output
// plus one socket read of held bytes, whatever it sends.

import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { XdrReader, type Codec, xvoid } from '../xdr/codec.js';
import { ErrorCode, ErrorDomain, VirError, rpcError } from '../errors.js';
import { FramingError, PacketFramer, type PacketCutThrough, type PacketSink } from './framer.js';
import {
  encodePacket,
  errorPayload,
  errorToPayload,
  MessageStatus,
  MessageType,
  payloadToError,
  readHeader,
  type Header,
} from './packet.js';
import { KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepaliveProc } from './keepalive.js';

export interface Reply<R = unknown> {
  codec: Codec<R>;
  value: R;
}

/** Handles one incoming CALL; resolves with the reply payload or rejects with a VirError. */
export type CallHandler = (header: Header, body: XdrReader) => Promise<Reply> | Reply;
/** Handles one incoming MESSAGE packet of a program. */
export type MessageHandler = (header: Header, body: XdrReader) => void;
/**
 * Takes every packet of a program whole (length word included), whatever its type: for a program
 * whose packets are passed on rather than served. `packet` may be a view into the input chunk.
 */
export type PacketInterceptor = (header: Header, packet: Buffer) => void;

/**
 * Takes large packets of an intercepted program in pieces as they arrive, when it wants them so
 * (see PacketFramer's cut-through): `begin` sees the header and the first bytes, and says yes or
 * no; after a yes, `piece` gets the rest, in order, up to the one marked `last`.
 */
export interface PacketPieces {
  /**
   * 'taken': the taker reads the rest of the packet from the socket itself. It holds this
   * connection's input first (holdInput) and hands back what it read beyond the packet with
   * bytesReadElsewhere.
   */
  begin(header: Header, head: Buffer, length: number): boolean | 'taken';
  piece(bytes: Buffer, last: boolean): void;
}

export interface RpcConnectionOptions {
  /**
   * Calls dispatched at once; further input waits (the socket is paused). libvirt: 5. A call
   * counts until its reply has left for the socket, or is queued behind less than the stream's
   * high-water mark (16 KiB), which leaves in the same turn while the peer reads.
   */
  maxConcurrentCalls?: number;
  /**
   * Bytes written and not yet taken by the socket (replies, PONGs, events) beyond which input
   * stops until the peer has read them. Not below the stream's own high-water mark.
   */
  maxUnsentBytes?: number;
  /** Largest number of replies a client waits for at once. */
  maxPendingCalls?: number;
  /** Largest packet accepted (default and most: libvirt's 32 MiB + 4); see setMaxPacketBytes. */
  maxPacketBytes?: number;
}

interface PendingCall {
  prog: number;
  vers: number;
  proc: number;
  ret: Codec<unknown>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

export interface CallOptions {
  signal?: AbortSignal;
}

let nextConnectionId = 1;

const CONNECTION = Symbol('virtauth.rpcConnection');
type OwnedStream = Duplex & { [CONNECTION]: RpcConnection };

function onStreamData(this: Duplex, chunk: Buffer): void {
  (this as OwnedStream)[CONNECTION].onData(chunk);
}
function onStreamEnd(this: Duplex): void {
  (this as OwnedStream)[CONNECTION].close(
    new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: 'End of file while reading data: Input/output error' }),
  );
}
function onStreamError(this: Duplex, e: NodeJS.ErrnoException): void {
  (this as OwnedStream)[CONNECTION].close(
    new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.RPC,
      detail: `Cannot recv data: ${SOCKET_ERROR_TEXT[e.code ?? ''] ?? e.message}`,
      cause: e,
    }),
  );
}
function onStreamClose(this: Duplex): void {
  (this as OwnedStream)[CONNECTION].close(
    new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: 'Connection closed' }),
  );
}
/** Shared by every connection, so a tick's gathered write makes no closure. */
function flushCorked(connection: RpcConnection): void {
  connection.flushCorked();
}
function onStreamDrain(this: Duplex): void {
  (this as OwnedStream)[CONNECTION].outputDrained();
}

/** The strerror text libvirt puts after "Cannot recv data: " for the errors a peer causes. */
const SOCKET_ERROR_TEXT: Record<string, string> = {
  ECONNRESET: 'Connection reset by peer',
  EPIPE: 'Broken pipe',
  ETIMEDOUT: 'Connection timed out',
};

export class RpcConnection extends EventEmitter {
  readonly id = nextConnectionId++;
  private readonly framer = new PacketFramer();
  // Made on first use: most daemon-side connections never call out, nor intercept a program,
  // and an empty Map is ~180 bytes of every idle connection.
  private pending: Map<number, PendingCall> | undefined;
  /** By program; one or two at most, so a list (a Map's table alone is ~180 bytes). */
  private messageHandlers: { prog: number; handler: MessageHandler }[] | undefined;
  private interceptors: Map<number, PacketInterceptor> | undefined;
  /** By program, the takers of large packets in pieces; the one that took the current packet. */
  private pieceTakers: Map<number, PacketPieces> | undefined;
  private pieceTaker: PacketPieces | undefined;
  /**
   * A packet is being written in pieces (writePiece): any other packet written meanwhile waits
   * here, so it cannot land inside that packet's bytes.
   */
  private writingPieces = false;
  private heldWrites: { packet: Buffer; onFlushed: (() => void) | undefined }[] | undefined;
  private writeHeldListener: (() => void) | undefined;
  private callHandler: CallHandler | null = null;
  private serial = 0;
  /** Calls whose handler runs or whose reply has not left yet. */
  private inFlight = 0;
  private readonly maxConcurrent: number;
  private readonly maxPending: number;
  private readonly maxUnsent: number;
  /** Unsent output is over the bound; cleared when the stream drains. */
  private blockedOnOutput = false;
  /** Holds taken with holdInput() (e.g. a forwarder whose other side is not reading). */
  private inputHolds = 0;
  private inputPaused = false;
  /** Replies written whose write callback has not come yet. */
  private repliesUnconfirmed = 0;
  /** Of those, replies already released from inFlight because the stream had emptied. */
  private repliesReleased = 0;
  /** Bound once: the framer's sink and the write callback of a reply, without a closure each. */
  private readonly packetSink: PacketSink = (packet) => this.takePacket(packet);
  private readonly replyFlushed = (): void => this.replyConfirmed();
  private corked = false;
  private closedError: VirError | null = null;
  private isClosed = false;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private lastReceived = Date.now();
  private unansweredPings = 0;
  /** Made when someone waits for the close (whenClosed). */
  private closedPromise: Promise<VirError | null> | undefined;
  private resolveClosed: ((e: VirError | null) => void) | undefined;

  constructor(
    readonly stream: Duplex,
    opts: RpcConnectionOptions = {},
  ) {
    super();
    this.maxConcurrent = opts.maxConcurrentCalls ?? 5;
    this.maxPending = opts.maxPendingCalls ?? 65536;
    this.maxUnsent = Math.max(opts.maxUnsentBytes ?? 65536, stream.writableHighWaterMark);
    if (opts.maxPacketBytes !== undefined) this.framer.setMaxPacket(opts.maxPacketBytes);
    // Listeners shared by every connection (the stream knows its connection): five closures
    // and their context per connection would be a tenth of an idle connection's heap.
    (stream as OwnedStream)[CONNECTION] = this;
    stream.on('data', onStreamData);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    stream.on('drain', onStreamDrain);
  }

  /** The largest packet accepted from the peer now. */
  get maxPacketBytes(): number {
    return this.framer.maxPacketBytes;
  }

  /**
   * Changes the largest packet accepted from now on: a length word above it closes the
   * connection before anything is buffered for the packet.
   */
  setMaxPacketBytes(bytes: number): void {
    this.framer.setMaxPacket(bytes);
  }

  /** Bytes written and not yet taken by the socket. */
  get unsentBytes(): number {
    return this.stream.writableLength;
  }

  /** True while the peer has not read enough of our output for us to read more of its input. */
  get outputBlocked(): boolean {
    return this.blockedOnOutput;
  }

  /**
   * Stops reading until a matching releaseInput() (holds count), e.g. while the other side of
   * a forwarder is not reading what this connection's packets become.
   */
  holdInput(): void {
    this.inputHolds++;
    this.pauseInput();
  }

  releaseInput(): void {
    if (this.inputHolds === 0) return;
    this.inputHolds--;
    this.resumeInput();
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Incoming calls being handled or whose reply has not left yet (the daemon's job queue for this peer). */
  get callsInProgress(): number {
    return this.inFlight;
  }

  /** Resolves when the connection has closed, with the reason (null for a local close()). */
  whenClosed(): Promise<VirError | null> {
    if (!this.closedPromise) {
      this.closedPromise = this.isClosed ? Promise.resolve(this.closedError) : new Promise((r) => (this.resolveClosed = r));
    }
    return this.closedPromise;
  }

  setCallHandler(handler: CallHandler): void {
    this.callHandler = handler;
  }

  /** Routes MESSAGE packets of a program (other than keepalive) to a handler. */
  onProgramMessage(prog: number, handler: MessageHandler): void {
    const handlers = (this.messageHandlers ??= []);
    const existing = handlers.find((h) => h.prog === prog);
    if (existing) existing.handler = handler;
    else handlers.push({ prog, handler });
  }

  /**
   * Hands every later packet of `prog` (calls, replies, messages, stream data) to `interceptor`
   * undecoded. This connection then issues no calls of its own on that program: their serials
   * would mix with those of the packets passed on.
   */
  interceptProgram(prog: number, interceptor: PacketInterceptor, pieces?: PacketPieces): void {
    (this.interceptors ??= new Map()).set(prog, interceptor);
    if (!pieces) return;
    if (!this.pieceTakers) {
      this.pieceTakers = new Map();
      this.framer.setCutThrough(this.cutThrough());
    }
    this.pieceTakers.set(prog, pieces);
  }

  /** The framer's cut-through: offers a large packet to its program's taker, if any. */
  private cutThrough(): PacketCutThrough {
    return {
      begin: (head, length) => {
        if (this.isClosed) return false;
        const header = readHeader(new XdrReader(head, 4));
        const taker = this.pieceTakers?.get(header.prog);
        const outcome = taker?.begin(header, head, length) ?? false;
        if (outcome === true) this.pieceTaker = taker;
        return outcome;
      },
      piece: (bytes, last) => {
        const taker = this.pieceTaker;
        if (last) this.pieceTaker = undefined;
        if (!this.isClosed) taker?.piece(bytes, last);
      },
    };
  }

  /**
   * Writes part of a packet: its first bytes (length word and header included), then the rest
   * up to the call with `last`. Packets written meanwhile (replies, PONGs, events) wait until the
   * last piece is written, so the peer's framing stays intact.
   */
  writePiece(bytes: Buffer, last: boolean, onFlushed?: () => void): void {
    if (this.isClosed) return;
    this.writingPieces = true;
    this.send(bytes, onFlushed);
    if (last) this.endPieces();
  }

  /**
   * The packet written in pieces is complete (its last bytes went out some other way, e.g.
   * straight to the socket's descriptor): the packets held meanwhile are written now.
   */
  endPieces(): void {
    if (!this.writingPieces) return;
    this.writingPieces = false;
    const held = this.heldWrites;
    if (!held) return;
    this.heldWrites = undefined;
    for (const { packet, onFlushed } of held) this.write(packet, onFlushed);
  }

  /** Called once each time a write has to wait for a packet written in pieces (see writePiece). */
  onWriteHeld(listener: (() => void) | undefined): void {
    this.writeHeldListener = listener;
  }

  /**
   * Input of this connection read from its socket by someone else while input was held (a stream
   * pump): taken as if read here, before anything read from now on.
   */
  bytesReadElsewhere(bytes: Buffer): void {
    this.onData(bytes);
  }

  /**
   * Writes an already encoded packet (gathered with the others of this turn into one write);
   * false when the stream's buffer is full: wait for its 'drain' before writing more.
   */
  writePacket(packet: Buffer): boolean {
    if (this.isClosed) return true;
    this.write(packet);
    return !this.stream.writableNeedDrain;
  }

  /** Issues a call and resolves with the decoded reply, or rejects with the peer's VirError. */
  call<A, R>(prog: number, vers: number, proc: number, args: Codec<A>, value: A, ret: Codec<R>, opts: CallOptions = {}): Promise<R> {
    if (this.isClosed) return Promise.reject(this.closedError ?? rpcError('client socket is closed'));
    if (this.interceptors?.has(prog))
      return Promise.reject(rpcError(`program ${prog | 0} is passed through: this connection makes no calls of its own on it`));
    const pending = (this.pending ??= new Map());
    if (pending.size >= this.maxPending) return Promise.reject(rpcError('too many calls in flight'));
    const serial = this.serial;
    this.serial = (this.serial + 1) >>> 0;
    const packet = encodePacket({ prog, vers, proc, type: MessageType.CALL, serial, status: MessageStatus.OK }, args, value);
    return new Promise<R>((resolve, reject) => {
      const entry: PendingCall = { prog, vers, proc, ret: ret as Codec<unknown>, resolve: resolve as (v: unknown) => void, reject };
      if (opts.signal) {
        const signal = opts.signal;
        if (signal.aborted) return reject(signal.reason);
        const onAbort = () => {
          // The reply, if it still comes, is dropped: the serial is no longer pending.
          if (pending.delete(serial)) reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        entry.resolve = (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v as R);
        };
        entry.reject = (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        };
      }
      pending.set(serial, entry);
      this.write(packet);
    });
  }

  /**
   * Sends a MESSAGE packet (events, relay requests): status OK, serial 0 unless given (libvirt
   * 9.0's daemon sends its events with serial 1). `sizeHint` is the payload size expected, so a
   * larger message is encoded without growing its buffer.
   */
  sendMessage<T>(prog: number, vers: number, proc: number, codec: Codec<T>, value: T, sizeHint?: number, serial = 0): void {
    if (this.isClosed) return;
    const packet = encodePacket({ prog, vers, proc, type: MessageType.MESSAGE, serial, status: MessageStatus.OK }, codec, value, sizeHint);
    if (this.writingPieces) {
      this.holdWrite(packet, undefined);
      return;
    }
    // A message is mostly alone (a relay request, a keepalive): it leaves at once rather than at
    // the end of this turn, unless packets are already being gathered for one write (the stream
    // is corked then, and keeps the order).
    this.stream.write(packet);
    this.noteUnsent();
  }

  /**
   * Starts sending PINGs when the peer has been silent for `intervalSec`; after `count`
   * unanswered PINGs the connection is closed. Only call once the peer said it supports them.
   */
  startKeepalive(intervalSec: number, count: number): void {
    if (intervalSec <= 0 || this.keepaliveTimer || this.isClosed) return;
    const intervalMs = intervalSec * 1000;
    this.keepaliveTimer = setInterval(
      () => {
        if (Date.now() - this.lastReceived < intervalMs) return;
        if (this.unansweredPings >= count) {
          this.close(
            new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail: 'connection closed due to keepalive timeout' }),
          );
          return;
        }
        this.unansweredPings++;
        this.sendMessage(KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepaliveProc.PING, xvoid, undefined);
      },
      Math.min(intervalMs, 1000),
    );
    this.keepaliveTimer.unref();
  }

  /**
   * Closes both directions once what is queued has been written, so the peer sees a hang-up
   * rather than a half-close: libvirt's client reports that as "Disconnected ... due to end of
   * file", as after libvirtd closes a client (a half-close reads as an I/O error there).
   */
  hangUp(reason: VirError | null = null): void {
    if (this.isClosed) return;
    if (this.corked) {
      this.corked = false;
      this.stream.uncork();
    }
    const stream = this.stream;
    this.close(reason, true);
    if (stream.destroyed) return;
    if (stream.writableLength === 0) stream.destroy();
    else stream.once('drain', () => stream.destroy());
  }

  /** Closes the connection; pending calls fail with `reason` (or a generic closed error). */
  close(reason: VirError | null = null, keepStreamOpen = false): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closedError = reason;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    const err = reason ?? rpcError('client socket is closed');
    const pending = this.pending;
    this.pending = undefined;
    this.messageHandlers = undefined;
    this.interceptors = undefined;
    if (pending) for (const p of pending.values()) p.reject(err);
    if (keepStreamOpen) {
      // hangUp destroys it once written; this bounds a peer that never reads.
      setTimeout(() => this.stream.destroy(), 50).unref();
    } else if (!this.stream.destroyed) {
      this.stream.end();
      // Give a final reply a moment to flush, then make sure the descriptor goes.
      setTimeout(() => this.stream.destroy(), 50).unref();
    }
    this.resolveClosed?.(reason);
    this.emit('close', reason);
  }

  /** Writes a reply to a call, then closes (CONNECT_CLOSE's semantics). */
  closeAfterFlush(): void {
    if (this.corked) {
      this.corked = false;
      this.stream.uncork();
    }
    this.close(null);
  }

  private write(packet: Buffer, onFlushed?: () => void): void {
    if (this.writingPieces) this.holdWrite(packet, onFlushed);
    else this.send(packet, onFlushed);
  }

  private holdWrite(packet: Buffer, onFlushed: (() => void) | undefined): void {
    const held = (this.heldWrites ??= []);
    held.push({ packet, onFlushed });
    if (held.length === 1) this.writeHeldListener?.();
  }

  private send(packet: Buffer, onFlushed?: () => void): void {
    if (!this.corked) {
      // Coalesce packets written in the same tick into one syscall (pipelined calls, replies).
      this.corked = true;
      this.stream.cork();
      process.nextTick(flushCorked, this);
    }
    this.stream.write(packet, onFlushed);
    this.noteUnsent();
  }

  /** After a write: over the bound, stop reading (unless replies to our own calls are due). */
  private noteUnsent(): void {
    if (this.blockedOnOutput || this.stream.writableLength <= this.maxUnsent) return;
    // Over the bound means over the high-water mark too, so the stream will emit 'drain'.
    this.blockedOnOutput = true;
    if (!this.accepting()) this.pauseInput();
  }

  /** @internal The stream's 'drain' listener. */
  outputDrained(): void {
    if (!this.blockedOnOutput) return;
    this.blockedOnOutput = false;
    this.emit('outputDrained');
    this.resumeInput();
  }

  /**
   * Whether another packet may be taken now. A connection waiting for replies to its own calls
   * keeps reading them even when its output is blocked: replies make no output, and reading
   * them is what lets a peer that also waits on us go on.
   */
  private accepting(): boolean {
    return (
      !this.isClosed &&
      this.inFlight < this.maxConcurrent &&
      this.inputHolds === 0 &&
      (!this.blockedOnOutput || (this.pending?.size ?? 0) > 0)
    );
  }

  private pauseInput(): void {
    if (this.inputPaused || this.isClosed) return;
    this.inputPaused = true;
    this.stream.pause();
  }

  /** Takes the packets held while busy, then reads again if still accepting. */
  private resumeInput(): void {
    if (!this.inputPaused || !this.accepting()) return;
    try {
      this.framer.resume(this.packetSink);
    } catch (e) {
      this.onFramingError(e);
      return;
    }
    if (!this.accepting()) return;
    this.inputPaused = false;
    this.stream.resume();
  }

  private takePacket(packet: Buffer): boolean {
    this.onPacket(packet);
    if (this.accepting()) return true;
    this.pauseInput();
    return false;
  }

  /** @internal The stream's 'data' listener. */
  onData(chunk: Buffer): void {
    if (this.isClosed) return;
    this.lastReceived = Date.now();
    this.unansweredPings = 0;
    try {
      this.framer.push(chunk, this.packetSink);
    } catch (e) {
      this.onFramingError(e);
    }
  }

  private onFramingError(e: unknown): void {
    if (!(e instanceof FramingError)) throw e;
    this.emit('protocolError', e);
    this.close(rpcError(e.message));
  }

  private onPacket(packet: Buffer): void {
    if (this.isClosed) return;
    const r = new XdrReader(packet, 4);
    const h = readHeader(r);
    if (h.prog === KEEPALIVE_PROGRAM) {
      // A peer that does not read our output gets no more PONGs until it does.
      if (h.type === MessageType.MESSAGE && h.proc === KeepaliveProc.PING && !this.blockedOnOutput) {
        this.sendMessage(KEEPALIVE_PROGRAM, KEEPALIVE_VERSION, KeepaliveProc.PONG, xvoid, undefined);
      }
      return;
    }
    const interceptor = this.interceptors?.get(h.prog);
    if (interceptor) {
      interceptor(h, packet);
      return;
    }
    switch (h.type) {
      case MessageType.REPLY:
      case MessageType.REPLY_WITH_FDS:
        this.onReply(h, r);
        return;
      case MessageType.CALL:
      case MessageType.CALL_WITH_FDS:
        this.onCall(h, r);
        return;
      case MessageType.MESSAGE: {
        const handler = this.messageHandlers?.find((m) => m.prog === h.prog)?.handler;
        if (handler) {
          try {
            handler(h, r);
          } catch (e) {
            this.emit('protocolError', e);
          }
        }
        return;
      }
      default:
        // Streams are not used by the procedures virtauth serves; libvirtd drops stray ones too.
        this.emit('protocolError', new Error(`unexpected message type ${h.type}`));
    }
  }

  private onReply(h: Header, r: XdrReader): void {
    const p = this.pending?.get(h.serial);
    if (!p) {
      this.emit('protocolError', new Error(`reply with serial ${h.serial} matches no call`));
      return;
    }
    this.pending!.delete(h.serial);
    if (p.prog !== h.prog || p.vers !== h.vers || p.proc !== h.proc) {
      p.reject(rpcError(`Unexpected message proc ${h.proc} != ${p.proc}`));
      return;
    }
    try {
      if (h.status === MessageStatus.OK) {
        p.resolve(p.ret.decode(r));
      } else if (h.status === MessageStatus.ERROR) {
        p.reject(rewriteUnknownProcedure(payloadToError(errorPayload.decode(r))));
      } else {
        p.reject(rpcError(`Unexpected message status ${h.status}`));
      }
    } catch (e) {
      p.reject(rpcError(`Unable to decode message payload: ${(e as Error).message}`));
    }
  }

  private onCall(h: Header, r: XdrReader): void {
    if (!this.callHandler) {
      this.replyError(h, rpcError(`Cannot find program ${h.prog | 0} version ${h.vers | 0}`));
      return;
    }
    // Counted until the reply has left (writeReply says when), so replies a peer does not read
    // hold back its further calls. takePacket pauses input once the bound is reached.
    this.inFlight++;
    let result: Promise<Reply> | Reply;
    try {
      result = this.callHandler(h, r);
    } catch (e) {
      result = Promise.reject(e);
    }
    Promise.resolve(result).then(
      (reply) => {
        if (this.isClosed) return;
        let packet: Buffer;
        try {
          packet = encodePacket({ ...h, type: MessageType.REPLY, status: MessageStatus.OK }, reply.codec, reply.value);
        } catch (e) {
          packet = errorReplyPacket(h, toVirError(e));
        }
        this.writeReply(packet);
      },
      (e) => {
        if (this.isClosed) return;
        this.writeReply(errorReplyPacket(h, toVirError(e)));
      },
    );
  }

  private writeReply(packet: Buffer): void {
    this.repliesUnconfirmed++;
    this.write(packet, this.replyFlushed);
    // A reply queued behind less than the stream's high-water mark leaves at the end of this
    // turn unless the peer has stopped reading: release its call now, so pipelined calls are
    // not served in batches of maxConcurrentCalls. Past the mark, it counts until it has left.
    if (this.stream.writableLength < this.stream.writableHighWaterMark) {
      this.repliesReleased++;
      this.callsFinished(1);
    }
  }

  /**
   * The stream took everything at once (the usual case: the kernel had room), so every reply
   * written so far has left: release their calls now rather than a tick later, when their
   * write callbacks come.
   */
  /** @internal The end of the tick in which packets were gathered (see write). */
  flushCorked(): void {
    if (!this.corked) return;
    this.corked = false;
    this.stream.uncork();
    this.releaseFlushedReplies();
  }

  private releaseFlushedReplies(): void {
    const held = this.repliesUnconfirmed - this.repliesReleased;
    if (held === 0 || this.stream.writableLength !== 0) return;
    this.repliesReleased += held;
    this.callsFinished(held);
  }

  /** A reply's write callback (in write order): it has left, or the stream failed. */
  private replyConfirmed(): void {
    this.repliesUnconfirmed--;
    if (this.repliesReleased > 0) this.repliesReleased--;
    else this.callsFinished(1);
  }

  /** Calls whose reply has left no longer count against the bound. */
  private callsFinished(count: number): void {
    this.inFlight -= count;
    this.resumeInput();
  }

  replyError(h: Header, e: VirError): void {
    if (this.isClosed) return;
    this.write(errorReplyPacket(h, e));
  }
}

function errorReplyPacket(h: Header, e: VirError): Buffer {
  return encodePacket({ ...h, type: MessageType.REPLY, status: MessageStatus.ERROR }, errorPayload, errorToPayload(e));
}

/** Any thrown value as the VirError a peer should see. */
export function toVirError(e: unknown): VirError {
  if (e instanceof VirError) return e;
  return new VirError({
    code: ErrorCode.INTERNAL_ERROR,
    domain: ErrorDomain.RPC,
    detail: e instanceof Error ? e.message : String(e),
    cause: e,
  });
}

/**
 * As libvirt's client does: an "unknown procedure" RPC error from the peer means the peer lacks
 * the call, reported as NO_SUPPORT with the text kept, so callers can fall back.
 */
function rewriteUnknownProcedure(e: VirError): VirError {
  if (
    (e.domain === ErrorDomain.REMOTE || e.domain === ErrorDomain.RPC) &&
    e.code === ErrorCode.RPC &&
    e.level === 2 &&
    e.message.startsWith('unknown procedure')
  ) {
    return new VirError({
      code: ErrorCode.NO_SUPPORT,
      domain: e.domain,
      message: e.message,
      level: e.level,
      str1: e.str1,
      str2: e.str2,
      str3: e.str3,
      int1: e.int1,
      int2: e.int2,
    });
  }
  return e;
}
