// virtauthd as a separate process for the benchmarks, as libvirtd is: started from a config
// file, ready once it has printed its listeners. Not a benchmark itself (it lives apart from the benchmarks run.mjs runs).

import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir, waitFor } from '../../test/dist/src/peers/util.js';
// Node's flags as the daemon's systemd unit and command run it.
import { DAEMON_NODE_FLAGS } from '../../daemon/dist/src/systemd/units.js';

const daemonMain = fileURLToPath(new URL('../../daemon/dist/src/main.js', import.meta.url));

/**
 * A fresh directory with a virtauthd.conf in it: `settings(dir)` gives its lines (the directory
 * serves as unix_sock_dir and for the daemon's other files).
 */
export async function writeVirtauthdConfig(settings) {
  const dir = await tempDir('vb');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, [...settings(dir), ''].join('\n'));
  return { dir, configFile };
}

/**
 * Spawns `virtauthd --config configFile`; `dir` is removed on stop. Resolves with the text it
 * printed once `ready(stdout)` finds what the caller needs in it.
 */
export async function spawnVirtauthd(configFile, dir, ready) {
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, daemonMain, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text) => (stdout += text));
  // Kept for the error below; its shutdown notice would only clutter the tables.
  child.stderr.setEncoding('utf8').on('data', (text) => (stderr += text));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  try {
    const found = await waitFor(() => ready(stdout), 15_000, 'virtauthd to print its listeners');
    return {
      found,
      pid: child.pid,
      /** Bytes virtauthd has written to stderr (its log) so far. */
      logBytes: () => Buffer.byteLength(stderr),
      async stop() {
        child.kill('SIGTERM');
        await exited;
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${error.message}; virtauthd stdout: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr.slice(-2000))}`, {
      cause: error,
    });
  }
}
