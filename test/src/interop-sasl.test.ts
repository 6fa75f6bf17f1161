// SASL (SCRAM-SHA-256) and TLS proven against real libvirt, in both directions: virsh and
// python3-libvirt (Cyrus SASL, GnuTLS) against virtauthd, and virtauth's client against a private
// libvirtd with a sasldb. Wherever both daemons can face the same client, they are asked the same
// thing and their answers are compared side by side.

import { readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { CredentialType, RemoteProc, ErrorCode, ErrorDomain, VirError, type ConnectAuth, type Credential } from '@virtauth/core';
import { openAuth } from 'virtauth';

import {
  PrivateLibvirtd,
  TestPki,
  describeResult,
  interopTest,
  runProcess,
  runPythonLibvirt,
  runVirsh,
  tempDir,
  type PythonLibvirtResult,
} from './peers/index.js';
import { TestVirtauthd, virtauthBin } from './sasl-support.js';
import { failingStep, saslInitOutcome, type SaslFailure } from './sasl-test-helpers.js';

const alicePassword = 'alice-Pa55-7e1c9';
const bobPassword = 'bob-Pa55-93af2';
const wrongPassword = 'wrong-Pa55-0d4b6';
const secrets = [alicePassword, bobPassword, wrongPassword];

/** Real libvirt clients (Cyrus SASL's SCRAM plugin inside) and TestPki. */
const clientPeers = ['virsh', 'python3-libvirt', 'sasl-scram', 'certtool'];
/** ... and a private libvirtd with a sasldb. */
const saslPeers = [...clientPeers, 'root', 'libvirtd', 'saslpasswd2', 'sasl-sasldb'];

/** What libvirt's clients report for every SASL failure a server signals. */
const serverRefusal: SaslFailure = {
  code: ErrorCode.AUTH_FAILED,
  domain: ErrorDomain.RPC,
  message: 'authentication failed: authentication failed',
};

/** The credentials Cyrus SASL asks for SCRAM, in one callback; virtauth's client asks the same. */
const scramCredentialRequest = [
  [
    { type: 'AUTHNAME', prompt: 'Please enter your authentication name', challenge: 'Authentication Name', defresult: null },
    { type: 'PASSPHRASE', prompt: 'Please enter your password', challenge: 'Password', defresult: null },
  ],
];

function assertNoSecret(t: ExecutionContext, where: string, text: string): void {
  for (const secret of secrets) t.false(text.includes(secret), `a password appears in ${where}`);
}

function openFailure(result: PythonLibvirtResult): SaslFailure | string {
  if (result.ok) return `unexpectedly opened: ${JSON.stringify(result)}`;
  if (result.stage !== 'open') return `failed at ${result.stage}, not at open: ${JSON.stringify(result)}`;
  return result.error;
}

async function writeAuthFile(t: ExecutionContext, text: string): Promise<string> {
  const dir = await tempDir('va');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'auth.conf');
  await writeFile(file, text, { mode: 0o600 });
  return file;
}

/** A callback for openAuth that records every call and answers from `answers`. */
function recordingAuth(answers: { authname?: string; passphrase?: string }): { auth: ConnectAuth; calls: Credential[][] } {
  const calls: Credential[][] = [];
  const auth: ConnectAuth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      calls.push(creds.map((c) => ({ ...c })));
      for (const c of creds) {
        if (c.type === CredentialType.AUTHNAME && answers.authname !== undefined) c.result = answers.authname;
        if (c.type === CredentialType.PASSPHRASE && answers.passphrase !== undefined) c.result = answers.passphrase;
      }
    },
  };
  return { auth, calls };
}

const credentialShape = (calls: Credential[][]) =>
  calls.map((call) => call.map((c) => ({ type: c.type, prompt: c.prompt, challenge: c.challenge })));

// ---------------------------------------------------------------------------------------------
// Real libvirt clients against virtauthd

interopTest.serial(
  'virsh and python3-libvirt log in to virtauthd with SCRAM-SHA-256 over unix and TLS (users made by `virtauth passwd add`)',
  clientPeers,
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const daemon = await TestVirtauthd.start({ users: { alice: alicePassword }, listenTls: true, pki });
    t.teardown(() => daemon.stop());

    // The user database is the one `virtauth passwd` manages through the daemon's config file.
    const listed = await runProcess(process.execPath, [virtauthBin, 'passwd', 'list', '--config', daemon.configFile]);
    t.is(listed.code, 0, describeResult(listed));
    t.is(listed.stdout, 'alice\n');

    const authFile = await writeAuthFile(
      t,
      `[credentials-peer]\nauthname=alice\npassword=${alicePassword}\n[auth-libvirt-localhost]\ncredentials=peer\n`,
    );
    for (const transport of ['unix', 'tls'] as const) {
      const uri = daemon.uri(transport);
      const before = daemon.events('auth.sasl.succeeded').length;

      const viaAuthFile = await runVirsh(['hostname'], { uri, env: { LIBVIRT_AUTH_FILE: authFile } });
      t.is(viaAuthFile.code, 0, `${transport}: ${describeResult(viaAuthFile)}\n${daemon.logText()}`);
      t.is(viaAuthFile.stdout.trim(), hostname());

      const listing = await runVirsh(['list', '--all'], { uri, env: { LIBVIRT_AUTH_FILE: authFile } });
      t.is(listing.code, 0, describeResult(listing));
      t.regex(listing.stdout, /^\s*1\s+test\s+running\s*$/m, `${transport}: ${listing.stdout}`);

      const prompted = await runVirsh(['hostname'], { uri, input: `alice\n${alicePassword}\n` });
      t.is(prompted.code, 0, describeResult(prompted));
      t.is(prompted.stdout, `Please enter your authentication name: Please enter your password: ${hostname()}\n`);

      const python = await runPythonLibvirt(uri, { authname: 'alice', passphrase: alicePassword, commands: ['hostname', 'list'] });
      t.true(python.ok, JSON.stringify(python));
      if (python.ok) {
        t.is(python.hostname, hostname());
        t.deepEqual(
          python.domains?.map((d) => [d.name, d.state]),
          [['test', 1]],
        );
      }
      t.deepEqual(python.credentialRequests, scramCredentialRequest, 'asked once, for AUTHNAME and PASSPHRASE');

      // Cyrus cannot do channel binding for libvirt, so over TLS too it picks plain SCRAM-SHA-256.
      const logins = daemon.events('auth.sasl.succeeded').slice(before);
      t.deepEqual(
        logins.map((r) => [r.mechanism, r.user]),
        Array(4).fill(['SCRAM-SHA-256', 'alice']),
        transport,
      );
    }
    assertNoSecret(t, "virtauthd's log", daemon.logText());
    assertNoSecret(t, 'the user database', await readFile(daemon.userDatabaseFile, 'utf8'));
  },
);

interopTest.serial(
  'virtauthd and libvirtd, side by side: same prompts for python3-libvirt; wrong password, unknown user and a user outside the allow list fail identically',
  saslPeers,
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const users = { alice: alicePassword, bob: bobPassword };
    const [virtauthd, libvirtd] = await Promise.all([
      TestVirtauthd.start({ users, listenTls: true, pki, settings: { sasl_allowed_username_list: ['alice'] } }),
      PrivateLibvirtd.start({
        auth_unix_rw: 'sasl',
        listenTls: true,
        auth_tls: 'sasl',
        tls: pki,
        saslUsers: users,
        allowedUsernames: ['alice'],
      }),
    ]);
    t.teardown(() => virtauthd.stop());
    t.teardown(() => libvirtd.stop());

    for (const transport of ['unix', 'tls'] as const) {
      const daemons = [
        { name: 'virtauthd', uri: virtauthd.uri(transport) },
        { name: 'libvirtd', uri: libvirtd.uri('test:///default', transport) },
      ];
      const accepted = await Promise.all(
        daemons.map((d) => runPythonLibvirt(d.uri, { authname: 'alice', passphrase: alicePassword, commands: ['hostname'] })),
      );
      for (const [i, result] of accepted.entries()) t.true(result.ok, `${daemons[i]!.name} over ${transport}: ${JSON.stringify(result)}`);
      t.deepEqual(accepted[0]!.credentialRequests, accepted[1]!.credentialRequests, `${transport}: virtauthd asks what libvirtd asks`);
      t.deepEqual(accepted[0]!.credentialRequests, scramCredentialRequest);

      const cases = [
        { what: 'wrong password', authname: 'alice', passphrase: wrongPassword },
        { what: 'unknown user', authname: 'mallory', passphrase: alicePassword },
        { what: 'user outside sasl_allowed_username_list', authname: 'bob', passphrase: bobPassword },
      ];
      for (const failure of cases) {
        const results = await Promise.all(
          daemons.map((d) =>
            runPythonLibvirt(d.uri, { authname: failure.authname, passphrase: failure.passphrase, commands: ['hostname'] }),
          ),
        );
        const [ours, theirs] = results.map(openFailure);
        t.deepEqual(ours, serverRefusal, `virtauthd, ${failure.what} over ${transport}`);
        t.deepEqual(theirs, serverRefusal, `libvirtd, ${failure.what} over ${transport}`);
        t.deepEqual(results[0]!.credentialRequests, results[1]!.credentialRequests, `${failure.what}: the same questions before failing`);

        // On the wire, both refuse at the same procedure (unknown user at START, the others at STEP).
        const steps = await Promise.all(daemons.map((d) => failingStep(d.uri, failure.authname, failure.passphrase)));
        t.deepEqual(steps[0], steps[1], `${failure.what} over ${transport}: refused at the same step`);
        t.is(steps[0]?.proc, failure.what === 'unknown user' ? RemoteProc.AUTH_SASL_START : RemoteProc.AUTH_SASL_STEP, failure.what);

        // virsh shows the same text from either daemon.
        const virshResults = await Promise.all(
          daemons.map((d) => runVirsh(['hostname'], { uri: d.uri, input: `${failure.authname}\n${failure.passphrase}\n` })),
        );
        for (const [i, result] of virshResults.entries()) {
          t.is(result.code, 1, `${daemons[i]!.name}: ${describeResult(result)}`);
          t.regex(result.stderr, /error: authentication failed: authentication failed/, daemons[i]!.name);
        }
      }
    }
    const reasons = virtauthd.events('auth.sasl.failed').map((r) => r.reason as string);
    t.true(
      reasons.some((r) => r.includes('invalid-proof')),
      reasons.join('\n'),
    );
    t.true(
      reasons.some((r) => r.includes('unknown-user')),
      reasons.join('\n'),
    );
    t.true(
      reasons.some((r) => r.includes('sasl_allowed_username_list')),
      reasons.join('\n'),
    );
    assertNoSecret(t, "virtauthd's log", virtauthd.logText());
  },
);

interopTest.serial('plain TCP: virtauthd refuses SASL at AUTH_SASL_INIT with 45/7, as libvirtd does', saslPeers, async (t) => {
  const users = { alice: alicePassword };
  const [virtauthd, libvirtd] = await Promise.all([
    TestVirtauthd.start({ users, listenTcp: true }),
    PrivateLibvirtd.start({ auth_unix_rw: 'sasl', listenTcp: true, auth_tcp: 'sasl', saslUsers: users }),
  ]);
  t.teardown(() => virtauthd.stop());
  t.teardown(() => libvirtd.stop());
  const uris = [virtauthd.uri('tcp'), libvirtd.uri('test:///default', 'tcp')];

  // On the wire: AUTH_LIST offers SASL, then AUTH_SASL_INIT is refused.
  const wire = await Promise.all(uris.map((uri) => saslInitOutcome(uri)));
  t.deepEqual(wire, [
    { authList: [1], failure: serverRefusal },
    { authList: [1], failure: serverRefusal },
  ]);
  // The C client, which asks the server first, sees the same error from both.
  const python = await Promise.all(
    uris.map((uri) => runPythonLibvirt(uri, { authname: 'alice', passphrase: alicePassword, commands: ['hostname'] })),
  );
  t.deepEqual(python.map(openFailure), [serverRefusal, serverRefusal]);
  t.true(virtauthd.events('auth.sasl.failed').some((r) => String(r.reason).includes('insecure channel')));
});

// ---------------------------------------------------------------------------------------------
// virtauth's client against a real libvirtd

interopTest.serial(
  'the virtauth client logs in to a real libvirtd (cyrus sasldb, SCRAM-SHA-256) over unix and TLS: CLI and openAuth',
  saslPeers,
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const users = { alice: alicePassword, bob: bobPassword };
    const libvirtd = await PrivateLibvirtd.start({
      auth_unix_rw: 'sasl',
      listenTls: true,
      auth_tls: 'sasl',
      tls: pki,
      saslUsers: users,
      allowedUsernames: ['alice'],
    });
    t.teardown(() => libvirtd.stop());
    const cliEnv = (extra: NodeJS.ProcessEnv = {}) => ({ ...process.env, LC_ALL: 'C', LIBVIRT_AUTH_FILE: '', ...extra });

    for (const transport of ['unix', 'tls'] as const) {
      const uri = libvirtd.uri('test:///default', transport);

      const prompted = await runProcess(process.execPath, [virtauthBin, '-c', uri, 'hostname'], {
        input: `alice\n${alicePassword}\n`,
        env: cliEnv(),
      });
      t.is(prompted.code, 0, `${transport}: ${describeResult(prompted)}\n${await libvirtd.logText()}`);
      // Like virsh without --quiet: the answer, then an empty line.
      t.is(prompted.stdout, `Please enter your authentication name: Please enter your password: ${hostname()}\n\n`);
      const listing = await runProcess(process.execPath, [virtauthBin, '-c', uri, 'list', '--all'], {
        input: `alice\n${alicePassword}\n`,
        env: cliEnv(),
      });
      t.is(listing.code, 0, describeResult(listing));
      t.regex(listing.stdout, /^\s*1\s+test\s+running\s*$/m);
      const refusedCli = await runProcess(process.execPath, [virtauthBin, '-c', uri, 'hostname'], {
        input: `alice\n${wrongPassword}\n`,
        env: cliEnv(),
      });
      t.is(refusedCli.code, 1, describeResult(refusedCli));
      t.regex(refusedCli.stderr, /error: authentication failed: authentication failed/);
      assertNoSecret(t, 'the CLI output', refusedCli.stdout + refusedCli.stderr);

      const { auth, calls } = recordingAuth({ authname: 'alice', passphrase: alicePassword });
      const conn = await openAuth(uri, auth);
      try {
        t.is(await conn.getHostname(), hostname());
        t.deepEqual(
          (await conn.listAllDomains(0)).map((d) => d.name),
          ['test'],
        );
      } finally {
        await conn.close();
      }
      t.deepEqual(credentialShape(calls), [
        [
          { type: CredentialType.AUTHNAME, prompt: 'Please enter your authentication name', challenge: 'Authentication Name' },
          { type: CredentialType.PASSPHRASE, prompt: 'Please enter your password', challenge: 'Password' },
        ],
      ]);

      // Each refusal is libvirtd's own error, typed.
      for (const [authname, passphrase] of [
        ['alice', wrongPassword],
        ['mallory', alicePassword],
        ['bob', bobPassword],
      ] as const) {
        const error = await t.throwsAsync(openAuth(uri, recordingAuth({ authname, passphrase }).auth), { instanceOf: VirError });
        t.like(
          error,
          { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, message: 'authentication failed: authentication failed' },
          `${authname} over ${transport}`,
        );
        assertNoSecret(t, 'an error message', `${error?.message} ${String(error?.cause ?? '')}`);
      }
    }
  },
);

interopTest.serial("auth=sasl.MECH and auth.conf: virtauth behaves as libvirt's client against the same libvirtd", saslPeers, async (t) => {
  const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'sasl', saslUsers: { alice: alicePassword } });
  t.teardown(() => libvirtd.stop());
  const uriWith = (params: Record<string, string>) => libvirtd.uri('test:///default', 'unix', params);

  const forced = recordingAuth({ authname: 'alice', passphrase: alicePassword });
  const conn = await openAuth(uriWith({ auth: 'sasl.SCRAM-SHA-256' }), forced.auth);
  t.is(await conn.getHostname(), hostname());
  await conn.close();

  // An unknown mechanism fails on the client, before any credential is asked, in both clients.
  const nope = recordingAuth({ authname: 'alice', passphrase: alicePassword });
  const ours = await t.throwsAsync(openAuth(uriWith({ auth: 'sasl.NOPE' }), nope.auth), { instanceOf: VirError });
  t.like(ours, {
    code: ErrorCode.AUTH_FAILED,
    domain: ErrorDomain.REMOTE,
    message: 'authentication failed: SASL mechanism NOPE not supported by server',
  });
  t.deepEqual(nope.calls, []);
  const theirs = await runPythonLibvirt(uriWith({ auth: 'sasl.NOPE' }), {
    authname: 'alice',
    passphrase: alicePassword,
    commands: ['hostname'],
  });
  t.deepEqual(
    openFailure(theirs),
    { code: ours!.code, domain: ours!.domain, message: ours!.message },
    'python3-libvirt reports the same error',
  );
  t.deepEqual(theirs.credentialRequests, []);

  // A complete auth.conf: the callback is not asked at all.
  const fullAuthFile = await writeAuthFile(
    t,
    `[credentials-peer]\nauthname=alice\npassword=${alicePassword}\n[auth-libvirt-localhost]\ncredentials=peer\n`,
  );
  const silent = recordingAuth({});
  const fromFile = await openAuth(uriWith({ authfile: fullAuthFile }), silent.auth);
  t.is(await fromFile.getHostname(), hostname());
  await fromFile.close();
  t.deepEqual(silent.calls, []);
  const pythonFull = await runPythonLibvirt(uriWith({ authfile: fullAuthFile }), { commands: ['hostname'] });
  t.true(pythonFull.ok, JSON.stringify(pythonFull));
  t.deepEqual(pythonFull.credentialRequests, []);

  // authname only: the callback is asked once, for the passphrase alone — as libvirt asks.
  const partialAuthFile = await writeAuthFile(t, '[credentials-peer]\nauthname=alice\n[auth-libvirt-localhost]\ncredentials=peer\n');
  const partial = recordingAuth({ passphrase: alicePassword });
  const fromBoth = await openAuth(uriWith({ authfile: partialAuthFile }), partial.auth);
  await fromBoth.close();
  t.deepEqual(credentialShape(partial.calls), [
    [{ type: CredentialType.PASSPHRASE, prompt: 'Please enter your password', challenge: 'Password' }],
  ]);
  const pythonPartial = await runPythonLibvirt(uriWith({ authfile: partialAuthFile }), {
    passphrase: alicePassword,
    commands: ['hostname'],
  });
  t.true(pythonPartial.ok, JSON.stringify(pythonPartial));
  t.deepEqual(
    pythonPartial.credentialRequests.map((call) => call.map((c) => c.type)),
    [['PASSPHRASE']],
  );

  // The same auth.conf through LIBVIRT_AUTH_FILE, with the CLI.
  const cli = await runProcess(process.execPath, [virtauthBin, '-c', libvirtd.uri(), 'hostname'], {
    env: { ...process.env, LIBVIRT_AUTH_FILE: fullAuthFile },
  });
  t.is(cli.code, 0, describeResult(cli));
  t.is(cli.stdout, `${hostname()}\n\n`, 'nothing was prompted');
});
