// The SSH transports' parts, for tests and for callers that open an SSH stream themselves.
// (Importing this loads ssh2; the transport registry loads it lazily: ./transports.ts.)

export { sshTransports } from './transports.js';
export { openLibssh, libsshSettings, keyboardPromptText, type LibsshSettings } from './libssh.js';
export { openSystemSsh, systemSshArguments } from './system-ssh.js';
export { remoteProxyCommand, shellQuote } from './remote-command.js';
export { checkHostKey, hostKeyFingerprint, hostKeyHash, hostPatternsMatch, knownHostName, parseKnownHosts } from './known-hosts.js';
