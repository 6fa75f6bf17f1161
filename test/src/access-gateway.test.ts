// Access control through the gateway: virtauthd passes test:///default through to a real private
// libvirtd and checks every forwarded call, lookup reply, list reply and event with the cedar
// driver. The same virsh cases as against the embedded driver (access-support.ts), then a client
// that tries to reach a hidden domain by a borrowed name or a lookup, and argument bodies that do
// not decode.

import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';
import { ErrorCode, ErrorDomain, REMOTE_PROGRAM, RemoteProc, parseUuid, remote, xdr } from '@virtauth/core';
import type { RemoteConnection } from '@virtauth/drivers';
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
import { GatewayPair } from './gateway-support.js';
import { interopTest } from './peers/index.js';
import { tempDir } from './peers/util.js';

const passwords = { admin: 'gw-admin-pw-41c7e2', viewer: 'gw-viewer-pw-0d93b8' };
const VISIBLE_UUID = '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11';

async function startCedarGateway(t: ExecutionContext): Promise<{ pair: GatewayPair; dir: string }> {
  const dir = await tempDir('gwacl');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const policyFile = join(dir, 'policy.cedar');
  await writeFile(policyFile, BASE_POLICY);
  const pair = await GatewayPair.start({ users: passwords, settings: { access_drivers: ['cedar'], access_cedar_policy_file: policyFile } });
  t.teardown(() => pair.stop());
  return { pair, dir };
}

const passwordAuth = passwordAuthFor(passwords);

const gatewayPeers = ['root', 'libvirtd', 'virsh', 'sasl-scram'];

interopTest.serial(
  'gateway + cedar: virsh as admin and as a viewer of gw* domains on a real libvirtd (list filtered, start denied, hidden events never arrive)',
  gatewayPeers,
  async (t) => {
    const { pair, dir } = await startCedarGateway(t);
    // libvirtd's test:///default lives while a connection holds it; each virsh run is one.
    const holder = await openAuth(pair.directUri(), null);
    t.teardown(() => holder.close());
    const authFile = await writeAuthFiles(t, passwords);
    const target: AccessTarget = { uri: pair.gatewayUri('unix'), authFile };
    await runViewerCases(t, target, dir);

    const start = pair.virtauthd
      .events('access.denied')
      .find((r) => r['procedure'] === 'DOMAIN_CREATE_WITH_FLAGS' || r['procedure'] === 'DOMAIN_CREATE');
    t.like(start, { user: 'viewer', method: 'sasl', object: 'domain', objectName: VISIBLE, permission: 'start', driver: 'cedar' });
    t.false(pair.virtauthd.logText().includes(passwords.viewer));
  },
);

interopTest.serial(
  'gateway + cedar: a borrowed name, a hidden UUID, a lookup, and undecodable arguments never reach the hidden domain',
  ['root', 'libvirtd', 'sasl-scram'],
  async (t) => {
    const { pair } = await startCedarGateway(t);
    const admin = (await openAuth(pair.gatewayUri(), passwordAuth('admin'))) as RemoteConnection;
    t.teardown(() => admin.close());
    await admin.domainDefineXml!({ xml: domainXml(VISIBLE, VISIBLE_UUID) });
    await admin.domainDefineXml!({ xml: domainXml(HIDDEN, HIDDEN_UUID) });

    const viewer = (await openAuth(pair.gatewayUri(), passwordAuth('viewer'))) as RemoteConnection;
    t.teardown(() => viewer.close());
    const visible = await viewer.lookupDomainByName(VISIBLE);
    // The visible domain's name on the hidden domain's UUID: libvirtd would act on the UUID.
    const forged = { name: VISIBLE, uuid: parseUuid(HIDDEN_UUID)!, id: -1 };
    t.like(await denial(viewer.getDomainInfo(forged)), {
      code: ErrorCode.ACCESS_DENIED,
      domain: ErrorDomain.ACCESS,
      message: 'access denied',
    });
    t.like(await denial(viewer.domainCreate!({ dom: forged })), { code: ErrorCode.ACCESS_DENIED });
    t.like(
      pair.virtauthd.events('access.denied').find((r) => r['procedure'] === 'DOMAIN_CREATE'),
      { user: 'viewer', object: 'domain', permission: 'start' },
      'the refusal is audited',
    );
    // Lookups are forwarded and checked on what libvirtd found.
    t.like(await denial(viewer.lookupDomainByName(HIDDEN)), { code: ErrorCode.ACCESS_DENIED, message: 'access denied' });
    t.like(await denial(viewer.lookupDomainByUuid(parseUuid(HIDDEN_UUID)!)), { code: ErrorCode.ACCESS_DENIED });
    // After a refused lookup the UUID is still unknown to this client: no borrowed name gets through.
    t.like(await denial(viewer.getDomainInfo(forged)), { code: ErrorCode.ACCESS_DENIED });
    // The right domain under its own name still works, and the list shows gw* only.
    t.is((await viewer.getDomainInfo(visible)).state, 5, 'shut off');
    t.deepEqual(
      (await viewer.listAllDomains(0)).map((d) => d.name),
      [VISIBLE],
    );
    t.like(await denial(viewer.domainCreate!({ dom: visible })), { code: ErrorCode.ACCESS_DENIED });
    // Defining from XML is checked on the domain the document names, before libvirtd sees it.
    t.like(await denial(viewer.domainDefineXml!({ xml: domainXml('gw-new', '11111111-2222-4333-8444-555555555555') })), {
      code: ErrorCode.ACCESS_DENIED,
    });
    t.deepEqual((await admin.listAllDomains(0)).map((d) => d.name).sort(), [HIDDEN, VISIBLE, 'test'].sort(), 'nothing was defined');

    // A DOMAIN_CREATE whose body ends inside the domain's name: refused by the gateway with
    // libvirt's decode error (a detail libvirtd never writes), and nothing started.
    const hidden = await admin.lookupDomainByName(HIDDEN);
    const truncated = xdr.encode(remote.domainCreateArgs, { dom: hidden }).subarray(0, 8);
    const raw = { minSize: 0, encode: (w: xdr.XdrWriter) => w.bytes(truncated), decode: () => undefined } as unknown as xdr.Codec<void>;
    const bad = await denial(admin.rpc.call(REMOTE_PROGRAM, 1, RemoteProc.DOMAIN_CREATE, raw, undefined, xdr.xvoid));
    t.like(bad, { code: ErrorCode.RPC, domain: ErrorDomain.RPC });
    t.regex(bad.message, /Unable to decode message payload: DOMAIN_CREATE arguments/);
    t.is((await admin.getDomainState(hidden)).state, 5, 'the hidden domain was not started');
    // The connection serves on after the refusal.
    await admin.domainCreate!({ dom: hidden });
    t.is((await admin.getDomainState(hidden)).state, 1);
  },
);
