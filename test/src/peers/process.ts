import { spawn } from 'node:child_process';

export interface ProcessResult {
  /** Exit status, or null when the process ended by a signal (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the process was killed because it outlived `timeoutMs`. */
  timedOut: boolean;
}

export interface RunProcessOptions {
  /** Fed to stdin, which is then closed; without it stdin is /dev/null (nothing may prompt and hang). */
  input?: string | undefined;
  /** Complete environment of the child (callers merge with process.env themselves). */
  env?: NodeJS.ProcessEnv | undefined;
  cwd?: string;
  /** The child gets SIGKILL after this long; the result then has `timedOut: true`. */
  timeoutMs?: number | undefined;
}

export const defaultPeerTimeoutMs = 15_000;

/**
 * Runs a program asynchronously and collects its output. Always asynchronous: a synchronous
 * spawn would block the event loop and deadlock a server of ours running in the same process.
 */
export function runProcess(command: string, args: readonly string[], options: RunProcessOptions = {}): Promise<ProcessResult> {
  const timeoutMs = options.timeoutMs ?? defaultPeerTimeoutMs;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);

    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${command}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        timedOut,
      });
    });
    if (options.input !== undefined && child.stdin) {
      // The child may exit before reading everything (e.g. auth refused): that is not our error.
      child.stdin.on('error', () => {});
      child.stdin.end(options.input);
    }
  });
}

/** One line describing a result, for assertion messages (output is trimmed to stay readable). */
export function describeResult(result: ProcessResult): string {
  const ending = result.timedOut ? 'timed out' : result.signal ? `killed by ${result.signal}` : `exit ${result.code}`;
  const clip = (text: string) => (text.length > 2000 ? `${text.slice(0, 2000)}…` : text).trim();
  return `${ending}; stdout: ${JSON.stringify(clip(result.stdout))}; stderr: ${JSON.stringify(clip(result.stderr))}`;
}

/** Environment for a libvirt client: English messages, and no default URI leaking in from the host. */
export function libvirtClientEnv(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  delete env.LIBVIRT_DEFAULT_URI;
  delete env.VIRSH_DEFAULT_CONNECT_URI;
  delete env.LIBVIRT_AUTH_FILE;
  return { ...env, ...overrides };
}
