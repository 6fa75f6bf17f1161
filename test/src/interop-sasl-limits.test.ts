// What happens around a SASL login: retrying on the same connection (as libvirtd allows), the
// state after success, failure throttling, the auth timeout, and secrets kept out of the log, of
// error messages and of the user database.

import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';

import test, { type ExecutionContext } from 'ava';

import { CredentialType, ErrorCode, ErrorDomain, VirError, type ConnectAuth } from '@virtauth/core';
import { openAuth } from 'virtauth';

import { PrivateLibvirtd, TestPki, describeResult, interopTest, runProcess, runPythonLibvirt, runVirsh } from './peers/index.js';
import { TestVirtauthd, virtauthBin } from './sasl-support.js';
import { RawClient, describeFailure, type SaslFailure } from './sasl-test-helpers.js';

const alicePassword = 'alice-Pa55-l1m1ts';
const wrongPassword = 'wrong-Pa55-l1m1ts';
const serverRefusal: SaslFailure = {
  code: ErrorCode.AUTH_FAILED,
  domain: ErrorDomain.RPC,
  message: 'authentication failed: authentication failed',
};
const libvirtdPeers = ['root', 'libvirtd', 'saslpasswd2', 'sasl-scram', 'sasl-sasldb'];

async function loginOutcome(client: RawClient, passphrase: string): Promise<SaslFailure | 'ok'> {
  try {
    await client.login({ authname: 'alice', passphrase, mechanism: 'SCRAM-SHA-256' });
    return 'ok';
  } catch (error) {
    return describeFailure(error);
  }
}

async function callOutcome<T>(run: () => Promise<T>): Promise<T | SaslFailure> {
  try {
    return await run();
  } catch (error) {
    return describeFailure(error);
  }
}

/** The same sequence on one connection, whatever the daemon: fail, retry, succeed, then probe. */
async function retrySequence(uri: string): Promise<unknown[]> {
  const client = await RawClient.connect(uri);
  try {
    return [
      await client.authList(),
      await loginOutcome(client, wrongPassword),
      await callOutcome(() => client.openAndGetHostname()),
      await client.authList(),
      await loginOutcome(client, alicePassword),
      // After success the socket's scheme is done: AUTH_LIST says none, a new SASL_INIT is refused.
      await client.authList(),
      await callOutcome(() => client.saslInit()),
      await client.openAndGetHostname(),
    ];
  } finally {
    client.close();
  }
}

interopTest.serial(
  'a failed login can be retried on the same connection, and the state after success, as libvirtd',
  libvirtdPeers,
  async (t) => {
    const users = { alice: alicePassword };
    const [virtauthd, libvirtd] = await Promise.all([
      TestVirtauthd.start({ users }),
      PrivateLibvirtd.start({ auth_unix_rw: 'sasl', saslUsers: users }),
    ]);
    t.teardown(() => virtauthd.stop());
    t.teardown(() => libvirtd.stop());

    const expected = [
      [1],
      serverRefusal,
      { code: ErrorCode.RPC, domain: ErrorDomain.RPC, message: 'authentication required' },
      [1],
      'ok',
      [0],
      serverRefusal,
      hostname(),
    ];
    const [ours, theirs] = await Promise.all([retrySequence(virtauthd.uri()), retrySequence(libvirtd.uri())]);
    t.deepEqual(theirs, expected, 'libvirtd');
    t.deepEqual(ours, expected, 'virtauthd');
  },
);

interopTest.serial(
  'throttling: failure replies are delayed, doubling; the connection closes after sasl_max_failures_per_connection; libvirtd keeps it',
  libvirtdPeers,
  async (t) => {
    const users = { alice: alicePassword };
    const delayMs = 100;
    const [virtauthd, libvirtd] = await Promise.all([
      TestVirtauthd.start({ users, settings: { sasl_max_failures_per_connection: 3, sasl_failure_delay_ms: delayMs } }),
      PrivateLibvirtd.start({ auth_unix_rw: 'sasl', saslUsers: users }),
    ]);
    t.teardown(() => virtauthd.stop());
    t.teardown(() => libvirtd.stop());

    const client = await RawClient.connect(virtauthd.uri());
    t.teardown(() => client.close());
    for (const [attempt, expectedDelay] of [delayMs, 2 * delayMs, 4 * delayMs].entries()) {
      const started = performance.now();
      t.deepEqual(await loginOutcome(client, wrongPassword), serverRefusal, `attempt ${attempt + 1}`);
      const elapsed = performance.now() - started;
      t.true(
        elapsed >= expectedDelay - 5,
        `attempt ${attempt + 1} answered after ${elapsed.toFixed(0)} ms, expected at least ${expectedDelay}`,
      );
      if (attempt < 2) t.false(client.rpc.closed, `still open after ${attempt + 1} failures`);
    }
    t.true(await client.closedWithin(2_000), 'virtauthd hangs up after the third failure');
    t.is(virtauthd.events('auth.sasl.too_many_failures').length, 1);

    // libvirtd has no such limit: the same three failures leave its connection usable.
    const theirs = await RawClient.connect(libvirtd.uri());
    t.teardown(() => theirs.close());
    for (let attempt = 0; attempt < 3; attempt++) t.deepEqual(await loginOutcome(theirs, wrongPassword), serverRefusal);
    t.deepEqual(await theirs.authList(), [1]);
    t.is(await loginOutcome(theirs, alicePassword), 'ok');
  },
);

test.serial(
  'throttling: a user name with sasl_max_failures_per_user recent failures from this source is refused from it even with the right password',
  async (t) => {
    const daemon = await TestVirtauthd.start({
      users: { alice: alicePassword, bob: 'bob-Pa55-l1m1ts' },
      settings: { sasl_max_failures_per_user: 2, sasl_failure_window: 60 },
    });
    t.teardown(() => daemon.stop());
    for (let attempt = 0; attempt < 2; attempt++) {
      const client = await RawClient.connect(daemon.uri());
      t.deepEqual(await loginOutcome(client, wrongPassword), serverRefusal);
      client.close();
    }
    const locked = await RawClient.connect(daemon.uri());
    t.deepEqual(await loginOutcome(locked, alicePassword), serverRefusal, 'alice is locked out from this source (uid 0) for the window');
    locked.close();
    t.regex(String(daemon.events('auth.sasl.failed').at(-1)?.reason), /locked out/);

    const other = await RawClient.connect(daemon.uri());
    await other.login({ authname: 'bob', passphrase: 'bob-Pa55-l1m1ts' });
    t.is(await other.openAndGetHostname(), hostname(), 'other users are not affected');
    other.close();
  },
);

test.serial('auth_timeout: an unauthenticated client is disconnected, an authenticated one is not', async (t) => {
  const daemon = await TestVirtauthd.start({ users: { alice: alicePassword }, settings: { auth_timeout: 1 } });
  t.teardown(() => daemon.stop());

  const idle = await RawClient.connect(daemon.uri());
  const halfway = await RawClient.connect(daemon.uri());
  const authenticated = await RawClient.connect(daemon.uri());
  t.teardown(() => [idle, halfway, authenticated].forEach((c) => c.close()));
  await halfway.authList();
  await halfway.saslInit();
  await authenticated.login({ authname: 'alice', passphrase: alicePassword });

  t.false(await idle.closedWithin(700), 'not before the timeout');
  t.true(await idle.closedWithin(2_000), 'an idle client is dropped');
  t.true(await halfway.closedWithin(2_000), 'a client that started SASL but never finished is dropped');
  t.false(authenticated.rpc.closed);
  t.is(await authenticated.openAndGetHostname(), hostname(), 'the authenticated client is untouched');
  t.is(daemon.events('client.auth_timeout').length, 2);
});

function assertNoSecret(t: ExecutionContext, where: string, text: string, secrets: readonly string[]): void {
  for (const secret of secrets) {
    t.false(text.includes(secret), `a password appears in ${where}`);
    t.false(text.includes(Buffer.from(secret).toString('base64')), `a base64 password appears in ${where}`);
  }
}

interopTest.serial(
  'no password reaches the daemon log (debug level), an error message, the CLI output or the user database',
  ['virsh', 'python3-libvirt', 'sasl-scram', 'certtool'],
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const daemon = await TestVirtauthd.start({ users: { alice: alicePassword }, listenTls: true, listenTcp: true, pki, logLevel: 1 });
    t.teardown(() => daemon.stop());
    const secrets = [alicePassword, wrongPassword];

    // `virtauth passwd add` reports what it did without the password.
    const added = await runProcess(process.execPath, [virtauthBin, 'passwd', 'add', 'carol', '--config', daemon.configFile], {
      input: `${wrongPassword}\n`,
    });
    t.is(added.code, 0, describeResult(added));
    t.regex(added.stderr, /user 'carol' saved in /);
    assertNoSecret(t, 'the output of virtauth passwd add', added.stdout + added.stderr, secrets);

    const errors: string[] = [];
    const auth = (passphrase: string): ConnectAuth => ({
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : passphrase;
      },
    });
    const collect = (error: unknown) => {
      let e: unknown = error;
      while (e instanceof Error) {
        errors.push(`${e.message}\n${e.stack ?? ''}`);
        if (e instanceof VirError) errors.push(JSON.stringify(e));
        e = e.cause;
      }
    };
    for (const mechanism of ['SCRAM-SHA-256', 'PLAIN']) {
      for (const transport of ['unix', 'tls'] as const) {
        const uri = daemon.uri(transport, { auth: `sasl.${mechanism}` });
        await (await openAuth(uri, auth(alicePassword))).close();
        await openAuth(uri, auth(wrongPassword)).then(() => t.fail('a wrong password was accepted'), collect);
        const python = await runPythonLibvirt(uri, { authname: 'alice', passphrase: wrongPassword, commands: ['hostname'] });
        errors.push(JSON.stringify(python));
      }
    }
    await openAuth(daemon.uri('tcp'), auth(wrongPassword)).then(() => t.fail('plain TCP accepted SASL'), collect);
    const virsh = await runVirsh(['hostname'], { uri: daemon.uri(), input: `alice\n${wrongPassword}\n` });
    t.is(virsh.code, 1);
    errors.push(virsh.stderr);
    // PLAIN puts the password itself on the wire, inside the SASL data the daemon decodes.
    const raw = await RawClient.connect(daemon.uri());
    await raw.login({ authname: 'alice', passphrase: wrongPassword, mechanism: 'PLAIN' }).catch(collect);
    raw.close();

    t.true(errors.length >= 10, 'the failures above produced errors to inspect');
    assertNoSecret(t, 'an error message', errors.join('\n'), secrets);
    const log = daemon.logText();
    t.true(
      daemon.events('auth.sasl.failed').length >= 8 && daemon.events('auth.sasl.succeeded').length >= 4,
      'the log recorded the logins',
    );
    t.true(
      daemon.logRecords().some((r) => r.level === 20),
      'debug records were written',
    );
    assertNoSecret(t, "virtauthd's log", log, secrets);
    assertNoSecret(t, 'the user database', await readFile(daemon.userDatabaseFile, 'utf8'), secrets);
  },
);
