// Checks a bearer token for the server half: a JWT locally against the issuer's published keys
// (jose), an opaque token by asking the issuer (RFC 7662 introspection through openid-client).
// Either way the issuer, audience, expiry and required scopes are checked and one claim becomes
// the user name. Reasons go to the server log; they never contain the token.

import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { ErrorCode, ErrorDomain, VirError, type OidcIdentity } from '@virtauth/core';
import { CachedIssuer, issuerError } from './discovery.js';
import type { BearerErrorStatus, OAuthBearerServerError } from './messages.js';

/** auto: JWTs are checked locally and anything else is introspected. */
export type TokenValidationMode = 'auto' | 'jwt' | 'introspection';

export interface BearerValidatorSettings {
  /** The only issuer whose tokens are accepted (its `iss`, and where keys are discovered). */
  issuer: string;
  /** This server's identifier: the token's `aud` must contain it. */
  audience: string;
  /** Space-separated scopes every token must carry; empty or null requires none. */
  requiredScope?: string | null | undefined;
  /** The claim that names the user for the allow list and the audit (default `sub`). */
  usernameClaim?: string | undefined;
  validation?: TokenValidationMode | undefined;
  /** Credentials this server introspects with (RFC 7662); needed for opaque tokens. */
  introspectionClientId?: string | undefined;
  introspectionClientSecret?: string | undefined;
  /** Seconds of clock difference tolerated on `exp`/`nbf`/`iat` (default 30). */
  clockToleranceSec?: number | undefined;
  allowInsecureHttp?: boolean | undefined;
  discoveryTtlMs?: number | undefined;
}

export type TokenVerdict =
  | { ok: true; username: string; scopes: string[]; expiresAt: number | null; identity: OidcIdentity }
  | { ok: false; status: BearerErrorStatus; reason: string; username?: string };

// RFC 9068 names JWT access tokens `at+jwt`; plain `JWT` is accepted from issuers that predate it.
const ACCESS_TOKEN_TYPES = new Set(['at+jwt', 'application/at+jwt', 'jwt']);

function scopesOf(claims: Record<string, unknown>): string[] {
  if (typeof claims.scope === 'string') return claims.scope.split(' ').filter((s) => s !== '');
  if (Array.isArray(claims.scp)) return claims.scp.filter((s): s is string => typeof s === 'string');
  return [];
}

/** A claim holding names (a list, or one name); anything else holds none. */
function stringList(claim: unknown): string[] {
  if (typeof claim === 'string') return [claim];
  return Array.isArray(claim) ? claim.filter((s): s is string => typeof s === 'string').slice(0, 256) : [];
}

function audiencesOf(claims: Record<string, unknown>): string[] {
  if (typeof claims.aud === 'string') return [claims.aud];
  if (Array.isArray(claims.aud)) return claims.aud.filter((a): a is string => typeof a === 'string');
  return [];
}

function looksLikeJwt(token: string): boolean {
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) return false;
  try {
    decodeProtectedHeader(token);
    return true;
  } catch {
    return false;
  }
}

const rejected = (status: BearerErrorStatus, reason: string, username?: string): TokenVerdict => ({
  ok: false,
  status,
  reason,
  ...(username ? { username } : {}),
});

export class BearerTokenValidator {
  readonly issuer: CachedIssuer;
  private readonly requiredScopes: string[];
  private readonly usernameClaim: string;
  private readonly mode: TokenValidationMode;
  private readonly toleranceSec: number;
  private jwks: { uri: string; keys: ReturnType<typeof createRemoteJWKSet> } | null = null;

  constructor(readonly settings: BearerValidatorSettings) {
    if (!settings.audience)
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: 'an OAUTHBEARER server needs the audience its tokens must be issued for',
      });
    this.mode = settings.validation ?? 'auto';
    const introspects = settings.introspectionClientId !== undefined;
    if (this.mode === 'introspection' && !introspects) {
      throw new VirError({
        code: ErrorCode.CONF_SYNTAX,
        domain: ErrorDomain.CONF,
        detail: 'token introspection needs an introspection client id (and secret)',
      });
    }
    // Without introspection credentials no request is ever made with the client id; discovery
    // still needs one, and the audience names this server.
    this.issuer = new CachedIssuer({
      issuer: settings.issuer,
      clientId: settings.introspectionClientId ?? settings.audience,
      clientSecret: settings.introspectionClientSecret,
      allowInsecureHttp: settings.allowInsecureHttp,
      discoveryTtlMs: settings.discoveryTtlMs,
    });
    this.requiredScopes = (settings.requiredScope ?? '').split(' ').filter((s) => s !== '');
    this.usernameClaim = settings.usernameClaim ?? 'sub';
    this.toleranceSec = settings.clockToleranceSec ?? 30;
  }

  /** The error challenge RFC 7628 §3.2.2 describes, telling the client what a good token needs. */
  challenge(status: BearerErrorStatus): OAuthBearerServerError {
    return {
      status,
      ...(this.requiredScopes.length > 0 ? { scope: this.requiredScopes.join(' ') } : {}),
      'openid-configuration': this.issuer.discoveryUrl,
    };
  }

  /** Throws only when the issuer cannot be reached (a server problem, not the token's). */
  async validate(token: string): Promise<TokenVerdict> {
    const jwt = looksLikeJwt(token);
    if (this.mode === 'jwt' && !jwt)
      return rejected('invalid_token', 'the token is not a JWT, and this server only accepts JWT access tokens');
    if (jwt && this.mode !== 'introspection') return this.validateJwt(token);
    if (this.settings.introspectionClientId === undefined)
      return rejected('invalid_token', 'the token is opaque, and no introspection client is configured to check it');
    return this.introspect(token);
  }

  private async keys(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    const config = await this.issuer.get();
    const uri = config.serverMetadata().jwks_uri;
    if (!uri)
      throw new VirError({
        code: ErrorCode.AUTH_UNAVAILABLE,
        domain: ErrorDomain.AUTH,
        detail: `${this.settings.issuer} publishes no jwks_uri`,
      });
    // jose caches the key set and refetches it when a token names a key it does not know.
    if (this.jwks?.uri !== uri) this.jwks = { uri, keys: createRemoteJWKSet(new URL(uri)) };
    return this.jwks.keys;
  }

  private async validateJwt(token: string): Promise<TokenVerdict> {
    let keys;
    try {
      keys = await this.keys();
    } catch (e) {
      throw issuerError('fetching the signing keys', this.settings.issuer, e);
    }
    let payload: JWTPayload;
    let typ: string | undefined;
    try {
      const verified = await jwtVerify(token, keys, {
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        clockTolerance: this.toleranceSec,
        requiredClaims: ['exp'],
      });
      payload = verified.payload;
      typ = verified.protectedHeader.typ;
    } catch (e) {
      return this.jwtFailure(e);
    }
    if (typ !== undefined && !ACCESS_TOKEN_TYPES.has(typ.toLowerCase())) {
      return rejected('invalid_token', `the JWT is of type '${typ.slice(0, 40)}', not an access token`);
    }
    return this.checkClaims(payload as Record<string, unknown>, 'JWT');
  }

  private jwtFailure(e: unknown): TokenVerdict {
    const err = e as { code?: string; claim?: string; payload?: JWTPayload; message?: string };
    const presented = err.payload ?? {};
    switch (err.code) {
      case 'ERR_JWT_EXPIRED':
        return rejected('invalid_token', `the token expired at ${new Date((presented.exp ?? 0) * 1000).toISOString()}`);
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        if (err.claim === 'iss')
          return rejected(
            'invalid_token',
            `the token was issued by '${String(presented.iss).slice(0, 200)}', not by ${this.settings.issuer}`,
          );
        if (err.claim === 'aud')
          return rejected(
            'invalid_token',
            `the token's audience (${
              audiencesOf(presented as Record<string, unknown>)
                .join(', ')
                .slice(0, 200) || 'none'
            }) does not include ${this.settings.audience}`,
          );
        return rejected('invalid_token', `the token's '${err.claim}' claim is not acceptable: ${err.message}`);
      case 'ERR_JWKS_NO_MATCHING_KEY':
        return rejected('invalid_token', `the token is not signed by any key ${this.settings.issuer} publishes`);
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
        return rejected('invalid_token', 'the token signature does not verify');
      default:
        return rejected('invalid_token', `the token cannot be verified: ${err.code ?? 'error'}: ${err.message ?? String(e)}`);
    }
  }

  private async introspect(token: string): Promise<TokenVerdict> {
    let response: oidc.IntrospectionResponse;
    try {
      const config = await this.issuer.get();
      response = await oidc.tokenIntrospection(config, token, { token_type_hint: 'access_token' });
    } catch (e) {
      throw issuerError('token introspection', this.settings.issuer, e);
    }
    if (response.active !== true)
      return rejected('invalid_token', `${this.settings.issuer} reports the token is not active (expired, revoked or unknown)`);
    const claims = response as Record<string, unknown>;
    if (response.iss !== undefined && response.iss !== this.settings.issuer) {
      return rejected('invalid_token', `the token was issued by '${String(response.iss).slice(0, 200)}', not by ${this.settings.issuer}`);
    }
    if (!audiencesOf(claims).includes(this.settings.audience)) {
      return rejected(
        'invalid_token',
        `the token's audience (${audiencesOf(claims).join(', ').slice(0, 200) || 'none'}) does not include ${this.settings.audience}`,
      );
    }
    const now = Date.now() / 1000;
    if (typeof response.exp === 'number' && response.exp + this.toleranceSec < now)
      return rejected('invalid_token', `the token expired at ${new Date(response.exp * 1000).toISOString()}`);
    if (typeof response.nbf === 'number' && response.nbf - this.toleranceSec > now)
      return rejected('invalid_token', 'the token is not valid yet');
    if (response.token_type !== undefined && !/^(bearer|access_token)$/i.test(response.token_type)) {
      return rejected('invalid_token', `the token is a '${response.token_type.slice(0, 40)}', not a bearer access token`);
    }
    return this.checkClaims(claims, 'introspected token');
  }

  private checkClaims(claims: Record<string, unknown>, what: string): TokenVerdict {
    const name = claims[this.usernameClaim];
    const username = typeof name === 'string' && name !== '' ? name : undefined;
    const scopes = scopesOf(claims);
    const missing = this.requiredScopes.filter((s) => !scopes.includes(s));
    if (missing.length > 0) return rejected('insufficient_scope', `the ${what} lacks the scope ${missing.join(' ')}`, username);
    if (username === undefined) return rejected('invalid_token', `the ${what} has no '${this.usernameClaim}' claim to name the user`);
    const identity: OidcIdentity = {
      issuer: typeof claims.iss === 'string' ? claims.iss : this.settings.issuer,
      subject: typeof claims.sub === 'string' ? claims.sub : '',
      usernameClaim: this.usernameClaim,
      username,
      groups: stringList(claims.groups),
      roles: stringList(claims.roles),
      scopes,
    };
    return { ok: true, username, scopes, expiresAt: typeof claims.exp === 'number' ? claims.exp * 1000 : null, identity };
  }
}
