// The gateway against real libvirt on both sides: virsh and python3-libvirt log in to virtauthd
// with SCRAM and are passed through to a private libvirtd (its test driver). Every command runs
// twice, directly against libvirtd and through virtauthd, and the two outputs must be equal.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { CredentialType, ErrorCode, ErrorDomain, REMOTE_PROGRAM, VirError, xdr, type RpcConnection } from '@virtauth/core';
import type { RemoteConnection } from '@virtauth/drivers';
import { openAuth, type ConnectAuth } from 'virtauth';

import {
  GatewayPair,
  gatewayDomainXml,
  gatewayNetworkXml,
  gatewayPassword,
  gatewayUser,
  pythonGatewayScript,
  pythonGatewaySession,
} from './gateway-support.js';
import {
  PrivateLibvirtd,
  TestPki,
  describeResult,
  interopTest,
  libvirtClientEnv,
  requireExecutable,
  runPython,
  runProcess,
  runVirsh,
  systemPython,
  tempDir,
  untilClientCount,
  waitFor,
  whenEmitted,
  type ProcessResult,
} from './peers/index.js';

const virshPeers = ['root', 'libvirtd', 'virsh', 'sasl-scram'];
const pythonPeers = ['root', 'libvirtd', 'python3-libvirt', 'sasl-scram'];
const tlsPeers = [...virshPeers, 'python3-libvirt', 'certtool'];

async function scratchDir(t: ExecutionContext): Promise<string> {
  const dir = await tempDir('vgw');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startPair(t: ExecutionContext, options: Parameters<typeof GatewayPair.start>[0] = {}): Promise<GatewayPair> {
  const pair = await GatewayPair.start(options);
  t.teardown(() => pair.stop());
  return pair;
}

/** Files the virsh script reads, and the script: every verb the issue names, in one session. */
async function virshScript(dir: string, tag: string): Promise<{ script: string; screenshot: string }> {
  const domainFile = join(dir, `${tag}-dom.xml`);
  const networkFile = join(dir, `${tag}-net.xml`);
  const upload = join(dir, `${tag}-upload.bin`);
  const screenshot = join(dir, `${tag}-screen.png`);
  await writeFile(domainFile, gatewayDomainXml('gw1'));
  await writeFile(networkFile, gatewayNetworkXml('gwnet', 232));
  await writeFile(upload, Buffer.alloc(8192, 7));
  // The test driver keeps its state while a connection is open, so the steps share one virsh.
  const steps = [
    'nodeinfo',
    'capabilities',
    `define ${domainFile}`,
    'start gw1',
    'suspend gw1',
    'domstate gw1',
    'resume gw1',
    `screenshot gw1 ${screenshot}`,
    'domstats gw1',
    'snapshot-create-as gw1 snap1',
    'snapshot-list gw1 --name',
    'snapshot-delete gw1 snap1',
    'snapshot-list gw1 --name',
    'destroy gw1',
    'undefine gw1',
    'list --all',
    `net-define ${networkFile}`,
    'net-start gwnet',
    'net-list --all',
    'net-destroy gwnet',
    'net-undefine gwnet',
    'pool-list --all',
    'pool-info default-pool',
    'vol-create-as default-pool gwvol 1M',
    'vol-list default-pool',
    // The test driver has no volume streams: libvirtd's error must come back unchanged.
    `vol-upload --pool default-pool gwvol ${upload}`,
    `vol-download --pool default-pool gwvol ${join(dir, `${tag}-download.bin`)}`,
    'vol-delete --pool default-pool gwvol',
    'dominfo no-such-domain',
  ];
  return { script: steps.join(' ; '), screenshot };
}

async function assertVirshSame(t: ExecutionContext, pair: GatewayPair, transport: 'unix' | 'tls'): Promise<void> {
  const dir = await scratchDir(t);
  const env = { LIBVIRT_AUTH_FILE: pair.authFile };
  const direct = await virshScript(dir, 'direct');
  const through = await virshScript(dir, 'gateway');
  const directRun = await runVirsh([direct.script], { uri: pair.directUri(transport), env, timeoutMs: 60_000 });
  const gatewayRun = await runVirsh([through.script], { uri: pair.gatewayUri(transport), env, timeoutMs: 60_000 });
  const paths = (text: string) => text.replaceAll(dir, 'DIR').replace(/(direct|gateway)-/g, 'TAG-');
  t.is(gatewayRun.code, directRun.code, `${transport}: ${describeResult(gatewayRun)}\n${pair.virtauthd.logText().slice(-3000)}`);
  t.is(paths(gatewayRun.stdout), paths(directRun.stdout), transport);
  t.is(paths(gatewayRun.stderr), paths(directRun.stderr), transport);
  t.regex(directRun.stdout, /snap1/);
  t.regex(directRun.stdout, /gwnet\s+active/);
  t.regex(directRun.stderr, /virStorageVolUpload/);
  const [directShot, gatewayShot] = await Promise.all([readFile(direct.screenshot), readFile(through.screenshot)]);
  t.true(directShot.length > 1000, 'the test driver sends a real image');
  t.deepEqual(gatewayShot, directShot, 'the screenshot stream arrives byte for byte');
}

interopTest.serial(
  'virsh through virtauthd (SCRAM over unix) to libvirtd prints what virsh prints directly: lifecycle, screenshot, snapshots, networks, pools, volumes',
  virshPeers,
  async (t) => {
    const pair = await startPair(t);
    await assertVirshSame(t, pair, 'unix');
    const opens = pair.virtauthd.events('connect.open');
    t.true(opens.length > 0 && opens.every((r) => r.upstream === pair.upstreamUri && r.driver === 'remote'), JSON.stringify(opens));
    t.deepEqual(
      pair.virtauthd.events('auth.sasl.succeeded').map((r) => r.user),
      ['alice'],
    );
  },
);

async function pythonSession(uri: string, domain: string): Promise<ProcessResult & { parsed?: Record<string, unknown> }> {
  const result = await runPython(pythonGatewaySession(uri, domain), { timeoutMs: 60_000 });
  try {
    return { ...result, parsed: JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as Record<string, unknown> };
  } catch {
    return result;
  }
}

async function assertPythonSame(t: ExecutionContext, pair: GatewayPair, transport: 'unix' | 'tls'): Promise<void> {
  const direct = await pythonSession(pair.directUri(transport), 'gwpy');
  const through = await pythonSession(pair.gatewayUri(transport), 'gwpy');
  t.truthy(direct.parsed, describeResult(direct));
  t.truthy(through.parsed, `${describeResult(through)}\n${pair.virtauthd.logText().slice(-3000)}`);
  t.deepEqual(through.parsed, direct.parsed, transport);
  const events = direct.parsed?.events as unknown[][] | undefined;
  // Defined, Started, Suspended, Resumed, Stopped, Undefined (snapshots add none on the test driver).
  t.true((events?.length ?? 0) >= 6, JSON.stringify(events));
  t.deepEqual((direct.parsed?.screenshot as unknown[])?.[0], 'image/png');
}

interopTest.serial(
  'python3-libvirt through virtauthd (SCRAM over unix): same results, lifecycle events and screenshot stream as directly',
  pythonPeers,
  async (t) => {
    const pair = await startPair(t);
    await assertPythonSame(t, pair, 'unix');
  },
);

/** A long-running `virsh event --all --loop`, its output line-buffered so it can be watched. */
function watchEvents(t: ExecutionContext, uri: string, env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string } {
  const stdbuf = requireExecutable('stdbuf', 'coreutils');
  const virsh = requireExecutable('virsh', 'libvirt-clients');
  const child = spawn(stdbuf, ['-oL', virsh, '--quiet', '-c', uri, 'event', '--all', '--loop'], {
    env: libvirtClientEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const collect = (chunk: Buffer) => {
    text += chunk.toString('utf8');
    child.emit('output');
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  t.teardown(() => void child.kill('SIGKILL'));
  return { child, output: () => text };
}

interopTest.serial('`virsh event --all --loop` through virtauthd sees the lifecycle events it sees directly', virshPeers, async (t) => {
  const pair = await startPair(t);
  const dir = await scratchDir(t);
  const env = { LIBVIRT_AUTH_FILE: pair.authFile };
  const direct = watchEvents(t, pair.directUri(), env);
  const through = watchEvents(t, pair.gatewayUri(), env);
  // Both watchers keep the test driver's state alive; a marker domain shows when both listen.
  const marker = join(dir, 'marker.xml');
  await writeFile(marker, gatewayDomainXml('marker'));
  await waitFor(
    async () => {
      await runVirsh([`define ${marker} ; undefine marker`], { uri: pair.directUri() });
      return direct.output().includes("'marker'") && through.output().includes("'marker'");
    },
    20_000,
    'both event watchers to see the marker domain',
  );
  const directFrom = direct.output().length;
  const throughFrom = through.output().length;
  const domain = join(dir, 'dom.xml');
  await writeFile(domain, gatewayDomainXml('gwev'));
  const run = await runVirsh([`define ${domain} ; start gwev ; suspend gwev ; resume gwev ; destroy gwev ; undefine gwev`], {
    uri: pair.directUri(),
  });
  t.is(run.code, 0, describeResult(run));
  const finished = (text: string) => /'gwev': Undefined/.test(text);
  await Promise.all([
    whenEmitted(direct.child, ['output'], () => finished(direct.output().slice(directFrom)), 60_000, 'the events seen directly'),
    whenEmitted(
      through.child,
      ['output'],
      () => finished(through.output().slice(throughFrom)),
      60_000,
      'the events seen through virtauthd',
    ),
  ]);
  const events = (text: string, from: number) =>
    text
      .slice(from)
      .split('\n')
      .filter((line) => line.includes("'gwev'"));
  const seen = events(through.output(), throughFrom);
  t.deepEqual(seen, events(direct.output(), directFrom));
  t.deepEqual(
    seen.map((line) => /: (\w+)/.exec(line.split("'gwev'")[1]!)?.[1]),
    ['Defined', 'Started', 'Suspended', 'Resumed', 'Stopped', 'Undefined'],
    seen.join('\n'),
  );
});

interopTest.serial(
  'TLS on both links: virsh and python3-libvirt through virtauthd (SCRAM over TLS) to libvirtd over TLS match direct TLS',
  tlsPeers,
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const pair = await startPair(t, { pki, upstream: 'tls' });
    t.regex(pair.upstreamUri, /^test\+tls:/);
    await assertVirshSame(t, pair, 'tls');
    await assertPythonSame(t, pair, 'tls');
  },
);

// ---------------------------------------------------------------------------------------------
// Read-only, upstream credentials

interopTest.serial(
  'read-only: the read-only socket and the READ_ONLY flag open the upstream read-only (libvirtd refuses writes as it does directly)',
  virshPeers,
  async (t) => {
    const pair = await startPair(t);
    const dir = await scratchDir(t);
    const domain = join(dir, 'dom.xml');
    await writeFile(domain, gatewayDomainXml('rodom'));
    const env = { LIBVIRT_AUTH_FILE: pair.authFile };
    const direct = await runVirsh([`list --all ; define ${domain}`], { uri: pair.libvirtd.uri('test:///default', 'unix-ro'), env });
    t.regex(direct.stderr, /read.only/i, describeResult(direct));
    const roSocket = pair.virtauthd.handle.listeners.find((l) => l.kind === 'unix' && l.readOnly)!.path!;
    const viaRoSocket = await runVirsh([`list --all ; define ${domain}`], { uri: `test+unix:///default?socket=${roSocket}`, env });
    const viaFlag = await runVirsh(['-r', `list --all ; define ${domain}`], { uri: pair.gatewayUri(), env });
    for (const run of [viaRoSocket, viaFlag]) {
      t.is(run.code, direct.code, describeResult(run));
      t.is(run.stdout, direct.stdout);
      t.is(run.stderr, direct.stderr);
    }
    t.true(pair.virtauthd.events('connect.open').every((r) => r.readOnly === true));
  },
);

const saslPeers = [...virshPeers, 'saslpasswd2', 'sasl-sasldb'];

interopTest.serial(
  'upstream credentials: from the daemon\'s auth.conf for the upstream host, else relayed to the client (an old client gets "authentication unavailable")',
  saslPeers,
  async (t) => {
    const upstreamPassword = 'bob-Upstream-Pa55-a1';
    const pair = await startPair(t, { libvirtd: { auth_unix_rw: 'sasl', saslUsers: { bob: upstreamPassword } } });
    const env = { LIBVIRT_AUTH_FILE: pair.authFile };
    // Without credentials of its own the daemon asks the client; virsh cannot answer relayed requests.
    const refused = await runVirsh(['hostname'], { uri: pair.gatewayUri(), env });
    t.not(refused.code, 0);
    t.regex(refused.stderr, /authentication unavailable/, describeResult(refused));

    // virtauth's own client answers the relayed request: the upstream's prompt reaches its callback.
    const asked: string[] = [];
    const auth: ConnectAuth = {
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        for (const c of creds) {
          asked.push(`${c.type}`);
          c.result =
            c.type === CredentialType.AUTHNAME
              ? asked.length <= 2
                ? gatewayUser
                : 'bob'
              : asked.length <= 2
                ? gatewayPassword
                : upstreamPassword;
        }
      },
    };
    const relayed = await openAuth(pair.gatewayUri(), auth);
    t.is(
      await relayed.getHostname(),
      (await runVirsh(['hostname'], { uri: pair.directUri(), input: `bob\n${upstreamPassword}\n` })).stdout.split(': ').pop()!.trim(),
    );
    await relayed.close();
    t.is(asked.length, 4, 'asked once for virtauthd, once (relayed) for libvirtd');

    // With the daemon's auth.conf naming the upstream host, virsh needs nothing more.
    const dir = await scratchDir(t);
    const daemonAuth = join(dir, 'daemon-auth.conf');
    await writeFile(
      daemonAuth,
      `[credentials-up]\nauthname=bob\npassword=${upstreamPassword}\n[auth-libvirt-localhost]\ncredentials=up\n`,
      { mode: 0o600 },
    );
    const previous = process.env.LIBVIRT_AUTH_FILE;
    process.env.LIBVIRT_AUTH_FILE = daemonAuth;
    t.teardown(() => {
      if (previous === undefined) delete process.env.LIBVIRT_AUTH_FILE;
      else process.env.LIBVIRT_AUTH_FILE = previous;
    });
    const accepted = await runVirsh(['list --all'], { uri: pair.gatewayUri(), env });
    t.is(accepted.code, 0, describeResult(accepted));
    t.regex(accepted.stdout, /test\s+running/);
    const log = pair.virtauthd.logText();
    for (const secret of [upstreamPassword, gatewayPassword]) t.false(log.includes(secret), 'no password in the log');
  },
);

// ---------------------------------------------------------------------------------------------
// Faults, bad input, many clients

const nonnullDomain = xdr.struct({ name: xdr.string(4194304), uuid: xdr.fixedOpaque(16), id: xdr.int });
const Proc = {
  DOMAIN_CREATE: 9,
  DOMAIN_DEFINE_XML: 11,
  DOMAIN_DESTROY: 12,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_UNDEFINE: 35,
  DOMAIN_SCREENSHOT: 211,
  EVENT_REGISTER_ANY: 316,
  EVENT_LIFECYCLE: 318,
} as const;
const domainRet = xdr.struct({ dom: nonnullDomain });
const domainArgs = xdr.struct({ dom: nonnullDomain });
const lifecycleMsg = xdr.struct({ callbackID: xdr.int, msg: xdr.struct({ dom: nonnullDomain, event: xdr.int, detail: xdr.int }) });

function remoteCall<A, R>(rpc: RpcConnection, proc: number, args: xdr.Codec<A>, value: A, ret: xdr.Codec<R>): Promise<R> {
  return rpc.call(REMOTE_PROGRAM, 1, proc, args, value, ret);
}

async function openGateway(pair: GatewayPair): Promise<{ conn: RemoteConnection; rpc: RpcConnection }> {
  const auth: ConnectAuth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? gatewayUser : gatewayPassword;
    },
  };
  const conn = (await openAuth(pair.gatewayUri(), auth)) as RemoteConnection;
  return { conn, rpc: conn.rpc };
}

async function libvirtdClients(libvirtd: PrivateLibvirtd): Promise<number> {
  const result = await runProcess(requireExecutable('virt-admin', 'libvirt-clients'), [
    '-c',
    `libvirtd:///system?socket=${libvirtd.dir}/sock/libvirt-admin-sock`,
    'srv-clients-info',
    'libvirtd',
  ]);
  const match = /^nclients\s*:\s*(\d+)/m.exec(result.stdout);
  if (!match) throw new Error(`virt-admin srv-clients-info: ${describeResult(result)}`);
  return Number(match[1]);
}

/** What libvirt's client reports for a daemon that died: end of file, or a reset if it left input unread. */
const daemonLost = /^(End of file while reading data: Input\/output error|Cannot recv data: Connection reset by peer)$/;

interopTest.serial(
  "libvirtd killed mid-call: every waiting call gets libvirt's end-of-file error and the client is closed; virtauthd serves on",
  ['root', 'libvirtd', 'virsh'],
  async (t) => {
    const pair = await startPair(t);
    const { rpc } = await openGateway(pair);
    t.is(await libvirtdClients(pair.libvirtd), 1);
    // Stopped, libvirtd reads nothing: the calls are surely waiting when it dies.
    process.kill(pair.libvirtd.pid, 'SIGSTOP');
    const calls = Array.from({ length: 16 }, () =>
      remoteCall(rpc, Proc.DOMAIN_LOOKUP_BY_NAME, xdr.struct({ name: xdr.string(256) }), { name: 'test' }, domainRet),
    );
    const outcomes = Promise.allSettled(calls);
    process.kill(pair.libvirtd.pid, 'SIGKILL');
    for (const outcome of await outcomes) {
      t.is(outcome.status, 'rejected');
      if (outcome.status === 'rejected') {
        const e = outcome.reason as VirError;
        t.deepEqual([e.code, e.domain], [ErrorCode.SYSTEM_ERROR, ErrorDomain.RPC]);
        t.regex(e.message, daemonLost);
      }
    }
    await rpc.whenClosed();
    await untilClientCount([pair.virtauthd.handle.server], 0, 30_000, 'virtauthd to drop the client');
    // A new client is told the upstream is unreachable, and virtauthd is still there to say so.
    const after = await runVirsh(['hostname'], { uri: pair.gatewayUri(), env: { LIBVIRT_AUTH_FILE: pair.authFile } });
    t.not(after.code, 0);
    t.regex(after.stderr, /unable to connect to socket/, describeResult(after));
  },
);

interopTest.serial(
  'a client killed mid-stream: its upstream connection closes and libvirtd serves the next client',
  ['root', 'libvirtd', 'virsh'],
  async (t) => {
    const pair = await startPair(t);
    const { rpc } = await openGateway(pair);
    const dom = (await remoteCall(rpc, Proc.DOMAIN_LOOKUP_BY_NAME, xdr.struct({ name: xdr.string(256) }), { name: 'test' }, domainRet)).dom;
    // The screenshot's reply opens the stream; the client dies before reading its data.
    await remoteCall(
      rpc,
      Proc.DOMAIN_SCREENSHOT,
      xdr.struct({ dom: nonnullDomain, screen: xdr.uint, flags: xdr.uint }),
      { dom, screen: 0, flags: 0 },
      xdr.struct({ mime: xdr.optional(xdr.string(256)) }),
    );
    t.is(await libvirtdClients(pair.libvirtd), 1);
    rpc.stream.destroy();
    await waitFor(async () => (await libvirtdClients(pair.libvirtd)) === 0, 10_000, 'libvirtd to see its client go');
    await untilClientCount([pair.virtauthd.handle.server], 0, 30_000, 'virtauthd to drop the client');
    const next = await runVirsh(['list --all'], { uri: pair.gatewayUri(), env: { LIBVIRT_AUTH_FILE: pair.authFile } });
    t.is(next.code, 0, describeResult(next));
  },
);

interopTest.serial(
  'bad input through the gateway: an unknown procedure is refused as libvirtd refuses it; stray stream data is dropped and 64 calls in flight follow',
  ['root', 'libvirtd'],
  async (t) => {
    const pair = await startPair(t, { logLevel: 1 });
    const { rpc } = await openGateway(pair);
    const unknown = await t.throwsAsync(remoteCall(rpc, 444, xdr.xvoid, undefined, xdr.xvoid));
    // Our client, like libvirt's, turns "unknown procedure" into NO_SUPPORT keeping the text.
    t.deepEqual([(unknown as VirError).code, (unknown as VirError).message], [ErrorCode.NO_SUPPORT, 'unknown procedure: 444']);
    // Stream data for serial 4242, which no call opened, then a call on the same connection.
    const stray = Buffer.alloc(28 + 64);
    stray.writeUInt32BE(stray.length, 0);
    stray.writeUInt32BE(REMOTE_PROGRAM, 4);
    stray.writeUInt32BE(1, 8);
    stray.writeUInt32BE(Proc.DOMAIN_SCREENSHOT, 12);
    stray.writeUInt32BE(3, 16);
    stray.writeUInt32BE(4242, 20);
    stray.writeUInt32BE(2, 24);
    rpc.stream.write(stray);
    // Then 64 calls in flight at once, each answered in turn.
    const lookups = await Promise.all(
      Array.from({ length: 64 }, () =>
        remoteCall(rpc, Proc.DOMAIN_LOOKUP_BY_NAME, xdr.struct({ name: xdr.string(256) }), { name: 'test' }, domainRet),
      ),
    );
    t.true(lookups.every((l) => l.dom.name === 'test' && l.dom.id === 1));
    t.true(pair.virtauthd.events('gateway.stream.stray').some((r) => r.serial === 4242));
    t.false(rpc.closed);
  },
);

interopTest.serial(
  '200 concurrent clients, each with its own upstream: their serials, events and domains never cross',
  ['root', 'libvirtd'],
  async (t) => {
    const clients = 200;
    const pair = await startPair(t, { settings: { max_anonymous_clients: 50 } });
    const opened = await Promise.all(Array.from({ length: clients }, () => openGateway(pair)));
    t.teardown(() => Promise.allSettled(opened.map((o) => o.conn.close())));
    t.is(await libvirtdClients(pair.libvirtd), clients, 'one upstream connection per client');
    await Promise.all(
      opened.map(async ({ rpc }, i) => {
        const name = `gwc${i}`;
        const events: { callbackID: number; name: string; event: number }[] = [];
        let started!: () => void;
        const startedEvent = new Promise<void>((resolve) => (started = resolve));
        rpc.onProgramMessage(REMOTE_PROGRAM, (h, body) => {
          if (h.proc !== Proc.EVENT_LIFECYCLE) return;
          const m = lifecycleMsg.decode(body);
          events.push({ callbackID: m.callbackID, name: m.msg.dom.name, event: m.msg.event });
          if (m.msg.event === 2) started();
        });
        const { dom } = await remoteCall(
          rpc,
          Proc.DOMAIN_DEFINE_XML,
          xdr.struct({ xml: xdr.string(65536) }),
          { xml: gatewayDomainXml(name) },
          domainRet,
        );
        t.is(dom.name, name);
        const { callbackID } = await remoteCall(
          rpc,
          Proc.EVENT_REGISTER_ANY,
          xdr.struct({ eventID: xdr.int, dom: xdr.optional(nonnullDomain) }),
          { eventID: 0, dom },
          xdr.struct({ callbackID: xdr.int }),
        );
        // Eight lookups in flight at once, each answered with this client's own domain.
        const lookups = await Promise.all(
          Array.from({ length: 8 }, () =>
            remoteCall(rpc, Proc.DOMAIN_LOOKUP_BY_NAME, xdr.struct({ name: xdr.string(256) }), { name }, domainRet),
          ),
        );
        for (const l of lookups) t.deepEqual([l.dom.name, l.dom.uuid], [name, dom.uuid]);
        await remoteCall(rpc, Proc.DOMAIN_CREATE, domainArgs, { dom }, xdr.xvoid);
        await startedEvent;
        await remoteCall(rpc, Proc.DOMAIN_DESTROY, domainArgs, { dom }, xdr.xvoid);
        await remoteCall(rpc, Proc.DOMAIN_UNDEFINE, domainArgs, { dom }, xdr.xvoid);
        t.true(
          events.length >= 1 && events.every((e) => e.name === name && e.callbackID === callbackID),
          `${name}: ${JSON.stringify(events)}`,
        );
      }),
    );
    await Promise.all(opened.map((o) => o.conn.close()));
    await waitFor(async () => (await libvirtdClients(pair.libvirtd)) === 0, 20_000, 'every upstream connection to close');
  },
);

/** python3-libvirt with a close callback and keepalive, waiting for libvirtd to be killed. */
const closeCallbackScript = (uri: string) =>
  pythonGatewayScript(
    uri,
    String.raw`
closed = threading.Event()
reasons = []
def on_close(_conn, reason, _opaque):
    reasons.append(reason)
    closed.set()
conn = libvirt.openAuth(SETTINGS['uri'], [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None], 0)
conn.registerCloseCallback(on_close, None)
conn.setKeepAlive(5, 3)
print('ready', flush=True)
sys.stdin.readline()
closed.wait(20)
try:
    conn.getHostname()
    after = None
except libvirt.libvirtError as e:
    after = [e.get_error_code(), e.get_error_domain()]
print(json.dumps({'reasons': reasons, 'after': after}), flush=True)
`,
  );

/** Runs the script against `uri`, kills `libvirtd` once the client is connected, returns what it saw. */
async function closeCallbackAfterKill(t: ExecutionContext, uri: string, libvirtd: PrivateLibvirtd): Promise<unknown> {
  const dir = await scratchDir(t);
  const script = join(dir, 'close.py');
  await writeFile(script, closeCallbackScript(uri));
  const child = spawn(requireExecutable(systemPython, 'python3-libvirt'), ['-I', script], {
    env: libvirtClientEnv(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  const collect = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    child.emit('output');
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const printed = (text: string, what: string) =>
    whenEmitted(child, ['output', 'exit'], () => out.includes(text) || child.exitCode !== null, 30_000, what).then(() => {
      if (!out.includes(text)) throw new Error(`the python client exited before ${what}: ${out}`);
    });
  await printed('ready', 'connecting');
  process.kill(libvirtd.pid, 'SIGKILL');
  child.stdin!.end('go\n');
  await printed('reasons', 'reporting');
  return JSON.parse(out.split('\n').find((line) => line.includes('reasons'))!);
}

interopTest.serial(
  "libvirtd going away: python3-libvirt's close callback fires through virtauthd as it does directly, and later calls fail alike",
  pythonPeers,
  async (t) => {
    const direct = await startPair(t);
    const seenDirect = await closeCallbackAfterKill(t, direct.directUri(), direct.libvirtd);
    const through = await startPair(t);
    const seenThrough = await closeCallbackAfterKill(t, through.gatewayUri(), through.libvirtd);
    t.deepEqual(seenThrough, seenDirect);
    t.deepEqual((seenDirect as { reasons: number[] }).reasons, [1], 'VIR_CONNECT_CLOSE_REASON_EOF');
    await untilClientCount([through.virtauthd.handle.server], 0, 30_000, 'virtauthd to drop the client');
  },
);
