// Listener settings that must do what they say: unix_sock_group, socket modes from the moment a
// socket can be reached, max_clients across all listeners (over it a client waits unread, as in
// libvirtd), a time bound on queued clients, and the
// polkit client's process start time taken at accept.

import 'reflect-metadata';
import test from 'ava';
import net from 'node:net';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { lstatSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { container as rootContainer } from 'tsyringe';
import { AUTH_PROVIDER, AuthType, ErrorCode, RemoteProc, VirError, remote, xdr, type RpcConnection } from '@virtauth/core';
import { getPeerCredentials } from '@virtauth/peercred';
import { PolkitAuthProvider, type AuthorizationResult, type PolkitAuthorityClient, type UnixProcessSubject } from '@virtauth/providers';
import { JsonSink, callRemote, connect } from './helpers.js';
import {
  VirtauthServer,
  buildConfig,
  createDaemon,
  createLogger,
  defaultConfig,
  type DaemonConfig,
  type DaemonHandle,
  type ListenerSpec,
} from '../src/index.js';

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'va-lis-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function startDaemon(
  t: import('ava').ExecutionContext,
  config: DaemonConfig,
  listeners?: ListenerSpec[],
): Promise<{ daemon: DaemonHandle; log: JsonSink }> {
  const log = new JsonSink();
  const daemon = await createDaemon({
    config,
    container: rootContainer.createChildContainer(),
    logger: createLogger(2, log),
    ...(listeners ? { listeners } : {}),
  });
  t.teardown(() => daemon.stop());
  return { daemon, log };
}

const authList = (rpc: RpcConnection) => callRemote(rpc, RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet);

test('unix_sock_group owns both sockets; an unknown group stops the daemon', async (t) => {
  const dir = await tempDir(t);
  const root = process.getuid?.() === 0;
  // As root any group will do (by name, through NSS); otherwise one of our own, by number.
  const [group, gid] = root ? ['daemon', 1] : [`+${process.getgid!()}`, process.getgid!()];
  const config = buildConfig(
    new Map<string, string | number>([
      ['unix_sock_dir', dir],
      ['unix_sock_group', group],
    ]),
  );
  await startDaemon(t, config);
  for (const name of ['virtauth-sock', 'virtauth-sock-ro']) t.is((await stat(join(dir, name))).gid, gid, name);

  const bad = buildConfig(
    new Map([
      ['unix_sock_dir', join(dir, 'b')],
      ['unix_sock_group', 'no-such-group-virtauth'],
    ]),
  );
  const e = await t.throwsAsync(
    createDaemon({ config: bad, container: rootContainer.createChildContainer(), logger: createLogger(4, new JsonSink()) }),
    { instanceOf: VirError },
  );
  t.is(e!.code, ErrorCode.CONF_SYNTAX);
  t.regex(e!.message, /unix_sock_group: no such group 'no-such-group-virtauth'/);
});

// Serial: the umask and the patched listen are the whole process's.
test.serial('a socket is never reachable with a mode other than its configured one', async (t) => {
  const dir = await tempDir(t);
  const sockDir = join(dir, 'run');
  await mkdir(sockDir);
  await chmod(sockDir, 0o755);
  // Record, the moment each listener is bound, who could reach the socket it is bound to.
  const seen: { path: string; reachable: boolean; mode: number }[] = [];
  const originalListen = net.Server.prototype.listen;
  const previousUmask = process.umask(0); // a socket made without care would be 0777
  t.teardown(() => {
    net.Server.prototype.listen = originalListen;
    process.umask(previousUmask);
  });
  net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
    this.once('listening', () => {
      const address = this.address();
      if (typeof address !== 'string' || !address.startsWith(sockDir)) return;
      const dirMode = statSync(dirname(address)).mode & 0o777;
      seen.push({ path: address, reachable: (dirMode & 0o011) !== 0, mode: lstatSync(address).mode & 0o777 });
    });
    return (originalListen as (...a: unknown[]) => net.Server).apply(this, args);
  } as typeof net.Server.prototype.listen;
  await startDaemon(t, { ...defaultConfig(), unixSockDir: sockDir, unixSockRwPerms: 0o700, unixSockRoPerms: 0o770 });
  net.Server.prototype.listen = originalListen;
  process.umask(previousUmask);
  // virtauth-sock, -sock-ro and the admin socket (0700).
  t.is(seen.length, 3);
  for (const s of seen)
    t.false(
      s.reachable && s.mode !== 0o700 && s.mode !== 0o770,
      `${s.path} was bound with mode ${s.mode.toString(8)} where others can reach it`,
    );
  t.is((await stat(join(sockDir, 'virtauth-sock'))).mode & 0o777, 0o700);
  t.is((await stat(join(sockDir, 'virtauth-sock-ro'))).mode & 0o777, 0o770);
});

test('max_clients counts the clients of every listener together; one over it waits unread until a place is free', async (t) => {
  const dir = await tempDir(t);
  const { log } = await startDaemon(t, { ...defaultConfig(), unixSockDir: dir, maxClients: 2 });
  const rw = await connect(t, join(dir, 'virtauth-sock'));
  const ro = await connect(t, join(dir, 'virtauth-sock-ro'));
  t.deepEqual((await authList(rw)).types, [AuthType.NONE]);
  t.deepEqual((await authList(ro)).types, [AuthType.NONE]);
  // The read-write listener has one client only, but the server has two: the third is held, as
  // libvirtd leaves it in its listen backlog, and its call is not answered.
  const third = await connect(t, join(dir, 'virtauth-sock'));
  let answered = false;
  const thirdCall = authList(third).then((r) => {
    answered = true;
    return r;
  });
  await log.whenEvents('client.waiting');
  t.false(answered, 'a client over max_clients is not served');
  t.false(third.closed, 'nor closed');
  // One leaves: the held client is served, without connecting again.
  ro.close(null);
  t.deepEqual((await thirdCall).types, [AuthType.NONE]);
});

test('beyond max_clients only max_queued_clients wait; one more is closed at once', async (t) => {
  const dir = await tempDir(t);
  const { log } = await startDaemon(t, { ...defaultConfig(), unixSockDir: dir, maxClients: 1, maxQueuedClients: 1 });
  const first = await connect(t, join(dir, 'virtauth-sock'));
  await authList(first);
  const held = await connect(t, join(dir, 'virtauth-sock'));
  const heldCall = authList(held);
  await log.whenEvents('client.waiting');
  const refused = await connect(t, join(dir, 'virtauth-sock-ro'));
  await refused.whenClosed();
  t.true(log.events('client.refused').some((r) => r.reason === 'queue full'));
  t.false(held.closed, 'the queued client is kept');
  first.close(null);
  t.deepEqual((await heldCall).types, [AuthType.NONE]);
});

test('a client queued behind max_anonymous_clients waits no longer than auth_timeout, counted from its accept', async (t) => {
  const dir = await tempDir(t);
  const config = buildConfig(
    new Map<string, string | number>([
      ['unix_sock_dir', dir],
      ['auth_unix_rw', 'sasl'],
      ['sasl_user_db', join(dir, 'users.json')],
      ['max_anonymous_clients', 1],
      ['auth_timeout', 2],
    ]),
  );
  await writeFile(join(dir, 'users.json'), '{"version": 1, "users": {}}');
  const { log } = await startDaemon(t, config);
  const first = await connect(t, join(dir, 'virtauth-sock'));
  await authList(first);
  // The scenario needs the two accepts a second apart: the first client's own auth_timeout then
  // frees the place half-way through the second one's.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const queuedAt = Date.now();
  const queued = await connect(t, join(dir, 'virtauth-sock'));
  await log.whenEvents('client.waiting');
  await first.whenClosed();
  const firstClosedAt = Date.now();
  await queued.whenClosed();
  const closedAt = Date.now();
  // Its own 2 s, not the first client's remaining second plus a fresh 2 s once it got a place:
  // a fresh timer would close it 2 s after the first went, its own about 1 s after. Measured from
  // the first one's close, a loaded machine's late timers shift both ends alike.
  t.true(closedAt - queuedAt >= 1900, `the queued client was closed ${closedAt - queuedAt} ms after its accept`);
  t.true(closedAt - firstClosedAt < 1900, `the queued client was closed ${closedAt - firstClosedAt} ms after the first went`);
  t.is(log.events('client.auth_timeout').length, 2, 'both by auth_timeout');
});

class ScriptedAuthority implements PolkitAuthorityClient {
  readonly subjects: UnixProcessSubject[] = [];
  async checkAuthorization(subject: UnixProcessSubject): Promise<AuthorizationResult> {
    this.subjects.push(subject);
    return { isAuthorized: true, isChallenge: false, details: {} };
  }
  close(): void {}
}

test("polkit: the client's process start time is read at accept, and a process that changed by AUTH_POLKIT is refused", async (t) => {
  const dir = await tempDir(t);
  // A /proc where this process's start time differs from the real one: as if the client had
  // exited after connecting and another process had been given its pid.
  const proc = join(dir, 'proc');
  await mkdir(join(proc, String(process.pid)), { recursive: true });
  await writeFile(join(proc, String(process.pid), 'stat'), `${process.pid} (other) S ${'1 '.repeat(18)}99999999999 0 0\n`);
  const authority = new ScriptedAuthority();
  const container = rootContainer.createChildContainer();
  container.register(AUTH_PROVIDER, { useValue: new PolkitAuthProvider({ authority, procRoot: proc }) });
  const path = join(dir, 'polkit.sock');
  const server = new VirtauthServer({
    config: defaultConfig(),
    container,
    logger: createLogger(4, new JsonSink()),
    listeners: [{ kind: 'unix', path, auth: AuthType.POLKIT, readOnly: false }],
    // Our own pid, but not root's uid: root would be let in by AUTH_LIST without polkit.
    peerCredentials: (socket) => ({ ...getPeerCredentials(socket), uid: 1000 }),
  });
  await server.start();
  t.teardown(() => server.stop());
  const client = await connect(t, path);
  await authList(client);
  const e = await t.throwsAsync(callRemote(client, RemoteProc.AUTH_POLKIT, xdr.xvoid, undefined, remote.authPolkitRet), {
    instanceOf: VirError,
  });
  t.regex(e!.message, /Cannot find start time for pid \d+: the client process exited before polkit could check it/);
  t.is(authority.subjects.length, 0, 'polkit was not asked about the process that holds the pid now');
});
