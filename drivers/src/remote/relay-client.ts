// The client half of the credential relay on one connection: declare what we can answer, then
// hand each request the server sends to the host's handler and send back exactly one answer.

import {
  ErrorCode,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  RelayProc,
  RelayStatus,
  VirError,
  relayError,
  relayProtocol as p,
  relayStatusOf,
  xdr,
  type Credential,
  type CredentialType,
  type RelayClientConfig,
  type RpcConnection,
} from '@virtauth/core';

/**
 * Enables the relay on a connection. Resolves false when the server does not know the relay
 * program (an older server or libvirtd): the open then goes on without it.
 */
export async function enableRelay(rpc: RpcConnection, cfg: RelayClientConfig): Promise<boolean> {
  try {
    await rpc.call(
      RELAY_PROGRAM,
      RELAY_PROTOCOL_VERSION,
      RelayProc.ENABLE,
      p.relayEnableArgs,
      { cred_types: [...cfg.credTypes], person_present: cfg.personPresent ? 1 : 0, timeout_ms: cfg.timeoutMs, max_requests: cfg.maxRequests },
      p.relayEnableRet,
    );
  } catch (e) {
    if (e instanceof VirError && e.code === ErrorCode.RPC && e.message.startsWith('Cannot find program')) return false;
    throw e;
  }
  const inFlight = new Map<number, AbortController>();
  const answer = (id: number, status: number, results: (string | null)[], message: string) =>
    rpc
      .call(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.ANSWER, p.relayAnswerArgs, { id, status, results, message: message.slice(0, p.RELAY_TEXT_MAX) }, xdr.xvoid)
      .catch((e: unknown) => rpc.emit('protocolError', e));

  rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
    if (h.proc === RelayProc.REQUEST) {
      const msg = p.relayRequestMsg.decode(body);
      if (inFlight.has(msg.id)) return; // a replayed request id: the first one is being answered
      const controller = new AbortController();
      inFlight.set(msg.id, controller);
      const credentials: Credential[] = msg.credentials.map((c) => ({
        type: c.type as CredentialType,
        prompt: c.prompt,
        challenge: c.challenge,
        defresult: c.defresult,
        result: null,
      }));
      cfg
        .handle({ service: msg.service, host: msg.host, origin: msg.origin, credentials, deadline: Date.now() + msg.deadline_ms }, controller.signal)
        .then(
          () => {
            if (!controller.signal.aborted) void answer(msg.id, RelayStatus.OK, credentials.map((c) => c.result), '');
          },
          (e: unknown) => {
            if (!controller.signal.aborted) void answer(msg.id, relayStatusOf(e), [], e instanceof Error ? e.message : String(e));
          },
        )
        .finally(() => inFlight.delete(msg.id));
    } else if (h.proc === RelayProc.CANCEL) {
      const msg = p.relayCancelMsg.decode(body);
      inFlight.get(msg.id)?.abort(relayError(msg.status, msg.message));
    }
  });
  rpc.once('close', () => {
    for (const c of inFlight.values()) c.abort(relayError(RelayStatus.CANCELLED, 'the connection to the server closed'));
    inFlight.clear();
  });
  return true;
}
