// Obtains access tokens from an OpenID provider with openid-client: the client credentials grant
// for machines, the device authorization grant for people (its prompt goes through the
// credential callback), refresh tokens, token exchange (RFC 8693) where the issuer offers it,
// and a cache so that a token is reused until shortly before it expires.

import * as oidc from 'openid-client';
import { credential, CredentialType, ErrorCode, ErrorDomain, VirError, type CredentialRequester, type OriginHop } from '@virtauth/core';
import { CachedIssuer, issuerError, type IssuerConnection } from './discovery.js';

export type OidcGrant = 'client_credentials' | 'device_code';

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
}

/** Text of the device flow prompt; `challenge` carries the URL a GUI may open or show as a QR code. */
export function deviceFlowPrompt(verificationUri: string, userCode: string): string {
  return `To sign in, open ${verificationUri} and enter the code ${userCode}, then press Enter`;
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
      throw new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `the client credentials grant needs a client secret for client '${settings.clientId}'` });
    }
  }

  private get cachesTokens(): boolean {
    return this.grant === 'client_credentials' || this.settings.cachePersonTokens !== false;
  }

  /** A valid access token for the request: from the cache, by refresh, or by a new grant. */
  async accessToken(req: TokenRequest): Promise<string> {
    const resource = req.resource === undefined ? this.settings.resource ?? null : req.resource;
    const scope = req.scope === undefined ? this.settings.scope ?? null : req.scope;
    const key = `${resource ?? ''}\n${scope ?? ''}`;
    const margin = this.settings.expiryMarginMs ?? 30_000;
    if (!this.cachesTokens) return (await this.obtain(resource, scope, null, req)).accessToken;

    const cached = this.cache.get(key);
    if (cached && cached.expiresAt - margin > Date.now()) return cached.accessToken;
    // Two opens at once share one grant (and one device flow prompt).
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.obtain(resource, scope, cached ?? null, req).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const token = await pending;
    this.cache.set(key, token);
    return token.accessToken;
  }

  /** Drops a token a server refused, so that the next login obtains a fresh one. */
  invalidate(accessToken: string): void {
    for (const [key, entry] of this.cache) if (entry.accessToken === accessToken) this.cache.delete(key);
  }

  private async obtain(resource: string | null, scope: string | null, previous: CachedToken | null, req: TokenRequest): Promise<CachedToken> {
    const config = await this.issuer.get();
    const params: Record<string, string> = {};
    if (resource) params.resource = resource;
    if (scope) params.scope = scope;

    if (previous?.refreshToken) {
      try {
        return this.toCached(await oidc.refreshTokenGrant(config, previous.refreshToken, params), previous.refreshToken);
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
    return this.toCached(await this.deviceFlow(config, params, req), null);
  }

  /** RFC 8693: trades `subjectToken` for an access token of the requested resource. */
  private async exchange(config: oidc.Configuration, params: Record<string, string>, subjectToken: string): Promise<oidc.TokenEndpointResponse> {
    let response: oidc.TokenEndpointResponse;
    try {
      response = await oidc.genericGrantRequest(config, TOKEN_EXCHANGE_GRANT, { ...params, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, requested_token_type: ACCESS_TOKEN_TYPE });
    } catch (e) {
      // RFC 8693 §2.2.2: the issuer no longer takes the subject token (revoked, expired): if it
      // came from this cache, drop it so that the next exchange starts from a fresh one.
      if (SUBJECT_TOKEN_REFUSALS.has(String((e as { error?: unknown })?.error))) this.invalidate(subjectToken);
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

  private toCached(response: oidc.TokenEndpointResponse, previousRefreshToken: string | null): CachedToken {
    if (response.token_type.toLowerCase() !== 'bearer') {
      throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: `${this.settings.issuer} issued a '${response.token_type}' token, not a bearer token` });
    }
    return {
      accessToken: response.access_token,
      expiresAt: typeof response.expires_in === 'number' ? Date.now() + response.expires_in * 1000 : Infinity,
      refreshToken: response.refresh_token ?? previousRefreshToken,
    };
  }

  /**
   * RFC 8628: the person is shown the verification URL and code through the credential callback
   * while the token endpoint is polled. Answering the prompt (with anything) only acknowledges
   * it; refusing it, the caller's signal, or the deadline ends the wait.
   */
  private async deviceFlow(config: oidc.Configuration, params: Record<string, string>, req: TokenRequest): Promise<oidc.TokenEndpointResponse> {
    const ask = req.requestCredentials;
    if (!ask) throw new VirError({ code: ErrorCode.AUTH_UNAVAILABLE, domain: ErrorDomain.AUTH, detail: `the device flow of ${this.settings.issuer} needs a person, and no credential callback is available` });
    const authorization = await this.call('device authorization', () => oidc.initiateDeviceAuthorization(config, params));

    const started = Date.now();
    const deadline = Math.min(started + authorization.expires_in * 1000, started + (this.settings.deviceFlowTimeoutMs ?? 300_000), req.deadline ?? Infinity);
    const stop = new AbortController();
    const timer = setTimeout(
      () => stop.abort(new VirError({ code: ErrorCode.OPERATION_TIMEOUT, domain: ErrorDomain.AUTH, detail: `nobody completed the sign-in at ${authorization.verification_uri} in time` })),
      Math.max(0, deadline - started),
    );
    const onCallerAbort = () => stop.abort(req.signal!.reason instanceof VirError ? req.signal!.reason : cancelledError('the sign-in was abandoned'));
    if (req.signal?.aborted) onCallerAbort();
    req.signal?.addEventListener('abort', onCallerAbort, { once: true });

    const prompt = credential(CredentialType.ECHOPROMPT, deviceFlowPrompt(authorization.verification_uri, authorization.user_code), authorization.verification_uri_complete ?? authorization.verification_uri, '');
    let succeeded = false;
    ask([prompt], { service: req.service, host: req.host, signal: stop.signal, deadline, ...(req.origin ? { origin: req.origin } : {}) }).catch((e: unknown) => {
      // Once the token is there, the prompt is withdrawn: that rejection means nothing.
      if (!succeeded) stop.abort(e instanceof VirError ? e : cancelledError('the sign-in prompt was refused'));
    });
    try {
      const response = await oidc.pollDeviceAuthorizationGrant(config, authorization, params.resource ? { resource: params.resource } : undefined, { signal: stop.signal });
      succeeded = true;
      return response;
    } catch (e) {
      if (stop.signal.aborted && stop.signal.reason instanceof VirError) throw stop.signal.reason;
      throw issuerError('device authorization grant', this.settings.issuer, e);
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onCallerAbort);
      // Withdraws a prompt still on screen (the console stops reading; a relay cancels it).
      if (!stop.signal.aborted) stop.abort(cancelledError('the sign-in finished'));
    }
  }
}
