// The remote driver's larger socket reads (onread): every byte arrives once, in order, and no
// chunk handed out changes afterwards, whether reads are small (copied out, buffer reused) or
// large (passed on as views, fresh buffer next), across pauses and the end of the stream.

import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { largeReads, LARGE_READ_MAX } from '../src/remote/large-reads.js';

interface Pair {
  server: net.Socket;
  client: net.Socket;
  done(): void;
}

async function connectedPair(): Promise<Pair> {
  const dir = mkdtempSync(join(tmpdir(), 'vlr-'));
  const path = join(dir, 'sock');
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(path, resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect({ path, onread: largeReads() });
  await new Promise((resolve) => client.once('connect', resolve));
  const server = await accepted;
  return {
    server,
    client,
    done: () => {
      client.destroy();
      server.destroy();
      listener.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every chunk the client emits, kept as given (not copied), until the server's end. */
function collect(client: net.Socket): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  client.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    client.once('end', () => resolve(chunks));
    client.once('error', reject);
  });
}

test('small reads, each copied out of a reused buffer, all arrive unchanged', async (t) => {
  const { server, client, done } = await connectedPair();
  t.teardown(done);
  const received = collect(client);
  const sent: Buffer[] = [];
  for (let i = 0; i < 200; i++) {
    const bytes = randomBytes(1 + (i % 97) * 41);
    sent.push(bytes);
    // One at a time, so each is a read of its own into the same buffer.
    const seen = new Promise((resolve) => client.once('data', resolve));
    server.write(bytes);
    await seen;
  }
  server.end();
  const chunks = await received;
  t.deepEqual(Buffer.concat(chunks), Buffer.concat(sent));
});

test('bulk data read while the client is paused comes in large chunks, none overwritten', async (t) => {
  const { server, client, done } = await connectedPair();
  t.teardown(done);
  const received = collect(client);
  const sent = randomBytes(4 * 1024 * 1024 + 12345);
  // Held, so the kernel's buffer fills and reads grow to fill theirs; then small writes between.
  client.pause();
  let offset = 0;
  let writes = 0;
  const writeSome = (): void => {
    while (offset < sent.length) {
      const size = writes++ % 3 === 0 ? 300 : 200_000;
      const more = server.write(sent.subarray(offset, offset + size));
      offset += size;
      if (!more) {
        server.once('drain', writeSome);
        return;
      }
    }
    server.end();
  };
  writeSome();
  const resumeLater = setInterval(() => (client.isPaused() ? client.resume() : client.pause()), 5);
  t.teardown(() => clearInterval(resumeLater));
  const chunks = await received;
  clearInterval(resumeLater);
  t.deepEqual(Buffer.concat(chunks), sent);
  t.true(
    chunks.some((c) => c.length > 64 * 1024),
    `some read took more than node's own 64 KiB (largest ${Math.max(...chunks.map((c) => c.length))})`,
  );
  t.true(chunks.every((c) => c.length <= LARGE_READ_MAX));
});
