// Listener setup on its own: where binding or adopting fails, libvirt's one-line error names what
// failed; a live daemon's socket or a file that is not a socket is never replaced; only the
// socket files this daemon bound are removed when it stops.

import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthType, ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { ListenerSet } from '../src/server/listeners.js';
import { createLogger } from '../src/index.js';
import { JsonSink } from './helpers.js';

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'va-lset-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function listenerSet(t: ExecutionContext): ListenerSet {
  const set = new ListenerSet(createLogger(2, new JsonSink()));
  t.teardown(() => set.close());
  return set;
}

/** A server that greets each client; the daemon's probe of a live socket hangs up on it at once. */
function greeter(text: string): net.Server {
  return net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(text);
  });
}

/** The first data a client of `path` reads. */
async function greetingAt(path: string): Promise<string> {
  const client = net.connect(path);
  const [data] = (await once(client, 'data')) as [Buffer];
  client.destroy();
  return data.toString();
}

const unixSpec = (path: string) => ({ kind: 'unix' as const, path, auth: AuthType.NONE, readOnly: false });

async function bindError(t: ExecutionContext, attempt: Promise<unknown>): Promise<string> {
  const e = await t.throwsAsync(attempt, { instanceOf: VirError });
  t.is(e?.code, ErrorCode.SYSTEM_ERROR);
  t.is(e?.domain, ErrorDomain.RPC);
  t.false(/\n/.test(e?.message ?? ''), 'one line');
  return e?.message ?? '';
}

test('a TCP port in use: "Unable to bind to port N on HOST: Address already in use"', async (t) => {
  const busy = net.createServer();
  busy.listen(0, '127.0.0.1');
  await once(busy, 'listening');
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const message = await bindError(
    t,
    listenerSet(t).open(net.createServer(), { kind: 'tcp', host: '127.0.0.1', port, auth: AuthType.NONE, readOnly: false }, null),
  );
  t.regex(message, new RegExp(`Unable to bind to port ${port} on 127\\.0\\.0\\.1: Address already in use$`));
});

test('a socket systemd passed that is not a listening socket is named by its descriptor', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'plain'), '');
  const fd = openSync(join(dir, 'plain'), 'r');
  t.teardown(() => closeSync(fd));
  const message = await bindError(t, listenerSet(t).open(net.createServer(), { ...unixSpec(join(dir, 'sock')), fd }, null));
  t.regex(message, new RegExp(`Unable to listen on the socket passed by systemd \\(descriptor ${fd}\\): Invalid argument$`));
});

test('a file that is not a socket where the socket goes is refused and left alone', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'virtauth-sock');
  await writeFile(path, 'keep me');
  const message = await bindError(t, listenerSet(t).open(net.createServer(), unixSpec(path), null));
  t.regex(message, /virtauth-sock exists and is not a socket$/);
  t.is(await readFile(path, 'utf8'), 'keep me');
});

test("a live daemon's socket is refused and keeps serving; a stale socket file is replaced", async (t) => {
  const dir = await tempDir(t);
  const live = join(dir, 'live-sock');
  const other = greeter('still here');
  other.listen(live);
  await once(other, 'listening');
  t.teardown(() => other.close());
  const message = await bindError(t, listenerSet(t).open(net.createServer(), unixSpec(live), null));
  t.regex(message, /another daemon is already listening on .*live-sock$/);
  t.is(await greetingAt(live), 'still here');

  // A socket file bound and never listened on refuses a connect, as one a crashed daemon left does.
  const stale = join(dir, 'stale-sock');
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
  const info = await listenerSet(t).open(greeter('new'), unixSpec(stale), null);
  t.is(info.uri, `test+unix:///default?socket=${stale}`);
  t.is(await greetingAt(stale), 'new');
});

test('close removes the socket files this daemon bound and stops accepting on every listener', async (t) => {
  const dir = await tempDir(t);
  const set = listenerSet(t);
  const path = join(dir, 'virtauth-sock');
  const unix = await set.open(net.createServer(), { ...unixSpec(path), perms: 0o600 }, null);
  const tcpServer = net.createServer();
  const tcp = await set.open(tcpServer, { kind: 'tcp', host: '127.0.0.1', port: 0, auth: AuthType.NONE, readOnly: false }, null);
  t.true(existsSync(unix.path!));
  t.regex(tcp.uri, /^test\+tcp:\/\/127\.0\.0\.1:\d+\/default$/);
  t.not(tcp.port, 0, 'the port the system chose is reported');
  await set.close();
  t.false(existsSync(path));
  t.false(tcpServer.listening);
});
