// OAUTHBEARER (RFC 7628) end to end against a real OpenID provider (oidc-provider from npm, on
// loopback): machines with the client credentials grant, people with the device flow (approved
// by the test through the provider's own pages, as a person would), JWT and introspected opaque
// tokens, the server's refusals and their RFC 7628 error challenges, the device prompt relayed
// across daemons, tokens handed to nested drivers instead of passwords, and no token in any log.

import { hostname } from 'node:os';

import { CredentialType, DRIVER, ErrorCode, ErrorDomain, VirError, type ConnectAuth } from '@virtauth/core';
import { createOidcCredentialCallback } from '@virtauth/providers';

import { AUDIENCE, CLIENT, CLI_TOKEN_TTL, REQUIRED_SCOPE, newSigningKey } from './fixtures/oidc-idp.js';
import {
  FixedTokenMechanism,
  TokenHypervisorDriver,
  approvingPerson,
  assertNoTokenInLogs,
  hostnameThrough,
  machineClient,
  oauthClientContainer,
  oauthServerSettings,
  personClient,
  startDaemon,
  startIdp,
  via,
  hopTo,
  TOKEN_HV_ALLOWED,
} from './oidc-support.js';
import { delay, interopTest } from './peers/index.js';
import type { TestVirtauthd } from './sasl-support.js';
import { RawClient } from './sasl-test-helpers.js';

const PEERS = ['oidc-provider'];

function logins(daemon: TestVirtauthd): unknown[][] {
  return daemon.events('auth.sasl.succeeded').map((e) => [e.mechanism, e.user]);
}

function failureReasons(daemon: TestVirtauthd): string[] {
  return daemon.events('auth.sasl.failed').map((e) => String(e.reason));
}

const DEVICE_PROMPT = /^To sign in, open http:\/\/127\.0\.0\.1:\d+\/device and enter the code [A-Z]{4}-[A-Z]{4}, then press Enter$/;

interopTest('client credentials: a machine logs in to virtauthd with a JWT access token, reused while it is valid', PEERS, async (t) => {
  const idp = await startIdp(t);
  const daemon = await startDaemon(t, 'virtauthd-oauth', oauthServerSettings(idp));
  const container = oauthClientContainer(machineClient(idp));

  for (let i = 0; i < 2; i++) t.is(await hostnameThrough(daemon.uri('unix'), null, { container }), hostname());
  t.deepEqual(logins(daemon), [
    ['OAUTHBEARER', 'svc-machine'],
    ['OAUTHBEARER', 'svc-machine'],
  ]);
  t.is(idp.grantCount('client_credentials'), 1, 'the second login reused the cached token');
  // The allow list sees the mapped claim: a machine outside it is refused.
  const strict = await startDaemon(t, 'virtauthd-strict', oauthServerSettings(idp, { sasl_allowed_username_list: ['alice'] }));
  const error = await t.throwsAsync(hostnameThrough(strict.uri('unix'), null, { container }), { instanceOf: VirError });
  t.like(error, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC });
  t.deepEqual(failureReasons(strict), ['user name not in sasl_allowed_username_list']);
  assertNoTokenInLogs(t, idp, [daemon, strict]);
});

interopTest(
  'device flow: the verification URL and code reach the person through the credential callback; the token is refreshed when it expires',
  PEERS,
  async (t) => {
    const idp = await startIdp(t);
    const daemon = await startDaemon(t, 'virtauthd-oauth', oauthServerSettings(idp));
    const container = oauthClientContainer(personClient(idp, { expiryMarginMs: 0 }));
    const person = approvingPerson(idp, 'alice');

    t.is(await hostnameThrough(daemon.uri('unix'), person.auth, { container }), hostname());
    t.is(person.prompts.length, 1);
    const [prompt] = person.prompts;
    t.is(prompt?.type, CredentialType.ECHOPROMPT);
    t.regex(prompt?.prompt ?? '', DEVICE_PROMPT);
    t.true(prompt?.challenge?.startsWith(`${idp.issuer}/device?user_code=`), 'the challenge is verification_uri_complete');
    t.true(prompt?.prompt.includes(new URL(prompt.challenge!).searchParams.get('user_code')!), 'the prompt shows the code the URL carries');
    t.is(prompt?.host, 'localhost');
    t.deepEqual(prompt?.daemons, [], 'asked locally, not relayed');

    await delay(CLI_TOKEN_TTL * 1000 + 500);
    t.is(await hostnameThrough(daemon.uri('unix'), person.auth, { container }), hostname());
    t.is(person.prompts.length, 1, 'no second prompt: the expired token was refreshed');
    t.is(idp.grantCount('refresh_token'), 1);
    t.deepEqual(logins(daemon), [
      ['OAUTHBEARER', 'alice'],
      ['OAUTHBEARER', 'alice'],
    ]);
    assertNoTokenInLogs(t, idp, [daemon]);
  },
);

interopTest('device flow: waiting is bounded, cancellable, and ends when the person refuses the prompt', PEERS, async (t) => {
  const idp = await startIdp(t);
  const daemon = await startDaemon(t, 'virtauthd-oauth', oauthServerSettings(idp));

  // Acknowledged but never approved: the configured bound ends the wait.
  const ignoring: ConnectAuth = { credTypes: [CredentialType.ECHOPROMPT], callback: (creds) => void creds.forEach((c) => (c.result = '')) };
  let started = Date.now();
  const timedOut = await t.throwsAsync(
    hostnameThrough(daemon.uri('unix'), ignoring, { container: oauthClientContainer(personClient(idp, { deviceFlowTimeoutMs: 1500 })) }),
    { instanceOf: VirError },
  );
  t.like(timedOut, { code: ErrorCode.OPERATION_TIMEOUT, domain: ErrorDomain.AUTH });
  t.regex(timedOut?.message ?? '', /nobody completed the sign-in at http:\/\/127\.0\.0\.1:\d+\/device in time/);
  t.true(Date.now() - started < 5000);

  // The application abandons the open.
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 500);
  started = Date.now();
  const aborted = await t.throwsAsync(
    hostnameThrough(daemon.uri('unix'), ignoring, { container: oauthClientContainer(personClient(idp)), signal: controller.signal }),
    { instanceOf: VirError },
  );
  t.is(aborted?.code, ErrorCode.AUTH_CANCELLED);
  t.true(Date.now() - started < 3000);

  // The person says no at the prompt.
  const refusing: ConnectAuth = { credTypes: [CredentialType.ECHOPROMPT], callback: () => false };
  const refused = await t.throwsAsync(
    hostnameThrough(daemon.uri('unix'), refusing, { container: oauthClientContainer(personClient(idp)) }),
    { instanceOf: VirError },
  );
  t.is(refused?.code, ErrorCode.AUTH_FAILED);
  t.regex(refused?.message ?? '', /Failed to collect auth credentials/);
  t.is(idp.grantCount('urn:ietf:params:oauth:grant-type:device_code'), 0);
  t.deepEqual(logins(daemon), []);
});

interopTest(
  'opaque tokens are checked by introspection; a revoked token is refused, and the client then gets a fresh one',
  PEERS,
  async (t) => {
    const idp = await startIdp(t);
    const daemon = await startDaemon(t, 'virtauthd-oauth', oauthServerSettings(idp));
    const serverErrors: unknown[] = [];
    const container = oauthClientContainer(
      machineClient(idp, { clientId: CLIENT.opaqueMachine.id, clientSecret: CLIENT.opaqueMachine.secret }),
      (e) => serverErrors.push(e),
    );

    t.is(await hostnameThrough(daemon.uri('unix'), null, { container }), hostname());
    const [token] = idp.issuedTokens;
    t.is(token?.split('.').length, 1, 'the token is opaque');
    await idp.revoke(CLIENT.opaqueMachine, token!);

    const error = await t.throwsAsync(hostnameThrough(daemon.uri('unix'), null, { container }), { instanceOf: VirError });
    t.like(error, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC }, "the wire error stays libvirt's");
    t.deepEqual(serverErrors, [
      { status: 'invalid_token', scope: REQUIRED_SCOPE, 'openid-configuration': `${idp.issuer}/.well-known/openid-configuration` },
    ]);
    t.regex(failureReasons(daemon)[0] ?? '', /^OAUTHBEARER: invalid_token: http:\/\/127\.0\.0\.1:\d+ reports the token is not active/);

    t.is(await hostnameThrough(daemon.uri('unix'), null, { container }), hostname(), 'the refused token was dropped from the cache');
    t.is(idp.grantCount('client_credentials'), 2);
    t.deepEqual(logins(daemon), [
      ['OAUTHBEARER', 'svc-machine-opaque'],
      ['OAUTHBEARER', 'svc-machine-opaque'],
    ]);
    assertNoTokenInLogs(t, idp, [daemon]);
  },
);

interopTest(
  'refusals: expired token, wrong audience, wrong issuer, missing scope, no token, not a token — each with its RFC 7628 status',
  PEERS,
  async (t) => {
    const signingKey = newSigningKey();
    const idp = await startIdp(t, { signingKey });
    // Same signing key, other issuer: only the `iss` check can tell its tokens apart.
    const rogue = await startIdp(t, { signingKey });
    const daemon = await startDaemon(t, 'virtauthd-oauth', oauthServerSettings(idp));
    const discovery = `${idp.issuer}/.well-known/openid-configuration`;

    const present = async (token: string | null) => {
      const mechanism = new FixedTokenMechanism(token);
      const client = await RawClient.connect(daemon.uri('unix'));
      try {
        await client.authList();
        const error = await t.throwsAsync(
          client.login({ authname: '', passphrase: '', mechanism: 'OAUTHBEARER', mechanisms: () => [mechanism] }),
          { instanceOf: VirError },
        );
        t.like(error, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC });
      } finally {
        client.close();
      }
      return { challenge: mechanism.serverError, reason: failureReasons(daemon).at(-1) ?? '' };
    };

    const short = await idp.clientCredentialsToken(CLIENT.shortLived, { resource: AUDIENCE.virtauthd, scope: REQUIRED_SCOPE });
    await delay(2100);
    const expired = await present(short);
    t.deepEqual(expired.challenge, { status: 'invalid_token', scope: REQUIRED_SCOPE, 'openid-configuration': discovery });
    t.regex(expired.reason, /^OAUTHBEARER: invalid_token: the token expired at /);

    const otherAudience = await present(
      await idp.clientCredentialsToken(CLIENT.machine, { resource: AUDIENCE.other, scope: REQUIRED_SCOPE }),
    );
    t.is(otherAudience.challenge?.status, 'invalid_token');
    t.is(
      otherAudience.reason,
      `OAUTHBEARER: invalid_token: the token's audience (${AUDIENCE.other}) does not include ${AUDIENCE.virtauthd}`,
    );

    const otherIssuer = await present(
      await rogue.clientCredentialsToken(CLIENT.machine, { resource: AUDIENCE.virtauthd, scope: REQUIRED_SCOPE }),
    );
    t.is(otherIssuer.challenge?.status, 'invalid_token');
    t.is(otherIssuer.reason, `OAUTHBEARER: invalid_token: the token was issued by '${rogue.issuer}', not by ${idp.issuer}`);

    const noScope = await present(await idp.clientCredentialsToken(CLIENT.machine, { resource: AUDIENCE.virtauthd }));
    t.deepEqual(noScope.challenge, { status: 'insufficient_scope', scope: REQUIRED_SCOPE, 'openid-configuration': discovery });
    t.is(noScope.reason, `OAUTHBEARER: insufficient_scope: the JWT lacks the scope ${REQUIRED_SCOPE}`);

    // RFC 7628 §4.3: an empty auth value asks the server what it wants.
    const asked = await present(null);
    t.deepEqual(asked.challenge, { status: 'invalid_token', scope: REQUIRED_SCOPE, 'openid-configuration': discovery });
    t.is(asked.reason, 'OAUTHBEARER: invalid_token: the client sent no token (a discovery request)');

    const garbage = await present('not-a-token-at-all');
    t.is(garbage.challenge?.status, 'invalid_token');
    t.regex(garbage.reason, /reports the token is not active/, 'an opaque string goes to introspection, which does not know it');

    t.deepEqual(logins(daemon), []);
    assertNoTokenInLogs(t, idp, [daemon]);
    assertNoTokenInLogs(t, rogue, [daemon]);
  },
);

interopTest(
  'the device flow prompt of a daemon two hops away reaches the client, and the person token is not kept there',
  PEERS,
  async (t) => {
    const idp = await startIdp(t);
    // client -> A -> B -> C: B's remote driver logs in to C with OAUTHBEARER as the person.
    const c = await startDaemon(t, 'virtauthd-c', oauthServerSettings(idp));
    const b = await startDaemon(t, 'virtauthd-b', {
      auth_unix_rw: 'none',
      uri_allowed_list: [c.uri('unix')],
      oauth_client_id: CLIENT.cli.id,
      oauth_client_issuer: idp.issuer,
      oauth_client_grant: 'device_code',
      oauth_client_scope: `openid ${REQUIRED_SCOPE}`,
      oauth_client_resource: AUDIENCE.virtauthd,
      oauth_allow_insecure_http: 1,
    });
    const a = await startDaemon(t, 'virtauthd-a', { auth_unix_rw: 'none', uri_allowed_list: [hopTo(b)] });
    const uri = via(a, via(b, c.uri('unix')));
    const person = approvingPerson(idp, 'alice');
    const relayAudit: unknown[] = [];

    t.is(await hostnameThrough(uri, person.auth, { relayAudit: (r) => relayAudit.push(r) }), hostname());
    t.is(person.prompts.length, 1);
    t.regex(person.prompts[0]!.prompt, DEVICE_PROMPT);
    t.deepEqual(person.prompts[0]!.daemons, ['virtauthd-b', 'virtauthd-a'], 'asked by B, relayed through A');
    t.deepEqual(logins(c), [['OAUTHBEARER', 'alice']]);

    // B holds the person's token for this open only: the next open asks again.
    t.is(await hostnameThrough(uri, person.auth, {}), hostname());
    t.is(person.prompts.length, 2);
    t.deepEqual(logins(c), [
      ['OAUTHBEARER', 'alice'],
      ['OAUTHBEARER', 'alice'],
    ]);

    for (const daemon of [a, b]) {
      t.deepEqual(
        daemon
          .events('relay.audit')
          .map((e) => [e.credentialTypes, e.outcome])
          .slice(0, 1),
        [[['ECHOPROMPT'], 'OK']],
      );
    }
    assertNoTokenInLogs(t, idp, [a, b, c], JSON.stringify(relayAudit));
  },
);

interopTest(
  'a nested driver gets a token for its audience through two hops instead of a password; other audiences are refused',
  PEERS,
  async (t) => {
    const idp = await startIdp(t);
    const b = await startDaemon(t, 'virtauthd-b', { auth_unix_rw: 'none', uri_allowed_list: [TOKEN_HV_ALLOWED] });
    const driver = new TokenHypervisorDriver(idp.issuer);
    b.handle.container.register(DRIVER, { useValue: driver });
    const a = await startDaemon(t, 'virtauthd-a', { auth_unix_rw: 'none', uri_allowed_list: [hopTo(b)] });

    const asked: { audience: string | null; daemons: string[] }[] = [];
    const tokens = createOidcCredentialCallback({ client: machineClient(idp), audiences: ['https://hv.test/*'] });
    const auth: ConnectAuth = {
      credTypes: tokens.credTypes,
      callback: (creds, info) => {
        for (const c of creds) asked.push({ audience: c.challenge, daemons: info.origin.map((h) => h.daemon.split('@')[0]!) });
        return tokens.callback(creds, info);
      },
    };
    const relayAudit: unknown[] = [];

    t.is(await hostnameThrough(via(a, via(b, 'tokenhv:///default')), auth, { relayAudit: (r) => relayAudit.push(r) }), hostname());
    t.deepEqual(asked, [{ audience: `oauth2-token:${AUDIENCE.hypervisor}`, daemons: ['virtauthd-b', 'virtauthd-a'] }]);
    t.is(driver.accepted.length, 1);
    t.like(driver.accepted[0], { aud: AUDIENCE.hypervisor, sub: CLIENT.machine.id, scope: REQUIRED_SCOPE });
    for (const daemon of [a, b]) {
      const audits = daemon.events('relay.audit');
      t.deepEqual(
        audits.map((e) => [e.service, e.host, e.credentialTypes, e.outcome]),
        [['oauth2', 'hv.test', ['EXTERNAL'], 'OK']],
      );
    }

    const evil = 'https://evil.test/collect';
    const refused = await t.throwsAsync(
      hostnameThrough(via(a, via(b, `tokenhv:///default?audience=${encodeURIComponent(evil)}`)), auth, {}),
      { instanceOf: VirError },
    );
    t.is(refused?.code, ErrorCode.AUTH_FAILED);
    t.regex(refused?.message ?? '', /this client does not hand out tokens for https:\/\/evil\.test\/collect/);
    t.is(driver.accepted.length, 1);
    t.deepEqual(b.events('relay.audit').at(-1)?.outcome, 'DENIED');
    assertNoTokenInLogs(t, idp, [a, b], JSON.stringify(relayAudit));
  },
);
