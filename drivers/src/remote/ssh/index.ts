// The SSH transports, by the name a URI scheme gives them (`qemu+ssh://`, `qemu+libssh://`).

import type { TransportOpener } from '../transport.js';
import { openLibssh } from './libssh.js';
import { openSystemSsh } from './system-ssh.js';

export const sshTransports: ReadonlyArray<readonly [string, TransportOpener]> = [
  ['ssh', openSystemSsh],
  ['libssh', openLibssh],
];

export { openLibssh, libsshSettings, keyboardPromptText, type LibsshSettings } from './libssh.js';
export { openSystemSsh, systemSshArguments } from './system-ssh.js';
export { remoteProxyCommand, shellQuote } from './remote-command.js';
export { checkHostKey, hostKeyHash, hostPatternsMatch, knownHostName, parseKnownHosts } from './known-hosts.js';
