// A unix-socket proxy that copies bytes both ways and understands nothing (node's stream.pipe):
// the reference for what one more hop through a node process costs, whatever it does per packet.
// Not a benchmark itself.

import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { tempDir } from '../../test/dist/src/peers/util.js';

/** Listens on a fresh socket and connects each client to `targetSocket`. */
export async function startByteProxy(targetSocket) {
  const dir = await tempDir('vbx');
  const socket = join(dir, 'proxy-sock');
  const server = createServer((client) => {
    const upstream = createConnection(targetSocket);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const side of [client, upstream]) side.on('error', end).on('close', end);
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(socket, resolve));
  return {
    socket,
    uri: `test+unix:///default?socket=${socket}`,
    storageUri: `storage+unix:///system?socket=${socket}`,
    async stop() {
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
