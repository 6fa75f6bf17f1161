import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

import test, { type ExecutionContext } from 'ava';

import { findExecutable, systemPython } from './executables.js';
import { libvirtDriverModuleDir } from './libvirtd.js';

/** Something outside Node that an interop test needs: a real libvirt program, a library, or root. */
export interface PeerStatus {
  name: string;
  available: boolean;
  /** What is missing and how to get it (usually the Debian package); empty when available. */
  reason: string;
}

/** Returns why a peer is unusable here, with the remedy, or undefined when it is fine. */
type PeerProbe = () => string | undefined;

const rootProblem = (): string | undefined => (process.getuid?.() === 0 ? undefined : 'not running as root: run the interop tests as root');

function executableProbe(binary: string, debianPackage: string): PeerProbe {
  return () => (findExecutable(binary) === undefined ? `${binary} not found: install Debian package ${debianPackage}` : undefined);
}

function saslPluginProbe(plugin: string, debianPackage: string): PeerProbe {
  return () => {
    for (const libraryDirectory of ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib']) {
      try {
        if (readdirSync(`${libraryDirectory}/sasl2`).some((file) => file.startsWith(`lib${plugin}.so`))) {
          return undefined;
        }
      } catch {
        // Directory absent on this architecture: try the next.
      }
    }
    return `cyrus-sasl ${plugin} plugin not found: install Debian package ${debianPackage}`;
  };
}

/** An npm package a test starts as a peer (e.g. a real OpenID provider), resolved as an import would be. */
function npmPackageProbe(packageName: string): PeerProbe {
  return () => {
    try {
      import.meta.resolve(packageName);
      return undefined;
    } catch {
      return `npm package ${packageName} not installed: run npm install at the repository root (it is a devDependency)`;
    }
  };
}

function driverModuleProbe(module: string, debianPackage: string): PeerProbe {
  return () => {
    const folder = libvirtDriverModuleDir();
    return folder !== undefined && existsSync(`${folder}/libvirt_driver_${module}.so`)
      ? undefined
      : `libvirt's ${module} driver module not found: install Debian package ${debianPackage}`;
  };
}

const peerProbes: Record<string, PeerProbe> = {
  root: rootProblem,
  // A private libvirtd is only usable as root (see PrivateLibvirtd).
  libvirtd: () => executableProbe('libvirtd', 'libvirt-daemon')() ?? rootProblem(),
  // libvirtd with its storage driver (vol-upload, vol-download) or its qemu driver (ACL checks).
  'libvirtd-storage': driverModuleProbe('storage', 'libvirt-daemon'),
  'libvirtd-qemu': () =>
    driverModuleProbe('qemu', 'libvirt-daemon-driver-qemu')() ?? executableProbe('qemu-system-x86_64', 'qemu-system-x86')(),
  virsh: executableProbe('virsh', 'libvirt-clients'),
  'virt-admin': executableProbe('virt-admin', 'libvirt-clients'),
  'python3-libvirt': () => {
    if (findExecutable(systemPython) === undefined) {
      return `${systemPython} not found: install Debian package python3-libvirt`;
    }
    // Registration time only: no server of ours is running yet, so a synchronous spawn is safe.
    const check = spawnSync(systemPython, ['-I', '-c', 'import libvirt'], { stdio: 'ignore', timeout: 10_000 });
    return check.status === 0 ? undefined : `${systemPython} cannot import libvirt: install Debian package python3-libvirt`;
  },
  saslpasswd2: executableProbe('saslpasswd2', 'sasl2-bin'),
  'sasl-scram': saslPluginProbe('scram', 'libsasl2-modules'),
  'sasl-digest-md5': saslPluginProbe('digestmd5', 'libsasl2-modules'),
  'sasl-sasldb': saslPluginProbe('sasldb', 'libsasl2-modules-db'),
  certtool: executableProbe('certtool', 'gnutls-bin'),
  polkitd: executableProbe('polkitd', 'polkitd'),
  pkcheck: executableProbe('pkcheck', 'polkitd'),
  'dbus-daemon': executableProbe('dbus-daemon', 'dbus-daemon'),
  unshare: executableProbe('unshare', 'util-linux'),
  setpriv: executableProbe('setpriv', 'util-linux'),
  runuser: executableProbe('runuser', 'util-linux'),
  ip: executableProbe('ip', 'iproute2'),
  'oidc-provider': npmPackageProbe('oidc-provider'),
  // A real browser for the sign-in pages: Debian's chromium, driven by puppeteer-core (no browser download).
  chromium: () => executableProbe('chromium', 'chromium')() ?? npmPackageProbe('puppeteer-core')(),
  // A private sshd switches to the test users: root only.
  sshd: () => executableProbe('sshd', 'openssh-server')() ?? rootProblem(),
  ssh: executableProbe('ssh', 'openssh-client'),
  nc: executableProbe('nc', 'netcat-openbsd'),
  'virt-ssh-helper': executableProbe('virt-ssh-helper', 'libvirt-daemon'),
  // The service tests: socket activation without systemd as PID 1, unit checks, datagram receivers.
  'systemd-socket-activate': executableProbe('systemd-socket-activate', 'systemd'),
  'systemd-analyze': executableProbe('systemd-analyze', 'systemd'),
  python3: executableProbe(systemPython, 'python3'),
  script: executableProbe('script', 'bsdutils'),
};

/** Every peer name interopTest and peerAvailable accept. */
export const knownPeers: readonly string[] = Object.keys(peerProbes);

const statusCache = new Map<string, PeerStatus>();

export function peerStatus(name: string): PeerStatus {
  const cached = statusCache.get(name);
  if (cached !== undefined) {
    return cached;
  }
  const probe = peerProbes[name];
  if (probe === undefined) {
    throw new Error(`unknown interop peer ${JSON.stringify(name)}; known peers: ${knownPeers.join(', ')}`);
  }
  const problem = probe();
  const status: PeerStatus = problem === undefined ? { name, available: true, reason: '' } : { name, available: false, reason: problem };
  statusCache.set(name, status);
  return status;
}

/** Whether a peer can be used here: its binaries exist (and, for libvirtd, we are root). */
export function peerAvailable(name: string): boolean {
  return peerStatus(name).available;
}

export function isCi(environment: NodeJS.ProcessEnv = process.env): boolean {
  return environment.CI === 'true' || environment.CI === '1';
}

export interface InteropPlan {
  /** run: all peers present; fail: CI lacks a peer (a setup bug); skip: a developer machine lacks one. */
  mode: 'run' | 'fail' | 'skip';
  missing: PeerStatus[];
  message: string;
}

/** Decides what to do with an interop test; separate from registration so it can be tested. */
export function planInteropTest(statuses: readonly PeerStatus[], ci: boolean): InteropPlan {
  const missing = statuses.filter((status) => !status.available);
  if (missing.length === 0) {
    return { mode: 'run', missing, message: '' };
  }
  const reasons = missing.map((status) => `${status.name}: ${status.reason}`).join('; ');
  return ci
    ? { mode: 'fail', missing, message: `interop peer missing in CI (.ci/run must install it): ${reasons}` }
    : { mode: 'skip', missing, message: `needs ${reasons}` };
}

export type InteropImplementation = (t: ExecutionContext) => PromiseLike<void> | void;

function register(serial: boolean, title: string, peers: readonly string[], implementation: InteropImplementation): void {
  const plan = planInteropTest(peers.map(peerStatus), isCi());
  const declare = serial ? test.serial : test;
  switch (plan.mode) {
    case 'run':
      declare(title, implementation);
      break;
    case 'fail':
      declare(title, (t) => {
        t.fail(plan.message);
      });
      break;
    case 'skip':
      // Ava 7 cannot skip at run time, so the decision is made while tests are declared.
      declare.skip(`${title} [skipped: ${plan.message}]`, implementation);
      break;
  }
}

/**
 * Declares a test that talks to real peers. It runs when they are all present; in CI (CI=true) a
 * missing peer fails it with the package to install; on a developer machine it is skipped.
 */
export function interopTest(title: string, peers: readonly string[], implementation: InteropImplementation): void {
  register(false, title, peers, implementation);
}

/** interopTest declared with test.serial (for tests that must not overlap others in the file). */
interopTest.serial = (title: string, peers: readonly string[], implementation: InteropImplementation): void => {
  register(true, title, peers, implementation);
};
