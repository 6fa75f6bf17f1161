// The daemon's half of the credential relay as an extension of virtauthd: the relay program on
// every connection, and the credentials a driver asks for during CONNECT_OPEN sent back to that
// connection's client; a remote driver opened here forwards the next daemon's requests the same
// way. The daemon adds it to its extensions; it sees a connection only as ExtensionSession.

import {
  ErrorCode,
  ErrorDomain,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  RelayProc,
  VirError,
  makeCredentialRequester,
  relayProtocol as p,
  ALL_CREDENTIAL_TYPES,
  type CredentialSource,
  type DriverOpenContext,
  type ExtensionLog,
  type ExtensionSession,
  type Procedure,
  type ProgramDefinition,
} from '@virtauth/core';
import { attachableRelay } from '../client/wire.js';
import { RelayChannel, relayNotEnabledError, type RelayAuditSink } from './channel.js';

export interface RelaySettings {
  /** Longest a relayed request may wait, whatever the client asks for (ms). */
  maxTimeoutMs: number;
  maxRequestsPerOpen: number;
  /**
   * Makes the writer of a connection's audit records from its logger (bound to `relay.audit`)
   * and their message; null or absent: none are built. Called from here, so a log filter on the
   * relay's files applies to the records.
   */
  audit?(log: ExtensionLog, msg: string): RelayAuditSink | null;
}

/** What a CONNECT_OPEN is opening, and the daemon's own credential sources for it. */
export interface RelayOpenTarget {
  uri: string;
  driver: string;
  sources: readonly CredentialSource[];
}

/** Why waits end when a client goes: one error for all, not a stack trace per connection. */
const CLIENT_DISCONNECTED = new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.AUTH, detail: 'client disconnected' });

/** The daemon's hooks (a DaemonExtension of virtauthd), for sessions of type `S`. */
export interface RelayExtension<S extends ExtensionSession = ExtensionSession> {
  /** Whether the client enabled the credential relay on its connection. */
  relayEnabled(session: S): boolean;
  onSession(session: S): void;
  programs(daemon: { readonly processName: string }): ProgramDefinition<S>[];
  decorateOpenContext(session: S, ctx: DriverOpenContext, target: RelayOpenTarget): Promise<DriverOpenContext>;
  openFinished(session: S): void;
}

export function relayExtension<S extends ExtensionSession>(settings: RelaySettings): RelayExtension<S> {
  // Only clients that enabled the relay have a channel: the others (nearly all of them) cost
  // nothing here but the ANSWER handler, and their drivers' requests fail as unanswerable.
  const channels = new WeakMap<S, RelayChannel>();
  let processName = '';

  const createChannel = (session: S): RelayChannel => {
    const writeAudit = settings.audit?.(session.log.child({ event: 'relay.audit' }), 'relayed credential request');
    const channel = new RelayChannel({
      connectionId: session.connectionId,
      // A REQUEST with its origin chain and prompts is a few hundred bytes.
      sendRequest: (msg) => session.rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.REQUEST, p.relayRequestMsg, msg, 512),
      sendCancel: (id, status, message) =>
        session.rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.CANCEL, p.relayCancelMsg, {
          id,
          status,
          message: message.slice(0, p.RELAY_TEXT_MAX),
        }),
      maxTimeoutMs: settings.maxTimeoutMs,
      maxRequestsPerOpen: settings.maxRequestsPerOpen,
      ...(writeAudit ? { audit: writeAudit } : {}),
    });
    channels.set(session, channel);
    // An administrator's client-disconnect gives its own reason to the waits it ends.
    session.onClose(() => channel.close(session.closeReason ?? CLIENT_DISCONNECTED));
    return channel;
  };

  return {
    relayEnabled: (session) => channels.get(session)?.clientCapabilities != null,

    onSession(session) {
      // ANSWER is a one-way message: the first answer to a waiting request is applied; a stray
      // or replayed one is dropped and logged (never its values), within the connection's budget
      // of such lines. A client that did not enable the relay has nothing to answer: its ANSWERs
      // are dropped before any decoding.
      session.rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
        if (h.proc !== RelayProc.ANSWER) return;
        const channel = channels.get(session);
        if (!channel?.enabled) {
          session.peerFaults.warn(
            { event: 'relay.answer.rejected', reason: 'the credential relay is not enabled on this connection' },
            'relay answer dropped',
          );
          return;
        }
        let args: p.RelayAnswerArgs;
        try {
          args = p.relayAnswerArgs.decode(body);
        } catch (e) {
          session.peerFaults.warn(
            { event: 'relay.answer.rejected', reason: `undecodable: ${(e as Error).message}` },
            'malformed relay answer',
          );
          return;
        }
        try {
          channel.answer(args);
        } catch (e) {
          session.peerFaults.warn({ event: 'relay.answer.rejected', id: args.id, reason: (e as Error).message }, 'relay answer rejected');
        }
      });
    },

    programs(daemon): ProgramDefinition<S>[] {
      processName = daemon.processName;
      const procs = new Map<number, Procedure<any, any, S>>();
      procs.set(RelayProc.ENABLE, {
        args: p.relayEnableArgs,
        ret: p.relayEnableRet,
        handle: (s, a: p.RelayEnableArgs) => {
          if (s.openStarted) {
            throw new VirError({
              code: ErrorCode.OPERATION_INVALID,
              domain: ErrorDomain.AUTH,
              detail: 'the credential relay must be enabled before CONNECT_OPEN',
            });
          }
          const channel = channels.get(s) ?? createChannel(s);
          channel.enable({
            credTypes: a.cred_types,
            personPresent: a.person_present !== 0,
            timeoutMs: a.timeout_ms,
            maxRequests: a.max_requests,
          });
          s.log.debug(
            { event: 'relay.enabled', credTypes: a.cred_types, personPresent: a.person_present !== 0 },
            'client enabled the credential relay',
          );
          return { daemon: processName, max_timeout_ms: channel.clientCapabilities!.timeoutMs };
        },
      });
      return [{ prog: RELAY_PROGRAM, vers: RELAY_PROTOCOL_VERSION, procedures: procs }];
    },

    async decorateOpenContext(session, ctx, target) {
      const channel = channels.get(session);
      channel?.beginOpen(ctx.signal);
      const hop = { daemon: processName, driver: target.driver, uri: target.uri };
      // The daemon's own auth.conf first; whatever it lacks goes back to the client.
      const relayAuth = {
        credTypes: ALL_CREDENTIAL_TYPES,
        callback: (
          creds: Parameters<RelayChannel['request']>[0]['credentials'],
          info: { service: string; host: string; signal?: AbortSignal; deadline?: number },
        ) => {
          const request = {
            service: info.service,
            host: info.host,
            origin: [hop],
            credentials: creds,
            deadline: info.deadline,
            // The open's own signal is watched once per open by the channel, not per request.
            signal: info.signal === ctx.signal ? undefined : info.signal,
          };
          return channel ? channel.request(request) : Promise.reject(relayNotEnabledError(request));
        },
      };
      const decorated: DriverOpenContext = { ...ctx, requestCredentials: makeCredentialRequester(target.sources, relayAuth) };
      const caps = channel?.clientCapabilities;
      if (channel && caps) {
        // A remote driver opened here enables the relay on the next daemon and forwards its
        // requests to our client, adding this daemon to their origin chain.
        decorated.relay = attachableRelay({
          credTypes: caps.credTypes,
          personPresent: caps.personPresent,
          timeoutMs: caps.timeoutMs,
          maxRequests: caps.maxRequests,
          handle: (req, cancel, done) => {
            channel
              .request({
                service: req.service,
                host: req.host,
                origin: [...req.origin, hop],
                credentials: req.credentials,
                deadline: req.deadline,
                cancel,
              })
              .then(
                () => done(null),
                // The channel ends requests with VirErrors only.
                (e: VirError) => done(e),
              );
          },
        });
      }
      return decorated;
    },

    openFinished(session) {
      channels.get(session)?.endOpen();
    },
  };
}
