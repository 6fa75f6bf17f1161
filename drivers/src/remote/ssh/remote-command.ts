// The command an SSH transport runs on the remote host to reach the daemon's socket, as
// libvirt's client builds it: virt-ssh-helper where the host has it, else netcat on the socket.

import { ErrorCode, VirError, driverUriForServer, uriParam, type ConnectUri } from '@virtauth/core';

export type ProxyMode = 'auto' | 'native' | 'netcat';

/** libvirt's daemon sockets on the remote host when the URI gives no `socket=`. */
const REMOTE_SOCKET = '/var/run/libvirt/libvirt-sock';
const REMOTE_SOCKET_RO = '/var/run/libvirt/libvirt-sock-ro';

export function sshParamError(domain: number, detail: string): VirError {
  return new VirError({ code: ErrorCode.INVALID_ARG, domain, detail });
}

/** One word for a POSIX shell: single quotes, each embedded quote closed, escaped, reopened. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Bytes no shell word, path or host name of ours may carry (a NUL cannot even reach exec). */
function rejectControl(domain: number, what: string, value: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) throw sshParamError(domain, `${what} may not contain control characters`);
  return value;
}

/**
 * libvirt's choice when `proxy=` is absent: an explicit socket only netcat can reach, a session
 * daemon only virt-ssh-helper can find (its socket path depends on the remote environment),
 * otherwise the helper with netcat as the fallback for older hosts.
 */
export function proxyMode(uri: ConnectUri, domain: number): ProxyMode {
  const proxy = uriParam(uri, 'proxy');
  if (proxy === null) {
    if (uriParam(uri, 'socket') !== null) return 'netcat';
    return uri.path === '/session' ? 'native' : 'auto';
  }
  if (proxy !== 'auto' && proxy !== 'native' && proxy !== 'netcat')
    throw sshParamError(domain, `Unsupported proxy type '${proxy}' (should be auto|native|netcat)`);
  if (proxy === 'native' && uriParam(uri, 'netcat') !== null) throw sshParamError(domain, 'netcat path not valid with native proxy mode');
  return proxy;
}

/**
 * The remote command line, run by the remote user's login shell. Every value from the URI is
 * a single quoted word: a URI cannot add commands of its own.
 */
export function remoteProxyCommand(uri: ConnectUri, readOnly: boolean, domain: number): string {
  const mode = proxyMode(uri, domain);
  const socket = rejectControl(domain, 'socket', uriParam(uri, 'socket') ?? (readOnly ? REMOTE_SOCKET_RO : REMOTE_SOCKET));
  const netcat = rejectControl(domain, 'netcat', uriParam(uri, 'netcat') ?? 'nc');
  const driverUri = rejectControl(domain, 'the driver URI', driverUriForServer(uri));
  // OpenBSD netcat waits forever after stdin closes unless told `-q 0`; others lack -q.
  const netcatScript =
    `if ${shellQuote(netcat)} -q 2>&1 | grep 'requires an argument' >/dev/null 2>&1; then quit_arg=-q0; else quit_arg=; fi; ` +
    `exec ${shellQuote(netcat)} $quit_arg -U ${shellQuote(socket)}`;
  const helperScript = `exec virt-ssh-helper${readOnly ? ' -r' : ''} ${shellQuote(driverUri)}`;
  let script: string;
  if (mode === 'netcat') {
    script = netcatScript;
  } else if (driverUri === '') {
    // virt-ssh-helper picks the daemon from the driver URI; without one only netcat can go.
    if (mode === 'native')
      throw sshParamError(domain, 'proxy=native needs a driver URI (e.g. qemu+ssh://host/system); use proxy=netcat with socket=');
    script = netcatScript;
  } else if (mode === 'native') {
    script = helperScript;
  } else {
    script = `if command -v virt-ssh-helper >/dev/null 2>&1; then ${helperScript}; else ${netcatScript}; fi`;
  }
  return `sh -c ${shellQuote(script)}`;
}
