// The client's end of the relay: the stream of requests that daemons send back is checked
// against the client's policy, filled from auth.conf where possible, and mapped onto the one
// application callback (one prompt at a time, whatever the number of connections and hops).
// The deadline of every waiting request rides on one clock per open rather than a timer each.

import { Subject, EMPTY, concatMap, filter, merge, mergeMap, type ObservableInput } from 'rxjs';
import {
  globMatch,
  RelayStatus,
  VirError,
  credentialTypeName,
  describeRequester,
  relayError,
  relayStatusOf,
  type ConnectAuth,
  type Credential,
  type CredentialRequestInfo,
  type CredentialSource,
  type CredentialType,
  type RelayCancellation,
  type RelayClientConfig,
  type RelayHandler,
  type RelayedCredentialRequest,
} from '@virtauth/core';
import { performance } from 'node:perf_hooks';
import { DeadlineClock } from './deadline-clock.js';

export interface RelayPolicyRule {
  /** Glob on the driver that asks (origin[0].driver), e.g. `xenapi`. */
  driver?: string;
  /** Glob on the server the credentials are for, e.g. `*.example.com`. */
  host?: string;
  /** Glob that some daemon in the chain must match, e.g. `virtauthd@hostB`. */
  daemon?: string;
  /** Credential types the rule covers; all when absent. */
  types?: readonly CredentialType[];
  action: 'allow' | 'deny';
}

export interface RelayPolicy {
  /** First matching rule decides per credential; with none matching, only declared types pass. */
  rules?: readonly RelayPolicyRule[];
  /** Most requests answered during one open (default 8), against prompt floods. */
  maxRequestsPerOpen?: number;
  /** Longest wait for one request, in ms (default 120 s); daemons may cap it lower. */
  timeoutMs?: number;
}

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
  credentialTypes: string[];
  outcome: keyof typeof RelayStatus;
  durationMs: number;
}

const OUTCOMES = Object.fromEntries(Object.entries(RelayStatus).map(([k, v]) => [v, k])) as Record<number, keyof typeof RelayStatus>;

/** Whether the policy lets `req` ask for credential `type`. */
export function policyAllows(policy: RelayPolicy, declared: readonly number[], req: RelayedCredentialRequest, type: number): boolean {
  for (const rule of policy.rules ?? []) {
    if (rule.driver !== undefined && !globMatch(rule.driver, req.origin[0]?.driver ?? '')) continue;
    if (rule.host !== undefined && !globMatch(rule.host, req.host)) continue;
    if (rule.daemon !== undefined && !req.origin.some((h) => globMatch(rule.daemon!, h.daemon))) continue;
    if (rule.types !== undefined && !rule.types.includes(type as CredentialType)) continue;
    return rule.action === 'allow';
  }
  return declared.includes(type);
}

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

/**
 * One application callback serves every connection of the process: prompts queue up and run one
 * at a time, so a person never sees two at once. A prompt never fails the queue: its outcome
 * goes to its own request.
 */
const prompts$ = new Subject<() => ObservableInput<unknown>>();
prompts$.pipe(concatMap((prompt) => prompt())).subscribe();

/** Builds the relay configuration one open hands to the remote driver. */
export function createRelayClient(opts: RelayClientOptions): RelayClientConfig {
  const policy = opts.policy ?? {};
  const declared = opts.auth?.credTypes ?? [];
  const personPresent = opts.personPresent ?? opts.auth !== null;
  const maxRequests = policy.maxRequestsPerOpen ?? 8;
  const timeoutMs = policy.timeoutMs ?? 120_000;
  const sources = opts.sources ?? [];
  const auth = opts.auth;
  let answered = 0;

  const waiting = new Set<Asked>();
  const clock = new DeadlineClock();
  /** Ends raised here: the callback's outcome, refusals, withdrawals by the connection. */
  const outcomes$ = new Subject<Settlement>();

  // Every way a request can end, merged; the first settlement of a request ends it.
  merge(
    outcomes$,
    clock.expired$.pipe(mergeMap((now) => expiredBy(now))),
  ).subscribe(({ asked, error }) => settle(asked, error));

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
          credentialTypes: asked.req.credentials.map((c) => credentialTypeName(c.type)),
          // The same status the answer will carry (relay-client answers with relayStatusOf too).
          outcome: error ? (OUTCOMES[relayStatusOf(error)] ?? 'FAILED') : 'OK',
          durationMs: Date.now() - asked.started,
        });
      } catch {
        // An audit sink that throws must not lose the answer or stall the prompt queue.
      }
    }
    asked.done(error);
  }

  function expiredBy(now: number): Settlement[] {
    return clock
      .takeExpired(waiting, now)
      .map((asked) => ({ asked, error: relayError(RelayStatus.TIMED_OUT, `no answer within ${asked.remaining} ms for ${describeRequester(asked.req)}`) }));
  }

  // Requests as a stream: auth.conf first (when there is one), then the person, one at a time.
  const asked$ = new Subject<Asked>();
  const filled$ =
    sources.length === 0
      ? asked$
      : asked$.pipe(
          mergeMap((asked) =>
            fillFromSources(sources, asked.req).then(
              () => asked,
              (e: unknown) => (outcomes$.next({ asked, error: asVirError(e, `auth.conf could not be read for ${describeRequester(asked.req)}`) }), null),
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
      return outcomes$.next({ asked, error: relayError(RelayStatus.UNAVAILABLE, `no person is present to give ${describeRequester(asked.req)} the ${types} it needs`) });
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
    const fail = (e: unknown) => outcomes$.next({ asked, error: asVirError(e, `the credential callback failed for ${describeRequester(req)}`) });
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
    if (++answered > maxRequests) return relayError(RelayStatus.DENIED, `${describeRequester(req)} exceeded this client's limit of ${maxRequests} credential requests per open`);
    if (!req.credentials.every((c) => policyAllows(policy, declared, req, c.type))) {
      const denied = req.credentials.filter((c) => !policyAllows(policy, declared, req, c.type));
      return relayError(RelayStatus.DENIED, `the client's policy does not let ${describeRequester(req)} ask for ${denied.map((c) => credentialTypeName(c.type)).join(', ')}`);
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

  constructor(
    req: RelayedCredentialRequest,
    private readonly cancel: RelayCancellation,
  ) {
    this.service = req.service;
    this.host = req.host;
    this.origin = req.origin;
    this.deadline = req.deadline;
  }

  get signal(): AbortSignal {
    return this.cancel.signal;
  }
}

function callbackOutcome(ok: void | boolean, missing: Credential[], req: RelayedCredentialRequest): VirError | null {
  if (ok === false) return relayError(RelayStatus.CANCELLED, `the user cancelled the credentials ${describeRequester(req)} asked for`);
  const unfilled = missing.filter((c) => c.result === null);
  if (unfilled.length > 0) return relayError(RelayStatus.CANCELLED, `no answer was given for ${unfilled.map((c) => credentialTypeName(c.type)).join(', ')} (${describeRequester(req)})`);
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
    await source.fill(open, req.service, req.host);
  }
}
