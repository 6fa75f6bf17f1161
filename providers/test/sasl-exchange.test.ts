// SCRAM-SHA-256, SCRAM-SHA-256-PLUS and PLAIN run client against server in memory, through
// core's real credential pipeline, including the failure and tampering cases.

import test from 'ava';
import { ErrorCode, ErrorDomain, SaslAuthenticationError, VirError } from '@virtauth/core';
import { PlainMechanism } from '../src/sasl/plain.js';
import { makeScramVerifier } from '../src/sasl/scram.js';
import { ScramSha256Mechanism } from '../src/sasl/scram-sha-256.js';
import { ScramSha256PlusMechanism } from '../src/sasl/scram-sha-256-plus.js';
import { InMemoryUserDatabase } from '../src/userdb/in-memory-user-database.js';
import {
  CredentialType,
  makeCredentialRequester,
  type ChannelBinding,
  type ChannelBindingPolicy,
  type Credential,
  type CredentialRequestInfo,
  type SaslClientContext,
  type SaslClientSession,
  type SaslServerContext,
  type SaslServerSession,
  type UserDatabase,
} from '@virtauth/core';

interface Answers {
  username?: string;
  authname: string;
  password: string;
}

interface CallbackLog {
  calls: { creds: Credential[]; info: CredentialRequestInfo }[];
}

function clientContext(
  answers: Answers,
  options: {
    declareUsername?: boolean;
    channelBinding?: ChannelBinding | null;
    policy?: ChannelBindingPolicy;
    serverMechanisms?: readonly string[];
    maxIterations?: number;
  } = {},
): { ctx: SaslClientContext; log: CallbackLog } {
  const log: CallbackLog = { calls: [] };
  const credTypes = [CredentialType.AUTHNAME, CredentialType.PASSPHRASE, ...(options.declareUsername ? [CredentialType.USERNAME] : [])];
  const auth = {
    credTypes,
    callback: (creds: Credential[], info: CredentialRequestInfo) => {
      log.calls.push({ creds: creds.map((c) => ({ ...c })), info });
      for (const c of creds) {
        if (c.type === CredentialType.USERNAME) c.result = answers.username ?? '';
        if (c.type === CredentialType.AUTHNAME) c.result = answers.authname;
        if (c.type === CredentialType.PASSPHRASE) c.result = answers.password;
      }
    },
  };
  const ctx: SaslClientContext = {
    requestCredentials: makeCredentialRequester([], auth),
    auth,
    service: 'libvirt',
    host: 'hostA',
    transport: { kind: 'unix', secure: true },
    channelBinding: options.channelBinding ?? null,
    channelBindingPolicy: options.policy ?? 'prefer',
    serverMechanisms: options.serverMechanisms ?? ['SCRAM-SHA-256'],
    maxIterations: options.maxIterations ?? 100_000,
  };
  return { ctx, log };
}

function serverContext(
  users: UserDatabase,
  options: { channelBinding?: ChannelBinding | null; serverOffersChannelBinding?: boolean } = {},
): SaslServerContext {
  return {
    users,
    transport: { kind: 'unix', secure: true },
    channelBinding: options.channelBinding ?? null,
    serverOffersChannelBinding: options.serverOffersChannelBinding ?? false,
  };
}

/** Every message that crossed the wire, in order, as text. */
type Transcript = string[];

interface ExchangeHooks {
  /** Rewrites a client message before the server sees it (index 0 = initial response). */
  clientToServer?: (message: Buffer | null, index: number) => Buffer | null;
  /** Rewrites a server message before the client sees it. */
  serverToClient?: (message: Buffer | null, index: number) => Buffer | null;
}

/**
 * Drives both halves the way libvirt's remote driver and daemon do: START carries the initial
 * response; a server reply with `done` may carry final data the client must still check.
 */
async function runExchange(
  client: SaslClientSession,
  server: SaslServerSession,
  hooks: ExchangeHooks = {},
): Promise<{ transcript: Transcript; username: string | null }> {
  const transcript: Transcript = [];
  const show = (b: Buffer | null) => (b === null ? '<nil>' : b.toString('utf8'));
  let clientIndex = 0;
  let serverIndex = 0;
  const send = (b: Buffer | null) => {
    const out = hooks.clientToServer ? hooks.clientToServer(b, clientIndex) : b;
    clientIndex++;
    transcript.push(`C: ${show(out)}`);
    return out;
  };
  const reply = (b: Buffer | null) => {
    const out = hooks.serverToClient ? hooks.serverToClient(b, serverIndex) : b;
    serverIndex++;
    transcript.push(`S: ${show(out)}`);
    return out;
  };
  let result = await server.step(send(await client.start()));
  for (;;) {
    const data = reply(result.data);
    if (result.done) {
      if (!client.complete) {
        const extra = await client.step(data);
        if (extra !== null) throw new Error('client wanted to send data after the server completed');
      }
      if (!client.complete) throw new Error('client did not complete');
      break;
    }
    result = await server.step(send(await client.step(data)));
  }
  return { transcript, username: server.username };
}

function replaceAttribute(message: Buffer | null, name: string, rewrite: (value: string) => string): Buffer | null {
  if (message === null) return null;
  return Buffer.from(
    message
      .toString('utf8')
      .split(',')
      .map((part) => (part.startsWith(`${name}=`) ? `${name}=${rewrite(part.slice(name.length + 1))}` : part))
      .join(','),
  );
}

function flipFirstByteBase64(value: string): string {
  const bytes = Buffer.from(value, 'base64');
  bytes[0] = bytes[0]! ^ 0x01;
  return bytes.toString('base64');
}

// ---------------------------------------------------------------------------------------------

const PASSWORD = 'correct horse battery staple';

async function usersWith(entries: Record<string, string>): Promise<InMemoryUserDatabase> {
  const db = new InMemoryUserDatabase({ iterations: 4096 });
  for (const [name, password] of Object.entries(entries)) await db.setPassword(name, password);
  return db;
}

/** Secrets must never reach an error message, a server log reason, or anything else printed. */
function assertNoSecret(t: { false: (v: boolean, m?: string) => void }, error: unknown, secret: string): void {
  const seen = new Set<unknown>();
  const walk = (e: unknown): string => {
    if (!(e instanceof Error) || seen.has(e)) return '';
    seen.add(e);
    return `${e.message}\n${e.stack ?? ''}\n${JSON.stringify(e)}\n${walk(e.cause)}`;
  };
  t.false(walk(error).includes(secret), 'the error text contains the password');
}

function assertClientAuthFailure(t: any, error: unknown): asserts error is VirError {
  t.true(error instanceof VirError, `expected a VirError, got ${String(error)}`);
  t.is((error as VirError).code, ErrorCode.AUTH_FAILED);
  t.is((error as VirError).domain, ErrorDomain.REMOTE);
}

test('RFC 7677 test vector: exact client-final and server-final messages', async (t) => {
  const db = new InMemoryUserDatabase();
  db.setUser({
    username: 'user',
    verifiers: [await makeScramVerifier('pencil', { iterations: 4096, salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64') })],
  });
  const client = new ScramSha256Mechanism({ generateNonce: () => 'rOprNGfwEbeRWgbNEkqO' }).createClient(
    clientContext({ authname: 'user', password: 'pencil' }).ctx,
  );
  const server = new ScramSha256Mechanism({ generateNonce: () => '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0' }).createServer(serverContext(db));
  const { transcript, username } = await runExchange(client, server);
  t.deepEqual(transcript, [
    'C: n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
    'S: r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
    'C: c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
    'S: v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
  ]);
  t.is(username, 'user');
  t.true(client.complete);
});

test('SCRAM-SHA-256: success, credentials asked once with libvirt prompts', async (t) => {
  const mech = new ScramSha256Mechanism();
  t.is(mech.name, 'SCRAM-SHA-256');
  t.false(mech.requiresChannelBinding);
  t.false(mech.requiresSecureChannel);
  const { ctx, log } = clientContext({ authname: 'alice', password: PASSWORD });
  const client = mech.createClient(ctx);
  t.false(client.complete);
  const { transcript, username } = await runExchange(client, mech.createServer(serverContext(await usersWith({ alice: PASSWORD }))));
  t.is(username, 'alice');
  t.is(transcript.length, 4);
  t.regex(transcript[0]!, /^C: n,,n=alice,r=[\x21-\x2b\x2d-\x7e]+$/);
  t.is(log.calls.length, 1);
  t.deepEqual(
    log.calls[0]!.creds.map((c) => [c.type, c.prompt, c.challenge]),
    [
      [CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name'],
      [CredentialType.PASSPHRASE, 'Please enter your password', 'Password'],
    ],
  );
  t.is(log.calls[0]!.info.service, 'libvirt');
  t.is(log.calls[0]!.info.host, 'hostA');
});

test('SCRAM-SHA-256: an unknown user fails at the first step by default, as libvirtd refuses it at AUTH_SASL_START', async (t) => {
  const db = await usersWith({ alice: PASSWORD });
  const mech = new ScramSha256Mechanism();
  const server = mech.createServer(serverContext(db));
  const client = mech.createClient(clientContext({ authname: 'mallory', password: PASSWORD }).ctx);
  const error = await t.throwsAsync(server.step(await client.start()), { instanceOf: SaslAuthenticationError });
  t.regex(error!.reason, /unknown-user/);
  t.is(error!.username, 'mallory');
  t.is(server.username, null);
  assertNoSecret(t, error, PASSWORD);
});

test('SCRAM-SHA-256 with concealUnknownUsers: wrong password and unknown user fail alike, at the final step', async (t) => {
  const db = await usersWith({ alice: PASSWORD });
  const mech = new ScramSha256Mechanism({ concealUnknownUsers: true });
  const attempt = async (authname: string, password: string) => {
    const server = mech.createServer(serverContext(db));
    const client = mech.createClient(clientContext({ authname, password }).ctx);
    const first = await server.step(await client.start());
    t.false(first.done);
    const serverFirst = first.data!.toString();
    const error = await t.throwsAsync(server.step(await client.step(first.data)), { instanceOf: SaslAuthenticationError });
    t.is(server.username, null);
    return { serverFirst, error: error! };
  };
  const wrong = await attempt('alice', 'not the password');
  const unknown = await attempt('mallory', PASSWORD);
  const unknownAgain = await attempt('mallory', 'other');
  t.regex(wrong.error.reason, /invalid-proof/);
  t.regex(unknown.error.reason, /unknown-user/);
  t.is(unknown.error.username, 'mallory');
  // Same shape of server-first-message: 16-byte salt and the same iteration count.
  const shape = (s: string) =>
    s.replace(/^r=[^,]+,s=([^,]+),i=(\d+)$/, (_m, salt: string, i: string) => `${Buffer.from(salt, 'base64').length}/${i}`);
  t.is(shape(unknown.serverFirst), shape(wrong.serverFirst));
  t.is(shape(unknown.serverFirst), '16/4096');
  // A fake salt is stable per name, as a real one is.
  t.is(unknown.serverFirst.split(',')[1], unknownAgain.serverFirst.split(',')[1]);
  assertNoSecret(t, unknown.error, PASSWORD);
  assertNoSecret(t, wrong.error, 'not the password');
});

test('SCRAM-SHA-256 with concealUnknownUsers: the server announces the configured iteration count for unknown users', async (t) => {
  const server = new ScramSha256Mechanism({ unknownUserIterations: 10_000, concealUnknownUsers: true }).createServer(
    serverContext(new InMemoryUserDatabase()),
  );
  const reply = await server.step(Buffer.from('n,,n=ghost,r=abcdef'));
  t.regex(reply.data!.toString(), /,i=10000$/);
});

test('SCRAM-SHA-256: user names containing "," and "=" are escaped on the wire', async (t) => {
  const name = 'ops,team=blue';
  const mech = new ScramSha256Mechanism();
  const { transcript, username } = await runExchange(
    mech.createClient(clientContext({ authname: name, password: PASSWORD }).ctx),
    mech.createServer(serverContext(await usersWith({ [name]: PASSWORD }))),
  );
  t.regex(transcript[0]!, /^C: n,,n=ops=2Cteam=3Dblue,r=/);
  t.is(username, name);
});

test('SCRAM-SHA-256: non-ASCII passwords are SASLprep-normalized on both sides', async (t) => {
  const mech = new ScramSha256Mechanism();
  // Stored as "IX" (soft hyphen removed); typed as U+2168 ROMAN NUMERAL NINE, which NFKC maps to "IX".
  const db = await usersWith({ 'j\u00F6rg': 'I\u00ADX' });
  const { username } = await runExchange(
    mech.createClient(clientContext({ authname: 'jo\u0308rg', password: '\u2168' }).ctx),
    mech.createServer(serverContext(db)),
  );
  t.is(username, 'j\u00F6rg');
  const clientError = await t.throwsAsync(mech.createClient(clientContext({ authname: 'jörg', password: 'pass\u0007word' }).ctx).start());
  assertClientAuthFailure(t, clientError);
  t.regex(clientError.message, /password contains a character SASLprep/);
  assertNoSecret(t, clientError, 'pass\u0007word');
});

test('SCRAM-SHA-256: the client refuses iteration counts above its maximum', async (t) => {
  const mech = new ScramSha256Mechanism();
  const client = mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }, { maxIterations: 4095 }).ctx);
  const server = mech.createServer(serverContext(await usersWith({ alice: PASSWORD })));
  const first = await server.step(await client.start());
  const error = await t.throwsAsync(client.step(first.data));
  assertClientAuthFailure(t, error);
  t.regex(error.message, /4096 PBKDF2 iterations, more than the accepted maximum of 4095/);
  t.false(client.complete);
});

test('SCRAM-SHA-256: a tampered client proof is rejected', async (t) => {
  const mech = new ScramSha256Mechanism();
  const error = await t.throwsAsync(
    runExchange(
      mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx),
      mech.createServer(serverContext(await usersWith({ alice: PASSWORD }))),
      {
        clientToServer: (m, i) => (i === 1 ? replaceAttribute(m, 'p', flipFirstByteBase64) : m),
      },
    ),
    { instanceOf: SaslAuthenticationError },
  );
  t.regex(error!.reason, /invalid-proof/);
});

test('SCRAM-SHA-256: the client detects a forged server signature and server errors', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD });
  const forged = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx), mech.createServer(serverContext(db)), {
      serverToClient: (m, i) => (i === 1 ? replaceAttribute(m, 'v', flipFirstByteBase64) : m),
    }),
  );
  assertClientAuthFailure(t, forged);
  t.regex(forged.message, /server's signature is wrong/);
  const rejected = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx), mech.createServer(serverContext(db)), {
      serverToClient: (m, i) => (i === 1 ? Buffer.from('e=invalid-proof') : m),
    }),
  );
  assertClientAuthFailure(t, rejected);
  t.regex(rejected.message, /server rejected the authentication \(invalid-proof\)/);
  const nil = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx), mech.createServer(serverContext(db)), {
      serverToClient: (m, i) => (i === 1 ? null : m),
    }),
  );
  assertClientAuthFailure(t, nil);
});

test('SCRAM-SHA-256: nonce mismatches are detected on both sides', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD });
  // Server nonce that does not extend the client's: its first character differs (the random
  // client nonce may itself start with 'X').
  const clientSide = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx), mech.createServer(serverContext(db)), {
      serverToClient: (m, i) => (i === 0 ? replaceAttribute(m, 'r', (r) => `${r[0] === 'X' ? 'Y' : 'X'}${r.slice(1)}`) : m),
    }),
  );
  assertClientAuthFailure(t, clientSide);
  t.regex(clientSide.message, /nonce does not extend/);
  // Server that merely echoes the client nonce adds no freshness.
  const echo = await t.throwsAsync(
    runExchange(
      mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }, {}).ctx),
      new ScramSha256Mechanism({ generateNonce: () => 'n' }).createServer(serverContext(db)),
      {
        serverToClient: (m, i) => (i === 0 ? replaceAttribute(m, 'r', (r) => r.slice(0, -1)) : m),
      },
    ),
  );
  assertClientAuthFailure(t, echo);
  // Client-final carrying another nonce.
  const serverSide = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx), mech.createServer(serverContext(db)), {
      clientToServer: (m, i) => (i === 1 ? replaceAttribute(m, 'r', (r) => `${r}x`) : m),
    }),
    { instanceOf: SaslAuthenticationError },
  );
  t.regex(serverSide!.reason, /nonce differs/);
});

test('SCRAM-SHA-256: mandatory extensions and malformed messages are refused by the server', async (t) => {
  const db = await usersWith({ alice: PASSWORD });
  const mech = new ScramSha256Mechanism();
  for (const [message, reason] of [
    ['n,,m=x,n=alice,r=abc', /extensions-not-supported/],
    ['n,,n=al=ce,r=abc', /invalid-username-encoding/],
    ['n,,n=alice,r=ab c', /invalid-encoding/],
    [null, /missing/],
  ] as const) {
    const error = await t.throwsAsync(mech.createServer(serverContext(db)).step(message === null ? null : Buffer.from(message)), {
      instanceOf: SaslAuthenticationError,
    });
    t.regex(error!.reason, reason);
  }
  const invalidUtf8 = await t.throwsAsync(mech.createServer(serverContext(db)).step(Buffer.from([0x6e, 0x2c, 0x2c, 0xff])), {
    instanceOf: SaslAuthenticationError,
  });
  t.regex(invalidUtf8!.reason, /UTF-8/);
  // A finished session accepts nothing more.
  const server = mech.createServer(serverContext(db));
  const client = mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx);
  const first = await server.step(await client.start());
  await server.step(await client.step(first.data));
  await t.throwsAsync(server.step(Buffer.from('again')), { instanceOf: SaslAuthenticationError });
});

test('SCRAM-SHA-256: the server does no PBKDF2 per login (it uses the stored keys)', async (t) => {
  const db = new InMemoryUserDatabase();
  // An iteration count no server could afford to run: the exchange still answers at once.
  const verifier = await makeScramVerifier(PASSWORD, { iterations: 1 });
  db.setUser({ username: 'alice', verifiers: [{ ...verifier, iterations: 2_000_000_000 }] });
  const server = new ScramSha256Mechanism().createServer(serverContext(db));
  const started = Date.now();
  const first = await server.step(Buffer.from('n,,n=alice,r=clientnonce'));
  const nonce = /^r=([^,]+)/.exec(first.data!.toString())![1];
  const proof = Buffer.alloc(32, 7).toString('base64');
  await t.throwsAsync(server.step(Buffer.from(`c=biws,r=${nonce},p=${proof}`)), {
    instanceOf: SaslAuthenticationError,
    message: /invalid-proof/,
  });
  t.true(Date.now() - started < 1000);
});

test('authorization identity: asked only when USERNAME is declared; empty means none; proxying refused', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD, bob: 'bobs password' });
  // Declared and answered empty: no a= in the GS2 header.
  const empty = clientContext({ authname: 'alice', password: PASSWORD, username: '' }, { declareUsername: true });
  const r1 = await runExchange(mech.createClient(empty.ctx), mech.createServer(serverContext(db)));
  t.regex(r1.transcript[0]!, /^C: n,,n=alice,/);
  t.deepEqual(
    empty.log.calls[0]!.creds.map((c) => [c.type, c.prompt, c.challenge]),
    [
      [CredentialType.USERNAME, 'Please enter your authorization name', 'Authorization Name'],
      [CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name'],
      [CredentialType.PASSPHRASE, 'Please enter your password', 'Password'],
    ],
  );
  // Same name as the authentication name: accepted, and reported as the identity.
  const same = clientContext({ authname: 'alice', password: PASSWORD, username: 'alice' }, { declareUsername: true });
  const r2 = await runExchange(mech.createClient(same.ctx), mech.createServer(serverContext(db)));
  t.regex(r2.transcript[0]!, /^C: n,a=alice,n=alice,/);
  t.is(r2.username, 'alice');
  // Another user's name: refused even with the right password.
  const proxy = clientContext({ authname: 'alice', password: PASSWORD, username: 'bob' }, { declareUsername: true });
  const error = await t.throwsAsync(runExchange(mech.createClient(proxy.ctx), mech.createServer(serverContext(db))), {
    instanceOf: SaslAuthenticationError,
  });
  t.regex(error!.reason, /alice may not act as bob/);
});

test('client: missing answers and a missing callback fail with clear errors', async (t) => {
  const mech = new ScramSha256Mechanism();
  const noName = await t.throwsAsync(mech.createClient(clientContext({ authname: '', password: PASSWORD }).ctx).start());
  assertClientAuthFailure(t, noName);
  t.regex(noName.message, /no authentication name/);
  const noPassword = await t.throwsAsync(mech.createClient(clientContext({ authname: 'alice', password: '' }).ctx).start());
  assertClientAuthFailure(t, noPassword);
  const { ctx } = clientContext({ authname: 'alice', password: PASSWORD });
  const noCallback = await t.throwsAsync(
    mech.createClient({ ...ctx, auth: null, requestCredentials: makeCredentialRequester([], null) }).start(),
    { instanceOf: VirError },
  );
  t.regex(noCallback!.message, /No authentication callback available/);
  const client = mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx);
  await client.start();
  await t.throwsAsync(client.start(), { message: /unexpected exchange step/ });
});

// ---------------------------------------------------------------------------------------------
// Channel binding negotiation.

const EXPORTER: ChannelBinding = { type: 'tls-exporter', data: Buffer.alloc(32, 0xab) };

test('GS2 flag: "n" without binding data or when disabled, "y" when the server lacks -PLUS', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD });
  const first = async (options: Parameters<typeof clientContext>[1]) =>
    (await mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }, options).ctx).start())!.toString();
  t.regex(await first({}), /^n,,/);
  t.regex(await first({ channelBinding: EXPORTER, policy: 'disable' }), /^n,,/);
  t.regex(await first({ channelBinding: EXPORTER, serverMechanisms: ['SCRAM-SHA-256'] }), /^y,,/);
  // The server offers -PLUS but the user forced the plain mechanism: not a downgrade, so "n".
  t.regex(await first({ channelBinding: EXPORTER, serverMechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] }), /^n,,/);
  // "y" goes through when the server really has no channel binding ...
  const ok = await runExchange(
    mech.createClient(clientContext({ authname: 'alice', password: PASSWORD }, { channelBinding: EXPORTER }).ctx),
    mech.createServer(serverContext(db, { serverOffersChannelBinding: false })),
  );
  t.is(ok.username, 'alice');
  t.regex(ok.transcript[2]!, /^C: c=eSws,/); // base64("y,,")
});

test('downgrade: a "y" client against a server that offers -PLUS is refused', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD });
  const error = await t.throwsAsync(
    runExchange(
      mech.createClient(
        clientContext({ authname: 'alice', password: PASSWORD }, { channelBinding: EXPORTER, serverMechanisms: ['SCRAM-SHA-256'] }).ctx,
      ),
      mech.createServer(serverContext(db, { channelBinding: EXPORTER, serverOffersChannelBinding: true })),
    ),
    { instanceOf: SaslAuthenticationError },
  );
  t.regex(error!.reason, /server-does-support-channel-binding/);
});

test('policy "require": the plain mechanism fails before asking for credentials', async (t) => {
  const mech = new ScramSha256Mechanism();
  for (const [options, pattern] of [
    [{ channelBinding: null }, /no TLS channel binding data/],
    [{ channelBinding: EXPORTER, serverMechanisms: ['SCRAM-SHA-256'] }, /server does not offer SCRAM-SHA-256-PLUS/],
    [{ channelBinding: EXPORTER, serverMechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] }, /use SCRAM-SHA-256-PLUS/],
  ] as const) {
    const { ctx, log } = clientContext({ authname: 'alice', password: PASSWORD }, { ...options, policy: 'require' });
    const error = await t.throwsAsync(mech.createClient(ctx).start());
    assertClientAuthFailure(t, error);
    t.regex(error.message, pattern);
    t.is(log.calls.length, 0);
  }
});

test('SCRAM-SHA-256-PLUS: matching binding succeeds; tampered data, wrong type and missing binding fail', async (t) => {
  const plus = new ScramSha256PlusMechanism();
  t.is(plus.name, 'SCRAM-SHA-256-PLUS');
  t.true(plus.requiresChannelBinding);
  t.true(plus.priority > new ScramSha256Mechanism().priority);
  const db = await usersWith({ alice: PASSWORD });
  const client = (binding: ChannelBinding | null, policy: ChannelBindingPolicy = 'prefer') =>
    plus.createClient(
      clientContext(
        { authname: 'alice', password: PASSWORD },
        { channelBinding: binding, policy, serverMechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] },
      ).ctx,
    );
  const server = (binding: ChannelBinding | null) =>
    plus.createServer(serverContext(db, { channelBinding: binding, serverOffersChannelBinding: true }));

  const ok = await runExchange(client(EXPORTER), server(EXPORTER));
  t.is(ok.username, 'alice');
  t.regex(ok.transcript[0]!, /^C: p=tls-exporter,,n=alice,/);
  const c = /^C: c=([^,]+),/.exec(ok.transcript[2]!)![1]!;
  t.deepEqual(Buffer.from(c, 'base64'), Buffer.concat([Buffer.from('p=tls-exporter,,'), EXPORTER.data]));

  // A man in the middle terminates TLS: each side sees different binding data.
  const mitm = await t.throwsAsync(runExchange(client(EXPORTER), server({ type: 'tls-exporter', data: Buffer.alloc(32, 0xcd) })), {
    instanceOf: SaslAuthenticationError,
  });
  t.regex(mitm!.reason, /channel-bindings-dont-match/);
  // The c= attribute rewritten in transit.
  const rewritten = await t.throwsAsync(
    runExchange(client(EXPORTER), server(EXPORTER), {
      clientToServer: (m, i) => (i === 1 ? replaceAttribute(m, 'c', flipFirstByteBase64) : m),
    }),
    { instanceOf: SaslAuthenticationError },
  );
  t.regex(rewritten!.reason, /channel-bindings-dont-match/);
  const wrongType = await t.throwsAsync(runExchange(client(EXPORTER), server({ type: 'tls-server-end-point', data: EXPORTER.data })), {
    instanceOf: SaslAuthenticationError,
  });
  t.regex(wrongType!.reason, /unsupported-channel-binding-type/);
  const noServerBinding = await t.throwsAsync(runExchange(client(EXPORTER), server(null)), { instanceOf: SaslAuthenticationError });
  t.regex(noServerBinding!.reason, /no TLS channel binding data/);

  const noClientBinding = await t.throwsAsync(client(null).start());
  assertClientAuthFailure(t, noClientBinding);
  const disabled = await t.throwsAsync(client(EXPORTER, 'disable').start());
  assertClientAuthFailure(t, disabled);
  t.regex(disabled.message, /disabled by configuration/);

  // The server of each variant refuses the other's GS2 flags.
  const plusServerGetsN = await t.throwsAsync(server(EXPORTER).step(Buffer.from('n,,n=alice,r=abc')), {
    instanceOf: SaslAuthenticationError,
  });
  t.regex(plusServerGetsN!.reason, /requires channel binding/);
  const plainServerGetsP = await t.throwsAsync(
    new ScramSha256Mechanism()
      .createServer(serverContext(db, { channelBinding: EXPORTER, serverOffersChannelBinding: true }))
      .step(Buffer.from('p=tls-exporter,,n=alice,r=abc')),
    {
      instanceOf: SaslAuthenticationError,
    },
  );
  t.regex(plainServerGetsP!.reason, /channel-binding-not-supported/);
});

// ---------------------------------------------------------------------------------------------
// PLAIN.

test('PLAIN: one message with authzid NUL authcid NUL password; verified against the SCRAM verifier', async (t) => {
  const plain = new PlainMechanism();
  t.true(plain.requiresSecureChannel);
  t.false(plain.requiresChannelBinding);
  const db = await usersWith({ alice: PASSWORD });
  const { ctx, log } = clientContext({ authname: 'alice', password: PASSWORD });
  const client = plain.createClient(ctx);
  const { transcript, username } = await runExchange(client, plain.createServer(serverContext(db)));
  t.deepEqual(transcript, [`C: \0alice\0${PASSWORD}`, 'S: <nil>']);
  t.is(username, 'alice');
  t.true(client.complete);
  t.is(log.calls.length, 1);
  // The authorization name goes first when declared.
  const withAuthz = clientContext({ authname: 'alice', password: PASSWORD, username: 'alice' }, { declareUsername: true });
  t.is((await plain.createClient(withAuthz.ctx).start())!.toString(), `alice\0alice\0${PASSWORD}`);
  // SASLprep on the server side: U+2168 matches a stored "IX".
  const db2 = await usersWith({ carol: 'IX' });
  t.is(
    (
      await runExchange(
        plain.createClient(clientContext({ authname: 'carol', password: '\u2168' }).ctx),
        plain.createServer(serverContext(db2)),
      )
    ).username,
    'carol',
  );
});

test('PLAIN: wrong password, unknown user, proxying and malformed input are refused without leaking the password', async (t) => {
  const plain = new PlainMechanism();
  const db = await usersWith({ alice: PASSWORD, bob: 'bobs password' });
  const attempt = async (message: Buffer | null) => {
    const server = plain.createServer(serverContext(db));
    const error = await t.throwsAsync(server.step(message), { instanceOf: SaslAuthenticationError });
    t.is(server.username, null);
    return error!;
  };
  const wrong = await attempt(Buffer.from('\0alice\0guess-one'));
  t.regex(wrong.reason, /wrong password/);
  assertNoSecret(t, wrong, 'guess-one');
  const unknown = await attempt(Buffer.from(`\0mallory\0${PASSWORD}`));
  t.regex(unknown.reason, /unknown-user/);
  assertNoSecret(t, unknown, PASSWORD);
  const proxy = await attempt(Buffer.from(`bob\0alice\0${PASSWORD}`));
  t.regex(proxy.reason, /alice may not act as bob/);
  for (const bad of [
    null,
    Buffer.from('alice'),
    Buffer.from('\0alice'),
    Buffer.from('\0\0pw'),
    Buffer.from('\0alice\0'),
    Buffer.from('\0a\0b\0c'),
    Buffer.from([0, 0x61, 0, 0xff]),
  ]) {
    await attempt(bad);
  }
  const controlChars = await attempt(Buffer.from('\0alice\0secret\u0007bell'));
  assertNoSecret(t, controlChars, 'secret\u0007bell');
  // A session is single use.
  const server = plain.createServer(serverContext(db));
  await server.step(Buffer.from(`\0alice\0${PASSWORD}`));
  await t.throwsAsync(server.step(Buffer.from(`\0alice\0${PASSWORD}`)), { instanceOf: SaslAuthenticationError });
});

test('PLAIN client: refuses NUL in fields and unexpected server challenges', async (t) => {
  const plain = new PlainMechanism();
  const nul = await t.throwsAsync(plain.createClient(clientContext({ authname: 'ali\0ce', password: PASSWORD }).ctx).start());
  assertClientAuthFailure(t, nul);
  const client = plain.createClient(clientContext({ authname: 'alice', password: PASSWORD }).ctx);
  await client.start();
  t.is(await client.step(null), null);
  const challenge = await t.throwsAsync(client.step(Buffer.from('more?')));
  assertClientAuthFailure(t, challenge);
});

test('client errors: code 45 in the REMOTE domain and never the password', async (t) => {
  const mech = new ScramSha256Mechanism();
  const db = await usersWith({ alice: PASSWORD });
  const secret = 'Sup3r-Secret-Pa55';
  await db.setPassword('alice', secret);
  const error = await t.throwsAsync(
    runExchange(mech.createClient(clientContext({ authname: 'alice', password: secret }).ctx), mech.createServer(serverContext(db)), {
      serverToClient: (m, i) => (i === 1 ? Buffer.from('e=invalid-proof') : m),
    }),
  );
  assertClientAuthFailure(t, error);
  t.regex(error.message, /^authentication failed: SCRAM-SHA-256: /);
  assertNoSecret(t, error, secret);
});
