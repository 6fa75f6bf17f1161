// The client's end of the relay: the stream of requests that daemons send back is checked
// against the client's policy, filled from auth.conf where possible, and mapped onto the one
// application callback (one prompt at a time, whatever the number of connections and hops).

import { EMPTY, Observable, Subject, catchError, concatMap, defer, firstValueFrom, from, mergeMap, of, race, tap, throwError, timer } from 'rxjs';
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
  type CredentialSource,
  type CredentialType,
  type RelayClientConfig,
  type RelayedCredentialRequest,
} from '@virtauth/core';

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

/**
 * One application callback serves every connection of the process: prompts queue up and run one
 * at a time, so a person never sees two at once.
 */
class PromptQueue {
  private readonly jobs$ = new Subject<Observable<unknown>>();

  constructor() {
    // A failed prompt must not stop the queue for the others.
    this.jobs$.pipe(concatMap((job$) => job$.pipe(catchError(() => EMPTY)))).subscribe();
  }

  run(task: () => Promise<void>): Observable<void> {
    return new Observable<void>((subscriber) => {
      // A request withdrawn while it waited for its turn is skipped, never shown.
      const job$ = defer(() => (subscriber.closed ? EMPTY : from(task()))).pipe(
        tap({
          next: () => {
            subscriber.next();
            subscriber.complete();
          },
          error: (e: unknown) => subscriber.error(e),
        }),
      );
      this.jobs$.next(job$);
    });
  }
}

const sharedQueue = new PromptQueue();

/** Builds the relay configuration one open hands to the remote driver. */
export function createRelayClient(opts: RelayClientOptions): RelayClientConfig {
  const policy = opts.policy ?? {};
  const declared = opts.auth?.credTypes ?? [];
  const personPresent = opts.personPresent ?? opts.auth !== null;
  const maxRequests = policy.maxRequestsPerOpen ?? 8;
  const timeoutMs = policy.timeoutMs ?? 120_000;
  const sources = opts.sources ?? [];
  let answered = 0;

  const handle = (req: RelayedCredentialRequest, cancel: AbortController): Promise<void> => {
    const signal = cancel.signal;
    // Built only when a message or an audit record needs them: most requests are just answered.
    const who = () => describeRequester(req);
    const types = () => req.credentials.map((c) => credentialTypeName(c.type));
    const started = Date.now();
    const remaining = Math.max(0, Math.min(req.deadline, started + timeoutMs) - started);
    // The callback's signal is the request's: the connection aborts it when the request is
    // withdrawn, and this client aborts it when it gives up first (deadline, refusal) while the
    // callback still runs, so a prompt left open cannot hold the shared queue.
    let callbackRunning = false;
    const settle = (reason: unknown) => {
      if (callbackRunning && !signal.aborted) cancel.abort(reason);
    };

    const checked$ = defer(() => {
      if (++answered > maxRequests) throw relayError(RelayStatus.DENIED, `${who()} exceeded this client's limit of ${maxRequests} credential requests per open`);
      const denied = req.credentials.filter((c) => !policyAllows(policy, declared, req, c.type));
      if (denied.length > 0) {
        throw relayError(RelayStatus.DENIED, `the client's policy does not let ${who()} ask for ${denied.map((c) => credentialTypeName(c.type)).join(', ')}`);
      }
      return sources.length > 0 ? from(fillFromSources(sources, req)) : of(undefined);
    });
    const work$ = checked$.pipe(
      mergeMap(() => {
        const missing = req.credentials.filter((c) => c.result === null);
        if (missing.length === 0) return of(undefined);
        if (!personPresent || !opts.auth) {
          return throwError(() => relayError(RelayStatus.UNAVAILABLE, `no person is present to give ${who()} the ${missing.map((c) => credentialTypeName(c.type)).join(', ')} it needs`));
        }
        const auth = opts.auth;
        return sharedQueue.run(async () => {
          callbackRunning = true;
          try {
            await askCallback(auth, missing, req, signal, who);
          } finally {
            callbackRunning = false;
          }
        });
      }),
    );
    const expired$ = timer(remaining).pipe(mergeMap(() => throwError(() => relayError(RelayStatus.TIMED_OUT, `no answer within ${remaining} ms for ${who()}`))));

    const outcome = firstValueFrom(race([work$, expired$, abortedBy(signal)]), { defaultValue: undefined });
    return outcome.then(
      () => {
        opts.audit?.({ requester: who(), credentialTypes: types(), outcome: 'OK', durationMs: Date.now() - started });
      },
      (e: unknown) => {
        settle(e);
        // The same status the answer will carry (relay-client answers with relayStatusOf too).
        opts.audit?.({ requester: who(), credentialTypes: types(), outcome: OUTCOMES[relayStatusOf(e)] ?? 'FAILED', durationMs: Date.now() - started });
        throw e;
      },
    );
  };

  return { credTypes: declared, personPresent, timeoutMs, maxRequests, handle };
}

async function fillFromSources(sources: readonly CredentialSource[], req: RelayedCredentialRequest): Promise<void> {
  for (const source of sources) {
    const open = req.credentials.filter((c) => c.result === null);
    if (open.length === 0) return;
    await source.fill(open, req.service, req.host);
  }
}

/** Errors with the signal's reason when it aborts. */
function abortedBy(signal: AbortSignal): Observable<never> {
  return new Observable<never>((subscriber) => {
    if (signal.aborted) {
      subscriber.error(signal.reason);
      return;
    }
    const onAbort = () => subscriber.error(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    return () => signal.removeEventListener('abort', onAbort);
  });
}

async function askCallback(auth: ConnectAuth, missing: Credential[], req: RelayedCredentialRequest, signal: AbortSignal, who: () => string): Promise<void> {
  let ok: void | boolean;
  try {
    ok = await auth.callback(missing, { service: req.service, host: req.host, origin: req.origin, signal, deadline: req.deadline });
  } catch (e) {
    if (e instanceof VirError) throw e;
    throw relayError(RelayStatus.FAILED, `the credential callback failed for ${who()}`);
  }
  if (ok === false) throw relayError(RelayStatus.CANCELLED, `the user cancelled the credentials ${who()} asked for`);
  const unfilled = missing.filter((c) => c.result === null);
  if (unfilled.length > 0) throw relayError(RelayStatus.CANCELLED, `no answer was given for ${unfilled.map((c) => credentialTypeName(c.type)).join(', ')} (${who()})`);
}
