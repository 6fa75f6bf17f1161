// Unit and abuse tests of the SSH transports: known_hosts matching, the remote command's quoting,
// ssh's argument list, URI checks, and +libssh against a hostile SSH server (ssh2's own server
// module) that floods prompts, paints the terminal, rejects commands or fails them. The
// transports against a real OpenSSH server: test/src/interop-ssh.test.ts.

import test from 'ava';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { CredentialType, ErrorCode, ErrorDomain, VirError, parseUri, type Credential, type CredentialRequester } from '@virtauth/core';
import {
  checkHostKey,
  hostKeyFingerprint,
  hostKeyHash,
  hostPatternsMatch,
  keyboardPromptText,
  knownHostName,
  libsshSettings,
  openLibssh,
  parseKnownHosts,
  remoteProxyCommand,
  shellQuote,
  systemSshArguments,
} from '../src/remote/ssh/index.js';

const { Server, utils } = ssh2;

async function virErrorOf(promise: Promise<unknown>): Promise<VirError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof VirError) return e;
    throw e;
  }
  throw new Error('expected a VirError');
}

/**
 * An ed25519 pair ssh2 can read back: its generator writes an unparseable private key about once
 * in 256 keys (mscdex/ssh2#1390), so a fixture key is checked before use.
 */
function ed25519KeyPair(): { private: string; public: string } {
  for (;;) {
    const pair = utils.generateKeyPairSync('ed25519');
    if (!(utils.parseKey(pair.private) instanceof Error)) return pair;
  }
}

function publicKeyBlob(): { blob: Buffer; line: (host: string) => string } {
  const pair = ed25519KeyPair();
  const b64 = pair.public.split(' ')[1]!;
  return { blob: Buffer.from(b64, 'base64'), line: (host) => `${host} ssh-ed25519 ${b64}` };
}

test('known_hosts: plain, [host]:port, wildcard, negated and hashed entries', (t) => {
  const key = publicKeyBlob();
  const salt = randomBytes(20);
  const hashedName = createHmac('sha1', salt).update('[10.0.0.9]:2222').digest('base64');
  const lines = parseKnownHosts(
    [
      '# comment',
      key.line('plain.example,alias.example'),
      key.line('[ported.example]:2222'),
      key.line('*.wild.example,!bad.wild.example'),
      key.line(`|1|${salt.toString('base64')}|${hashedName}`),
    ].join('\n'),
  );
  t.is(lines.length, 4);
  for (const name of ['plain.example', 'alias.example', '[ported.example]:2222', 'a.wild.example', '[10.0.0.9]:2222']) {
    t.deepEqual(checkHostKey(lines, name, key.blob), { state: 'known' }, name);
  }
  for (const name of ['ported.example', 'bad.wild.example', '10.0.0.9', 'other.example']) {
    t.deepEqual(checkHostKey(lines, name, key.blob), { state: 'unknown' }, name);
  }
  t.is(knownHostName('h', 22), 'h');
  t.is(knownHostName('h', 2222), '[h]:2222');
  t.false(hostPatternsMatch('|1|AAAA|BBBB', 'x'), 'a damaged hash matches nothing');
  t.regex(hostKeyHash(key.blob), /^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
});

test('known_hosts: another key for the host is a change; a @revoked key is refused; CA lines are not trusted as keys', (t) => {
  const stored = publicKeyBlob();
  const offered = publicKeyBlob();
  t.deepEqual(checkHostKey(parseKnownHosts(stored.line('h.example')), 'h.example', offered.blob), { state: 'changed', revoked: false });
  t.deepEqual(checkHostKey(parseKnownHosts(`@revoked ${offered.line('*')}\n${offered.line('h.example')}`), 'h.example', offered.blob), {
    state: 'changed',
    revoked: true,
  });
  t.deepEqual(checkHostKey(parseKnownHosts(`@cert-authority ${offered.line('h.example')}`), 'h.example', offered.blob), {
    state: 'unknown',
  });
});

test('known_hosts: damaged and hostile lines are skipped, not trusted', (t) => {
  const key = publicKeyBlob();
  const b64 = key.blob.toString('base64');
  const lines = parseKnownHosts(
    [
      'h.example ssh-rsa ' + b64, // the type field lies about the key
      'h.example ssh-ed25519 not*base64',
      'h.example ssh-ed25519',
      '@unknown-marker h.example ssh-ed25519 ' + b64,
      'x'.repeat(100_000),
      '\0\0\0',
    ].join('\n'),
  );
  t.is(lines.length, 0);
  t.deepEqual(checkHostKey(lines, 'h.example', key.blob), { state: 'unknown' });
});

test('the remote command quotes every URI value: a hostile socket or netcat runs nothing of its own', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vssh-q-'));
  try {
    const bin = join(dir, 'bin');
    const marker = join(dir, 'pwned');
    await mkdir(bin);
    // A fake nc that prints its arguments; sh and grep from the system; no virt-ssh-helper.
    await writeFile(join(bin, 'nc'), '#!/bin/sh\nfor a in "$@"; do printf "<%s>" "$a"; done\n');
    await chmod(join(bin, 'nc'), 0o755);
    await symlink('/bin/sh', join(bin, 'sh'));
    await symlink('/bin/grep', join(bin, 'grep'));
    const hostile = `/x'; touch ${marker}; echo '$(touch ${marker})\`touch ${marker}\``;
    const uri = parseUri(`test+ssh://h/default?socket=${encodeURIComponent(hostile)}`);
    const command = remoteProxyCommand(uri, false, ErrorDomain.SSH);
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', command], { env: { PATH: bin } });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(out));
    });
    t.is(output, `<-U><${hostile}>`);
    t.false(existsSync(marker));
    t.is(shellQuote("it's"), `'it'\\''s'`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the remote command follows proxy=, netcat= and the driver URI', (t) => {
  const cmd = (q: string, readOnly = false) => remoteProxyCommand(parseUri(`qemu+ssh://h/system${q}`), readOnly, ErrorDomain.SSH);
  t.regex(cmd(''), /virt-ssh-helper '\\''qemu:\/\/\/system'\\''; else .*libvirt-sock'\\''; fi'$/);
  t.regex(cmd('', true), /virt-ssh-helper -r .*libvirt-sock-ro/);
  t.notRegex(cmd('?proxy=native'), /nc/);
  t.notRegex(cmd('?proxy=netcat'), /virt-ssh-helper/);
  t.regex(cmd('?netcat=/opt/nc'), /'\\''\/opt\/nc'\\''/);
  t.regex(cmd('?netcat=/opt/nc'), /virt-ssh-helper/, 'netcat= alone keeps the helper first');
  t.notRegex(cmd('?socket=/s'), /virt-ssh-helper/, 'an explicit socket means netcat');
  t.notRegex(
    remoteProxyCommand(parseUri('qemu+ssh://h/session'), false, ErrorDomain.SSH),
    / nc|-U/,
    'a session daemon only through the helper',
  );
  for (const [q, why] of [
    ['?proxy=socat', /Unsupported proxy type 'socat'/],
    ['?proxy=native&netcat=nc', /netcat path not valid with native proxy mode/],
    ['?socket=%0Aevil', /control characters/],
  ] as const) {
    const e = t.throws(() => cmd(q), { instanceOf: VirError })!;
    t.is(e.code, ErrorCode.INVALID_ARG);
    t.regex(e.message, why);
  }
  t.throws(() => remoteProxyCommand(parseUri('remote+ssh://h/?proxy=native'), false, ErrorDomain.SSH), { message: /needs a driver URI/ });
});

test("ssh arguments: libvirt's options, and the host after -- so it can never be an option", (t) => {
  const args = systemSshArguments(parseUri('qemu+ssh://alice@-oProxyCommand=evil:2222/system?keyfile=/k&no_tty=1&no_verify=1'), false);
  t.deepEqual(args.slice(0, -2), [
    '-p',
    '2222',
    '-l',
    'alice',
    '-i',
    '/k',
    '-T',
    '-e',
    'none',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '--',
  ]);
  t.is(args.at(-2), '-oProxyCommand=evil');
});

test('+libssh URI parameters are checked', async (t) => {
  const settings = await libsshSettings(
    parseUri('qemu+libssh://bob@h:2200/system?sshauth=password,keyboard-interactive&known_hosts=/kh&known_hosts_verify=auto'),
  );
  t.deepEqual(settings, {
    host: 'h',
    port: 2200,
    user: 'bob',
    auth: ['password', 'keyboard-interactive'],
    keyfile: null,
    knownHosts: '/kh',
    verify: 'auto',
  });
  const defaults = await libsshSettings(parseUri('qemu+libssh://h/system?no_verify=1&sshauth=password'));
  t.is(defaults.verify, 'normal', 'no_verify does not switch host key checks off here (as libvirt)');
  t.is(defaults.user, 'root');
  t.is(defaults.port, 22);
  for (const [q, why] of [
    ['sshauth=gssapi', /Unknown authentication method 'gssapi'/],
    ['known_hosts=relative/kh', /absolute path/],
    ['known_hosts_verify=sometimes', /normal\|auto\|ignore/],
    ['sshauth=privkey&keyfile=', /Key file path must be provided|keyfile/],
  ] as const) {
    const e = await virErrorOf(libsshSettings(parseUri(`qemu+libssh://h/system?${q}`)));
    t.is(e.domain, ErrorDomain.LIBSSH, q);
    t.regex(e.message, why, q);
  }
  t.regex((await virErrorOf(libsshSettings(parseUri('qemu+libssh://h%0Aevil/system')))).message, /host name .* is not valid/);
});

test('keyboard-interactive prompt text: name and instruction lines, trailing ": " dropped, control characters replaced', (t) => {
  t.is(keyboardPromptText('', '', 'Password: '), 'Password');
  t.is(keyboardPromptText('Login', 'Enter your OTP', 'Code:'), 'Login\nEnter your OTP\nCode');
  t.is(keyboardPromptText('', '', '\x1b[2JPass\rword: '), '?[2JPass?word');
});

// A hostile server, built from ssh2's server module.
interface HostileServer {
  port: number;
  hostKeyLine: string;
  close: () => Promise<void>;
}

type ServerBehaviour = {
  /** Keyboard-interactive prompts to send (all in one request). */
  prompts?: { prompt: string; echo: boolean }[];
  /** What the exec request gets: reject, or a command that fails with stderr output. */
  exec?: 'reject' | 'fail';
};

async function hostileServer(behaviour: ServerBehaviour): Promise<HostileServer> {
  const hostKey = ed25519KeyPair();
  const server = new Server({ hostKeys: [hostKey.private] }, (client) => {
    client.on('authentication', (ctx) => {
      if (ctx.method === 'keyboard-interactive' && behaviour.prompts) {
        ctx.prompt(behaviour.prompts, () => ctx.accept());
        return;
      }
      if (ctx.method === 'password' && ctx.password === 'right') return ctx.accept();
      ctx.reject(behaviour.prompts ? ['keyboard-interactive'] : ['password']);
    });
    client.on('ready', () => {
      client.on('session', (accept) => {
        const session = accept();
        session.on('exec', (acceptExec, rejectExec) => {
          if (behaviour.exec === 'reject') return rejectExec();
          const channel = acceptExec();
          channel.stderr.write('nc: unix connect failed: \x1b[31mNo such file\n');
          channel.exit(1);
          channel.end();
        });
      });
    });
    client.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    hostKeyLine: `[127.0.0.1]:${port} ${hostKey.public.split(' ').slice(0, 2).join(' ')}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function recordingRequester(answer: (c: Credential) => string): { requester: CredentialRequester; asked: Credential[] } {
  const asked: Credential[] = [];
  return {
    asked,
    requester: async (creds) => {
      for (const c of creds) {
        asked.push({ ...c });
        c.result = answer(c);
      }
    },
  };
}

async function withKnownHosts<T>(line: string, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'vssh-kh-'));
  try {
    const path = join(dir, 'known_hosts');
    await writeFile(path, `${line}\n`);
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const auth = { credTypes: [CredentialType.PASSPHRASE, CredentialType.ECHOPROMPT], callback: () => {} };

test('+libssh: a server that floods keyboard-interactive prompts is cut off', async (t) => {
  const server = await hostileServer({ prompts: Array.from({ length: 40 }, (_, i) => ({ prompt: `Question ${i}: `, echo: false })) });
  try {
    await withKnownHosts(server.hostKeyLine, async (kh) => {
      const { requester, asked } = recordingRequester((c) => `answer for ${c.prompt}`);
      const uri = parseUri(`test+libssh://u@127.0.0.1:${server.port}/default?sshauth=keyboard-interactive&known_hosts=${kh}`);
      const e = await virErrorOf(openLibssh(uri, { readOnly: false, requestCredentials: requester, auth: null }));
      t.is(e.code, ErrorCode.AUTH_FAILED);
      t.regex(e.message, /asked more than 16 questions/);
      t.is(asked.length, 16);
    });
  } finally {
    await server.close();
  }
});

test("+libssh: the server's prompt text reaches the callback without control characters", async (t) => {
  const server = await hostileServer({ prompts: [{ prompt: '\x1b]0;owned\x07Token: ', echo: true }], exec: 'reject' });
  try {
    await withKnownHosts(server.hostKeyLine, async (kh) => {
      const { requester, asked } = recordingRequester(() => '123456');
      const uri = parseUri(`test+libssh://u@127.0.0.1:${server.port}/default?sshauth=keyboard-interactive&known_hosts=${kh}`);
      const e = await virErrorOf(openLibssh(uri, { readOnly: false, requestCredentials: requester, auth: null }));
      t.deepEqual(
        asked.map(({ type, prompt }) => ({ type, prompt })),
        [{ type: CredentialType.ECHOPROMPT, prompt: '?]0;owned?Token' }],
      );
      // The login worked; the exec request was refused: a clear error naming the command.
      t.regex(e.message, /^libssh transport error: failed to execute command 'sh -c /);
    });
  } finally {
    await server.close();
  }
});

test('+libssh: a remote command that fails is reported with its status and (cleaned) stderr', async (t) => {
  const server = await hostileServer({ exec: 'fail' });
  try {
    await withKnownHosts(server.hostKeyLine, async (kh) => {
      const { requester } = recordingRequester(() => 'right');
      const uri = parseUri(`test+libssh://u@127.0.0.1:${server.port}/default?sshauth=password&known_hosts=${kh}&proxy=netcat`);
      const { socket } = await openLibssh(uri, { readOnly: false, requestCredentials: requester, auth: null });
      const error = await new Promise<Error>((resolve) => {
        socket.on('error', resolve);
        socket.resume();
      });
      t.is(
        error.message,
        'libssh transport error: Remote command terminated with non-zero code: 1: nc: unix connect failed:  [31mNo such file',
      );
    });
  } finally {
    await server.close();
  }
});

test('+libssh: an unknown key is never accepted when the question fails or is answered with anything but y', async (t) => {
  const server = await hostileServer({ exec: 'reject' });
  try {
    await withKnownHosts('# empty', async (kh) => {
      for (const answer of ['yes', '', 'n']) {
        const { requester, asked } = recordingRequester((c) => (c.type === CredentialType.ECHOPROMPT ? answer : 'right'));
        const uri = parseUri(`test+libssh://u@127.0.0.1:${server.port}/default?sshauth=password&known_hosts=${kh}`);
        const e = await virErrorOf(openLibssh(uri, { readOnly: false, requestCredentials: requester, auth }));
        t.regex(e.message, /was not accepted/, answer);
        t.is(asked.length, 1, 'no password was sent to an unverified server');
      }
      const throwing: CredentialRequester = async () => {
        throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.AUTH, detail: 'the person went away' });
      };
      const uri = parseUri(`test+libssh://u@127.0.0.1:${server.port}/default?sshauth=password&known_hosts=${kh}`);
      const e = await virErrorOf(openLibssh(uri, { readOnly: false, requestCredentials: throwing, auth }));
      t.is(e.code, ErrorCode.AUTH_CANCELLED);
      t.is((await readFile(kh, 'utf8')).trim(), '# empty', 'nothing stored');
    });
  } finally {
    await server.close();
  }
});

/** Opens +libssh against a TCP peer that does `onConnection` and never speaks SSH; returns the error. */
async function openAgainstTcpPeer(onConnection: (socket: Socket) => void, timeoutMs: number): Promise<VirError> {
  const sockets: Socket[] = [];
  const peer = createServer((socket) => {
    sockets.push(socket);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
  try {
    const port = (peer.address() as AddressInfo).port;
    const uri = parseUri(`test+libssh://u@127.0.0.1:${port}/default?sshauth=password&known_hosts_verify=ignore`);
    return await virErrorOf(openLibssh(uri, { readOnly: false, timeoutMs, auth: null }));
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => peer.close(resolve));
  }
}

test('+libssh: a server that accepts the TCP connection and never speaks SSH times out', async (t) => {
  const e = await openAgainstTcpPeer(() => {}, 300);
  t.is(e.domain, ErrorDomain.LIBSSH);
  t.regex(e.message, /SSH session handshake failed: no answer from 127\.0\.0\.1:\d+ within 300 ms/);
});

test('+libssh: a peer that answers with something other than SSH fails the handshake clearly', async (t) => {
  const e = await openAgainstTcpPeer((socket) => socket.resume().end('HTTP/1.1 400 Bad Request\r\n\r\n'), 5000);
  t.is(e.domain, ErrorDomain.LIBSSH);
  t.regex(e.message, /^libssh transport error: SSH session handshake failed: /);
});

test('+ssh: a command= that cannot run fails at once, naming it', async (t) => {
  const { openSystemSsh } = await import('../src/remote/ssh/index.js');
  const e = await virErrorOf(openSystemSsh(parseUri('test+ssh://h/default?command=/nonexistent/ssh'), { readOnly: false }));
  t.is(e.code, ErrorCode.SYSTEM_ERROR);
  t.regex(e.message, /Cannot run '\/nonexistent\/ssh'/);
  const option = await virErrorOf(openSystemSsh(parseUri('test+ssh://h/default?command=-oProxyCommand=x'), { readOnly: false }));
  t.is(option.code, ErrorCode.INVALID_ARG);
});

test('+libssh: the connection names the server by its host key only when known_hosts or the person vouched for it', async (t) => {
  const server = await hostileServer({ exec: 'fail' });
  try {
    const keyBlob = Buffer.from(server.hostKeyLine.split(' ')[2]!, 'base64');
    const fingerprint = hostKeyFingerprint(keyBlob);
    t.regex(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    const identityFor = async (knownHostsLine: string, verify: string, answer = 'y') =>
      withKnownHosts(knownHostsLine, async (kh) => {
        const { requester } = recordingRequester((c) => (c.type === CredentialType.ECHOPROMPT ? answer : 'right'));
        const uri = parseUri(
          `test+libssh://u@127.0.0.1:${server.port}/default?sshauth=password&known_hosts=${kh}&known_hosts_verify=${verify}&proxy=netcat`,
        );
        const { socket, info } = await openLibssh(uri, { readOnly: false, requestCredentials: requester, auth: null });
        socket.on('error', () => {});
        socket.destroy();
        return info.identity ?? null;
      });
    const vouched = { transport: 'ssh', host: '127.0.0.1', port: server.port, hostKey: fingerprint };
    t.deepEqual(await identityFor(server.hostKeyLine, 'normal'), vouched, 'known_hosts lists it');
    t.deepEqual(await identityFor('# empty', 'normal', 'y'), vouched, 'the person accepted it');
    t.is(await identityFor('# empty', 'auto'), null, 'stored without anyone looking');
    t.is(await identityFor('# empty', 'ignore'), null, 'not checked at all');
  } finally {
    await server.close();
  }
});
