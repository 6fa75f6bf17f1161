// The credential relay as a driver sees it: something to attach to a connection it opens to a
// daemon (implemented by @virtauth/relay, put in the open context by the daemon and the client
// library), and the errors each of the relay's outcomes becomes.

import type { RelayVia } from '../credentials.js';
import type { ConnectUri } from '../uri.js';
import type { ProgramConnection } from './extension.js';
import { describeDaemonIdentity, type TransportInfo } from './transport.js';
import { ErrorCode, ErrorDomain, VirError } from '../errors.js';
import { RelayStatus } from '../protocol/relay.js';

/** The connection a remote driver attaches the relay to: what it named, and what its transport proved. */
export interface RelayTarget {
  uri: ConnectUri;
  transport: TransportInfo;
}

/** The relay on one connection, once enabled. */
export interface AttachedRelay {
  /**
   * CONNECT_OPEN has finished (opened or failed): a server may relay requests only while it
   * runs, so later ones are refused without asking anyone, and any still open are withdrawn.
   */
  openFinished(): void;
}

/**
 * `DriverOpenContext.relay`: whoever opens the driver can answer credential requests relayed
 * back to it. A driver that opens a connection to a daemon attaches it there before CONNECT_OPEN.
 */
export interface ClientRelay {
  /** Credential types the far end can answer (a transport that logs in itself may ask for these). */
  readonly credTypes: readonly number[];
  /** Enables the relay on `conn`; resolves null when the server does not know the relay program. */
  attach(conn: ProgramConnection, target: RelayTarget): Promise<AttachedRelay | null>;
}

const STATUS_ERRORS: Record<number, number> = {
  [RelayStatus.CANCELLED]: ErrorCode.AUTH_CANCELLED,
  [RelayStatus.TIMED_OUT]: ErrorCode.AUTH_UNAVAILABLE,
  [RelayStatus.UNAVAILABLE]: ErrorCode.AUTH_UNAVAILABLE,
  [RelayStatus.DENIED]: ErrorCode.AUTH_FAILED,
  [RelayStatus.FAILED]: ErrorCode.AUTH_FAILED,
};

/** The typed error a relay outcome becomes. */
export function relayError(status: number, detail: string): VirError {
  return new VirError({ code: STATUS_ERRORS[status] ?? ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail, int1: status });
}

/** The relay status an error stands for, so it can travel back down the chain. */
export function relayStatusOf(e: unknown): RelayStatus {
  if (e instanceof VirError) {
    if (e.domain === ErrorDomain.AUTH && e.int1 >= RelayStatus.CANCELLED && e.int1 <= RelayStatus.FAILED) return e.int1 as RelayStatus;
    if (e.code === ErrorCode.AUTH_CANCELLED) return RelayStatus.CANCELLED;
    if (e.code === ErrorCode.AUTH_UNAVAILABLE) return RelayStatus.UNAVAILABLE;
    if (e.code === ErrorCode.OPERATION_TIMEOUT) return RelayStatus.TIMED_OUT;
  }
  return RelayStatus.FAILED;
}

/**
 * The text an ANSWER or CANCEL carries for an error: a VirError's detail without its code's
 * prefix, which the receiver adds again when it turns the status back into an error.
 */
export function relayDetail(e: unknown): string {
  if (e instanceof VirError) return e.str2 ?? e.message;
  return e instanceof Error ? e.message : String(e);
}

/** `virtauthd@hostA (unix socket /run/virtauth/virtauth-sock)`: who sent a request to this client. */
export function describeVia(via: RelayVia | undefined): string {
  if (!via) return 'no verified connection';
  return `${via.daemon} (${describeDaemonIdentity(via.identity)})`;
}
