// Failure throttling on the SASL server (issue 10, item 6): an attacker's failures slow and then
// refuse the attacked name from the attacker's source only; the right password from elsewhere
// gets in at once; flooding the tables with invented names or sources erases no live record.

import test from 'ava';
import { AuthType, RemoteProc, SessionState, VirError, type ServerAuthContext, type TransportInfo } from '@virtauth/core';
import { SaslAuthProvider } from '../src/sasl-provider.js';
import { PlainMechanism } from '../src/sasl/plain.js';
import { InMemoryUserDatabase } from '../src/userdb/in-memory-user-database.js';
import { FailureThrottle, addressNetwork, failureSource, type ThrottleClock } from '../src/sasl/failure-throttle.js';

const alicePassword = 'alice-Pa55-thr0ttle';

/**
 * A clock that moves only when told, or by each sleep when `advancing` (one attempt after the
 * other). Stopped, sleeps are recorded, not waited: as if every attempt came on a connection of
 * its own at the same moment, the fastest an attacker can go.
 */
class ManualClock implements ThrottleClock {
  time = 1_000_000;
  readonly sleeps: number[] = [];
  constructor(private readonly advancing = false) {}
  now(): number {
    return this.time;
  }
  sleep(ms: number): Promise<void> {
    if (ms > 0) this.sleeps.push(ms);
    if (this.advancing) this.time += ms;
    return Promise.resolve();
  }
}

interface FakeConnection extends Omit<ServerAuthContext, 'authenticated'> {
  authenticated: boolean;
  warnings: Record<string, unknown>[];
  closing: boolean;
}

function connection(transport: TransportInfo): FakeConnection {
  const conn: FakeConnection = {
    connectionId: 1,
    transport,
    socketAuth: AuthType.SASL,
    readOnly: false,
    identity: {},
    authenticated: false,
    markAuthenticated(identity) {
      Object.assign(conn.identity, identity);
      conn.authenticated = true;
    },
    closeAfterReply() {
      conn.closing = true;
    },
    state: new SessionState(),
    log: { info() {}, debug() {}, warn: (obj: object) => conn.warnings.push(obj as Record<string, unknown>) },
    warnings: [],
    closing: false,
  };
  return conn;
}

const unixPeer = (uid: number): TransportInfo => ({ kind: 'unix', secure: true, peer: { uid, gid: uid, pid: 4242 } });

async function server(clock: ManualClock, settings: { maxFailuresPerUser?: number } = {}) {
  const users = new InMemoryUserDatabase({ iterations: 4096 });
  await users.setPassword('alice', alicePassword);
  const provider = new SaslAuthProvider(
    () => [new PlainMechanism()],
    {},
    { users, failureDelayMs: 250, failureWindowMs: 60_000, maxFailuresPerUser: settings.maxFailuresPerUser ?? 10, throttleClock: clock },
  );
  const procs = provider.server!.procedures;
  /** One PLAIN login on `conn`: 'ok' or the reason the server logged. */
  return async (conn: FakeConnection, user: string, password: string): Promise<string> => {
    try {
      await procs[RemoteProc.AUTH_SASL_INIT]!.handle(conn, undefined);
      await procs[RemoteProc.AUTH_SASL_START]!.handle(conn, { mech: 'PLAIN', nil: 0, data: Buffer.from(`\0${user}\0${password}`) });
      return conn.authenticated ? 'ok' : 'incomplete';
    } catch (e) {
      if (!(e instanceof VirError)) throw e;
      return String(conn.warnings.filter((w) => w.event === 'auth.sasl.failed').at(-1)?.reason);
    }
  };
}

/** `count` failed logins as `user` from `transport`, five per connection as the server allows. */
async function failLogins(
  login: Awaited<ReturnType<typeof server>>,
  transport: TransportInfo,
  user: string,
  count: number,
): Promise<string[]> {
  const reasons: string[] = [];
  let conn = connection(transport);
  for (let n = 0; n < count; n++) {
    if (conn.closing) conn = connection(transport);
    reasons.push(await login(conn, user, 'wrong-Pa55'));
  }
  return reasons;
}

test('an attacker failing 20 times from one source is slowed and then refused; alice from another source gets in at once', async (t) => {
  const clock = new ManualClock(true);
  const login = await server(clock);
  const attacker = unixPeer(1001);

  const reasons = await failLogins(login, attacker, 'alice', 20);
  t.deepEqual(new Set(reasons), new Set(['PLAIN: wrong password']));
  // Each failure waits twice as long, up to the cap of 8 s.
  t.deepEqual(clock.sleeps.slice(0, 6), [250, 500, 1000, 2000, 4000, 8000]);
  t.true(
    clock.sleeps.every((ms) => ms <= 8000),
    `no delay above 8 s: ${Math.max(...clock.sleeps)}`,
  );

  // The right password from the attacker's source is refused too: guessing it there gains nothing.
  t.regex(await login(connection(attacker), 'alice', alicePassword), /locked out from this source/);

  // Alice on her own uid: in at once, no delay.
  clock.sleeps.length = 0;
  const alice = connection(unixPeer(1000));
  t.is(await login(alice, 'alice', alicePassword), 'ok');
  t.deepEqual(clock.sleeps, [], 'alice waited for nothing');
  t.is(alice.identity.username, 'alice');
});

test('attempts in parallel gain nothing: each answer waits for the one before it, up to 8 s', async (t) => {
  const clock = new ManualClock();
  const login = await server(clock);
  const attempts = Array.from({ length: 8 }, () => login(connection(unixPeer(1001)), 'alice', 'wrong-Pa55'));
  await Promise.all(attempts);
  t.deepEqual(clock.sleeps, [250, 750, 1750, 3750, 7750, 8000, 8000, 8000]);
});

test("flooding with 100k invented user names does not reset the attacker's own record", async (t) => {
  const clock = new ManualClock();
  const login = await server(clock);
  const attacker = unixPeer(1001);
  await failLogins(login, attacker, 'alice', 10);
  t.regex(await login(connection(attacker), 'alice', alicePassword), /locked out/, 'locked before the flood');

  // An empty password fails before any PBKDF2 work, with the name recorded: the cheapest flood.
  for (let n = 0; n < 100_000; n++) await login(connection(attacker), `nobody${n}`, '');
  clock.time += 1000; // still inside the window

  t.regex(await login(connection(attacker), 'alice', alicePassword), /locked out from this source/, 'still locked after the flood');
  clock.sleeps.length = 0;
  t.is(await login(connection(unixPeer(1000)), 'alice', alicePassword), 'ok', 'alice from her own source is unaffected');
  t.deepEqual(clock.sleeps, []);
});

test('flooding with 100k sources fills the table without erasing anyone; a new source is delayed at most 8 s, never refused', async (t) => {
  const clock = new ManualClock();
  const login = await server(clock);
  const attacker = unixPeer(1001);
  await failLogins(login, attacker, 'alice', 10);
  for (let n = 0; n < 100_000; n++) await login(connection(unixPeer(200_000 + n)), 'alice', '');
  clock.time += 1000;

  t.regex(await login(connection(attacker), 'alice', alicePassword), /locked out from this source/, "the attacker's record survived");
  clock.sleeps.length = 0;
  t.is(await login(connection(unixPeer(1000)), 'alice', alicePassword), 'ok', 'a source the full table has no room for still gets in');
  t.true(
    clock.sleeps.every((ms) => ms <= 8000),
    `waited ${clock.sleeps.join(', ')} ms`,
  );
});

test('records are forgotten once their window has passed, and the table stays bounded', (t) => {
  const clock = new ManualClock();
  const throttle = new FailureThrottle({ maxFailures: 3, windowMs: 1000, baseDelayMs: 10, maxRecords: 100, maxNamesPerSource: 4, clock });
  for (let n = 0; n < 3; n++) throttle.recordFailure('uid:1', 'alice', 1);
  t.true(throttle.isRefused('uid:1', 'alice'));
  t.false(throttle.isRefused('uid:2', 'alice'), 'another source is not refused');
  for (let n = 0; n < 1000; n++) throttle.recordFailure(`uid:${1000 + n}`, `user${n}`, 1);
  t.true(throttle.size.pairs <= 100 && throttle.size.sources <= 100, JSON.stringify(throttle.size));
  t.true(throttle.isRefused('uid:1', 'alice'), 'a live record is never evicted');
  // Names beyond a source's quota share its record: they lock each other, not the named ones.
  for (let n = 0; n < 10; n++) throttle.recordFailure('uid:1', `spray${n}`, 1);
  t.true(throttle.isRefused('uid:1', 'someone-else'));
  clock.time += 1001;
  t.false(throttle.isRefused('uid:1', 'alice'), 'forgotten after the window');
  throttle.recordFailure('uid:5', 'bob', 1);
  t.deepEqual(throttle.size, { pairs: 1, sources: 1 }, 'expired records were dropped');
});

test('sources: unix uid, TCP address (IPv6 by /64), TLS certificate', (t) => {
  t.is(failureSource(unixPeer(1000)), 'uid:1000');
  t.is(failureSource({ kind: 'tcp', secure: false, remoteAddress: '192.0.2.7;51000' }), 'ip:192.0.2.7');
  t.is(failureSource({ kind: 'tcp', secure: false, remoteAddress: '::ffff:192.0.2.7;51000' }), 'ip:192.0.2.7');
  t.is(failureSource({ kind: 'tcp', secure: false, remoteAddress: '2001:db8:0:1:aaaa::5;51000' }), 'ip:2001:db8:0:1::/64');
  t.is(addressNetwork('2001:db8::1'), '2001:db8:0:0::/64');
  t.is(addressNetwork('fe80::1%eth0'), 'fe80:0:0:0::/64');
  const fakeTls = { getPeerX509Certificate: () => ({ fingerprint256: 'AB:CD' }) } as unknown as NonNullable<TransportInfo['tls']>;
  t.is(failureSource({ kind: 'tls', secure: true, tls: fakeTls, remoteAddress: '192.0.2.7;1' }), 'cert:AB:CD');
});
