// The SSH transports against a real OpenSSH server (a private sshd on a loopback port): our
// client over +libssh and +ssh through sshd, then virt-ssh-helper or nc, to a real libvirtd and
// to virtauthd; every question through the callback or auth.conf; host keys unknown, known,
// hashed and changed; wrong passwords; real virsh over both transports; the relay over an SSH
// upstream.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import test from 'ava';
import { container as rootContainer } from 'tsyringe';

import { AuthType, CredentialType, ErrorCode, ErrorDomain, type ConfValue, type Credential, type TransportInfo } from '@virtauth/core';
import { buildConfig, createDaemon, createLogger, type DaemonHandle } from '@virtauth/daemon';
import { openAuth, type Connection } from 'virtauth';

import {
  interopTest,
  PrivateLibvirtd,
  PrivateSshd,
  describeResult,
  runProcess,
  runVirsh,
  sshKeygen,
  tempDir,
  waitFor,
} from './peers/index.js';
import { JsonLines } from './log-capture.js';
import { RecordingAuth, authConfSource, chainUri, virErrorOf } from './relay-helpers.js';

const PASSWORD_USER = { name: 'vssh-pw', method: 'password', password: 'pw-Secret-1' } as const;
const KEYBOARD_USER = { name: 'vssh-kbd', method: 'keyboard-interactive', password: 'kb-Secret-2' } as const;
const KEY_USER = { name: 'vssh-key', method: 'publickey' } as const;

interface SshWorld {
  dir: string;
  sshd: PrivateSshd;
  libvirtd: PrivateLibvirtd;
  virtauthd: DaemonHandle;
  virtauthSocket: string;
  log: JsonLines;
  /** What virtauthd's remote driver may open over SSH (uri_allowed_list), with the known_hosts each uses. */
  upstreams: { accepting: string; acceptingKnownHosts: string; refusing: string; refusingKnownHosts: string };
}

let world: Promise<SshWorld> | undefined;
let fileCounter = 0;

/** sshd, a private libvirtd behind it at libvirt's default path, and virtauthd: started once. */
function sshWorld(): Promise<SshWorld> {
  world ??= (async () => {
    const dir = await tempDir('vsshw');
    await chmod(dir, 0o755);
    const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
    const sshd = await PrivateSshd.start({
      users: [PASSWORD_USER, KEYBOARD_USER, KEY_USER],
      rootByKey: true,
      runLibvirtDir: dirname(libvirtd.rwSocket),
      maxAuthTries: 10,
    });
    const log = new JsonLines();
    const virtauthSocket = join(dir, 'virtauth-sock');
    // The relay test's upstreams: the daemon opens only URIs its operator wrote out in full.
    const acceptingKnownHosts = join(dir, 'daemon_known_hosts');
    const refusingKnownHosts = join(dir, 'daemon_known_hosts_refused');
    const upstreams = {
      accepting: sshUri(sshd.port, virtauthSocket, PASSWORD_USER.name, `known_hosts=${acceptingKnownHosts}`),
      acceptingKnownHosts,
      refusing: sshUri(sshd.port, virtauthSocket, PASSWORD_USER.name, `known_hosts=${refusingKnownHosts}`),
      refusingKnownHosts,
    };
    const config = buildConfig(
      new Map<string, ConfValue>([
        ['log_level', 2],
        ['daemon_name', 'virtauthd-ssh'],
        ['uri_allowed_list', ['test:///default', upstreams.accepting, upstreams.refusing]],
      ]),
      'ssh-test.conf',
    );
    const virtauthd = await createDaemon({
      config,
      container: rootContainer.createChildContainer(),
      logger: createLogger(config.logLevel, log),
      // The SSH test users reach it through nc: a socket anyone may open, auth none.
      listeners: [{ kind: 'unix', path: virtauthSocket, auth: AuthType.NONE, readOnly: false, perms: 0o666 }],
    });
    return { dir, sshd, libvirtd, virtauthd, virtauthSocket, log, upstreams };
  })();
  return world;
}

test.after.always(async () => {
  if (!world) return;
  const w = await world.catch(() => undefined);
  if (!w) return;
  await Promise.allSettled([w.sshd.stop(), w.libvirtd.stop(), w.virtauthd.stop()]);
});

/** A fresh known_hosts path in the world's directory (not created). */
function freshPath(w: SshWorld, name: string): string {
  fileCounter += 1;
  return join(w.dir, `${name}-${fileCounter}`);
}

async function knownHostsWithServer(w: SshWorld): Promise<string> {
  const path = freshPath(w, 'known_hosts');
  await writeFile(path, `${w.sshd.knownHostsLine()}\n`);
  return path;
}

/** +libssh through sshd, then nc, to virtauthd's socket. */
function sshUri(port: number, socket: string, user: string, query: string): string {
  return `test+libssh://${user}@127.0.0.1:${port}/default?proxy=netcat&socket=${socket}${query ? `&${query}` : ''}`;
}

function virtauthUri(w: SshWorld, user: string, query: string): string {
  return sshUri(w.sshd.port, w.virtauthSocket, user, query);
}

const ECHO_AND_SECRET = [CredentialType.PASSPHRASE, CredentialType.ECHOPROMPT, CredentialType.NOECHOPROMPT] as const;

/** Answers host-key questions with `hostKeyAnswer` and secrets with `secret`. */
function answering(secret: string, hostKeyAnswer = 'y'): RecordingAuth {
  return new RecordingAuth([...ECHO_AND_SECRET], (creds: Credential[]) => {
    for (const c of creds) c.result = c.type === CredentialType.ECHOPROMPT ? hostKeyAnswer : secret;
  });
}

async function hostnameAndClose(conn: Connection): Promise<string> {
  try {
    return await conn.getHostname();
  } finally {
    await conn.close();
  }
}

const SSH_PEERS = ['sshd', 'libvirtd', 'nc', 'root'];

interopTest.serial(
  "+libssh: host key and password through the callback with libvirt's texts; a second open shares the login",
  SSH_PEERS,
  async (t) => {
    const w = await sshWorld();
    const knownHosts = freshPath(w, 'known_hosts');
    const auth = answering(PASSWORD_USER.password);
    const uri = virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}`);
    const loginsBefore = w.sshd.acceptedLogins(PASSWORD_USER.name);
    const first = await openAuth(uri, auth);
    const second = await openAuth(uri, auth);
    t.is(await second.getHostname(), await first.getHostname());
    t.is(w.sshd.acceptedLogins(PASSWORD_USER.name) - loginsBefore, 1, 'both opens ride on one SSH login');
    t.deepEqual(
      auth.calls.map((c) => c.credentials.map((x) => x.type)),
      [[CredentialType.ECHOPROMPT], [CredentialType.PASSPHRASE]],
    );
    t.regex(
      auth.calls[0]!.credentials[0]!.prompt,
      new RegExp(`^Accept SSH host key with hash '([0-9a-f]{2}:){31}[0-9a-f]{2}' for host '127\\.0\\.0\\.1:${w.sshd.port}' \\(y/n\\)\\?$`),
    );
    t.is(auth.calls[1]!.credentials[0]!.prompt, `Enter ${PASSWORD_USER.name}'s password for 127.0.0.1`);
    t.true(auth.calls.every((c) => c.service === 'ssh' && c.host === '127.0.0.1'));
    t.is(await first.isSecure(), true);
    t.is((await readFile(knownHosts, 'utf8')).trim(), w.sshd.knownHostsLine(), 'the accepted key is stored in OpenSSH format');
    await first.close();
    await second.close();
    // Another callback (another person) never rides on that login: it logs in itself, and the
    // key is known now.
    const other = answering(PASSWORD_USER.password);
    await hostnameAndClose(await openAuth(uri, other));
    t.deepEqual(
      other.calls.map((c) => c.credentials[0]!.type),
      [CredentialType.PASSPHRASE],
    );
    t.is(w.sshd.acceptedLogins(PASSWORD_USER.name) - loginsBefore, 2);
    t.false(w.log.lines.join('\n').includes(PASSWORD_USER.password), 'the password reaches no log');
  },
);

interopTest.serial(
  '+libssh: ten opens started at once with one callback: one login, one host-key question, one password',
  SSH_PEERS,
  async (t) => {
    const w = await sshWorld();
    const auth = answering(PASSWORD_USER.password);
    const uri = virtauthUri(w, PASSWORD_USER.name, `known_hosts=${freshPath(w, 'known_hosts')}`);
    const loginsBefore = w.sshd.acceptedLogins(PASSWORD_USER.name);
    const conns = await Promise.all(Array.from({ length: 10 }, () => openAuth(uri, auth)));
    try {
      const names = await Promise.all(conns.map((c) => c.getHostname()));
      t.is(new Set(names).size, 1);
    } finally {
      await Promise.all(conns.map((c) => c.close()));
    }
    t.is(w.sshd.acceptedLogins(PASSWORD_USER.name) - loginsBefore, 1);
    t.deepEqual(
      auth.calls.map((c) => c.credentials[0]!.type),
      [CredentialType.ECHOPROMPT, CredentialType.PASSPHRASE],
    );
  },
);

interopTest.serial('+libssh: keyboard-interactive (PAM) asks each prompt through the callback', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  const auth = answering(KEYBOARD_USER.password);
  const conn = await openAuth(virtauthUri(w, KEYBOARD_USER.name, `known_hosts=${await knownHostsWithServer(w)}`), auth);
  t.truthy(await hostnameAndClose(conn));
  t.deepEqual(
    auth.calls.map((c) => c.credentials.map(({ type, prompt }) => ({ type, prompt }))),
    [[{ type: CredentialType.PASSPHRASE, prompt: 'Password' }]],
  );
});

interopTest.serial('+libssh: a caller that only takes NOECHOPROMPT gets the password as NOECHOPROMPT', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  const auth = new RecordingAuth([CredentialType.NOECHOPROMPT], (creds) => {
    for (const c of creds) c.result = PASSWORD_USER.password;
  });
  await hostnameAndClose(await openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${await knownHostsWithServer(w)}`), auth));
  t.deepEqual(
    auth.calls.map((c) => c.credentials[0]!.type),
    [CredentialType.NOECHOPROMPT],
  );
});

interopTest.serial(
  '+libssh: auth.conf (service ssh) answers the password and the keyboard-interactive prompt; the callback is never asked',
  SSH_PEERS,
  async (t) => {
    const w = await sshWorld();
    const authConf = freshPath(w, 'auth.conf');
    // One credentials set per host: both users' logins go to 127.0.0.1, so two files.
    for (const [user, path] of [
      [PASSWORD_USER, authConf],
      [KEYBOARD_USER, `${authConf}-kbd`],
    ] as const) {
      await writeFile(path, `[credentials-ssh]\npassword=${user.password}\n\n[auth-ssh-127.0.0.1]\ncredentials=ssh\n`, { mode: 0o600 });
      const nobody = new RecordingAuth([...ECHO_AND_SECRET], () => false);
      const conn = await openAuth(virtauthUri(w, user.name, `known_hosts=${await knownHostsWithServer(w)}`), nobody, 0, {
        credentialSources: [await authConfSource(path)],
      });
      t.truthy(await hostnameAndClose(conn));
      t.is(nobody.calls.length, 0, `${user.name}: answered from auth.conf`);
    }
  },
);

interopTest.serial('+libssh: a wrong password fails with AUTH_FAILED; sshd saw the failures', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  let attempt = 0;
  const auth = new RecordingAuth([...ECHO_AND_SECRET], (creds) => {
    for (const c of creds) c.result = `wrong-${(attempt += 1)}`;
  });
  const error = await virErrorOf(openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${await knownHostsWithServer(w)}`), auth));
  t.is(error.code, ErrorCode.AUTH_FAILED);
  t.is(error.domain, ErrorDomain.LIBSSH);
  t.regex(error.message, /rejected by the server/);
  t.is(auth.calls.length, 3, 'three password prompts, as OpenSSH allows');
  t.regex(w.sshd.log, new RegExp(`Failed password for ${PASSWORD_USER.name}`));

  // A stored answer that the server rejects is not sent again and again.
  const same = answering('always-the-same-wrong');
  const again = await virErrorOf(openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${await knownHostsWithServer(w)}`), same));
  t.is(again.code, ErrorCode.AUTH_FAILED);
  t.regex(again.message, /the same one was given again/);
  t.is(same.calls.length, 2);
});

interopTest.serial('+libssh: unknown host keys under normal (refused, no callback), auto and ignore', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  // normal, answered "n": refused, nothing stored, no password asked.
  const refusing = answering(PASSWORD_USER.password, 'n');
  const knownHosts = freshPath(w, 'known_hosts');
  const refused = await virErrorOf(openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}`), refusing));
  t.is(refused.code, ErrorCode.LIBSSH);
  t.regex(refused.message, /^libssh transport error: SSH host key for '127\.0\.0\.1' \(([0-9a-f]{2}:){31}[0-9a-f]{2}\) was not accepted$/);
  t.is(refusing.calls.length, 1);
  await t.throwsAsync(readFile(knownHosts), { code: 'ENOENT' });

  // normal without any callback: libvirt's error, never a silent accept.
  const noCallback = await virErrorOf(
    openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}`), null, 0, { credentialSources: [] }),
  );
  t.regex(noCallback.message, /No user interaction callback provided: Can't verify the session host key/);

  // auto: accepted and stored without asking.
  const auto = answering(PASSWORD_USER.password);
  await hostnameAndClose(await openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}&known_hosts_verify=auto`), auto));
  t.deepEqual(
    auto.calls.map((c) => c.credentials[0]!.type),
    [CredentialType.PASSPHRASE],
  );
  t.is((await readFile(knownHosts, 'utf8')).trim(), w.sshd.knownHostsLine());

  // ignore: accepted, nothing read or written.
  const ignoredFile = freshPath(w, 'known_hosts');
  const ignore = answering(PASSWORD_USER.password);
  await hostnameAndClose(
    await openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${ignoredFile}&known_hosts_verify=ignore`), ignore),
  );
  t.deepEqual(
    ignore.calls.map((c) => c.credentials[0]!.type),
    [CredentialType.PASSPHRASE],
  );
  await t.throwsAsync(readFile(ignoredFile), { code: 'ENOENT' });
});

interopTest.serial('+libssh: a changed host key is refused before any password is asked, even under auto', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  const otherKey = await sshKeygen(freshPath(w, 'impostor'));
  const knownHosts = freshPath(w, 'known_hosts');
  await writeFile(knownHosts, `# another key for this host\n[127.0.0.1]:${w.sshd.port} ${otherKey.split(' ').slice(0, 2).join(' ')}\n`);
  for (const verify of ['normal', 'auto']) {
    const auth = answering(PASSWORD_USER.password);
    const error = await virErrorOf(
      openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}&known_hosts_verify=${verify}`), auth),
    );
    t.is(error.code, ErrorCode.AUTH_FAILED);
    t.is(error.domain, ErrorDomain.LIBSSH);
    t.true(
      error.message.startsWith(
        `authentication failed: !!! SSH HOST KEY VERIFICATION FAILED !!!: Identity of host '127.0.0.1:${w.sshd.port}' differs from stored identity.`,
      ),
      error.message,
    );
    t.true(error.message.includes(`The key is stored in '${knownHosts}'`));
    t.is(auth.calls.length, 0, `${verify}: nothing asked`);
  }
});

interopTest.serial(
  '+libssh: a hashed known_hosts entry (ssh-keygen -H) is recognised, and names the daemon by its key',
  SSH_PEERS,
  async (t) => {
    const w = await sshWorld();
    const knownHosts = await knownHostsWithServer(w);
    const hashed = await runProcess('ssh-keygen', ['-H', '-f', knownHosts]);
    t.is(hashed.code, 0, describeResult(hashed));
    t.regex(await readFile(knownHosts, 'utf8'), /^\|1\|/);
    const auth = answering(PASSWORD_USER.password);
    const conn = await openAuth(virtauthUri(w, PASSWORD_USER.name, `known_hosts=${knownHosts}`), auth);
    // The connection names the daemon by the host key known_hosts vouched for, in ssh-keygen's form.
    const fingerprint = await runProcess('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(w.sshd.dir, 'host_ed25519.pub')]);
    t.deepEqual((conn as Connection & { transport: TransportInfo }).transport.identity, {
      transport: 'ssh',
      host: '127.0.0.1',
      port: w.sshd.port,
      hostKey: fingerprint.stdout.split(' ')[1],
    });
    await hostnameAndClose(conn);
    t.deepEqual(
      auth.calls.map((c) => c.credentials[0]!.type),
      [CredentialType.PASSPHRASE],
    );
  },
);

interopTest.serial(
  '+libssh: key login (sshauth=privkey) through virt-ssh-helper to a real libvirtd, and through nc to virtauthd',
  [...SSH_PEERS, 'virt-ssh-helper'],
  async (t) => {
    const w = await sshWorld();
    const knownHosts = await knownHostsWithServer(w);
    const nobody = new RecordingAuth([...ECHO_AND_SECRET], () => false);
    // proxy=native: virt-ssh-helper 'test:///default' on the remote finds libvirtd at /run/libvirt/libvirt-sock.
    const viaHelper = await openAuth(
      `test+libssh://root@127.0.0.1:${w.sshd.port}/default?proxy=native&sshauth=privkey&keyfile=${w.sshd.clientKey}&known_hosts=${knownHosts}`,
      nobody,
    );
    try {
      const domains = await viaHelper.listAllDomains(0);
      t.deepEqual(
        domains.map((d) => d.name),
        ['test'],
      );
    } finally {
      await viaHelper.close();
    }
    const viaNetcat = await openAuth(
      virtauthUri(w, KEY_USER.name, `sshauth=privkey&keyfile=${w.sshd.clientKey}&known_hosts=${knownHosts}`),
      nobody,
    );
    t.truthy(await hostnameAndClose(viaNetcat));
    t.is(nobody.calls.length, 0);
  },
);

interopTest.serial('+libssh: sshauth=agent logs in with a key held by ssh-agent, asking nothing', [...SSH_PEERS, 'ssh'], async (t) => {
  const w = await sshWorld();
  const agentSocket = freshPath(w, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: ['ignore', 'ignore', 'pipe'] });
  const previous = process.env.SSH_AUTH_SOCK;
  try {
    await waitFor(() => existsSync(agentSocket), 10_000, 'ssh-agent socket');
    const added = await runProcess('ssh-add', [w.sshd.clientKey], { env: { ...process.env, SSH_AUTH_SOCK: agentSocket } });
    t.is(added.code, 0, describeResult(added));
    process.env.SSH_AUTH_SOCK = agentSocket;
    const loginsBefore = w.sshd.acceptedLogins(KEY_USER.name);
    const nobody = new RecordingAuth([...ECHO_AND_SECRET], () => false);
    const conn = await openAuth(virtauthUri(w, KEY_USER.name, `sshauth=agent&known_hosts=${await knownHostsWithServer(w)}`), nobody);
    t.truthy(await hostnameAndClose(conn));
    t.is(nobody.calls.length, 0);
    t.is(w.sshd.acceptedLogins(KEY_USER.name) - loginsBefore, 1);
  } finally {
    if (previous === undefined) delete process.env.SSH_AUTH_SOCK;
    else process.env.SSH_AUTH_SOCK = previous;
    agent.kill('SIGTERM');
  }
});

interopTest.serial('+libssh: an encrypted key asks its passphrase through the callback', SSH_PEERS, async (t) => {
  const w = await sshWorld();
  const keyDir = freshPath(w, 'keys');
  await mkdir(keyDir);
  const keyPath = join(keyDir, 'id_ed25519');
  const publicKey = await sshKeygen(keyPath, 'ed25519', 'key-passphrase-3');
  await writeFile(join(w.sshd.dir, 'authorized', KEY_USER.name), `${await readFile(`${w.sshd.clientKey}.pub`, 'utf8')}${publicKey}\n`);
  const auth = answering('key-passphrase-3');
  await hostnameAndClose(
    await openAuth(virtauthUri(w, KEY_USER.name, `sshauth=privkey&keyfile=${keyPath}&known_hosts=${await knownHostsWithServer(w)}`), auth),
  );
  t.deepEqual(
    auth.calls.map((c) => c.credentials.map(({ type, prompt }) => ({ type, prompt }))),
    [[{ type: CredentialType.PASSPHRASE, prompt: `Enter passphrase for key '${keyPath}'` }]],
  );
  const wrong = answering('not-the-passphrase');
  const error = await virErrorOf(
    openAuth(virtauthUri(w, KEY_USER.name, `sshauth=privkey&keyfile=${keyPath}&known_hosts=${await knownHostsWithServer(w)}`), wrong),
  );
  t.is(error.code, ErrorCode.AUTH_FAILED);
  t.regex(error.message, /wrong passphrase\?/);
});

/** An ssh wrapper for `command=`: the test's known_hosts, no user config, askpass when given. */
async function sshWrapper(w: SshWorld, knownHosts: string, askpassAnswer?: string): Promise<string> {
  const path = freshPath(w, 'ssh-wrapper');
  let env = '';
  if (askpassAnswer !== undefined) {
    const askpass = `${path}-askpass`;
    await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${askpassAnswer}'\n`, { mode: 0o700 });
    env = `SSH_ASKPASS='${askpass}' SSH_ASKPASS_REQUIRE=force `;
  }
  await writeFile(
    path,
    `#!/bin/sh\nexec env ${env}ssh -F /dev/null -o UserKnownHostsFile='${knownHosts}' -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes "$@"\n`,
    { mode: 0o755 },
  );
  return path;
}

interopTest.serial(
  '+ssh: the system ssh with a key through virt-ssh-helper (proxy=auto) to libvirtd, and with askpass answering the password through nc to virtauthd',
  [...SSH_PEERS, 'ssh', 'virt-ssh-helper'],
  async (t) => {
    const w = await sshWorld();
    const knownHosts = await knownHostsWithServer(w);
    const keyWrapper = await sshWrapper(w, knownHosts);
    const helper = await openAuth(
      `test+ssh://root@127.0.0.1:${w.sshd.port}/default?command=${keyWrapper}&keyfile=${w.sshd.clientKey}&no_tty=1`,
      null,
    );
    try {
      t.deepEqual(
        (await helper.listAllDomains(0)).map((d) => d.name),
        ['test'],
      );
      t.is(await helper.isSecure(), true);
    } finally {
      await helper.close();
    }
    const askpassWrapper = await sshWrapper(w, knownHosts, PASSWORD_USER.password);
    const nobody = new RecordingAuth([...ECHO_AND_SECRET], () => false);
    const conn = await openAuth(
      `test+ssh://${PASSWORD_USER.name}@127.0.0.1:${w.sshd.port}/default?command=${askpassWrapper}&proxy=netcat&socket=${w.virtauthSocket}`,
      nobody,
    );
    t.truthy(await hostnameAndClose(conn));
    t.is(nobody.calls.length, 0, 'ssh asks its own questions (askpass), not the callback');
  },
);

interopTest.serial("+ssh: an unknown host key under no_tty fails with ssh's own reason", [...SSH_PEERS, 'ssh'], async (t) => {
  const w = await sshWorld();
  const wrapper = await sshWrapper(w, freshPath(w, 'empty_known_hosts'));
  const error = await virErrorOf(
    openAuth(`test+ssh://root@127.0.0.1:${w.sshd.port}/default?command=${wrapper}&keyfile=${w.sshd.clientKey}&no_tty=1`, null),
  );
  t.is(error.code, ErrorCode.SYSTEM_ERROR);
  t.regex(error.message, /Host key verification failed/);
});

interopTest.serial(
  'real virsh reaches virtauthd behind sshd over qemu+libssh:// and qemu+ssh:// (name= picks its test driver)',
  [...SSH_PEERS, 'ssh', 'virsh'],
  async (t) => {
    const w = await sshWorld();
    const knownHosts = await knownHostsWithServer(w);
    // libvirt's libssh reads the same OpenSSH known_hosts; with the key there it asks nothing.
    const libssh = await runVirsh(['hostname'], {
      uri: `qemu+libssh://root@127.0.0.1:${w.sshd.port}/system?sshauth=privkey&keyfile=${w.sshd.clientKey}&known_hosts=${knownHosts}&proxy=netcat&socket=${w.virtauthSocket}&name=test:///default`,
      timeoutMs: 30_000,
    });
    t.is(libssh.code, 0, describeResult(libssh));
    const system = await runVirsh(['hostname'], {
      uri: `qemu+ssh://root@127.0.0.1:${w.sshd.port}/system?command=${await sshWrapper(w, knownHosts)}&keyfile=${w.sshd.clientKey}&no_tty=1&proxy=netcat&socket=${w.virtauthSocket}&name=test:///default`,
      timeoutMs: 30_000,
    });
    t.is(system.code, 0, describeResult(system));
    t.is(system.stdout.trim(), libssh.stdout.trim());
    // name= made virtauthd open its test driver: the same domains as over its unix socket.
    const domains = await runVirsh(['list', '--all', '--name'], {
      uri: `qemu+libssh://root@127.0.0.1:${w.sshd.port}/system?sshauth=privkey&keyfile=${w.sshd.clientKey}&known_hosts=${knownHosts}&socket=${w.virtauthSocket}&name=test:///default`,
      timeoutMs: 30_000,
    });
    t.is(domains.code, 0, describeResult(domains));
    t.is(domains.stdout.trim(), 'test');
  },
);

interopTest.serial(
  "relay over an SSH upstream: the daemon's host-key question and password come back to the client with the origin chain",
  SSH_PEERS,
  async (t) => {
    const w = await sshWorld();
    const knownHosts = w.upstreams.acceptingKnownHosts;
    // virtauthd's remote driver opens the SSH upstream (here: itself again, behind sshd).
    const upstream = w.upstreams.accepting;
    const auth = answering(PASSWORD_USER.password);
    const conn = await openAuth(chainUri(w.virtauthSocket, upstream), auth);
    t.truthy(await hostnameAndClose(conn));
    t.deepEqual(
      auth.calls.map((c) => c.credentials.map((x) => x.type)),
      [[CredentialType.ECHOPROMPT], [CredentialType.PASSPHRASE]],
    );
    const hostKeyPrompt = auth.calls[0]!.credentials[0]!.prompt;
    const keyLine = (await readFile(knownHosts, 'utf8')).trim();
    t.is(keyLine, w.sshd.knownHostsLine(), 'the daemon stored the key its client accepted');
    t.true(hostKeyPrompt.startsWith("Accept SSH host key with hash '"));
    for (const call of auth.calls) {
      t.is(call.service, 'ssh');
      t.is(call.origin.length, 1);
      t.is(call.origin[0]!.driver, 'remote');
      t.regex(call.origin[0]!.daemon, /^virtauthd-ssh@/);
    }
    t.is(auth.calls[1]!.credentials[0]!.prompt, `Enter ${PASSWORD_USER.name}'s password for 127.0.0.1`);

    // A client that refuses the key: the daemon's open fails with the reason, nothing stored.
    const refusedFile = w.upstreams.refusingKnownHosts;
    const refusing = answering(PASSWORD_USER.password, 'n');
    const error = await virErrorOf(openAuth(chainUri(w.virtauthSocket, w.upstreams.refusing), refusing));
    t.regex(error.message, /SSH host key for '127\.0\.0\.1' .* was not accepted/);
    await t.throwsAsync(readFile(refusedFile), { code: 'ENOENT' });
    t.false(w.log.lines.join('\n').includes(PASSWORD_USER.password), 'the relayed password reaches no daemon log');
  },
);
