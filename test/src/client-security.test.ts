// The client against a hostile daemon (issue 10): a daemon cannot harvest the client's stored
// credentials or pass its prompts off as local ones, what a server sends never drives the user's
// terminal, and a server cannot make the client weaken SASL. Fake daemons speak the wire
// directly, so each attack is exactly what a test sends.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import {
  AuthType,
  CredentialType,
  ErrorCode,
  ErrorDomain,
  RelayStatus,
  RemoteProc,
  VirError,
  remote,
  xdr,
  type Reply,
} from '@virtauth/core';
import { createRelayClient, type ClientRelayAuditRecord } from '@virtauth/relay';
import { createClientContainer, openAuth } from 'virtauth';

import { FakeDaemon, type FakeDaemonOptions, type FakePeer } from './fake-daemon.js';
import { RecordingAuth, answerWith, authConfSource, removeDir, virErrorOf } from './relay-helpers.js';
import { TestPki, runProcess, tempDir } from './peers/index.js';
import { virtauthBin } from './sasl-support.js';

/** An OSC window title, a bell, screen clearing, a one-byte C1 CSI and a bidi override. */
const ESCAPES = '\u001b]0;owned\u0007\u001b[2J\u009b31m\u202e\u2066';
/** What must never reach the terminal: every control but tab and newline, C1, bidi controls. */
// eslint-disable-next-line no-control-regex -- the test looks for control characters
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

let dir: string;
test.before(async () => {
  dir = await tempDir('vcs');
});
test.after.always(async () => {
  await removeDir(dir);
});

/** Runs `test` against a fake daemon that is stopped afterwards, whatever happens. */
async function withFakeDaemon(name: string, opts: FakeDaemonOptions, test: (daemon: FakeDaemon) => Promise<void>): Promise<void> {
  const daemon = await FakeDaemon.start(dir, name, opts);
  try {
    await test(daemon);
  } finally {
    await daemon.stop();
  }
}

/** Generous: a CLI process can take seconds to start on a loaded machine; tests wait on its exit. */
const CLI_TIMEOUT_MS = 60_000;
/** What a failed CLI run says about itself, for an assertion's message. */
const described = (run: { code: number | null; signal: string | null; timedOut: boolean; stderr: string }) =>
  `exit ${run.code} signal ${run.signal}${run.timedOut ? ' (timed out)' : ''}: ${run.stderr}`;

const reply = <R>(codec: xdr.Codec<R>, value: R): Reply => ({ codec: codec as xdr.Codec<unknown>, value });
const runCli = (uri: string, ...args: string[]) =>
  runProcess(process.execPath, [virtauthBin, '-c', uri, '--no-prompt', ...args], {
    env: { ...process.env, LC_ALL: 'C' },
    timeoutMs: CLI_TIMEOUT_MS,
  });

test('terminal: host names, XML, and error texts from a server reach the terminal with their control characters neutralised', async (t) => {
  const dom = { name: `web${ESCAPES}`, uuid: Buffer.alloc(16, 1), id: 1 };
  await withFakeDaemon(
    'escapes',
    {
      handlers: {
        [RemoteProc.CONNECT_GET_HOSTNAME]: () => reply(remote.connectGetHostnameRet, { hostname: `host${ESCAPES}.example` }),
        [RemoteProc.DOMAIN_LOOKUP_BY_NAME]: () => reply(remote.domainLookupByNameRet, { dom }),
        [RemoteProc.DOMAIN_GET_XML_DESC]: () =>
          reply(remote.domainGetXmlDescRet, { xml: `<domain>\n\t<name>web${ESCAPES}</name>\n</domain>\n` }),
        [RemoteProc.DOMAIN_GET_INFO]: () => {
          throw new VirError({
            code: ErrorCode.INTERNAL_ERROR,
            domain: ErrorDomain.QEMU,
            detail: `broken${ESCAPES}\r\nerror: forged line`,
          });
        },
      },
    },
    async (daemon) => {
      const hostname = await runCli(daemon.uri(), 'hostname');
      t.is(hostname.code, 0, described(hostname));
      t.false(UNSAFE.test(hostname.stdout), JSON.stringify(hostname.stdout));
      t.is(hostname.stdout, 'host?]0;owned??[2J?31m??.example\n\n');

      const xml = await runCli(daemon.uri(), 'dumpxml', 'web');
      t.is(xml.code, 0, described(xml));
      t.false(UNSAFE.test(xml.stdout));
      t.true(xml.stdout.startsWith('<domain>\n\t<name>web?]0;owned'), 'newlines and tabs are kept');

      const failed = await runCli(daemon.uri(), 'dominfo', 'web');
      t.is(failed.code, 1, described(failed));
      t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
      t.regex(failed.stderr, /^error: internal error: broken\?\]0;owned/);
    },
  );
});

test("terminal: a failed open prints the server's error text neutralised", async (t) => {
  await withFakeDaemon(
    'open-escapes',
    {
      handlers: {
        [RemoteProc.CONNECT_OPEN]: () => {
          throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.REMOTE, detail: `no${ESCAPES}` });
        },
      },
    },
    async (daemon) => {
      const failed = await runCli(daemon.uri(), 'hostname');
      t.is(failed.code, 1, described(failed));
      t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
      t.regex(failed.stderr, /error: failed to connect to the hypervisor\nerror: .*no\?\]0;owned\?\?\[2J/);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// SCRAM parameters and mechanism choice, against a fake SASL server.

interface SaslServerScript {
  mechlist: string;
  /** The server-first-message for a SCRAM START, given the client's nonce. */
  serverFirst?: (clientNonce: string) => string;
  /** START fails for these mechanisms (the server rejects the exchange). */
  failStart?: readonly string[];
}

interface SaslTrace {
  starts: { mech: string; data: string }[];
  steps: string[];
}

async function fakeSaslDaemon(name: string, script: SaslServerScript): Promise<{ daemon: FakeDaemon; trace: SaslTrace }> {
  const trace: SaslTrace = { starts: [], steps: [] };
  const daemon = await FakeDaemon.start(dir, name, {
    authTypes: [AuthType.SASL],
    handlers: {
      [RemoteProc.AUTH_SASL_INIT]: () => reply(remote.authSaslInitRet, { mechlist: script.mechlist }),
      [RemoteProc.AUTH_SASL_START]: (_peer, body) => {
        const args = remote.authSaslStartArgs.decode(body);
        const data = args.data.toString('utf8');
        trace.starts.push({ mech: args.mech, data });
        if (script.failStart?.includes(args.mech))
          throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });
        if (args.mech === 'PLAIN') return reply(remote.authSaslStartRet, { complete: 1, nil: 1, data: Buffer.alloc(0) });
        const clientNonce = /,r=([^,]+)/.exec(data)![1]!;
        return reply(remote.authSaslStartRet, { complete: 0, nil: 0, data: Buffer.from(script.serverFirst!(clientNonce)) });
      },
      [RemoteProc.AUTH_SASL_STEP]: (_peer, body) => {
        trace.steps.push(remote.authSaslStepArgs.decode(body).data.toString('utf8'));
        throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });
      },
    },
  });
  return { daemon, trace };
}

const PASSWORD = 'correct horse battery staple';
const passwordAuth = () => new RecordingAuth([CredentialType.AUTHNAME, CredentialType.PASSPHRASE], answerWith('alice', PASSWORD));
const openNoSources = (uri: string, auth: RecordingAuth | null) => openAuth(uri, auth, 0, { credentialSources: [] });
const salt = Buffer.alloc(16, 7).toString('base64');

test('SCRAM: a server asking for i=1 is refused before any proof is sent', async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('scram-weak', {
    mechlist: 'SCRAM-SHA-256',
    serverFirst: (n) => `r=${n}srv,s=${salt},i=1`,
  });
  try {
    const e = await virErrorOf(openNoSources(daemon.uri(), passwordAuth()));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.regex(e.message, /SCRAM-SHA-256: the server asks for only 1 PBKDF2 iterations, fewer than the required minimum of 4096/);
    t.deepEqual(
      trace.starts.map((s) => s.mech),
      ['SCRAM-SHA-256'],
    );
    t.deepEqual(trace.steps, [], 'no client-final-message (and so no proof) reached the server');
    t.false(e.message.includes(PASSWORD));
  } finally {
    await daemon.stop();
  }
});

test('SCRAM: the minimum is configurable; 4095 is still refused by default and accepted when the client allows it', async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('scram-4095', {
    mechlist: 'SCRAM-SHA-256',
    serverFirst: (n) => `r=${n}srv,s=${salt},i=4095`,
  });
  try {
    t.regex((await virErrorOf(openNoSources(daemon.uri(), passwordAuth()))).message, /fewer than the required minimum of 4096/);
    t.deepEqual(trace.steps, []);
    const lenient = createClientContainer(undefined, { saslClient: { minIterations: 1024 } });
    // The fake server then fails the proof: what matters is that the client sent one.
    const e = await virErrorOf(openAuth(daemon.uri(), passwordAuth(), 0, { credentialSources: [], container: lenient }));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.is(trace.steps.length, 1);
    t.regex(trace.steps[0]!, /^c=biws,r=[^,]+srv,p=/);
  } finally {
    await daemon.stop();
  }
});

test('mechanism choice: no silent fall back to PLAIN when the server offers SCRAM the client cannot use; auth=sasl.PLAIN still works when asked', async (t) => {
  // Over a unix socket there is no channel binding, so -PLUS is unusable here.
  const { daemon, trace } = await fakeSaslDaemon('scram-plus-plain', { mechlist: 'SCRAM-SHA-256-PLUS,PLAIN' });
  try {
    const auth = passwordAuth();
    const e = await virErrorOf(openNoSources(daemon.uri(), auth));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.regex(
      e.message,
      /server offers SCRAM-SHA-256-PLUS, which this connection cannot use, and PLAIN would send the password itself: refusing to fall back to it \(name it with auth=sasl\.PLAIN/,
    );
    t.deepEqual(trace.starts, [], 'nothing was sent');
    t.is(auth.calls.length, 0, 'no password was asked for');

    const conn = await openNoSources(daemon.uri('/default', '&auth=sasl.PLAIN'), passwordAuth());
    await conn.close();
    t.deepEqual(
      trace.starts.map((s) => s.mech),
      ['PLAIN'],
      'an explicit auth=sasl.PLAIN is honoured',
    );
  } finally {
    await daemon.stop();
  }
});

test('mechanism choice: a SCRAM failure is not retried with PLAIN', async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('scram-fails', { mechlist: 'SCRAM-SHA-256,PLAIN', failStart: ['SCRAM-SHA-256'] });
  try {
    const e = await virErrorOf(openNoSources(daemon.uri(), passwordAuth()));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.deepEqual(
      trace.starts.map((s) => s.mech),
      ['SCRAM-SHA-256'],
    );
    t.false(trace.starts.some((s) => s.data.includes(PASSWORD)));
  } finally {
    await daemon.stop();
  }
});

test("auth=sasl.MECH is matched against whole names of the server's list, not as a substring of it", async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('mech-membership', { mechlist: 'SCRAM-SHA-256-PLUS,PLAIN' });
  try {
    for (const wanted of ['SCRAM-SHA-256', 'SCRAM', 'PLAI']) {
      const e = await virErrorOf(openNoSources(daemon.uri('/default', `&auth=sasl.${wanted}`), passwordAuth()));
      t.is(e.code, ErrorCode.AUTH_FAILED, wanted);
      t.regex(e.message, new RegExp(`SASL mechanism ${wanted} not supported by server`), wanted);
    }
    t.deepEqual(trace.starts, [], 'no exchange started with a mechanism the server did not offer');
  } finally {
    await daemon.stop();
  }
});

// ---------------------------------------------------------------------------------------------
// A malicious daemon asking for the client's stored credentials during CONNECT_OPEN.

const PROD_PASSWORD = 'prod-libvirt-secret-5d1f';
const XEN_DEFAULT_PASSWORD = 'xen-default-secret-9a7c';
const XEN1_PASSWORD = 'xen1-exact-secret-77b2';
const CLIENT_AUTH_CONF =
  `[credentials-prod]\nauthname=admin\npassword=${PROD_PASSWORD}\n[auth-libvirt-prod.example]\ncredentials=prod\n\n` +
  `[credentials-xen]\nusername=root\npassword=${XEN_DEFAULT_PASSWORD}\n[auth-xenapi-default]\ncredentials=xen\n\n` +
  `[credentials-xen1]\nusername=root\npassword=${XEN1_PASSWORD}\n[auth-xenapi-xen1.example]\ncredentials=xen1\n`;
const STORED_SECRETS = [PROD_PASSWORD, XEN_DEFAULT_PASSWORD, XEN1_PASSWORD];

const { AUTHNAME, PASSPHRASE } = CredentialType;
const loginCredentials = (host: string) => [
  { type: AUTHNAME, prompt: `Enter username for ${host}`, challenge: null, defresult: null },
  { type: PASSPHRASE, prompt: `Enter password for ${host}`, challenge: null, defresult: null },
];
const hop = (daemon: string, driver = 'xenapi') => ({ daemon, driver, uri: `${driver}:///` });

/** The harvest of issue 10: any service and host, a `-default` entry, an exact entry. */
async function harvest(peer: FakePeer): Promise<void> {
  await peer.request({
    service: 'libvirt',
    host: 'prod.example',
    origin: [hop('rogue@evil', 'remote')],
    credentials: loginCredentials('prod.example'),
  });
  await peer.request({
    service: 'xenapi',
    host: 'xen9.example',
    origin: [hop('rogue@evil')],
    credentials: loginCredentials('xen9.example'),
  });
  await peer.request({
    service: 'xenapi',
    host: 'xen1.example',
    origin: [hop('rogue@evil')],
    credentials: loginCredentials('xen1.example'),
  });
}

const leakedSecrets = (answers: readonly { results: (string | null)[] }[]) =>
  answers.flatMap((a) => a.results).filter((r) => r !== null && STORED_SECRETS.includes(r));

test("stored credentials: virtauth --no-prompt answers none of a daemon's relayed requests from auth.conf, default entries included", async (t) => {
  const authFile = join(dir, 'harvest-auth.conf');
  await writeFile(authFile, CLIENT_AUTH_CONF, { mode: 0o600 });
  await withFakeDaemon('harvest', { relayName: 'rogue@evil', onOpen: harvest }, async (daemon) => {
    const run = await runProcess(process.execPath, [virtauthBin, '-c', daemon.uri(), '--no-prompt', 'hostname'], {
      env: { ...process.env, LIBVIRT_AUTH_FILE: authFile, XDG_CONFIG_HOME: dir, VIRTAUTH_RELAY_POLICY: '' },
      timeoutMs: CLI_TIMEOUT_MS,
    });
    const answers = daemon.peers.flatMap((p) => p.answers);
    t.is(answers.length, 3, described(run));
    t.deepEqual(
      answers.map((a) => a.status),
      [RelayStatus.UNAVAILABLE, RelayStatus.UNAVAILABLE, RelayStatus.UNAVAILABLE],
    );
    t.deepEqual(leakedSecrets(answers), []);
    t.true(answers.every((a) => a.results.length === 0));
    for (const s of STORED_SECRETS) t.false(run.stdout.includes(s) || run.stderr.includes(s));
  });
});

test('stored credentials: only a grant naming the verified daemon, the service and the exact host lets auth.conf answer; -default entries never do', async (t) => {
  const authFile = join(dir, 'grant-auth.conf');
  await writeFile(authFile, CLIENT_AUTH_CONF, { mode: 0o600 });
  const sources = [await authConfSource(authFile)];
  const elsewhere = join(dir, 'other.sock');
  const grant = (socket: string, service: string, host: string) => ({ daemon: { transport: 'unix' as const, socket }, service, host });
  await withFakeDaemon('granted', { relayName: 'rogue@evil', onOpen: harvest }, async (daemon) => {
    const cases = [
      { label: 'a grant for another socket', grants: [grant(elsewhere, 'xenapi', 'xen1.example')], answered: [] as string[] },
      {
        label: 'a grant for xen9 (only -default holds it)',
        grants: [grant(daemon.socket, 'xenapi', 'xen9.example')],
        answered: [] as string[],
      },
      { label: 'a grant for xen1 on this socket', grants: [grant(daemon.socket, 'xenapi', 'xen1.example')], answered: ['xen1.example'] },
    ];
    for (const c of cases) {
      const before = daemon.peers.length;
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], () => false);
      const conn = await openAuth(daemon.uri(), auth, 0, { credentialSources: sources, relayPolicy: { storedCredentials: c.grants } });
      await conn.close();
      const answers = daemon.peers.slice(before).flatMap((p) => p.answers);
      const ok = answers.filter((a) => a.status === RelayStatus.OK);
      t.deepEqual(
        ok.map((a) => a.results),
        c.answered.map(() => ['root', XEN1_PASSWORD]),
        c.label,
      );
      t.deepEqual(
        auth.calls.map((call) => call.host),
        ['prod.example', 'xen9.example', 'xen1.example'].filter((h) => !c.answered.includes(h)),
        `${c.label}: the rest went to the person`,
      );
      t.false(answers.some((a) => a.results.includes(PROD_PASSWORD) || a.results.includes(XEN_DEFAULT_PASSWORD)));
    }
    t.throws(() => createRelayClient({ auth: null, policy: { storedCredentials: [grant(daemon.socket, 'xenapi', 'default')] } }), {
      message: /-default entries never answer relayed requests/,
    });
  });
});

test('origin chain: an empty chain, or one that does not end at the daemon reached, is DENIED and audited without a prompt', async (t) => {
  await withFakeDaemon(
    'chain',
    {
      relayName: 'rogue@evil',
      onOpen: async (peer) => {
        await peer.request({ service: 'libvirt', host: 'localhost', origin: [], credentials: loginCredentials('localhost') });
        await peer.request({
          service: 'xenapi',
          host: 'xen1.example',
          origin: [hop('virtauthd@trusted')],
          credentials: loginCredentials('xen1.example'),
        });
        await peer.request({
          service: 'xenapi',
          host: 'xen1.example',
          origin: [hop('rogue@evil'), hop('virtauthd@trusted', 'remote')],
          credentials: loginCredentials('xen1.example'),
        });
        await peer.request({
          service: 'xenapi',
          host: 'xen1.example',
          origin: [hop('virtauthd@trusted'), hop('rogue@evil', 'remote')],
          credentials: loginCredentials('xen1.example'),
        });
      },
    },
    async (daemon) => {
      const audit: ClientRelayAuditRecord[] = [];
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], answerWith('root', 'typed-password'));
      const conn = await openAuth(daemon.uri(), auth, 0, { credentialSources: [], relayAudit: (r) => audit.push(r) });
      await conn.close();
      const answers = daemon.peers[0]!.answers;
      t.deepEqual(
        answers.map((a) => a.status),
        [RelayStatus.DENIED, RelayStatus.DENIED, RelayStatus.DENIED, RelayStatus.OK],
      );
      t.regex(
        answers[0]!.message,
        /origin chain is empty arrived from rogue@evil \(unix socket .*chain\.sock\): the chain must end at the daemon this client is connected to/,
      );
      t.regex(answers[1]!.message, /origin chain ends at 'virtauthd@trusted' arrived from rogue@evil/);
      t.is(auth.calls.length, 1, 'only the request whose chain ends at the daemon reached was shown');
      t.deepEqual(
        auth.calls[0]!.origin.map((h) => h.daemon),
        ['virtauthd@trusted', 'rogue@evil'],
      );
      t.deepEqual(
        audit.map((r) => r.outcome),
        ['DENIED', 'DENIED', 'DENIED', 'OK'],
      );
      t.true(audit.every((r) => r.daemon.startsWith('rogue@evil (unix socket ')));
    },
  );
});

test('console: a relayed prompt always carries the header naming the verified daemon, driver, host and chain; refusals are reported', async (t) => {
  await withFakeDaemon(
    'console',
    {
      relayName: 'rogue@evil',
      onOpen: async (peer) => {
        // Worded exactly like the local SASL prompts: the header and mark still tell them apart.
        for (let i = 0; i < 2; i++) {
          await peer.request({
            service: 'libvirt',
            host: 'localhost',
            origin: [hop('rogue@evil', 'remote')],
            credentials: [
              { type: AUTHNAME, prompt: 'Please enter your authentication name', challenge: null, defresult: null },
              { type: PASSPHRASE, prompt: 'Please enter your password', challenge: null, defresult: null },
            ],
          });
        }
        await peer.request({ service: 'libvirt', host: 'localhost', origin: [], credentials: loginCredentials('localhost') });
      },
    },
    async (daemon) => {
      const run = await runProcess(process.execPath, [virtauthBin, '-c', daemon.uri(), 'hostname'], {
        env: { ...process.env, XDG_CONFIG_HOME: dir, VIRTAUTH_RELAY_POLICY: '' },
        input: 'alice\npw1\nbob\npw2\n',
        timeoutMs: CLI_TIMEOUT_MS,
      });
      t.is(run.code, 0, described(run));
      const header =
        '*** Credential request relayed by a daemon: it does not come from this computer ***\n' +
        `Connected daemon: rogue@evil (unix socket ${daemon.socket})\n` +
        'remote on localhost via rogue@evil asks for credentials\n' +
        '[relayed] Please enter your authentication name: [relayed] Please enter your password: ';
      t.is(run.stdout, `${header}${header}fake.example\n\n`);
      t.regex(
        run.stderr,
        /^virtauth: refused a credential request \(AUTHNAME, PASSPHRASE\) relayed by rogue@evil \(unix socket .*\): a relayed request whose origin chain is empty/m,
      );
    },
  );
});

test('per origin: the rate holds across reconnects to the same daemon, and another daemon has its own', async (t) => {
  const twoRequests = async (peer: FakePeer) => {
    await peer.request({
      service: 'xenapi',
      host: 'xen1.example',
      origin: [hop('rogue@evil')],
      credentials: loginCredentials('xen1.example').slice(0, 1),
    });
    await peer.request({
      service: 'xenapi',
      host: 'xen1.example',
      origin: [hop('rogue@evil')],
      credentials: loginCredentials('xen1.example').slice(0, 1),
    });
  };
  const daemon = await FakeDaemon.start(dir, 'rate', { relayName: 'rogue@evil', onOpen: twoRequests });
  const other = await FakeDaemon.start(dir, 'rate-other', { relayName: 'rogue@evil', onOpen: twoRequests });
  try {
    const policy = { perOrigin: { maxRequests: 3, windowMs: 60_000 } };
    const statuses = async (d: FakeDaemon, auth: RecordingAuth) => {
      const before = d.peers.length;
      const conn = await openAuth(d.uri(), auth, 0, { credentialSources: [], relayPolicy: policy });
      await conn.close();
      return d.peers.slice(before).flatMap((p) => p.answers.map((a) => a.status));
    };
    const auth = new RecordingAuth([AUTHNAME], answerWith('root', ''));
    t.deepEqual(await statuses(daemon, auth), [RelayStatus.OK, RelayStatus.OK]);
    t.deepEqual(await statuses(daemon, auth), [RelayStatus.OK, RelayStatus.DENIED], 'a new connection did not reset the count');
    t.deepEqual(await statuses(daemon, auth), [RelayStatus.DENIED, RelayStatus.DENIED]);
    t.is(auth.calls.length, 3, 'refused requests were never shown');
    t.regex(
      daemon.peers[2]!.answers[0]!.message,
      /exceeded this client's limit of 3 credential requests per 60 s from rogue@evil \(unix socket /,
    );
    t.deepEqual(await statuses(other, auth), [RelayStatus.OK, RelayStatus.OK], 'another daemon is counted apart');
  } finally {
    await daemon.stop();
    await other.stop();
  }
});

test("per open: a server that ignores the client's cap gets DENIED for the request beyond it, and nobody is asked", async (t) => {
  await withFakeDaemon(
    'cap',
    {
      relayName: 'rogue@evil',
      onOpen: async (peer) => {
        // ENABLE told us max_requests; a hostile server sends one more anyway.
        for (let i = 0; i <= peer.enabled!.max_requests; i++) {
          await peer.request({
            service: 'xenapi',
            host: 'xen1.example',
            origin: [hop('rogue@evil')],
            credentials: loginCredentials('xen1.example').slice(0, 1),
          });
        }
      },
    },
    async (daemon) => {
      for (const maxRequestsPerOpen of [undefined, 3]) {
        const before = daemon.peers.length;
        const auth = new RecordingAuth([AUTHNAME], answerWith('root', ''));
        const conn = await openAuth(daemon.uri(), auth, 0, {
          credentialSources: [],
          relayPolicy: { perOrigin: { maxRequests: 1000, windowMs: 60_000 }, ...(maxRequestsPerOpen ? { maxRequestsPerOpen } : {}) },
        });
        await conn.close();
        const cap = maxRequestsPerOpen ?? 8;
        const answers = daemon.peers[before]!.answers;
        t.is(daemon.peers[before]!.enabled!.max_requests, cap);
        t.deepEqual(
          answers.map((a) => a.status),
          [...Array(cap).fill(RelayStatus.OK), RelayStatus.DENIED],
        );
        t.regex(answers[cap]!.message, new RegExp(`exceeded this client's limit of ${cap} credential requests per open`));
        t.is(auth.calls.length, cap, 'the request beyond the cap was never shown');
      }
    },
  );
});

test('stored credentials over TLS: a grant names the daemon by its verified certificate; no_verify=1 proves nothing, so the grant does not apply', async (t) => {
  const pki = await TestPki.create();
  const authFile = join(dir, 'tls-auth.conf');
  await writeFile(authFile, CLIENT_AUTH_CONF, { mode: 0o600 });
  const xen1 = (peer: FakePeer) =>
    peer
      .request({ service: 'xenapi', host: 'xen1.example', origin: [hop('tls@daemon')], credentials: loginCredentials('xen1.example') })
      .then(() => {});
  const daemon = await FakeDaemon.start(dir, 'tls', {
    relayName: 'tls@daemon',
    onOpen: xen1,
    tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caCertFile },
  });
  try {
    const sources = [await authConfSource(authFile)];
    const policy = {
      storedCredentials: [{ daemon: { transport: 'tls' as const, host: 'localhost' }, service: 'xenapi', host: 'xen1.example' }],
    };
    const run = async (extra: string) => {
      const audit: ClientRelayAuditRecord[] = [];
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], () => false);
      const before = daemon.peers.length;
      const conn = await openAuth(daemon.uri('/default', `pkipath=${pki.client.pkiPath}${extra}`), auth, 0, {
        credentialSources: sources,
        relayPolicy: policy,
        relayAudit: (r) => audit.push(r),
      });
      await conn.close();
      return { answers: daemon.peers.slice(before).flatMap((p) => p.answers), asked: auth.calls.length, audit };
    };
    const verified = await run('');
    t.deepEqual(
      verified.answers.map((a) => [a.status, a.results]),
      [[RelayStatus.OK, ['root', XEN1_PASSWORD]]],
    );
    t.is(verified.asked, 0);
    t.regex(verified.audit[0]!.daemon, new RegExp(`^tls@daemon \\(TLS certificate of localhost:${daemon.port} \\(.*CN=localhost.*\\)\\)$`));

    const unverified = await run('&no_verify=1');
    t.deepEqual(
      unverified.answers.map((a) => [a.status, a.results]),
      [[RelayStatus.CANCELLED, []]],
    );
    t.is(unverified.asked, 1, 'the person was asked instead');
    t.is(unverified.audit[0]!.daemon, 'tls@daemon (an unverified daemon)');
  } finally {
    await daemon.stop();
    await pki.remove();
  }
});
