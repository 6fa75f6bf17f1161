// Managing a domain with real virsh through virtauthd's embedded test driver (no libvirt needed on
// the daemon's side): define, start, suspend, resume, shutdown, destroy, undefine, and the lifecycle
// events `virsh event --all --loop` receives, each compared with the same commands run against a
// real libvirtd's test driver. Plus the abuse cases: a read-only socket, bad XML, an unknown
// procedure, an operation the driver lacks, and event callbacks that do not exist.

import { EventEmitter } from 'node:events';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';
import {
  ErrorCode,
  ErrorDomain,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  RpcConnection,
  VirError,
  remote,
  remoteProcedures,
  xdr,
} from '@virtauth/core';
import net from 'node:net';

import {
  PrivateLibvirtd,
  interopTest,
  libvirtClientEnv,
  requireExecutable,
  runProcess,
  runPython,
  waitFor,
  whenEmitted,
  watchVirshEvents,
  type ProcessResult,
} from './peers/index.js';
import { startVirtauthd } from './virtauthd-support.js';
import { openAuth } from 'virtauth';

const DOMAIN_XML = `<domain type='test'>
  <name>lifecycle-vm</name>
  <uuid>5c4b1b0e-8f0c-4f43-9d39-6a2b3c4d5e6f</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
</domain>
`;

/** virtauthd with its embedded test driver; `rw`/`ro` are its sockets. */
async function startOurs(t: ExecutionContext): Promise<{ rw: string; ro: string; dir: string }> {
  const daemon = await startVirtauthd(t);
  return { rw: daemon.rwSocket, ro: daemon.roSocket, dir: daemon.dir };
}

const virshPath = () => requireExecutable('virsh', 'libvirt-clients');

function virsh(uri: string, args: readonly string[]): Promise<ProcessResult> {
  return runProcess(virshPath(), ['-c', uri, ...args], { env: libvirtClientEnv(), timeoutMs: 30_000 });
}

const watchEvents = (uri: string) => watchVirshEvents(uri);

const STEPS: string[][] = [
  ['define', 'XML'],
  ['start', 'lifecycle-vm'],
  ['suspend', 'lifecycle-vm'],
  ['domstate', '--reason', 'lifecycle-vm'],
  ['resume', 'lifecycle-vm'],
  ['autostart', 'lifecycle-vm'],
  ['dominfo', 'lifecycle-vm'],
  ['autostart', '--disable', 'lifecycle-vm'],
  ['reboot', 'lifecycle-vm'],
  ['domstate', '--reason', 'lifecycle-vm'],
  ['shutdown', 'lifecycle-vm'],
  ['domstate', '--reason', 'lifecycle-vm'],
  ['start', 'lifecycle-vm'],
  ['start', 'lifecycle-vm'],
  ['destroy', 'lifecycle-vm'],
  ['suspend', 'lifecycle-vm'],
  ['reboot', 'lifecycle-vm'],
  ['undefine', 'lifecycle-vm'],
  ['list', '--all'],
];
const EXPECTED_EVENTS = [
  'Defined Added',
  'Started Booted',
  'Suspended Paused',
  'Resumed Unpaused',
  'Stopped Shutdown',
  'Started Booted',
  'Stopped Destroyed',
  'Undefined Removed',
];

const MARKER_GONE = /event 'lifecycle' for domain 'marker': Undefined/;

/** Runs the steps with an event watcher open (it also keeps libvirtd's test:///default alive). */
async function runLifecycle(uri: string, xmlPath: string): Promise<{ steps: string[]; events: string[] }> {
  const watcher = watchEvents(uri);
  // virsh says nothing once it has registered: define and undefine a marker domain until the
  // watcher reports it, as only a registered watcher can.
  const markerPath = `${xmlPath}.marker`;
  await writeFile(markerPath, DOMAIN_XML.replace('<name>lifecycle-vm</name>', '<name>marker</name>').replace(/<uuid>.*<\/uuid>\n/, ''));
  await waitFor(
    async () => {
      await virsh(uri, ['define', markerPath]);
      await virsh(uri, ['undefine', 'marker']);
      return MARKER_GONE.test(watcher.output());
    },
    60_000,
    'the event watcher to register',
  );
  const steps: string[] = [];
  for (const step of STEPS) {
    const args = step.map((a) => (a === 'XML' ? xmlPath : a));
    const r = await virsh(uri, args);
    // CPU time depends on the clock; the rest must match.
    steps.push(`$ ${step.join(' ')} -> ${r.code}\n${r.stdout.replace(/^CPU time:.*\n/m, '')}${r.stderr}`);
  }
  const lifecycleEvents = (out: string) => out.split('\n').filter((l) => l.startsWith("event '") && !l.includes("'marker'"));
  await watcher.whenOutput((out) => lifecycleEvents(out).length >= EXPECTED_EVENTS.length, 60_000, 'all lifecycle events');
  const events = lifecycleEvents(await watcher.stop());
  return { steps, events };
}

interopTest(
  "virsh manages a domain (define, start, suspend, resume, autostart, reboot, shutdown, destroy, undefine) through virtauthd's test driver exactly as through libvirtd's, events included",
  ['root', 'libvirtd', 'virsh'],
  async (t) => {
    const [ours, libvirtd] = await Promise.all([startOurs(t), PrivateLibvirtd.start({ auth_unix_rw: 'none' })]);
    t.teardown(() => libvirtd.stop());
    const xmlPath = join(ours.dir, 'domain.xml');
    await writeFile(xmlPath, DOMAIN_XML);
    const viaVirtauthd = await runLifecycle(`test+unix:///default?socket=${ours.rw}`, xmlPath);
    const direct = await runLifecycle(libvirtd.uri(), xmlPath);
    t.deepEqual(
      viaVirtauthd.events,
      EXPECTED_EVENTS.map((e) => `event 'lifecycle' for domain 'lifecycle-vm': ${e}`),
    );
    t.deepEqual(viaVirtauthd.steps, direct.steps);
    t.deepEqual(viaVirtauthd.events, direct.events);
  },
);

interopTest("writes are refused on the read-only socket and bad definitions get libvirt's errors", ['virsh'], async (t) => {
  const ours = await startOurs(t);
  const roUri = `test+unix:///default?socket=${ours.ro}`;
  const rwUri = `test+unix:///default?socket=${ours.rw}`;
  const xmlPath = join(ours.dir, 'domain.xml');
  await writeFile(xmlPath, DOMAIN_XML);
  const define = await virsh(roUri, ['define', xmlPath]);
  t.is(define.code, 1);
  t.regex(define.stderr, /operation forbidden: read only access prevents virDomainDefineXML/);
  const destroy = await virsh(roUri, ['destroy', 'test']);
  t.regex(destroy.stderr, /operation forbidden: read only access prevents virDomainDestroy/);
  t.regex((await virsh(rwUri, ['domstate', 'test'])).stdout, /running/);

  const cases: [string, RegExp][] = [
    ['<domain type="test"><name>x</name></domain>', /Memory size must be specified/],
    ['<domain type="test"><name>x</name><memory>1024</memory></domain>', /An os <type> must be specified/],
    ['<domain><name>x</name><memory>1</memory><os><type>hvm</type></os></domain>', /missing domain type attribute/],
    ['<!DOCTYPE d [<!ENTITY a "aaaa">]><domain type="test"><name>&a;</name></domain>', /document type declarations are not accepted/],
    ['<domain type="test"><name>x</name>', /XML error/],
    ['<domain type="test"><name>x</name><memory unit="parsec">1</memory><os><type>hvm</type></os></domain>', /unknown unit 'parsec'/],
    [
      '<domain type="test"><name>test</name><uuid>00000000-0000-0000-0000-000000000001</uuid><memory>1</memory><os><type>hvm</type></os></domain>',
      /already defined with uuid/,
    ],
  ];
  for (const [xml, expected] of cases) {
    const path = join(ours.dir, 'bad.xml');
    await writeFile(path, xml);
    const r = await virsh(rwUri, ['define', path]);
    t.is(r.code, 1, xml);
    t.regex(r.stderr, expected, xml);
  }
  t.regex((await virsh(rwUri, ['list', '--all', '--name'])).stdout, /^test\n\n?$/);
});

type RemoteCall = <A, R>(proc: number, args: xdr.Codec<A>, value: A, ret: xdr.Codec<R>) => Promise<R>;

/** Our RPC connection to a socket of virtauthd, past AUTH_LIST and CONNECT_OPEN of test:///default. */
async function openRaw(t: ExecutionContext, path: string): Promise<{ rpc: RpcConnection; call: RemoteCall }> {
  const rpc = await new Promise<RpcConnection>((resolve, reject) => {
    const socket = net.connect(path, () => resolve(new RpcConnection(socket)));
    socket.once('error', reject);
  });
  t.teardown(() => rpc.close(null));
  const call: RemoteCall = (proc, args, value, ret) => rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret);
  await call(RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet);
  await call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 }, xdr.xvoid);
  return { rpc, call };
}

test("over the wire: unknown procedures, missing operations and bogus event callbacks get libvirt's errors", async (t) => {
  const ours = await startOurs(t);
  const { rpc, call } = await openRaw(t, ours.rw);

  // A number past the generated table is refused as libvirtd does (the client sees NO_SUPPORT).
  const unknown = await t.throwsAsync(call(9999, xdr.xvoid, undefined, xdr.xvoid), { instanceOf: VirError });
  t.is(unknown?.message, 'unknown procedure: 9999');
  // A procedure of the table the test driver lacks: libvirt's "not supported", in the API's domain.
  const { dom } = await call(
    RemoteProc.DOMAIN_LOOKUP_BY_NAME,
    remote.domainLookupByNameArgs,
    { name: 'test' },
    remote.domainLookupByNameRet,
  );
  const nmi = await t.throwsAsync(call(RemoteProc.DOMAIN_INJECT_NMI, remote.domainInjectNmiArgs, { dom, flags: 0 }, xdr.xvoid), {
    instanceOf: VirError,
  });
  t.like(nmi, {
    code: ErrorCode.NO_SUPPORT,
    domain: ErrorDomain.DOMAIN,
    message: 'this function is not supported by the connection driver: virDomainInjectNMI',
  });
  // A procedure that opens a stream is refused: no driver method can carry its STREAM packets.
  const screenshot = await t.throwsAsync(
    call(RemoteProc.DOMAIN_SCREENSHOT, remote.domainScreenshotArgs, { dom, screen: 0, flags: 0 }, remote.domainScreenshotRet),
    { instanceOf: VirError },
  );
  t.like(screenshot, {
    code: ErrorCode.NO_SUPPORT,
    message: 'this function is not supported by the connection driver: virDomainScreenshot',
  });
  // Unknown flags are refused, not ignored.
  const flags = await t.throwsAsync(call(RemoteProc.DOMAIN_DESTROY_FLAGS, remote.domainDestroyFlagsArgs, { dom, flags: 0x80 }, xdr.xvoid), {
    instanceOf: VirError,
  });
  t.is(flags?.code, ErrorCode.INVALID_ARG);

  const badEvent = await t.throwsAsync(
    call(
      RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
      remote.connectDomainEventCallbackRegisterAnyArgs,
      { eventID: 27, dom: null },
      remote.connectDomainEventCallbackRegisterAnyRet,
    ),
    { instanceOf: VirError },
  );
  t.is(badEvent?.message, 'internal error: unsupported event ID 27');
  const notRegistered = await t.throwsAsync(
    call(
      RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
      remote.connectDomainEventCallbackDeregisterAnyArgs,
      { callbackID: 42 },
      xdr.xvoid,
    ),
    { instanceOf: VirError },
  );
  t.is(notRegistered?.message, 'domain event callback 42 not registered');

  // A registered callback gets the lifecycle MESSAGE with libvirt 9.0's serial 1.
  const received: { serial: number; callbackID: number; event: number }[] = [];
  const arrivals = new EventEmitter();
  rpc.onProgramMessage(REMOTE_PROGRAM, (h, body) => {
    if (h.proc !== RemoteProc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) return;
    const m = remote.domainEventCallbackLifecycleMsg.decode(body);
    received.push({ serial: h.serial, callbackID: m.callbackID, event: m.msg.event });
    arrivals.emit('event');
  });
  const { callbackID } = await call(
    RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
    remote.connectDomainEventCallbackRegisterAnyArgs,
    { eventID: 0, dom },
    remote.connectDomainEventCallbackRegisterAnyRet,
  );
  await call(RemoteProc.DOMAIN_SUSPEND, remote.domainSuspendArgs, { dom }, xdr.xvoid);
  await call(RemoteProc.DOMAIN_RESUME, remote.domainResumeArgs, { dom }, xdr.xvoid);
  await whenEmitted(arrivals, ['event'], () => received.length >= 2, 30_000, 'two lifecycle events');
  t.deepEqual(received, [
    { serial: 1, callbackID, event: 3 },
    { serial: 1, callbackID, event: 4 },
  ]);
  await call(
    RemoteProc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
    remote.connectDomainEventCallbackDeregisterAnyArgs,
    { callbackID },
    xdr.xvoid,
  );
  await call(RemoteProc.DOMAIN_SUSPEND, remote.domainSuspendArgs, { dom }, xdr.xvoid);
  await call(RemoteProc.DOMAIN_RESUME, remote.domainResumeArgs, { dom }, xdr.xvoid);
  await call(RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet);
  await new Promise((resolve) => setImmediate(resolve));
  t.is(received.length, 2, 'nothing after deregistering');
});

const cliBin = join(new URL('../../../', import.meta.url).pathname, 'cli', 'dist', 'src', 'bin.js');
const cli = (uri: string, args: readonly string[]) =>
  runProcess(process.execPath, [cliBin, '-c', uri, ...args], { env: libvirtClientEnv(), timeoutMs: 30_000 });

test("the virtauth CLI manages a domain, with --json for scripts and virsh's words otherwise", async (t) => {
  const ours = await startOurs(t);
  const uri = `test+unix:///default?socket=${ours.rw}`;
  const xmlPath = join(ours.dir, 'domain.xml');
  await writeFile(xmlPath, DOMAIN_XML);
  const define = await cli(uri, ['--json', 'define', xmlPath]);
  t.is(define.code, 0, define.stderr);
  t.deepEqual(JSON.parse(define.stdout), {
    domain: { name: 'lifecycle-vm', uuid: '5c4b1b0e-8f0c-4f43-9d39-6a2b3c4d5e6f', id: -1 },
    action: 'defined',
  });
  t.is((await cli(uri, ['start', 'lifecycle-vm'])).stdout, "Domain 'lifecycle-vm' started\n\n");
  const again = await cli(uri, ['start', 'lifecycle-vm']);
  t.is(again.code, 1);
  t.regex(again.stderr, /error: Domain is already active/);
  t.is((await cli(uri, ['suspend', 'lifecycle-vm'])).stdout, "Domain 'lifecycle-vm' suspended\n\n");
  const list = JSON.parse((await cli(uri, ['--json', 'list', '--all'])).stdout) as { name: string; state: number }[];
  t.deepEqual(
    list.map((d) => [d.name, d.state]),
    [
      ['test', 1],
      ['lifecycle-vm', 3],
    ],
  );
  t.is((await cli(uri, ['resume', 'lifecycle-vm'])).code, 0);
  t.is((await cli(uri, ['shutdown', 'lifecycle-vm'])).stdout, "Domain 'lifecycle-vm' is being shutdown\n\n");
  const destroy = await cli(uri, ['destroy', 'lifecycle-vm']);
  t.is(destroy.code, 1);
  t.regex(destroy.stderr, /Failed to destroy domain 'lifecycle-vm'\nerror: Requested operation is not valid: domain is not running/);
  t.is((await cli(uri, ['undefine', 'lifecycle-vm'])).stdout, "Domain 'lifecycle-vm' has been undefined\n\n");
  const missing = await cli(uri, ['start', 'lifecycle-vm']);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /failed to get domain 'lifecycle-vm'/);
});

test('virtauth event --loop --json prints each lifecycle event as it happens until interrupted', async (t) => {
  const ours = await startOurs(t);
  const uri = `test+unix:///default?socket=${ours.rw}`;
  // The timeout only bounds a watcher that something left behind; SIGINT ends it here.
  const child = spawn(process.execPath, [cliBin, '-c', uri, '--json', 'event', '--loop', '--timeout', '300'], {
    env: libvirtClientEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => child.kill());
  // Suspend and resume until the watcher (a node process still starting) has seen a whole pair.
  const sawPair = () => /"type":"Suspended"[^\n]*\n[^\n]*"type":"Resumed"/.test(out);
  const deadline = Date.now() + 120_000;
  while (!sawPair() && child.exitCode === null && Date.now() < deadline) {
    await cli(uri, ['suspend', 'test']);
    await cli(uri, ['resume', 'test']);
    // Events follow their call at once; a watcher not yet registered gets the next round.
    await waitFor(sawPair, 5000, 'the pair of events').catch(() => {});
  }
  t.true(sawPair(), `watcher output: ${out}\nstderr: ${err}\nexit: ${child.exitCode}`);
  child.kill('SIGINT');
  t.is(await exited, 0, err);
  const events = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; detail: string; domain: { name: string } });
  t.true(events.every((e) => e.domain.name === 'test'));
  t.deepEqual(
    events.slice(-2).map((e) => `${e.type} ${e.detail}`),
    ['Suspended Paused', 'Resumed Unpaused'],
  );
});

test('the typed client surface through virtauthd: 64 generated calls in flight, each answered with its own reply', async (t) => {
  const ours = await startOurs(t);
  const conn = await openAuth(`test+unix:///default?socket=${ours.rw}`, null);
  t.teardown(() => conn.close());
  const { dom } = await conn.domainLookupByName!({ name: 'test' });
  const calls = Array.from({ length: 64 }, (_, i) => {
    switch (i % 4) {
      case 0:
        return conn.connectGetHostname!().then((r) => ['hostname', r.hostname]);
      case 1:
        return conn.domainGetInfo!({ dom }).then((r) => ['info', r.nrVirtCpu]);
      case 2:
        return conn.domainLookupByUuid!({ uuid: dom.uuid }).then((r) => ['lookup', r.dom.name]);
      default:
        return conn.domainGetState!({ dom, flags: 0 }).then((r) => ['state', r.state]);
    }
  });
  const answers: [string, unknown][] = (await Promise.all(calls)) as [string, unknown][];
  const expected = { hostname: await conn.getHostname(), info: 2, lookup: 'test', state: 1 } as Record<string, unknown>;
  for (const [kind, value] of answers) t.is(value, expected[kind], kind);
  // An operation the test driver lacks is libvirt's NO_SUPPORT through the typed surface too.
  const nmi = await t.throwsAsync(conn.domainInjectNmi!({ dom, flags: 0 }), { instanceOf: VirError });
  t.is(nmi?.code, ErrorCode.NO_SUPPORT);
});

/** python3-libvirt: define, start, suspend, resume, destroy, undefine with a lifecycle callback registered. */
const PYTHON_LIFECYCLE = String.raw`
import json, os, sys, threading, time, libvirt
uri, xml = os.environ['LIFECYCLE_URI'], sys.stdin.read()
libvirt.virEventRegisterDefaultImpl()
events = []
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()
conn = libvirt.open(uri)
def on_event(conn, dom, event, detail, opaque):
    events.append([dom.name(), event, detail])
cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
states = []
dom = conn.defineXML(xml)
for step in ['create', 'suspend', 'resume', 'destroy']:
    getattr(dom, step)()
    states.append([step, dom.state(), dom.isActive(), dom.ID()])
errors = []
try:
    dom.resume()
except libvirt.libvirtError as e:
    errors.append([e.get_error_code(), e.get_error_domain(), e.get_error_message()])
dom.undefine()
deadline = time.time() + 10
while len(events) < 6 and time.time() < deadline:
    time.sleep(0.05)
conn.domainEventDeregisterAny(cb)
conn.close()
print(json.dumps({'states': states, 'errors': errors, 'events': events}))
`;

interopTest(
  'python3-libvirt manages a domain and receives its lifecycle events through virtauthd as through libvirtd',
  ['root', 'libvirtd', 'python3-libvirt'],
  async (t) => {
    const [ours, libvirtd] = await Promise.all([startOurs(t), PrivateLibvirtd.start({ auth_unix_rw: 'none' })]);
    t.teardown(() => libvirtd.stop());
    const run = async (uri: string) => {
      const r = await runPython(PYTHON_LIFECYCLE, { input: DOMAIN_XML, env: { LIFECYCLE_URI: uri } });
      t.is(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as { states: unknown[]; errors: unknown[]; events: unknown[] };
    };
    const [viaVirtauthd, direct] = [await run(`test+unix:///default?socket=${ours.rw}`), await run(libvirtd.uri())];
    t.is(viaVirtauthd.events.length, 6);
    t.deepEqual(viaVirtauthd, direct);
  },
);

test('hostile payloads to every procedure of the generated table get an answer each, and the daemon keeps serving', async (t) => {
  const ours = await startOurs(t);
  const { rpc, call } = await openRaw(t, ours.rw);
  const raw: xdr.Codec<Buffer> = { minSize: 0, encode: (w, v) => w.bytes(v), decode: () => Buffer.alloc(0) };
  const anything: xdr.Codec<null> = { minSize: 0, encode: () => {}, decode: (r) => ((r.offset = r.end), null) };
  const skip = new Set<number>([RemoteProc.CONNECT_CLOSE, RemoteProc.CONNECT_OPEN]);
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const outcomes = new Map<string, number>();
  for (const info of remoteProcedures) {
    if (info.message || skip.has(info.number)) continue;
    for (const length of [0, 4, 24, 64]) {
      const payload = Buffer.from(Array.from({ length }, random));
      const outcome = await call(info.number, raw, payload, anything).then(
        () => 'ok',
        (e: unknown) => (e instanceof VirError ? `error ${e.code}` : `thrown ${String(e)}`),
      );
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
  }
  t.false(
    [...outcomes.keys()].some((k) => k.startsWith('thrown')),
    JSON.stringify([...outcomes]),
  );
  t.false(rpc.closed, 'the connection survived');
  t.is(
    (await call(RemoteProc.DOMAIN_LOOKUP_BY_NAME, remote.domainLookupByNameArgs, { name: 'test' }, remote.domainLookupByNameRet)).dom.name,
    'test',
  );
  t.log(JSON.stringify([...outcomes]));
});
