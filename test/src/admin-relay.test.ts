// client-disconnect on a client whose open is waiting for a relayed credential: the daemon
// cancels the relayed request with a typed reason (audited), the open fails, nothing is left
// waiting on either hop; and client-info shows the relay and the upstream URI meanwhile.

import { join } from 'node:path';

import test from 'ava';
import { CredentialType, ErrorCode } from '@virtauth/core';
import { openAdmin, openAuth, paramsObject } from 'virtauth';

import { startXenApiServer } from './fixtures/xenapi-server.js';
import { tempDir, whenEmitted } from './peers/index.js';
import {
  RecordingAuth,
  RelayDaemon,
  authConfSource,
  authConfText,
  chainUri,
  neverAnswer,
  removeDir,
  virErrorOf,
  waitForNoClients,
  writeAuthConf,
  xenapiDriverUri,
  xenapiUriVia,
} from './relay-helpers.js';

test("client-disconnect during a relayed credential request cancels it with the administrator's reason on every hop", async (t) => {
  const dir = await tempDir('var');
  t.teardown(() => removeDir(dir));
  // Daemons in this process read LIBVIRT_AUTH_FILE for their own auth.conf: keep the machine's out.
  process.env.LIBVIRT_AUTH_FILE = await writeAuthConf(dir, 'empty-auth.conf', '');
  const xen = await startXenApiServer({ users: { root: 'xen-root-secret' } });
  t.teardown(() => xen.close());
  const b = await RelayDaemon.start({
    name: 'virtauthd-B',
    dir,
    users: { 'hop-a': 'hop-secret' },
    allowedUris: [xenapiDriverUri(xen.port)],
  });
  t.teardown(() => b.stop());
  const aAuthConf = await writeAuthConf(
    dir,
    'a-auth.conf',
    authConfText([{ service: 'libvirt', host: 'localhost', username: 'hop-a', password: 'hop-secret' }]),
  );
  const innerUri = xenapiUriVia(b.socket, xen.port);
  const a = await RelayDaemon.start({
    name: 'virtauthd-A',
    dir,
    users: { alice: 'alice-secret' },
    authConfPath: aAuthConf,
    adminSocket: join(dir, 'A-admin-sock'),
    allowedUris: [innerUri],
  });
  t.teardown(() => a.stop());
  const clientAuthConf = await writeAuthConf(
    dir,
    'client-auth.conf',
    authConfText([{ service: 'libvirt', host: 'localhost', username: 'alice', password: 'alice-secret' }]),
  );

  let markAsked!: () => void;
  const asked = new Promise<void>((resolve) => (markAsked = resolve));
  const waitForever = neverAnswer();
  const auth = new RecordingAuth([CredentialType.AUTHNAME, CredentialType.PASSPHRASE], (creds, info) => {
    markAsked();
    return waitForever(creds, info);
  });
  const opening = virErrorOf(
    openAuth(chainUri(a.socket, innerUri), auth, 0, { credentialSources: [await authConfSource(clientAuthConf)] }),
  );
  // An open that ends before asking (refused, misrouted) fails the test instead of hanging it.
  await Promise.race([asked, opening.then((e) => Promise.reject(new Error(`the open ended before the credential request: ${e.message}`)))]);

  const adm = await openAdmin(`virtauthd:///system?socket=${a.handle.admin!.path}`);
  t.teardown(() => adm.close());
  const { clients } = await adm.client.serverListClients({ srv: { name: 'virtauthd' }, need_results: 1, flags: 0 });
  t.is(clients.length, 1);
  const clnt = clients[0]!;
  const info = paramsObject((await adm.client.clientGetInfo({ clnt, flags: 0 })).params);
  t.like(info, {
    readonly: false,
    sasl_user_name: 'alice',
    virtauth_auth_method: 'sasl',
    virtauth_relay_active: true,
    virtauth_upstream_uri: innerUri,
  });

  const auditsBefore = a.audits().length;
  await adm.client.clientClose({ clnt, flags: 0 });
  const e = await opening;
  t.not(e.code, ErrorCode.OK);
  t.true(auth.calls[0]!.signal!.aborted, 'the callback was told to stop waiting');
  const record = await whenEmitted(
    a.log,
    ['lines'],
    () => a.audits().slice(auditsBefore)[0],
    30_000,
    "A's audit record of the withdrawn request",
  );
  t.is(record.outcome, 'CANCELLED');
  t.regex(String(record.message), new RegExp(`operation aborted: client ${clnt.id} disconnected by an administrator`));
  t.deepEqual(
    a.log.events('client.disconnected').map((r) => r['reason']),
    [`operation aborted: client ${clnt.id} disconnected by an administrator (virt-admin client-disconnect)`],
  );
  // B's driver was waiting for the same request through A: its wait ends too.
  const recordB = await whenEmitted(b.log, ['lines'], () => b.audits()[0], 30_000, "B's audit record");
  t.is(recordB.outcome, 'CANCELLED');
  await waitForNoClients([a, b]);
  await Promise.allSettled([...auth.running]);
  t.is(auth.running.size, 0);
  // The daemons' logs never carried a secret while all this happened.
  for (const secret of ['alice-secret', 'hop-secret', 'xen-root-secret']) {
    t.false(a.log.lines.join('\n').includes(secret));
    t.false(b.log.lines.join('\n').includes(secret));
  }
});
