// The daemon's end of one connection's credential channel. A driver's request becomes a
// REQUEST message; its answer arrives as an ANSWER message and settles the request at once.
// Every other way a wait can end (the deadline, the open abandoned, a further hop withdrawing,
// the client going away) is a stream of settlements the channel merges; the first settlement for
// a request wins. Requests themselves cost no subscription or timer of their own.

import { Subject, merge, mergeMap, type Subscription } from 'rxjs';
import {
  ErrorCode,
  ErrorDomain,
  RELAY_MAX_HOPS,
  RelayStatus,
  VirError,
  credentialTypeName,
  relayError,
  relayDetail,
  relayStatusOf,
  type Credential,
  type OriginHop,
  type relayProtocol,
} from '@virtauth/core';
import { performance } from 'node:perf_hooks';
import { DeadlineClock } from '../deadline-clock.js';
import { describeRequester, type RelayCancellation } from '../request.js';

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

/** The fields of an audit record known when the request is sent. */
export type RelayAuditRequestFields = Omit<RelayAuditRecord, 'outcome' | 'durationMs' | 'message'>;
/** The fields known once it has ended. */
export type RelayAuditOutcomeFields = Pick<RelayAuditRecord, 'outcome' | 'durationMs' | 'message'>;

/** Where audit records go. */
export type RelayAuditSink = (record: RelayAuditRecord) => void;

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
  /** Where audit records go; none are built without it. */
  audit?: RelayAuditSink | undefined;
}

export interface ChannelRequest {
  service: string;
  host: string;
  origin: OriginHop[];
  credentials: Credential[];
  /** The caller's own deadline (absolute ms), e.g. one that came from a further hop. */
  deadline?: number | undefined;
  /** The driver's own signal: aborting it withdraws the request. */
  signal?: AbortSignal | undefined;
  /** A further hop's cancellation of the request this one forwards. */
  cancel?: RelayCancellation | undefined;
}

const OUTCOME_NAMES = Object.fromEntries(Object.entries(RelayStatus).map(([k, v]) => [v, k])) as Record<number, keyof typeof RelayStatus>;

/** A request waiting for its answer. */
interface Waiting {
  readonly id: number;
  readonly req: ChannelRequest;
  readonly started: number;
  /** When the wait ends, on the deadline clock (performance.now()). */
  readonly due: number;
  readonly remaining: number;
  readonly resolve: () => void;
  readonly reject: (e: VirError) => void;
  /** Stops listening to the request's own signal or cancellation. */
  detach: (() => void) | undefined;
}

/** How one request ended: the client's answer, or an error raised on this side. */
type Settlement = { id: number; answer: AnswerArgs } | { id: number; error: VirError };

export class RelayChannel {
  private capabilities: ClientRelayCapabilities | null = null;
  private readonly waiting = new Map<number, Waiting>();
  /** Ends raised on this side: deadline, withdrawal, the open finishing, the client leaving. */
  private readonly withdrawals$ = new Subject<Settlement>();
  private readonly clock = new DeadlineClock();
  private readonly settlements: Subscription;
  /** Stops listening to the signal of the open in progress. */
  private detachOpen: (() => void) | undefined;
  private nextId = 1;
  private openInProgress = false;
  private requestsThisOpen = 0;
  private isClosed = false;

  constructor(private readonly opts: RelayChannelOptions) {
    this.settlements = merge(this.clock.expired$.pipe(mergeMap((now) => this.expiredBy(now))), this.withdrawals$).subscribe((s) =>
      this.settle(s),
    );
  }

  get enabled(): boolean {
    return this.capabilities !== null;
  }

  get clientCapabilities(): ClientRelayCapabilities | null {
    return this.capabilities;
  }

  enable(caps: ClientRelayCapabilities): void {
    this.capabilities = { ...caps, timeoutMs: Math.min(caps.timeoutMs || this.opts.maxTimeoutMs, this.opts.maxTimeoutMs) };
  }

  /**
   * Requests are taken only between this and endOpen, i.e. while CONNECT_OPEN runs; `signal`
   * aborting (the open abandoned) withdraws every request still waiting.
   */
  beginOpen(signal?: AbortSignal): void {
    this.openInProgress = true;
    this.requestsThisOpen = 0;
    this.detachOpen?.();
    this.detachOpen = signal ? onAbort(signal, (reason) => this.withdrawAll(reason)) : undefined;
  }

  endOpen(): void {
    this.openInProgress = false;
    this.detachOpen?.();
    this.detachOpen = undefined;
    this.withdrawAll(relayError(RelayStatus.CANCELLED, 'the open finished'));
  }

  /** The client went away: every wait ends at once. */
  close(reason: VirError): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.detachOpen?.();
    this.withdrawAll(relayError(RelayStatus.CANCELLED, `the client disconnected (${reason.message})`));
    this.settlements.unsubscribe();
  }

  /** Takes an ANSWER message; throws for an answer that matches no waiting request. */
  answer(args: AnswerArgs): void {
    if (!this.waiting.has(args.id)) {
      throw new VirError({
        code: ErrorCode.OPERATION_INVALID,
        domain: ErrorDomain.AUTH,
        detail: `relay answer for request ${args.id}, which is not waiting for one (unknown, already answered, or withdrawn)`,
      });
    }
    // Settled here and now, as the merged stream would (synchronously): the answer's way to the
    // driver, and on to the next hop, is on every relayed round trip's critical path.
    this.settle({ id: args.id, answer: args });
  }

  /** Asks the client; resolves once every credential has a result, or rejects with a VirError. */
  request(req: ChannelRequest): Promise<void> {
    const caps = this.capabilities;
    if (!caps) return Promise.reject(relayNotEnabledError(req));
    if (this.isClosed) return Promise.reject(relayError(RelayStatus.CANCELLED, 'the client disconnected'));
    if (req.signal?.aborted) return Promise.reject(abortError(req.signal.reason));
    if (req.cancel?.cancelled) return Promise.reject(abortError(req.cancel.reason));
    if (!this.openInProgress)
      return Promise.reject(
        relayError(RelayStatus.UNAVAILABLE, `${describeRequester(req)} asked for credentials outside of a connection open`),
      );
    if (req.origin.length > RELAY_MAX_HOPS)
      return Promise.reject(
        relayError(RelayStatus.DENIED, `the request from ${describeRequester(req)} travelled more than ${RELAY_MAX_HOPS} hops`),
      );
    if (!req.credentials.every((c) => caps.credTypes.includes(c.type))) {
      const unanswerable = req.credentials.filter((c) => !caps.credTypes.includes(c.type));
      return Promise.reject(
        relayError(
          RelayStatus.UNAVAILABLE,
          `${describeRequester(req)} needs ${unanswerable.map((c) => credentialTypeName(c.type)).join(', ')}, which the client said it cannot answer`,
        ),
      );
    }
    const cap = Math.min(caps.maxRequests, this.opts.maxRequestsPerOpen);
    if (++this.requestsThisOpen > cap)
      return Promise.reject(
        relayError(RelayStatus.DENIED, `${describeRequester(req)} exceeded the limit of ${cap} credential requests per open`),
      );

    const id = this.nextId++;
    const started = Date.now();
    const deadline = Math.min(req.deadline ?? Infinity, started + caps.timeoutMs);
    const remaining = Math.max(0, deadline - started);
    let waiting!: Waiting;
    const answered = new Promise<void>((resolve, reject) => {
      waiting = { id, req, started, due: performance.now() + remaining, resolve, reject, remaining, detach: undefined };
    });
    this.waiting.set(id, waiting);
    if (req.signal || req.cancel) this.listenForWithdrawal(id, waiting);
    this.clock.watch(waiting.due);
    // Last, so the packet leaves as soon as this turn ends.
    this.opts.sendRequest({
      id,
      service: req.service,
      host: req.host,
      origin: req.origin,
      deadline_ms: remaining,
      // The codec writes a credential's declared fields only: no result travels this way.
      credentials: req.credentials,
    });
    return answered;
  }

  /** Settles a request once: later settlements for the same id find nothing and do nothing. */
  private settle(s: Settlement): void {
    const w = this.waiting.get(s.id);
    if (!w) return;
    this.waiting.delete(s.id);
    w.detach?.();
    const error = 'answer' in s ? this.applyAnswer(s.answer, w.req) : s.error;
    // Tell the client the request is withdrawn, unless it ended it itself or is gone. The
    // detail alone: the client adds the prefix of the status's code again.
    if (error && !('answer' in s) && !this.isClosed) this.opts.sendCancel(s.id, relayStatusOf(error), relayDetail(error));
    if (this.opts.audit) this.auditSettled(s.id, w, error);
    if (error) w.reject(error);
    else w.resolve();
  }

  private auditSettled(id: number, w: Waiting, error: VirError | null): void {
    const status = error ? relayStatusOf(error) : RelayStatus.OK;
    const outcome: RelayAuditOutcomeFields = { outcome: OUTCOME_NAMES[status] ?? 'FAILED', durationMs: Date.now() - w.started };
    if (error) outcome.message = error.message;
    this.opts.audit!({ ...this.auditRequestFields(id, w.req), ...outcome });
  }

  private auditRequestFields(id: number, req: ChannelRequest): RelayAuditRequestFields {
    return {
      id,
      connectionId: this.opts.connectionId,
      origin: req.origin,
      service: req.service,
      host: req.host,
      credentialTypes: req.credentials.map((c) => credentialTypeName(c.type)),
    };
  }

  /** Ends the request when the driver's signal aborts or a further hop cancels it. */
  private listenForWithdrawal(id: number, waiting: Waiting): void {
    const { signal, cancel } = waiting.req;
    const withdraw = (reason: unknown) => this.withdrawals$.next({ id, error: abortError(reason) });
    const detachSignal = signal ? onAbort(signal, withdraw) : undefined;
    const detachCancel = cancel ? cancel.onCancel(withdraw) : undefined;
    waiting.detach = () => {
      detachSignal?.();
      detachCancel?.();
    };
  }

  /** The requests whose deadline has passed, as settlements; re-arms for the earliest left. */
  private expiredBy(now: number): Settlement[] {
    return this.clock.takeExpired(this.waiting.values(), now).map((w) => ({
      id: w.id,
      error: relayError(RelayStatus.TIMED_OUT, `no answer from the client within ${w.remaining} ms for ${describeRequester(w.req)}`),
    }));
  }

  private withdrawAll(reason: unknown): void {
    const error = abortError(reason);
    for (const id of [...this.waiting.keys()]) this.withdrawals$.next({ id, error });
  }

  /** The error an answer ends in, or null when it filled every credential. */
  private applyAnswer(a: AnswerArgs, req: ChannelRequest): VirError | null {
    const creds = req.credentials;
    if (a.status !== RelayStatus.OK)
      return relayError(a.status, a.message || `the client refused the request from ${describeRequester(req)}`);
    if (a.results.length !== creds.length) {
      return relayError(RelayStatus.FAILED, `the client answered ${a.results.length} credentials, ${creds.length} were asked`);
    }
    const missing = creds.filter((_, i) => a.results[i] === null);
    if (missing.length > 0)
      return relayError(RelayStatus.FAILED, `the client left ${missing.map((c) => credentialTypeName(c.type)).join(', ')} unanswered`);
    for (let i = 0; i < creds.length; i++) creds[i]!.result = a.results[i]!;
    return null;
  }
}

/** Why a request fails on a connection whose client did not enable the credential relay. */
export function relayNotEnabledError(req: Pick<ChannelRequest, 'service' | 'host' | 'origin' | 'credentials'>): VirError {
  const types = req.credentials.map((c) => credentialTypeName(c.type)).join(', ');
  return relayError(
    RelayStatus.UNAVAILABLE,
    `${describeRequester(req)} needs ${types}, but the client cannot answer relayed credential requests (it did not enable the credential relay)`,
  );
}

/** Calls `listener` with the signal's reason when it aborts; returns its removal. */
function onAbort(signal: AbortSignal, listener: (reason: unknown) => void): () => void {
  const handler = () => listener(signal.reason);
  signal.addEventListener('abort', handler, { once: true });
  return () => signal.removeEventListener('abort', handler);
}

function abortError(reason: unknown): VirError {
  if (reason instanceof VirError) return reason;
  return relayError(RelayStatus.CANCELLED, reason instanceof Error ? reason.message : 'the open was abandoned');
}
