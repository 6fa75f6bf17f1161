// The cedar access driver on its own: the request it builds (principal, groups, action,
// resource attributes, context), decisions cached until a reload, a reload that fails keeping
// the old policy, and names that try to smuggle policy text.

import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectObject, describeObject, parseUuid, type AccessSubject, type ClientIdentity } from '@virtauth/core';
import { CedarAccessDriver, cedarRequest } from '../src/access/cedar.js';

const DOM = describeObject('domain', { name: 'web-1', uuid: parseUuid('6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11'), id: 1 }, 'QEMU')!;

function subject(identity: ClientIdentity, transport: 'unix' | 'tcp' | 'tls' = 'tls', readOnly = false): AccessSubject {
  return { identity, transport, readOnly, connectDriver: 'QEMU', connectionId: 1 };
}

function collectingLog() {
  const lines: Record<string, unknown>[] = [];
  const push = (o: object) => void lines.push(o as Record<string, unknown>);
  return { lines, log: { info: push, warn: push, error: push, debug: push } };
}

async function driverWith(t: ExecutionContext, policy: string) {
  const dir = await mkdtemp(join(tmpdir(), 'cedar-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'p.cedar');
  await writeFile(file, policy);
  const { lines, log } = collectingLog();
  return { driver: await CedarAccessDriver.create({ policyFile: file, log }), file, lines };
}

test("the request: User with unix and OIDC groups as parents, libvirt's action name, Domain with its attributes in its Connect", (t) => {
  const identity: ClientIdentity = {
    username: 'alice',
    method: 'sasl',
    unix: { uid: 1000, gid: 1000, groups: [27], pid: 1, processStartTime: 1n, userName: 'alice', groupNames: ['alice', 'sudo'] },
    oidc: {
      issuer: 'https://idp',
      subject: 's-1',
      usernameClaim: 'preferred_username',
      username: 'alice',
      groups: ['ops'],
      roles: ['auditor'],
      scopes: ['virt'],
    },
  };
  const req = cedarRequest('p', subject(identity, 'unix', true), DOM, 'start');
  t.deepEqual(req.principal, { type: 'User', id: 'alice' });
  t.deepEqual(req.action, { type: 'Action', id: 'domain.start' });
  t.deepEqual(req.resource, { type: 'Domain', id: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11' });
  t.deepEqual(req.context, { auth_method: 'sasl', transport: 'unix', read_only: true, hops: [] });
  const relayed = cedarRequest('p', subject({ ...identity, hops: [{ daemon: 'gw-a@h1', driver: 'remote' }] }), DOM, 'start');
  t.deepEqual((relayed.context as { hops: string[] }).hops, ['gw-a@h1']);
  t.deepEqual(
    req.entities[0]!.parents,
    ['alice', 'sudo', 'ops', 'auditor'].map((id) => ({ type: 'Group', id })),
  );
  const domain = req.entities.find((e) => (e.uid as { type: string }).type === 'Domain')!;
  t.deepEqual(domain.attrs, { connect_driver: 'QEMU', name: 'web-1', uuid: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11' });
  t.deepEqual(domain.parents, [{ type: 'Connect', id: 'QEMU' }]);
  t.deepEqual(cedarRequest('p', subject(identity), connectObject('QEMU'), 'getattr').resource, { type: 'Connect', id: 'QEMU' });
});

test('decisions: group rules, name patterns, context; names are data, never policy text', async (t) => {
  const { driver } = await driverWith(
    t,
    `
    permit (principal == User::"admin", action, resource);
    permit (principal in Group::"ops", action == Action::"domain.start", resource is Domain in Connect::"QEMU") when { resource.name like "web-*" && context.transport != "tcp" };
  `,
  );
  const ops = subject({
    username: 'bob',
    oidc: { issuer: 'i', subject: 's', usernameClaim: 'sub', username: 'bob', groups: ['ops'], roles: [], scopes: [] },
  });
  t.true(driver.check({ subject: ops, object: DOM, permission: 'start' }));
  t.false(driver.check({ subject: ops, object: DOM, permission: 'stop' }));
  t.false(driver.check({ subject: subject(ops.identity, 'tcp'), object: DOM, permission: 'start' }));
  const db = describeObject('domain', { name: 'db-1', uuid: parseUuid('11111111-2222-4333-8444-555555555555'), id: 2 }, 'QEMU')!;
  t.false(driver.check({ subject: ops, object: db, permission: 'start' }));
  // A user name built to look like policy text is just an odd name.
  for (const name of ['admin" || true || "', 'admin\u0000', 'Admin', ' admin']) {
    t.false(driver.check({ subject: subject({ username: name }), object: DOM, permission: 'delete' }), JSON.stringify(name));
  }
  t.true(driver.check({ subject: subject({ username: 'admin' }), object: DOM, permission: 'delete' }));
  t.false(driver.check({ subject: subject({}), object: DOM, permission: 'getattr' }), 'no name: User::"" matches no rule here');
});

test('cached until reload; a reload that fails to parse keeps the old policy and says where', async (t) => {
  const { driver, file, lines } = await driverWith(t, 'permit (principal == User::"alice", action == Action::"domain.start", resource);');
  const alice = subject({ username: 'alice' });
  t.true(driver.check({ subject: alice, object: DOM, permission: 'start' }));
  await writeFile(file, 'forbid (principal, action, resource);');
  t.true(driver.check({ subject: alice, object: DOM, permission: 'start' }), 'the cached decision holds until the reload');
  await driver.reload();
  t.false(driver.check({ subject: alice, object: DOM, permission: 'start' }));

  await writeFile(file, 'permit (principal, action, resource) when { resource.name like };');
  await driver.reload();
  t.false(driver.check({ subject: alice, object: DOM, permission: 'start' }), 'still the forbid-all policy');
  const failed = lines.find((l) => l['event'] === 'access.cedar.reload_failed');
  t.regex(String(failed?.['reason']), /line 1, column \d+/);
  await rm(file);
  await driver.reload();
  t.regex(String(lines.at(-1)?.['reason']), /cannot read it/);
});
