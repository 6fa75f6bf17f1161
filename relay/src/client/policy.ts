// The client's relay policy: which daemon may ask for what, which stored credentials may answer
// it, and how often one daemon may ask.

import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ErrorCode, ErrorDomain, VirError, globMatch, type CredentialType, type DaemonIdentity } from '@virtauth/core';
import type { RelayedCredentialRequest } from '../request.js';

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
   * Rate per daemon reached, across every open and reconnect made with one RelayClient (default
   * a burst of 20, refilled at 20 a minute): a daemon that reconnects cannot reset its count.
   */
  perOrigin?: OriginRate;
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
export function grantFor(grants: readonly StoredCredentialGrant[], req: RelayedCredentialRequest): StoredCredentialGrant | undefined {
  return grants.find((g) => g.service === req.service && g.host === req.host && isTrustedDaemon(g.daemon, req.via?.identity ?? null));
}

export function checkGrants(grants: readonly StoredCredentialGrant[]): void {
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

/** Relayed requests per daemon reached, for one relay client: reconnecting does not reset it. */
export class OriginRates {
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
