// A private PolicyKit for interop tests: a system-like D-Bus of our own and Debian's polkitd,
// started in a private mount namespace with our actions and rules bind-mounted over polkit's
// fixed folders (the host's stay untouched). Plus the test accounts polkit decides about, and a
// way to run clients as them. Needs root (CI runs as root).

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { requireExecutable } from './executables.js';
import { describeResult, runProcess, type ProcessResult, type RunProcessOptions } from './process.js';
import { delay, tempDir, waitFor } from './util.js';

/** The policy file virtauth ships (providers/polkit/org.virtauth.policy). */
export const virtauthPolicyFile = fileURLToPath(new URL('../../../../providers/polkit/org.virtauth.policy', import.meta.url));

/**
 * libvirt's two unix-socket actions with libvirt's defaults (monitor: yes; manage:
 * auth_admin_keep). libvirt-daemon-system ships them, and it is deliberately not installed.
 */
export const libvirtUnixActionsPolicy = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <action id="org.libvirt.unix.monitor">
    <description>Test copy of libvirt's read-only socket action</description>
    <message>Not authorized to monitor virtualization (test policy)</message>
    <defaults><allow_any>yes</allow_any><allow_inactive>yes</allow_inactive><allow_active>yes</allow_active></defaults>
  </action>
  <action id="org.libvirt.unix.manage">
    <description>Test copy of libvirt's read-write socket action</description>
    <message>Not authorized to manage virtualization (test policy)</message>
    <defaults><allow_any>auth_admin_keep</allow_any><allow_inactive>auth_admin_keep</allow_inactive><allow_active>auth_admin_keep</allow_active></defaults>
  </action>
</policyconfig>
`;

// A system bus: any user may connect (polkitd runs as `polkitd`), method calls are denied unless
// a policy file allows them, and the files in system.d let polkitd own its name.
function busConfig(socketPath: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
`;
}

export interface PrivatePolkitOptions {
  /** Action files for polkit's actions folder, {file name: XML}. */
  actions: Record<string, string>;
  /** JavaScript for polkit's rules.d (one file). */
  rules: string;
  startTimeoutMs?: number;
}

const livePolkits = new Set<PrivatePolkit>();
process.once('exit', () => {
  for (const polkit of livePolkits) polkit.killNow();
});

function firstLine(child: ChildProcess, what: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    let errors = '';
    const timer = setTimeout(() => reject(new Error(`${what}: no output within ${timeoutMs} ms; stderr: ${errors}`)), timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => (errors += chunk.toString('utf8')));
    child.stdout?.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const end = text.indexOf('\n');
      if (end >= 0) {
        clearTimeout(timer);
        resolve(text.slice(0, end).trim());
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (status ${code}) before it was ready; stderr: ${errors}`));
    });
  });
}

export class PrivatePolkit {
  private stopped = false;
  private polkitdLog = '';

  private constructor(
    readonly dir: string,
    /** For DBUS_SYSTEM_BUS_ADDRESS. */
    readonly busAddress: string,
    private readonly bus: ChildProcess,
    private readonly polkitd: ChildProcess,
  ) {
    polkitd.stdout?.on('data', (chunk: Buffer) => (this.polkitdLog += chunk.toString('utf8')));
    polkitd.stderr?.on('data', (chunk: Buffer) => (this.polkitdLog += chunk.toString('utf8')));
  }

  static async start(options: PrivatePolkitOptions): Promise<PrivatePolkit> {
    if (process.getuid?.() !== 0)
      throw new Error('PrivatePolkit needs root (bind mounts in a private mount namespace; polkitd drops to its own user)');
    const dbusDaemon = requireExecutable('dbus-daemon', 'dbus-daemon');
    const polkitdPath = requireExecutable('polkitd', 'polkitd');
    const unshare = requireExecutable('unshare', 'util-linux');
    const pkcheck = requireExecutable('pkcheck', 'polkitd');
    const timeoutMs = options.startTimeoutMs ?? 15_000;

    const dir = await tempDir('pk');
    // polkitd (user polkitd) and the test accounts must reach the bus socket inside.
    await chmod(dir, 0o755);
    const actionsDir = join(dir, 'actions');
    const rulesDir = join(dir, 'rules');
    const noRulesDir = join(dir, 'no-rules');
    await Promise.all([mkdir(actionsDir, { mode: 0o755 }), mkdir(rulesDir), mkdir(noRulesDir)]);
    for (const [name, xml] of Object.entries(options.actions)) {
      if (!/^[A-Za-z0-9._-]+\.policy$/.test(name)) throw new Error(`action file name ${JSON.stringify(name)} must end in .policy`);
      await writeFile(join(actionsDir, name), xml, { mode: 0o644 });
    }
    await writeFile(join(rulesDir, '50-virtauth-test.rules'), options.rules, { mode: 0o644 });
    const polkitdUser = await lookupAccount('polkitd');
    for (const folder of [rulesDir, noRulesDir]) {
      await chown(folder, polkitdUser.uid, 0);
      await chmod(folder, 0o700);
    }

    const socketPath = join(dir, 'system_bus_socket');
    await writeFile(join(dir, 'bus.conf'), busConfig(socketPath));
    const bus = spawn(dbusDaemon, [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--print-address=1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let polkitd: ChildProcess | undefined;
    try {
      const busAddress = await firstLine(bus, 'dbus-daemon', timeoutMs);
      // The mounts exist only in polkitd's namespace; argv carries the paths, no shell quoting needed.
      const script =
        'mount --bind "$1" /usr/share/polkit-1/actions && mount --bind "$2" /etc/polkit-1/rules.d && mount --bind "$3" /usr/share/polkit-1/rules.d && exec "$4" --no-debug';
      polkitd = spawn(
        unshare,
        ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', actionsDir, rulesDir, noRulesDir, polkitdPath],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress },
        },
      );
      const polkit = new PrivatePolkit(dir, busAddress, bus, polkitd);
      livePolkits.add(polkit);
      try {
        // Root is always authorized once polkitd owns its name and knows the action.
        const firstAction = /<action id="([^"]+)"/.exec(Object.values(options.actions)[0] ?? '')?.[1];
        if (!firstAction) throw new Error('PrivatePolkit needs at least one action');
        await waitFor(
          async () => {
            if (polkitd!.exitCode !== null) throw new Error(`polkitd exited with status ${polkitd!.exitCode}: ${polkit.polkitdLog}`);
            const check = await runProcess(pkcheck, ['--action-id', firstAction, '--process', String(process.pid)], {
              env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress },
              timeoutMs: 5000,
            });
            if (check.code !== 0) throw new Error(`pkcheck: ${describeResult(check)}`);
            return true;
          },
          timeoutMs,
          `polkitd answering on ${busAddress}`,
          50,
        );
      } catch (error) {
        await polkit.stop();
        throw error;
      }
      return polkit;
    } catch (error) {
      if (polkitd && polkitd.exitCode === null) polkitd.kill('SIGKILL');
      if (bus.exitCode === null) bus.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** polkitd's output so far, for assertion messages. */
  get log(): string {
    return this.polkitdLog;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    livePolkits.delete(this);
    for (const child of [this.polkitd, this.bus]) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, delay(3000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /** @internal Last-resort kill when the test process exits. */
  killNow(): void {
    for (const child of [this.polkitd, this.bus]) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

export interface TestAccount {
  name: string;
  uid: number;
  gid: number;
}

async function lookupAccount(name: string): Promise<TestAccount> {
  const result = await runProcess('getent', ['passwd', name]);
  const fields = result.stdout.trim().split(':');
  if (result.code !== 0 || fields.length < 4) throw new Error(`no user ${name}: ${describeResult(result)}`);
  return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
}

async function mustRun(command: string, args: readonly string[]): Promise<void> {
  const result = await runProcess(command, args);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${describeResult(result)}`);
}

/** Creates a system group if it does not exist yet. */
export async function ensureGroup(name: string): Promise<void> {
  if ((await runProcess('getent', ['group', name])).code === 0) return;
  await mustRun('groupadd', ['--system', name]);
}

/**
 * Creates a system user without a home if missing, and makes it a member of `groups` (created as
 * needed). polkit's isInGroup() reads the group database, so membership is set there.
 */
export async function ensureUser(name: string, groups: readonly string[] = []): Promise<TestAccount> {
  for (const group of groups) await ensureGroup(group);
  if ((await runProcess('getent', ['passwd', name])).code !== 0) {
    await mustRun('useradd', [
      '--system',
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      '--user-group',
      ...(groups.length > 0 ? ['--groups', groups.join(',')] : []),
      name,
    ]);
  } else if (groups.length > 0) {
    await mustRun('usermod', ['--append', '--groups', groups.join(','), name]);
  }
  return lookupAccount(name);
}

/** The groups the account's processes get from --init-groups (as `id -G` reports them). */
export async function accountGroups(account: TestAccount): Promise<number[]> {
  const result = await runProcess('id', ['-G', account.name]);
  if (result.code !== 0) throw new Error(`id -G ${account.name} failed: ${describeResult(result)}`);
  return result.stdout
    .trim()
    .split(/\s+/)
    .map(Number)
    .sort((a, b) => a - b);
}

/** setpriv arguments that run the rest of argv as `account`, with its supplementary groups. */
export function asAccountArgs(account: TestAccount): string[] {
  return [`--reuid=${account.uid}`, `--regid=${account.gid}`, '--init-groups', '--'];
}

/** The repository this compiled file belongs to (test/dist/src/peers → four levels up). */
const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

/**
 * Runs one of the repository's compiled scripts as another user. The clone may sit below a
 * directory only root can enter (/root, a mode-0700 temp dir), so the script runs in a private
 * mount namespace where the repository is bind-mounted on a path everyone can traverse. unshare,
 * sh and setpriv all exec, so the spawned pid is the script's pid.
 */
export async function runRepoScriptAs(
  account: TestAccount,
  script: string,
  args: readonly string[],
  options: RunProcessOptions = {},
): Promise<ProcessResult> {
  if (!script.startsWith(repoRoot)) throw new Error(`${script} is not inside the repository ${repoRoot}`);
  const mountPoint = await tempDir('vrepo');
  await chmod(mountPoint, 0o755);
  try {
    const unshare = requireExecutable('unshare', 'util-linux');
    const setpriv = requireExecutable('setpriv', 'util-linux');
    const inner = join(mountPoint, script.slice(repoRoot.length));
    return await runProcess(
      unshare,
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount --bind "$1" "$2" && shift 2 && exec "$@"',
        'sh',
        repoRoot,
        mountPoint,
        setpriv,
        ...asAccountArgs(account),
        process.execPath,
        inner,
        ...args,
      ],
      options,
    );
  } finally {
    // rmdir, never a recursive removal: should the bind mount ever outlive its namespace, the
    // repository below it must not be deleted.
    await rmdir(mountPoint);
  }
}

/** Runs a program as another user (asynchronously: our daemons share this process). */
export async function runAs(
  account: TestAccount | 'root',
  command: string,
  args: readonly string[],
  options: RunProcessOptions = {},
): Promise<ProcessResult> {
  if (account === 'root') return runProcess(command, args, options);
  const setpriv = requireExecutable('setpriv', 'util-linux');
  return runProcess(setpriv, [...asAccountArgs(account), command, ...args], options);
}
