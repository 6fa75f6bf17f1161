// The access-control cases real virsh runs, written against a target rather than a daemon, so
// the same cases run against virtauthd's embedded test driver and (once merged) through a
// gateway to a real libvirtd: the target says how each user reaches the domains.

import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';
import { CredentialType, VirError, type ConnectAuth } from '@virtauth/core';

import {
  libvirtClientEnv,
  requireExecutable,
  runProcess,
  waitFor,
  watchVirshEvents,
  type ProcessResult,
  type VirshEventWatcher,
} from './peers/index.js';
import { tempDir } from './peers/util.js';

/** admin may do everything; viewer may see and read the domains named gw*, nothing else on them. */
export const BASE_POLICY = `
// The administrator: everything.
permit (principal == User::"admin", action, resource);

// The viewer: connection-level reads, and reads of the domains named gw*.
permit (
  principal == User::"viewer",
  action in [Action::"connect.getattr", Action::"connect.read", Action::"connect.search_domains"],
  resource
);
permit (
  principal == User::"viewer",
  action in [Action::"domain.getattr", Action::"domain.read"],
  resource is Domain
) when { resource.name like "gw*" };

// Operators (an OIDC groups claim) start and stop any domain of the test driver.
permit (
  principal in Group::"ops",
  action in [Action::"connect.getattr", Action::"connect.read", Action::"connect.search_domains",
             Action::"domain.getattr", Action::"domain.read", Action::"domain.start", Action::"domain.stop"],
  resource
);
`;

export const VISIBLE = 'gw-web';
export const HIDDEN = 'db-secret';
export const HIDDEN_UUID = '7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6';

export function domainXml(name: string, uuid: string): string {
  return `<domain type='test'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
`;
}

/** How the cases reach the hypervisor as each user. */
export interface AccessTarget {
  /** The URI virsh connects to. */
  uri: string;
  /** An auth.conf that logs virsh in as `user`. */
  authFile(user: 'admin' | 'viewer'): string;
}

const virshPath = () => requireExecutable('virsh', 'libvirt-clients');

export function virshAs(target: AccessTarget, user: 'admin' | 'viewer', args: readonly string[]): Promise<ProcessResult> {
  return runProcess(virshPath(), ['-c', target.uri, ...args], {
    env: libvirtClientEnv({ LIBVIRT_AUTH_FILE: target.authFile(user) }),
    timeoutMs: 30_000,
  });
}

/** auth.conf files for the SCRAM users, in a directory removed after the test. */
export async function writeAuthFiles(t: ExecutionContext, passwords: Record<string, string>): Promise<(user: string) => string> {
  const dir = await tempDir('acl');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [user, password] of Object.entries(passwords)) {
    await writeFile(
      join(dir, `${user}.conf`),
      `[credentials-u]\nauthname=${user}\npassword=${password}\n[auth-libvirt-localhost]\ncredentials=u\n`,
      { mode: 0o600 },
    );
  }
  return (user) => join(dir, `${user}.conf`);
}

/** `virsh event --all --loop` as `user` until stopped. */
export function watchEvents(target: AccessTarget, user: 'admin' | 'viewer'): VirshEventWatcher {
  return watchVirshEvents(target.uri, { LIBVIRT_AUTH_FILE: target.authFile(user) });
}

/**
 * The SCRAM cases: admin defines a visible and a hidden domain and may do anything; viewer sees
 * only the visible one in `list --all`, reads it, cannot start it ("access denied"), cannot even
 * look the hidden one up, and receives no event about it.
 */
export async function runViewerCases(t: ExecutionContext, target: AccessTarget, xmlDir: string): Promise<void> {
  const ok = (r: ProcessResult, what: string) => t.is(r.code, 0, `${what}: ${r.stderr}${r.stdout}`);
  const visibleXml = join(xmlDir, 'visible.xml');
  const hiddenXml = join(xmlDir, 'hidden.xml');
  await writeFile(visibleXml, domainXml(VISIBLE, '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11'));
  await writeFile(hiddenXml, domainXml(HIDDEN, HIDDEN_UUID));
  ok(await virshAs(target, 'admin', ['define', visibleXml]), 'admin defines the visible domain');
  ok(await virshAs(target, 'admin', ['define', hiddenXml]), 'admin defines the hidden domain');

  const adminList = await virshAs(target, 'admin', ['list', '--all', '--name']);
  ok(adminList, 'admin lists');
  t.true(adminList.stdout.includes(HIDDEN) && adminList.stdout.includes(VISIBLE), adminList.stdout);

  const viewerList = await virshAs(target, 'viewer', ['list', '--all', '--name']);
  ok(viewerList, 'viewer lists');
  t.deepEqual(
    viewerList.stdout.split('\n').filter((l) => l.trim() !== ''),
    [VISIBLE],
    'list --all shows the viewer only gw*',
  );

  ok(await virshAs(target, 'viewer', ['dominfo', VISIBLE]), 'viewer reads a gw* domain');
  const start = await virshAs(target, 'viewer', ['start', VISIBLE]);
  t.not(start.code, 0);
  t.regex(start.stderr, /error: access denied/, start.stderr);
  // Lookups are checked against the domain found; virsh words a failed lookup its own way.
  for (const name of [HIDDEN, HIDDEN_UUID]) {
    const lookup = await virshAs(target, 'viewer', ['dominfo', name]);
    t.not(lookup.code, 0);
    t.regex(lookup.stderr, /failed to get domain|access denied/, lookup.stderr);
    t.notRegex(lookup.stdout, /UUID:/);
  }

  // Events: the viewer watches while admin starts the hidden domain, then the visible one.
  const viewerEvents = watchEvents(target, 'viewer');
  const adminEvents = watchEvents(target, 'admin');
  try {
    // A watcher has registered once it reports an event: restart the visible domain until both have one.
    for (let attempt = 0; ; attempt++) {
      ok(await virshAs(target, 'admin', ['start', VISIBLE]), 'admin starts the visible domain');
      const seen = () => /gw-web.*Started/.test(viewerEvents.output()) && /gw-web.*Started/.test(adminEvents.output());
      if (
        await waitFor(seen, 5_000, 'both watchers saw a start').then(
          () => true,
          () => false,
        )
      )
        break;
      if (attempt === 5) throw new Error(`watchers never registered:\n${viewerEvents.output()}\n${adminEvents.output()}`);
      ok(await virshAs(target, 'admin', ['destroy', VISIBLE]), 'admin stops the visible domain');
    }
    const stopsBefore = count(viewerEvents.output(), /gw-web.*Stopped/g);
    ok(await virshAs(target, 'admin', ['start', HIDDEN]), 'admin starts the hidden domain');
    ok(await virshAs(target, 'admin', ['destroy', VISIBLE]), 'admin stops the visible domain');
    // The viewer's stream is ordered: once it has the later event, the hidden one would be before it.
    await Promise.all([
      viewerEvents.whenOutput((out) => count(out, /gw-web.*Stopped/g) > stopsBefore, 60_000, "the viewer's stop event"),
      adminEvents.whenOutput((out) => /db-secret.*Started/.test(out), 60_000, "admin's start event of the hidden domain"),
    ]);
  } finally {
    const viewerOut = await viewerEvents.stop();
    const adminOut = await adminEvents.stop();
    t.false(viewerOut.includes(HIDDEN), `no event about the hidden domain reached the viewer:\n${viewerOut}`);
    t.true(adminOut.includes(HIDDEN), `admin saw the hidden domain's events:\n${adminOut}`);
  }
}

function count(text: string, pattern: RegExp): number {
  return text.match(pattern)?.length ?? 0;
}

/** A SCRAM login for virtauth's own client, as one of `passwords`' users. */
export function passwordAuthFor<U extends string>(passwords: Record<U, string>): (user: U) => ConnectAuth {
  return (user) => ({
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? user : passwords[user];
    },
  });
}

/** The VirError a call was refused with (fails the test if it was not refused). */
export async function denial(promise: Promise<unknown>): Promise<VirError> {
  const e = await promise.then(
    () => null,
    (err: unknown) => err,
  );
  if (!(e instanceof VirError)) throw new Error(`expected a VirError, got ${String(e)}`);
  return e;
}
