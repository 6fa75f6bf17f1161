// Obtains access tokens from an OpenID provider with openid-client: the client credentials grant
// for machines, the device authorization grant for people (its prompt goes through the
// credential callback), refresh tokens, token exchange (RFC 8693) where the issuer offers it,
// and a cache so that a token is reused until shortly before it expires. For a person's CLI
// also the authorization code flow with PKCE (authorization-code.ts) and a token cache shared by
// processes (token-cache.ts).

import * as oidc from 'openid-client';
import { decodeJwt } from 'jose';
import { credential, CredentialType, ErrorCode, ErrorDomain, VirError, type CredentialRequester, type OriginHop } from '@virtauth/core';
import { CachedIssuer, issuerError, type IssuerConnection } from './discovery.js';
import { authorizationCodeFlow } from './authorization-code.js';
import type { StoredToken, TokenCacheFile } from './token-cache.js';

export type OidcGrant = 'client_credentials' | 'device_code' | 'authorization_code';

/**
 * How a person is shown a sign-in, when not through the credential callback (a CLI prints it,
 * draws a QR code, opens a browser). Each returns once the person has been told.
 */
export interface SignInInteraction {
  showDeviceCode(prompt: {
    verificationUri: string;
    userCode: string;
    verificationUriComplete: string | null;
    issuer: string;
  }): Promise<void> | void;
  openAuthorizationUrl(url: string, issuer: string): Promise<void> | void;
}

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** Token endpoint errors by which an issuer refuses the subject token of an exchange. */
const SUBJECT_TOKEN_REFUSALS = new Set(['invalid_request', 'invalid_grant']);

export interface OidcClientSettings extends IssuerConnection {
  /** Default: client_credentials for a confidential client (with a secret), device_code otherwise. */
  grant?: OidcGrant | undefined;
  /** Space-separated scopes to ask for. */
  scope?: string | undefined;
  /** RFC 8707 resource indicator: the audience of the tokens, unless a request names another. */
  resource?: string | undefined;
  /** Longest the device flow waits for the person (default 5 minutes; the IdP's expiry caps it). */
  deviceFlowTimeoutMs?: number | undefined;
  /**
   * Whether tokens obtained for a person (device flow) are kept for later logins (default true).
   * A daemon sets false: a token one of its clients signed in for must never serve another.
   */
  cachePersonTokens?: boolean | undefined;
  /** A token is renewed this long before it expires (default 30 s). */
  expiryMarginMs?: number | undefined;
  /** A cache shared with other processes, consulted after the in-memory one (a person's CLI). */
  tokenStore?: TokenCacheFile | undefined;
  /** Shows sign-ins to the person directly; default: through the credential callback. */
  interaction?: SignInInteraction | undefined;
  /** Loopback port of the authorization code flow's redirect (default: any free port). */
  loopbackPort?: number | undefined;
}

export interface TokenRequest {
  /** Audience (resource indicator) of the token; default the settings' `resource`. */
  resource?: string | null | undefined;
  /** Scopes; default the settings' `scope`. */
  scope?: string | null | undefined;
  /** How the device flow reaches the person: the credential pipeline of the open in progress. */
  requestCredentials?: CredentialRequester | undefined;
  /** auth.conf service and host the prompt is about. */
  service: string;
  host: string;
  signal?: AbortSignal | undefined;
  /** Absolute time (ms since the epoch) after which the token is of no use any more. */
  deadline?: number | undefined;
  /** A token to exchange for one of `resource` (RFC 8693), used when the issuer supports it. */
  subjectToken?: string | undefined;
  /** Who needs the token, when the request was relayed (shown with the device flow prompt). */
  origin?: readonly OriginHop[] | undefined;
}

interface CachedToken {
  accessToken: string;
  /** Absolute ms; Infinity when the issuer gave no lifetime. */
  expiresAt: number;
  refreshToken: string | null;
  scope: string | null;
  subject: string | null;
}

const toStored = (t: CachedToken): StoredToken => ({
  ...t,
  expiresAt: Number.isFinite(t.expiresAt) ? t.expiresAt : null,
  obtainedAt: Date.now(),
});
const fromStored = (t: StoredToken): CachedToken => ({
  accessToken: t.accessToken,
  expiresAt: t.expiresAt ?? Infinity,
  refreshToken: t.refreshToken,
  scope: t.scope,
  subject: t.subject,
});

/** Who a token response is for: the ID token's claims, else the access token's (read, not verified: only shown). */
function subjectOf(response: oidc.TokenEndpointResponse & Partial<oidc.TokenEndpointResponseHelpers>): string | null {
  let claims: Record<string, unknown> | undefined;
  try {
    claims = response.claims?.() ?? decodeJwt(response.access_token);
  } catch {
    return null;
  }
  const name = claims?.preferred_username ?? claims?.sub;
  return typeof name === 'string' ? name.slice(0, 200) : null;
}

/** Text of the device flow prompt; `challenge` carries the URL a GUI may open or show as a QR code. */
export function deviceFlowPrompt(verificationUri: string, userCode: string): string {
  return `To sign in, open ${verificationUri} and enter the code ${userCode}, then press Enter`;
}

function grantParams(resource: string | null, scope: string | null): Record<string, string> {
  const params: Record<string, string> = {};
  if (resource) params.resource = resource;
  if (scope) params.scope = scope;
  return params;
}

function cancelledError(detail: string): VirError {
  return new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.AUTH, detail });
}

export class OidcTokenClient {
  readonly issuer: CachedIssuer;
  private readonly cache = new Map<string, CachedToken>();
  private readonly inFlight = new Map<string, Promise<CachedToken>>();
  readonly grant: OidcGrant;

  constructor(readonly settings: OidcClientSettings) {
    this.issuer = new CachedIssuer(settings);
    this.grant = settings.grant ?? (settings.clientSecret !== undefined ? 'client_credentials' : 'device_code');
    if (this.grant === 'client_credentials' && settings.clientSecret === undefined) {
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: `the client credentials grant needs a client secret for client '${settings.clientId}'`,
      });
    }
  }

  /** The cache key of a resource and scope (also the token cache file's slot). */
  tokenKey(resource: string | null, scope: string | null): string {
    return `${resource ?? ''}\n${scope ?? ''}`;
  }

  private get cachesTokens(): boolean {
    return this.grant === 'client_credentials' || this.settings.cachePersonTokens !== false;
  }

  /** A valid access token for the request: from the cache, by refresh, or by a new grant. */
  async accessToken(req: TokenRequest): Promise<string> {
    const resource = req.resource === undefined ? (this.settings.resource ?? null) : req.resource;
    const scope = req.scope === undefined ? (this.settings.scope ?? null) : req.scope;
    const key = this.tokenKey(resource, scope);
    const margin = this.settings.expiryMarginMs ?? 30_000;
    if (!this.cachesTokens) return (await this.obtain(resource, scope, null, req)).accessToken;

    const cached = this.cache.get(key);
    if (cached && cached.expiresAt - margin > Date.now()) return cached.accessToken;
    // Two opens at once share one grant (and one device flow prompt).
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = (
        this.settings.tokenStore ? this.obtainThroughStore(key, resource, scope, req) : this.obtain(resource, scope, cached ?? null, req)
      ).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const token = await pending;
    this.cache.set(key, token);
    return token.accessToken;
  }

  /** Drops a token a server refused, so that the next login obtains a fresh one. */
  async invalidate(accessToken: string): Promise<void> {
    for (const [key, entry] of this.cache) if (entry.accessToken === accessToken) this.cache.delete(key);
    // Its refresh token stays: a refreshed token may well be accepted where this one was not.
    await this.settings.tokenStore?.update(async ({ entries }) => {
      let write = false;
      for (const entry of entries.values()) {
        if (entry.accessToken === accessToken) {
          entry.expiresAt = 0;
          write = true;
        }
      }
      return { value: undefined, write };
    });
  }

  /**
   * With a shared token cache: a valid stored token, else a refresh under the cache's lock (a
   * rotating refresh token must not be used by two processes), else a new sign-in, stored.
   */
  private async obtainThroughStore(key: string, resource: string | null, scope: string | null, req: TokenRequest): Promise<CachedToken> {
    const store = this.settings.tokenStore!;
    const reused = await store.update(async ({ entries }) => {
      const stored = entries.get(key);
      if (!stored) return { value: null, write: false };
      // Renewed 30 s before expiry, or after 90% of a shorter life: a cached token must serve a whole command.
      const margin =
        this.settings.expiryMarginMs ?? Math.min(30_000, stored.expiresAt === null ? 0 : (stored.expiresAt - stored.obtainedAt) / 10);
      if ((stored.expiresAt ?? Infinity) - margin > Date.now()) return { value: fromStored(stored), write: false };
      if (!stored.refreshToken) return { value: null, write: false };
      const refreshed = await this.refresh(resource, scope, fromStored(stored));
      if (refreshed) entries.set(key, toStored(refreshed));
      else entries.delete(key);
      return { value: refreshed, write: true };
    });
    if (reused) return reused;
    const fresh = await this.obtain(resource, scope, null, req);
    await store.update(async ({ entries }) => {
      entries.set(key, toStored(fresh));
      return { value: undefined, write: true };
    });
    return fresh;
  }

  /** A refreshed token, or null when the issuer refused the refresh token (expired, revoked). */
  private async refresh(resource: string | null, scope: string | null, previous: CachedToken): Promise<CachedToken | null> {
    const config = await this.issuer.get();
    try {
      return this.toCached(await oidc.refreshTokenGrant(config, previous.refreshToken!, grantParams(resource, scope)), previous);
    } catch (e) {
      // Refused: a new sign-in is needed. Unreachable: say so rather than prompt in vain.
      if (typeof (e as { error?: unknown })?.error === 'string') return null;
      throw issuerError('token refresh', this.settings.issuer, e);
    }
  }

  /** `virtauth login`: a new sign-in whatever is cached, kept in memory and in the token cache. */
  async signIn(req: TokenRequest): Promise<StoredToken> {
    const resource = req.resource === undefined ? (this.settings.resource ?? null) : req.resource;
    const scope = req.scope === undefined ? (this.settings.scope ?? null) : req.scope;
    const key = this.tokenKey(resource, scope);
    const fresh = await this.obtain(resource, scope, null, req);
    this.cache.set(key, fresh);
    await this.settings.tokenStore?.update(async ({ entries }) => {
      entries.set(key, toStored(fresh));
      return { value: undefined, write: true };
    });
    return toStored(fresh);
  }

  /**
   * `virtauth logout`: revokes (RFC 7009) every known refresh and access token where the issuer
   * offers revocation, then forgets them. Says how many tokens the issuer was asked to revoke.
   */
  async signOut(): Promise<{ revoked: number; revocationSupported: boolean }> {
    const store = this.settings.tokenStore;
    const inMemory = [...this.cache.values()];
    this.cache.clear();
    const revokeAll = async (tokens: Array<{ accessToken: string; refreshToken: string | null }>) => {
      if (tokens.length === 0) return { revoked: 0, revocationSupported: false };
      const config = await this.issuer.get();
      if (typeof config.serverMetadata().revocation_endpoint !== 'string') return { revoked: 0, revocationSupported: false };
      let revoked = 0;
      for (const t of tokens) {
        // The refresh token first: revoking it ends the grant, and with it its access tokens.
        if (t.refreshToken) {
          await this.call('token revocation', () => oidc.tokenRevocation(config, t.refreshToken!, { token_type_hint: 'refresh_token' }));
          revoked++;
        }
        try {
          await oidc.tokenRevocation(config, t.accessToken, { token_type_hint: 'access_token' });
          revoked++;
        } catch (e) {
          // RFC 7009 §2.2.1: an IdP may not revoke some token types (self-contained JWTs): they expire.
          if ((e as { error?: unknown })?.error !== 'unsupported_token_type')
            throw issuerError('token revocation', this.settings.issuer, e);
        }
      }
      return { revoked, revocationSupported: true };
    };
    if (!store) return revokeAll(inMemory);
    return store.update(async ({ entries }) => {
      try {
        return { value: await revokeAll([...inMemory, ...entries.values()]), write: false };
      } catch (e) {
        // Forgotten here all the same; the person must know the IdP still honours them.
        throw new VirError({
          code: ErrorCode.AUTH_UNAVAILABLE,
          domain: ErrorDomain.AUTH,
          detail: `the tokens were forgotten here, but revoking them failed, so they stay valid at the IdP until they expire: ${(e as Error).message}`,
          cause: e,
        });
      } finally {
        await store.remove();
      }
    });
  }

  private async obtain(
    resource: string | null,
    scope: string | null,
    previous: CachedToken | null,
    req: TokenRequest,
  ): Promise<CachedToken> {
    const config = await this.issuer.get();
    const params = grantParams(resource, scope);

    if (previous?.refreshToken) {
      try {
        return this.toCached(await oidc.refreshTokenGrant(config, previous.refreshToken, params), previous);
      } catch {
        // A refused refresh (expired or revoked) falls back to a new grant below.
      }
    }
    if (req.subjectToken && this.supportsTokenExchange(config)) {
      return this.toCached(await this.exchange(config, params, req.subjectToken), null);
    }
    if (this.grant === 'client_credentials') {
      return this.toCached(await this.call('client credentials grant', () => oidc.clientCredentialsGrant(config, params)), null);
    }
    if (this.grant === 'authorization_code') return this.toCached(await this.browserFlow(config, params, req), null);
    return this.toCached(await this.deviceFlow(config, params, req), null);
  }

  /**
   * RFC 8252: the person signs in in a browser (opened by the interaction, or shown through the
   * credential callback like the device flow's prompt), which redirects to a loopback listener.
   */
  private async browserFlow(
    config: oidc.Configuration,
    params: Record<string, string>,
    req: TokenRequest,
  ): Promise<oidc.TokenEndpointResponse> {
    const interaction = this.settings.interaction;
    const ask = req.requestCredentials;
    if (!interaction && !ask)
      throw new VirError({
        code: ErrorCode.AUTH_UNAVAILABLE,
        domain: ErrorDomain.AUTH,
        detail: `signing in at ${this.settings.issuer} needs a person, and no credential callback is available; run virtauth login`,
      });
    const wait = this.personWait(req, 'in the browser');
    try {
      return await authorizationCodeFlow(config, {
        params,
        issuer: this.settings.issuer,
        signal: wait.signal,
        port: this.settings.loopbackPort,
        present: async (url) => {
          if (interaction) return interaction.openAuthorizationUrl(url, this.settings.issuer);
          const prompt = credential(CredentialType.ECHOPROMPT, `To sign in, open ${url} in a browser, then press Enter`, url, '');
          ask!([prompt], {
            service: req.service,
            host: req.host,
            signal: wait.signal,
            deadline: wait.deadline,
            ...(req.origin ? { origin: req.origin } : {}),
          }).catch((e: unknown) => {
            if (!wait.signal.aborted) wait.abort(e instanceof VirError ? e : cancelledError('the sign-in prompt was refused'));
          });
        },
      });
    } catch (e) {
      if (wait.signal.aborted && wait.signal.reason instanceof VirError) throw wait.signal.reason;
      throw e;
    } finally {
      wait.end();
    }
  }

  /** The wait for a person: ends at the deadline, with the caller's signal, or by `abort`. */
  private personWait(req: TokenRequest, where: string, expiresInSec = Infinity) {
    const started = Date.now();
    const deadline = Math.min(
      started + expiresInSec * 1000,
      started + (this.settings.deviceFlowTimeoutMs ?? 300_000),
      req.deadline ?? Infinity,
    );
    const stop = new AbortController();
    const timer = setTimeout(
      () =>
        stop.abort(
          new VirError({
            code: ErrorCode.OPERATION_TIMEOUT,
            domain: ErrorDomain.AUTH,
            detail: `nobody completed the sign-in ${where} in time; run virtauth login again`,
          }),
        ),
      Math.max(0, deadline - started),
    );
    const onCallerAbort = () =>
      stop.abort(req.signal!.reason instanceof VirError ? req.signal!.reason : cancelledError('the sign-in was abandoned'));
    if (req.signal?.aborted) onCallerAbort();
    req.signal?.addEventListener('abort', onCallerAbort, { once: true });
    return {
      signal: stop.signal,
      deadline,
      abort: (reason: unknown) => stop.abort(reason),
      end: () => {
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onCallerAbort);
        // Withdraws a prompt still on screen (the console stops reading; a relay cancels it).
        if (!stop.signal.aborted) stop.abort(cancelledError('the sign-in finished'));
      },
    };
  }

  /** RFC 8693: trades `subjectToken` for an access token of the requested resource. */
  private async exchange(
    config: oidc.Configuration,
    params: Record<string, string>,
    subjectToken: string,
  ): Promise<oidc.TokenEndpointResponse> {
    let response: oidc.TokenEndpointResponse;
    try {
      response = await oidc.genericGrantRequest(config, TOKEN_EXCHANGE_GRANT, {
        ...params,
        subject_token: subjectToken,
        subject_token_type: ACCESS_TOKEN_TYPE,
        requested_token_type: ACCESS_TOKEN_TYPE,
      });
    } catch (e) {
      // RFC 8693 §2.2.2: the issuer no longer takes the subject token (revoked, expired): if it
      // came from this cache, drop it so that the next exchange starts from a fresh one.
      if (SUBJECT_TOKEN_REFUSALS.has(String((e as { error?: unknown })?.error))) await this.invalidate(subjectToken).catch(() => {});
      throw issuerError('token exchange', this.settings.issuer, e);
    }
    // Anything but an access token (an ID token, say) must not be handed to a driver as one.
    const issued = response.issued_token_type;
    if (issued !== undefined && issued !== ACCESS_TOKEN_TYPE) {
      throw new VirError({
        code: ErrorCode.AUTH_FAILED,
        domain: ErrorDomain.AUTH,
        detail: `token exchange at ${this.settings.issuer} issued a token of type '${String(issued).slice(0, 100)}', not an access token`,
      });
    }
    return response;
  }

  supportsTokenExchange(config: oidc.Configuration): boolean {
    return config.serverMetadata().grant_types_supported?.includes(TOKEN_EXCHANGE_GRANT) ?? false;
  }

  private async call<T>(action: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      throw issuerError(action, this.settings.issuer, e);
    }
  }

  private toCached(response: oidc.TokenEndpointResponse, previous: CachedToken | null): CachedToken {
    if (response.token_type.toLowerCase() !== 'bearer') {
      throw new VirError({
        code: ErrorCode.AUTH_FAILED,
        domain: ErrorDomain.AUTH,
        detail: `${this.settings.issuer} issued a '${response.token_type}' token, not a bearer token`,
      });
    }
    return {
      accessToken: response.access_token,
      expiresAt: typeof response.expires_in === 'number' ? Date.now() + response.expires_in * 1000 : Infinity,
      refreshToken: response.refresh_token ?? previous?.refreshToken ?? null,
      scope: typeof response.scope === 'string' ? response.scope : (previous?.scope ?? null),
      subject: subjectOf(response) ?? previous?.subject ?? null,
    };
  }

  /**
   * RFC 8628: the person is shown the verification URL and code through the credential callback
   * while the token endpoint is polled. Answering the prompt (with anything) only acknowledges
   * it; refusing it, the caller's signal, or the deadline ends the wait.
   */
  private async deviceFlow(
    config: oidc.Configuration,
    params: Record<string, string>,
    req: TokenRequest,
  ): Promise<oidc.TokenEndpointResponse> {
    const interaction = this.settings.interaction;
    const ask = req.requestCredentials;
    if (!interaction && !ask)
      throw new VirError({
        code: ErrorCode.AUTH_UNAVAILABLE,
        domain: ErrorDomain.AUTH,
        detail: `the device flow of ${this.settings.issuer} needs a person, and no credential callback is available`,
      });
    const authorization = await this.call('device authorization', () => oidc.initiateDeviceAuthorization(config, params));
    const wait = this.personWait(req, `at ${authorization.verification_uri}`, authorization.expires_in);

    let succeeded = false;
    if (interaction) {
      await interaction.showDeviceCode({
        verificationUri: authorization.verification_uri,
        userCode: authorization.user_code,
        verificationUriComplete: authorization.verification_uri_complete ?? null,
        issuer: this.settings.issuer,
      });
    } else {
      const prompt = credential(
        CredentialType.ECHOPROMPT,
        deviceFlowPrompt(authorization.verification_uri, authorization.user_code),
        authorization.verification_uri_complete ?? authorization.verification_uri,
        '',
      );
      ask!([prompt], {
        service: req.service,
        host: req.host,
        signal: wait.signal,
        deadline: wait.deadline,
        ...(req.origin ? { origin: req.origin } : {}),
      }).catch((e: unknown) => {
        // Once the token is there, the prompt is withdrawn: that rejection means nothing.
        if (!succeeded) wait.abort(e instanceof VirError ? e : cancelledError('the sign-in prompt was refused'));
      });
    }
    try {
      const response = await oidc.pollDeviceAuthorizationGrant(
        config,
        authorization,
        params.resource ? { resource: params.resource } : undefined,
        { signal: wait.signal },
      );
      succeeded = true;
      return response;
    } catch (e) {
      if (wait.signal.aborted && wait.signal.reason instanceof VirError) throw wait.signal.reason;
      throw issuerError('device authorization grant', this.settings.issuer, e);
    } finally {
      wait.end();
    }
  }
}
