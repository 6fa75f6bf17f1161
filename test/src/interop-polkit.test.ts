// PolicyKit proven against the real thing: a private D-Bus and Debian's polkitd with test rules,
// test accounts in and out of an allowed group, and clients run as those accounts against
// virtauthd and a real libvirtd with auth_unix_rw = "polkit". Both daemons face the same
// identities and must give the same answers; the answers are also checked against libvirt's.

import { spawn } from 'node:child_process';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test, { type ExecutionContext } from 'ava';

import { AuthType, ErrorCode, ErrorDomain, parseConf } from '@virtauth/core';
import { buildConfig, createDaemon, createLogger, type DaemonHandle } from '@virtauth/daemon';
import { getPeerCredentials } from '@virtauth/peercred';

import {
  PrivateLibvirtd,
  describeResult,
  interopTest,
  libvirtClientEnv,
  parsePythonLibvirtResult,
  pythonLibvirtCommands,
  requireExecutable,
  tempDir,
  type ProcessResult,
} from './peers/index.js';
import {
  PrivatePolkit,
  accountGroups,
  asAccountArgs,
  ensureUser,
  libvirtUnixActionsPolicy,
  runAs,
  runRepoScriptAs,
  virtauthPolicyFile,
  type TestAccount,
} from './peers/polkit.js';
import type { PolkitClientResult } from './peers/polkit-client.js';
import { JsonLines } from './log-capture.js';

const polkitClientScript = fileURLToPath(new URL('./peers/polkit-client.js', import.meta.url));
const polkitPeers = ['root', 'polkitd', 'pkcheck', 'dbus-daemon', 'unshare', 'setpriv', 'libvirtd', 'virsh', 'python3-libvirt'];

const operatorsGroup = 'vapk-operators';
// Operators may manage; vapk-denied is refused everything by rule; vapk-plain has no rule, so
// the actions' defaults apply (manage: auth_admin_keep, a challenge; monitor: yes).
const testRules = `polkit.addRule(function (action, subject) {
  var manage = action.id == "org.libvirt.unix.manage" || action.id == "org.virtauth.unix.manage";
  var monitor = action.id == "org.libvirt.unix.monitor" || action.id == "org.virtauth.unix.monitor";
  if (!manage && !monitor) return polkit.Result.NOT_HANDLED;
  if (subject.user == "vapk-denied") return polkit.Result.NO;
  if (manage && subject.isInGroup("${operatorsGroup}")) return polkit.Result.YES;
  return polkit.Result.NOT_HANDLED;
});
`;

type Identity = 'operator' | 'denied' | 'plain' | 'root';
type Outcome = { ok: true } | { ok: false; code: number; domain: number; message: string };

const allowed: Outcome = { ok: true };
const deniedByPolicy: Outcome = {
  ok: false,
  code: ErrorCode.AUTH_FAILED,
  domain: ErrorDomain.POLKIT,
  message: 'authentication failed: access denied by policy',
};
const noAgent = (action: string): Outcome => ({
  ok: false,
  code: ErrorCode.AUTH_UNAVAILABLE,
  domain: ErrorDomain.POLKIT,
  message: `authentication unavailable: no polkit agent available to authenticate action '${action}'`,
});

/** What libvirt answers each identity on each socket with libvirt's actions and the rules above. */
const expected: Record<Identity, { rw: Outcome; ro: Outcome }> = {
  operator: { rw: allowed, ro: allowed },
  denied: { rw: deniedByPolicy, ro: deniedByPolicy },
  plain: { rw: noAgent('org.libvirt.unix.manage'), ro: allowed },
  root: { rw: allowed, ro: allowed },
};
const identities = Object.keys(expected) as Identity[];

interface Virtauthd {
  handle: DaemonHandle;
  rwSocket: string;
  roSocket: string;
  log: JsonLines;
  uri(readOnly?: boolean): string;
}

async function startVirtauthd(dir: string, settings: Record<string, string> = {}): Promise<Virtauthd> {
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o755);
  const text = Object.entries({
    unix_sock_dir: dir,
    unix_sock_rw_perms: '0777',
    unix_sock_ro_perms: '0777',
    auth_unix_rw: 'polkit',
    auth_unix_ro: 'polkit',
    sasl_user_db: join(dir, 'users.json'),
    ...settings,
  })
    .map(([key, value]) => `${key} = "${value}"\n`)
    .join('');
  const config = buildConfig(parseConf(text, 'virtauthd.conf'), 'virtauthd.conf');
  assertSetup(config.authUnixRw === 'polkit' && config.authUnixRo === 'polkit', 'auth_unix_rw/ro = "polkit" parse');
  const log = new JsonLines();
  const handle = await createDaemon({ config, logger: createLogger(2, log) });
  const rwSocket = join(dir, 'virtauth-sock');
  const roSocket = join(dir, 'virtauth-sock-ro');
  return { handle, rwSocket, roSocket, log, uri: (readOnly = false) => `test+unix:///default?socket=${readOnly ? roSocket : rwSocket}` };
}

function assertSetup(condition: boolean, what: string): void {
  if (!condition) throw new Error(`setup: ${what} failed`);
}

interface World {
  dir: string;
  polkit: PrivatePolkit;
  libvirtd: PrivateLibvirtd;
  virtauthd: Virtauthd;
  /** A second virtauthd using the actions of the shipped org.virtauth.policy. */
  virtauthdOwnActions: Virtauthd;
  accounts: Record<Exclude<Identity, 'root'>, TestAccount>;
  /** Per-account writable home for the client programs. */
  homes: Map<string, string>;
}

let world: Promise<World> | undefined;
const cleanups: (() => Promise<void>)[] = [];

/** Everything the tests share, started once by the first test that needs it. */
function setUp(): Promise<World> {
  world ??= (async () => {
    const dir = await tempDir('vpk');
    await chmod(dir, 0o755);
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const accounts = {
      operator: await ensureUser('vapk-operator', [operatorsGroup]),
      denied: await ensureUser('vapk-denied'),
      plain: await ensureUser('vapk-plain'),
    };
    const homes = new Map<string, string>();
    for (const account of Object.values(accounts)) {
      const home = join(dir, `home-${account.name}`);
      await mkdir(home, { mode: 0o700 });
      await chown(home, account.uid, account.gid);
      homes.set(account.name, home);
    }
    const polkit = await PrivatePolkit.start({
      actions: { 'org.libvirt.unix.policy': libvirtUnixActionsPolicy, 'org.virtauth.policy': await readFile(virtauthPolicyFile, 'utf8') },
      rules: testRules,
    });
    cleanups.push(() => polkit.stop());
    // libvirtd (started below) and virtauthd's provider both find the private bus here.
    const savedBus = process.env.DBUS_SYSTEM_BUS_ADDRESS;
    process.env.DBUS_SYSTEM_BUS_ADDRESS = polkit.busAddress;
    cleanups.push(async () => {
      if (savedBus === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
      else process.env.DBUS_SYSTEM_BUS_ADDRESS = savedBus;
    });
    const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'polkit', auth_unix_ro: 'polkit' });
    cleanups.push(() => libvirtd.stop());
    // Its temp dir is private to root; the test accounts must reach the sockets inside.
    await chmod(libvirtd.dir, 0o755);
    const virtauthd = await startVirtauthd(join(dir, 'vd'));
    cleanups.push(() => virtauthd.handle.stop());
    const virtauthdOwnActions = await startVirtauthd(join(dir, 'vd2'), {
      polkit_action_rw: 'org.virtauth.unix.manage',
      polkit_action_ro: 'org.virtauth.unix.monitor',
    });
    cleanups.push(() => virtauthdOwnActions.handle.stop());
    return { dir, polkit, libvirtd, virtauthd, virtauthdOwnActions, accounts, homes };
  })();
  return world;
}

test.after.always(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function accountOf(w: World, identity: Identity): TestAccount | 'root' {
  return identity === 'root' ? 'root' : w.accounts[identity];
}

function clientEnv(w: World, account: TestAccount | 'root'): NodeJS.ProcessEnv {
  if (account === 'root') return libvirtClientEnv();
  const home = w.homes.get(account.name)!;
  return libvirtClientEnv({
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_RUNTIME_DIR: home,
    USER: account.name,
    LOGNAME: account.name,
  });
}

function parseClientResult(result: ProcessResult): PolkitClientResult {
  const line = result.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as PolkitClientResult;
  } catch {
    throw new Error(`polkit client printed no result: ${describeResult(result)}`);
  }
}

async function virtauthClient(w: World, identity: Identity, args: string[]): Promise<PolkitClientResult> {
  const account = accountOf(w, identity);
  const options = { env: clientEnv(w, account), timeoutMs: 30_000 };
  const result =
    account === 'root'
      ? await runAs('root', process.execPath, [polkitClientScript, ...args], options)
      : await runRepoScriptAs(account, polkitClientScript, args, options);
  return parseClientResult(result);
}

function outcomeOf(result: PolkitClientResult | { ok: boolean; error?: { code: number; domain: number; message: string } }): Outcome {
  if (result.ok) return allowed;
  const error = 'error' in result && result.error ? result.error : (result as { code: number; domain: number; message: string });
  return { ok: false, code: error.code, domain: error.domain, message: error.message };
}

interopTest.serial(
  'SO_PEERCRED: the addon reports the pid, uid, gid and groups of a client run as another user',
  ['root', 'setpriv'],
  async (t) => {
    const account = await ensureUser('vapk-operator', [operatorsGroup]);
    const dir = await tempDir('vpc');
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    await chmod(dir, 0o755);
    const path = join(dir, 'sock');
    let reachable!: Promise<void>;
    const accepted = new Promise<net.Socket>((resolve) => {
      const server = net.createServer(resolve);
      reachable = new Promise<void>((listening) => server.listen(path, listening)).then(() => chmod(path, 0o777));
      t.teardown(() => new Promise<void>((r) => server.close(() => r())));
    });
    // Listening, and open to the other account.
    await reachable;
    const script = `const s = require('node:net').connect(${JSON.stringify(path)}); s.on('data', () => process.exit(0));`;
    const client = spawn(requireExecutable('setpriv', 'util-linux'), [...asAccountArgs(account), process.execPath, '-e', script], {
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => client.once('exit', resolve));
    const socket = await accepted;
    const peer = getPeerCredentials(socket);
    socket.end('bye');
    await exited;
    t.is(peer.uid, account.uid);
    t.is(peer.gid, account.gid);
    t.is(peer.pid, client.pid ?? -1, 'setpriv execs the client, so the connecting process is the one spawned');
    t.deepEqual(
      [...(peer.groups ?? [])].sort((a, b) => a - b),
      await accountGroups(account),
    );
    t.true((await accountGroups(account)).length >= 2, 'the account is in its own group and the operators group');
  },
);

interopTest.serial(
  'AUTH_LIST: root is authenticated at once ([NONE]) by both daemons; other users are offered POLKIT',
  polkitPeers,
  async (t) => {
    const w = await setUp();
    for (const identity of identities) {
      for (const [daemon, uri] of [
        ['libvirtd', w.libvirtd.uri()],
        ['virtauthd', w.virtauthd.uri()],
      ] as const) {
        const result = await virtauthClient(w, identity, ['auth-list', uri]);
        t.deepEqual(result, { ok: true, types: [identity === 'root' ? AuthType.NONE : AuthType.POLKIT] }, `${identity} → ${daemon}`);
      }
    }
    t.true(
      w.virtauthd.log
        .records()
        .map((r) => r.event ?? '')
        .includes('auth.polkit.root_bypass'),
    );
  },
);

interopTest.serial(
  "virtauth's client: every identity gets the same answer from virtauthd and libvirtd, on both sockets",
  polkitPeers,
  async (t) => {
    const w = await setUp();
    for (const identity of identities) {
      for (const socket of ['rw', 'ro'] as const) {
        const args = (uri: string) => ['open', uri, ...(socket === 'ro' ? ['ro'] : [])];
        const fromLibvirtd = await virtauthClient(
          w,
          identity,
          args(w.libvirtd.uri('test:///default', socket === 'ro' ? 'unix-ro' : 'unix')),
        );
        const fromVirtauthd = await virtauthClient(w, identity, args(w.virtauthd.uri(socket === 'ro')));
        t.deepEqual(
          outcomeOf(fromVirtauthd),
          outcomeOf(fromLibvirtd),
          `${identity} on ${socket}: virtauthd ${JSON.stringify(fromVirtauthd)} vs libvirtd ${JSON.stringify(fromLibvirtd)}`,
        );
        t.deepEqual(
          outcomeOf(fromLibvirtd),
          expected[identity][socket],
          `${identity} on ${socket} against libvirtd; its log: ${(await w.libvirtd.logText()).slice(-1500)}`,
        );
        if (fromVirtauthd.ok && fromLibvirtd.ok) t.is(fromVirtauthd.hostname, fromLibvirtd.hostname);
      }
    }
    const events = w.virtauthd.log.records().map((r) => r.event ?? '');
    for (const event of ['auth.polkit.allowed', 'auth.polkit.denied']) t.true(events.includes(event), `virtauthd logged ${event}`);
  },
);

interopTest.serial('python3-libvirt as each identity: the same answers from virtauthd and libvirtd', polkitPeers, async (t) => {
  const w = await setUp();
  const scriptDir = join(w.dir, 'py');
  await mkdir(scriptDir, { mode: 0o755 });
  let n = 0;
  const python = async (identity: Identity, uri: string, readOnly: boolean) => {
    const file = join(scriptDir, `s${n++}.py`);
    await writeFile(file, pythonLibvirtCommands(uri, { commands: ['hostname'], readOnly, credentialTypes: [] }), { mode: 0o644 });
    const account = accountOf(w, identity);
    return parsePythonLibvirtResult(await runAs(account, '/usr/bin/python3', ['-I', file], { env: clientEnv(w, account) }));
  };
  for (const identity of identities) {
    for (const socket of ['rw', 'ro'] as const) {
      const fromLibvirtd = await python(identity, w.libvirtd.uri('test:///default', socket === 'ro' ? 'unix-ro' : 'unix'), socket === 'ro');
      const fromVirtauthd = await python(identity, w.virtauthd.uri(socket === 'ro'), socket === 'ro');
      t.deepEqual(
        outcomeOf(fromVirtauthd),
        outcomeOf(fromLibvirtd),
        `${identity} on ${socket}: virtauthd ${JSON.stringify(fromVirtauthd)} vs libvirtd ${JSON.stringify(fromLibvirtd)}`,
      );
      t.deepEqual(outcomeOf(fromVirtauthd), expected[identity][socket], `${identity} on ${socket}`);
    }
  }
});

interopTest.serial(
  'virsh as each identity: the same exit status, output and error text from virtauthd and libvirtd',
  polkitPeers,
  async (t) => {
    const w = await setUp();
    const virsh = requireExecutable('virsh', 'libvirt-clients');
    const run = (identity: Identity, uri: string, readOnly: boolean) => {
      const account = accountOf(w, identity);
      return runAs(account, virsh, ['--quiet', ...(readOnly ? ['-r'] : []), '-c', uri, 'hostname'], {
        env: clientEnv(w, account),
        timeoutMs: 30_000,
      });
    };
    for (const identity of identities) {
      for (const socket of ['rw', 'ro'] as const) {
        const fromLibvirtd = await run(identity, w.libvirtd.uri('test:///default', socket === 'ro' ? 'unix-ro' : 'unix'), socket === 'ro');
        const fromVirtauthd = await run(identity, w.virtauthd.uri(socket === 'ro'), socket === 'ro');
        const summary = (r: ProcessResult) => ({ code: r.code, stdout: r.stdout.trim(), stderr: r.stderr.trim() });
        t.log(`${identity} on ${socket}: ${JSON.stringify(summary(fromVirtauthd))}`);
        t.deepEqual(summary(fromVirtauthd), summary(fromLibvirtd), `${identity} on ${socket}`);
        const want = expected[identity][socket];
        if (want.ok) t.is(fromVirtauthd.code, 0, describeResult(fromVirtauthd));
        else t.true(fromVirtauthd.stderr.includes(`error: ${want.message}`), describeResult(fromVirtauthd));
      }
    }
  },
);

interopTest.serial("configured actions: virtauthd asks for the shipped policy's org.virtauth.unix.* actions", polkitPeers, async (t) => {
  const w = await setUp();
  const daemon = w.virtauthdOwnActions;
  t.deepEqual(outcomeOf(await virtauthClient(w, 'operator', ['open', daemon.uri()])), allowed);
  t.deepEqual(outcomeOf(await virtauthClient(w, 'plain', ['open', daemon.uri()])), noAgent('org.virtauth.unix.manage'));
  t.deepEqual(outcomeOf(await virtauthClient(w, 'plain', ['open', daemon.uri(true), 'ro'])), allowed);
  t.deepEqual(outcomeOf(await virtauthClient(w, 'denied', ['open', daemon.uri(true), 'ro'])), deniedByPolicy);
  // auth=polkit forces the scheme; a root client (offered only NONE) is refused it, as by libvirt.
  t.deepEqual(outcomeOf(await virtauthClient(w, 'operator', ['open', `${daemon.uri()}&auth=polkit`])), allowed);
  const forcedAsRoot = await virtauthClient(w, 'root', ['open', `${daemon.uri()}&auth=polkit`]);
  t.like(forcedAsRoot, {
    ok: false,
    code: ErrorCode.AUTH_FAILED,
    message: 'authentication failed: requested authentication type polkit rejected',
  });
});

interopTest.serial('a client that exits before its check gets a clear error, and the daemon keeps serving', polkitPeers, async (t) => {
  const w = await setUp();
  const orphaned = await virtauthClient(w, 'operator', ['orphan', w.virtauthd.rwSocket]);
  const fromLibvirtd = await virtauthClient(w, 'operator', ['orphan', w.libvirtd.rwSocket]);
  t.log(`virtauthd: ${JSON.stringify(orphaned)}; libvirtd: ${JSON.stringify(fromLibvirtd)}`);
  // libvirtd: code 1, domain 0, "internal error: Cannot find start time for pid N"; virtauthd says why.
  for (const [name, result] of [
    ['virtauthd', orphaned],
    ['libvirtd', fromLibvirtd],
  ] as const) {
    t.like(result, { ok: false, code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.NONE }, name);
    if (!result.ok) t.regex(result.message, /^internal error: Cannot find start time for pid \d+/, name);
  }
  if (!orphaned.ok) t.regex(orphaned.message, /: the client process exited before polkit could check it$/);
  t.true(
    w.virtauthd.log
      .records()
      .map((r) => r.event ?? '')
      .includes('auth.polkit.client_gone'),
  );
  t.deepEqual(outcomeOf(await virtauthClient(w, 'operator', ['open', w.virtauthd.uri()])), allowed, 'the daemon still serves');
});

interopTest.serial(
  'no system bus: both daemons fail with code 1, domain DBUS, "Unable to get system bus connection"',
  polkitPeers,
  async (t: ExecutionContext) => {
    const w = await setUp();
    const nowhere = `unix:path=${join(w.dir, 'no-such-bus')}`;
    process.env.DBUS_SYSTEM_BUS_ADDRESS = nowhere;
    let libvirtd: PrivateLibvirtd;
    let virtauthd: Virtauthd;
    try {
      libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'polkit' });
      virtauthd = await startVirtauthd(join(w.dir, 'vd-nobus'));
    } finally {
      process.env.DBUS_SYSTEM_BUS_ADDRESS = w.polkit.busAddress;
    }
    t.teardown(() => libvirtd.stop());
    t.teardown(() => virtauthd.handle.stop());
    await chmod(libvirtd.dir, 0o755);
    // virtauthd reads the variable when it connects: point it nowhere for this one check.
    process.env.DBUS_SYSTEM_BUS_ADDRESS = nowhere;
    let fromVirtauthd: PolkitClientResult;
    try {
      fromVirtauthd = await virtauthClient(w, 'operator', ['open', virtauthd.uri()]);
    } finally {
      process.env.DBUS_SYSTEM_BUS_ADDRESS = w.polkit.busAddress;
    }
    const fromLibvirtd = await virtauthClient(w, 'operator', ['open', libvirtd.uri()]);
    t.log(`virtauthd: ${JSON.stringify(fromVirtauthd)}; libvirtd: ${JSON.stringify(fromLibvirtd)}`);
    for (const [name, result] of [
      ['virtauthd', fromVirtauthd],
      ['libvirtd', fromLibvirtd],
    ] as const) {
      t.like(result, { ok: false, code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.DBUS }, name);
      if (!result.ok)
        t.true(result.message.startsWith('internal error: Unable to get system bus connection: '), `${name}: ${result.message}`);
    }
  },
);
