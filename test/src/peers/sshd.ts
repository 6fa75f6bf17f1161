// A private OpenSSH server for the SSH transport tests: its own host key, config and loopback
// port, run in the foreground (`sshd -D -e -f`), never the system's sshd. Test users log in with
// a password, a key, or keyboard-interactive (PAM's password prompt). Optionally it runs in a
// mount namespace of its own where /run/libvirt is a given directory, so virt-ssh-helper on
// the "remote" side finds a private libvirtd at libvirt's default socket path.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { requireExecutable } from './executables.js';
import { describeResult, runProcess } from './process.js';
import { freePort, tempDir, waitFor } from './util.js';

export type SshLoginMethod = 'password' | 'publickey' | 'keyboard-interactive';

export interface SshTestUser {
  name: string;
  /** The one way sshd lets this user in. */
  method: SshLoginMethod;
  /** For password and keyboard-interactive users. */
  password?: string;
}

export interface PrivateSshdOptions {
  users: readonly SshTestUser[];
  /** Whether root may log in with the test key (to reach root-only sockets). */
  rootByKey?: boolean;
  /** Bind-mounted over /run/libvirt in sshd's own mount namespace. */
  runLibvirtDir?: string;
  /** sshd's MaxAuthTries (default 6). */
  maxAuthTries?: number;
}

const liveServers = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveServers) child.kill('SIGKILL');
});

/** Creates (or resets) a local test account: no home, /bin/sh, the given password or none. */
async function ensureUser(user: SshTestUser): Promise<void> {
  if (!/^vssh-[a-z0-9-]{1,20}$/.test(user.name)) throw new Error(`test SSH user names are vssh-…: ${user.name}`);
  const exists = await runProcess('getent', ['passwd', user.name]);
  if (exists.code !== 0) {
    const created = await runProcess('useradd', ['--no-create-home', '--home-dir', '/nonexistent', '--shell', '/bin/sh', user.name]);
    // Another test file may have created it meanwhile.
    if (created.code !== 0 && !/already exists/.test(created.stderr)) throw new Error(`useradd ${user.name}: ${describeResult(created)}`);
  }
  if (user.password !== undefined) {
    const set = await runProcess('chpasswd', [], { input: `${user.name}:${user.password}\n` });
    if (set.code !== 0) throw new Error(`chpasswd ${user.name}: ${describeResult(set)}`);
  }
}

export async function sshKeygen(path: string, type: 'ed25519' | 'rsa' = 'ed25519', passphrase = ''): Promise<string> {
  const result = await runProcess(requireExecutable('ssh-keygen', 'openssh-client'), [
    '-q',
    '-t',
    type,
    '-N',
    passphrase,
    '-C',
    'virtauth-test',
    '-f',
    path,
  ]);
  if (result.code !== 0) throw new Error(`ssh-keygen: ${describeResult(result)}`);
  return (await readFile(`${path}.pub`, 'utf8')).trim();
}

export class PrivateSshd {
  private stopped = false;
  private output = '';

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly child: ChildProcess,
    /** The server's host public key line (`ssh-ed25519 AAAA…`). */
    readonly hostPublicKey: string,
    /** A client key every publickey user (and root, when allowed) accepts. */
    readonly clientKey: string,
  ) {
    child.stderr?.on('data', (chunk: Buffer) => {
      this.output = (this.output + chunk.toString('utf8')).slice(-200_000);
    });
  }

  static async start(options: PrivateSshdOptions): Promise<PrivateSshd> {
    if (process.getuid?.() !== 0) throw new Error('PrivateSshd needs root (sshd switches to the test users)');
    const sshd = requireExecutable('sshd', 'openssh-server');
    const dir = await tempDir('vssh');
    // The users' shells run the proxy command from here; they must be able to traverse it.
    await chmod(dir, 0o755);
    const hostKey = join(dir, 'host_ed25519');
    const hostPublicKey = await sshKeygen(hostKey);
    const clientKey = join(dir, 'client_ed25519');
    const clientPublicKey = await sshKeygen(clientKey);
    const keysDir = join(dir, 'authorized');
    await mkdir(keysDir, { mode: 0o755 });
    for (const user of options.users) {
      await ensureUser(user);
      if (user.method === 'publickey') await writeFile(join(keysDir, user.name), `${clientPublicKey}\n`, { mode: 0o644 });
    }
    if (options.rootByKey) await writeFile(join(keysDir, 'root'), `${clientPublicKey}\n`, { mode: 0o644 });
    // sshd refuses to start without its privilege separation directory.
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const port = await freePort();
    const matchBlocks = options.users.map((u) => `Match User ${u.name}\n  AuthenticationMethods ${u.method}\n`).join('');
    const config = [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      'PidFile none',
      // PAM answers keyboard-interactive with its password prompt; password logins check /etc/shadow through it too.
      'UsePAM yes',
      'KbdInteractiveAuthentication yes',
      'PasswordAuthentication yes',
      'PubkeyAuthentication yes',
      `PermitRootLogin ${options.rootByKey ? 'prohibit-password' : 'no'}`,
      'StrictModes no',
      `AuthorizedKeysFile ${keysDir}/%u`,
      `MaxAuthTries ${options.maxAuthTries ?? 6}`,
      'MaxSessions 64',
      'MaxStartups 100:30:200',
      'LogLevel VERBOSE',
      'PrintMotd no',
      'AcceptEnv none',
      'X11Forwarding no',
      'AllowAgentForwarding no',
      'AllowTcpForwarding no',
      'Subsystem sftp internal-sftp',
      matchBlocks,
    ].join('\n');
    const configFile = join(dir, 'sshd_config');
    await writeFile(configFile, `${config}\n`);
    const check = await runProcess(sshd, ['-t', '-f', configFile]);
    if (check.code !== 0) throw new Error(`sshd -t rejected the test config: ${describeResult(check)}`);

    let child: ChildProcess;
    if (options.runLibvirtDir) {
      const unshare = requireExecutable('unshare', 'util-linux');
      // A private mount namespace: the bind mount is invisible to the rest of the machine.
      child = spawn(
        unshare,
        [
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          'mkdir -p /run/libvirt && mount --bind "$1" /run/libvirt && exec "$2" -D -e -f "$3"',
          'sh',
          options.runLibvirtDir,
          sshd,
          configFile,
        ],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
    } else {
      child = spawn(sshd, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
    liveServers.add(child);
    const server = new PrivateSshd(dir, port, child, hostPublicKey, clientKey);
    try {
      await waitFor(
        () => server.output.includes(`Server listening on 127.0.0.1 port ${port}`) || child.exitCode !== null,
        15_000,
        'sshd listening',
      );
      if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}: ${server.output}`);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  /** sshd's log so far (LogLevel VERBOSE): logins, methods, failures. */
  get log(): string {
    return this.output;
  }

  /** How many logins sshd accepted so far. */
  acceptedLogins(user?: string): number {
    const re = new RegExp(`Accepted \\S+ for ${user ?? '\\S+'} from`, 'g');
    return this.output.match(re)?.length ?? 0;
  }

  /** A known_hosts line for this server, as ssh (and libssh) write it for a non-22 port. */
  knownHostsLine(): string {
    return `[127.0.0.1]:${this.port} ${this.hostPublicKey.split(' ').slice(0, 2).join(' ')}`;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveServers.delete(this.child);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise((resolve) => this.child.once('close', resolve));
      this.child.kill('SIGTERM');
      await gone;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
