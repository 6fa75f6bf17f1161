// The real virt-admin manages virtauthd through virtauth-admin-sock: servers, clients and who
// they are (SCRAM, TLS, unix), limits that take effect at once, disconnecting a client, log
// filters; and the admin socket refuses non-root users, unknown procedures and garbage.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';
import { AuthType, RpcConnection, admin, xdr } from '@virtauth/core';
import { createDaemon, createLogger } from '@virtauth/daemon';

import {
  interopTest,
  requireExecutable,
  runProcess,
  describeResult,
  tempDir,
  untilClientCount,
  waitFor,
  whenEmitted,
  TestPki,
  libvirtClientEnv,
  type ProcessResult,
} from './peers/index.js';
import { ensureUser, runAs } from './peers/polkit.js';
import { TestVirtauthd, virtauthBin } from './sasl-support.js';
import { openAdmin } from 'virtauth';

const adminPeers = ['root', 'virsh', 'virt-admin', 'sasl-scram', 'certtool'];
const alicePassword = 'admin-test-secret-1';

function adminUri(d: TestVirtauthd): string {
  return `virtauthd:///system?socket=${d.handle.admin!.path}`;
}

async function virtAdmin(d: TestVirtauthd, ...args: string[]): Promise<ProcessResult> {
  return runProcess(requireExecutable('virt-admin', 'libvirt-clients'), ['-c', adminUri(d), ...args], {
    env: libvirtClientEnv(),
    timeoutMs: 30_000,
  });
}

/** virt-admin's `label : value` lines as an object. */
function fields(out: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^(\S+)\s*: (.*)$/.exec(line);
    if (m) result[m[1]!] = m[2]!;
  }
  return result;
}

/** The rows of a virt-admin table whose first column is a number, as cells. */
function tableRows(out: string): string[][] {
  return out
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/))
    .filter((cells) => /^\d+$/.test(cells[0] ?? ''));
}

/** The rows of virt-admin's client list: id and transport. */
function clientRows(out: string): { id: string; transport: string }[] {
  return tableRows(out).map((cells) => ({ id: cells[0]!, transport: cells[1]! }));
}

interface LongClient {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** A virsh that stays connected (`event --loop`) until the daemon or the test ends it. */
function longVirsh(
  t: ExecutionContext,
  uri: string,
  env: NodeJS.ProcessEnv = {},
  args: string[] = ['event', '--all', '--loop', '--timeout', '120'],
): LongClient {
  const child = spawn(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, ...args], {
    env: libvirtClientEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, output: () => text, exited };
}

async function clientInfo(t: ExecutionContext, d: TestVirtauthd, id: string): Promise<Record<string, string>> {
  const r = await virtAdmin(d, 'client-info', 'virtauthd', id);
  t.is(r.code, 0, describeResult(r));
  return fields(r.stdout);
}

async function startDaemon(t: ExecutionContext, pki?: TestPki, logLevel: 1 | 2 | 3 | 4 = 2): Promise<TestVirtauthd> {
  const d = await TestVirtauthd.start({
    users: { alice: alicePassword },
    ...(pki ? { listenTls: true, pki } : {}),
    // The read-only socket admits local users with no password, so a unix client shows its uid and pid.
    settings: { auth_tls: 'none', auth_unix_ro: 'none' },
    logLevel,
  });
  t.teardown(() => d.stop());
  return d;
}

interopTest.serial(
  'virt-admin: srv-list, srv-clients-list, client-info for SCRAM, TLS and unix clients, srv-clients-info',
  adminPeers,
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const d = await startDaemon(t, pki);

    const socketMode = (await stat(d.handle.admin!.path)).mode & 0o777;
    t.is(socketMode, 0o700, 'virtauth-admin-sock is root-only, as libvirt-admin-sock');

    const servers = await virtAdmin(d, 'srv-list');
    t.is(servers.code, 0, describeResult(servers));
    t.deepEqual(
      tableRows(servers.stdout),
      [
        ['0', 'admin'],
        ['1', 'virtauthd'],
      ],
      'the admin server and the daemon, as libvirtd lists admin and libvirtd',
    );

    const authDir = await tempDir('vaa');
    t.teardown(() => rm(authDir, { recursive: true, force: true }));
    const authFile = join(authDir, 'auth.conf');
    await writeFile(authFile, `[credentials-a]\nauthname=alice\npassword=${alicePassword}\n[auth-libvirt-localhost]\ncredentials=a\n`, {
      mode: 0o600,
    });
    const scram = longVirsh(t, d.uri('unix'), { LIBVIRT_AUTH_FILE: authFile });
    await d.whenEvents('client.authenticated');
    const tlsClient = longVirsh(t, d.uri('tls'));
    const roSocket = d.handle.listeners.find((l) => l.kind === 'unix' && l.readOnly)!.path!;
    const local = longVirsh(t, `test+unix:///default?socket=${roSocket}`);

    const rows = await waitFor(
      async () => {
        const r = await virtAdmin(d, 'srv-clients-list', 'virtauthd');
        const found = clientRows(r.stdout);
        return found.length === 3 ? found : undefined;
      },
      30_000,
      'three clients in srv-clients-list',
    );
    t.deepEqual(rows.map((r) => r.transport).sort(), ['tls', 'unix', 'unix']);

    const infos = await Promise.all(rows.map(async (r) => ({ ...r, info: await clientInfo(t, d, r.id) })));
    const scramInfo = infos.find((i) => i.info['sasl_user_name'] !== undefined)!;
    t.like(scramInfo.info, {
      transport: 'unix',
      readonly: 'no',
      sasl_user_name: 'alice',
      virtauth_auth_method: 'sasl',
      unix_user_id: '0',
      unix_user_name: 'root',
      unix_process_id: String(scram.child.pid),
    });

    const tlsInfo = infos.find((i) => i.transport === 'tls')!;
    t.like(tlsInfo.info, { tls_x509_dname: pki.client.subject, virtauth_auth_method: 'none', virtauth_relay_active: 'no' });
    t.regex(tlsInfo.info['sock_addr'] ?? '', /^127\.0\.0\.1;\d+$/, 'sock_addr as libvirt writes it, address;port');
    t.false('unix_user_id' in tlsInfo.info);

    const unixInfo = infos.find((i) => i.info['unix_process_id'] === String(local.child.pid))!;
    t.truthy(unixInfo, `the unix client (pid ${local.child.pid}) is listed with its pid: ${JSON.stringify(infos)}`);
    t.like(unixInfo.info, { readonly: 'yes', unix_user_id: '0', unix_group_id: '0', unix_group_name: 'root' });
    t.false('sasl_user_name' in unixInfo.info);

    const limits = await virtAdmin(d, 'srv-clients-info', 'virtauthd');
    t.is(limits.code, 0, describeResult(limits));
    t.deepEqual(fields(limits.stdout), { nclients_max: '5000', nclients: '3', nclients_unauth_max: '20', nclients_unauth: '0' });

    // Our own CLI shows the same identities, as JSON for scripts.
    const json = await runProcess(process.execPath, [
      virtauthBin,
      '-c',
      adminUri(d),
      '--json',
      'admin',
      'client-info',
      'virtauthd',
      scramInfo.id,
    ]);
    t.is(json.code, 0, describeResult(json));
    t.like(JSON.parse(json.stdout), {
      id: Number(scramInfo.id),
      transport: 'unix',
      readonly: false,
      sasl_user_name: 'alice',
      virtauth_auth_method: 'sasl',
    });
    for (const c of [scram, tlsClient, local]) c.child.kill('SIGTERM');
  },
);

interopTest.serial(
  'virt-admin: client-disconnect ends that client ("Disconnected ... due to end of file", as libvirtd) and only that one',
  adminPeers,
  async (t) => {
    const d = await startDaemon(t);
    const roSocket = d.handle.listeners.find((l) => l.kind === 'unix' && l.readOnly)!.path!;
    const uri = `test+unix:///default?socket=${roSocket}`;
    const victim = longVirsh(t, uri);
    await untilClientCount([d.handle.server], 1, 30_000, 'the first client');
    const [first] = clientRows((await virtAdmin(d, 'srv-clients-list', 'virtauthd')).stdout);
    const victimId = first!.id;
    const bystander = longVirsh(t, uri);
    await untilClientCount([d.handle.server], 2, 30_000, 'the second client');

    const r = await virtAdmin(d, 'client-disconnect', 'virtauthd', victimId);
    t.is(r.code, 0, describeResult(r));
    t.is(r.stdout.trim(), `Client '${victimId}' disconnected`);
    const code = await victim.exited;
    t.not(code, 0);
    t.regex(victim.output(), new RegExp(`error: Disconnected from ${uri.replace(/[?.+]/g, '\\$&')} due to end of file`));
    t.is(bystander.child.exitCode, null, 'the other client stays connected');
    t.deepEqual(
      clientRows((await virtAdmin(d, 'srv-clients-list', 'virtauthd')).stdout)
        .map((x) => x.id)
        .includes(victimId),
      false,
    );
    t.is(
      d.events('client.disconnected')[0]?.['reason'],
      `operation aborted: client ${victimId} disconnected by an administrator (virt-admin client-disconnect)`,
    );

    const again = await virtAdmin(d, 'client-disconnect', 'virtauthd', victimId);
    t.is(again.code, 1);
    t.regex(again.stderr, new RegExp(`error: Client not found: No client with matching ID '${victimId}'`));
    bystander.child.kill('SIGTERM');
  },
);

interopTest.serial(
  'virt-admin: srv-clients-set --max-clients takes effect at once; a client over the limit waits unserved, as in libvirtd, until the limit allows it',
  adminPeers,
  async (t) => {
    const d = await startDaemon(t);
    const roSocket = d.handle.listeners.find((l) => l.kind === 'unix' && l.readOnly)!.path!;
    const uri = `test+unix:///default?socket=${roSocket}`;

    const refused = await virtAdmin(d, 'srv-clients-set', 'virtauthd', '--max-clients', '1');
    t.is(refused.code, 1, 'max_anonymous_clients (20) may not exceed max_clients');
    t.regex(
      refused.stderr,
      /error: invalid argument: The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients/,
    );

    const set = await virtAdmin(d, 'srv-clients-set', 'virtauthd', '--max-clients', '1', '--max-unauth-clients', '1');
    t.is(set.code, 0, describeResult(set));
    t.like(fields((await virtAdmin(d, 'srv-clients-info', 'virtauthd')).stdout), { nclients_max: '1', nclients_unauth_max: '1' });

    const first = longVirsh(t, uri);
    await untilClientCount([d.handle.server], 1, 30_000, 'the first client');
    t.is(clientRows((await virtAdmin(d, 'srv-clients-list', 'virtauthd')).stdout).length, 1);
    const second = longVirsh(t, uri, {}, ['list', '--all']);
    await d.whenEvents('client.waiting');
    t.is(second.child.exitCode, null, 'the second virsh is connected but not served');
    t.like(fields((await virtAdmin(d, 'srv-clients-info', 'virtauthd')).stdout), { nclients: '1' });
    t.is(clientRows((await virtAdmin(d, 'srv-clients-list', 'virtauthd')).stdout).length, 1);

    // Raising the limit admits it at once, without anyone leaving.
    t.is((await virtAdmin(d, 'srv-clients-set', 'virtauthd', '--max-clients', '2')).code, 0);
    t.is(await second.exited, 0, second.output());
    t.regex(second.output(), /\btest\s+running/);
    first.child.kill('SIGTERM');
  },
);

interopTest.serial(
  "virt-admin: daemon-log-filters and daemon-log-outputs change logging at run time; bad ones get libvirt's errors",
  adminPeers,
  async (t) => {
    const d = await startDaemon(t, undefined, 3);
    const roSocket = d.handle.listeners.find((l) => l.kind === 'unix' && l.readOnly)!.path!;
    const uri = `test+unix:///default?socket=${roSocket}`;
    t.is((await virtAdmin(d, 'daemon-log-filters')).stdout.trim(), 'Logging filters:');
    t.is((await virtAdmin(d, 'daemon-log-outputs')).stdout.trim(), 'Logging outputs: 3:stderr');

    const before = await runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, 'list'], { env: libvirtClientEnv() });
    t.is(before.code, 0, describeResult(before));
    t.is(d.events('connect.open').length, 0, 'info lines are off at log level 3');

    // An output's own priority applies too (as in libvirt): let the output take everything, so the
    // filters alone decide.
    t.is((await virtAdmin(d, 'daemon-log-outputs', '--outputs', '1:stderr')).code, 0);
    t.is((await virtAdmin(d, 'daemon-log-outputs')).stdout.trim(), 'Logging outputs: 1:stderr');
    t.is(d.logRecords().filter((r) => Number(r['level']) < 40).length, 0, 'log_level 3 still holds back info lines');
    const set = await virtAdmin(d, 'daemon-log-filters', '--filters', '2:daemon/src/server 4:relay');
    t.is(set.code, 0, describeResult(set));
    t.is((await virtAdmin(d, 'daemon-log-filters')).stdout.trim(), 'Logging filters: 2:daemon/src/server 4:relay');
    const after = await runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, 'list'], { env: libvirtClientEnv() });
    t.is(after.code, 0, describeResult(after));
    t.is(d.events('connect.open').length, 1, "the filter lets the server's info lines through");
    // virt-admin's own connections log info lines too (admin.client.connected, from another file): still filtered out.
    t.deepEqual(
      d
        .logRecords()
        .filter((r) => Number(r['level']) < 40)
        .map((r) => r['event']),
      ['connect.open'],
      'other info lines stay off',
    );

    for (const [filters, message] of [
      ['bogus', "filters: 'bogus' is not PRIORITY:MATCH"],
      ['9:foo', "filters: '9:foo' must start with a priority from 1 (debug) to 4 (error)"],
    ] as const) {
      const bad = await virtAdmin(d, 'daemon-log-filters', '--filters', filters);
      t.is(bad.code, 1);
      t.regex(bad.stderr, new RegExp(`error: invalid argument: ${message.replace(/[.*+?()[\]]/g, '\\$&')}`));
    }
    t.is(
      (await virtAdmin(d, 'daemon-log-filters')).stdout.trim(),
      'Logging filters: 2:daemon/src/server 4:relay',
      'a bad list changes nothing',
    );

    const badOutput = await virtAdmin(d, 'daemon-log-outputs', '--outputs', '3:bogus');
    t.regex(badOutput.stderr, /error: invalid argument: outputs: '3:bogus': unknown output 'bogus'/);
    const logFile = join(d.dir, 'admin-set.log');
    t.is((await virtAdmin(d, 'daemon-log-outputs', '--outputs', `2:file:${logFile} 3:journald`)).code, 0);
    t.is((await virtAdmin(d, 'daemon-log-outputs')).stdout.trim(), `Logging outputs: 2:file:${logFile} 3:journald`);
    t.is((await runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, 'list'], { env: libvirtClientEnv() })).code, 0);
    const written = await waitFor(
      async () => (await runProcess('cat', [logFile])).stdout.includes('"event":"connect.open"') || undefined,
      10_000,
      'info lines in the new output',
    );
    t.truthy(written);
    t.is((await virtAdmin(d, 'daemon-log-filters', '--filters', '')).code, 0);
    t.is((await virtAdmin(d, 'daemon-log-filters')).stdout.trim(), 'Logging filters:');
  },
);

interopTest.serial(
  'the admin socket: a non-root user cannot open it (mode 0700), root can',
  ['root', 'setpriv', 'virt-admin'],
  async (t) => {
    const d = await startDaemon(t);
    // The socket's own mode must be what refuses: the directories above it are opened up.
    await chmod(d.dir, 0o755);
    const account = await ensureUser('vadm-user');
    const as = await runAs(account, requireExecutable('virt-admin', 'libvirt-clients'), ['-c', adminUri(d), 'srv-list'], {
      env: libvirtClientEnv(),
    });
    t.is(as.code, 1, describeResult(as));
    t.regex(as.stderr, new RegExp(`Failed to connect socket to '${d.handle.admin!.path.replace(/[.]/g, '\\.')}': Permission denied`));
    const readable = await runAs(account, 'test', ['-r', d.dir]);
    t.is(readable.code, 0, 'the directory was reachable: only the socket refused');
    const root = await virtAdmin(d, 'srv-list');
    t.is(root.code, 0, describeResult(root));
  },
);

/** A raw admin connection, as a hostile or buggy client would make. */
async function rawAdmin(t: ExecutionContext, path: string): Promise<{ socket: net.Socket; rpc: RpcConnection }> {
  const socket = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  t.teardown(() => socket.destroy());
  return { socket, rpc: new RpcConnection(socket) };
}

test.serial(
  "the admin socket: unknown procedures get libvirt's error; garbage, oversized and undecodable packets end only that connection",
  async (t) => {
    const d = await TestVirtauthd.start({ logLevel: 3 });
    t.teardown(() => d.stop());
    const path = d.handle.admin!.path;

    const { rpc } = await rawAdmin(t, path);
    const call = (proc: number) => rpc.call(admin.ADMIN_PROGRAM, admin.ADMIN_PROTOCOL_VERSION, proc, xdr.xvoid, undefined, xdr.xvoid);
    // libvirtd 9.0 answers exactly this (the client library maps the wire's RPC code to NO_SUPPORT).
    await t.throwsAsync(call(99), { message: 'unknown procedure: 99' });
    await t.throwsAsync(call(0), { message: 'unknown procedure: 0' });
    const wrongProgram = rpc.call(0x20008086, 1, 1, xdr.xvoid, undefined, xdr.xvoid);
    await t.throwsAsync(wrongProgram, { message: 'Cannot find program 536903814 version 1' });
    // Too many typed parameters for the protocol's bound (32): refused at decoding, as libvirtd does.
    const tooMany = Array.from({ length: 33 }, (_, i) => ({ field: `p${i}`, value: { tag: 2 as const, value: 1 } }));
    const encodeUnbounded = {
      ...admin.serverSetClientLimitsArgs,
      encode: (w: xdr.XdrWriter, v: admin.AdminServerSetClientLimitsArgs) => {
        admin.nonnullServer.encode(w, v.srv);
        w.uint(v.params.length);
        for (const p of v.params) admin.typedParam.encode(w, p);
        w.uint(v.flags);
      },
    } as xdr.Codec<admin.AdminServerSetClientLimitsArgs>;
    await t.throwsAsync(
      rpc.call(
        admin.ADMIN_PROGRAM,
        1,
        admin.AdminProc.SERVER_SET_CLIENT_LIMITS,
        encodeUnbounded,
        { srv: { name: 'virtauthd' }, params: tooMany, flags: 0 },
        xdr.xvoid,
      ),
      { message: 'Unable to decode message payload' },
    );
    // The connection survives all of that.
    const client = new admin.AdminClient({ call: (proc, a, v, r) => rpc.call(admin.ADMIN_PROGRAM, 1, proc, a, v, r) });
    t.deepEqual(
      (await client.connectListServers({ need_results: 1, flags: 0 })).servers.map((s) => s.name),
      ['admin', 'virtauthd'],
    );
    await t.throwsAsync(client.connectListServers({ need_results: 1, flags: 4 }), {
      message: 'unsupported flags (0x4) in function adminConnectListServers',
    });
    await t.throwsAsync(
      client.serverSetClientLimits({ srv: { name: 'virtauthd' }, params: [{ field: 'nclients', value: { tag: 2, value: 1 } }], flags: 0 }),
      { message: "argument unsupported: parameter 'nclients' not supported" },
    );
    await t.throwsAsync(
      client.serverSetClientLimits({
        srv: { name: 'virtauthd' },
        params: [{ field: 'nclients_max', value: { tag: 7, value: 'x' } }],
        flags: 0,
      }),
      { message: "invalid argument: invalid type 'string' for parameter 'nclients_max', expected 'uint'" },
    );
    await t.throwsAsync(
      client.serverSetThreadpoolParameters({
        srv: { name: 'virtauthd' },
        params: [{ field: 'maxWorkers', value: { tag: 2, value: 8 } }],
        flags: 0,
      }),
      { message: /Operation not supported: virtauthd runs every call on one event loop/ },
    );
    await t.throwsAsync(
      client.clientGetInfo({ clnt: { srv: { name: 'virtauthd' }, id: 2n ** 64n - 1n, timestamp: 0n, transport: 0 }, flags: 0 }),
      { message: "Client not found: no client with matching id '18446744073709551615' found" },
    );
    await t.throwsAsync(client.connectLookupServer({ name: 'x'.repeat(10_000), flags: 0 }), {
      message: /^Server not found: No server named 'x{10000}'$/,
    });

    const hostile: [string, Buffer][] = [
      ['a length below the header size', Buffer.from([0, 0, 0, 4])],
      ["a length over libvirt's packet limit", Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])],
      ['random bytes', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ];
    for (const [what, bytes] of hostile) {
      const { socket } = await rawAdmin(t, path);
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.on('error', () => {});
      socket.write(bytes);
      await closed;
      t.pass(`${what}: the daemon closed that connection`);
    }
    t.deepEqual(
      (await client.connectListServers({ need_results: 1, flags: 0 })).servers.map((s) => s.name),
      ['admin', 'virtauthd'],
      'the first connection is still served',
    );
    t.is(d.handle.server.clientCount, 0);
    rpc.close(null);
  },
);

interopTest.serial(
  'virt-admin: server-update-tls reads the TLS files again; a broken file is reported and changes nothing',
  [...adminPeers],
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    const d = await startDaemon(t, pki);
    // A new CA, server certificate and key in the configured paths: new connections use them.
    const next = await TestPki.create();
    t.teardown(() => next.remove());
    const cfg = d.handle.server.config;
    for (const [from, to] of [
      [next.serverCertFile, cfg.certFile],
      [next.serverKeyFile, cfg.keyFile],
      [next.caCertFile, cfg.caFile],
    ] as const) {
      await writeFile(to, (await runProcess('cat', [from])).stdout);
    }
    const tlsList = (clientPki: TestPki) =>
      runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', d.uri('tls', { pkipath: clientPki.client.pkiPath }), 'list'], {
        env: libvirtClientEnv(),
      });
    t.is((await tlsList(pki)).code, 0, 'before server-update-tls the old files still serve');
    const ok = await virtAdmin(d, 'server-update-tls', 'virtauthd');
    t.is(ok.code, 0, describeResult(ok));
    t.is(d.events('tls.files.updated').length, 1);
    const withNew = await tlsList(next);
    t.is(withNew.code, 0, describeResult(withNew));
    t.not((await tlsList(pki)).code, 0, 'a client of the old CA no longer trusts the server');

    const noTls = await virtAdmin(d, 'server-update-tls', 'admin');
    t.regex(noTls.stderr, /error: internal error: no tls service found, unable to update tls files/);

    const certFile = d.handle.server.config.certFile;
    const goodCert = await runProcess('cat', [certFile]);
    await writeFile(certFile, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    t.teardown(() => writeFile(certFile, goodCert.stdout));
    const broken = await virtAdmin(d, 'server-update-tls', 'virtauthd');
    t.is(broken.code, 1);
    t.regex(broken.stderr, /error: Unusable TLS credentials/);
    const virsh = await tlsList(next);
    t.is(virsh.code, 0, `the certificate read last still serves: ${describeResult(virsh)}`);
  },
);

test.serial('daemon-timeout: virtauthd stops once no client has been connected for that long', async (t) => {
  const d = await TestVirtauthd.start({ logLevel: 3 });
  t.teardown(() => d.stop());
  const adm = await openAdmin(`virtauthd:///system?socket=${d.handle.admin!.path}`);
  await adm.client.connectSetDaemonTimeout({ timeout: 1, flags: 0 });
  await t.throwsAsync(adm.client.connectSetDaemonTimeout({ timeout: 1, flags: 1 }), {
    message: 'unsupported flags (0x1) in function adminConnectSetDaemonTimeout',
  });
  const setAt = Date.now();
  await adm.close();
  // The sockets go with the daemon (the main ones last, once their listeners have closed).
  const mainSocket = d.listener('unix').path!;
  await waitFor(
    async () =>
      !(await stat(mainSocket).then(
        () => true,
        () => false,
      )),
    10_000,
    'the daemon to stop',
  );
  t.true(Date.now() - setAt >= 900, 'not before the timeout');
  await t.throwsAsync(stat(d.handle.admin!.path), { code: 'ENOENT' });
  const refused = await new Promise<string>((resolve) =>
    net
      .connect(mainSocket)
      .once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''))
      .once('connect', () => resolve('connected')),
  );
  t.is(refused, 'ENOENT');
});

test.serial('a second daemon on the same unix_sock_dir does not take over a live admin socket; embedded daemons claim none', async (t) => {
  const d = await TestVirtauthd.start({ logLevel: 3 });
  t.teardown(() => d.stop());
  const otherDir = await tempDir('vad');
  t.teardown(() => rm(otherDir, { recursive: true, force: true }));
  const config = { ...d.handle.server.config, extra: new Map(d.handle.server.config.extra) };
  const listeners = [{ kind: 'unix' as const, path: join(otherDir, 'sock'), auth: AuthType.NONE, readOnly: false }];
  const embedded = await createDaemon({ config, logger: createLogger(4, 2), listeners });
  t.is(embedded.admin, null, 'a daemon given its own listeners has no admin socket unless asked');
  await embedded.stop();
  const second = createDaemon({ config, logger: createLogger(4, 2), listeners, adminSocket: d.handle.admin!.path });
  await t.throwsAsync(second, { message: `another daemon is already listening on ${d.handle.admin!.path}` });
  const adm = await openAdmin(`virtauthd:///system?socket=${d.handle.admin!.path}`);
  t.is((await adm.client.connectListServers({ need_results: 1, flags: 0 })).ret, 2, 'the first daemon still answers');
  await adm.close();
  await t.throwsAsync(stat(join(otherDir, 'sock')), { code: 'ENOENT' }, 'the failed daemon closed its own listeners');
});

interopTest.serial(
  'virt-admin daemon-timeout: the virtauthd program exits 0 once no client is left for that long, removing its sockets',
  ['virt-admin'],
  async (t) => {
    const dir = await tempDir('vat');
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const configFile = join(dir, 'virtauthd.conf');
    await writeFile(configFile, `unix_sock_dir = "${dir}"\nlog_level = 4\n`);
    const daemonMain = new URL('../../../daemon/dist/src/main.js', import.meta.url).pathname;
    const child = spawn(process.execPath, [daemonMain, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stderr = '';
    let stdout = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      child.emit('output');
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const adminSocket = join(dir, 'virtauth-admin-sock');
    // The listener lines come once every socket, the admin one included, is in place.
    await whenEmitted(
      child,
      ['output', 'exit'],
      () => stdout.includes('virtauth-sock-ro') || child.exitCode !== null,
      30_000,
      'the listener lines',
    );
    t.is(child.exitCode, null, stderr);
    const uri = `virtauthd:///system?socket=${adminSocket}`;
    const set = await runProcess(requireExecutable('virt-admin', 'libvirt-clients'), ['-c', uri, 'daemon-timeout', '--timeout', '1'], {
      env: libvirtClientEnv(),
    });
    t.is(set.code, 0, describeResult(set));
    t.is(await exited, 0, stderr);
    t.regex(stderr, /virtauthd: no client for the daemon timeout, shutting down/);
    await t.throwsAsync(stat(adminSocket), { code: 'ENOENT' });
    await t.throwsAsync(stat(join(dir, 'virtauth-sock')), { code: 'ENOENT' });
  },
);
