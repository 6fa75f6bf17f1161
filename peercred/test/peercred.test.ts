import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { VirError } from '@virtauth/core';
import { getPeerCredentials, peerCredentialsUnavailableReason, sendUnixDatagram, socketAddress } from '../index.js';

/** Both ends of a fresh unix-socket connection within this process. */
async function connectedPair(t: import('ava').ExecutionContext): Promise<{ server: net.Socket; client: net.Socket }> {
  const dir = await mkdtemp(join(tmpdir(), 'pc-'));
  const path = join(dir, 'sock');
  const accepted = new Promise<net.Socket>((resolve) => {
    const listener = net.createServer((socket) => resolve(socket));
    listener.listen(path);
    t.teardown(async () => {
      await new Promise<void>((r) => listener.close(() => r()));
      await rm(dir, { recursive: true, force: true });
    });
  });
  const client = await new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect(path, () => resolve(c));
    c.once('error', reject);
  });
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  return { server, client };
}

test('the addon is available on this Linux machine', (t) => {
  t.is(peerCredentialsUnavailableReason(), null);
});

test('reads pid, uid, gid and groups of a client in this process', async (t) => {
  const { server, client } = await connectedPair(t);
  const peer = getPeerCredentials(server);
  t.is(peer.pid, process.pid);
  t.is(peer.uid, process.getuid!());
  t.is(peer.gid, process.getgid!());
  // process.getgroups() adds the effective gid; /proc lists exactly the supplementary groups.
  const status = await readFile('/proc/self/status', 'utf8');
  const supplementary = (/^Groups:[ \t]*([^\n]*)$/m.exec(status)?.[1] ?? '').split(/\s+/).filter(Boolean).map(Number);
  t.deepEqual(
    [...(peer.groups ?? [])].sort((a, b) => a - b),
    supplementary.sort((a, b) => a - b),
  );
  // The client end sees the same process: it connected to itself.
  t.is(getPeerCredentials(client).pid, process.pid);
});

test('the credentials stay those recorded at connect time after the client closes', async (t) => {
  const { server, client } = await connectedPair(t);
  client.destroy();
  await new Promise((resolve) => server.once('end', resolve).resume());
  t.is(getPeerCredentials(server).uid, process.getuid!());
});

test('a TCP socket is refused with a clear error', async (t) => {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((r) => listener.close(() => r())));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  const error = t.throws(() => getPeerCredentials(server), { instanceOf: VirError });
  t.regex(error!.message, /Failed to get client socket identity: peer credentials exist only for unix-domain sockets/);
});

test('a destroyed socket is refused with a clear error', async (t) => {
  const { server } = await connectedPair(t);
  server.destroy();
  t.throws(() => getPeerCredentials(server), { instanceOf: VirError, message: /socket is closed/ });
});

// --- unix datagrams and inherited sockets' addresses ------------------------------------------

function listeningFd(server: net.Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number') throw new Error('no descriptor on the listening server');
  return fd;
}

test('socketAddress names a listening unix or TCP socket, and refuses what is not a socket', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'listening');
  const unixServer = net.createServer();
  await new Promise<void>((resolve) => unixServer.listen(path, resolve));
  t.teardown(() => unixServer.close());
  t.deepEqual(socketAddress(listeningFd(unixServer)), { stream: true, listening: true, family: 'unix', path });

  const tcpServer = net.createServer();
  await new Promise<void>((resolve) => tcpServer.listen(0, '127.0.0.1', resolve));
  t.teardown(() => tcpServer.close());
  t.deepEqual(socketAddress(listeningFd(tcpServer)), {
    stream: true,
    listening: true,
    family: 'inet',
    address: '127.0.0.1',
    port: (tcpServer.address() as net.AddressInfo).port,
  });

  const file = openSync(join(dir, 'plain-file'), 'w');
  t.teardown(() => closeSync(file));
  t.throws(() => socketAddress(file), { code: 'ENOTSOCK', message: /getsockname: Socket operation on non-socket/ });
  t.throws(() => socketAddress(-1), { code: 'ERR_INVALID_ARG' });
});

test('sendUnixDatagram reports a missing receiver or an impossible address as errno codes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.throws(() => sendUnixDatagram(join(dir, 'nobody'), Buffer.from('READY=1')), { code: 'ENOENT' });
  t.throws(() => sendUnixDatagram(`/${'x'.repeat(200)}`, Buffer.from('READY=1')), { code: 'ENAMETOOLONG' });
  t.throws(() => sendUnixDatagram('', Buffer.from('READY=1')), { code: 'ENAMETOOLONG' });
  // A stream socket is no datagram receiver.
  const stream = net.createServer();
  const path = join(dir, 'stream');
  await new Promise<void>((resolve) => stream.listen(path, resolve));
  t.teardown(() => stream.close());
  const error = t.throws(() => sendUnixDatagram(path, Buffer.from('READY=1')));
  t.truthy((error as NodeJS.ErrnoException).code);
});
