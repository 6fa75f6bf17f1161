// virtauthd under test: started in the test's process on two private unix sockets.

import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';
import { RpcConnection } from '@virtauth/core';
import { createDaemon, createLogger, defaultConfig, type DaemonConfig, type DaemonExtension, type DaemonHandle } from '@virtauth/daemon';

import { tempDir } from './peers/index.js';

export interface VirtauthdUnderTest {
  handle: DaemonHandle;
  dir: string;
  rwSocket: string;
  roSocket: string;
  uri(readOnlySocket?: boolean): string;
}

/** virtauthd in this process on two temp unix sockets (rw, ro), logging to a file in its dir. */
export async function startVirtauthd(
  t: ExecutionContext,
  settings: Partial<DaemonConfig> = {},
  extensions: DaemonExtension[] = [],
): Promise<VirtauthdUnderTest> {
  const dir = await tempDir('vd');
  const config: DaemonConfig = { ...defaultConfig(), unixSockDir: dir, ...settings };
  // A SASL socket needs a user database; an empty private one keeps the host's out of it.
  config.extra.set('sasl_user_db', join(dir, 'users.db'));
  // The config's own pair of sockets, with the auth schemes its auth_unix_rw/ro name.
  const rwSocket = join(dir, 'virtauth-sock');
  const roSocket = join(dir, 'virtauth-sock-ro');
  const logFd = openSync(join(dir, 'virtauthd.log'), 'a');
  const handle = await createDaemon({ config, logger: createLogger(2, logFd), extensions });
  t.teardown(async () => {
    await handle.stop();
    closeSync(logFd);
    await rm(dir, { recursive: true, force: true });
  });
  return {
    handle,
    dir,
    rwSocket,
    roSocket,
    uri: (readOnlySocket = false) => `test+unix:///default?socket=${readOnlySocket ? roSocket : rwSocket}`,
  };
}

/** A bare RPC connection to a unix socket, for speaking the protocol call by call. */
export function rawClient(path: string): Promise<RpcConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path, () => resolve(new RpcConnection(socket)));
    socket.once('error', reject);
  });
}
