// Single sign-on for people, end to end with the real oidc-provider and the real `virtauth` CLI:
// `virtauth login` with the device flow (approved on the IdP's pages) and with the authorization
// code flow + PKCE in a real headless chromium, the token cache that later commands use without
// the IdP, silent refresh, logout with revocation, concurrent logins, and the refusals: a
// tampered cache, a redirect with the wrong state, a replayed code, a token without the scope or
// audience the server wants, an unreachable IdP. No token may appear in any output.

import { chmod, lstat, readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { openAuth } from 'virtauth';

import { AUDIENCE, CLIENT } from './fixtures/oidc-idp.js';
import {
  approveLogin,
  deviceUrlFrom,
  personSetup,
  runCli,
  startBrowser,
  startCli,
  startCliWithSkewedClock,
  type PersonSetup,
} from './login-support.js';
import { approvingPerson, assertNoTokenInLogs, oauthServerSettings, startDaemon, startIdp } from './oidc-support.js';
import { delay, freePort, interopTest } from './peers/index.js';
import type { TestIdp } from './fixtures/oidc-idp.js';
import type { TestVirtauthd } from './sasl-support.js';

const PEERS = ['oidc-provider'];
const BROWSER_PEERS = ['oidc-provider', 'chromium'];
/** Long enough for any number of commands to share one token, however loaded the machine. */
const LONG_TTL = 300;

/** Every output of the CLI in a test, to look for tokens in. */
class Outputs {
  text = '';
  add<R extends { stdout: string; stderr: string }>(r: R): R {
    this.text += `${r.stdout}\n${r.stderr}\n`;
    return r;
  }
}

async function cacheFiles(setup: PersonSetup): Promise<string[]> {
  return (await readdir(setup.cacheDir)).filter((f) => f.endsWith('.json')).map((f) => join(setup.cacheDir, f));
}

/** The tokens in the cache file, read the way an attacker with the file would. */
async function cachedTokens(file: string): Promise<{ accessToken: string; refreshToken: string | null }[]> {
  const { body } = JSON.parse(await readFile(file, 'utf8')) as { body: string };
  return Object.values((JSON.parse(body) as { tokens: Record<string, { accessToken: string; refreshToken: string | null }> }).tokens);
}

async function deviceLogin(
  t: ExecutionContext,
  idp: TestIdp,
  setup: PersonSetup,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cli = startCli(t, ['--config', setup.config, 'login'], setup.env);
  const code = await approveLogin(idp, cli);
  return { code, stdout: cli.stdout, stderr: cli.stderr };
}

function hostnameCli(t: ExecutionContext, setup: PersonSetup, daemon: TestVirtauthd, prompt = false) {
  return runCli(t, ['--config', setup.config, ...(prompt ? [] : ['--no-prompt']), '-c', daemon.uri('unix'), 'hostname'], setup.env);
}

function successfulLogins(daemon: TestVirtauthd): unknown[] {
  return daemon.events('auth.sasl.succeeded').map((e) => e.user);
}

interopTest(
  'virtauth login (device flow, approved on the IdP pages): commands use the cached token without the IdP, refresh it silently, and logout revokes it',
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
    const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
    const setup = await personSetup(idp);
    const out = new Outputs();

    const login = out.add(await deviceLogin(t, idp, setup));
    t.is(login.code, 0, login.stderr);
    t.regex(login.stdout, /^Signed in to http:\/\/127\.0\.0\.1:\d+ as alice; the token expires \d{4}-\d\d-\d\dT/);
    const [file] = await cacheFiles(setup);
    t.truthy(file, 'a cache file was written');
    t.is((await lstat(file!)).mode & 0o777, 0o600);
    t.is((await lstat(setup.cacheDir)).mode & 0o777, 0o700);

    const before = idp.tokenEndpointRequests;
    for (let i = 0; i < 2; i++) {
      const run = out.add(await hostnameCli(t, setup, daemon));
      t.is(run.code, 0, run.stderr);
      t.is(run.stdout, `${hostname()}\n\n`);
    }
    t.is(idp.tokenEndpointRequests, before, 'no request reached the IdP: the cached token was used');
    t.deepEqual(successfulLogins(daemon), ['alice', 'alice']);

    const status = out.add(await runCli(t, ['--config', setup.config, 'auth', 'status'], setup.env));
    t.is(status.code, 0);
    t.regex(status.stdout, /user: alice\n/);
    t.regex(status.stdout, /expires: \d{4}-.*renewed silently with a refresh token/);
    t.regex(status.stdout, /scopes: .*libvirt/);
    t.true(status.stdout.includes(`resource: ${AUDIENCE.virtauthd}`));

    // A sign-in whose token lives 2 s; once it has expired, the next command refreshes it without
    // asking (and gets a long-lived one, so that a loaded machine cannot let it expire in transit).
    idp.personTokenTtl = 2;
    t.is(out.add(await deviceLogin(t, idp, setup)).code, 0);
    await delay(2000 + 300);
    idp.personTokenTtl = LONG_TTL;
    const deviceGrants = idp.grantCount('urn:ietf:params:oauth:grant-type:device_code');
    const refreshed = out.add(await hostnameCli(t, setup, daemon));
    t.is(refreshed.code, 0, refreshed.stderr);
    t.is(idp.grantCount('refresh_token'), 1);
    t.is(idp.grantCount('urn:ietf:params:oauth:grant-type:device_code'), deviceGrants, 'no new sign-in');

    const [stored] = await cachedTokens(file!);
    const logout = out.add(await runCli(t, ['--config', setup.config, 'logout'], setup.env));
    t.is(logout.code, 0, logout.stderr);
    t.regex(logout.stdout, /^Signed out of http:\/\/127\.0\.0\.1:\d+ \(revoked 1 token\(s\)\)\n$/);
    // The refresh token; the JWT access token cannot be revoked at this IdP (unsupported_token_type) and expires.
    t.is(idp.revocations, 1);
    t.deepEqual(await cacheFiles(setup), [], 'the cache file is gone');
    const reuse = await idp.tokenRequest(CLIENT.cli, { grant_type: 'refresh_token', refresh_token: stored!.refreshToken! });
    t.is(reuse.status, 400, 'the revoked refresh token is refused by the IdP');

    const after = out.add(await hostnameCli(t, setup, daemon));
    t.is(after.code, 1);
    t.regex(after.stderr, /not signed in at http:\/\/127\.0\.0\.1:\d+, or the sign-in has expired; run: virtauth login --issuer http/);
    t.regex(
      out.add(await runCli(t, ['--config', setup.config, 'auth', 'status'], setup.env)).stdout,
      /not signed in \(run virtauth login\)/,
    );
    t.false(out.text.includes(stored!.refreshToken!), 'no refresh token in any output');
    assertNoTokenInLogs(t, idp, [daemon], out.text);
  },
);

interopTest(
  'virtauth login in a real browser (authorization code + PKCE, loopback redirect): chromium signs in and consents, then virtauth hostname works from the cache',
  BROWSER_PEERS,
  async (t) => {
    const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
    const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
    const setup = await personSetup(idp, { oidc_test_flow: '"browser"' });
    const browser = await startBrowser(t);
    const out = new Outputs();

    const cli = startCli(t, ['--config', setup.config, 'login', '--no-browser'], setup.env);
    const [, url] = await cli.waitFor(/open this address in a browser on this machine:\n(\S+)\n/);
    const authorization = new URL(url!);
    t.is(authorization.searchParams.get('code_challenge_method'), 'S256');
    t.is(authorization.searchParams.get('client_id'), CLIENT.cli.id);
    t.regex(authorization.searchParams.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    const redirect = await browser.signIn(url!, 'alice');
    t.true(redirect.startsWith(authorization.searchParams.get('redirect_uri')!));
    t.is(await cli.exited, 0, cli.stderr);
    out.add(cli);
    t.regex(cli.stdout, /^Signed in to http:\/\/127\.0\.0\.1:\d+ as alice; /);
    t.is(idp.grantCount('authorization_code'), 1);

    const before = idp.tokenEndpointRequests;
    const run = out.add(await hostnameCli(t, setup, daemon));
    t.is(run.code, 0, run.stderr);
    t.is(run.stdout, `${hostname()}\n\n`);
    t.is(idp.tokenEndpointRequests, before, 'the cached token was used');
    t.deepEqual(successfulLogins(daemon), ['alice']);
    assertNoTokenInLogs(t, idp, [daemon], out.text);
  },
);

interopTest(
  'the loopback listener refuses a redirect with the wrong state and a replayed code; the sign-in still completes once',
  BROWSER_PEERS,
  async (t) => {
    const idp = await startIdp(t);
    const setup = await personSetup(idp, { oidc_test_flow: '"browser"' });
    const browser = await startBrowser(t);

    const cli = startCli(t, ['--config', setup.config, 'login', '--no-browser'], setup.env);
    const [, url] = await cli.waitFor(/open this address in a browser on this machine:\n(\S+)\n/);
    const redirectUri = new URL(url!).searchParams.get('redirect_uri')!;

    const forged = await fetch(`${redirectUri}?code=forged-code&state=not-the-state`);
    t.is(forged.status, 400);
    t.regex(await forged.text(), /wrong state/);
    const stateless = await fetch(`${redirectUri}?code=forged-code`);
    t.is(stateless.status, 400);

    // The browser's redirect is held back and delivered by the test: twice.
    const redirect = await browser.signIn(url!, 'alice', { intercept: true });
    const first = await fetch(redirect);
    t.is(first.status, 200);
    const replay = await fetch(redirect).then(
      (r) => r.status,
      () => 'connection refused',
    );
    t.not(replay, 200, 'the replayed code is refused');
    t.is(await cli.exited, 0, cli.stderr);
    t.is(idp.grantCount('authorization_code'), 1, 'the code was exchanged once');
    t.deepEqual(idp.failedGrants, [], 'the forged code never reached the IdP');
  },
);

interopTest(
  'a command that finds no valid token runs the sign-in on the terminal, and leaves the token for the next command',
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
    const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
    const setup = await personSetup(idp);

    const first = startCli(t, ['--config', setup.config, '-c', daemon.uri('unix'), 'hostname'], setup.env);
    t.is(await approveLogin(idp, first), 0, first.stderr);
    t.is(first.stdout, `${hostname()}\n\n`, 'the prompt went to stderr, the answer to stdout');
    const before = idp.tokenEndpointRequests;
    const second = await hostnameCli(t, setup, daemon);
    t.is(second.code, 0, second.stderr);
    t.is(idp.tokenEndpointRequests, before);
    assertNoTokenInLogs(t, idp, [daemon], `${first.output}${second.stdout}${second.stderr}`);
  },
);

interopTest(
  'a sign-in the IdP refused (error on the redirect, with its state) ends virtauth login with the reason, made printable',
  PEERS,
  async (t) => {
    const idp = await startIdp(t);
    const setup = await personSetup(idp, { oidc_test_flow: '"browser"' });
    const cli = startCli(t, ['--config', setup.config, 'login', '--no-browser'], setup.env);
    const [, url] = await cli.waitFor(/open this address in a browser on this machine:\n(\S+)\n/);
    const authorization = new URL(url!);
    const refusal = new URL(authorization.searchParams.get('redirect_uri')!);
    refusal.search = new URLSearchParams({
      error: 'access_denied',
      error_description: 'denied \u001b[31mby policy',
      state: authorization.searchParams.get('state')!,
    }).toString();
    t.is((await fetch(refusal)).status, 200);
    t.is(await cli.exited, 1);
    t.regex(
      cli.stderr,
      /the sign-in at http:\/\/127\.0\.0\.1:\d+ was refused: access_denied \(denied \?\[31mby policy\); run virtauth login again/,
    );
    t.is(idp.tokenEndpointRequests, 0);
  },
);

interopTest('two virtauth login processes at once both finish, and leave one valid cache', PEERS, async (t) => {
  const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
  const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
  const setup = await personSetup(idp);

  const clis = [0, 1].map(() => startCli(t, ['--config', setup.config, 'login'], setup.env));
  const urls = await Promise.all(clis.map((c) => deviceUrlFrom(c)));
  await Promise.all(urls.map((u) => idp.approveDevice(u, 'alice')));
  t.deepEqual(await Promise.all(clis.map((c) => c.exited)), [0, 0]);
  t.is((await cacheFiles(setup)).length, 1);

  const before = idp.tokenEndpointRequests;
  const status = await runCli(t, ['--config', setup.config, 'auth', 'status'], setup.env);
  t.regex(status.stdout, /user: alice\n/);
  const run = await hostnameCli(t, setup, daemon);
  t.is(run.code, 0, run.stderr);
  t.is(idp.tokenEndpointRequests, before);
});

interopTest('a tampered token cache, or one readable by others, is refused and never sent', PEERS, async (t) => {
  const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
  const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
  const setup = await personSetup(idp);
  t.is((await deviceLogin(t, idp, setup)).code, 0);
  const [file] = await cacheFiles(setup);
  const original = await readFile(file!, 'utf8');

  // One character of the body changed (its expiry pushed a day on): the seal no longer matches.
  const outer = JSON.parse(original) as { body: string; seal: string };
  await writeFile(
    file!,
    JSON.stringify({ ...outer, body: outer.body.replace(/"expiresAt":(\d)/, (_m, d: string) => `"expiresAt":${(Number(d) + 1) % 10}`) }),
    { mode: 0o600 },
  );
  const status = await runCli(t, ['--config', setup.config, 'auth', 'status'], setup.env);
  t.regex(status.stdout, /not signed in: the token cache \S+ was changed outside virtauth \(its seal does not match\)/);
  const refused = await hostnameCli(t, setup, daemon);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /not signed in at http:\/\/127\.0\.0\.1:\d+, or the sign-in has expired; run: virtauth login/);

  await writeFile(file!, original, { mode: 0o600 });
  await chmod(file!, 0o644);
  t.regex(
    (await runCli(t, ['--config', setup.config, 'auth', 'status'], setup.env)).stdout,
    /is accessible to others \(mode 0644, must be 0600\)/,
  );
  t.is((await hostnameCli(t, setup, daemon)).code, 1);

  await chmod(file!, 0o600);
  const restored = await hostnameCli(t, setup, daemon);
  t.is(restored.code, 0, restored.stderr);
  t.deepEqual(successfulLogins(daemon), ['alice'], 'only the intact cache was ever used');
});

interopTest('errors a person can act on: the scope and the audience the server wanted, an unreachable IdP', PEERS, async (t) => {
  const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
  const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));

  const noScope = await personSetup(idp, { oidc_test_scopes: '"openid offline_access"' });
  t.is((await deviceLogin(t, idp, noScope)).code, 0);
  const scopeError = await hostnameCli(t, noScope, daemon);
  t.is(scopeError.code, 1);
  t.regex(
    scopeError.stderr,
    /the server localhost refused the token from http:\/\/127\.0\.0\.1:\d+ \(insufficient_scope\): it wants the scope\(s\) 'libvirt', and this login asked for 'openid offline_access'; add them to oidc_test_scopes and run virtauth login/,
  );

  const otherAudience = await personSetup(idp, { oidc_test_resource: `"${AUDIENCE.other}"` });
  t.is((await deviceLogin(t, idp, otherAudience)).code, 0);
  const audienceError = await hostnameCli(t, otherAudience, daemon);
  t.is(audienceError.code, 1);
  t.regex(
    audienceError.stderr,
    /\(invalid_token\): the token is not valid there: issued for another audience \(this login asks for resource 'https:\/\/other\.test\/api'; set oidc_test_resource to the server's\)/,
  );

  const unreachable = await personSetup(idp, { oidc_test_issuer: `"http://127.0.0.1:${await freePort()}"` });
  const down = await runCli(t, ['--config', unreachable.config, 'login'], unreachable.env);
  t.is(down.code, 1);
  t.regex(down.stderr, /the identity provider cannot be reached \(ECONNREFUSED\); check the issuer URL and the network/);

  const bad = await personSetup(idp, { oidc_test_isuer: '"https://typo.example"' });
  const typo = await runCli(t, ['--config', bad.config, 'auth', 'status'], bad.env);
  t.is(typo.code, 1);
  t.regex(typo.stderr, /unknown key 'oidc_test_isuer'/);
  // Logout while the IdP is down: forgotten here, and told that the IdP still honours the tokens.
  const stranded = await personSetup(idp);
  t.is((await deviceLogin(t, idp, stranded)).code, 0);
  await idp.stop();
  const unreachableLogout = await runCli(t, ['--config', stranded.config, 'logout'], stranded.env);
  t.is(unreachableLogout.code, 1);
  t.regex(
    unreachableLogout.stderr,
    /the tokens were forgotten here, but revoking them failed, so they stay valid at the IdP until they expire: .*cannot be reached \(ECONNREFUSED\)/,
  );
  t.deepEqual(await cacheFiles(stranded), []);
  assertNoTokenInLogs(t, idp, [daemon], `${scopeError.stderr}${audienceError.stderr}${unreachableLogout.stderr}`);
});

interopTest('clock skew: a clock minutes off gets a warning at login; hours off, an error that says to set the clock', PEERS, async (t) => {
  const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
  const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
  const setup = await personSetup(idp);

  const ahead = startCliWithSkewedClock(t, 10 * 60_000, ['--config', setup.config, 'login'], setup.env);
  t.is(await approveLogin(idp, ahead), 0, ahead.stderr);
  t.regex(
    ahead.stderr,
    /warning: this machine's clock is (59\d|6\d\d) s ahead of the clock of http:\/\/127\.0\.0\.1:\d+; servers may refuse its tokens/,
  );
  // Expiry is kept by the lifetime the IdP gave, so the token serves the (correct-clocked) server.
  t.is((await hostnameCli(t, setup, daemon)).code, 0);

  const far = await personSetup(idp);
  const hours = startCliWithSkewedClock(t, 2 * 3600_000, ['--config', far.config, 'login'], far.env);
  t.is(await approveLogin(idp, hours), 1);
  t.regex(
    hours.stderr,
    /the ID token's times do not fit this machine's clock, which is off by about 7\d\d\d s \(ahead of the identity provider\); set the clock right \(NTP, timedatectl\)/,
  );
});

interopTest(
  "the library: openAuth(uri, { oidc }) signs in through the application's callback, and a later open reuses the cached token",
  PEERS,
  async (t) => {
    const idp = await startIdp(t, { personTokenTtl: LONG_TTL });
    const daemon = await startDaemon(t, 'virtauthd-sso', oauthServerSettings(idp));
    const setup = await personSetup(idp);
    const provider = {
      name: 'corp',
      issuer: idp.issuer,
      clientId: CLIENT.cli.id,
      scopes: 'openid offline_access libvirt',
      resource: AUDIENCE.virtauthd,
      flow: 'device' as const,
      allowInsecureHttp: true,
    };
    const person = approvingPerson(idp, 'alice');

    const conn = await openAuth(daemon.uri('unix'), { auth: person.auth, oidc: { providers: [provider], tokenCacheDir: setup.cacheDir } });
    t.is(await conn.getHostname(), hostname());
    await conn.close();
    t.is(person.prompts.length, 1, 'the device prompt reached the callback');

    const before = idp.tokenEndpointRequests;
    // This time from the client config file, which names the same provider and cache.
    const again = await openAuth(daemon.uri('unix'), { oidc: { configFile: setup.config } });
    t.is(await again.getHostname(), hostname());
    await again.close();
    t.is(idp.tokenEndpointRequests, before, 'a new session found the token in the cache');
    t.deepEqual(successfulLogins(daemon), ['alice', 'alice']);
  },
);
