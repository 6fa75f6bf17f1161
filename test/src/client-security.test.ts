// The client against a hostile daemon (issue 10): what a server sends never drives the user's
// terminal, and a server cannot make the client weaken SASL. Fake daemons speak the wire
// directly, so each attack is exactly what a test sends.

import test from 'ava';

import { AuthType, CredentialType, ErrorCode, ErrorDomain, RemoteProc, VirError, remote, xdr, type Reply } from '@virtauth/core';
import { createClientContainer, openAuth } from 'virtauth';

import { FakeDaemon } from './fake-daemon.js';
import { RecordingAuth, answerWith, removeDir, virErrorOf } from './relay-helpers.js';
import { runProcess, tempDir } from './peers/index.js';
import { virtauthBin } from './sasl-support.js';

/** An OSC window title, a bell, screen clearing, a one-byte C1 CSI and a bidi override. */
const ESCAPES = '\u001b]0;owned\u0007\u001b[2J\u009b31m\u202e\u2066';
/** What must never reach the terminal: every control but tab and newline, C1, bidi controls. */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

let dir: string;
test.before(async () => {
  dir = await tempDir('vcs');
});
test.after.always(async () => {
  await removeDir(dir);
});

const reply = <R>(codec: xdr.Codec<R>, value: R): Reply => ({ codec: codec as xdr.Codec<unknown>, value });
const runCli = (uri: string, ...args: string[]) => runProcess(process.execPath, [virtauthBin, '-c', uri, '--no-prompt', ...args], { env: { ...process.env, LC_ALL: 'C' }, timeoutMs: 15_000 });

test('terminal: host names, XML, and error texts from a server reach the terminal with their control characters neutralised', async (t) => {
  const dom = { name: `web${ESCAPES}`, uuid: Buffer.alloc(16, 1), id: 1 };
  const daemon = await FakeDaemon.start(dir, 'escapes', {
    handlers: {
      [RemoteProc.CONNECT_GET_HOSTNAME]: () => reply(remote.connectGetHostnameRet, { hostname: `host${ESCAPES}.example` }),
      [RemoteProc.DOMAIN_LOOKUP_BY_NAME]: () => reply(remote.domainLookupRet, { dom }),
      [RemoteProc.DOMAIN_GET_XML_DESC]: () => reply(remote.domainGetXmlDescRet, { xml: `<domain>\n\t<name>web${ESCAPES}</name>\n</domain>\n` }),
      [RemoteProc.DOMAIN_GET_INFO]: () => {
        throw new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.QEMU, detail: `broken${ESCAPES}\r\nerror: forged line` });
      },
    },
  });
  try {
    const hostname = await runCli(daemon.uri(), 'hostname');
    t.is(hostname.code, 0, hostname.stderr);
    t.false(UNSAFE.test(hostname.stdout), JSON.stringify(hostname.stdout));
    t.is(hostname.stdout, 'host?]0;owned??[2J?31m??.example\n\n');

    const xml = await runCli(daemon.uri(), 'dumpxml', 'web');
    t.is(xml.code, 0, xml.stderr);
    t.false(UNSAFE.test(xml.stdout));
    t.true(xml.stdout.startsWith('<domain>\n\t<name>web?]0;owned'), 'newlines and tabs are kept');

    const failed = await runCli(daemon.uri(), 'dominfo', 'web');
    t.is(failed.code, 1);
    t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
    t.regex(failed.stderr, /^error: internal error: broken\?\]0;owned/);
  } finally {
    await daemon.stop();
  }
});

test('terminal: a failed open prints the server\'s error text neutralised', async (t) => {
  const daemon = await FakeDaemon.start(dir, 'open-escapes', {
    handlers: {
      [RemoteProc.CONNECT_OPEN]: () => {
        throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.REMOTE, detail: `no${ESCAPES}` });
      },
    },
  });
  try {
    const failed = await runCli(daemon.uri(), 'hostname');
    t.is(failed.code, 1);
    t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
    t.regex(failed.stderr, /error: failed to connect to the hypervisor\nerror: .*no\?\]0;owned\?\?\[2J/);
  } finally {
    await daemon.stop();
  }
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
        if (script.failStart?.includes(args.mech)) throw new VirError({ code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC, detail: 'authentication failed' });
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
  const { daemon, trace } = await fakeSaslDaemon('scram-weak', { mechlist: 'SCRAM-SHA-256', serverFirst: (n) => `r=${n}srv,s=${salt},i=1` });
  try {
    const e = await virErrorOf(openNoSources(daemon.uri(), passwordAuth()));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.regex(e.message, /SCRAM-SHA-256: the server asks for only 1 PBKDF2 iterations, fewer than the required minimum of 4096/);
    t.deepEqual(trace.starts.map((s) => s.mech), ['SCRAM-SHA-256']);
    t.deepEqual(trace.steps, [], 'no client-final-message (and so no proof) reached the server');
    t.false(e.message.includes(PASSWORD));
  } finally {
    await daemon.stop();
  }
});

test('SCRAM: the minimum is configurable; 4095 is still refused by default and accepted when the client allows it', async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('scram-4095', { mechlist: 'SCRAM-SHA-256', serverFirst: (n) => `r=${n}srv,s=${salt},i=4095` });
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
    t.regex(e.message, /server offers SCRAM-SHA-256-PLUS, which this connection cannot use, and PLAIN would send the password itself: refusing to fall back to it \(name it with auth=sasl\.PLAIN/);
    t.deepEqual(trace.starts, [], 'nothing was sent');
    t.is(auth.calls.length, 0, 'no password was asked for');

    const conn = await openNoSources(daemon.uri('/default', '&auth=sasl.PLAIN'), passwordAuth());
    await conn.close();
    t.deepEqual(trace.starts.map((s) => s.mech), ['PLAIN'], 'an explicit auth=sasl.PLAIN is honoured');
  } finally {
    await daemon.stop();
  }
});

test('mechanism choice: a SCRAM failure is not retried with PLAIN', async (t) => {
  const { daemon, trace } = await fakeSaslDaemon('scram-fails', { mechlist: 'SCRAM-SHA-256,PLAIN', failStart: ['SCRAM-SHA-256'] });
  try {
    const e = await virErrorOf(openNoSources(daemon.uri(), passwordAuth()));
    t.is(e.code, ErrorCode.AUTH_FAILED);
    t.deepEqual(trace.starts.map((s) => s.mech), ['SCRAM-SHA-256']);
    t.false(trace.starts.some((s) => s.data.includes(PASSWORD)));
  } finally {
    await daemon.stop();
  }
});

test('auth=sasl.MECH is matched against whole names of the server\'s list, not as a substring of it', async (t) => {
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
