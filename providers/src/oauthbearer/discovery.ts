// The issuer's metadata (OpenID Connect discovery through openid-client), fetched once and kept
// for a configured time, so that neither a login nor a token check waits for it every time.

import * as oidc from 'openid-client';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

export interface IssuerConnection {
  /** The issuer identifier (URL) exactly as it appears in its tokens' `iss`. */
  issuer: string;
  clientId: string;
  /** Absent for a public client (e.g. a CLI using the device flow). */
  clientSecret?: string | undefined;
  /**
   * Lets the issuer be reached over plain http, which is refused otherwise; only ever honoured
   * for a loopback address (a test or development IdP on the same machine).
   */
  allowInsecureHttp?: boolean | undefined;
  /** How long the discovered metadata is used before it is fetched again (default 1 hour). */
  discoveryTtlMs?: number | undefined;
  /** Timeout of each HTTP request to the issuer (default 30 s). */
  requestTimeoutMs?: number | undefined;
}

const DEFAULT_DISCOVERY_TTL_MS = 3600_000;

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** Checks an issuer URL: https, or http on loopback when explicitly allowed. */
export function checkIssuerUrl(issuer: string, allowInsecureHttp: boolean | undefined, what = 'issuer'): URL {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${what} '${issuer}' is not a URL` });
  }
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:') {
    if (allowInsecureHttp && isLoopbackHost(url.hostname)) return url;
    throw new VirError({
      code: ErrorCode.CONF_SYNTAX,
      domain: ErrorDomain.CONF,
      detail: `${what} '${issuer}' uses plain http; tokens must only travel over https (http is accepted for a loopback issuer when insecure http is explicitly allowed)`,
    });
  }
  throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${what} '${issuer}' must be an https URL` });
}

/** An openid-client error (or any other) as the typed error callers get, without secrets. */
export function issuerError(action: string, issuer: string, e: unknown): VirError {
  if (e instanceof VirError) return e;
  const err = e as { error?: unknown; error_description?: unknown; message?: unknown; name?: unknown };
  if (err?.name === 'AbortError' || err?.name === 'TimeoutError') {
    return new VirError({
      code: ErrorCode.OPERATION_TIMEOUT,
      domain: ErrorDomain.AUTH,
      detail: `${action} at ${issuer}: no answer in time`,
    });
  }
  // openid-client found the ID token's times impossible by this machine's clock: say which way it is off.
  if ((e as { code?: unknown })?.code === 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED') {
    type Checked = { claims?: { iat?: unknown }; now?: unknown; cause?: Checked };
    // openid-client may wrap oauth4webapi's error, whose cause holds the claims and the time checked.
    let checked = (e as { cause?: Checked }).cause;
    if (checked?.claims === undefined) checked = checked?.cause;
    const skew =
      typeof checked?.claims?.iat === 'number' && typeof checked.now === 'number' ? Math.round(checked.now - checked.claims.iat) : null;
    const by = skew === null ? '' : ` by about ${Math.abs(skew)} s (${skew > 0 ? 'ahead of' : 'behind'} the identity provider)`;
    return new VirError({
      code: ErrorCode.AUTH_FAILED,
      domain: ErrorDomain.AUTH,
      detail: `${action} at ${issuer}: the ID token's times do not fit this machine's clock, which is off${by}; set the clock right (NTP, timedatectl) and sign in again`,
    });
  }
  if (typeof err?.error === 'string') {
    const description = typeof err.error_description === 'string' ? ` (${err.error_description.slice(0, 200)})` : '';
    return new VirError({
      code: ErrorCode.AUTH_FAILED,
      domain: ErrorDomain.AUTH,
      detail: `${action} at ${issuer}: ${err.error}${description}`,
    });
  }
  const message = typeof err?.message === 'string' ? err.message : String(e);
  // fetch's network failures carry the system error (ECONNREFUSED, ENOTFOUND) as their cause.
  const network = (e as { cause?: { code?: unknown } })?.cause?.code;
  if (typeof network === 'string') {
    return new VirError({
      code: ErrorCode.AUTH_UNAVAILABLE,
      domain: ErrorDomain.AUTH,
      detail: `${action} at ${issuer}: the identity provider cannot be reached (${network.slice(0, 40)}); check the issuer URL and the network`,
    });
  }
  return new VirError({ code: ErrorCode.AUTH_UNAVAILABLE, domain: ErrorDomain.AUTH, detail: `${action} at ${issuer}: ${message}` });
}

/** One client's view of one issuer; `get()` discovers it at most once per TTL. */
export class CachedIssuer {
  private current: { config: oidc.Configuration; expiresAt: number } | null = null;
  private pending: Promise<oidc.Configuration> | null = null;
  private readonly url: URL;

  constructor(readonly connection: IssuerConnection) {
    this.url = checkIssuerUrl(connection.issuer, connection.allowInsecureHttp);
  }

  get issuer(): string {
    return this.connection.issuer;
  }

  /** The issuer's discovery document address (what RFC 7628 calls openid-configuration). */
  get discoveryUrl(): string {
    return `${this.connection.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  }

  async get(): Promise<oidc.Configuration> {
    if (this.current && this.current.expiresAt > Date.now()) return this.current.config;
    // Concurrent callers share one request; a failure is not kept, so the next call retries.
    this.pending ??= this.discover().finally(() => (this.pending = null));
    return this.pending;
  }

  /** Forgets the metadata, e.g. after the issuer rotated its keys and verification failed. */
  invalidate(): void {
    this.current = null;
  }

  private async discover(): Promise<oidc.Configuration> {
    const c = this.connection;
    const auth = c.clientSecret !== undefined ? oidc.ClientSecretPost(c.clientSecret) : oidc.None();
    let config: oidc.Configuration;
    try {
      config = await oidc.discovery(this.url, c.clientId, undefined, auth, {
        ...(this.url.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
        timeout: Math.ceil((c.requestTimeoutMs ?? 30_000) / 1000),
      });
    } catch (e) {
      throw issuerError('OpenID Connect discovery', c.issuer, e);
    }
    this.current = { config, expiresAt: Date.now() + (c.discoveryTtlMs ?? DEFAULT_DISCOVERY_TTL_MS) };
    return config;
  }
}
