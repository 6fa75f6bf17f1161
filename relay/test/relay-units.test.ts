// The relay's building blocks on their own: the shared deadline clock, the lazy cancellation,
// and a channel and a relay client wired back to back without a socket in between. Serial:
// several tests measure time.

import test from 'ava';
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { firstValueFrom, take, toArray } from 'rxjs';
import { CredentialType, ErrorCode, RelayStatus, VirError, credential, relayError, type relayProtocol } from '@virtauth/core';
import { DeadlineClock } from '../src/deadline-clock.js';
import { RelayChannel, type RelayAuditRecord } from '../src/daemon/channel.js';
import { createRelayClient } from '../src/client/relay-client.js';
import { RelayCancellation, runRelayHandler } from '../src/request.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The relay's timers never hold a process open (a connection's socket does that); these tests
// have no socket, so each holds the process open while it waits.
test.beforeEach((t) => {
  t.context = setInterval(() => {}, 1000);
});
test.afterEach.always((t) => clearInterval(t.context as NodeJS.Timeout));

test.serial('the clock fires once for the earliest deadline, and only re-arms for an earlier one', async (t) => {
  const clock = new DeadlineClock();
  const fired: number[] = [];
  const sub = clock.expired$.subscribe((now) => fired.push(now));
  const start = performance.now();
  clock.watch(start + 5_000);
  clock.watch(start + 60); // earlier: re-arms
  clock.watch(start + 10_000); // later: changes nothing
  await sleep(110);
  t.is(fired.length, 1);
  // Not before the earliest deadline (checked by time, not by a sleep, which load can stretch).
  // Node may fire a timer a millisecond or two early; the owner then simply re-arms.
  t.true(fired[0]! >= start + 55);
  // After firing nothing is armed: the owner watches what is left.
  clock.watch(performance.now() + 20);
  await sleep(60);
  t.is(fired.length, 2);
  sub.unsubscribe();
});

test.serial('a cancellation makes its signal only when asked, and it is already aborted if cancelled before', (t) => {
  const reason = relayError(RelayStatus.CANCELLED, 'withdrawn');
  const early = new RelayCancellation();
  const seen: VirError[] = [];
  const remove = early.onCancel((r) => seen.push(r));
  early.cancel(reason);
  early.cancel(relayError(RelayStatus.TIMED_OUT, 'later reasons are ignored'));
  remove();
  t.deepEqual(seen, [reason]);
  t.true(early.signal.aborted);
  t.is(early.signal.reason, reason);

  const late = new RelayCancellation();
  const signal = late.signal;
  t.false(signal.aborted);
  late.cancel(reason);
  t.true(signal.aborted);
  let called = 0;
  late.onCancel(() => called++);
  t.is(called, 1, 'a listener added after the fact is called at once');

  const removed = new RelayCancellation();
  removed.onCancel(() => t.fail('a removed listener is not called'))();
  removed.cancel(reason);
});

/** The daemon these tests' requests come from, and the connection they arrive on. */
const HOP_B = { daemon: 'virtauthd@b', driver: 'xenapi', uri: 'xenapi://xen1/' };
const VIA_B = { daemon: 'virtauthd@b', identity: null, key: 'unit-test:b' };
/** Unit tests send many requests from one origin; the per-origin rate has its own test. */
const UNLIMITED_ORIGIN_RATE = { maxRequests: 1_000_000, windowMs: 60_000 };

/** A channel whose REQUEST messages go straight to a relay client, and answers straight back. */
function backToBack(
  options: { answer?: (creds: { result: string | null }[]) => void | boolean | Promise<void | boolean>; timeoutMs?: number } = {},
) {
  const audits: RelayAuditRecord[] = [];
  const cancels: { id: number; status: number }[] = [];
  const client = createRelayClient({
    auth: {
      credTypes: [CredentialType.AUTHNAME],
      callback: options.answer ?? ((creds) => void creds.forEach((c) => (c.result = 'alice'))),
    },
    policy: { maxRequestsPerOpen: 100, perOrigin: UNLIMITED_ORIGIN_RATE, ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}) },
  });
  const inFlight = new Map<number, RelayCancellation>();
  const withdrawn = new Set<number>();
  const channel: RelayChannel = new RelayChannel({
    connectionId: 1,
    sendRequest(msg: relayProtocol.RelayRequestMsg) {
      const cancel = new RelayCancellation();
      inFlight.set(msg.id, cancel);
      const credentials = msg.credentials.map((c) => credential(c.type as CredentialType, c.prompt, c.challenge, c.defresult));
      runRelayHandler(
        client.handle,
        { service: msg.service, host: msg.host, origin: msg.origin, credentials, deadline: Date.now() + msg.deadline_ms, via: VIA_B },
        cancel,
      ).then(
        () => channel.answer({ id: msg.id, status: RelayStatus.OK, results: credentials.map((c) => c.result), message: '' }),
        (e: VirError) => {
          if (!withdrawn.has(msg.id)) channel.answer({ id: msg.id, status: e.int1, results: [], message: e.message });
        },
      );
    },
    sendCancel(id, status) {
      cancels.push({ id, status });
      withdrawn.add(id);
      inFlight.get(id)?.cancel(relayError(status, 'withdrawn by the server'));
    },
    maxTimeoutMs: 60_000,
    maxRequestsPerOpen: 100,
    audit: (r) => audits.push(r),
  });
  channel.enable({ credTypes: [CredentialType.AUTHNAME], personPresent: true, timeoutMs: 60_000, maxRequests: 100 });
  const origin = [HOP_B];
  const ask = (extra: { deadline?: number; signal?: AbortSignal } = {}) => {
    const creds = [credential(CredentialType.AUTHNAME, 'user')];
    return channel.request({ service: 'xenapi', host: 'xen1', origin, credentials: creds, ...extra }).then(() => creds[0]!.result);
  };
  /** The client going away, as a real connection closing does it at both ends. */
  const disconnect = (reason: VirError) => {
    channel.close(reason);
    for (const [id, c] of inFlight) {
      withdrawn.add(id);
      c.cancel(relayError(RelayStatus.CANCELLED, 'the connection to the server closed'));
    }
  };
  return { channel, ask, audits, cancels, disconnect };
}

test.serial('a channel and a client back to back: answers, audit without values, and each request settles once', async (t) => {
  const { channel, ask, audits } = backToBack();
  channel.beginOpen();
  t.deepEqual(await Promise.all([ask(), ask(), ask()]), ['alice', 'alice', 'alice']);
  t.deepEqual(
    audits.map((a) => [a.id, a.outcome, a.credentialTypes]),
    [
      [1, 'OK', ['AUTHNAME']],
      [2, 'OK', ['AUTHNAME']],
      [3, 'OK', ['AUTHNAME']],
    ],
  );
  t.false(JSON.stringify(audits).includes('alice'));
  const replay = t.throws(() => channel.answer({ id: 1, status: RelayStatus.OK, results: ['mallory'], message: '' }));
  t.is((replay as VirError).code, ErrorCode.OPERATION_INVALID);
  channel.endOpen();
});

test.serial('deadlines on one clock: each request times out on its own deadline, and the client is told', async (t) => {
  const { channel, ask, cancels, audits } = backToBack({ answer: () => new Promise<void>(() => {}) });
  channel.beginOpen();
  const start = Date.now();
  const outcomes = await Promise.all(
    [150, 60, 250].map((ms) =>
      ask({ deadline: start + ms }).then(
        () => t.fail('no answer was expected'),
        (e: VirError) => ({ ms, status: e.int1, after: Date.now() - start }),
      ),
    ),
  );
  for (const o of outcomes) {
    t.is(o!.status, RelayStatus.TIMED_OUT);
    t.true(o!.after >= o!.ms - 2 && o!.after < o!.ms + 100, `deadline ${o!.ms} ms ended after ${o!.after} ms`);
  }
  // Whichever end's timer fires first ends it: the server with a CANCEL, or the client's answer.
  t.deepEqual(
    audits.map((a) => a.outcome),
    ['TIMED_OUT', 'TIMED_OUT', 'TIMED_OUT'],
  );
  t.true(cancels.every((c) => c.status === RelayStatus.TIMED_OUT));
  channel.endOpen();
});

test.serial('a wall clock set back an hour neither holds a wait past its deadline nor ends it early', async (t) => {
  const { channel, ask } = backToBack({ answer: () => new Promise<void>(() => {}) });
  channel.beginOpen();
  const realNow = Date.now;
  const start = performance.now();
  const waiting = ask({ deadline: Date.now() + 120 }).then(
    () => 'answered',
    (e: VirError) => e.int1,
  );
  Date.now = () => realNow() - 3_600_000;
  try {
    t.is(await waiting, RelayStatus.TIMED_OUT);
  } finally {
    Date.now = realNow;
  }
  const after = performance.now() - start;
  t.true(after >= 115 && after < 400, `the wait ended after ${after} ms`);
  channel.endOpen();
});

test.serial("the driver's signal, the open's signal and the client leaving each end a wait at once", async (t) => {
  const never = () => new Promise<void>(() => {});
  const own = backToBack({ answer: never });
  own.channel.beginOpen();
  const driver = new AbortController();
  const first = own.ask({ signal: driver.signal });
  driver.abort(relayError(RelayStatus.CANCELLED, 'driver gave up'));
  t.is(((await t.throwsAsync(first)) as VirError).int1, RelayStatus.CANCELLED);

  const openSignal = new AbortController();
  own.channel.endOpen();
  own.channel.beginOpen(openSignal.signal);
  const second = own.ask();
  openSignal.abort(new Error('the open was abandoned'));
  const e2 = (await t.throwsAsync(second)) as VirError;
  t.is(e2.code, ErrorCode.AUTH_CANCELLED);

  own.channel.beginOpen();
  const third = own.ask();
  own.disconnect(new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: 4, detail: 'client disconnected' }));
  const e3 = (await t.throwsAsync(third)) as VirError;
  t.regex(e3.message, /client disconnected/);
  t.deepEqual(
    own.audits.map((a) => a.outcome),
    ['CANCELLED', 'CANCELLED', 'CANCELLED'],
  );
});

test.serial(
  "the relay client's own deadline ends a prompt through its signal, and a withdrawn request in the queue is never shown",
  async (t) => {
    let shown = 0;
    const seen: AbortSignal[] = [];
    const client = createRelayClient({
      auth: {
        credTypes: [CredentialType.AUTHNAME],
        callback: (_creds, info) => {
          shown++;
          seen.push(info.signal!);
          return new Promise<boolean>((resolve) => info.signal!.addEventListener('abort', () => resolve(false)));
        },
      },
      policy: { timeoutMs: 80, perOrigin: UNLIMITED_ORIGIN_RATE },
    });
    const req = () => ({
      service: 'xenapi',
      host: 'xen1',
      origin: [HOP_B],
      credentials: [credential(CredentialType.AUTHNAME, 'user')],
      deadline: Date.now() + 60_000,
      via: VIA_B,
    });
    const first = runRelayHandler(client.handle, req(), new RelayCancellation());
    const queuedCancel = new RelayCancellation();
    const queued = runRelayHandler(client.handle, req(), queuedCancel);
    queuedCancel.cancel(relayError(RelayStatus.CANCELLED, 'withdrawn while queued'));
    t.is(((await t.throwsAsync(queued)) as VirError).int1, RelayStatus.CANCELLED);
    const e = (await t.throwsAsync(first)) as VirError;
    t.is(e.int1, RelayStatus.TIMED_OUT);
    await sleep(20);
    t.is(shown, 1, 'the withdrawn request was skipped');
    t.true(seen[0]!.aborted);
  },
);

test.serial('the clock emits each time its armed deadline passes', async (t) => {
  const clock = new DeadlineClock();
  const times = firstValueFrom(clock.expired$.pipe(take(2), toArray()));
  clock.watch(performance.now() + 20);
  await sleep(40);
  clock.watch(performance.now() + 10);
  const [a, b] = await times;
  t.true(a! <= b!);
});

test.serial('an armed clock does not keep a process alive', async (t) => {
  const clockModule = new URL('../src/deadline-clock.js', import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { DeadlineClock } = await import(${JSON.stringify(clockModule)}); const c = new DeadlineClock(); c.expired$.subscribe(); c.watch(performance.now() + 60000);`,
    ],
    { stdio: 'ignore' },
  );
  const started = Date.now();
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.is(code, 0);
  t.true(Date.now() - started < 10_000, 'the process exited without waiting for the deadline');
});
