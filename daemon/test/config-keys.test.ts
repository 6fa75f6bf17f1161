// A config key that does nothing must not pass silently: a typo stops the daemon, naming the
// line and the key meant; a libvirtd key virtauthd does not use is named in a warning.

import 'reflect-metadata';
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { container as rootContainer } from 'tsyringe';
import { CONFIG_KEYS, ErrorCode, VirError, type ConfValue } from '@virtauth/core';
import {
  OAUTHBEARER_CONFIG_KEYS,
  POLKIT_CONFIG_KEYS,
  SASL_CONFIG_KEYS,
  oauthBearerSettingsFrom,
  polkitSettingsFrom,
  saslSettingsFrom,
} from '@virtauth/providers';
import { JsonSink } from './helpers.js';
import { DAEMON_CONFIG_KEYS, LIBVIRTD_CONFIG_KEYS, buildConfig, createDaemon, createLogger, loadConfig } from '../src/index.js';

async function configFile(t: import('ava').ExecutionContext, body: (dir: string) => string): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'va-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'virtauthd.conf');
  await writeFile(file, body(dir));
  return { dir, file };
}

async function start(t: import('ava').ExecutionContext, file: string, container = rootContainer.createChildContainer()) {
  const log = new JsonSink();
  const daemon = await createDaemon({ config: loadConfig(file), container, logger: createLogger(3, log) });
  t.teardown(() => daemon.stop());
  return log;
}

test('a key neither virtauthd nor libvirtd knows stops the daemon with its line and the nearest known key', async (t) => {
  const { file } = await configFile(t, (dir) => `unix_sock_dir = "${dir}"\n# a comment\nauth_unixrw = "sasl"\n`);
  const e = await t.throwsAsync(start(t, file), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.CONF_SYNTAX);
  t.is(e!.message, `configuration file syntax error: ${file}:3: unknown setting 'auth_unixrw' (did you mean 'auth_unix_rw'?)`);

  const plugin = await configFile(t, (dir) => `unix_sock_dir = "${dir}"\nsasl_mechlist = [ "SCRAM-SHA-256" ]\n`);
  const e2 = await t.throwsAsync(start(t, plugin.file), { instanceOf: VirError });
  t.regex(e2!.message, /:2: unknown setting 'sasl_mechlist' \(did you mean 'sasl_mech_list'\?\)$/);
});

test('libvirtd keys virtauthd does not use start the daemon with one warning naming them', async (t) => {
  const { file } = await configFile(
    t,
    (dir) => `unix_sock_dir = "${dir}"\nmax_workers = 20\nhost_uuid_source = "smbios"\nauth_unix_rw = "none"\n`,
  );
  const log = await start(t, file);
  const warnings = log.events('config.unused');
  t.is(warnings.length, 1);
  t.deepEqual(warnings[0]!.keys, ['max_workers', 'host_uuid_source']);
  t.regex(warnings[0]!.msg as string, /max_workers, host_uuid_source/);
});

test("keys a plugin declares are accepted: the shipped providers' and a third party's", async (t) => {
  const { file } = await configFile(
    t,
    (dir) =>
      `unix_sock_dir = "${dir}"\nsasl_mech_list = [ "SCRAM-SHA-256" ]\nsasl_user_db = "${dir}/users.json"\npolkit_action_ro = "org.example.ro"\n` +
      `oauth_issuer = "https://idp.example"\noauth_audience = "virtauthd"\nacme_widget_level = 3\n`,
  );
  const container = rootContainer.createChildContainer();
  container.register(CONFIG_KEYS, { useValue: { owner: 'acme', keys: ['acme_widget_level'] } });
  const log = await start(t, file, container);
  t.deepEqual(log.events('config.unused'), []);
});

test('every key the daemon lists as its own is read by buildConfig', (t) => {
  for (const key of DAEMON_CONFIG_KEYS) {
    // A value of the wrong type is either refused naming the key, or taken: never left over.
    try {
      t.false(buildConfig(new Map<string, ConfValue>([[key, []]])).extra.has(key), key);
    } catch (e) {
      t.regex((e as Error).message, new RegExp(`\\b${key}\\b`), key);
    }
  }
  t.true(LIBVIRTD_CONFIG_KEYS.has('unix_sock_group'));
  t.is(LIBVIRTD_CONFIG_KEYS.size, 51, 'libvirt 9.0 libvirtd.conf has 51 keys');
});

/** The keys a settings reader asks for, whatever it does with them. */
function keysRead(read: (settings: ReadonlyMap<string, ConfValue>) => unknown, base: Record<string, ConfValue>): string[] {
  const asked = new Set<string>();
  const settings = new Map(Object.entries(base));
  const spy = new Proxy(settings, {
    get(target, prop, receiver) {
      if (prop === 'get' || prop === 'has') return (key: string) => (asked.add(key), prop === 'get' ? target.get(key) : target.has(key));
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  read(spy);
  return [...asked];
}

test('each provider declares every key its settings reader reads', (t) => {
  const cases: [string, (s: ReadonlyMap<string, ConfValue>) => unknown, Record<string, ConfValue>, readonly string[]][] = [
    ['sasl', saslSettingsFrom, {}, SASL_CONFIG_KEYS.keys],
    ['polkit', polkitSettingsFrom, {}, POLKIT_CONFIG_KEYS.keys],
    [
      'oauthbearer',
      oauthBearerSettingsFrom,
      { oauth_issuer: 'https://idp.example', oauth_audience: 'a', oauth_client_id: 'c' },
      OAUTHBEARER_CONFIG_KEYS.keys,
    ],
  ];
  for (const [owner, read, base, declared] of cases) {
    const undeclared = keysRead(read, base).filter((k) => !declared.includes(k));
    t.deepEqual(undeclared, [], `${owner} reads keys it does not declare`);
  }
});
