// Starts bench/lib/c-proxy.c (compiled here with the system's C compiler) in front of a unix
// socket: the reference for what one more hop costs when the hop does almost nothing itself.
// Not a benchmark itself.

import { spawn, spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../../test/dist/src/peers/util.js';

const source = join(dirname(fileURLToPath(import.meta.url)), 'c-proxy.c');

/** Listens on a fresh socket and connects each client to `targetSocket`; null when no C compiler is here. */
export async function startCProxy(targetSocket) {
  const dir = await tempDir('vcx');
  const binary = join(dir, 'c-proxy');
  const compiled = spawnSync('cc', ['-O2', '-o', binary, source], { encoding: 'utf8' });
  if (compiled.status !== 0) {
    console.log(`(no C proxy reference: cc failed: ${compiled.error?.message ?? compiled.stderr.trim()})`);
    await rm(dir, { recursive: true, force: true });
    return null;
  }
  const socket = join(dir, 'proxy-sock');
  const child = spawn(binary, [socket, targetSocket], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the C proxy exited with ${code}`)));
    child.stdout.once('data', resolve);
  });
  child.removeAllListeners('exit');
  return {
    socket,
    uri: `test+unix:///default?socket=${socket}`,
    storageUri: `storage+unix:///system?socket=${socket}`,
    async stop() {
      child.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
