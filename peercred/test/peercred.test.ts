import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { VirError } from '@virtauth/core';
import { getPeerCredentials, peerCredentialsUnavailableReason } from '../index.js';

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
  t.deepEqual([...(peer.groups ?? [])].sort((a, b) => a - b), supplementary.sort((a, b) => a - b));
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
