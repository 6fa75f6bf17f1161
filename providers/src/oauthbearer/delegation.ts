// Tokens instead of passwords for nested drivers. A driver that accepts bearer tokens asks for
// one through the ordinary credential pipeline (so the relay carries the request back to the
// client, hop by hop), as one EXTERNAL credential whose challenge names the audience:
//
//     type EXTERNAL (9), challenge "oauth2-token:<audience>", result: the access token
//
// The client answers it with createOidcCredentialCallback: the token is obtained there, for that
// audience only (RFC 8693 token exchange where the issuer offers it, else the client's own grant),
// so no password crosses any hop and the token is useless anywhere but at that audience.

import {
  credential,
  CredentialType,
  ErrorCode,
  ErrorDomain,
  RelayStatus,
  VirError,
  globMatch,
  makeCredentialRequester,
  relayError,
  type ConnectAuth,
  type Credential,
  type CredentialRequester,
  type CredentialRequestInfo,
} from '@virtauth/core';
import { OidcTokenClient, type OidcClientSettings } from './token-client.js';

export const OAUTH2_TOKEN_CHALLENGE_PREFIX = 'oauth2-token:';
/** auth.conf service of token requests (no auth.conf entry answers them: tokens expire). */
export const OAUTH2_TOKEN_SERVICE = 'oauth2';

/** Whether a credential is a request for a bearer token; returns its audience, or null. */
export function tokenRequestAudience(c: Pick<Credential, 'type' | 'challenge'>): string | null {
  if (c.type !== CredentialType.EXTERNAL || !c.challenge?.startsWith(OAUTH2_TOKEN_CHALLENGE_PREFIX)) return null;
  const audience = c.challenge.slice(OAUTH2_TOKEN_CHALLENGE_PREFIX.length);
  return audience === '' ? null : audience;
}

export interface DelegatedTokenRequest {
  /** The audience (resource indicator) the driver accepts tokens for. */
  audience: string;
  /** The server the driver talks to (auth.conf host), for the requester's description. */
  host: string;
  signal?: AbortSignal;
  deadline?: number;
}

/** What a driver calls: one EXTERNAL credential, answered with a token for `audience`. */
export async function requestDelegatedToken(requestCredentials: CredentialRequester, req: DelegatedTokenRequest): Promise<string> {
  const cred = credential(CredentialType.EXTERNAL, `Access token for ${req.audience}`, `${OAUTH2_TOKEN_CHALLENGE_PREFIX}${req.audience}`);
  await requestCredentials([cred], {
    service: OAUTH2_TOKEN_SERVICE,
    host: req.host,
    ...(req.signal ? { signal: req.signal } : {}),
    ...(req.deadline !== undefined ? { deadline: req.deadline } : {}),
  });
  if (!cred.result)
    throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH, detail: `no access token for ${req.audience} was given` });
  return cred.result;
}

export interface OidcCredentialCallbackOptions {
  /** The OpenID client tokens are obtained with (its settings, or a shared token client). */
  client: OidcClientSettings | OidcTokenClient;
  /**
   * Audiences drivers may obtain tokens for (globs with `*` and `?`). Anything else is refused: a token
   * is a credential, and a daemon in the chain must not collect tokens for arbitrary services.
   */
  audiences: readonly string[];
  /** The application's own callback: every other credential, and the device flow's prompt. */
  fallback?: ConnectAuth | null;
}

/**
 * A ConnectAuth that answers token requests (`oauth2-token:<audience>`) itself and passes every
 * other credential to `fallback`. Use it as the `auth` of openAuth.
 */
export function createOidcCredentialCallback(opts: OidcCredentialCallbackOptions): ConnectAuth {
  const tokens = opts.client instanceof OidcTokenClient ? opts.client : new OidcTokenClient(opts.client);
  const fallback = opts.fallback ?? null;
  const askPerson: CredentialRequester | undefined = fallback ? makeCredentialRequester([], fallback) : undefined;
  const credTypes = [...new Set([...(fallback?.credTypes ?? []), CredentialType.EXTERNAL])];

  const tokenFor = async (audience: string, info: CredentialRequestInfo): Promise<string> => {
    if (!opts.audiences.some((g) => globMatch(g, audience))) {
      throw relayError(RelayStatus.DENIED, `this client does not hand out tokens for ${audience}`);
    }
    const base = {
      requestCredentials: askPerson,
      service: info.service,
      host: info.host,
      signal: info.signal,
      deadline: info.deadline,
      origin: info.origin,
    };
    // RFC 8693: trade the client's own token for one of the audience, when the issuer can. No
    // scope is asked for: the delegated token gets at most the subject token's, as the issuer
    // narrows them for the audience (the client's own `scope` may hold OpenID scopes such as
    // offline_access, which no access token carries and an issuer rightly refuses to add).
    const own = tokens.settings.resource;
    if (own && own !== audience && tokens.supportsTokenExchange(await tokens.issuer.get())) {
      const subjectToken = await tokens.accessToken({ ...base, resource: own });
      return tokens.accessToken({ ...base, resource: audience, scope: null, subjectToken });
    }
    return tokens.accessToken({ ...base, resource: audience });
  };

  const callback = async (creds: Credential[], info: CredentialRequestInfo): Promise<boolean> => {
    const others: Credential[] = [];
    for (const c of creds) {
      const audience = tokenRequestAudience(c);
      if (audience === null) others.push(c);
      else c.result = await tokenFor(audience, info);
    }
    if (others.length === 0) return true;
    if (!fallback) return false;
    return (await fallback.callback(others, info)) !== false;
  };

  return { credTypes, callback };
}
