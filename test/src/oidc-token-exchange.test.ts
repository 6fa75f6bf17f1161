// Delegation by RFC 8693 token exchange, against a real OpenID provider (oidc-provider from npm,
// on loopback) that offers the grant: the IdP's side of the exchange and its RFC 8693 errors, a
// nested driver two hops away getting a token for its audience that the client obtained by
// exchanging its own token (for a machine and for a person), audiences the client does not hand
// tokens out for, and a subject token the IdP rejects, which fails the open rather than falling
// back to any other credential. No token reaches a log or an audit record.

import { hostname } from 'node:os';

import { decodeJwt } from 'jose';

import {
  CredentialType,
  DRIVER,
  ErrorCode,
  ErrorDomain,
  VirError,
  type ConnectAuth,
  type Credential,
  type CredentialRequestInfo,
} from '@virtauth/core';
import { OidcTokenClient, createOidcCredentialCallback } from '@virtauth/providers';

import { ACCESS_TOKEN_TYPE, AUDIENCE, CLIENT, REQUIRED_SCOPE, TOKEN_EXCHANGE_GRANT, type TestIdp } from './fixtures/oidc-idp.js';
import {
  TOKEN_HV_ALLOWED,
  TokenHypervisorDriver,
  approvingPerson,
  assertNoTokenInLogs,
  hopTo,
  hostnameThrough,
  machineClient,
  personClient,
  startDaemon,
  startIdp,
  via,
} from './oidc-support.js';
import { interopTest } from './peers/index.js';
import type { TestVirtauthd } from './sasl-support.js';

const PEERS = ['oidc-provider'];
const HV_AUDIENCES = ['https://hv.test/*'];
const ISSUER_URL = String.raw`http:\/\/127\.0\.0\.1:\d+`;

/** The JWTs the IdP issued for `audience`. */
function issuedFor(idp: TestIdp, audience: string): string[] {
  return [...idp.issuedTokens].filter((token) => token.split('.').length === 3 && decodeJwt(token).aud === audience);
}

/** client -> A -> B, where B's tokenhv driver asks for its token through the relay. */
async function tokenDriverChain(
  t: Parameters<typeof startDaemon>[0],
  idp: TestIdp,
): Promise<{ a: TestVirtauthd; b: TestVirtauthd; driver: TokenHypervisorDriver; uri: (audience?: string) => string }> {
  const b = await startDaemon(t, 'virtauthd-b', { auth_unix_rw: 'none', uri_allowed_list: [TOKEN_HV_ALLOWED] });
  const driver = new TokenHypervisorDriver(idp.issuer);
  b.handle.container.register(DRIVER, { useValue: driver });
  const a = await startDaemon(t, 'virtauthd-a', { auth_unix_rw: 'none', uri_allowed_list: [hopTo(b)] });
  const uri = (audience?: string) =>
    via(a, via(b, audience ? `tokenhv:///default?audience=${encodeURIComponent(audience)}` : 'tokenhv:///default'));
  return { a, b, driver, uri };
}

/** An application callback that would answer anything with a password: it must never be asked. */
function passwordFallback(): { auth: ConnectAuth; asked: Credential[] } {
  const asked: Credential[] = [];
  const auth: ConnectAuth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE, CredentialType.EXTERNAL],
    callback: (creds) => {
      for (const c of creds) {
        asked.push(c);
        c.result = 'hunter2-password';
      }
    },
  };
  return { auth, asked };
}

function audits(daemon: TestVirtauthd): unknown[][] {
  return daemon.events('relay.audit').map((e) => [e.service, e.host, e.credentialTypes, e.outcome]);
}

interopTest('the test IdP offers RFC 8693 token exchange only when asked to, and answers its errors as RFC 8693 says', PEERS, async (t) => {
  const plain = await startIdp(t);
  t.false(
    (await plain.discovery()).grant_types_supported?.includes(TOKEN_EXCHANGE_GRANT),
    "the default IdP keeps delegation on the client's own grant",
  );
  const ownToken = await plain.clientCredentialsToken(CLIENT.machine, { resource: AUDIENCE.virtauthd, scope: REQUIRED_SCOPE });
  const unsupported = await plain.tokenRequest(CLIENT.machine, {
    grant_type: TOKEN_EXCHANGE_GRANT,
    subject_token: ownToken,
    subject_token_type: ACCESS_TOKEN_TYPE,
    resource: AUDIENCE.hypervisor,
  });
  t.is(unsupported.body.error, 'unsupported_grant_type');

  const idp = await startIdp(t, { tokenExchange: true });
  t.true((await idp.discovery()).grant_types_supported?.includes(TOKEN_EXCHANGE_GRANT), 'discovery lists the registered grant');
  const subject = await idp.clientCredentialsToken(CLIENT.machine, { resource: AUDIENCE.virtauthd, scope: REQUIRED_SCOPE });
  const exchange = (fields: Record<string, string>, client = CLIENT.machine as { id: string; secret?: string }) =>
    idp.tokenRequest(client, {
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: subject,
      subject_token_type: ACCESS_TOKEN_TYPE,
      ...fields,
    });

  const ok = await exchange({ resource: AUDIENCE.hypervisor, requested_token_type: ACCESS_TOKEN_TYPE });
  t.is(ok.status, 200);
  t.like(ok.body, { issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', scope: REQUIRED_SCOPE });
  t.true(
    typeof ok.body.expires_in === 'number' && ok.body.expires_in > 0 && ok.body.expires_in <= 300,
    'it lives no longer than the subject token',
  );
  t.like(decodeJwt(String(ok.body.access_token)), {
    aud: AUDIENCE.hypervisor,
    sub: CLIENT.machine.id,
    client_id: CLIENT.machine.id,
    iss: idp.issuer,
  });
  // RFC 8693's `audience` names the target as well as a resource indicator does.
  t.is(decodeJwt(String((await exchange({ audience: AUDIENCE.hypervisor })).body.access_token)).aud, AUDIENCE.hypervisor);
  t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 2);

  const refusals: [string, Promise<{ status: number; body: Record<string, unknown> }>, string, RegExp][] = [
    ['no subject token', exchange({ subject_token: '', resource: AUDIENCE.hypervisor }), 'invalid_request', /subject_token/],
    [
      'an ID token type',
      exchange({ subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', resource: AUDIENCE.hypervisor }),
      'invalid_request',
      /subject_token_type/,
    ],
    [
      'a refresh token requested',
      exchange({ requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token', resource: AUDIENCE.hypervisor }),
      'invalid_request',
      /can be requested/,
    ],
    ['no target', exchange({}), 'invalid_target', /resource or audience/],
    ['an unknown target', exchange({ resource: 'https://evil.test/collect' }), 'invalid_target', /not a resource server/],
    ['two targets', exchange({ resource: AUDIENCE.hypervisor, audience: AUDIENCE.other }), 'invalid_target', /different targets/],
    [
      'more scope than the subject',
      exchange({ resource: AUDIENCE.hypervisor, scope: `${REQUIRED_SCOPE} openid` }),
      'invalid_scope',
      /scopes the subject token lacks/,
    ],
    [
      'not a token',
      exchange({ subject_token: 'not-a-token', resource: AUDIENCE.hypervisor }),
      'invalid_request',
      /not an active access token/,
    ],
    [
      "another client's token",
      exchange({ resource: AUDIENCE.hypervisor }, CLIENT.shortLived),
      'invalid_request',
      /issued to another client/,
    ],
  ];
  for (const [what, pending, error, description] of refusals) {
    const { status, body } = await pending;
    t.is(status, 400, what);
    t.is(body.error, error, what);
    t.regex(String(body.error_description), description, what);
  }
  t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 2, 'no refusal issued a token');
  t.is(idp.failedGrants.filter((f) => f.grantType === TOKEN_EXCHANGE_GRANT).length, refusals.length);

  // The client library turns an IdP refusal into a typed error that names the issuer's answer.
  const tokens = new OidcTokenClient(machineClient(idp));
  const refused = await t.throwsAsync(
    tokens.accessToken({ service: 'oauth2', host: 'hv.test', resource: 'https://evil.test/collect', subjectToken: subject }),
    { instanceOf: VirError },
  );
  t.like(refused, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH });
  t.regex(
    refused?.message ?? '',
    new RegExp(`token exchange at ${ISSUER_URL}: invalid_target \\(https://evil\\.test/collect is not a resource server of this IdP\\)`),
  );
  t.false(refused?.message.includes(subject), 'the error does not carry the subject token');

  // An exchange that answers with something other than an access token is not passed on as one.
  idp.exchangeIssuedTokenType = 'urn:ietf:params:oauth:token-type:id_token';
  const notAccess = await t.throwsAsync(
    tokens.accessToken({ service: 'oauth2', host: 'hv.test', resource: AUDIENCE.hypervisor, subjectToken: subject }),
    { instanceOf: VirError },
  );
  t.like(notAccess, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.AUTH });
  t.regex(
    notAccess?.message ?? '',
    new RegExp(`token exchange at ${ISSUER_URL} issued a token of type 'urn:ietf:params:oauth:token-type:id_token', not an access token`),
  );
  for (const token of idp.issuedTokens) t.false(notAccess?.message.includes(token), 'the error does not carry a token');
});

interopTest(
  "a machine's nested driver gets its token by token exchange through two hops; other audiences are refused before the IdP is asked",
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { tokenExchange: true });
    const { a, b, driver, uri } = await tokenDriverChain(t, idp);
    const fallback = passwordFallback();
    const auth = createOidcCredentialCallback({ client: machineClient(idp), audiences: HV_AUDIENCES, fallback: fallback.auth });
    const relayAudit: unknown[] = [];

    t.is(await hostnameThrough(uri(), auth, { relayAudit: (r) => relayAudit.push(r) }), hostname());
    t.is(idp.grantCount('client_credentials'), 1, "one grant, for the client's own audience");
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 1, "the driver's token came from an exchange");
    const [own] = issuedFor(idp, AUDIENCE.virtauthd);
    t.truthy(own, "the client's own token is for its own audience");
    t.is(driver.accepted.length, 1);
    t.like(driver.accepted[0], {
      aud: AUDIENCE.hypervisor,
      sub: decodeJwt(own!).sub,
      client_id: CLIENT.machine.id,
      scope: REQUIRED_SCOPE,
      preferred_username: 'svc-machine',
    });
    t.is(driver.accepted[0]!.sub, CLIENT.machine.id);
    t.deepEqual(fallback.asked, [], 'the application was not asked for anything');
    for (const daemon of [a, b]) t.deepEqual(audits(daemon), [['oauth2', 'hv.test', ['EXTERNAL'], 'OK']]);

    // The exchanged token is reused while it is valid: no second exchange.
    t.is(await hostnameThrough(uri(), auth, {}), hostname());
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 1);
    t.is(driver.accepted.length, 2);

    const evil = 'https://evil.test/collect';
    const refused = await t.throwsAsync(hostnameThrough(uri(evil), auth, { relayAudit: (r) => relayAudit.push(r) }), {
      instanceOf: VirError,
    });
    t.is(refused?.code, 45, "DENIED arrives as libvirt's VIR_ERR_AUTH_FAILED");
    t.regex(refused?.message ?? '', /this client does not hand out tokens for https:\/\/evil\.test\/collect/);
    t.is(b.events('relay.audit').at(-1)?.outcome, 'DENIED');
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 1, 'the IdP was not asked for a token for it');
    t.deepEqual(idp.failedGrants, []);
    t.deepEqual(fallback.asked, []);
    t.is(driver.accepted.length, 2);
    assertNoTokenInLogs(t, idp, [a, b], JSON.stringify(relayAudit) + (refused?.message ?? ''));
  },
);

interopTest(
  "a person's token is exchanged for the driver's audience: same subject, no scope beyond the person's token, and the device prompt is the only question",
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { tokenExchange: true });
    const { a, b, driver, uri } = await tokenDriverChain(t, idp);
    const person = approvingPerson(idp, 'alice');
    const prompts: { type: number; daemons: string[] }[] = [];
    const fallback: ConnectAuth = {
      credTypes: person.auth.credTypes,
      callback: (creds: Credential[], info: CredentialRequestInfo) => {
        for (const c of creds) prompts.push({ type: c.type, daemons: info.origin.map((h) => h.daemon.split('@')[0]!) });
        return person.auth.callback(creds, info);
      },
    };
    const auth = createOidcCredentialCallback({ client: personClient(idp), audiences: HV_AUDIENCES, fallback });
    const relayAudit: unknown[] = [];

    t.is(await hostnameThrough(uri(), auth, { relayAudit: (r) => relayAudit.push(r) }), hostname());
    t.deepEqual(
      prompts,
      [{ type: CredentialType.ECHOPROMPT, daemons: ['virtauthd-b', 'virtauthd-a'] }],
      'the sign-in prompt, about the relayed request',
    );
    t.is(idp.grantCount('urn:ietf:params:oauth:grant-type:device_code'), 1);
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 1);
    const [own] = issuedFor(idp, AUDIENCE.virtauthd);
    const ownClaims = decodeJwt(own!);
    t.like(ownClaims, { sub: 'alice', scope: REQUIRED_SCOPE });
    t.is(driver.accepted.length, 1);
    t.like(driver.accepted[0], {
      aud: AUDIENCE.hypervisor,
      sub: 'alice',
      client_id: CLIENT.cli.id,
      scope: REQUIRED_SCOPE,
      preferred_username: 'alice',
    });
    t.true(driver.accepted[0]!.exp! <= ownClaims.exp!, "the exchanged token does not outlive the person's");
    for (const daemon of [a, b]) t.deepEqual(audits(daemon), [['oauth2', 'hv.test', ['EXTERNAL'], 'OK']]);
    assertNoTokenInLogs(t, idp, [a, b], JSON.stringify(relayAudit));
  },
);

interopTest(
  'a subject token the IdP rejects fails the open with a typed error, never falls back to another credential, and is not used again',
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { tokenExchange: true });
    const { a, b, driver, uri } = await tokenDriverChain(t, idp);
    // One token client for the application: its own (opaque) token is cached, then revoked.
    const tokens = new OidcTokenClient(
      machineClient(idp, { clientId: CLIENT.opaqueMachine.id, clientSecret: CLIENT.opaqueMachine.secret }),
    );
    const own = await tokens.accessToken({ service: 'libvirt', host: 'localhost' });
    t.is(own.split('.').length, 1, 'the subject token is opaque: the IdP looks it up');
    await idp.revoke(CLIENT.opaqueMachine, own);
    const fallback = passwordFallback();
    const auth = createOidcCredentialCallback({ client: tokens, audiences: HV_AUDIENCES, fallback: fallback.auth });
    const relayAudit: unknown[] = [];

    const error = await t.throwsAsync(hostnameThrough(uri(), auth, { relayAudit: (r) => relayAudit.push(r) }), { instanceOf: VirError });
    t.is(error?.code, ErrorCode.AUTH_FAILED);
    t.regex(
      error?.message ?? '',
      new RegExp(`token exchange at ${ISSUER_URL}: invalid_request \\(subject_token is not an active access token of this issuer\\)`),
    );
    t.deepEqual(idp.failedGrants, [{ grantType: TOKEN_EXCHANGE_GRANT, error: 'invalid_request' }]);
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 0);
    t.is(idp.grantCount('client_credentials'), 1, 'no token for the audience was obtained another way');
    t.deepEqual(fallback.asked, [], 'no password was asked for instead');
    t.is(driver.accepted.length, 0);
    t.is(b.events('relay.audit').at(-1)?.outcome, 'FAILED');

    // The refused token is dropped: the next open trades a fresh one.
    t.is(await hostnameThrough(uri(), auth, { relayAudit: (r) => relayAudit.push(r) }), hostname());
    t.is(idp.grantCount('client_credentials'), 2);
    t.is(idp.grantCount(TOKEN_EXCHANGE_GRANT), 1);
    t.like(driver.accepted[0], { aud: AUDIENCE.hypervisor, sub: CLIENT.opaqueMachine.id });
    t.deepEqual(fallback.asked, []);
    assertNoTokenInLogs(t, idp, [a, b], JSON.stringify(relayAudit) + (error?.message ?? ''));
  },
);
