// The relay across hosts: daemons A and B as separate processes on separate test hosts (network
// namespaces joined by a veth pair, addresses 10.213.0.1 and .2 only inside them), the XenAPI
// server on B's host. The client reaches A on its unix socket (SASL SCRAM); A reaches B over TLS
// with SASL SCRAM from A's own auth.conf (LIBVIRT_AUTH_FILE); B's XenAPI driver asks for
// credentials that travel back B → A → client. Where namespaces cannot be made, the same
// processes run on loopback, and the test titles say so.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { CredentialType, ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { FileUserDatabase } from '@virtauth/providers';
import { openAuth } from 'virtauth';

import { TestPki, tempDir, whenEmitted } from './peers/index.js';
import {
  ChildRun,
  NetnsPair,
  RecordingAuth,
  TEST_SCRAM_ITERATIONS,
  answerWith,
  authConfSource,
  authConfText,
  chainUri,
  xenapiDriverUri,
  neverAnswer,
  removeDir,
  virErrorOf,
  writeAuthConf,
  type DaemonAuditRecord,
} from './relay-helpers.js';

const daemonMain = fileURLToPath(new URL('../../../daemon/dist/src/main.js', import.meta.url));
const xenapiChild = fileURLToPath(new URL('./relay-xenapi-child.js', import.meta.url));
const NS_PREFIX = `vr${process.pid % 10000}`;

/** Whether namespaces can be made here; decided while tests are declared, so titles can say. */
function netnsProblem(): string | null {
  // For exercising the fallback on a machine where namespaces work.
  if (process.env.VIRTAUTH_TEST_NO_NETNS === '1') return 'VIRTAUTH_TEST_NO_NETNS=1';
  if (process.getuid?.() !== 0) return 'not root';
  const probe = `${NS_PREFIX}p`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8', timeout: 10_000 });
  if (add.error) return `ip: ${add.error.message}`;
  if (add.status !== 0) return `ip netns add failed: ${add.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe], { timeout: 10_000 });
  return null;
}

const problem = netnsProblem();
const where = problem === null ? 'network namespaces ns1/ns2 over veth' : `loopback (network namespaces unavailable: ${problem})`;

const secret = (label: string) => `${label}-${randomBytes(9).toString('base64url')}`;
const ALICE_PASSWORD = secret('alice-pw');
const HOP_PASSWORD = secret('hop-pw');
const XEN_ROOT_PASSWORD = secret('xen-root-pw');
const secrets = [ALICE_PASSWORD, HOP_PASSWORD, XEN_ROOT_PASSWORD];

interface Hosts {
  dir: string;
  pki: TestPki;
  netns: NetnsPair | null;
  /** Address A uses to reach B. */
  bAddress: string;
  bTlsPort: number;
  xenPort: number;
  a: ChildRun;
  b: ChildRun;
  xen: ChildRun;
  aSocket: string;
  clientAuthConf: string;
  errorMessages: string[];
}

let hosts: Hosts | undefined;

/** `ip netns exec NS` before a command when namespaces are in use. */
function inHost(ns: string | undefined, command: string, args: string[]): [string, string[]] {
  return ns === undefined ? [command, args] : ['ip', ['netns', 'exec', ns, command, ...args]];
}

async function writeConfig(dir: string, name: string, settings: Record<string, string | number | string[]>): Promise<string> {
  const text = Object.entries(settings)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : Array.isArray(v) ? `[${v.map((x) => `"${x}"`).join(', ')}]` : `"${v}"`}\n`)
    .join('');
  const file = join(dir, `${name}.conf`);
  await writeFile(file, text);
  return file;
}

/** Starts virtauthd from its config file; `lastListener` recognises the last "listening" line it prints. */
async function startDaemon(
  ns: string | undefined,
  configFile: string,
  env: NodeJS.ProcessEnv,
  lastListener: string,
): Promise<{ run: ChildRun; listening: string[] }> {
  const [command, args] = inHost(ns, process.execPath, [daemonMain, '--config', configFile]);
  const run = ChildRun.spawn(command, args, env);
  try {
    await run.line((l) => l.startsWith(`virtauthd listening on ${lastListener}`), 20_000, `daemon ${configFile} to listen`);
  } catch (e) {
    await run.stop('SIGKILL');
    throw e;
  }
  return { run, listening: run.stdout.filter((l) => l.startsWith('virtauthd listening on')) };
}

test.before(async () => {
  const dir = await tempDir('vh');
  const netns = problem === null ? await NetnsPair.create(NS_PREFIX) : null;
  const bAddress = netns ? netns.hostB : '127.0.0.1';
  const pki = await TestPki.create({
    serverDnsNames: ['localhost'],
    serverIpAddresses: ['127.0.0.1', ...(netns ? [netns.hostA, netns.hostB] : [])],
  });
  const errorMessages: string[] = [];
  const started: ChildRun[] = [];
  try {
    // XenAPI server on B's host: B reaches it on that host's own loopback.
    const [xCommand, xArgs] = inHost(netns?.nsB, process.execPath, [xenapiChild]);
    const xen = ChildRun.spawn(xCommand, xArgs);
    started.push(xen);
    xen.child.stdin!.write(`${JSON.stringify({ users: { root: XEN_ROOT_PASSWORD } })}\n`);
    const xenPort = (JSON.parse(await xen.line((l) => l.startsWith('{"port"'), 10_000, 'the XenAPI server')) as { port: number }).port;

    const common = {
      sasl_mech_list: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'],
      scram_iteration_count: TEST_SCRAM_ITERATIONS,
      sasl_failure_delay_ms: 0,
      auth_unix_rw: 'sasl',
      auth_unix_ro: 'sasl',
      log_level: 1,
    };
    const bDir = join(dir, 'b');
    const bUsers = new FileUserDatabase({ path: join(dir, 'b-users.json'), iterations: TEST_SCRAM_ITERATIONS });
    await bUsers.setPassword('hop-a', HOP_PASSWORD);
    const bConfig = await writeConfig(dir, 'b', {
      ...common,
      daemon_name: 'virtauthd-B',
      unix_sock_dir: bDir,
      sasl_user_db: join(dir, 'b-users.json'),
      listen_tls: 1,
      listen_addr: bAddress,
      tls_port: 0,
      auth_tls: 'sasl',
      key_file: pki.serverKeyFile,
      cert_file: pki.serverCertFile,
      ca_file: pki.caCertFile,
      uri_allowed_list: [xenapiDriverUri(xenPort)],
    });
    const emptyAuthConf = await writeAuthConf(dir, 'empty-auth.conf', '');
    const b = await startDaemon(netns?.nsB, bConfig, { ...process.env, LIBVIRT_AUTH_FILE: emptyAuthConf }, 'tls ');
    started.push(b.run);
    const tlsLine = b.listening.find((l) => l.startsWith('virtauthd listening on tls '));
    if (!tlsLine) throw new Error(`B has no TLS listener: ${b.listening.join('; ')}`);
    const bTlsPort = Number(/:(\d+) \(/.exec(tlsLine)![1]);

    const aDir = join(dir, 'a');
    const aUsers = new FileUserDatabase({ path: join(dir, 'a-users.json'), iterations: TEST_SCRAM_ITERATIONS });
    await aUsers.setPassword('alice', ALICE_PASSWORD);
    const aConfig = await writeConfig(dir, 'a', {
      ...common,
      daemon_name: 'virtauthd-A',
      unix_sock_dir: aDir,
      sasl_user_db: join(dir, 'a-users.json'),
      uri_allowed_list: [bXenapiUri(bAddress, bTlsPort, xenPort, pki.client.pkiPath)],
    });
    // A's own auth.conf: its SASL login to B, by B's address as A's remote driver names it.
    const aAuthConf = await writeAuthConf(
      dir,
      'a-auth.conf',
      authConfText([{ service: 'libvirt', host: bAddress, username: 'hop-a', password: HOP_PASSWORD }]),
    );
    const a = await startDaemon(
      netns?.nsA,
      aConfig,
      { ...process.env, LIBVIRT_AUTH_FILE: aAuthConf },
      `unix ${join(aDir, 'virtauth-sock-ro')}`,
    );

    const clientAuthConf = await writeAuthConf(
      dir,
      'client-auth.conf',
      authConfText([{ service: 'libvirt', host: 'localhost', username: 'alice', password: ALICE_PASSWORD }]),
    );
    hosts = {
      dir,
      pki,
      netns,
      bAddress,
      bTlsPort,
      xenPort,
      a: a.run,
      b: b.run,
      xen,
      aSocket: join(aDir, 'virtauth-sock'),
      clientAuthConf,
      errorMessages,
    };
  } catch (e) {
    for (const run of started) await run.stop();
    await netns?.remove();
    await pki.remove();
    throw e;
  }
});

test.after.always(async () => {
  if (!hosts) return;
  for (const run of [hosts.a, hosts.b]) await run.stop();
  hosts.xen.child.stdin!.end();
  await hosts.xen.stop();
  await hosts.netns?.remove();
  await hosts.pki.remove();
  await removeDir(hosts.dir);
});

/** What A opens for the client: XenAPI behind B, over TLS. */
function bXenapiUri(bAddress: string, bTlsPort: number, xenPort: number, pkiPath: string): string {
  return `xenapi+tls://${bAddress}:${bTlsPort}/?server=127.0.0.1:${xenPort}&scheme=http&pkipath=${pkiPath}`;
}

function chainToB(h: Hosts): string {
  return chainUri(h.aSocket, bXenapiUri(h.bAddress, h.bTlsPort, h.xenPort, h.pki.client.pkiPath));
}

const audits = (run: ChildRun) => run.stderr.events('relay.audit') as DaemonAuditRecord[];

test.serial(`across hosts [${where}]: client → A → B (TLS + SCRAM) → XenAPI, with the origin chain of both daemons`, async (t) => {
  const h = hosts!;
  const auth = new RecordingAuth([CredentialType.AUTHNAME, CredentialType.PASSPHRASE], answerWith('root', XEN_ROOT_PASSWORD));
  const conn = await openAuth(chainToB(h), auth, 0, { credentialSources: [await authConfSource(h.clientAuthConf)] });
  t.is(await conn.getHostname(), 'xen1.example');
  await conn.close();

  const bName = audits(h.b)[0]?.origin[0]?.daemon;
  t.regex(bName ?? '', /^virtauthd-B@/);
  t.deepEqual(
    auth.calls.map((c) => [c.credentials.map((x) => x.type), c.origin.map((o) => [o.daemon.split('@')[0], o.driver])]),
    [
      [
        [CredentialType.AUTHNAME],
        [
          ['virtauthd-B', 'xenapi'],
          ['virtauthd-A', 'remote'],
        ],
      ],
      [
        [CredentialType.PASSPHRASE],
        [
          ['virtauthd-B', 'xenapi'],
          ['virtauthd-A', 'remote'],
        ],
      ],
    ],
  );
  t.is(auth.calls[0]!.origin[0]!.uri, `xenapi:///?server=127.0.0.1:${h.xenPort}&scheme=http`);
  // The hop's URI names B's address: the request really crossed to the other host.
  t.true(auth.calls[0]!.origin[1]!.uri.startsWith(`xenapi+tls://${h.bAddress}:${h.bTlsPort}/`));

  const bLogin = h.b.stderr.events('auth.sasl.succeeded');
  t.deepEqual(
    bLogin.map((r) => r.user),
    ['hop-a'],
  );
  t.regex(String(bLogin[0]!.mechanism), /^SCRAM-SHA-256/);
  t.deepEqual(
    h.a.stderr.events('auth.sasl.succeeded').map((r) => r.user),
    ['alice'],
  );
  t.deepEqual(
    audits(h.b).map((r) => r.outcome),
    ['OK', 'OK'],
  );
  t.deepEqual(
    audits(h.a).map((r) => r.outcome),
    ['OK', 'OK'],
  );
  const bTransport = h.b.stderr.events('client.authenticated').map((r) => r.transport);
  t.deepEqual(bTransport, ['tls'], 'A reached B over TLS');
});

test.serial(
  `across hosts [${where}]: A killed mid-request → the client's open fails at once with a typed error and B's driver stops waiting`,
  async (t) => {
    const h = hosts!;
    const auditsBefore = audits(h.b).length;
    let killedAt = 0;
    const waitForever = neverAnswer();
    const auth = new RecordingAuth([CredentialType.AUTHNAME, CredentialType.PASSPHRASE], (creds, info) => {
      killedAt = Date.now();
      h.a.child.kill('SIGKILL');
      return waitForever(creds, info);
    });
    const e = await virErrorOf(
      openAuth(chainToB(h), auth, 0, { credentialSources: [await authConfSource(h.clientAuthConf)], relayPolicy: { timeoutMs: 60_000 } }),
    );
    const failedAfter = Date.now() - killedAt;
    h.errorMessages.push(e.message);
    t.true(e instanceof VirError);
    t.is(e.domain, ErrorDomain.RPC);
    t.is(e.code, ErrorCode.SYSTEM_ERROR, e.message);
    // "At once" as against the relay's 60 s deadline; the margin is for a loaded machine.
    t.true(failedAfter < 5000, `the client's open failed ${failedAfter} ms after A died`);
    t.true(auth.calls[0]!.signal!.aborted, 'the prompt was withdrawn');
    await Promise.allSettled([...auth.running]);

    const record = await whenEmitted(h.b.stderr, ['lines'], () => audits(h.b)[auditsBefore], 30_000, "B's audit record");
    t.is(record.outcome, 'CANCELLED');
    t.true(record.time - killedAt < 5000, `B's driver stopped waiting ${record.time - killedAt} ms after A died`);
    // B logs the failed open after the audit record, possibly in a later chunk of its stderr.
    const bFailed = await whenEmitted(
      h.b.stderr,
      ['lines'],
      () => h.b.stderr.events('connect.open.failed').at(0),
      30_000,
      "B's failed open",
    );
    t.is(bFailed.driver, 'xenapi');
    t.is(h.b.stderr.events('connect.open.failed').length, 1);
    t.is(await h.a.exited, null, 'A was killed by a signal');
  },
);

test.serial(`across hosts [${where}]: no secret in either daemon's log, their audit records, or the errors`, (t) => {
  const h = hosts!;
  t.true(h.a.stderr.lines.length > 10 && h.b.stderr.lines.length > 10, 'the daemons logged at debug level');
  for (const [name, text] of [
    ['A log', h.a.stderr.text()],
    ['B log', h.b.stderr.text()],
    ['errors', h.errorMessages.join('\n')],
  ] as const) {
    for (const s of secrets) t.false(text.includes(s), `a secret appears in ${name}`);
  }
});
