// The authorization code flow with PKCE for a native app (RFC 8252): a one-shot HTTP listener on
// a loopback port receives the browser's redirect. Only a redirect carrying this sign-in's
// `state` is taken, and only once; anything else gets an error page and changes nothing, so a
// local process that guesses the port can neither inject a code nor end the wait.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import * as oidc from 'openid-client';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { issuerError } from './discovery.js';

export const LOOPBACK_CALLBACK_PATH = '/callback';

export interface AuthorizationCodeRequest {
  /** Extra authorization and token request parameters (scope, resource). */
  params: Record<string, string>;
  /** Shows the person the URL to open (a browser, or a printed line); resolves when shown. */
  present: (url: string) => Promise<void> | void;
  signal: AbortSignal;
  /** Loopback port to listen on (default: any free port). */
  port?: number | undefined;
  issuer: string;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** RFC 6749 §4.1.2.1: error and error_description are %x20-21 / %x23-5B / %x5D-7E; anything else is shown as "?". */
function oauthErrorText(text: string, max: number): string {
  return text.slice(0, max).replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?');
}

function page(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', connection: 'close' });
  res.end(`${text}\n`);
}

/** Runs the flow; resolves with the token response once the code was exchanged. */
export async function authorizationCodeFlow(
  config: oidc.Configuration,
  req: AuthorizationCodeRequest,
): Promise<oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers> {
  const verifier = oidc.randomPKCECodeVerifier();
  const challenge = await oidc.calculatePKCECodeChallenge(verifier);
  const state = oidc.randomState();
  let settle!: { resolve: (url: URL) => void; reject: (e: unknown) => void };
  const callback = new Promise<URL>((resolve, reject) => (settle = { resolve, reject }));
  let taken = false;

  const server = createServer((httpReq: IncomingMessage, res: ServerResponse) => {
    const url = new URL(httpReq.url ?? '/', 'http://127.0.0.1');
    if (httpReq.method !== 'GET' || url.pathname !== LOOPBACK_CALLBACK_PATH) return page(res, 404, 'Not found.');
    if (taken) return page(res, 400, 'This sign-in has already been completed; the request was refused.');
    const given = url.searchParams.get('state');
    if (given === null || !sameSecret(given, state))
      return page(res, 400, 'The sign-in response does not belong to this sign-in (wrong state); it was refused.');
    taken = true;
    const failed = url.searchParams.get('error');
    if (failed !== null) {
      page(res, 200, 'The sign-in was not completed. You can close this window.');
      const description = url.searchParams.get('error_description');
      settle.reject(
        new VirError({
          code: ErrorCode.AUTH_FAILED,
          domain: ErrorDomain.AUTH,
          detail: `the sign-in at ${req.issuer} was refused: ${oauthErrorText(failed, 100)}${description ? ` (${oauthErrorText(description, 200)})` : ''}; run virtauth login again`,
        }),
      );
      return;
    }
    page(res, 200, 'Signed in. You can close this window and return to the terminal.');
    settle.resolve(new URL(`${redirectUri}${url.search}`));
  });
  // One request per connection, so that the listener closes promptly after the redirect.
  server.keepAliveTimeout = 1;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(req.port ?? 0, '127.0.0.1', () => resolve());
  });
  const redirectUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}${LOOPBACK_CALLBACK_PATH}`;
  const onAbort = () => settle.reject(req.signal.reason);
  req.signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (req.signal.aborted) throw req.signal.reason;
    const authorizationUrl = oidc.buildAuthorizationUrl(config, {
      ...req.params,
      redirect_uri: redirectUri,
      response_type: 'code',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state,
      // A refresh token (offline_access) is only issued after explicit consent (OpenID Connect Core §11).
      ...(req.params.scope?.split(' ').includes('offline_access') ? { prompt: 'consent' } : {}),
    });
    await req.present(authorizationUrl.href);
    const redirected = await callback;
    const tokenParams: Record<string, string> = req.params.resource ? { resource: req.params.resource } : {};
    try {
      return await oidc.authorizationCodeGrant(config, redirected, { pkceCodeVerifier: verifier, expectedState: state }, tokenParams);
    } catch (e) {
      throw issuerError('authorization code grant', req.issuer, e);
    }
  } finally {
    req.signal.removeEventListener('abort', onAbort);
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
