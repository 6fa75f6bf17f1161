// What the daemon knows about a unix-socket client when it accepts it (the identity access
// drivers, audit lines and the admin interface see), and the access settings' validation.

import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfValue } from '@virtauth/core';
import { accessSettingsFrom, unixPeerIdentity } from '../src/access.js';

const conf = (entries: [string, ConfValue][]) => new Map<string, ConfValue>(entries);

test('the unix peer: uid, gid, groups, pid, start time and names read at accept', (t) => {
  const uid = process.getuid!();
  const gid = process.getgid!();
  const identity = unixPeerIdentity({ pid: process.pid, uid, gid });
  t.is(identity.pid, process.pid);
  // getgroups() may add the effective gid to the supplementary groups /proc lists.
  t.true(
    identity.groups.every((g) => process.getgroups!().includes(g)),
    `groups ${identity.groups.join(',')}`,
  );
  t.is(typeof identity.processStartTime, 'bigint');
  if (uid === 0) {
    t.is(identity.userName, 'root');
    t.true(identity.groupNames!.includes('root'));
  }
});

test('a process that is gone, or a /proc that lies, gives no start time rather than a wrong one', (t) => {
  const proc = mkdtempSync(join(tmpdir(), 'vproc-'));
  mkdirSync(join(proc, '4242'));
  writeFileSync(join(proc, '4242', 'stat'), '4242 (evil) 1 2 3) S');
  writeFileSync(join(proc, '4242', 'status'), 'Name:\tevil\nGroups:\t10 x 20\n');
  const lying = unixPeerIdentity({ pid: 4242, uid: 65534, gid: 65534 }, proc);
  t.is(lying.processStartTime, null);
  t.deepEqual(lying.groups, [10, 20]);
  t.is(unixPeerIdentity({ pid: 999_999_999, uid: 1, gid: 1 }, proc).processStartTime, null);
});

test('access settings: driver lists and audit modes are checked, none means no checks', (t) => {
  t.deepEqual(accessSettingsFrom(new Map()), { drivers: [], audit: 'denied' });
  t.deepEqual(accessSettingsFrom(conf([['access_drivers', ['none']]])), { drivers: [], audit: 'denied' });
  t.deepEqual(
    accessSettingsFrom(
      conf([
        ['access_drivers', ['cedar', 'polkit']],
        ['access_audit', 'all'],
      ]),
    ),
    { drivers: ['cedar', 'polkit'], audit: 'all' },
  );
  t.throws(() => accessSettingsFrom(conf([['access_drivers', 'cedar']])), { message: /access_drivers: expected a \[/ });
  t.throws(() => accessSettingsFrom(conf([['access_drivers', ['cedar', 'cedar']]])), { message: /listed twice/ });
  t.throws(() => accessSettingsFrom(conf([['access_audit', 'some']])), { message: /access_audit: expected "denied" or "all"/ });
});
