// The client's end of the relay: the stream of requests that daemons send back is checked
// against the client's policy, filled from stored credentials only where the policy binds them
// to the verified daemon, and mapped onto the one application callback (one prompt at a time,
// whatever the number of connections and hops). The deadline of every waiting request rides on
// one clock per open rather than a timer each.

import { Subject, EMPTY, concatMap, filter, merge, mergeMap, type ObservableInput } from 'rxjs';
import {
  globMatch,
  ErrorCode,
  ErrorDomain,
  RelayStatus,
  VirError,
  credentialTypeName,
  describeRequester,
  describeVia,
  relayDetail,
  relayError,
  relayStatusOf,
  type ConnectAuth,
  type Credential,
  type CredentialRequestInfo,
  type CredentialSource,
  type CredentialType,
  type DaemonIdentity,
  type RelayCancellation,
  type RelayVia,
  type RelayClientConfig,
  type RelayHandler,
  type RelayedCredentialRequest,
} from '@virtauth/core';
import { resolve } from 'node:path';
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

/**
 * A daemon as the client's transport verifies it, never as it names itself: the socket path the
 * user named, a TLS certificate that verified for a host (optionally pinned by its SHA-256
 * fingerprint, `AA:BB:...`), or an SSH host key.
 */
export type TrustedDaemon =
  | { transport: 'unix'; socket: string }
  | { transport: 'tls'; host: string; port?: number; fingerprint256?: string }
  | { transport: 'ssh'; host: string; port?: number; hostKey: string };

/**
 * Lets stored credentials (auth.conf's `[auth-SERVICE-HOST]`, exactly) answer what one daemon
 * relays for one service and host. Without a grant, no stored credential answers a relayed request.
 */
export interface StoredCredentialGrant {
  daemon: TrustedDaemon;
  /** The request's auth.conf service, exactly: `xenapi`, `libvirt`, ... */
  service: string;
  /** The request's auth.conf host, exactly; `default` is refused (`-default` entries never answer). */
  host: string;
}

/**
 * Relayed requests one daemon may make: a burst of `maxRequests`, refilled at `maxRequests`
 * per `windowMs` (a token bucket, so the cost per request stays constant whatever the limits).
 */
export interface OriginRate {
  maxRequests: number;
  windowMs: number;
}

export interface RelayPolicy {
  /** First matching rule decides per credential; with none matching, only declared types pass. */
  rules?: readonly RelayPolicyRule[];
  /** Most requests answered during one open (default 8), against prompt floods. */
  maxRequestsPerOpen?: number;
  /** Longest wait for one request, in ms (default 120 s); daemons may cap it lower. */
  timeoutMs?: number;
  /** Which stored credentials may answer which daemon (default none: only a person answers). */
  storedCredentials?: readonly StoredCredentialGrant[];
  /**
   * Rate per daemon reached, across every open and reconnect of this process (default a burst
   * of 20, refilled at 20 a minute): a daemon that reconnects cannot reset its count.
   */
  perOrigin?: OriginRate;
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
  /** The daemon the request arrived from, as the transport verified it, and its name. */
  daemon: string;
  credentialTypes: string[];
  outcome: keyof typeof RelayStatus;
  /** Why, when the outcome is not OK (never a credential value). */
  message?: string;
  durationMs: number;
}

export const DEFAULT_ORIGIN_RATE: OriginRate = { maxRequests: 20, windowMs: 60_000 };

/** Whether `identity`, as the transport verified it, is the daemon a grant names. */
export function isTrustedDaemon(trusted: TrustedDaemon, identity: DaemonIdentity | null): boolean {
  if (identity === null || identity.transport !== trusted.transport) return false;
  switch (trusted.transport) {
    case 'unix':
      return identity.transport === 'unix' && identity.socket === resolve(trusted.socket);
    case 'tls':
      return (
        identity.transport === 'tls' &&
        identity.host.toLowerCase() === trusted.host.toLowerCase() &&
        (trusted.port === undefined || identity.port === trusted.port) &&
        (trusted.fingerprint256 === undefined || identity.fingerprint256.toUpperCase() === trusted.fingerprint256.toUpperCase())
      );
    case 'ssh':
      return (
        identity.transport === 'ssh' &&
        identity.host.toLowerCase() === trusted.host.toLowerCase() &&
        (trusted.port === undefined || identity.port === trusted.port) &&
        identity.hostKey === trusted.hostKey
      );
  }
}

/** The grant that lets stored credentials answer `req`, if any. */
function grantFor(grants: readonly StoredCredentialGrant[], req: RelayedCredentialRequest): StoredCredentialGrant | undefined {
  return grants.find((g) => g.service === req.service && g.host === req.host && isTrustedDaemon(g.daemon, req.via?.identity ?? null));
}

function checkGrants(grants: readonly StoredCredentialGrant[]): void {
  for (const g of grants) {
    if (g.host === '' || g.host.toLowerCase() === 'default' || g.service === '') {
      throw new VirError({
        code: ErrorCode.INVALID_ARG,
        domain: ErrorDomain.AUTH,
        detail: `relayPolicy.storedCredentials: a grant needs an exact service and host ('${g.service}', '${g.host}'): -default entries never answer relayed requests`,
      });
    }
  }
}

/** Relayed requests per daemon reached, for the whole process: reconnecting does not reset it. */
class OriginRates {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private static readonly MAX_ORIGINS = 4096;

  /** Takes one request from `key`'s bucket; false (and nothing taken) when it is empty. */
  admit(key: string, rate: OriginRate, now = performance.now()): boolean {
    const bucket = this.buckets.get(key) ?? { tokens: rate.maxRequests, at: now };
    bucket.tokens = Math.min(rate.maxRequests, bucket.tokens + ((now - bucket.at) * rate.maxRequests) / rate.windowMs);
    bucket.at = now;
    const admitted = bucket.tokens >= 1;
    if (admitted) bucket.tokens -= 1;
    // Most recently used last, so the origin forgotten first when too many are known is the oldest.
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    if (this.buckets.size > OriginRates.MAX_ORIGINS) this.buckets.delete(this.buckets.keys().next().value!);
    return admitted;
  }
}

const originRates = new OriginRates();

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
          // The same status the answer will carry (relay-client answers with relayStatusOf too).
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
