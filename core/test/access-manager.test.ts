// The access manager on its own: which rules a call triggers (flag-conditioned ones included),
// that every driver must allow, that a failing or malformed check denies, filtering, audit
// records, and the XML a define is checked on, including documents written to mislead.

import test from 'ava';
import { AccessManager, accessDenied, type ObjectResolver } from '../src/access/manager.js';
import { describeObject, namedInXml, shortAttributes } from '../src/access/objects.js';
import type { AccessAuditRecord, AccessDriver, AccessRequest, AccessSubject } from '../src/contracts/access.js';
import { ErrorCode, ErrorDomain, VirError } from '../src/errors.js';
import { remoteProcedures } from '../src/protocol/generated/remote.js';
import { parseUuid } from '../src/uuid.js';

const log = { info() {}, warn() {}, error() {}, debug() {} };
const proc = (name: string) => remoteProcedures.find((p) => p.name === name)!;
const subject = (readOnly = false): AccessSubject => ({
  identity: { username: 'alice', method: 'sasl' },
  transport: 'unix',
  readOnly,
  connectDriver: 'QEMU',
  connectionId: 7,
});
const DOM = { name: 'web-1', uuid: parseUuid('6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11')!, id: 3 };

/** A driver that records what it was asked and allows what `allow` says. */
function recordingDriver(name: string, allow: (r: AccessRequest) => boolean | Promise<boolean>): AccessDriver & { asked: string[] } {
  const asked: string[] = [];
  return {
    name,
    asked,
    check(r) {
      asked.push(`${r.object.type}.${r.permission}${r.object.type === 'domain' ? `:${r.object.attributes['domain_name']}` : ''}`);
      return allow(r);
    },
  };
}

/** The error a check ends in (thrown at once, or by its promise), or null when allowed. */
async function outcome(check: () => Promise<void> | undefined): Promise<VirError | null> {
  try {
    await check();
    return null;
  } catch (e) {
    return e as VirError;
  }
}

test('flag-conditioned rules: GET_XML_DESC needs read_secure only with VIR_DOMAIN_XML_SECURE; SET_METADATA save only for config', async (t) => {
  const driver = recordingDriver('rec', () => true);
  const manager = new AccessManager([driver], { log });
  await manager.checkCall(proc('DOMAIN_GET_XML_DESC'), { dom: DOM, flags: 0 }, subject(), null);
  t.deepEqual(driver.asked.splice(0), ['domain.read:web-1']);
  await manager.checkCall(proc('DOMAIN_GET_XML_DESC'), { dom: DOM, flags: 1 }, subject(), null);
  t.deepEqual(driver.asked.splice(0), ['domain.read:web-1', 'domain.read_secure:web-1']);
  // `!CONFIG|LIVE`: save when neither flag is set; and save again for CONFIG.
  await manager.checkCall(proc('DOMAIN_SET_METADATA'), { dom: DOM, flags: 0 }, subject(), null);
  t.deepEqual(driver.asked.splice(0), ['domain.write:web-1', 'domain.save:web-1']);
  await manager.checkCall(proc('DOMAIN_SET_METADATA'), { dom: DOM, flags: 1 }, subject(), null);
  t.deepEqual(driver.asked.splice(0), ['domain.write:web-1']);
  await manager.checkCall(proc('DOMAIN_SET_METADATA'), { dom: DOM, flags: 2 }, subject(), null);
  t.deepEqual(driver.asked.splice(0), ['domain.write:web-1', 'domain.save:web-1']);
});

test('every driver must allow; the first refusal is audited with its name and the client sees only "access denied"', async (t) => {
  const records: AccessAuditRecord[] = [];
  const cedar = recordingDriver('cedar', () => true);
  const polkit = recordingDriver('polkit', async (r) => r.permission !== 'start');
  const manager = new AccessManager([cedar, polkit], { log, audit: (r) => records.push(r) });
  t.is(await outcome(() => manager.checkCall(proc('DOMAIN_GET_INFO'), { dom: DOM }, subject(), null)), null);
  const e = await outcome(() => manager.checkCall(proc('DOMAIN_CREATE'), { dom: DOM }, subject(), null));
  t.like(e, { code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, message: 'access denied' });
  t.is(records.length, 1);
  t.like(records[0], {
    event: 'access.denied',
    user: 'alice',
    procedure: 'DOMAIN_CREATE',
    object: 'domain',
    objectName: 'web-1',
    permission: 'start',
    driver: 'polkit',
    conn: 7,
  });
  t.deepEqual(accessDenied().message, 'access denied');
});

test('a driver that throws denies; a malformed object denies; lookups are checked on what they found', async (t) => {
  const records: AccessAuditRecord[] = [];
  const broken: AccessDriver = {
    name: 'broken',
    check: () => {
      throw new Error('policy engine down');
    },
  };
  const manager = new AccessManager([broken], { log, audit: (r) => records.push(r) });
  // As libvirt: a driver that fails to decide is named, its own error is not passed on.
  t.like(await outcome(() => manager.checkCall(proc('CONNECT_GET_HOSTNAME'), undefined, subject(), null)), {
    code: ErrorCode.ACCESS_DENIED,
    message: "access denied: 'broken' denied access",
  });
  t.is(records[0]?.driver, 'broken');

  const onlyWeb = new AccessManager(
    [recordingDriver('names', (r) => r.object.type !== 'domain' || r.object.attributes['domain_name']!.startsWith('web'))],
    { log },
  );
  t.like(await outcome(() => onlyWeb.checkCall(proc('DOMAIN_GET_INFO'), { dom: 'not a domain' }, subject(), null)), {
    code: ErrorCode.ACCESS_DENIED,
  });
  // A lookup runs, then its result is checked.
  t.is(onlyWeb.checkCall(proc('DOMAIN_LOOKUP_BY_NAME'), { name: 'db-1' }, subject(), null), undefined);
  t.like(
    await outcome(() => onlyWeb.checkResult(proc('DOMAIN_LOOKUP_BY_NAME'), { name: 'db-1' }, { dom: { ...DOM, name: 'db-1' } }, subject())),
    { code: ErrorCode.ACCESS_DENIED },
  );
  t.is(await outcome(() => onlyWeb.checkResult(proc('DOMAIN_LOOKUP_BY_NAME'), { name: 'web-1' }, { dom: DOM }, subject())), null);
});

test('the resolver decides what a rule sees: a client-supplied name is replaced by the real one', async (t) => {
  const manager = new AccessManager(
    [recordingDriver('names', (r) => r.object.type !== 'domain' || r.object.attributes['domain_name']!.startsWith('web'))],
    { log },
  );
  const realName: ObjectResolver = async (_type, ref) => ({ ...(ref as object), name: 'db-secret' });
  t.like(await outcome(() => manager.checkCall(proc('DOMAIN_GET_INFO'), { dom: DOM }, subject(), realName)), {
    code: ErrorCode.ACCESS_DENIED,
  });
  // A lazily decoded call (the gateway's case): only what the check needs.
  let decoded = 0;
  const lazy = () => {
    decoded++;
    return { dom: DOM, flags: 0 };
  };
  t.is(await outcome(() => manager.checkCall(proc('DOMAIN_GET_INFO'), lazy, subject(), null)), null);
  t.is(decoded, 1);
});

test("read-only connections refuse writes with libvirt's error even without drivers, and are audited", async (t) => {
  const records: AccessAuditRecord[] = [];
  const manager = new AccessManager([], { log, audit: (r) => records.push(r) });
  t.false(manager.enabled);
  const e = await outcome(() => manager.checkCall(proc('DOMAIN_CREATE'), { dom: DOM }, subject(true), null));
  t.like(e, { code: ErrorCode.OPERATION_DENIED, message: 'operation forbidden: read only access prevents virDomainCreate' });
  t.like(records[0], { event: 'access.denied', driver: 'readonly', procedure: 'DOMAIN_CREATE' });
  t.is(await outcome(() => manager.checkCall(proc('DOMAIN_GET_INFO'), { dom: DOM }, subject(true), null)), null);
});

test('access_audit "all" records allowed writes, not reads', async (t) => {
  const records: AccessAuditRecord[] = [];
  const manager = new AccessManager([recordingDriver('ok', () => true)], { log, audit: (r) => records.push(r), auditMode: 'all' });
  await manager.checkCall(proc('DOMAIN_GET_INFO'), { dom: DOM }, subject(), null);
  await manager.checkCall(proc('DOMAIN_CREATE'), { dom: DOM }, subject(), null);
  t.deepEqual(
    records.map((r) => [r.event, r.procedure, r.permission]),
    [['access.allowed', 'DOMAIN_CREATE', 'start']],
  );
});

test('list filtering and events keep only what domain:getattr allows', async (t) => {
  const manager = new AccessManager(
    [recordingDriver('names', (r) => r.object.type !== 'domain' || r.object.attributes['domain_name']!.startsWith('web'))],
    { log },
  );
  const domains = ['web-1', 'db-1', 'web-2'].map((name, i) => ({ ...DOM, name, id: i }));
  t.deepEqual(
    (await manager.filter(proc('CONNECT_LIST_ALL_DOMAINS'), domains, subject())).map((d) => d.name),
    ['web-1', 'web-2'],
  );
  const register = proc('CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY');
  t.true(await manager.allowsEvent(register, domains[0], subject()));
  t.false(await manager.allowsEvent(register, domains[1], subject()));
  t.false(await manager.allowsEvent(register, null, subject()));
});

test('the XML a define is checked on: root children only, comments and nested names ignored', (t) => {
  t.deepEqual(namedInXml("<domain type='kvm'><name>web-1</name><uuid>6F1C8A52-6A8E-4B7E-9A41-0F5E2D7C1B11</uuid></domain>"), {
    name: 'web-1',
    uuid: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11',
  });
  // A name inside a device, or in a comment, must not stand in for the domain's own.
  t.deepEqual(namedInXml('<domain><devices><disk><name>web-evil</name></disk></devices><name>db-1</name></domain>'), {
    name: 'db-1',
    uuid: '',
  });
  t.deepEqual(namedInXml('<?xml version="1.0"?><!-- <name>web-x</name> --><domain><name>db&amp;1</name></domain>'), {
    name: 'db&1',
    uuid: '',
  });
  t.deepEqual(namedInXml('<domain><name/><name>web</name></domain>'), { name: 'web', uuid: '' });
  for (const hostile of ['', 'not xml', '<domain>', 42, null, '<'.repeat(10000)]) t.deepEqual(namedInXml(hostile), { name: '', uuid: '' });
});

test("objects carry libvirt's polkit attribute names; policies see them without the prefix", (t) => {
  const dom = describeObject('domain', DOM, 'QEMU')!;
  t.deepEqual(dom, {
    type: 'domain',
    id: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11',
    attributes: { connect_driver: 'QEMU', domain_name: 'web-1', domain_uuid: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11' },
  });
  t.deepEqual(shortAttributes(dom), { connect_driver: 'QEMU', name: 'web-1', uuid: '6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11' });
  t.deepEqual(describeObject('storage_vol', { pool: 'default', name: 'a.img', key: '/var/a.img' }, 'storage')!.attributes, {
    connect_driver: 'storage',
    pool_name: 'default',
    vol_name: 'a.img',
    vol_key: '/var/a.img',
  });
  t.deepEqual(
    describeObject('secret', { uuid: DOM.uuid, usageType: 2, usageID: 'client.admin' }, 'secret')!.attributes['secret_usage_ceph'],
    'client.admin',
  );
  t.is(describeObject('domain', 'x', 'QEMU'), null);
  t.is(describeObject('no_such_type', {}, 'QEMU'), null);
});
