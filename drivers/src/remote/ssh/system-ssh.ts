// `+ssh`: the system ssh binary carries the connection, as libvirt's client runs it. ssh asks
// its own questions (terminal or SSH_ASKPASS); the credential callback is not involved.

import { spawn } from 'node:child_process';
import { ErrorCode, ErrorDomain, VirError, uriParam, type ConnectUri } from '@virtauth/core';
import type { OpenedTransport, TransportOptions } from '../transport.js';
import { ExitAwareStream, StderrTail } from './exit-aware-stream.js';
import { remoteProxyCommand, sshParamError } from './remote-command.js';

/** What ssh may see of our environment: what it needs to find keys, agents and askpass helpers. */
const PASSED_ENVIRONMENT = [
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'LANG',
  'LC_ALL',
  'TMPDIR',
  'XDG_RUNTIME_DIR',
  'KRB5CCNAME',
  'SSH_AUTH_SOCK',
  'SSH_ASKPASS',
  'SSH_ASKPASS_REQUIRE',
  'OPENSSL_CONF',
  'DISPLAY',
  'XAUTHORITY',
];

function sshError(detail: string): VirError {
  return new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.RPC, detail });
}

/** ssh's argument list: libvirt's options, then `--` so a host can never be read as an option. */
export function systemSshArguments(uri: ConnectUri, readOnly: boolean): string[] {
  const args: string[] = [];
  if (uri.port !== null) args.push('-p', String(uri.port));
  if (uri.user) args.push('-l', uri.user);
  const keyfile = uriParam(uri, 'keyfile');
  if (keyfile) args.push('-i', keyfile);
  args.push('-T', '-e', 'none');
  if (uriParam(uri, 'no_tty') === '1') args.push('-o', 'BatchMode=yes');
  if (uriParam(uri, 'no_verify') === '1') args.push('-o', 'StrictHostKeyChecking=no');
  args.push('--', uri.host || 'localhost', remoteProxyCommand(uri, readOnly, ErrorDomain.SSH));
  return args;
}

export async function openSystemSsh(uri: ConnectUri, opts: TransportOptions): Promise<OpenedTransport> {
  const binary = uriParam(uri, 'command') || 'ssh';
  if (binary.startsWith('-')) throw sshParamError(ErrorDomain.SSH, `command '${binary}' is not an ssh binary`);
  const args = systemSshArguments(uri, opts.readOnly);
  const env: NodeJS.ProcessEnv = {};
  for (const name of PASSED_ENVIRONMENT) if (process.env[name] !== undefined) env[name] = process.env[name];
  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  const stderr = new StderrTail();
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  const exited = new Promise<Error | null>((resolve) => {
    child.once('error', (e) => resolve(sshError(`Cannot run '${binary}': ${e.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) resolve(null);
      else resolve(sshError(stderr.text() || `${binary} ${signal ? `was killed by ${signal}` : `exited with status ${code}`}`));
    });
  });
  // A binary that cannot start at all fails here rather than at the first call.
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => reject(sshError(`Cannot run '${binary}': ${e.message}`)));
  });
  const onAbort = () => child.kill('SIGTERM');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const stream = new ExitAwareStream(child.stdout, child.stdin, exited, () => {
    opts.signal?.removeEventListener('abort', onAbort);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  return { socket: stream, info: { kind: 'ssh', secure: true } };
}
