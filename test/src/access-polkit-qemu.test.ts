// The polkit access driver side by side with libvirt's own: a real libvirtd whose qemu driver
// enforces ACLs (access_drivers = ["polkit"]; the test driver checks none), and virtauthd with the
// same access driver in front of it (a gateway), both asking the same real polkitd, with one
// rules file keyed on connect_driver and domain_name. Two unprivileged users run the same virsh
// commands directly and through virtauthd: every allow, deny and list filter must be the same.
// Domains are only defined, never run (no KVM needed); a start is observed up to the access check.
// One qemu-driver libvirtd per test file: kept to one serial test.

import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { parseUpstreamList } from '@virtauth/daemon';

import {
  PrivateLibvirtd,
  interopTest,
  libvirtClientEnv,
  requireExecutable,
  setEnvUntilTeardown,
  type ProcessResult,
} from './peers/index.js';
import { PrivatePolkit, ensureUser, runAs, type TestAccount } from './peers/polkit.js';
import { startVirtauthd } from './virtauthd-support.js';

const shippedActions = fileURLToPath(new URL('../../../providers/polkit/org.libvirt.api.policy', import.meta.url));

const OPERATOR = 'vpk-operator';
const VIEWER = 'vpk-viewer';

/**
 * Only QEMU connections. The operator sees and reads every domain and may do anything to those
 * named gw*; the viewer sees and reads only gw* domains. Root (libvirtd's view of virtauthd) is
 * always allowed by polkit itself.
 */
const RULES = `
polkit.addRule(function (action, subject) {
  if (action.id.indexOf("org.libvirt.api.") !== 0) return polkit.Result.NOT_HANDLED;
  if (action.lookup("connect_driver") !== "QEMU") return polkit.Result.NO;
  if (action.id.indexOf("org.libvirt.api.connect.") === 0) return polkit.Result.YES;
  if (action.id.indexOf("org.libvirt.api.domain.") !== 0) return polkit.Result.NO;
  var name = action.lookup("domain_name");
  var reads = action.id === "org.libvirt.api.domain.getattr" || action.id === "org.libvirt.api.domain.read";
  if (subject.user === "${OPERATOR}") return reads || name.indexOf("gw") === 0 ? polkit.Result.YES : polkit.Result.NO;
  if (subject.user === "${VIEWER}") return reads && name.indexOf("gw") === 0 ? polkit.Result.YES : polkit.Result.NO;
  return polkit.Result.NO;
});
`;

const qemuDomainXml = (name: string, uuid: string) =>
  `<domain type='qemu'><name>${name}</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>\n`;

const DOMAINS = {
  'gw-web': '5b0f3c1e-2d4a-4e6b-8c7d-9e0f1a2b3c4d',
  'db-secret': '6c1a4d2f-3e5b-4f7c-9d8e-0f1a2b3c4d5e',
  'gw-new': '7d2b5e3a-4f6c-4a8d-8e9f-1a2b3c4d5e6f',
} as const;

/** Each user's commands, in order; `gw-new` is defined and removed again by the operator. */
const STEPS: readonly (readonly [string, readonly string[]])[] = [
  ['list', ['list', '--all', '--name']],
  ['domuuid gw-web', ['domuuid', 'gw-web']],
  ['domuuid db-secret', ['domuuid', 'db-secret']],
  ['dumpxml gw-web', ['dumpxml', 'gw-web']],
  ['dumpxml db-secret', ['dumpxml', 'db-secret']],
  ['define gw-new', ['define', 'FILE:gw-new']],
  ['start gw-web', ['start', 'gw-web']],
  ['start db-secret', ['start', 'db-secret']],
  ['destroy gw-web', ['destroy', 'gw-web']],
  ['undefine gw-new', ['undefine', 'gw-new']],
];

interface Outcome {
  code: number;
  denied: boolean;
  stdout: string;
  stderr: string;
}

/**
 * libvirtd 9.0 words a denial "access denied: 'QEMU' denied access" (naming the connection's
 * driver); virtauthd says libvirt's plain "access denied". Same code and domain: the texts are
 * made one so that everything else may be compared.
 */
const denialText = /access denied: '[^']+' denied access/g;

function outcome(result: ProcessResult): Outcome {
  return {
    code: result.code ?? -1,
    denied: /access denied/.test(result.stderr),
    stdout: result.stdout.trim(),
    stderr: result.stderr.trim().replace(denialText, 'access denied'),
  };
}

interopTest.serial(
  "polkit: virtauthd's access driver in front of libvirtd's qemu driver allows, denies and filters exactly as libvirtd's own, for two users",
  ['root', 'libvirtd', 'libvirtd-qemu', 'virsh', 'polkitd', 'pkcheck', 'dbus-daemon', 'unshare', 'setpriv'],
  async (t) => {
    const polkit = await PrivatePolkit.start({
      actions: { 'org.libvirt.api.policy': await readFile(shippedActions, 'utf8') },
      rules: RULES,
    });
    t.teardown(() => polkit.stop());
    const libvirtd = await PrivateLibvirtd.start({
      auth_unix_rw: 'none',
      drivers: ['qemu'],
      // The capabilities probe then runs qemu as libvirtd itself runs: with a root-only /dev/kvm
      // a probe as libvirt-qemu disagrees with libvirtd's view and is redone on every call.
      qemuConfig: { user: 'root', group: 'root' },
      extraConfig: { access_drivers: ['polkit'] },
      env: { DBUS_SYSTEM_BUS_ADDRESS: polkit.busAddress },
      startTimeoutMs: 60_000,
    });
    t.teardown(() => libvirtd.stop());
    // virtauthd's polkit driver reads the bus address from its environment (it runs in this process).
    setEnvUntilTeardown(t, 'DBUS_SYSTEM_BUS_ADDRESS', polkit.busAddress);
    const upstream = libvirtd.uri('qemu:///system');
    const daemon = await startVirtauthd(t, {
      uriUpstreamList: parseUpstreamList([`qemu:///system=${upstream}`]),
      extra: new Map([['access_drivers', ['polkit']]]),
    });
    // The test accounts must reach both daemons' sockets.
    for (const path of [daemon.dir, libvirtd.dir, join(libvirtd.dir, 'sock')]) await chmod(path, 0o755);
    await chmod(daemon.rwSocket, 0o777);
    const files = join(daemon.dir, 'files');
    await mkdir(files, { mode: 0o755 });
    for (const [name, uuid] of Object.entries(DOMAINS))
      await writeFile(join(files, `${name}.xml`), qemuDomainXml(name, uuid), { mode: 0o644 });

    const virsh = requireExecutable('virsh', 'libvirt-clients');
    const targets = {
      libvirtd: upstream,
      virtauthd: `qemu+unix:///system?socket=${daemon.rwSocket}`,
    };
    const run = (account: TestAccount | 'root', uri: string, args: readonly string[]) => {
      const home = join(files, typeof account === 'string' ? account : account.name);
      const env = libvirtClientEnv({ HOME: home, XDG_CONFIG_HOME: join(home, '.config'), XDG_CACHE_HOME: join(home, '.cache') });
      return runAs(account, virsh, ['-c', uri, ...args.map((a) => (a.startsWith('FILE:') ? join(files, `${a.slice(5)}.xml`) : a))], {
        env,
        timeoutMs: 60_000,
      });
    };
    // The shared domains, defined by root (whom polkit always allows).
    for (const name of ['gw-web', 'db-secret']) {
      const defined = await run('root', targets.libvirtd, ['define', join(files, `${name}.xml`)]);
      t.is(defined.code, 0, `${defined.stderr}\n${await libvirtd.logText()}`);
    }

    const accounts = [await ensureUser(VIEWER), await ensureUser(OPERATOR)];
    for (const account of accounts) await mkdir(join(files, account.name), { mode: 0o777 });
    const matrix: Record<string, Record<string, Record<string, Outcome>>> = {};
    for (const [target, uri] of Object.entries(targets)) {
      matrix[target] = {};
      for (const account of accounts) {
        const row: Record<string, Outcome> = {};
        for (const [label, args] of STEPS) row[label] = outcome(await run(account, uri, args));
        matrix[target]![account.name] = row;
      }
    }
    t.deepEqual(matrix.virtauthd, matrix.libvirtd, 'the same decisions, lists and outputs through virtauthd as libvirtd makes');

    const decisions = (user: string) =>
      Object.fromEntries(
        Object.entries(matrix.libvirtd![user]!).map(([label, o]) => [label, o.denied ? 'denied' : o.code === 0 ? 'ok' : 'failed']),
      );
    t.deepEqual(decisions(VIEWER), {
      list: 'ok',
      'domuuid gw-web': 'ok',
      // The lookup is denied; virsh then reports only that it found no such domain.
      'domuuid db-secret': 'failed',
      'dumpxml gw-web': 'ok',
      'dumpxml db-secret': 'failed',
      'define gw-new': 'denied',
      'start gw-web': 'denied',
      'start db-secret': 'failed',
      'destroy gw-web': 'denied',
      // gw-new was never defined: not found, not denied.
      'undefine gw-new': 'failed',
    });
    t.deepEqual(decisions(OPERATOR), {
      list: 'ok',
      'domuuid gw-web': 'ok',
      'domuuid db-secret': 'ok',
      'dumpxml gw-web': 'ok',
      'dumpxml db-secret': 'ok',
      'define gw-new': 'ok',
      // Allowed, then it fails further on (no virtlogd, no KVM): past the access check either way.
      'start gw-web': 'failed',
      'start db-secret': 'denied',
      // Allowed, and refused because the domain is not running.
      'destroy gw-web': 'failed',
      'undefine gw-new': 'ok',
    });
    t.deepEqual(matrix.libvirtd![VIEWER]!.list!.stdout.split('\n'), ['gw-web'], 'the viewer lists only the gw* domains');
    t.regex(matrix.libvirtd![VIEWER]!['domuuid db-secret']!.stderr, /failed to get domain 'db-secret'/);
    t.deepEqual(matrix.libvirtd![OPERATOR]!.list!.stdout.split('\n').sort(), ['db-secret', 'gw-web']);
    // virtauthd recorded its denials with the client's unix identity and the driver that denied.
    const denials = readDenials(await readFile(join(daemon.dir, 'virtauthd.log'), 'utf8'));
    t.true(
      denials.some((d) => d.permission === 'start' && d.driver === 'polkit' && d.uid === accounts[0]!.uid),
      JSON.stringify(denials.slice(0, 5)),
    );
  },
);

/** access.denied records from virtauthd's JSON log. */
function readDenials(log: string): { permission?: string; driver?: string; uid?: number }[] {
  return log
    .split('\n')
    .filter((line) => line.includes('"access.denied"'))
    .map((line) => JSON.parse(line) as { permission?: string; driver?: string; uid?: number });
}
