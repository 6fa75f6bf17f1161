// The SSH transports by the name a URI scheme gives them (`qemu+ssh://`, `qemu+libssh://`).
// Loaded on first use: ssh2 adds a quarter of a second to the start of every process that
// imports it, and most never open an SSH connection.

import type { TransportOpener } from '../transport.js';

export const sshTransports: ReadonlyArray<readonly [string, TransportOpener]> = [
  ['ssh', async (uri, opts) => (await import('./system-ssh.js')).openSystemSsh(uri, opts)],
  ['libssh', async (uri, opts) => (await import('./libssh.js')).openLibssh(uri, opts)],
];
