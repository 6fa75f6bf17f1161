// virtauthd serving the XenAPI driver: clients (real virsh, and the virtauth library) manage a
// VM of the XenAPI test server through the generated remote procedures; what the driver lacks
// answers libvirt's "not supported"; and a hostile XenAPI server gets clear errors, not a crash.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test, { type ExecutionContext } from 'ava';
import { DomainState, ErrorCode, ErrorDomain, type DomainRef } from '@virtauth/core';
import type { RemoteConnection } from '@virtauth/drivers';
import { openAuth } from 'virtauth';

import { selfSignedCertificate, startXenApiServer, type HostileReply, type XenApiServer } from './fixtures/xenapi-server.js';
import { interopTest, libvirtClientEnv, requireExecutable, runProcess, tempDir, waitFor, type ProcessResult } from './peers/index.js';
import { authConfText, virErrorOf, writeAuthConf } from './relay-helpers.js';

const XEN_PASSWORD = 'xen-pool-secret';
const VM1_UUID = '6f8a1c2e-3b4d-4e5f-9a0b-1c2d3e4f5a6b';
const VM2_UUID = '7a9b2d3f-4c5e-4f60-8b1c-2d3e4f5a6b7c';
/** The XenAPI client's limit on one reply (drivers/src/xenapi/client.ts). */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

interface XenDaemon {
  xen: XenApiServer;
  /** The client URI reaching the XenAPI server through virtauthd's read-write (or read-only) socket. */
  uri(readOnly?: boolean): string;
  /** The daemon process's peak resident memory so far, in bytes (VmHWM). */
  peakRss(): Promise<number>;
}

const daemonMain = fileURLToPath(new URL('../../../daemon/dist/src/main.js', import.meta.url));

/**
 * A XenAPI test server over HTTPS, and virtauthd as an operator runs it (the compiled program, a
 * config file) allowed to open it: the pool's password in the daemon's own auth.conf
 * (LIBVIRT_AUTH_FILE), the server's certificate trusted (NODE_EXTRA_CA_CERTS). Stored credentials
 * are never sent over plain http, hence HTTPS. Clients authenticate to virtauthd only (auth none).
 */
async function startXenDaemon(t: ExecutionContext, hostileReply?: (method: string) => HostileReply | undefined): Promise<XenDaemon> {
  const tls = selfSignedCertificate();
  const xen = await startXenApiServer({ users: { root: XEN_PASSWORD }, tls, ...(hostileReply ? { hostileReply } : {}) });
  t.teardown(() => xen.close());
  const dir = await tempDir('xd');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const authConf = await writeAuthConf(
    dir,
    'auth.conf',
    authConfText([{ service: 'xenapi', host: '127.0.0.1', username: 'root', password: XEN_PASSWORD }]),
  );
  const caFile = join(dir, 'xenapi-ca.pem');
  await writeFile(caFile, tls.cert);
  const driverUri = `xenapi:///?server=127.0.0.1:${xen.port}`;
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(
    configFile,
    [`unix_sock_dir = "${dir}"`, 'auth_unix_rw = "none"', 'auth_unix_ro = "none"', `uri_allowed_list = [ "${driverUri}" ]`, ''].join('\n'),
  );
  const child = spawn(process.execPath, [daemonMain, '--config', configFile], {
    env: { ...process.env, LIBVIRT_AUTH_FILE: authConf, NODE_EXTRA_CA_CERTS: caFile },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => void (stderr = (stderr + chunk.toString('utf8')).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  });
  const rw = join(dir, 'virtauth-sock');
  const ro = join(dir, 'virtauth-sock-ro');
  await waitFor(() => existsSync(rw) && existsSync(ro), 20_000, `virtauthd's sockets (stderr: ${stderr})`);
  const peakRss = async () => {
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
    return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1]) * 1024;
  };
  return { xen, peakRss, uri: (readOnly = false) => `xenapi+unix:///?socket=${readOnly ? ro : rw}&server=127.0.0.1:${xen.port}` };
}

/** The virtauth library's connection through virtauthd: every generated procedure as a method. */
async function connect(t: ExecutionContext, uri: string): Promise<RemoteConnection> {
  const conn = (await openAuth(uri, null)) as RemoteConnection;
  t.teardown(() => conn.close().catch(() => {}));
  return conn;
}

const powerState = (xen: XenApiServer, uuid: string): unknown =>
  [...xen.records.get('VM')!.values()].find((r) => r['uuid'] === uuid)?.['power_state'];

// --- through the virtauth library -----------------------------------------------------------------

test('the virtauth client runs the XenAPI lifecycle through virtauthd: start, suspend, resume, shutdown, destroy, undefine', async (t) => {
  const { xen, uri } = await startXenDaemon(t);
  const conn = await connect(t, uri());
  t.is(await conn.getType(), 'XenAPI');
  t.deepEqual((await conn.listAllDomains(0)).map((d) => d.name).sort(), ['vm1', 'vm2']);
  const vm2 = await conn.lookupDomainByName('vm2');
  const state = async () => (await conn.getDomainState(vm2)).state;

  t.is(await state(), DomainState.SHUTOFF);
  const { dom: started } = await conn.domainCreateWithFlags({ dom: vm2, flags: 0 });
  t.true(started.id >= 0, 'a started domain has an id');
  t.is(powerState(xen, VM2_UUID), 'Running');
  t.is((await conn.domainIsActive({ dom: vm2 })).active, 1);
  await conn.domainSuspend({ dom: vm2 });
  t.is(await state(), DomainState.PAUSED);
  await conn.domainResume({ dom: vm2 });
  t.is(await state(), DomainState.RUNNING);
  await conn.domainReboot({ dom: vm2, flags: 0 });
  t.is(await state(), DomainState.RUNNING);
  await conn.domainShutdown({ dom: vm2 });
  t.is(await state(), DomainState.SHUTOFF);
  await conn.domainCreate({ dom: vm2 });
  await conn.domainDestroy({ dom: vm2 });
  t.is(powerState(xen, VM2_UUID), 'Halted');

  await conn.domainSetAutostart({ dom: vm2, autostart: 1 });
  t.true(await conn.getDomainAutostart(vm2));
  await conn.domainSetAutostart({ dom: vm2, autostart: 0 });
  t.false(await conn.getDomainAutostart(vm2));

  await conn.domainUndefine({ dom: vm2 });
  t.is(powerState(xen, VM2_UUID), undefined);
  const gone = await virErrorOf(conn.lookupDomainByName('vm2'));
  t.is(gone.code, ErrorCode.NO_DOMAIN);
  t.deepEqual(
    xen.calls.filter((m) => /^VM\.(start|pause|unpause|clean_|hard_|destroy)/.test(m)),
    ['VM.start', 'VM.pause', 'VM.unpause', 'VM.clean_reboot', 'VM.clean_shutdown', 'VM.start', 'VM.hard_shutdown', 'VM.destroy'],
  );
});

test("an operation the XenAPI driver lacks answers VIR_ERR_NO_SUPPORT with libvirt's message, naming the API", async (t) => {
  const { uri } = await startXenDaemon(t);
  const conn = await connect(t, uri());
  const vm1 = await conn.lookupDomainByUuid(Buffer.from(VM1_UUID.replaceAll('-', ''), 'hex'));
  for (const [call, api] of [
    [() => conn.domainMemoryStats({ dom: vm1, maxStats: 8, flags: 0 }), 'virDomainMemoryStats'],
    [() => conn.domainSetMemory({ dom: vm1, memory: 1024n }), 'virDomainSetMemory'],
    [() => conn.connectGetCapabilities(), 'virConnectGetCapabilities'],
    [() => conn.connectListAllNetworks({ need_results: 1, flags: 0 }), 'virConnectListAllNetworks'],
  ] as const) {
    const e = await virErrorOf(call());
    t.is(e.code, ErrorCode.NO_SUPPORT, api);
    t.is(e.message, `this function is not supported by the connection driver: ${api}`);
  }
  // The named convenience layer refuses the same way for what the driver lacks.
  const label = await virErrorOf(conn.getDomainSecurityLabel(vm1));
  t.is(label.code, ErrorCode.NO_SUPPORT);
  t.is(label.message, 'this function is not supported by the connection driver: virDomainGetSecurityLabel');
  // The connection stays usable.
  t.is((await conn.getDomainInfo(vm1)).state, DomainState.RUNNING);
});

test('wrong power states, unknown flags and the read-only socket are refused before XenAPI is called', async (t) => {
  const { xen, uri } = await startXenDaemon(t);
  const conn = await connect(t, uri());
  const vm2 = await conn.lookupDomainByName('vm2');
  const before = xen.calls.length;
  const suspend = await virErrorOf(conn.domainSuspend({ dom: vm2 }));
  t.is(suspend.code, ErrorCode.OPERATION_INVALID);
  t.is(suspend.domain, ErrorDomain.XENAPI);
  t.is(suspend.message, "Requested operation is not valid: virDomainSuspend: domain 'vm2' is halted, not running");
  const destroy = await virErrorOf(conn.domainDestroyFlags({ dom: vm2, flags: 0 }));
  t.regex(destroy.message, /domain 'vm2' is halted, not running or paused/);
  const flags = await virErrorOf(conn.domainCreateWithFlags({ dom: vm2, flags: 0x100 }));
  t.is(flags.code, ErrorCode.INVALID_ARG);
  t.is(flags.message, 'invalid argument: unsupported flags (0x100) in function virDomainCreateWithFlags');
  t.false(
    xen.calls.slice(before).some((m) => !m.startsWith('VM.get_')),
    'nothing but reads reached XenAPI',
  );

  const ro = await connect(t, uri(true));
  const denied = await virErrorOf(ro.domainCreate({ dom: vm2 }));
  t.is(denied.code, ErrorCode.OPERATION_DENIED);
  t.is(denied.message, 'operation forbidden: read only access prevents virDomainCreate');
  t.is(powerState(xen, VM2_UUID), 'Halted');
});

// --- a hostile XenAPI server ----------------------------------------------------------------------

test('a hostile XenAPI server: malformed, wrong-typed and oversized replies to the new calls are clear errors, and virtauthd goes on', async (t) => {
  const huge = 'E'.repeat(1024 * 1024);
  const replies: Record<string, HostileReply> = {
    // An XML-RPC document where JSON-RPC was asked for.
    'VM.start': {
      contentType: 'text/xml',
      body: '<?xml version="1.0"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member></struct></value></param></params></methodResponse>',
    },
    // An error whose code is not a string.
    'VM.pause': { body: JSON.stringify({ jsonrpc: '2.0', error: { code: 1, message: { nested: ['VM_BAD_POWER_STATE'] } }, id: 1 }) },
    // An error with a megabyte of parameters: the client's message stays short.
    'VM.clean_reboot': { body: JSON.stringify({ jsonrpc: '2.0', error: { code: 1, message: huge, data: [huge, huge, huge] }, id: 1 }) },
    // A server error page.
    'VM.clean_shutdown': { status: 500, contentType: 'text/html', body: '<html><body>Internal Server Error</body></html>' },
    // A reply that never ends: read up to the limit, then dropped.
    'VM.hard_shutdown': { endless: Buffer.alloc(1024 * 1024, '[') },
  };
  const { xen, uri, peakRss } = await startXenDaemon(t, (method) => replies[method]);
  const conn = await connect(t, uri());
  const vm1 = await conn.lookupDomainByName('vm1');
  const vm2 = await conn.lookupDomainByName('vm2');

  const start = await virErrorOf(conn.domainCreate({ dom: vm2 }));
  t.is(start.code, ErrorCode.INTERNAL_ERROR);
  t.regex(
    start.message,
    /^internal error: XenAPI server 127\.0\.0\.1:\d+ sent an invalid JSON-RPC reply to VM\.start: the reply is not JSON$/,
  );

  const pause = await virErrorOf(conn.domainSuspend({ dom: vm1 }));
  t.is(pause.code, ErrorCode.INTERNAL_ERROR);
  t.regex(pause.message, /invalid JSON-RPC reply to VM\.pause: the error has no message$/);

  const reboot = await virErrorOf(conn.domainReboot({ dom: vm1, flags: 0 }));
  t.is(reboot.code, ErrorCode.INTERNAL_ERROR);
  t.regex(reboot.message, /^internal error: XenAPI call VM\.clean_reboot on 127\.0\.0\.1:\d+ failed: E{200}\.\.\.\(E{200}\.\.\./);
  t.true(reboot.message.length < 2000, `message of ${reboot.message.length} characters`);

  const shutdown = await virErrorOf(conn.domainShutdown({ dom: vm1 }));
  t.is(shutdown.code, ErrorCode.HTTP_ERROR);
  t.regex(shutdown.message, /answered VM\.clean_shutdown with HTTP 500/);

  const destroy = await virErrorOf(conn.domainDestroy({ dom: vm1 }));
  t.is(destroy.code, ErrorCode.INTERNAL_ERROR);
  t.regex(destroy.message, new RegExp(`sent a reply to VM\\.hard_shutdown larger than ${MAX_REPLY_BYTES} bytes$`));
  // The client stopped reading at the limit: what the server got out is the limit plus what the
  // TLS and socket buffers held when it hung up (more on a loaded machine), not the endless stream.
  t.true(xen.hostileBytesSent() < 2 * MAX_REPLY_BYTES, `${xen.hostileBytesSent()} bytes sent`);
  const peak = await peakRss();
  t.log(`virtauthd peak RSS ${Math.round(peak / 1024 / 1024)} MiB`);
  t.true(peak < 3 * MAX_REPLY_BYTES + 128 * 1024 * 1024, `virtauthd peaked at ${peak} bytes`);

  // Nothing changed on the pool, and the same connection still answers.
  t.is(powerState(xen, VM1_UUID), 'Running');
  t.is(powerState(xen, VM2_UUID), 'Halted');
  t.is((await conn.getDomainInfo(vm1)).state, DomainState.RUNNING);
  t.is(await conn.getHostname(), 'xen1.example');
});

test('a hostile XenAPI server: wrong-typed records for a lookup are a clear error naming what was malformed', async (t) => {
  const { uri } = await startXenDaemon(t, (method) =>
    method === 'VM.get_record'
      ? { body: JSON.stringify({ jsonrpc: '2.0', result: { uuid: ['not', 'a', 'uuid'], name_label: { x: 1 }, power_state: 7 }, id: 1 }) }
      : method === 'VM.get_by_uuid'
        ? { body: JSON.stringify({ jsonrpc: '2.0', result: [[[['nested']]]], id: 1 }) }
        : undefined,
  );
  const conn = await connect(t, uri());
  const byName = await virErrorOf(conn.lookupDomainByName('vm1'));
  t.is(byName.code, ErrorCode.INTERNAL_ERROR);
  t.is(byName.message, "internal error: the XenAPI server sent an invalid uuid ''");
  const dom: DomainRef = { name: 'vm1', id: 1, uuid: Buffer.from(VM1_UUID.replaceAll('-', ''), 'hex') };
  const byUuid = await virErrorOf(conn.domainCreate({ dom }));
  t.is(byUuid.code, ErrorCode.NO_DOMAIN);
  t.is(byUuid.message, `Domain not found: no domain with matching uuid '${VM1_UUID}'`);
  t.is(await conn.getType(), 'XenAPI');
});

// --- through real virsh ---------------------------------------------------------------------------

function virsh(uri: string, args: readonly string[]): Promise<ProcessResult> {
  return runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, ...args], { env: libvirtClientEnv(), timeoutMs: 30_000 });
}

interopTest('virsh manages a XenAPI VM through virtauthd, and gets "not supported" for what the driver lacks', ['virsh'], async (t) => {
  const { xen, uri } = await startXenDaemon(t);
  const run = async (args: string[], code = 0): Promise<string> => {
    const r = await virsh(uri(), args);
    t.is(r.code, code, `virsh ${args.join(' ')}: ${r.stderr}`);
    return code === 0 ? r.stdout : r.stderr;
  };
  t.regex(await run(['list', '--all', '--name']), /^vm1\nvm2\n\n?$/);
  t.regex(await run(['start', 'vm2']), /Domain 'vm2' started/);
  t.is(powerState(xen, VM2_UUID), 'Running');
  t.regex(await run(['suspend', 'vm2']), /Domain 'vm2' suspended/);
  t.is((await run(['domstate', 'vm2'])).trim(), 'paused');
  t.regex(await run(['resume', 'vm2']), /Domain 'vm2' resumed/);
  t.regex(await run(['autostart', 'vm2']), /Domain 'vm2' marked as autostarted/);
  const info = await run(['dominfo', 'vm2']);
  t.regex(info, /^State: +running$/m);
  t.regex(info, /^Autostart: +enable$/m);
  t.regex(info, /^Persistent: +yes$/m);
  t.regex(await run(['shutdown', 'vm2']), /Domain 'vm2' is being shutdown/);
  t.is((await run(['domstate', 'vm2'])).trim(), 'shut off');
  await run(['start', 'vm2']);
  t.regex(await run(['destroy', 'vm2']), /Domain 'vm2' destroyed/);
  t.regex(await run(['undefine', 'vm2']), /Domain 'vm2' has been undefined/);
  t.is(powerState(xen, VM2_UUID), undefined);
  t.regex(await run(['list', '--all', '--name']), /^vm1\n\n?$/);

  t.regex(await run(['dommemstat', 'vm1'], 1), /this function is not supported by the connection driver: virDomainMemoryStats/);
  t.regex(await run(['resume', 'vm1'], 1), /Requested operation is not valid: virDomainResume: domain 'vm1' is running, not paused/);
  const ro = await virsh(uri(true), ['destroy', 'vm1']);
  t.is(ro.code, 1);
  t.regex(ro.stderr, /operation forbidden: read only access prevents virDomainDestroy/);
  t.is(powerState(xen, VM1_UUID), 'Running');
});
