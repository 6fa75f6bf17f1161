// A third party's plugin package (examples/plugin-hmac-auth, outside the workspaces) proven end to
// end: virtauthd loads it because its config file says so, a socket requires the plugin's own
// `hmac` scheme, another offers the plugin's SASL mechanism, and the virtauth client library with
// the plugin registered picks each without being told. A second plugin supplies USER_DATABASE.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { chmod, copyFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import test, { type ExecutionContext } from 'ava';
import type { DependencyContainer } from 'tsyringe';

import { AUTH_PROVIDER, ErrorCode, ErrorDomain, OpenFlag, SASL_MECHANISM, VirError, xdr, type ConnectAuth } from '@virtauth/core';
import { createDaemon, createLogger, loadConfig } from '@virtauth/daemon';
import { createClientContainer, openAuth } from 'virtauth';

import { runProcess } from './peers/process.js';
import { RawClient } from './sasl-test-helpers.js';
import { tempDir } from './peers/util.js';

const daemonMain = fileURLToPath(new URL('../../../daemon/dist/src/main.js', import.meta.url));
const hmacPlugin = fileURLToPath(new URL('../../../examples/plugin-hmac-auth/dist/index.js', import.meta.url));
const memoryUsersPlugin = fileURLToPath(new URL('./fixtures/memory-users-plugin.js', import.meta.url));

interface HmacPluginModule {
  registerClient(container: DependencyContainer): void;
  HMAC_AUTH_TYPE: number;
}
const plugin = (await import(pathToFileURL(hmacPlugin).href)) as HmacPluginModule;

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const aliceKey = randomBytes(32).toString('base64');
const carolPassword = 'carol-Pa55-4f1e';

function answering(user: string, secret: string): ConnectAuth {
  return {
    credTypes: [2, 5],
    callback: async (creds) => {
      for (const c of creds) c.result = c.type === 2 ? user : c.type === 5 ? secret : null;
      return true;
    },
  };
}

interface RunningDaemon {
  uris: Map<string, string>;
  output: () => string;
}

type Setting = string | number | readonly string[];

async function writeConfig(dir: string, settings: Record<string, Setting>): Promise<string> {
  const file = join(dir, 'virtauthd.conf');
  const value = (v: Setting) =>
    typeof v === 'number' ? String(v) : typeof v === 'string' ? `"${v}"` : `[${v.map((s) => `"${s}"`).join(', ')}]`;
  await writeFile(
    file,
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${value(v)}\n`)
      .join(''),
  );
  return file;
}

async function pluginSetup(t: ExecutionContext): Promise<{ dir: string; settings: Record<string, Setting> }> {
  const dir = await tempDir('vp');
  const keyFile = join(dir, 'hmac-keys.json');
  await writeFile(keyFile, JSON.stringify({ alice: aliceKey }), { mode: 0o600 });
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return {
    dir,
    settings: {
      unix_sock_dir: dir,
      plugins: [hmacPlugin, memoryUsersPlugin],
      auth_unix_rw: 'hmac',
      auth_unix_ro: 'sasl',
      sasl_mech_list: ['SCRAM-SHA-256', 'HMAC-SHA-256'],
      sasl_user_db: join(dir, 'users.json'),
      sasl_failure_delay_ms: 0,
      hmac_key_file: keyFile,
      memory_users: [`carol:${carolPassword}`],
      log_level: 2,
    },
  };
}

/** virtauthd as its operator runs it: the compiled program and a config file. */
async function startDaemon(t: ExecutionContext, configFile: string): Promise<RunningDaemon> {
  const child: ChildProcess = spawn(process.execPath, [daemonMain, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  const uris = await new Promise<Map<string, string>>((resolve, reject) => {
    const found = new Map<string, string>();
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      for (const m of output.matchAll(/listening on unix (\S+) \(auth (\w+)(, read-only)?\): virsh -c '([^']+)'/g))
        found.set(m[3] ? 'ro' : 'rw', `${m[2]} ${m[4]}`);
      if (found.size === 2) resolve(found);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`virtauthd exited with ${code} before listening:\n${output}`)));
  });
  return { uris, output: () => output };
}

function uriOf(daemon: RunningDaemon, which: 'rw' | 'ro', scheme: string): string {
  const [auth, uri] = daemon.uris.get(which)!.split(' ');
  if (auth !== scheme) throw new Error(`the ${which} socket requires ${auth}, not ${scheme}`);
  return uri!;
}

async function connect(t: ExecutionContext, uri: string): Promise<RawClient> {
  const client = await RawClient.connect(uri);
  t.teardown(() => client.rpc.close(null));
  return client;
}

function clientWithPlugin(): DependencyContainer {
  const container = createClientContainer();
  plugin.registerClient(container);
  return container;
}

test('virtauthd loads the plugins its config names; the client picks their scheme and mechanism on its own', async (t) => {
  const { dir, settings } = await pluginSetup(t);
  const daemon = await startDaemon(t, await writeConfig(dir, settings));
  const container = clientWithPlugin();

  // The read-write socket requires only the plugin's scheme: the client chooses it by priority.
  const viaScheme = await openAuth(uriOf(daemon, 'rw', 'hmac'), answering('alice', aliceKey), 0, { container });
  t.is(await viaScheme.getType(), 'TEST');
  await viaScheme.close();

  // The SASL socket offers SCRAM-SHA-256 first, yet the client prefers the plugin's mechanism.
  const viaMechanism = await openAuth(uriOf(daemon, 'ro', 'sasl'), answering('alice', aliceKey), OpenFlag.READ_ONLY, { container });
  t.is(await viaMechanism.getType(), 'TEST');
  await viaMechanism.close();

  // SCRAM still works, against the USER_DATABASE the second plugin supplied (the file one is empty).
  const viaScram = await openAuth(
    `${uriOf(daemon, 'ro', 'sasl')}&auth=sasl.SCRAM-SHA-256`,
    answering('carol', carolPassword),
    OpenFlag.READ_ONLY,
    { container },
  );
  t.is(await viaScram.getType(), 'TEST');
  await viaScram.close();

  const log = daemon.output();
  t.regex(log, /"event":"auth\.hmac\.succeeded"[^\n]*"user":"alice"/);
  t.regex(log, /"event":"auth\.sasl\.succeeded"[^\n]*"mechanism":"HMAC-SHA-256"[^\n]*"user":"alice"/);
  t.regex(log, /"event":"auth\.sasl\.succeeded"[^\n]*"mechanism":"SCRAM-SHA-256"[^\n]*"user":"carol"/);
  t.false(log.includes(aliceKey), 'the shared key never reaches the log');
  t.false(log.includes(carolPassword), 'the password never reaches the log');
});

test("a wrong key, an unknown user and a client without the plugin are refused with libvirt's errors", async (t) => {
  const { dir, settings } = await pluginSetup(t);
  const daemon = await startDaemon(t, await writeConfig(dir, settings));
  const container = clientWithPlugin();
  const otherKey = randomBytes(32).toString('base64');
  const refusal = { instanceOf: VirError, message: /authentication failed/ };

  const wrongKey = await t.throwsAsync(openAuth(uriOf(daemon, 'rw', 'hmac'), answering('alice', otherKey), 0, { container }), refusal);
  t.like(wrongKey, { code: ErrorCode.AUTH_FAILED, domain: ErrorDomain.RPC });
  await t.throwsAsync(openAuth(uriOf(daemon, 'rw', 'hmac'), answering('mallory', aliceKey), 0, { container }), refusal);
  const wrongMech = await t.throwsAsync(
    openAuth(uriOf(daemon, 'ro', 'sasl'), answering('alice', otherKey), OpenFlag.READ_ONLY, { container }),
    refusal,
  );
  t.like(wrongMech, { code: ErrorCode.AUTH_FAILED });

  // A key that is not base64 of 32 bytes is refused by the client before anything is sent.
  await t.throwsAsync(openAuth(uriOf(daemon, 'rw', 'hmac'), answering('alice', 'c2hvcnQ='), 0, { container }), {
    message: /must be base64 of at least 32 bytes/,
  });

  // The shipped client alone does not know the scheme: it says which type it was offered.
  const plain = createClientContainer();
  t.false(plain.resolveAll(AUTH_PROVIDER).some((p) => p.name === 'hmac'));
  await t.throwsAsync(openAuth(uriOf(daemon, 'rw', 'hmac'), answering('alice', aliceKey), 0, { container: plain }), {
    message: new RegExp(`unsupported authentication type ${plugin.HMAC_AUTH_TYPE}`),
  });
  t.false(daemon.output().includes(otherKey));
});

/** createDaemon's refusal for a config file, as virtauthd would print it. */
async function refusal(t: ExecutionContext, dir: string, settings: Record<string, Setting>): Promise<string> {
  const config = loadConfig(await writeConfig(dir, settings));
  const error = await t.throwsAsync(
    createDaemon({ config, logger: createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream) }),
    { instanceOf: VirError },
  );
  t.is(error!.code, ErrorCode.CONF_SYNTAX);
  return error!.message;
}

test('a misconfigured plugin stops the daemon with a message that names the setting', async (t) => {
  const { dir, settings } = await pluginSetup(t);
  const conf = join(dir, 'virtauthd.conf');

  const { hmac_key_file: _, ...noKeyFile } = settings;
  t.regex(await refusal(t, dir, noKeyFile), /hmac_key_file: is required by virtauth-plugin-hmac/);
  // virtauthd itself prints the one line and exits.
  const run = await runProcess(process.execPath, [daemonMain, '--config', conf], { timeoutMs: 30_000 });
  t.is(run.code, 1);
  t.is(
    run.stderr,
    'virtauthd: configuration file syntax error: hmac_key_file: is required by virtauth-plugin-hmac (a "path" to the JSON file of shared keys)\n',
  );

  t.regex(
    await refusal(t, dir, { unix_sock_dir: dir, auth_unix_rw: 'hmac' }),
    new RegExp(
      `${escape(conf)}:2: auth_unix_rw: unknown authentication scheme 'hmac' \\(registered: none, sasl, polkit; a plugin's scheme needs the plugin in plugins\\)`,
    ),
  );

  t.regex(
    await refusal(t, dir, { ...settings, plugins: [join(dir, 'missing.js')] }),
    new RegExp(`${escape(conf)}:\\d+: plugins: cannot read '${escape(dir)}/missing\\.js': ENOENT`),
  );
  t.regex(
    await refusal(t, dir, { ...settings, plugins: ['node:child_process'] }),
    /plugins: 'node:child_process' is neither a package name nor a file path/,
  );
  t.regex(
    await refusal(t, dir, { ...settings, plugins: ['virtauth-plugin-not-installed'] }),
    /plugins: cannot find the package 'virtauth-plugin-not-installed'/,
  );
  // A package name is resolved from virtauthd's installation: this one is found, but is no plugin.
  t.regex(
    await refusal(t, dir, { ...settings, plugins: ['@virtauth/drivers'] }),
    /plugins: '@virtauth\/drivers' exports no register\(container, settings\) function/,
  );
  t.regex(
    await refusal(t, dir, { ...settings, plugins: ['./relative.js'] }),
    new RegExp(`cannot read '${escape(dir)}/relative\\.js'`),
    'a relative path is relative to the config file',
  );

  const noRegister = join(dir, 'no-register.mjs');
  await writeFile(noRegister, 'export const name = "nothing";\n');
  t.regex(
    await refusal(t, dir, { ...settings, plugins: [noRegister] }),
    /plugins: '.*no-register\.mjs' exports no register\(container, settings\) function/,
  );

  const writable = join(dir, 'writable.js');
  await copyFile(hmacPlugin, writable);
  await chmod(writable, 0o666);
  t.regex(await refusal(t, dir, { ...settings, plugins: [writable] }), /is writable by every user; refusing to load it/);

  const keys = String(settings.hmac_key_file);
  await chmod(keys, 0o644);
  t.regex(await refusal(t, dir, settings), /hmac_key_file: .* is readable by other users; chmod 600 it/);
  await chmod(keys, 0o600);
  await writeFile(keys, JSON.stringify({ alice: 'c2hvcnQ=' }), { mode: 0o600 });
  const short = await refusal(t, dir, settings);
  t.regex(short, /the key of 'alice' must be base64 of at least 32 bytes/);
  t.false(short.includes('c2hvcnQ='), 'the message never quotes a key');

  // The plugin's keys are declared: a typo next to them is still caught.
  await writeFile(keys, JSON.stringify({ alice: aliceKey }), { mode: 0o600 });
  t.regex(await refusal(t, dir, { ...settings, hmac_keyfile: 'x' }), /unknown setting 'hmac_keyfile' \(did you mean 'hmac_key_file'\?\)/);
});

test('a daemon without plugins still refuses a scheme name nobody registered, and maps the shipped ones', async (t) => {
  const dir = await tempDir('vp');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const conf = join(dir, 'virtauthd.conf');
  t.regex(
    await refusal(t, dir, { unix_sock_dir: dir, auth_unix_ro: 'kerberos' }),
    new RegExp(`${escape(conf)}:2: auth_unix_ro: unknown authentication scheme 'kerberos'`),
  );
  const daemon = await createDaemon({
    config: loadConfig(
      await writeConfig(dir, { unix_sock_dir: dir, auth_unix_rw: 'polkit', auth_unix_ro: 'sasl', sasl_user_db: join(dir, 'u.json') }),
    ),
    logger: createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream),
  });
  t.teardown(() => daemon.stop());
  t.deepEqual(
    daemon.listeners.map((l) => l.auth),
    [2, 1],
  );
  t.true(daemon.container.resolveAll(SASL_MECHANISM).every((m) => m.name !== 'HMAC-SHA-256'));
});

test("hostile clients of the plugin's scheme: no proof without a fresh nonce, malformed proofs, three strikes", async (t) => {
  const { dir, settings } = await pluginSetup(t);
  const daemon = await createDaemon({
    config: loadConfig(await writeConfig(dir, settings)),
    logger: createLogger(4, { write: () => true } as unknown as NodeJS.WritableStream),
  });
  t.teardown(() => daemon.stop());
  const uriOfSocket = (readOnly: boolean) => daemon.listeners.find((l) => l.kind === 'unix' && l.readOnly === readOnly)!.uri;
  const challengeRet = xdr.struct({ nonce: xdr.fixedOpaque(32) });
  const proveArgs = xdr.struct({ user: xdr.string(), proof: xdr.fixedOpaque(32) });
  const shortProveArgs = xdr.struct({ user: xdr.string(), proof: xdr.fixedOpaque(5) });
  const proofFor = (nonce: Buffer, user: string, key = aliceKey) =>
    createHmac('sha256', Buffer.from(key, 'base64'))
      .update(Buffer.concat([Buffer.from('virtauth-plugin-hmac scheme\0'), nonce, Buffer.from(`\0${user}`)]))
      .digest();
  const refused = { instanceOf: VirError, message: /authentication failed/ };
  const [CHALLENGE, PROVE] = [0x484d0001, 0x484d0002];

  // A proof with no challenge, a replayed one, then a third strike closes the connection.
  const rpc = await connect(t, uriOfSocket(false));
  const first = await rpc.call(CHALLENGE, xdr.xvoid, undefined, challengeRet);
  await t.throwsAsync(rpc.call(PROVE, proveArgs, { user: 'alice', proof: randomBytes(32) }, xdr.xvoid), refused);
  await t.throwsAsync(
    rpc.call(PROVE, proveArgs, { user: 'alice', proof: proofFor(first.nonce, 'alice') }, xdr.xvoid),
    refused,
    'a nonce serves one proof only',
  );
  await t.throwsAsync(rpc.call(PROVE, proveArgs, { user: '../../etc', proof: Buffer.alloc(32) }, xdr.xvoid), refused);
  const reason = await rpc.rpc.whenClosed();
  t.regex(reason?.message ?? '', /End of file|Connection closed/, 'the daemon hung up after the third failure');

  // A proof of the wrong length never reaches the key check; the connection answers, then still works.
  const rpc2 = await connect(t, uriOfSocket(false));
  await rpc2.call(CHALLENGE, xdr.xvoid, undefined, challengeRet);
  await t.throwsAsync(rpc2.call(PROVE, shortProveArgs, { user: 'alice', proof: Buffer.alloc(5) }, xdr.xvoid), { instanceOf: VirError });
  const { nonce } = await rpc2.call(CHALLENGE, xdr.xvoid, undefined, challengeRet);
  await rpc2.call(PROVE, proveArgs, { user: 'alice', proof: proofFor(nonce, 'alice') }, xdr.xvoid);
  t.deepEqual(await rpc2.authList(), [0], 'authenticated: AUTH_LIST says none is left to do');

  // The scheme's procedures are refused on a socket that requires another scheme.
  const rpc3 = await connect(t, uriOfSocket(true));
  await t.throwsAsync(rpc3.call(CHALLENGE, xdr.xvoid, undefined, challengeRet), refused);
});
