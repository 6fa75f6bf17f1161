// The daemon's end of one connection's credential channel. A driver's request becomes a
// REQUEST message; its answer arrives as an ANSWER message. Waiting is one stream per request,
// raced against the deadline, the open being abandoned, and the client going away.

import { Observable, Subject, firstValueFrom, map, mergeMap, race, throwError, timer } from 'rxjs';
import {
  ErrorCode,
  ErrorDomain,
  RELAY_MAX_HOPS,
  RelayStatus,
  VirError,
  credentialTypeName,
  describeRequester,
  relayError,
  relayDetail,
  relayStatusOf,
  type Credential,
  type OriginHop,
  type relayProtocol,
} from '@virtauth/core';

type RequestMsg = relayProtocol.RelayRequestMsg;
type AnswerArgs = relayProtocol.RelayAnswerArgs;

/** One line of the relay's audit trail. Never carries a credential value. */
export interface RelayAuditRecord {
  id: number;
  connectionId: number;
  origin: OriginHop[];
  service: string;
  host: string;
  credentialTypes: string[];
  outcome: keyof typeof RelayStatus;
  durationMs: number;
  message?: string;
}

export interface ClientRelayCapabilities {
  credTypes: readonly number[];
  personPresent: boolean;
  timeoutMs: number;
  maxRequests: number;
}

export interface RelayChannelOptions {
  connectionId: number;
  /** Sends a REQUEST or CANCEL message to the client. */
  sendRequest(msg: RequestMsg): void;
  sendCancel(id: number, status: RelayStatus, message: string): void;
  /** Cap on any request's wait, from the daemon's config, in ms. */
  maxTimeoutMs: number;
  /** Cap on requests during one CONNECT_OPEN, from the daemon's config. */
  maxRequestsPerOpen: number;
  audit(record: RelayAuditRecord): void;
}

export interface ChannelRequest {
  service: string;
  host: string;
  origin: OriginHop[];
  credentials: Credential[];
  /** The caller's own deadline (absolute ms), e.g. one that came from a further hop. */
  deadline?: number;
  /** Any of these aborting ends the wait (the open abandoned, a further hop withdrawing). */
  signals?: readonly (AbortSignal | undefined)[];
}

const OUTCOME_NAMES = Object.fromEntries(Object.entries(RelayStatus).map(([k, v]) => [v, k])) as Record<number, keyof typeof RelayStatus>;

export class RelayChannel {
  private capabilities: ClientRelayCapabilities | null = null;
  private readonly closed$ = new Subject<VirError>();
  /** Each waiting request's own answer stream, by id: an answer goes straight to its waiter. */
  private readonly pending = new Map<number, Subject<AnswerArgs>>();
  private nextId = 1;
  private openInProgress = false;
  private requestsThisOpen = 0;
  private isClosed = false;

  constructor(private readonly opts: RelayChannelOptions) {}

  get enabled(): boolean {
    return this.capabilities !== null;
  }

  get clientCapabilities(): ClientRelayCapabilities | null {
    return this.capabilities;
  }

  enable(caps: ClientRelayCapabilities): void {
    this.capabilities = { ...caps, timeoutMs: Math.min(caps.timeoutMs || this.opts.maxTimeoutMs, this.opts.maxTimeoutMs) };
  }

  /** Requests are taken only between these two calls, i.e. while CONNECT_OPEN runs. */
  beginOpen(): void {
    this.openInProgress = true;
    this.requestsThisOpen = 0;
  }

  endOpen(): void {
    this.openInProgress = false;
    for (const id of this.pending.keys()) this.opts.sendCancel(id, RelayStatus.CANCELLED, 'the open finished');
  }

  /** The client went away: every wait ends at once. */
  close(reason: VirError): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closed$.next(reason);
    this.closed$.complete();
  }

  /** Takes an ANSWER message; throws for an answer that matches no waiting request. */
  answer(args: AnswerArgs): void {
    const waiter = this.pending.get(args.id);
    if (!waiter) {
      throw new VirError({
        code: ErrorCode.OPERATION_INVALID,
        domain: ErrorDomain.AUTH,
        detail: `relay answer for request ${args.id}, which is not waiting for one (unknown, already answered, or withdrawn)`,
      });
    }
    // Only the first answer counts: the id stops being pending before anyone sees this one.
    this.pending.delete(args.id);
    waiter.next(args);
    waiter.complete();
  }

  /** Asks the client; resolves once every credential has a result, or rejects with a VirError. */
  async request(req: ChannelRequest): Promise<void> {
    const caps = this.capabilities;
    // Built only when a message needs them: most requests are simply answered.
    const who = () => describeRequester(req);
    const types = () => req.credentials.map((c) => credentialTypeName(c.type));
    if (!caps) {
      throw relayError(RelayStatus.UNAVAILABLE, `${who()} needs ${types().join(', ')}, but the client cannot answer relayed credential requests (it did not enable the credential relay)`);
    }
    if (this.isClosed) throw relayError(RelayStatus.CANCELLED, 'the client disconnected');
    const signals = (req.signals ?? []).filter((x): x is AbortSignal => x !== undefined);
    const alreadyAborted = signals.find((x) => x.aborted);
    if (alreadyAborted) throw abortError(alreadyAborted);
    if (!this.openInProgress) throw relayError(RelayStatus.UNAVAILABLE, `${who()} asked for credentials outside of a connection open`);
    if (req.origin.length > RELAY_MAX_HOPS) throw relayError(RelayStatus.DENIED, `the request from ${who()} travelled more than ${RELAY_MAX_HOPS} hops`);
    const unanswerable = req.credentials.filter((c) => !caps.credTypes.includes(c.type));
    if (unanswerable.length > 0) {
      throw relayError(RelayStatus.UNAVAILABLE, `${who()} needs ${unanswerable.map((c) => credentialTypeName(c.type)).join(', ')}, which the client said it cannot answer`);
    }
    const cap = Math.min(caps.maxRequests, this.opts.maxRequestsPerOpen);
    if (++this.requestsThisOpen > cap) throw relayError(RelayStatus.DENIED, `${who()} exceeded the limit of ${cap} credential requests per open`);

    const id = this.nextId++;
    const started = Date.now();
    const deadline = Math.min(req.deadline ?? Infinity, started + caps.timeoutMs);
    const remaining = Math.max(0, deadline - started);
    const answers$ = new Subject<AnswerArgs>();
    this.pending.set(id, answers$);

    const answered$ = answers$.pipe(map((a) => this.applyAnswer(a, req.credentials, who)));
    const expired$ = timer(remaining).pipe(mergeMap(() => throwError(() => relayError(RelayStatus.TIMED_OUT, `no answer from the client within ${remaining} ms for ${who()}`))));
    const disconnected$ = this.closed$.pipe(mergeMap((reason) => throwError(() => relayError(RelayStatus.CANCELLED, `the client disconnected (${reason.message})`))));
    const sources = [answered$, expired$, disconnected$];
    for (const signal of signals) sources.push(abortedBy(signal));
    const outcome$ = race(sources);

    this.opts.sendRequest({
      id,
      service: req.service,
      host: req.host,
      origin: req.origin,
      deadline_ms: remaining,
      credentials: req.credentials.map((c) => ({ type: c.type, prompt: c.prompt, challenge: c.challenge, defresult: c.defresult })),
    });

    let status: RelayStatus = RelayStatus.OK;
    let message: string | undefined;
    try {
      await firstValueFrom(outcome$);
    } catch (e) {
      status = relayStatusOf(e);
      message = (e as Error).message;
      // Tell the client the request is withdrawn, unless it is the one who ended it.
      // The detail alone: the client adds the prefix of the status's code again.
      if (this.pending.delete(id) && !this.isClosed) this.opts.sendCancel(id, status, relayDetail(e));
      throw e;
    } finally {
      this.pending.delete(id);
      this.opts.audit({
        id,
        connectionId: this.opts.connectionId,
        origin: req.origin,
        service: req.service,
        host: req.host,
        credentialTypes: types(),
        outcome: OUTCOME_NAMES[status] ?? 'FAILED',
        durationMs: Date.now() - started,
        ...(message !== undefined ? { message } : {}),
      });
    }
  }

  private applyAnswer(a: AnswerArgs, creds: Credential[], who: () => string): void {
    if (a.status !== RelayStatus.OK) throw relayError(a.status, a.message || `the client refused the request from ${who()}`);
    if (a.results.length !== creds.length) {
      throw relayError(RelayStatus.FAILED, `the client answered ${a.results.length} credentials, ${creds.length} were asked`);
    }
    const missing = creds.filter((_, i) => a.results[i] === null);
    if (missing.length > 0) throw relayError(RelayStatus.FAILED, `the client left ${missing.map((c) => credentialTypeName(c.type)).join(', ')} unanswered`);
    creds.forEach((c, i) => (c.result = a.results[i]!));
  }
}

/** Errors with the signal's reason when it aborts (fromEvent's generic target probing, avoided). */
function abortedBy(signal: AbortSignal): Observable<never> {
  return new Observable<never>((subscriber) => {
    const onAbort = () => subscriber.error(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  });
}

function abortError(signal: AbortSignal): VirError {
  const r: unknown = signal.reason;
  if (r instanceof VirError) return r;
  return relayError(RelayStatus.CANCELLED, r instanceof Error ? r.message : 'the open was abandoned');
}
