// The gateway against real libvirt on both sides: virsh and python3-libvirt log in to virtauthd
// with SCRAM and are passed through to a private libvirtd (its test driver). Every command runs
// twice, directly against libvirtd and through virtauthd, and the two outputs must be equal.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { GatewayPair, gatewayDomainXml, gatewayNetworkXml, pythonGatewaySession } from './gateway-support.js';
import { TestPki, describeResult, interopTest, libvirtClientEnv, requireExecutable, runPython, runVirsh, tempDir, waitFor, type ProcessResult } from './peers/index.js';

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

interopTest.serial('virsh through virtauthd (SCRAM over unix) to libvirtd prints what virsh prints directly: lifecycle, screenshot, snapshots, networks, pools, volumes', virshPeers, async (t) => {
  const pair = await startPair(t);
  await assertVirshSame(t, pair, 'unix');
  const opens = pair.virtauthd.events('connect.open');
  t.true(opens.length > 0 && opens.every((r) => r.upstream === pair.upstreamUri && r.driver === 'remote'), JSON.stringify(opens));
  t.deepEqual(pair.virtauthd.events('auth.sasl.succeeded').map((r) => r.user), ['alice']);
});

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

interopTest.serial('python3-libvirt through virtauthd (SCRAM over unix): same results, lifecycle events and screenshot stream as directly', pythonPeers, async (t) => {
  const pair = await startPair(t);
  await assertPythonSame(t, pair, 'unix');
});

/** A long-running `virsh event --all --loop`, its output line-buffered so it can be watched. */
function watchEvents(t: ExecutionContext, uri: string, env: NodeJS.ProcessEnv): { child: ChildProcess; output: () => string } {
  const stdbuf = requireExecutable('stdbuf', 'coreutils');
  const virsh = requireExecutable('virsh', 'libvirt-clients');
  const child = spawn(stdbuf, ['-oL', virsh, '--quiet', '-c', uri, 'event', '--all', '--loop'], { env: libvirtClientEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
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
  await waitFor(async () => {
    await runVirsh([`define ${marker} ; undefine marker`], { uri: pair.directUri() });
    return direct.output().includes("'marker'") && through.output().includes("'marker'");
  }, 20_000, 'both event watchers to see the marker domain');
  const directFrom = direct.output().length;
  const throughFrom = through.output().length;
  const domain = join(dir, 'dom.xml');
  await writeFile(domain, gatewayDomainXml('gwev'));
  const run = await runVirsh([`define ${domain} ; start gwev ; suspend gwev ; resume gwev ; destroy gwev ; undefine gwev`], { uri: pair.directUri() });
  t.is(run.code, 0, describeResult(run));
  const finished = (text: string) => /'gwev': Undefined/.test(text);
  await waitFor(() => finished(direct.output().slice(directFrom)) && finished(through.output().slice(throughFrom)), 20_000, 'the lifecycle events to arrive');
  const events = (text: string, from: number) => text.slice(from).split('\n').filter((line) => line.includes("'gwev'"));
  const seen = events(through.output(), throughFrom);
  t.deepEqual(seen, events(direct.output(), directFrom));
  t.deepEqual(seen.map((line) => /: (\w+)/.exec(line.split("'gwev'")[1]!)?.[1]), ['Defined', 'Started', 'Suspended', 'Resumed', 'Stopped', 'Undefined'], seen.join('\n'));
});

interopTest.serial('TLS on both links: virsh and python3-libvirt through virtauthd (SCRAM over TLS) to libvirtd over TLS match direct TLS', tlsPeers, async (t) => {
  const pki = await TestPki.create();
  t.teardown(() => pki.remove());
  const pair = await startPair(t, { pki, upstream: 'tls' });
  t.regex(pair.upstreamUri, /^test\+tls:/);
  await assertVirshSame(t, pair, 'tls');
  await assertPythonSame(t, pair, 'tls');
});
