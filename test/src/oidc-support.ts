// Pieces of the OAUTHBEARER tests: the test IdP and daemons started for one test, daemon and
// client settings for the IdP, a client mechanism that presents a given token (to see how the
// server refuses bad ones), a token-accepting hypervisor driver that gets its token through the
// relay, a person who approves the device prompt, and the check that no log holds a token.

import type { ExecutionContext } from 'ava';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { DependencyContainer } from 'tsyringe';

import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  parseUri,
  uriParam,
  type ConnectAuth,
  type ConnectUri,
  type Credential,
  type CredentialRequestInfo,
  type Driver,
  type DriverConnection,
  type DriverOpenContext,
  type SaslClientSession,
  type SaslMechanism,
  type SaslServerSession,
} from '@virtauth/core';
import { TestDriver } from '@virtauth/drivers';
import {
  CLIENT_ERROR_ACK,
  encodeClientMessage,
  parseServerError,
  registerOAuthBearer,
  requestDelegatedToken,
  type OAuthBearerServerError,
  type OidcClientSettings,
} from '@virtauth/providers';
import { createClientContainer, openAuth, type OpenOptions } from 'virtauth';

import { AUDIENCE, CLIENT, REQUIRED_SCOPE, TestIdp, type TestIdpOptions } from './fixtures/oidc-idp.js';
import { TestVirtauthd } from './sasl-support.js';

type Settings = Record<string, string | number | readonly string[]>;

/** A virtauthd that accepts the test IdP's tokens for AUDIENCE.virtauthd, and only OAUTHBEARER. */
export function oauthServerSettings(idp: TestIdp, extra: Settings = {}): Settings {
  return {
    sasl_mech_list: ['OAUTHBEARER'],
    oauth_issuer: idp.issuer,
    oauth_audience: AUDIENCE.virtauthd,
    oauth_required_scope: REQUIRED_SCOPE,
    oauth_username_claim: 'preferred_username',
    oauth_introspection_client_id: CLIENT.introspector.id,
    oauth_introspection_client_secret: CLIENT.introspector.secret,
    // The test IdP speaks http on 127.0.0.1; expiry is checked to the second.
    oauth_allow_insecure_http: 1,
    oauth_clock_skew: 0,
    sasl_allowed_username_list: ['alice', 'svc-*'],
    ...extra,
  };
}

export async function startIdp(t: ExecutionContext, options: TestIdpOptions = {}): Promise<TestIdp> {
  const idp = await TestIdp.start(options);
  t.teardown(() => idp.stop());
  return idp;
}

/** Opens `uri`, asks for the host name and closes again. */
export async function hostnameThrough(uri: string, auth: ConnectAuth | null, options: OpenOptions): Promise<string> {
  const conn = await openAuth(uri, auth, 0, options);
  try {
    return await conn.getHostname();
  } finally {
    await conn.close();
  }
}

export async function startDaemon(t: ExecutionContext, name: string, settings: Settings): Promise<TestVirtauthd> {
  const daemon = await TestVirtauthd.start({ settings: { daemon_name: name, ...settings } });
  t.teardown(() => daemon.stop());
  return daemon;
}

export function machineClient(idp: TestIdp, overrides: Partial<OidcClientSettings> = {}): OidcClientSettings {
  return {
    issuer: idp.issuer,
    clientId: CLIENT.machine.id,
    clientSecret: CLIENT.machine.secret,
    scope: REQUIRED_SCOPE,
    resource: AUDIENCE.virtauthd,
    allowInsecureHttp: true,
    ...overrides,
  };
}

export function personClient(idp: TestIdp, overrides: Partial<OidcClientSettings> = {}): OidcClientSettings {
  return {
    issuer: idp.issuer,
    clientId: CLIENT.cli.id,
    grant: 'device_code',
    scope: `openid offline_access ${REQUIRED_SCOPE}`,
    resource: AUDIENCE.virtauthd,
    allowInsecureHttp: true,
    ...overrides,
  };
}

/** A client container (the shipped plugins) plus OAUTHBEARER with one OpenID client for every host. */
export function oauthClientContainer(
  client: OidcClientSettings,
  onServerError?: (error: OAuthBearerServerError) => void,
): DependencyContainer {
  const container = createClientContainer();
  registerOAuthBearer(container, {
    client: { clientFor: () => client, ...(onServerError ? { onServerError: (_host, error) => onServerError(error) } : {}) },
  });
  return container;
}

/** The client half of OAUTHBEARER with a token given by the test (null: an empty `auth`). */
export class FixedTokenMechanism implements SaslMechanism {
  readonly name = 'OAUTHBEARER';
  readonly priority = 1000;
  readonly requiresSecureChannel = true;
  readonly requiresChannelBinding = false;
  serverError: OAuthBearerServerError | null = null;

  constructor(private readonly token: string | null) {}

  createClient(): SaslClientSession {
    let sent = false;
    return {
      get complete() {
        return sent;
      },
      start: async () => {
        sent = true;
        return this.token === null ? Buffer.from('n,,\x01auth=\x01\x01') : encodeClientMessage(this.token);
      },
      step: async (challenge) => {
        this.serverError = challenge ? parseServerError(challenge) : null;
        return CLIENT_ERROR_ACK;
      },
    };
  }

  createServer(): SaslServerSession {
    throw new Error('FixedTokenMechanism is a client half only');
  }
}

/**
 * A hypervisor driver that accepts bearer tokens instead of passwords: it asks for one through
 * the credential pipeline (the relay, in a daemon) and verifies it with jose.
 */
export class TokenHypervisorDriver implements Driver {
  readonly name = 'tokenhv';
  readonly accepted: JWTPayload[] = [];
  private readonly keys;

  constructor(private readonly issuer: string) {
    this.keys = createRemoteJWKSet(new URL(`${issuer}/jwks`));
  }

  accepts(uri: ConnectUri): boolean {
    return uri.driver === 'tokenhv' && uri.transport === null && !uri.host;
  }

  async open(uri: ConnectUri, ctx: DriverOpenContext): Promise<DriverConnection> {
    // Tests may ask for another audience, to see the client refuse to hand a token out.
    const audience = uriParam(uri, 'audience') ?? AUDIENCE.hypervisor;
    const token = await requestDelegatedToken(ctx.requestCredentials, {
      audience,
      host: 'hv.test',
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    try {
      const { payload } = await jwtVerify(token, this.keys, { issuer: this.issuer, audience: AUDIENCE.hypervisor });
      this.accepted.push(payload);
    } catch (e) {
      throw new VirError({
        code: ErrorCode.AUTH_FAILED,
        domain: ErrorDomain.TEST,
        detail: `tokenhv refused the token: ${(e as Error).message}`,
      });
    }
    return new TestDriver().open(parseUri('test:///default'), ctx);
  }
}

export interface SeenPrompt {
  type: number;
  prompt: string;
  challenge: string | null;
  host: string;
  daemons: string[];
}

/** The person: shown the device prompt through the callback, approves it at the IdP as `login`. */
export function approvingPerson(idp: TestIdp, login: string): { auth: ConnectAuth; prompts: SeenPrompt[] } {
  const prompts: SeenPrompt[] = [];
  const auth: ConnectAuth = {
    credTypes: [CredentialType.ECHOPROMPT],
    callback: async (creds: Credential[], info: CredentialRequestInfo) => {
      for (const c of creds) {
        prompts.push({
          type: c.type,
          prompt: c.prompt,
          challenge: c.challenge,
          host: info.host,
          daemons: info.origin.map((h) => h.daemon.split('@')[0]!),
        });
        await idp.approveDevice(c.challenge!, login);
        c.result = '';
      }
    },
  };
  return { auth, prompts };
}

/** The uri_allowed_list entry that lets a daemon open `via(daemon, ...)`: any next hop, which that daemon's own list decides. */
export function hopTo(daemon: TestVirtauthd): string {
  return `${daemon.uri('unix')}&name=*`;
}

/** The uri_allowed_list entry for TokenHypervisorDriver, whatever audience a test names. */
export const TOKEN_HV_ALLOWED = 'tokenhv:///default?audience=*';

/** `test+unix:///default?socket=...&name=<next>`: a URI that makes `daemon` open `next`. */
export function via(daemon: TestVirtauthd, next: string): string {
  return `${daemon.uri('unix')}&name=${encodeURIComponent(next)}`;
}

/** Asserts that no issued token (nor its signature alone) appears in any daemon's log. */
export function assertNoTokenInLogs(t: ExecutionContext, idp: TestIdp, daemons: readonly TestVirtauthd[], extraText = ''): void {
  t.true(idp.issuedTokens.size > 0, 'the test issued tokens to look for');
  const texts = [...daemons.map((d) => d.logText()), extraText];
  for (const token of idp.issuedTokens) {
    const signature = token.split('.').pop()!;
    for (const text of texts) {
      t.false(text.includes(token), 'a log contains an access token');
      t.false(signature.length >= 16 && text.includes(signature), 'a log contains an access token signature');
    }
  }
}
