// What a daemon extension (the credential relay) sees of a client connection, and what a relay
// sees of any connection: its own program's calls and messages, and the connection's end. The
// daemon's session and the RPC connection satisfy these as they are.

import type { Codec } from '../xdr/codec.js';
import type { VirError } from '../errors.js';
import type { CallOptions, MessageHandler } from '../rpc/connection.js';

/** One connection as a program carried beside libvirt's (the relay) uses it. */
export interface ProgramConnection {
  readonly id: number;
  call<A, R>(prog: number, vers: number, proc: number, args: Codec<A>, value: A, ret: Codec<R>, opts?: CallOptions): Promise<R>;
  /** `sizeHint`: the payload size expected, so the packet's buffer need not grow. */
  sendMessage<T>(prog: number, vers: number, proc: number, codec: Codec<T>, value: T, sizeHint?: number): void;
  onProgramMessage(prog: number, handler: MessageHandler): void;
  once(event: 'close', listener: (reason: VirError | null) => void): unknown;
}

/** A connection's logger, as an extension uses it. */
export interface ExtensionLog {
  debug(fields: object, msg: string): void;
  /** The same logger with more bindings. */
  child(bindings: object): ExtensionLog;
}

/** A daemon's client connection as an extension sees it. */
export interface ExtensionSession {
  readonly connectionId: number;
  readonly rpc: ProgramConnection;
  /** Whether CONNECT_OPEN has started on this connection (running, or done). */
  readonly openStarted: boolean;
  /** Lines about this connection, with its bindings. */
  readonly log: ExtensionLog;
  /** Warnings about the client's malformed input, within the connection's budget of them. */
  readonly peerFaults: { warn(fields: object, msg: string): void };
  /** Why the daemon ended the connection (e.g. an administrator's client-disconnect), if it did. */
  readonly closeReason: VirError | null;
  /** Runs `fn` when the connection ends, before a disconnect's socket closes. */
  onClose(fn: () => void): void;
}
