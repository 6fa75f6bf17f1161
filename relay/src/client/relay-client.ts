// The client's end of the relay: the stream of requests that daemons send back is checked
// against the client's policy, filled from stored credentials only where the policy binds them
// to the verified daemon, and mapped onto the application's callback (one prompt at a time,
// whatever the number of connections and hops). The deadline of every waiting request rides on
// one clock per open rather than a timer each.

import { Subject, EMPTY, concatMap, filter, merge, mergeMap, type ObservableInput } from 'rxjs';
import {
  RelayStatus,
  VirError,
  credentialTypeName,
  describeVia,
  relayDetail,
  relayError,
  relayStatusOf,
  type ClientRelay,
  type ConnectAuth,
  type Credential,
  type CredentialRequestInfo,
  type CredentialSource,
  type RelayVia,
} from '@virtauth/core';
import { performance } from 'node:perf_hooks';
import { DeadlineClock } from '../deadline-clock.js';
import {
  describeRequester,
  type RelayCancellation,
  type RelayClientConfig,
  type RelayHandler,
  type RelayedCredentialRequest,
} from '../request.js';
import { DEFAULT_ORIGIN_RATE, OriginRates, checkGrants, grantFor, policyAllows, type RelayPolicy } from './policy.js';
import { attachableRelay } from './wire.js';

export interface RelayClientOptions {
  auth: ConnectAuth | null;
  /** Consulted first with the request's service and host (auth.conf's `[auth-xenapi-xen1]`). */
  sources?: readonly CredentialSource[];
  policy?: RelayPolicy;
  /** Whether a person can answer; false answers from sources only. Default: a callback exists. */
  personPresent?: boolean;
  /** Called once per request with its outcome (types and origin only, never a value). */
  audit?: (record: ClientRelayAuditRecord) => void;
}

export interface ClientRelayAuditRecord {
  requester: string;
  /** The daemon the request arrived from, as the transport verified it, and its name. */
  daemon: string;
  credentialTypes: string[];
  outcome: keyof typeof RelayStatus;
  /** Why, when the outcome is not OK (never a credential value). */
  message?: string;
  durationMs: number;
}

const OUTCOMES = Object.fromEntries(Object.entries(RelayStatus).map(([k, v]) => [v, k])) as Record<number, keyof typeof RelayStatus>;

/** One relayed request on its way to an answer; it is waiting while in its client's `waiting`. */
interface Asked {
  readonly req: RelayedCredentialRequest;
  readonly cancel: RelayCancellation;
  readonly started: number;
  /** When the wait ends, on the deadline clock (performance.now()). */
  readonly due: number;
  readonly remaining: number;
  readonly done: (error: VirError | null) => void;
  /** Stops listening to the request's cancellation. */
  detach: () => void;
  /** Lets the prompt queue move on once the request has ended, however it ended. */
  release: (() => void) | undefined;
}

/** How one request ended: null when every credential was given. */
interface Settlement {
  asked: Asked;
  error: VirError | null;
}

/** The relay of one open: what the remote driver attaches, and the handler behind it. */
export type OpenRelay = RelayClientConfig & ClientRelay;

/**
 * The relay's client end for one application (one client library instance): one prompt queue,
 * so a person never sees two prompts at once whatever the number of opens, connections and hops,
 * and one rate per daemon reached, so a daemon that reconnects cannot reset its count. A prompt
 * never fails the queue: its outcome goes to its own request.
 */
export class RelayClient {
  private readonly prompts$ = new Subject<() => ObservableInput<unknown>>();
  private readonly originRates = new OriginRates();

  constructor() {
    this.prompts$.pipe(concatMap((prompt) => prompt())).subscribe();
  }

  /** The relay one open hands to its driver. */
  forOpen(opts: RelayClientOptions): OpenRelay {
    return attachableRelay(openRelay(opts, this.prompts$, this.originRates));
  }
}

/** The relay for one open, on a client of its own (its own prompt queue and per-origin rates). */
export function createRelayClient(opts: RelayClientOptions): OpenRelay {
  return new RelayClient().forOpen(opts);
}

function openRelay(
  opts: RelayClientOptions,
  prompts$: Subject<() => ObservableInput<unknown>>,
  originRates: OriginRates,
): RelayClientConfig {
  const policy = opts.policy ?? {};
  const declared = opts.auth?.credTypes ?? [];
  const personPresent = opts.personPresent ?? opts.auth !== null;
  const maxRequests = policy.maxRequestsPerOpen ?? 8;
  const timeoutMs = policy.timeoutMs ?? 120_000;
  const perOrigin = policy.perOrigin ?? DEFAULT_ORIGIN_RATE;
  const grants = policy.storedCredentials ?? [];
  checkGrants(grants);
  // Only sources that can look up an exact host may answer a relayed request.
  const sources = (opts.sources ?? []).filter((s) => s.fillExact !== undefined);
  const auth = opts.auth;
  let answered = 0;

  const waiting = new Set<Asked>();
  const clock = new DeadlineClock();
  /** Ends raised here: the callback's outcome, refusals, withdrawals by the connection. */
  const outcomes$ = new Subject<Settlement>();

  // Every way a request can end, merged; the first settlement of a request ends it.
  merge(outcomes$, clock.expired$.pipe(mergeMap((now) => expiredBy(now)))).subscribe(({ asked, error }) => settle(asked, error));

  function settle(asked: Asked, error: VirError | null): void {
    if (!waiting.delete(asked)) return;
    asked.detach();
    asked.release?.();
    // Giving up first (deadline, refusal) ends a prompt still up, through its signal.
    if (error) asked.cancel.cancel(error);
    if (opts.audit) {
      try {
        opts.audit({
          requester: describeRequester(asked.req),
          daemon: describeVia(asked.req.via),
          credentialTypes: asked.req.credentials.map((c) => credentialTypeName(c.type)),
          // The same status the answer will carry (the wire answers with relayStatusOf too).
          outcome: error ? (OUTCOMES[relayStatusOf(error)] ?? 'FAILED') : 'OK',
          ...(error ? { message: relayDetail(error) } : {}),
          durationMs: Date.now() - asked.started,
        });
      } catch {
        // An audit sink that throws must not lose the answer or stall the prompt queue.
      }
    }
    asked.done(error);
  }

  function expiredBy(now: number): Settlement[] {
    return clock.takeExpired(waiting, now).map((asked) => ({
      asked,
      error: relayError(RelayStatus.TIMED_OUT, `no answer within ${asked.remaining} ms for ${describeRequester(asked.req)}`),
    }));
  }

  // Requests as a stream: stored credentials first (only where a grant binds them to this
  // daemon, service and host), then the person, one at a time.
  const asked$ = new Subject<Asked>();
  const filled$ =
    sources.length === 0 || grants.length === 0
      ? asked$
      : asked$.pipe(
          mergeMap((asked) =>
            (grantFor(grants, asked.req) ? fillFromSources(sources, asked.req) : Promise.resolve()).then(
              () => asked,
              (e: unknown) => (
                outcomes$.next({ asked, error: asVirError(e, `auth.conf could not be read for ${describeRequester(asked.req)}`) }),
                null
              ),
            ),
          ),
          filter((asked): asked is Asked => asked !== null),
        );
  filled$.subscribe((asked) => {
    if (!waiting.has(asked)) return; // withdrawn or expired while auth.conf was read
    const missing = asked.req.credentials.filter((c) => c.result === null);
    if (missing.length === 0) return outcomes$.next({ asked, error: null });
    if (!personPresent || !auth) {
      const types = missing.map((c) => credentialTypeName(c.type)).join(', ');
      return outcomes$.next({
        asked,
        error: relayError(RelayStatus.UNAVAILABLE, `no person is present to give ${describeRequester(asked.req)} the ${types} it needs`),
      });
    }
    prompts$.next(() => prompt(auth, missing, asked));
  });

  /**
   * Runs the callback for one request, unless the request ended while it waited its turn. A
   * callback that answers at once is finished here; one that returns a promise holds the queue
   * until its request ends (answered, withdrawn or expired), not until the callback returns, so
   * a callback that ignores its aborted signal cannot hold every later prompt of the process.
   */
  function prompt(auth: ConnectAuth, missing: Credential[], asked: Asked): ObservableInput<unknown> {
    if (!waiting.has(asked)) return EMPTY;
    const req = asked.req;
    const finish = (ok: void | boolean) => outcomes$.next({ asked, error: callbackOutcome(ok, missing, req) });
    const fail = (e: unknown) =>
      outcomes$.next({ asked, error: asVirError(e, `the credential callback failed for ${describeRequester(req)}`) });
    let result: void | boolean | Promise<void | boolean>;
    try {
      result = auth.callback(missing, new RelayedRequestInfo(req, asked.cancel));
    } catch (e) {
      fail(e);
      return EMPTY;
    }
    if (!isPromiseLike(result)) {
      finish(result);
      return EMPTY;
    }
    const pending = result;
    return new Promise<void>((release) => {
      asked.release = release;
      Promise.resolve(pending).then(finish, fail);
    });
  }

  const handle: RelayHandler = (req, cancel, done) => {
    const started = Date.now();
    const remaining = Math.max(0, Math.min(req.deadline, started + timeoutMs) - started);
    const asked: Asked = { req, cancel, started, due: performance.now() + remaining, remaining, done, detach: noop, release: undefined };
    waiting.add(asked);
    const refusal = refuse(req);
    if (refusal) return outcomes$.next({ asked, error: refusal });
    // The connection withdrawing the request ends it at once; a queued prompt is then skipped.
    asked.detach = cancel.onCancel((reason) => outcomes$.next({ asked, error: reason }));
    if (!waiting.has(asked)) return;
    clock.watch(asked.due);
    asked$.next(asked);
  };

  /** The error that stops a request before anyone is asked, or null. */
  const refuse = (req: RelayedCredentialRequest): VirError | null => {
    if (++answered > maxRequests)
      return relayError(
        RelayStatus.DENIED,
        `${describeRequester(req)} exceeded this client's limit of ${maxRequests} credential requests per open`,
      );
    const last = req.origin[req.origin.length - 1];
    if (!req.via || !last || last.daemon !== req.via.daemon) {
      // The chain must end at the daemon we reached: an empty or foreign chain hides who asks.
      const claimed = last ? `ends at '${last.daemon}'` : 'is empty';
      return relayError(
        RelayStatus.DENIED,
        `a relayed request whose origin chain ${claimed} arrived from ${describeVia(req.via)}: the chain must end at the daemon this client is connected to`,
      );
    }
    if (!originRates.admit(req.via.key, perOrigin)) {
      return relayError(
        RelayStatus.DENIED,
        `${describeRequester(req)} exceeded this client's limit of ${perOrigin.maxRequests} credential requests per ${perOrigin.windowMs / 1000} s from ${describeVia(req.via)}`,
      );
    }
    if (!req.credentials.every((c) => policyAllows(policy, declared, req, c.type))) {
      const denied = req.credentials.filter((c) => !policyAllows(policy, declared, req, c.type));
      return relayError(
        RelayStatus.DENIED,
        `the client's policy does not let ${describeRequester(req)} ask for ${denied.map((c) => credentialTypeName(c.type)).join(', ')}`,
      );
    }
    return null;
  };

  return { credTypes: declared, personPresent, timeoutMs, maxRequests, handle };
}

const noop = () => {};

/** What the callback learns of a relayed request; its signal is made on first use. */
class RelayedRequestInfo implements CredentialRequestInfo {
  readonly service: string;
  readonly host: string;
  readonly origin: RelayedCredentialRequest['origin'];
  readonly deadline: number;
  readonly via: RelayVia | undefined;

  constructor(
    req: RelayedCredentialRequest,
    private readonly cancel: RelayCancellation,
  ) {
    this.service = req.service;
    this.host = req.host;
    this.origin = req.origin;
    this.deadline = req.deadline;
    this.via = req.via;
  }

  get signal(): AbortSignal {
    return this.cancel.signal;
  }
}

function callbackOutcome(ok: void | boolean, missing: Credential[], req: RelayedCredentialRequest): VirError | null {
  if (ok === false) return relayError(RelayStatus.CANCELLED, `the user cancelled the credentials ${describeRequester(req)} asked for`);
  const unfilled = missing.filter((c) => c.result === null);
  if (unfilled.length > 0)
    return relayError(
      RelayStatus.CANCELLED,
      `no answer was given for ${unfilled.map((c) => credentialTypeName(c.type)).join(', ')} (${describeRequester(req)})`,
    );
  return null;
}

function isPromiseLike(x: unknown): x is PromiseLike<void | boolean> {
  return typeof (x as PromiseLike<unknown> | null)?.then === 'function';
}

/** A VirError passes through (its code is the answer); anything else is a failure named `what`. */
function asVirError(e: unknown, what: string): VirError {
  return e instanceof VirError ? e : relayError(RelayStatus.FAILED, what);
}

async function fillFromSources(sources: readonly CredentialSource[], req: RelayedCredentialRequest): Promise<void> {
  for (const source of sources) {
    const open = req.credentials.filter((c) => c.result === null);
    if (open.length === 0) return;
    await source.fillExact!(open, req.service, req.host);
  }
}
