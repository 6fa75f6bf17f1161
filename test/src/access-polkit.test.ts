// The polkit access driver: virtauthd asks the real (private) polkitd for libvirt's
// org.libvirt.api.* actions with libvirt's attributes, so a rules file keyed on
// action.lookup("domain_name") decides what virsh may do; the shipped actions file is the one
// the generator writes; clients polkit cannot identify (not on a unix socket) are denied.

import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  connectObject,
  describeObject,
  parseUuid,
  type AccessSubject,
  type ConnectAuth,
} from '@virtauth/core';
import { openAuth } from 'virtauth';
import { PolkitAccessDriver, polkitActionId, polkitActionsXml, type PolkitAuthorityClient } from '@virtauth/providers';

import { HIDDEN, HIDDEN_UUID, VISIBLE, domainXml } from './access-support.js';
import { interopTest, libvirtClientEnv, requireExecutable, setEnvUntilTeardown } from './peers/index.js';
import { PrivatePolkit, ensureUser, runAs } from './peers/polkit.js';
import { startVirtauthd } from './virtauthd-support.js';
import { TestVirtauthd } from './sasl-support.js';
import { TestPki } from './peers/pki.js';

const shippedActions = fileURLToPath(new URL('../../../providers/polkit/org.libvirt.api.policy', import.meta.url));

/**
 * Any domain but the default "test" may be seen and read; only gw* may be started and stopped;
 * defining is open to all.
 */
const RULES = `
polkit.addRule(function (action, subject) {
  if (action.id.indexOf("org.libvirt.api.connect.") === 0) return polkit.Result.YES;
  if (action.id === "org.libvirt.api.domain.write" || action.id === "org.libvirt.api.domain.save") return polkit.Result.YES;
  if (action.id.indexOf("org.libvirt.api.domain.") !== 0 || action.lookup("connect_driver") !== "TEST") return polkit.Result.NO;
  var name = action.lookup("domain_name");
  if (action.id === "org.libvirt.api.domain.getattr" || action.id === "org.libvirt.api.domain.read") return name !== "test" ? polkit.Result.YES : polkit.Result.NO;
  if (action.id === "org.libvirt.api.domain.start" || action.id === "org.libvirt.api.domain.stop") return name.indexOf("gw") === 0 ? polkit.Result.YES : polkit.Result.NO;
  return polkit.Result.NO;
});
`;

test('polkit: the shipped actions file has one action per permission, as the generator writes it', async (t) => {
  const shipped = await readFile(shippedActions, 'utf8');
  t.is(shipped, polkitActionsXml(), 'regenerate providers/polkit/org.libvirt.api.policy with polkitActionsXml()');
  t.is(shipped.match(/<action id=/g)?.length, 105);
  t.true(shipped.includes(`<action id="${polkitActionId('storage_pool', 'search_storage_vols')}">`));
  t.is(polkitActionId('storage_pool', 'search_storage_vols'), 'org.libvirt.api.storage-pool.search-storage-vols');
  t.regex(shipped, /<action id="org\.libvirt\.api\.domain\.getattr">[\s\S]*?<allow_any>yes<\/allow_any>/);
  t.regex(shipped, /<action id="org\.libvirt\.api\.domain\.start">[\s\S]*?<allow_any>no<\/allow_any>/);
});

test('polkit: clients that are not a unix process are denied without asking polkit, as libvirt does', async (t) => {
  const asked: string[] = [];
  const authority: PolkitAuthorityClient = {
    checkAuthorization: async (_subject, action) => {
      asked.push(action);
      return { isAuthorized: true, isChallenge: false, details: {} };
    },
    close() {},
  };
  const driver = new PolkitAccessDriver({ authority, log: { info() {}, warn() {}, error() {}, debug() {} } });
  const subject = (transport: 'tcp' | 'tls' | 'unix', unix: boolean): AccessSubject => ({
    identity: {
      username: 'alice',
      method: 'sasl',
      ...(unix ? { unix: { uid: 1000, gid: 1000, groups: [], pid: 4242, processStartTime: 77n } } : {}),
    },
    transport,
    readOnly: false,
    connectDriver: 'TEST',
    connectionId: 1,
  });
  const dom = describeObject('domain', { name: 'gw-1', uuid: parseUuid(HIDDEN_UUID), id: 1 }, 'TEST')!;
  t.false(await driver.check({ subject: subject('tls', false), object: dom, permission: 'start' }));
  t.false(await driver.check({ subject: subject('tcp', false), object: connectObject('TEST'), permission: 'getattr' }));
  t.deepEqual(asked, []);
  t.true(await driver.check({ subject: subject('unix', true), object: dom, permission: 'start' }));
  t.deepEqual(asked, ['org.libvirt.api.domain.start']);
});

interopTest.serial(
  'polkit: a rules file keyed on action.lookup("domain_name") decides what virsh may do through virtauthd',
  ['root', 'polkitd', 'pkcheck', 'dbus-daemon', 'unshare', 'setpriv', 'virsh'],
  async (t) => {
    const polkit = await PrivatePolkit.start({
      actions: { 'org.libvirt.api.policy': await readFile(shippedActions, 'utf8') },
      rules: RULES,
    });
    t.teardown(() => polkit.stop());
    setEnvUntilTeardown(t, 'DBUS_SYSTEM_BUS_ADDRESS', polkit.busAddress);
    const daemon = await startVirtauthd(t, { extra: new Map([['access_drivers', ['polkit']]]) });
    // polkit answers yes to root whatever the rules say: the client runs as an ordinary user.
    const account = await ensureUser('vacl-user');
    await chmod(daemon.dir, 0o755);
    await chmod(daemon.rwSocket, 0o777);
    const home = join(daemon.dir, 'home');
    await mkdir(home, { mode: 0o777 });
    const env = libvirtClientEnv({
      HOME: home,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_CACHE_HOME: join(home, '.cache'),
      XDG_RUNTIME_DIR: home,
      USER: account.name,
      LOGNAME: account.name,
    });
    const virsh = (args: string[]) =>
      runAs(account, requireExecutable('virsh', 'libvirt-clients'), ['-c', daemon.uri(), ...args], { env, timeoutMs: 30_000 });

    for (const [name, uuid] of [
      [VISIBLE, '3a0c9a52-6a8e-4b7e-9a41-0f5e2d7c1b11'],
      [HIDDEN, HIDDEN_UUID],
    ] as const) {
      const file = join(daemon.dir, `${name}.xml`);
      await writeFile(file, domainXml(name, uuid), { mode: 0o644 });
      const defined = await virsh(['define', file]);
      t.is(defined.code, 0, defined.stderr);
    }
    const matrix: Record<string, { code: number; denied: boolean }> = {};
    for (const [label, args] of [
      ['start gw', ['start', VISIBLE]],
      ['start hidden', ['start', HIDDEN]],
      ['dominfo gw', ['dominfo', VISIBLE]],
      ['destroy gw', ['destroy', VISIBLE]],
      ['destroy test', ['destroy', 'test']],
    ] as const) {
      const r = await virsh([...args]);
      matrix[label] = { code: r.code ?? -1, denied: /access denied/.test(r.stderr) };
    }
    t.deepEqual(matrix, {
      'start gw': { code: 0, denied: false },
      'start hidden': { code: 1, denied: true },
      'dominfo gw': { code: 0, denied: false },
      'destroy gw': { code: 0, denied: false },
      // virsh would find 'test' only through a lookup the rules deny.
      'destroy test': { code: 1, denied: false },
    });
    const list = await virsh(['list', '--all', '--name']);
    t.deepEqual(
      list.stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .sort(),
      [HIDDEN, VISIBLE],
      'list --all shows only what domain.getattr allows',
    );
  },
);

interopTest.serial('polkit: a TLS client is refused at open, since polkit cannot identify a remote process', ['certtool'], async (t) => {
  const pki = await TestPki.create();
  t.teardown(() => pki.remove());
  const daemon = await TestVirtauthd.start({
    users: { alice: 'alice-pw-3c9d' },
    listenTls: true,
    pki,
    settings: { access_drivers: ['polkit'] },
  });
  t.teardown(() => daemon.stop());
  const auth: ConnectAuth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? 'alice' : 'alice-pw-3c9d';
    },
  };
  const error = await openAuth(daemon.uri('tls'), auth).then(
    () => null,
    (e: unknown) => e,
  );
  t.like(error, { code: ErrorCode.ACCESS_DENIED, domain: ErrorDomain.ACCESS, message: 'access denied' });
  t.like(daemon.events('access.denied').at(-1), {
    user: 'alice',
    transport: 'tls',
    procedure: 'CONNECT_OPEN',
    permission: 'getattr',
    driver: 'polkit',
  });
});
