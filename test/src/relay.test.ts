// The credential relay end to end: a driver in a daemon (XenAPI, or the probe driver) needs
// credentials during CONNECT_OPEN and they come back from the client, through one or two daemons.
// Every hop authenticates with SASL SCRAM-SHA-256: the client to its daemon from its auth.conf,
// daemon A to daemon B from A's own auth.conf. Tests run serially: the client library's opens
// share one prompt queue, and several tests measure time.

import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  OpenFlag,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RelayProc,
  RelayStatus,
  RemoteProc,
  RpcConnection,
  VirError,
  credential,
  parseUri,
  relayProtocol as p,
  remote,
  xdr,
  type CredentialSource,
} from '@virtauth/core';
import { openTransport } from '@virtauth/drivers';
import {
  RelayCancellation,
  RelayClient,
  createRelayClient,
  enableRelay,
  runRelayHandler,
  type ClientRelayAuditRecord,
  type RelayPolicy,
} from '@virtauth/relay';
import { openAuth, type Connection } from 'virtauth';

import { startXenApiServer, type XenApiServer } from './fixtures/xenapi-server.js';
import { PrivateLibvirtd, interopTest, runProcess, runVirsh, tempDir, whenEmitted } from './peers/index.js';
import {
  RecordingAuth,
  RelayDaemon,
  RelayProbeDriver,
  answerWith,
  authConfSource,
  authConfText,
  chainUri,
  neverAnswer,
  removeDir,
  virErrorOf,
  waitForNoClients,
  writeAuthConf,
  xenapiUriVia,
  xenapiDriverUri,
  type DaemonAuditRecord,
} from './relay-helpers.js';
import { RawClient } from './sasl-test-helpers.js';
import { virtauthBin } from './sasl-support.js';

const secret = (label: string) => `${label}-${randomBytes(9).toString('base64url')}`;
const ALICE_PASSWORD = secret('alice-pw');
const HOP_PASSWORD = secret('hop-pw');
const XEN_ROOT_PASSWORD = secret('xen-root-pw');
const LOAD_CLIENTS = 200;
const loadUsers = Array.from({ length: LOAD_CLIENTS }, (_, i) => ({ name: `user${i}`, password: secret(`user${i}-pw`) }));
const allSecrets = [ALICE_PASSWORD, HOP_PASSWORD, XEN_ROOT_PASSWORD, ...loadUsers.map((u) => u.password)];

const { AUTHNAME, PASSPHRASE } = CredentialType;

interface World {
  dir: string;
  xen: XenApiServer;
  a: RelayDaemon;
  b: RelayDaemon;
  probe: RelayProbeDriver;
  /** The client's auth.conf: alice's SASL login to any daemon on a unix socket. */
  clientSources: CredentialSource[];
  clientAuthConf: string;
  clientAudit: ClientRelayAuditRecord[];
  /** Every error message a client saw, for the secret check. */
  errorMessages: string[];
  /** Daemons started by single tests, kept for the secret check. */
  extraDaemons: RelayDaemon[];
}

let world: World;

test.before(async () => {
  const dir = await tempDir('vr');
  // Daemons in this process read LIBVIRT_AUTH_FILE for their own auth.conf: keep the machine's
  // files out; each daemon's credentials are registered explicitly below.
  const emptyAuthConf = await writeAuthConf(dir, 'empty-auth.conf', '');
  process.env.LIBVIRT_AUTH_FILE = emptyAuthConf;

  const xen = await startXenApiServer({
    users: { root: XEN_ROOT_PASSWORD, ...Object.fromEntries(loadUsers.map((u) => [u.name, u.password])) },
  });
  const b = await RelayDaemon.start({
    name: 'virtauthd-B',
    dir,
    users: { alice: ALICE_PASSWORD, 'hop-a': HOP_PASSWORD },
    allowedUris: [xenapiDriverUri(xen.port)],
  });
  const aAuthConf = await writeAuthConf(
    dir,
    'a-auth.conf',
    authConfText([{ service: 'libvirt', host: 'localhost', username: 'hop-a', password: HOP_PASSWORD }]),
  );
  // A opens only the hops to B that the tests take: XenAPI and the probe driver behind B.
  const a = await RelayDaemon.start({
    name: 'virtauthd-A',
    dir,
    users: { alice: ALICE_PASSWORD },
    authConfPath: aAuthConf,
    allowedUris: [xenapiUriVia(b.socket, xen.port), b.uriFor('relayprobe', 'probe=*&count=*&deadline_ms=*')],
  });
  const probe = new RelayProbeDriver();
  b.registerDriver(probe);
  const clientAuthConf = await writeAuthConf(
    dir,
    'client-auth.conf',
    authConfText([{ service: 'libvirt', host: 'localhost', username: 'alice', password: ALICE_PASSWORD }]),
  );
  world = {
    dir,
    xen,
    a,
    b,
    probe,
    clientSources: [await authConfSource(clientAuthConf)],
    clientAuthConf,
    clientAudit: [],
    errorMessages: [],
    extraDaemons: [],
  };
});

test.after.always(async () => {
  if (!world) return;
  for (const d of [world.a, world.b, ...world.extraDaemons]) await d.stop();
  await world.xen.close();
  await removeDir(world.dir);
});

interface OpenOptions {
  policy?: RelayPolicy;
  signal?: AbortSignal;
  sources?: CredentialSource[];
  relay?: boolean;
}

/**
 * These tests open hundreds of times from one process through the same two daemons: the
 * per-origin rate (which has its own test in client-security) is raised for them.
 */
const MANY_PER_ORIGIN = { maxRequests: 100_000, windowMs: 60_000 };

function open(uri: string, auth: RecordingAuth | null, opts: OpenOptions = {}): Promise<Connection> {
  return openAuth(uri, auth, 0, {
    credentialSources: opts.sources ?? world.clientSources,
    relayAudit: (r) => world.clientAudit.push(r),
    relayPolicy: { perOrigin: MANY_PER_ORIGIN, ...opts.policy },
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.relay !== undefined ? { relay: opts.relay } : {}),
  });
}

/** The open's rejection, recorded for the secret check. */
async function openFailure(promise: Promise<unknown>): Promise<VirError> {
  // An open that unexpectedly succeeds is closed, so its connection does not outlive the test.
  const e = await virErrorOf(
    promise.then(async (value) => {
      if (value && typeof (value as Connection).close === 'function') await (value as Connection).close();
      return value;
    }),
  );
  world.errorMessages.push(e.message);
  return e;
}

const xenUri = () => xenapiUriVia(world.b.socket, world.xen.port);
const xenUriViaA = () => chainUri(world.a.socket, xenUri());
const xenDriverUri = () => xenapiDriverUri(world.xen.port);
const hopB = () => ({ daemon: world.b.processName, driver: 'xenapi', uri: xenDriverUri() });
const hopA = () => ({ daemon: world.a.processName, driver: 'remote', uri: xenUri() });
const topologies = () => [
  { hops: 1, uri: xenUri(), origin: [hopB()] },
  { hops: 2, uri: xenUriViaA(), origin: [hopB(), hopA()] },
];

/** Audit records a daemon logged after `since` (a count taken before the step). */
const auditsSince = (d: RelayDaemon, since: number): DaemonAuditRecord[] => d.audits().slice(since);

/** Every callback settled and every connection torn down on every daemon. */
async function assertNothingWaiting(
  t: ExecutionContext,
  auth: RecordingAuth | null,
  daemons: RelayDaemon[] = [world.a, world.b],
): Promise<void> {
  if (auth) {
    await Promise.allSettled([...auth.running]);
    t.is(auth.running.size, 0, 'every credential callback settled');
  }
  await waitForNoClients(daemons);
  t.pass();
}

const XENAPI_PROMPTS = [
  { type: AUTHNAME, prompt: 'Enter username for 127.0.0.1 [root]', challenge: '127.0.0.1', defresult: 'root' },
  { type: PASSPHRASE, prompt: "Enter root's password for 127.0.0.1", challenge: '127.0.0.1', defresult: null },
];

test.serial(
  "client → B → XenAPI and client → A → B → XenAPI: SCRAM on every hop; the callback sees the origin chain and the driver's exact prompts",
  async (t) => {
    for (const { hops, uri, origin } of topologies()) {
      const auditA = world.a.audits().length;
      const auditB = world.b.audits().length;
      const clientAudit = world.clientAudit.length;
      const saslB = world.b.log.events('auth.sasl.succeeded').length;
      const saslA = world.a.log.events('auth.sasl.succeeded').length;
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], answerWith('root', XEN_ROOT_PASSWORD));
      const conn = await open(uri, auth);
      t.is(await conn.getHostname(), 'xen1.example', `${hops} hop(s): the XenAPI host answers`);
      t.deepEqual((await conn.listAllDomains(3)).map((d) => d.name).sort(), ['vm1', 'vm2']);
      await conn.close();

      t.deepEqual(
        auth.calls.map((c) => ({ creds: c.credentials, service: c.service, host: c.host, origin: c.origin })),
        XENAPI_PROMPTS.map((cred) => ({ creds: [cred], service: 'xenapi', host: '127.0.0.1', origin })),
        `${hops} hop(s): one request per credential, origin[0] nearest the driver`,
      );
      for (const call of auth.calls) t.truthy(call.signal, 'relayed requests carry an abort signal');

      // SCRAM-SHA-256 on each hop: alice to the first daemon, hop-a from A to B.
      const bLogins = world.b.log.events('auth.sasl.succeeded').slice(saslB);
      const aLogins = world.a.log.events('auth.sasl.succeeded').slice(saslA);
      if (hops === 1) {
        t.deepEqual(
          bLogins.map((r) => [r.mechanism, r.user]),
          [['SCRAM-SHA-256', 'alice']],
        );
        t.is(aLogins.length, 0);
      } else {
        t.deepEqual(
          aLogins.map((r) => [r.mechanism, r.user]),
          [['SCRAM-SHA-256', 'alice']],
        );
        t.deepEqual(
          bLogins.map((r) => [r.mechanism, r.user]),
          [['SCRAM-SHA-256', 'hop-a']],
        );
      }

      // Audit: one OK record per request at each daemon it crossed, and at the client.
      const bAudit = auditsSince(world.b, auditB);
      t.deepEqual(
        bAudit.map((r) => [r.service, r.host, r.credentialTypes, r.outcome]),
        [
          ['xenapi', '127.0.0.1', ['AUTHNAME'], 'OK'],
          ['xenapi', '127.0.0.1', ['PASSPHRASE'], 'OK'],
        ],
      );
      t.deepEqual(bAudit[0]!.origin, [hopB()]);
      t.is(auditsSince(world.a, auditA).length, hops === 2 ? 2 : 0);
      if (hops === 2) t.deepEqual(auditsSince(world.a, auditA)[0]!.origin, [hopB(), hopA()]);
      const via = hops === 2 ? ` via ${world.a.processName}` : '';
      t.deepEqual(
        world.clientAudit.slice(clientAudit).map((r) => [r.requester, r.credentialTypes, r.outcome]),
        [
          [`xenapi on 127.0.0.1 via ${world.b.processName}${via}`, ['AUTHNAME'], 'OK'],
          [`xenapi on 127.0.0.1 via ${world.b.processName}${via}`, ['PASSPHRASE'], 'OK'],
        ],
      );
      await assertNothingWaiting(t, auth);
    }
  },
);

test.serial(
  'client policy: a rule on the driver, the host or a daemon in the chain denies with AUTH_FAILED before the callback is asked',
  async (t) => {
    const cases: { rule: NonNullable<RelayPolicy['rules']>[number]; uri: string; denied: boolean }[] = [
      { rule: { driver: 'xen*', action: 'deny' }, uri: xenUri(), denied: true },
      { rule: { host: '127.0.0.*', action: 'deny' }, uri: xenUri(), denied: true },
      { rule: { daemon: 'virtauthd-A@*', action: 'deny' }, uri: xenUriViaA(), denied: true },
      // The same daemon rule does not touch a chain without A.
      { rule: { daemon: 'virtauthd-A@*', action: 'deny' }, uri: xenUri(), denied: false },
      // Denying only PASSPHRASE lets the username through, then stops the open.
      { rule: { driver: 'xenapi', types: [PASSPHRASE], action: 'deny' }, uri: xenUri(), denied: true },
    ];
    for (const { rule, uri, denied } of cases) {
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], answerWith('root', XEN_ROOT_PASSWORD));
      const attempt = open(uri, auth, { policy: { rules: [rule] } });
      if (!denied) {
        await (await attempt).close();
        t.is(auth.calls.length, 2, `${JSON.stringify(rule)} does not apply`);
        continue;
      }
      const e = await openFailure(attempt);
      t.is(e.code, ErrorCode.AUTH_FAILED, JSON.stringify(rule));
      t.is(e.domain, ErrorDomain.AUTH);
      t.regex(e.message, /policy does not let xenapi on 127\.0\.0\.1 via virtauthd-B@\S+.* ask for (AUTHNAME|PASSPHRASE)/);
      const askedTypes = auth.calls.flatMap((c) => c.credentials.map((x) => x.type));
      t.deepEqual(askedTypes, rule.types ? [AUTHNAME] : [], 'denied credentials never reach the callback');
      await assertNothingWaiting(t, auth);
    }
  },
);

test.serial(
  'by default only declared types are relayed: a client that declared AUTHNAME alone gets AUTH_UNAVAILABLE for the PASSPHRASE',
  async (t) => {
    for (const { hops, uri } of topologies()) {
      const auth = new RecordingAuth([AUTHNAME], answerWith('root', 'never-used'));
      const e = await openFailure(open(uri, auth));
      t.is(e.code, ErrorCode.AUTH_UNAVAILABLE, `${hops} hop(s)`);
      t.is(e.domain, ErrorDomain.AUTH);
      t.regex(e.message, /xenapi on 127\.0\.0\.1 via virtauthd-B@\S+.* needs PASSPHRASE, which the client said it cannot answer/);
      t.deepEqual(
        auth.calls.map((c) => c.credentials.map((x) => x.type)),
        [[AUTHNAME]],
      );
      await assertNothingWaiting(t, auth);
    }
  },
);

test.serial("the cap per open stops a flood of requests: the client's own cap and the daemon's relay_max_requests_per_open", async (t) => {
  const flood = (d: RelayDaemon) => d.uriFor('relayprobe', 'probe=flood&count=50');
  // The client allows 3 per open: the fourth is refused with AUTH_FAILED and never shown.
  const auth = new RecordingAuth([AUTHNAME], answerWith('probe-user', ''));
  const e = await openFailure(open(flood(world.b), auth, { policy: { maxRequestsPerOpen: 3 } }));
  t.is(e.code, ErrorCode.AUTH_FAILED);
  t.is(e.domain, ErrorDomain.AUTH);
  t.regex(e.message, /exceeded the limit of 3 credential requests per open/);
  t.is(auth.calls.length, 3);
  const observed = world.probe.observations.at(-1)!;
  t.deepEqual(observed.answers, ['probe-user', 'probe-user', 'probe-user']);
  t.is(observed.error?.code, ErrorCode.AUTH_FAILED, 'the driver itself saw the refusal');
  await assertNothingWaiting(t, auth);

  // A daemon configured for 2 per open caps a client that would allow 8.
  const capped = await RelayDaemon.start({
    name: 'virtauthd-capped',
    dir: world.dir,
    users: { alice: ALICE_PASSWORD },
    settings: { relay_max_requests_per_open: 2 },
  });
  world.extraDaemons.push(capped);
  const cappedProbe = new RelayProbeDriver();
  capped.registerDriver(cappedProbe);
  const auth2 = new RecordingAuth([AUTHNAME], answerWith('probe-user', ''));
  const e2 = await openFailure(open(flood(capped), auth2));
  t.is(e2.code, ErrorCode.AUTH_FAILED);
  t.regex(e2.message, /exceeded the limit of 2 credential requests per open/);
  t.is(auth2.calls.length, 2);
  await assertNothingWaiting(t, auth2, [capped]);
});

test.serial(
  'deadline: a client timeout of 300 ms ends the open with TIMED_OUT (AUTH_UNAVAILABLE) within 100 ms of expiry, on 1 and 2 hops',
  async (t) => {
    for (const { hops, uri } of topologies()) {
      const auditB = world.b.audits().length;
      const clientAudit = world.clientAudit.length;
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], neverAnswer());
      const attempt = open(uri, auth, { policy: { timeoutMs: 300 } });
      const e = await openFailure(attempt);
      const failedAt = Date.now();
      t.is(e.code, ErrorCode.AUTH_UNAVAILABLE, `${hops} hop(s)`);
      t.is(e.domain, ErrorDomain.AUTH);
      t.is(e.int1, 2, 'relay status TIMED_OUT travels with the error');
      t.is(auth.calls.length, 1);
      const call = auth.calls[0]!;
      t.truthy(call.deadline);
      const window = call.deadline! - call.receivedAt;
      t.true(window <= 300 && window > 200, `the callback was given ${window} ms of the 300`);
      const late = failedAt - call.deadline!;
      t.true(late < 100 && late > -60, `the open failed ${late} ms after the deadline`);
      t.true(call.signal!.aborted, "the callback's signal ends with the deadline");
      t.deepEqual(
        auditsSince(world.b, auditB).map((r) => r.outcome),
        ['TIMED_OUT'],
      );
      t.deepEqual(
        world.clientAudit.slice(clientAudit).map((r) => r.outcome),
        ['TIMED_OUT'],
      );
      await assertNothingWaiting(t, auth);
    }
  },
);

test.serial("deadline: the daemon's relay_max_timeout caps what the client asked for", async (t) => {
  const short = await RelayDaemon.start({
    name: 'virtauthd-short',
    dir: world.dir,
    users: { alice: ALICE_PASSWORD },
    settings: { relay_max_timeout: 1 },
    allowedUris: [xenapiDriverUri(world.xen.port)],
  });
  world.extraDaemons.push(short);
  // ENABLE's reply already says so.
  const raw = await RawClient.connect(`test+unix:///default?socket=${short.socket}`);
  await raw.login({ authname: 'alice', passphrase: ALICE_PASSWORD, mechanism: 'SCRAM-SHA-256' });
  const enabled = await raw.rpc.call(
    RELAY_PROGRAM,
    RELAY_PROTOCOL_VERSION,
    RelayProc.ENABLE,
    p.relayEnableArgs,
    { cred_types: [AUTHNAME], person_present: 1, timeout_ms: 60_000, max_requests: 8 },
    p.relayEnableRet,
  );
  t.deepEqual(enabled, { daemon: short.processName, max_timeout_ms: 1000 });
  raw.close();

  const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], neverAnswer());
  const started = Date.now();
  const e = await openFailure(open(xenapiUriVia(short.socket, world.xen.port), auth, { policy: { timeoutMs: 60_000 } }));
  const elapsed = Date.now() - started;
  t.is(e.code, ErrorCode.AUTH_UNAVAILABLE);
  t.is(e.int1, 2);
  const call = auth.calls[0]!;
  const window = call.deadline! - call.receivedAt;
  t.true(window <= 1000 && window > 900, `the callback was given ${window} ms: the daemon's 1 s, not the client's 60 s`);
  t.true(elapsed < 1000 + 500, `failed after ${elapsed} ms`);
  await assertNothingWaiting(t, auth, [short]);
});

test.serial("deadline: a driver's own deadline travels down the chain; each hop forwards the time that remains", async (t) => {
  const auth = new RecordingAuth([AUTHNAME], answerWith('probe-user', ''));
  const conn = await open(chainUri(world.a.socket, world.b.uriFor('relayprobe', 'probe=ask&deadline_ms=400')), auth);
  await conn.close();
  const observed = world.probe.observations.at(-1)!;
  const call = auth.calls[0]!;
  // Without propagation the client would see its own 120 s default; it sees the driver's deadline
  // (as B's REQUEST to A and A's REQUEST to the client each carried the time left).
  t.true(call.deadline! <= observed.deadline! + 2, `client deadline ${call.deadline} vs driver deadline ${observed.deadline}`);
  t.true(call.deadline! > observed.deadline! - 50);
  t.deepEqual(
    call.origin.map((h) => [h.daemon, h.driver]),
    [
      [world.b.processName, 'relayprobe'],
      [world.a.processName, 'remote'],
    ],
  );
  await assertNothingWaiting(t, auth);
});

test.serial(
  "a prompt is withdrawn when the client's own deadline passes, so the next one in the shared prompt queue is shown",
  async (t) => {
    // The server never withdraws this request (its signal never aborts): only the client's own
    // 100 ms limit ends it, and that must also end the prompt that holds the queue.
    const request = () => ({
      service: 'xenapi',
      host: 'xen1.example',
      origin: [{ daemon: 'virtauthd@elsewhere', driver: 'xenapi', uri: 'xenapi:///?server=xen1.example' }],
      credentials: [credential(AUTHNAME, 'Enter username for xen1.example [root]', 'xen1.example', 'root')],
      deadline: Date.now() + 60_000,
      via: { daemon: 'virtauthd@elsewhere', identity: null, key: 'test:elsewhere' },
    });
    const stuck = new RecordingAuth([AUTHNAME], neverAnswer());
    // One client, as an application has: its opens share the prompt queue.
    const client = new RelayClient();
    const e = await virErrorOf(
      runRelayHandler(client.forOpen({ auth: stuck, policy: { timeoutMs: 100 } }).handle, request(), new RelayCancellation()),
    );
    t.is(e.code, ErrorCode.AUTH_UNAVAILABLE);
    t.is(e.int1, RelayStatus.TIMED_OUT);
    t.true(stuck.calls[0]!.signal!.aborted);

    const next = new RecordingAuth([AUTHNAME], answerWith('bob', ''));
    const req = request();
    const shown = runRelayHandler(client.forOpen({ auth: next }).handle, req, new RelayCancellation());
    const outcome = await Promise.race([
      shown.then(() => 'answered'),
      // Queued behind the stuck prompt it would stay forever; the bound is for a loaded machine.
      new Promise((r) => setTimeout(() => r('still queued after 30 s'), 30_000).unref()),
    ]);
    t.is(outcome, 'answered');
    t.is(req.credentials[0]!.result, 'bob');
    await Promise.allSettled([...stuck.running]);
    t.is(stuck.running.size, 0);
  },
);

test.serial(
  'cancellation: the callback returning false ends the XenAPI open with AUTH_CANCELLED (79); a throwing callback is AUTH_FAILED (45)',
  async (t) => {
    for (const { hops, uri } of topologies()) {
      const loginsBefore = world.xen.calls.filter((c) => c === 'session.login_with_password').length;
      const failedOpens = world.b.log.events('connect.open.failed').length;
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], () => false);
      const e = await openFailure(open(uri, auth));
      t.is(e.code, ErrorCode.AUTH_CANCELLED, `${hops} hop(s)`);
      t.is(e.domain, ErrorDomain.AUTH);
      t.regex(e.message, /^authentication cancelled: the user cancelled the credentials xenapi on 127\.0\.0\.1/);
      const bFailure = world.b.log.events('connect.open.failed').slice(failedOpens);
      t.deepEqual(
        bFailure.map((r) => r.driver),
        ['xenapi'],
        'the XenAPI open on B failed',
      );
      t.regex(String(bFailure[0]!.err), /^authentication cancelled/);
      t.is(world.xen.calls.filter((c) => c === 'session.login_with_password').length, loginsBefore, 'no login was attempted');
      await assertNothingWaiting(t, auth);

      const throwing = new RecordingAuth([AUTHNAME, PASSPHRASE], () => {
        throw new Error('the prompt window crashed');
      });
      const e2 = await openFailure(open(uri, throwing));
      t.is(e2.code, ErrorCode.AUTH_FAILED);
      t.is(e2.domain, ErrorDomain.AUTH);
      t.regex(e2.message, /the credential callback failed for xenapi on 127\.0\.0\.1/);
      await assertNothingWaiting(t, throwing);
    }
  },
);

test.serial(
  "cancellation: the client going away mid-request ends the driver's wait in B at once (CANCELLED in B's audit, not at the deadline)",
  async (t) => {
    for (const { hops, uri } of topologies()) {
      const auditB = world.b.audits().length;
      const failedOpens = world.b.log.events('connect.open.failed').length;
      const controller = new AbortController();
      let abortedAt = 0;
      const waitForever = neverAnswer();
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], (creds, info) => {
        // The person walks away: the application abandons the open while the prompt is up.
        setTimeout(() => {
          abortedAt = Date.now();
          controller.abort();
        }, 20);
        return waitForever(creds, info);
      });
      const e = await openFailure(open(uri, auth, { signal: controller.signal }));
      t.is(e.code, ErrorCode.AUTH_CANCELLED, `${hops} hop(s)`);
      const record = (await waitForAudit(world.b, auditB))[0]!;
      t.is(record.outcome, 'CANCELLED');
      // At once, not at the relay's deadline (a minute or more); the margin is for a loaded machine.
      t.true(record.time - abortedAt < 5000, `B's driver stopped waiting ${record.time - abortedAt} ms after the client left`);
      // B logs the failed open after the audit record.
      const failed = await whenEmitted(
        world.b.log,
        ['lines'],
        () => {
          const records = world.b.log.events('connect.open.failed').slice(failedOpens);
          return records.length > 0 ? records : undefined;
        },
        30_000,
        "B's failed open",
      );
      t.deepEqual(
        failed.map((r) => r.driver),
        ['xenapi'],
      );
      t.true(auth.calls[0]!.signal!.aborted);
      await assertNothingWaiting(t, auth);
    }
  },
);

function waitForAudit(d: RelayDaemon, since: number): Promise<DaemonAuditRecord[]> {
  return whenEmitted(
    d.log,
    ['lines'],
    () => {
      const records = auditsSince(d, since);
      return records.length > 0 ? records : undefined;
    },
    30_000,
    `a relay.audit record from ${d.name}`,
  );
}

test.serial(
  'requests are relayed only during an open: a driver asking afterwards gets AUTH_UNAVAILABLE and the client is not asked',
  async (t) => {
    const auth = new RecordingAuth([AUTHNAME], answerWith('probe-user', ''));
    const conn = await open(world.b.uriFor('relayprobe', 'probe=later'), auth);
    const e = await openFailure(conn.getHostname());
    t.is(e.code, ErrorCode.AUTH_UNAVAILABLE);
    t.regex(e.message, /relayprobe on probe\.invalid via virtauthd-B@\S+ asked for credentials outside of a connection open/);
    t.is(auth.calls.length, 0);
    await conn.close();
    await assertNothingWaiting(t, auth);
  },
);

test.serial(
  'a server may relay only while CONNECT_OPEN runs: a REQUEST sent afterwards is refused by the client without prompting',
  async (t) => {
    // A rogue server: it accepts the open, then asks for credentials while serving a later call.
    const answers: p.RelayAnswerArgs[] = [];
    const answered = new EventEmitter();
    const rogueSocket = join(world.dir, 'rogue.sock');
    const rogueConnections = new Set<RpcConnection>();
    const rogue = net.createServer((socket) => {
      const rpc = new RpcConnection(socket);
      rogueConnections.add(rpc);
      rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
        if (h.proc === RelayProc.ANSWER) answers.push(p.relayAnswerArgs.decode(body));
        answered.emit('answer');
      });
      rpc.setCallHandler((h) => {
        if (h.prog === RELAY_PROGRAM && h.proc === RelayProc.ENABLE)
          return { codec: p.relayEnableRet, value: { daemon: 'rogue@nowhere', max_timeout_ms: 5000 } };
        switch (h.proc) {
          case RemoteProc.AUTH_LIST:
            return { codec: remote.authListRet, value: { types: [0] } };
          case RemoteProc.CONNECT_SUPPORTS_FEATURE:
            return { codec: remote.connectSupportsFeatureRet, value: { supported: 0 } };
          case RemoteProc.CONNECT_GET_HOSTNAME:
            rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.REQUEST, p.relayRequestMsg, {
              id: 1,
              service: 'xenapi',
              host: 'xen1.example',
              origin: [{ daemon: 'rogue@nowhere', driver: 'xenapi', uri: 'xenapi:///' }],
              deadline_ms: 5000,
              credentials: [{ type: PASSPHRASE, prompt: "Enter root's password for xen1.example", challenge: null, defresult: null }],
            });
            return { codec: remote.connectGetHostnameRet, value: { hostname: 'rogue' } };
          default:
            return { codec: xdr.xvoid, value: undefined };
        }
      });
    });
    await new Promise<void>((resolve) => rogue.listen(rogueSocket, resolve));
    try {
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], answerWith('root', 'would-be-phished'));
      const conn = await openAuth(`test+unix:///default?socket=${rogueSocket}`, auth, 0, { credentialSources: [] });
      t.is(await conn.getHostname(), 'rogue');
      const answer = await whenEmitted(answered, ['answer'], () => answers[0], 30_000, "the client's answer to the late request");
      t.is(answer.status, RelayStatus.UNAVAILABLE);
      t.deepEqual(answer.results, []);
      t.regex(answer.message, /asked for credentials after the connection open finished/);
      t.is(auth.calls.length, 0, 'no prompt was shown');
      await conn.close();
    } finally {
      for (const rpc of rogueConnections) rpc.close(null);
      await new Promise((resolve) => rogue.close(resolve));
    }
  },
);

test.serial(
  'wire: a stray or replayed ANSWER is rejected; each request is answered once; REQUEST carries the remaining time',
  async (t) => {
    const auditB = world.b.audits().length;
    const rejectedB = world.b.log.events('relay.answer.rejected').length;
    const raw = await RawClient.connect(`test+unix:///default?socket=${world.b.socket}`);
    await raw.login({ authname: 'alice', passphrase: ALICE_PASSWORD, mechanism: 'SCRAM-SHA-256' });
    // ANSWER is a one-way message: the daemon applies the first answer and logs any other.
    const answer = (id: number, results: (string | null)[]) =>
      raw.rpc.sendMessage(RELAY_PROGRAM, RELAY_PROTOCOL_VERSION, RelayProc.ANSWER, p.relayAnswerArgs, {
        id,
        status: 0,
        results,
        message: '',
      });
    let rejections = 0;
    const expectRejected = async (id: number, why: string) => {
      answer(id, ['root']);
      rejections++;
      const logged = await whenEmitted(
        world.b.log,
        ['lines'],
        () => {
          const events = world.b.log.events('relay.answer.rejected').slice(rejectedB);
          return events.length >= rejections ? events[rejections - 1] : undefined;
        },
        30_000,
        why,
      );
      t.is(logged.id, id, why);
      t.regex(String(logged.reason), new RegExp(`relay answer for request ${id}, which is not waiting for one`), why);
    };
    // Before the client enables the relay nothing can be waiting: the answer is dropped undecoded.
    answer(1, ['root']);
    rejections++;
    const early = await whenEmitted(
      world.b.log,
      ['lines'],
      () => world.b.log.events('relay.answer.rejected').slice(rejectedB)[0],
      30_000,
      'an answer before the relay was enabled',
    );
    t.is(early.id, undefined, 'not decoded, so no id');
    t.regex(String(early.reason), /not enabled on this connection/);

    const requests: p.RelayRequestMsg[] = [];
    const cancels: unknown[] = [];
    const received = new EventEmitter();
    raw.rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
      if (h.proc === RelayProc.REQUEST) requests.push(p.relayRequestMsg.decode(body));
      else cancels.push(p.relayCancelMsg.decode(body));
      received.emit('message');
    });
    await raw.rpc.call(
      RELAY_PROGRAM,
      RELAY_PROTOCOL_VERSION,
      RelayProc.ENABLE,
      p.relayEnableArgs,
      { cred_types: [AUTHNAME, PASSPHRASE], person_present: 1, timeout_ms: 5000, max_requests: 8 },
      p.relayEnableRet,
    );
    const opened = raw.call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: xenDriverUri(), flags: 0 }, xdr.xvoid);
    opened.catch(() => {});

    const waitRequest = (n: number) => whenEmitted(received, ['message'], () => requests[n - 1], 30_000, `request ${n}`);
    const first = await waitRequest(1);
    t.is(first.service, 'xenapi');
    t.deepEqual(first.origin, [hopB()]);
    t.true(first.deadline_ms <= 5000 && first.deadline_ms > 4500, `REQUEST carries ${first.deadline_ms} ms left`);
    t.deepEqual(first.credentials, [{ type: AUTHNAME, prompt: XENAPI_PROMPTS[0]!.prompt, challenge: '127.0.0.1', defresult: 'root' }]);
    await expectRejected(first.id + 100, 'an answer for an id never sent');
    answer(first.id, ['root']);
    await expectRejected(first.id, 'the same answer replayed');

    const second = await waitRequest(2);
    t.not(second.id, first.id);
    t.is(second.credentials[0]!.type, PASSPHRASE);
    answer(second.id, [XEN_ROOT_PASSWORD]);
    await opened;
    await expectRejected(second.id, 'a replay after the open finished');
    const late = await virErrorOf(
      raw.rpc.call(
        RELAY_PROGRAM,
        RELAY_PROTOCOL_VERSION,
        RelayProc.ENABLE,
        p.relayEnableArgs,
        { cred_types: [AUTHNAME], person_present: 1, timeout_ms: 0, max_requests: 1 },
        p.relayEnableRet,
      ),
    );
    t.regex(late.message, /must be enabled before CONNECT_OPEN/);
    t.is((await raw.call(RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet)).hostname, 'xen1.example');
    await raw.closeConnection();

    const audit = auditsSince(world.b, auditB);
    t.deepEqual(
      audit.map((r) => [r.id, r.outcome]),
      [
        [first.id, 'OK'],
        [second.id, 'OK'],
      ],
      'each request answered exactly once',
    );
    t.deepEqual(cancels, []);
    await assertNothingWaiting(t, null);
  },
);

test.serial(
  'deadline: a raw client that enables the relay, never answers and ignores deadlines gets CANCEL TIMED_OUT from the daemon, and the open ends',
  async (t) => {
    const auditB = world.b.audits().length;
    const raw = await RawClient.connect(`test+unix:///default?socket=${world.b.socket}`);
    t.teardown(() => raw.close());
    await raw.login({ authname: 'alice', passphrase: ALICE_PASSWORD, mechanism: 'SCRAM-SHA-256' });
    const requests: p.RelayRequestMsg[] = [];
    const cancels: ReturnType<typeof p.relayCancelMsg.decode>[] = [];
    let cancelled!: () => void;
    const cancelCame = new Promise<void>((resolve) => (cancelled = resolve));
    // This client keeps no timer of its own: only the daemon's deadline can end the wait.
    raw.rpc.onProgramMessage(RELAY_PROGRAM, (h, body) => {
      if (h.proc === RelayProc.REQUEST) requests.push(p.relayRequestMsg.decode(body));
      if (h.proc === RelayProc.CANCEL) {
        cancels.push(p.relayCancelMsg.decode(body));
        cancelled();
      }
    });
    const timeoutMs = 300;
    await raw.rpc.call(
      RELAY_PROGRAM,
      RELAY_PROTOCOL_VERSION,
      RelayProc.ENABLE,
      p.relayEnableArgs,
      { cred_types: [AUTHNAME, PASSPHRASE], person_present: 1, timeout_ms: timeoutMs, max_requests: 8 },
      p.relayEnableRet,
    );
    const started = performance.now();
    const open = virErrorOf(raw.call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: xenDriverUri(), flags: 0 }, xdr.xvoid));

    let giveUp: NodeJS.Timeout | undefined;
    const noCancel = new Promise<never>(
      (_, reject) =>
        (giveUp = setTimeout(() => reject(new Error('no CANCEL from the daemon within 10 s: its deadline never fired')), 10_000)),
    );
    await Promise.race([cancelCame, noCancel]).finally(() => clearTimeout(giveUp));
    const elapsed = performance.now() - started;
    t.is(requests.length, 1);
    t.deepEqual(
      cancels.map((c) => [c.id, c.status]),
      [[requests[0]!.id, RelayStatus.TIMED_OUT]],
    );
    t.regex(cancels[0]!.message, new RegExp(`no answer from the client within \\d+ ms`));
    t.true(elapsed >= timeoutMs - 20, `cancelled after ${elapsed.toFixed(0)} ms, the deadline was ${timeoutMs}`);
    // The driver stopped waiting: the open fails with the relay's TIMED_OUT.
    const e = await open;
    t.is(e.int1, RelayStatus.TIMED_OUT, e.message);
    t.deepEqual(
      auditsSince(world.b, auditB).map((r) => r.outcome),
      ['TIMED_OUT'],
    );
    // The connection is still there, answering calls.
    t.is(
      (await raw
        .call(RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet)
        .catch((err: VirError) => err)) instanceof VirError,
      true,
      'no hypervisor open, but an answer',
    );
  },
);

interopTest.serial(
  'old client: virsh never enables the relay; a XenAPI open on virtauthd fails at once naming the driver, host and credentials',
  ['virsh', 'sasl-scram'],
  async (t) => {
    const started = Date.now();
    const result = await runVirsh(['hostname'], { uri: xenUri(), env: { LIBVIRT_AUTH_FILE: world.clientAuthConf }, timeoutMs: 10_000 });
    const elapsed = Date.now() - started;
    t.not(result.code, 0);
    t.true(elapsed < 2000, `virsh gave up after ${elapsed} ms`);
    // libvirt prints code 94 (VIR_ERR_AUTH_UNAVAILABLE) as "authentication unavailable: ...".
    t.regex(
      result.stderr,
      /authentication unavailable: xenapi on 127\.0\.0\.1 via virtauthd-B@\S+ needs AUTHNAME, but the client cannot answer relayed credential requests/,
    );
    world.errorMessages.push(result.stderr);
    await assertNothingWaiting(t, null);
  },
);

interopTest.serial(
  'old server: our client with the relay enabled opens test:///default on a real libvirtd (the relay is silently off)',
  ['libvirtd'],
  async (t) => {
    const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
    try {
      const uri = libvirtd.uri();
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], answerWith('unused', 'unused'));
      const conn = await open(uri, auth);
      t.truthy(await conn.getHostname());
      t.true((await conn.listAllDomains(3)).some((d) => d.name === 'test'));
      await conn.close();
      t.is(auth.calls.length, 0);

      // On the wire: ENABLE is answered "Cannot find program", which enableRelay reports as null.
      const { socket } = await openTransport(parseUri(uri), { readOnly: false, timeoutMs: 5000 });
      const rpc = new RpcConnection(socket);
      socket.resume();
      try {
        await rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet);
        t.is(await enableRelay(rpc, createRelayClient({ auth })), null);
        await rpc.call(
          REMOTE_PROGRAM,
          REMOTE_PROTOCOL_VERSION,
          RemoteProc.CONNECT_OPEN,
          remote.connectOpenArgs,
          { name: 'test:///default', flags: OpenFlag.READ_ONLY },
          xdr.xvoid,
        );
      } finally {
        rpc.close(null);
      }
    } finally {
      await libvirtd.stop();
    }
  },
);

test.serial(
  "the client's auth.conf answers relayed requests only where the policy binds the entry to the daemon reached, the service and the host",
  async (t) => {
    const file = join(world.dir, 'client-xen-auth.conf');
    await writeFile(
      file,
      `[credentials-alice]\nauthname=alice\npassword=${ALICE_PASSWORD}\n[auth-libvirt-localhost]\ncredentials=alice\n\n` +
        `[credentials-x]\nusername=root\npassword=${XEN_ROOT_PASSWORD}\n[auth-xenapi-127.0.0.1]\ncredentials=x\n`,
      { mode: 0o600 },
    );
    for (const [{ hops, uri }, reached, other] of [
      [topologies()[0]!, world.b.socket, world.a.socket],
      [topologies()[1]!, world.a.socket, world.b.socket],
    ] as const) {
      const grant = (socket: string, host = '127.0.0.1') => ({
        storedCredentials: [{ daemon: { transport: 'unix' as const, socket }, service: 'xenapi', host }],
      });
      // Bound to the daemon this client reaches: auth.conf answers and the callback is not asked.
      const clientAudit = world.clientAudit.length;
      const auth = new RecordingAuth([AUTHNAME, PASSPHRASE], () => false);
      const conn = await open(uri, auth, { sources: [await authConfSource(file)], policy: grant(reached) });
      t.is(await conn.getHostname(), 'xen1.example', `${hops} hop(s)`);
      await conn.close();
      t.is(auth.calls.length, 0, 'the callback was not called');
      t.deepEqual(
        world.clientAudit.slice(clientAudit).map((r) => r.outcome),
        ['OK', 'OK'],
      );
      t.true(world.clientAudit.slice(clientAudit).every((r) => r.daemon.includes(`unix socket ${reached}`)));
      // No grant, a grant for another daemon (an inner hop counts for nothing), or for another host:
      // the entry stays unread and the person is asked.
      for (const [label, policy] of [
        ['no grant', {}],
        ['another daemon', grant(other)],
        ['another host', grant(reached, 'xen2.example')],
      ] as const) {
        const asked = new RecordingAuth([AUTHNAME, PASSPHRASE], () => false);
        const e = await openFailure(open(uri, asked, { sources: [await authConfSource(file)], policy }));
        t.is(e.code, ErrorCode.AUTH_CANCELLED, `${hops} hop(s), ${label}`);
        t.is(asked.calls.length, 1, `${hops} hop(s), ${label}: the person was asked instead`);
      }
      await assertNothingWaiting(t, null);
    }
  },
);

test.serial(
  'console: virtauth answers relayed prompts from stdin and says who asks; --no-prompt and a closed stdin fail fast',
  async (t) => {
    const env = { ...process.env, LC_ALL: 'C', LIBVIRT_AUTH_FILE: world.clientAuthConf };
    const run = (args: string[], input?: string) =>
      runProcess(process.execPath, [virtauthBin, '-c', xenUri(), ...args, 'hostname'], {
        env,
        ...(input !== undefined ? { input } : {}),
        timeoutMs: 15_000,
      });

    const answeredStarted = Date.now();
    const answered = await run([], `root\n${XEN_ROOT_PASSWORD}\n`);
    // A failure is fast when it costs no more than a whole answered run (process start-up included,
    // which a loaded machine stretches), far below any relay deadline it could be waiting on.
    const failFastMs = Math.max(2000, 2 * (Date.now() - answeredStarted));
    t.is(answered.code, 0, answered.stderr);
    t.regex(answered.stdout, /^xenapi on 127\.0\.0\.1 via virtauthd-B@\S+ asks for credentials$/m);
    t.true(answered.stdout.includes('Enter username for 127.0.0.1 [root]: '));
    t.true(answered.stdout.includes("Enter root's password for 127.0.0.1: "));
    t.regex(answered.stdout, /xen1\.example\n/);
    t.false(answered.stdout.includes(XEN_ROOT_PASSWORD), 'the password is not echoed');
    world.errorMessages.push(answered.stderr);

    for (const [label, args, input] of [
      ['--no-prompt', ['--no-prompt'], `root\n${XEN_ROOT_PASSWORD}\n`],
      ['stdin closed', [], undefined],
    ] as const) {
      const started = Date.now();
      const failed = await run([...args], input);
      const elapsed = Date.now() - started;
      t.is(failed.code, 1, label);
      t.true(elapsed < failFastMs, `${label}: failed after ${elapsed} ms (limit ${failFastMs} ms)`);
      t.regex(failed.stderr, /error: authentication unavailable: /, label);
      t.false(failed.stdout.includes('xen1.example'));
      world.errorMessages.push(failed.stderr, failed.stdout);
    }
    await assertNothingWaiting(t, null);
  },
);

test.serial(
  `isolation under load: ${LOAD_CLIENTS} clients open concurrently through two hops, each answered with its own credentials`,
  async (t) => {
    const mismatches: string[] = [];
    const auths = loadUsers.map(
      (u) =>
        new RecordingAuth([AUTHNAME, PASSPHRASE], (creds) => {
          for (const c of creds) {
            if (c.type === AUTHNAME) c.result = u.name;
            else if (c.prompt === `Enter ${u.name}'s password for 127.0.0.1`) c.result = u.password;
            // A prompt naming someone else's account means an answer crossed over.
            else mismatches.push(`${u.name} was asked: ${c.prompt}`);
          }
          return creds.every((c) => c.result !== null);
        }),
    );
    const loginsBefore = world.xen.calls.filter((c) => c === 'session.login_with_password').length;
    const started = Date.now();
    const results = await Promise.allSettled(auths.map((auth) => open(xenUriViaA(), auth)));
    const elapsed = Date.now() - started;
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
    world.errorMessages.push(...failures);
    t.deepEqual(failures, [], 'every open succeeded');
    t.deepEqual(mismatches, []);
    t.log(`${LOAD_CLIENTS} relayed two-hop opens in ${elapsed} ms`);

    // The fixture logged one session per login: exactly one per user, each its own password.
    const sessionUsers = [...world.xen.sessions.values()]
      .map((s) => s.username)
      .filter((n) => n.startsWith('user'))
      .sort();
    t.deepEqual(sessionUsers, loadUsers.map((u) => u.name).sort());
    t.is(
      world.xen.calls.filter((c) => c === 'session.login_with_password').length - loginsBefore,
      LOAD_CLIENTS,
      'no retried or extra login',
    );
    for (const auth of auths) t.is(auth.calls.length, 2);

    const conns = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    t.deepEqual(new Set(await Promise.all(conns.map((c) => c.getHostname()))), new Set(['xen1.example']));
    await Promise.all(conns.map((c) => c.close()));
    await assertNothingWaiting(t, null);
  },
);

test.serial('no secret appears in any daemon log line, error message, or audit record', (t) => {
  const daemons = [world.a, world.b, ...world.extraDaemons];
  const haystacks: [string, string][] = [
    ...daemons.map((d) => [`${d.name} log`, d.log.text()] as [string, string]),
    ['client audit', JSON.stringify(world.clientAudit)],
    ...daemons.map((d) => [`${d.name} relay.audit`, JSON.stringify(d.audits())] as [string, string]),
    ['error messages', world.errorMessages.join('\n')],
  ];
  t.true(world.b.audits().length > LOAD_CLIENTS * 2, 'the checked logs hold the relayed requests');
  t.true(world.b.log.lines.length > 1000);
  for (const [where, text] of haystacks) {
    for (const s of allSecrets) t.false(text.includes(s), `a secret appears in the ${where}`);
  }
});
