// virtauth's credential relay program: a daemon asks its client, over the connection whose
// CONNECT_OPEN is in progress, for credentials a driver needs. See docs/relay-protocol.md.

import * as x from '../xdr/codec.js';

/** ASCII "varr" (virtauth relay). */
export const RELAY_PROGRAM = 0x76617272;
export const RELAY_PROTOCOL_VERSION = 1;

export const RelayProc = {
  /** CALL, client → server, before CONNECT_OPEN: the client can answer relayed requests. */
  ENABLE: 1,
  /** MESSAGE, server → client: credentials wanted. */
  REQUEST: 2,
  /**
   * MESSAGE, client → server: the answer to one request. One-way, so an answer costs one packet
   * per hop; the server applies the first answer to a waiting request and drops (and logs) any
   * other.
   */
  ANSWER: 3,
  /** MESSAGE, server → client: a request is withdrawn (deadline, open abandoned). */
  CANCEL: 4,
  /**
   * CALL, client → server, after authentication and before CONNECT_OPEN: the client is a daemon
   * passing a connection on (gateway or relay hop) and names the daemons it came through, itself
   * last. The server's identity of the connection then carries them as its hops.
   */
  HOPS: 5,
} as const;

/** Outcome of a request, on the wire and in audit records. */
export const RelayStatus = {
  OK: 0,
  CANCELLED: 1,
  TIMED_OUT: 2,
  UNAVAILABLE: 3,
  DENIED: 4,
  FAILED: 5,
} as const;
export type RelayStatus = (typeof RelayStatus)[keyof typeof RelayStatus];

export const RELAY_MAX_HOPS = 16;
export const RELAY_MAX_CREDENTIALS = 16;
export const RELAY_TEXT_MAX = 4096;
export const RELAY_ANSWER_MAX = 65536;

const text = x.string(RELAY_TEXT_MAX);

export const originHop = x.struct({ daemon: text, driver: text, uri: text });
export const relayCredential = x.struct({
  type: x.int,
  prompt: text,
  challenge: x.optional(text),
  defresult: x.optional(text),
});

export const relayEnableArgs = x.struct({
  /** Credential types the client's callback can answer. */
  cred_types: x.array(x.int, RELAY_MAX_CREDENTIALS),
  /** 1 when a person can answer prompts; 0 for unattended clients (only stored answers). */
  person_present: x.int,
  /** How long the client is prepared to wait for one request, in ms (0: the server's default). */
  timeout_ms: x.uint,
  /** Most requests the client will answer during one CONNECT_OPEN. */
  max_requests: x.uint,
});
export const relayEnableRet = x.struct({
  /** The daemon's name, as it appears in origin chains. */
  daemon: text,
  /** The longest a request from this daemon will wait, in ms. */
  max_timeout_ms: x.uint,
});

export const relayRequestMsg = x.struct({
  id: x.uint,
  /** auth.conf service and host the credentials are for (e.g. `xenapi`, `xen1.example`). */
  service: text,
  host: text,
  /** From the hop nearest the driver outwards to the daemon the client talks to. */
  origin: x.array(originHop, RELAY_MAX_HOPS),
  /** Time left to answer, in ms, when the request was sent. */
  deadline_ms: x.uint,
  credentials: x.array(relayCredential, RELAY_MAX_CREDENTIALS),
});

export const relayAnswerArgs = x.struct({
  id: x.uint,
  status: x.int,
  /** One entry per requested credential when status is OK. */
  results: x.array(x.optional(x.string(RELAY_ANSWER_MAX)), RELAY_MAX_CREDENTIALS),
  /** Why, when status is not OK (never a credential value). */
  message: text,
});

export const relayCancelMsg = x.struct({ id: x.uint, status: x.int, message: text });

/** One daemon a connection came through, and the driver it was passed on with (`remote`). */
export const relayHop = x.struct({ daemon: text, driver: text });
/** Nearest the original client first; the calling daemon last. */
export const relayHopsArgs = x.struct({ hops: x.array(relayHop, RELAY_MAX_HOPS) });

export type RelayRequestMsg = x.Infer<typeof relayRequestMsg>;
export type RelayAnswerArgs = x.Infer<typeof relayAnswerArgs>;
export type RelayEnableArgs = x.Infer<typeof relayEnableArgs>;
export type RelayHopsArgs = x.Infer<typeof relayHopsArgs>;
