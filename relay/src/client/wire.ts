// The client half of the relay on the wire, on one connection: declare what we can answer, then
// hand each request the server sends to the handler and send back exactly one answer.

import {
  ErrorCode,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  RelayProc,
  RelayStatus,
  VirError,
  relayError,
  relayProtocol as p,
  relayDetail,
  relayStatusOf,
  type AttachedRelay,
  type ClientRelay,
  type ConnectUri,
  type Credential,
  type CredentialType,
  type DaemonIdentity,
  type ProgramConnection,
  type TransportInfo,
} from '@virtauth/core';
import { RelayCancellation, describeRequester, type RelayClientConfig } from '../request.js';

/** The far end of a relay connection, as the transport established it. */
export interface RelayPeer {
  identity: DaemonIdentity | null;
  /** One string per daemon reached, the same across reconnects (per-origin limits key on it). */
  key: string;
}

/** The relay peer of a connection a remote driver opened to `uri`. */
export function relayPeerOf(uri: ConnectUri, transport: TransportInfo): RelayPeer {
  const identity = transport.identity ?? null;
  if (identity?.transport === 'unix') return { identity, key: `unix:${identity.socket}` };
  if (identity) return { identity, key: `${identity.transport}:${identity.host}:${identity.port}` };
  // Unverified: keyed on what the user named, so a reconnect still counts against it.
  return { identity, key: `${transport.kind}:${uri.host || 'localhost'}:${uri.port ?? ''}` };
}

/** `cfg` as the object a driver attaches to the connections it opens (`DriverOpenContext.relay`). */
export function attachableRelay(cfg: RelayClientConfig): RelayClientConfig & ClientRelay {
  return { ...cfg, attach: (conn, target) => enableRelay(conn, cfg, relayPeerOf(target.uri, target.transport)) };
}

/**
 * Enables the relay on a connection. Resolves null when the server does not know the relay
 * program (an older server or libvirtd): the open then goes on without it.
 *
 * Each request's handler gets a cancellation this connection triggers when the server withdraws
 * the request, the connection closes, or the open finishes; the handler calls `done` once.
 */
export async function enableRelay(
  rpc: ProgramConnection,
  cfg: RelayClientConfig,
  peer: RelayPeer = { identity: null, key: `connection:${rpc.id}` },
): Promise<AttachedRelay | null> {
  let enabled: { daemon: string };
  try {
    enabled = await rpc.call(
      RELAY_PROGRAM,
      RELAY_PROTOCOL_VERSION,
      RelayProc.ENABLE,
      p.relayEnableArgs,
      {
        cred_types: [...cfg.credTypes],
        person_present: cfg.personPresent ? 1 : 0,
        timeout_ms: cfg.timeoutMs,
        max_requests: cfg.maxRequests,
      },
      p.relayEnableRet,
    );
  } catch (e) {
    if (e instanceof VirError && e.code === ErrorCode.RPC && e.message.startsWith('Cannot find program')) return null;
    throw e;
  }
  // Every request carries the connection it came on: the handler checks its chain against it.
  const via = { daemon: enabled.daemon, identity: peer.identity, key: peer.key };
  // The requests this side still owes an answer: the one record of whether a request has ended
  // here. Withdrawing one (server CANCEL, close, open finished) takes it out, so its handler's
  // `done` then sends nothing; a handler that gives up first (its deadline) is still answered.
  const inFlight = new Map<number, RelayCancellation>();
  const withdraw = (id: number, c: RelayCancellation, reason: VirError) => {
    inFlight.delete(id);
    c.cancel(reason);
  };
  let opening = true;
  const answer = (id: number, status: number, results: (string | null)[], message: string) =>
    rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.ANSWER, p.relayAnswerArgs, {
      id,
      status,
      results,
      message: message.slice(0, p.RELAY_TEXT_MAX),
    });

  rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
    if (h.proc === RelayProc.REQUEST) {
      const msg = p.relayRequestMsg.decode(body);
      if (inFlight.has(msg.id)) return; // a replayed request id: the first one is being answered
      if (!opening) {
        answer(msg.id, RelayStatus.UNAVAILABLE, [], `${describeRequester(msg)} asked for credentials after the connection open finished`);
        return;
      }
      const cancel = new RelayCancellation();
      inFlight.set(msg.id, cancel);
      const credentials: Credential[] = msg.credentials.map((c) => ({
        type: c.type as CredentialType,
        prompt: c.prompt,
        challenge: c.challenge,
        defresult: c.defresult,
        result: null,
      }));
      const done = (error: VirError | null) => {
        if (inFlight.get(msg.id) !== cancel) return; // withdrawn, or answered already
        inFlight.delete(msg.id);
        if (error) answer(msg.id, relayStatusOf(error), [], relayDetail(error));
        else
          answer(
            msg.id,
            RelayStatus.OK,
            credentials.map((c) => c.result),
            '',
          );
      };
      try {
        cfg.handle(
          { service: msg.service, host: msg.host, origin: msg.origin, credentials, deadline: Date.now() + msg.deadline_ms, via },
          cancel,
          done,
        );
      } catch (e) {
        done(relayError(RelayStatus.FAILED, `the relay handler failed: ${(e as Error).message}`));
      }
    } else if (h.proc === RelayProc.CANCEL) {
      const msg = p.relayCancelMsg.decode(body);
      const c = inFlight.get(msg.id);
      if (c) withdraw(msg.id, c, relayError(msg.status, msg.message));
    }
  });
  const withdrawAll = (reason: VirError) => {
    for (const [id, c] of [...inFlight]) withdraw(id, c, reason);
  };
  rpc.once('close', () => withdrawAll(relayError(RelayStatus.CANCELLED, 'the connection to the server closed')));
  return {
    openFinished() {
      opening = false;
      withdrawAll(relayError(RelayStatus.CANCELLED, 'the connection open finished'));
    },
  };
}
