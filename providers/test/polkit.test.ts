// The polkit server half against a scripted Authority: libvirtd's outcomes and error texts, the
// root bypass, the per-socket action, and the failure paths (no peer credentials, exited client).

import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import {
  AuthType,
  SessionState,
  ErrorCode,
  ErrorDomain,
  RemoteProc,
  VirError,
  type ClientIdentity,
  type PeerCredentials,
  type ServerAuthContext,
  type TransportKind,
} from '@virtauth/core';
import type { AuthorizationResult, PolkitAuthorityClient, UnixProcessSubject } from '../src/polkit/authority.js';
import { DbusPolkitAuthority } from '../src/polkit/authority.js';
import { PolkitAuthProvider } from '../src/polkit/index.js';
import { parseStartTime, processStartTime } from '../src/polkit/process-start-time.js';
import { polkitSettingsFrom } from '../src/polkit/settings.js';

class ScriptedAuthority implements PolkitAuthorityClient {
  readonly checks: { subject: UnixProcessSubject; actionId: string; interactive: boolean }[] = [];
  constructor(private readonly answer: AuthorizationResult | Error) {}
  async checkAuthorization(subject: UnixProcessSubject, actionId: string, interactive: boolean): Promise<AuthorizationResult> {
    this.checks.push({ subject, actionId, interactive });
    if (this.answer instanceof Error) throw this.answer;
    return this.answer;
  }
  close(): void {}
}

interface FakeContext extends ServerAuthContext {
  marked: ClientIdentity[];
}

function context(options: { peer?: PeerCredentials; readOnly?: boolean; kind?: TransportKind } = {}): FakeContext {
  const marked: ClientIdentity[] = [];
  const silent = { info() {}, warn() {}, debug() {} };
  return {
    connectionId: 1,
    transport: { kind: options.kind ?? 'unix', secure: true, ...(options.peer ? { peer: options.peer } : {}) },
    socketAuth: AuthType.POLKIT,
    readOnly: options.readOnly ?? false,
    identity: {},
    get authenticated() {
      return marked.length > 0;
    },
    markAuthenticated(identity: ClientIdentity) {
      marked.push(identity);
    },
    closeAfterReply() {},
    state: new SessionState(),
    log: silent,
    marked,
  };
}

const self: PeerCredentials = { pid: process.pid, uid: 1000, gid: 1000 };
const allowed: AuthorizationResult = { isAuthorized: true, isChallenge: false, details: {} };

async function authPolkit(provider: PolkitAuthProvider, ctx: ServerAuthContext): Promise<unknown> {
  return provider.server.procedures[RemoteProc.AUTH_POLKIT]!.handle(ctx, undefined);
}

test('an authorized client is marked authenticated with the subject polkit was asked about', async (t) => {
  const authority = new ScriptedAuthority(allowed);
  const provider = new PolkitAuthProvider({ authority });
  const ctx = context({ peer: self });
  t.deepEqual(await authPolkit(provider, ctx), { complete: 1 });
  t.deepEqual(ctx.marked, [
    {
      method: 'polkit',
      unixUid: 1000,
      unixGid: 1000,
      unixPid: process.pid,
      polkit: { action: 'org.libvirt.unix.manage', result: 'authorized' },
    },
  ]);
  t.is(authority.checks.length, 1);
  const [check] = authority.checks;
  t.is(check!.actionId, 'org.libvirt.unix.manage');
  t.true(check!.interactive, 'libvirtd lets polkit use an agent');
  t.is(check!.subject.pid, process.pid);
  t.is(check!.subject.uid, 1000);
  t.is(check!.subject.startTime as bigint | null, await processStartTime(process.pid));
});

test('the read-only socket asks for the monitor action; both actions are configurable', async (t) => {
  const defaults = new ScriptedAuthority(allowed);
  await authPolkit(new PolkitAuthProvider({ authority: defaults }), context({ peer: self, readOnly: true }));
  t.is(defaults.checks[0]!.actionId, 'org.libvirt.unix.monitor');

  const configured = new ScriptedAuthority(allowed);
  const settings = polkitSettingsFrom(
    new Map([
      ['polkit_action_rw', 'org.example.rw'],
      ['polkit_action_ro', 'org.example.ro'],
    ]),
  );
  const provider = new PolkitAuthProvider({ authority: configured, ...settings });
  await authPolkit(provider, context({ peer: self }));
  await authPolkit(provider, context({ peer: self, readOnly: true }));
  t.deepEqual(
    configured.checks.map((c) => c.actionId),
    ['org.example.rw', 'org.example.ro'],
  );
});

test("refusals carry libvirtd's codes and texts", async (t) => {
  const cases: [AuthorizationResult, number, string][] = [
    [{ isAuthorized: false, isChallenge: false, details: {} }, ErrorCode.AUTH_FAILED, 'authentication failed: access denied by policy'],
    [
      { isAuthorized: false, isChallenge: true, details: {} },
      ErrorCode.AUTH_UNAVAILABLE,
      "authentication unavailable: no polkit agent available to authenticate action 'org.libvirt.unix.manage'",
    ],
    [
      { isAuthorized: false, isChallenge: false, details: { 'polkit.dismissed': 'true' } },
      ErrorCode.AUTH_CANCELLED,
      'authentication cancelled: user cancelled authentication process',
    ],
  ];
  for (const [answer, code, message] of cases) {
    const ctx = context({ peer: self });
    const error = await t.throwsAsync(authPolkit(new PolkitAuthProvider({ authority: new ScriptedAuthority(answer) }), ctx), {
      instanceOf: VirError,
    });
    t.is(error!.code, code);
    t.is(error!.domain, ErrorDomain.POLKIT);
    t.is(error!.message, message);
    t.deepEqual(ctx.marked, [], 'a refused client stays unauthenticated');
  }
});

test('a root client is authenticated by AUTH_LIST without asking polkit; others are not', async (t) => {
  const authority = new ScriptedAuthority(allowed);
  const provider = new PolkitAuthProvider({ authority });
  const root = context({ peer: { pid: 1, uid: 0, gid: 0 } });
  t.deepEqual(await provider.server.onAuthList(root), [AuthType.NONE]);
  t.deepEqual(root.marked, [
    { method: 'none', unixUid: 0, unixGid: 0, unixPid: 1, polkit: { action: 'org.libvirt.unix.manage', result: 'root' } },
  ]);
  const user = context({ peer: self });
  t.is(await provider.server.onAuthList(user), null);
  t.deepEqual(user.marked, []);
  t.is(authority.checks.length, 0);
});

test('no peer credentials, a non-unix transport and an exited client are clear failures', async (t) => {
  const authority = new ScriptedAuthority(allowed);
  const provider = new PolkitAuthProvider({ authority });
  await t.throwsAsync(authPolkit(provider, context()), { message: /peer credentials \(SO_PEERCRED\) are unavailable/ });
  await t.throwsAsync(authPolkit(provider, context({ peer: self, kind: 'tcp' })), { message: /only possible on unix sockets/ });

  const proc = await mkdtemp(join(tmpdir(), 'pk-'));
  t.teardown(() => rm(proc, { recursive: true, force: true }));
  const gone = new PolkitAuthProvider({ authority, procRoot: proc });
  const error = await t.throwsAsync(authPolkit(gone, context({ peer: { pid: 4242, uid: 1000, gid: 1000 } })), { instanceOf: VirError });
  t.is(error!.code, ErrorCode.INTERNAL_ERROR);
  t.is(error!.domain, ErrorDomain.NONE);
  t.is(error!.message, 'internal error: Cannot find start time for pid 4242: the client process exited before polkit could check it');
  t.is(authority.checks.length, 0);
});

test('D-Bus failures from the authority reach the client unchanged', async (t) => {
  const failure = new VirError({
    code: ErrorCode.DBUS_SERVICE,
    domain: ErrorDomain.DBUS,
    detail: 'org.freedesktop.DBus.Error.ServiceUnknown: no polkitd',
  });
  const provider = new PolkitAuthProvider({ authority: new ScriptedAuthority(failure) });
  const error = await t.throwsAsync(authPolkit(provider, context({ peer: self })));
  t.is(error, failure);
});

test('no system bus: code 1, domain DBUS, with the address tried', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const address = `unix:path=${join(dir, 'no-bus')}`;
  const authority = new DbusPolkitAuthority({ busAddress: address, timeoutMs: 5000 });
  t.teardown(() => authority.close());
  const error = await t.throwsAsync(
    authority.checkAuthorization({ pid: process.pid, startTime: 0n, uid: 0 }, 'org.libvirt.unix.manage', true),
    { instanceOf: VirError },
  );
  t.is(error!.code, ErrorCode.INTERNAL_ERROR);
  t.is(error!.domain, ErrorDomain.DBUS);
  t.regex(error!.message, /^internal error: Unable to get system bus connection: .*ENOENT.*no-bus/);
  // The failed connection is not cached: the next check tries again (and fails the same way).
  await t.throwsAsync(authority.checkAuthorization({ pid: process.pid, startTime: 0n, uid: 0 }, 'org.libvirt.unix.manage', true), {
    message: /Unable to get system bus connection/,
  });
});

test('DBUS_SYSTEM_BUS_ADDRESS is read when the connection is made', (t) => {
  const saved = process.env.DBUS_SYSTEM_BUS_ADDRESS;
  t.teardown(() => {
    if (saved === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
    else process.env.DBUS_SYSTEM_BUS_ADDRESS = saved;
  });
  const authority = new DbusPolkitAuthority();
  process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:path=/run/elsewhere/bus';
  t.is(authority.busAddress(), 'unix:path=/run/elsewhere/bus');
  delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
  t.is(authority.busAddress(), 'unix:path=/var/run/dbus/system_bus_socket');
  t.is(new DbusPolkitAuthority({ busAddress: 'unix:path=/x' }).busAddress(), 'unix:path=/x');
});

test('process start time: field 22, robust to spaces and parentheses in the command name', async (t) => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  t.is(parseStartTime(`123 (a) (b) ${fields.join(' ')}`, 123), 22n);
  t.throws(() => parseStartTime('123 (short) S 1 2', 123), { message: /cannot read the start time of process 123/ });
  const dir = await mkdtemp(join(tmpdir(), 'pk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, '77'));
  await writeFile(join(dir, '77', 'stat'), `77 (x y) ${fields.join(' ')}`);
  t.is(await processStartTime(77, dir), 22n);
  t.is(await processStartTime(78, dir), null);
  await t.throwsAsync(processStartTime(0), { message: /invalid process id 0/ });
});

test('config: action ids are validated', (t) => {
  t.deepEqual(polkitSettingsFrom(new Map()), { actionRw: 'org.libvirt.unix.manage', actionRo: 'org.libvirt.unix.monitor' });
  t.throws(() => polkitSettingsFrom(new Map([['polkit_action_rw', 'Org.Bad Action']])), {
    message: /polkit_action_rw: 'Org.Bad Action' is not a polkit action id/,
  });
  t.throws(() => polkitSettingsFrom(new Map([['polkit_action_ro', 42]])), { message: /polkit_action_ro: expected a "string"/ });
});

test('the start time read at accept is the one polkit is asked about; a pid that names another process by now is refused', async (t) => {
  const proc = await mkdtemp(join(tmpdir(), 'pk-'));
  t.teardown(() => rm(proc, { recursive: true, force: true }));
  await mkdir(join(proc, '4242'));
  // Field 22 (start time) is 777 now: the process that connected started at 555.
  const stat = (start: number) => `4242 (some client) S ${'1 '.repeat(18)}${start} 0 0\n`;
  await writeFile(join(proc, '4242', 'stat'), stat(777));
  const authority = new ScriptedAuthority(allowed);
  const provider = new PolkitAuthProvider({ authority, procRoot: proc });
  const recycled = context({ peer: { pid: 4242, uid: 1000, gid: 1000, startTime: 555n } });
  const error = await t.throwsAsync(authPolkit(provider, recycled), { instanceOf: VirError });
  t.is(error!.code, ErrorCode.INTERNAL_ERROR);
  t.regex(error!.message, /Cannot find start time for pid 4242: the client process exited/);
  t.is(authority.checks.length, 0, 'polkit was not asked about the process that holds the pid now');
  t.deepEqual(recycled.marked, []);

  // The same process still there: polkit is asked with the start time read at accept.
  const same = context({ peer: { pid: 4242, uid: 1000, gid: 1000, startTime: 777n } });
  t.deepEqual(await authPolkit(provider, same), { complete: 1 });
  t.is(authority.checks[0]!.subject.startTime as bigint, 777n);
});
