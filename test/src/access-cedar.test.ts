// The cedar access driver end to end: real virsh logged in with SCRAM as an administrator and as a
// viewer of gw* domains against virtauthd's embedded test driver; a forged domain name; an OIDC
// operator allowed by a group rule; a policy reload that changes decisions on open connections and
// a malformed one that keeps the old policy; audit records of denials.

import { hostname } from 'node:os';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';
import { ErrorCode, ErrorDomain, VirError, parseUuid } from '@virtauth/core';
import { openAuth } from 'virtauth';

import {
  BASE_POLICY,
  HIDDEN,
  HIDDEN_UUID,
  VISIBLE,
  denial,
  domainXml,
  passwordAuthFor,
  runViewerCases,
  writeAuthFiles,
  type AccessTarget,
} from './access-support.js';
import { interopTest } from './peers/index.js';
import { tempDir } from './peers/util.js';
import { TestVirtauthd } from './sasl-support.js';
import { startVirtauthd } from './virtauthd-support.js';
import { machineClient, oauthClientContainer, oauthServerSettings, startIdp } from './oidc-support.js';
import { CLIENT } from './fixtures/oidc-idp.js';

const passwords = { admin: 'admin-pw-5d1c8e', viewer: 'viewer-pw-9b2f4a' };

async function policyDir(t: ExecutionContext, policy: string): Promise<{ dir: string; file: string }> {
  const dir = await tempDir('cedar');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.cedar');
  await writeFile(file, policy);
  return { dir, file };
}

async function startCedarDaemon(
  t: ExecutionContext,
  policyFile: string,
  settings: Record<string, string | number | readonly string[]> = {},
): Promise<TestVirtauthd> {
  const daemon = await TestVirtauthd.start({
    users: passwords,
    settings: { access_drivers: ['cedar'], access_cedar_policy_file: policyFile, ...settings },
  });
  t.teardown(() => daemon.stop());
  return daemon;
}

const passwordAuth = passwordAuthFor(passwords);

interopTest.serial(
  'cedar: virsh as admin and as a viewer of gw* domains (list filtered, start denied, hidden events never arrive)',
  ['virsh'],
  async (t) => {
    const policy = await policyDir(t, BASE_POLICY);
    const daemon = await startCedarDaemon(t, policy.file);
    const authFile = await writeAuthFiles(t, passwords);
    const target: AccessTarget = { uri: daemon.uri('unix'), authFile };
    await runViewerCases(t, target, policy.dir);

    // Every denial is an audit record naming who, what and the denying driver, and no password.
    const denials = daemon.events('access.denied');
    const start = denials.find((r) => r['procedure'] === 'DOMAIN_CREATE_WITH_FLAGS' || r['procedure'] === 'DOMAIN_CREATE');
    t.like(start, {
      user: 'viewer',
      method: 'sasl',
      object: 'domain',
      objectName: VISIBLE,
      permission: 'start',
      driver: 'cedar',
      transport: 'unix',
    });
    t.false(daemon.logText().includes(passwords.viewer));
    // The identity the logs carry: SASL mechanism and the unix peer read at accept.
    t.like(
      daemon.events('client.authenticated').find((r) => r['user'] === 'viewer'),
      { method: 'sasl', mechanism: 'SCRAM-SHA-256', uid: process.getuid!() },
    );
    t.like(start, { uid: process.getuid!() });
  },
);

test.serial('cedar: a client cannot borrow a visible name for a hidden domain, nor read through a lookup', async (t) => {
  const policy = await policyDir(t, BASE_POLICY);
  const daemon = await startCedarDaemon(t, policy.file);
  const admin = await openAuth(daemon.uri('unix'), passwordAuth('admin'));
  t.teardown(() => admin.close());
  await admin.domainDefineXml!({ xml: domainXml(VISIBLE, '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11') });
  await admin.domainDefineXml!({ xml: domainXml(HIDDEN, HIDDEN_UUID) });

  const viewer = await openAuth(daemon.uri('unix'), passwordAuth('viewer'));
  t.teardown(() => viewer.close());
  const forged = { name: VISIBLE, uuid: parseUuid(HIDDEN_UUID)!, id: -1 };
  const e = await denial(viewer.getDomainInfo(forged));
  t.like(e, { code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, message: 'access denied' });
  t.like(await denial(viewer.lookupDomainByName(HIDDEN)), { code: ErrorCode.ACCESS_DENIED });
  t.like(await denial(viewer.lookupDomainByUuid(parseUuid(HIDDEN_UUID)!)), { code: ErrorCode.ACCESS_DENIED });
  // Defining a domain from XML is checked on the domain the document describes, before it exists.
  t.like(await denial(viewer.domainDefineXml!({ xml: domainXml('gw-new', '11111111-2222-4333-8444-555555555555') })), {
    code: ErrorCode.ACCESS_DENIED,
  });
  t.deepEqual(
    (await admin.listAllDomains(0)).map((d) => d.name).sort(),
    [HIDDEN, VISIBLE, 'test'].sort(),
    'the refused define made nothing',
  );
  t.deepEqual(
    (await viewer.listAllDomains(0)).map((d) => d.name),
    [VISIBLE],
  );
  t.is(await viewer.getHostname(), hostname());
});

test.serial('cedar: lists are filtered when a remote driver serves them (virtauthd in front of another daemon)', async (t) => {
  const backend = await startVirtauthd(t);
  const direct = await openAuth(backend.uri(), null);
  t.teardown(() => direct.close());
  await direct.domainDefineXml!({ xml: domainXml(VISIBLE, '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11') });
  await direct.domainDefineXml!({ xml: domainXml(HIDDEN, HIDDEN_UUID) });

  const policy = await policyDir(t, BASE_POLICY);
  // name= makes the front daemon open the backend through its remote driver; its operator allows that URI.
  const front = await startCedarDaemon(t, policy.file, { uri_allowed_list: [backend.uri()] });
  const viaFront = `${front.uri('unix')}&name=${encodeURIComponent(backend.uri())}`;
  const viewer = await openAuth(viaFront, passwordAuth('viewer'));
  t.teardown(() => viewer.close());
  t.deepEqual(
    (await viewer.listAllDomains(0)).map((d) => d.name),
    [VISIBLE],
  );
  t.deepEqual((await viewer.connectListAllDomains!({ need_results: 1, flags: 0 })).ret, 1);
  t.deepEqual(await viewer.connectListDefinedDomains!({ maxnames: 10 }), { names: [VISIBLE] });
  t.deepEqual(await viewer.connectNumOfDefinedDomains!(), { num: 1 });
  t.deepEqual(await viewer.connectListDomains!({ maxids: 10 }), { ids: [] }, 'the running default domain "test" is not gw*');
  t.like(await denial(viewer.lookupDomainByName(HIDDEN)), { code: ErrorCode.ACCESS_DENIED });
  t.deepEqual((await direct.listAllDomains(0)).map((d) => d.name).sort(), [HIDDEN, VISIBLE, 'test'].sort());
});

test.serial('cedar: reload changes decisions on open connections; a malformed policy keeps the old one', async (t) => {
  const policy = await policyDir(t, BASE_POLICY);
  const daemon = await startCedarDaemon(t, policy.file);
  const admin = await openAuth(daemon.uri('unix'), passwordAuth('admin'));
  t.teardown(() => admin.close());
  const { dom } = await admin.domainDefineXml!({ xml: domainXml(VISIBLE, '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11') });
  const viewer = await openAuth(daemon.uri('unix'), passwordAuth('viewer'));
  t.teardown(() => viewer.close());

  t.like(await denial(viewer.domainCreate!({ dom })), { code: ErrorCode.ACCESS_DENIED });
  await writeFile(
    policy.file,
    `${BASE_POLICY}\npermit (principal == User::"viewer", action == Action::"domain.start", resource is Domain) when { resource.name like "gw*" };\n`,
  );
  await daemon.handle.reload();
  await viewer.domainCreate!({ dom });
  t.is((await viewer.getDomainState(dom)).state, 1, 'the same connection may start it now');

  await writeFile(policy.file, 'permit (principal == User::"viewer", action');
  await daemon.handle.reload();
  const failed = daemon.events('access.cedar.reload_failed');
  t.is(failed.length, 1);
  t.regex(String(failed[0]?.['reason']), /unexpected end of input/);
  await admin.domainDestroy!({ dom });
  await viewer.domainCreate!({ dom });
  t.is((await viewer.getDomainState(dom)).state, 1, 'the previous policy is still in force');
});

test.serial('cedar: a policy that does not parse at start is a configuration error naming the place', async (t) => {
  const policy = await policyDir(t, 'permit (principal, action, resource) when { resource.name like };');
  const e = await TestVirtauthd.start({ settings: { access_drivers: ['cedar'], access_cedar_policy_file: policy.file } }).then(
    async (d) => {
      await d.stop();
      return null;
    },
    (err: unknown) => err,
  );
  t.true(e instanceof VirError);
  t.regex((e as Error).message, /access_cedar_policy_file .*policy\.cedar: .*line 1, column/);
  const unknown = await TestVirtauthd.start({
    settings: { access_drivers: ['cedar', 'nosuch'], access_cedar_policy_file: policy.file },
  }).then(
    () => null,
    (err: unknown) => err,
  );
  t.regex(String((unknown as Error)?.message), /unknown access driver 'nosuch'|access_cedar_policy_file/);
});

test.serial('cedar: an OIDC user whose groups claim holds ops starts and stops domains through the group rule', async (t) => {
  const groupsIdp = await startIdp(t, { groups: { 'svc-machine': ['ops'], 'svc-machine-opaque': ['dev'] } });
  const policy = await policyDir(t, BASE_POLICY);
  const daemon = await TestVirtauthd.start({
    settings: {
      daemon_name: 'virtauthd-oidc-acl',
      ...oauthServerSettings(groupsIdp, { sasl_allowed_username_list: ['svc-*'] }),
      access_drivers: ['cedar'],
      access_cedar_policy_file: policy.file,
    },
  });
  t.teardown(() => daemon.stop());

  const operator = await openAuth(daemon.uri('unix'), null, 0, { container: oauthClientContainer(machineClient(groupsIdp)) });
  t.teardown(() => operator.close());
  const test1 = await operator.lookupDomainByName('test');
  await operator.domainDestroy!({ dom: test1 });
  await operator.domainCreate!({ dom: test1 });
  t.is((await operator.getDomainState(test1)).state, 1);

  // Another machine, in group dev only: not even connect.getattr, so its open is refused.
  const developer = openAuth(daemon.uri('unix'), null, 0, {
    container: oauthClientContainer(
      machineClient(groupsIdp, { clientId: CLIENT.opaqueMachine.id, clientSecret: CLIENT.opaqueMachine.secret }),
    ),
  });
  t.like(await denial(developer), { code: ErrorCode.ACCESS_DENIED, message: 'access denied' });
  const denied = daemon.events('access.denied').at(-1);
  t.like(denied, { user: 'svc-machine-opaque', oidcIssuer: groupsIdp.issuer, permission: 'getattr', driver: 'cedar' });
});
