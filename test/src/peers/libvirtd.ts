import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';

import { requireExecutable } from './executables.js';
import { describeResult, runProcess } from './process.js';
import type { TestPki } from './pki.js';
import { delay, freePort, tempDir, waitFor } from './util.js';

export type LibvirtdAuth = 'none' | 'sasl' | 'polkit';
export type LibvirtdTransport = 'unix' | 'unix-ro' | 'tcp' | 'tls';
export type LibvirtdConfigValue = string | number | boolean | readonly string[];
export type LibvirtdDriverModule = 'storage' | 'qemu';

/** libvirt's fixed system folders a driver module keeps state in; private per daemon when modules load. */
const systemStateFolders = ['/etc/libvirt', '/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt', '/var/log/libvirt'];

/** Where Debian installs libvirt's connection-driver modules, or undefined. */
export function libvirtDriverModuleDir(): string | undefined {
  for (const libraryDirectory of ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib']) {
    const folder = `${libraryDirectory}/libvirt/connection-driver`;
    if (existsSync(folder)) return folder;
  }
  return undefined;
}

export interface PrivateLibvirtdOptions {
  auth_unix_rw: LibvirtdAuth;
  /** Defaults to auth_unix_rw. */
  auth_unix_ro?: LibvirtdAuth;
  /** Plain TCP listener on 127.0.0.1 at a free port. */
  listenTcp?: boolean;
  /** TLS listener on 127.0.0.1 at a free port; needs `tls`. */
  listenTls?: boolean;
  /** Default 'sasl' (libvirtd then insists on a SASL security layer: SCRAM alone is refused). */
  auth_tcp?: 'none' | 'sasl';
  /** Default 'none': the client certificate is the credential. */
  auth_tls?: 'none' | 'sasl';
  /** SASL users created in a private sasldb, {name: password}. */
  saslUsers?: Record<string, string>;
  /** SASL mechanisms offered, default ['scram-sha-256']. */
  saslMechs?: string[];
  /** sasl_allowed_username_list: matched against the name exactly as the client sent it. */
  allowedUsernames?: string[];
  /** Certificates for the TLS listener (server cert/key and CA). */
  tls?: TestPki;
  /** Written last into libvirtd.conf, e.g. {tls_allowed_dn_list: ['CN=client1,O=virtauth,C=GB']}. */
  extraConfig?: Record<string, LibvirtdConfigValue>;
  /** log_outputs level: 1 debug, 2 info, 3 warning (default), 4 error. */
  logLevel?: 1 | 2 | 3 | 4;
  /**
   * Connection-driver modules to load besides the built-in test driver (default none). They keep
   * state in libvirt's fixed system folders (/etc/libvirt, /run/libvirt, /var/lib/libvirt, ...),
   * so the daemon then runs in a private mount namespace over fresh, empty ones: several can run
   * side by side and nothing of theirs reaches the host.
   */
  drivers?: readonly LibvirtdDriverModule[];
  /** qemu.conf for the qemu driver (in the private /etc/libvirt). */
  qemuConfig?: Record<string, LibvirtdConfigValue>;
  /** More environment for libvirtd, e.g. DBUS_SYSTEM_BUS_ADDRESS for its polkit access driver. */
  env?: Record<string, string>;
  /** libvirtd exits by itself after this many idle seconds: a safety net if a test run dies. */
  idleTimeoutSeconds?: number;
  startTimeoutMs?: number;
}

const liveDaemons = new Set<PrivateLibvirtd>();

// If the test process dies without stop(), do not leave daemons behind (kill() is synchronous).
process.once('exit', () => {
  for (const daemon of liveDaemons) {
    daemon.killNow();
  }
});

function formatConfigValue(key: string, value: LibvirtdConfigValue): string {
  const quote = (text: string) => {
    if (/["\n\\]/.test(text)) {
      throw new Error(`libvirtd.conf value for ${key} may not contain quotes, backslashes or newlines: ${JSON.stringify(text)}`);
    }
    return `"${text}"`;
  };
  if (typeof value === 'boolean') {
    return value ? '1' : '0';
  }
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) {
      throw new Error(`libvirtd.conf value for ${key} must be an integer, got ${value}`);
    }
    return String(value);
  }
  if (typeof value === 'string') {
    return quote(value);
  }
  return `[${value.map(quote).join(', ')}]`;
}

function processIsGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  // A daemon reparented to a PID 1 that does not reap stays a zombie: that counts as gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A real libvirtd of our own: its own config, sockets, SASL database, ports and log, in a short
 * temp dir, with a driver directory of its own so only the built-in `test:///default` driver and
 * the modules in `drivers` load.
 * Needs root. Several can run side by side.
 */
export class PrivateLibvirtd {
  private stopped = false;

  private constructor(
    readonly dir: string,
    readonly pid: number,
    readonly rwSocket: string,
    readonly roSocket: string,
    readonly tcpPort: number | undefined,
    readonly tlsPort: number | undefined,
    readonly logFile: string,
    private readonly pki: TestPki | undefined,
  ) {}

  static async start(options: PrivateLibvirtdOptions): Promise<PrivateLibvirtd> {
    if (process.getuid?.() !== 0) {
      throw new Error(
        'PrivateLibvirtd needs root: libvirtd writes /run/libvirt/common/system.token and checks peer credentials as root; run the interop tests as root (CI does)',
      );
    }
    const libvirtd = requireExecutable('libvirtd', 'libvirt-daemon');
    if (options.listenTls && options.tls === undefined) {
      throw new Error('PrivateLibvirtd: listenTls needs `tls` (a TestPki) for the server certificate');
    }
    const wantsSasl = [
      options.auth_unix_rw,
      options.auth_unix_ro,
      options.listenTcp ? (options.auth_tcp ?? 'sasl') : undefined,
      options.listenTls ? options.auth_tls : undefined,
    ].includes('sasl');
    if (Object.keys(options.saslUsers ?? {}).length > 0 && !wantsSasl) {
      throw new Error('PrivateLibvirtd: saslUsers given but no listener uses auth "sasl"');
    }

    const dir = await tempDir('vl');
    try {
      const socketDir = join(dir, 'sock');
      const saslDir = join(dir, 'sasl');
      const driverDir = join(dir, 'drivers');
      await Promise.all([mkdir(socketDir), mkdir(saslDir), mkdir(driverDir)]);
      const modules = options.drivers ?? [];
      if (modules.length > 0) await PrivateLibvirtd.linkDriverModules(driverDir, modules);
      const rwSocket = join(socketDir, 'libvirt-sock');
      const roSocket = join(socketDir, 'libvirt-sock-ro');
      if (Buffer.byteLength(rwSocket) >= 108) {
        throw new Error(`socket path ${rwSocket} is too long for a unix socket (108 bytes)`);
      }

      if (wantsSasl) {
        await PrivateLibvirtd.writeSaslConfig(saslDir, options);
      }

      const tcpPort = options.listenTcp ? await freePort() : undefined;
      const tlsPort = options.listenTls ? await freePort() : undefined;
      const logFile = join(dir, 'log');
      const configFile = join(dir, 'libvirtd.conf');
      await writeFile(configFile, PrivateLibvirtd.configText(options, { socketDir, logFile, tcpPort, tlsPort }));

      const pidFile = join(dir, 'libvirtd.pid');
      const idleTimeout = options.idleTimeoutSeconds ?? 600;
      // --daemon returns once the listeners exist; errors go to the log file, quoted below.
      const daemonArgs = ['--daemon', '--listen', '--config', configFile, '--pid-file', pidFile, '--timeout', String(idleTimeout)];
      const [command, args] =
        modules.length > 0 ? await PrivateLibvirtd.inPrivateState(dir, libvirtd, daemonArgs, options) : [libvirtd, daemonArgs];
      const launch = await runProcess(command, args, {
        env: { ...process.env, ...options.env, SASL_CONF_PATH: saslDir, LIBVIRT_DRIVER_DIR: driverDir, LC_ALL: 'C' },
        timeoutMs: options.startTimeoutMs ?? 15_000,
      });
      if (launch.code !== 0) {
        const log = existsSync(logFile) ? await readFile(logFile, 'utf8') : '(no log written)';
        throw new Error(`libvirtd did not start (${describeResult(launch)}); its log:\n${log.slice(-3000)}`);
      }

      const startTimeoutMs = options.startTimeoutMs ?? 15_000;
      const pid = await waitFor(
        async () => {
          const text = await readFile(pidFile, 'utf8');
          return Number.parseInt(text.trim(), 10) || undefined;
        },
        startTimeoutMs,
        `libvirtd pid file ${pidFile}`,
      );
      const daemon = new PrivateLibvirtd(dir, pid, rwSocket, roSocket, tcpPort, tlsPort, logFile, options.tls);
      liveDaemons.add(daemon);
      try {
        await waitFor(() => existsSync(rwSocket) && existsSync(roSocket), startTimeoutMs, 'libvirtd unix sockets');
        for (const port of [tcpPort, tlsPort]) {
          if (port !== undefined) {
            await waitFor(() => acceptsConnections(port), startTimeoutMs, `libvirtd listening on 127.0.0.1:${port}`);
          }
        }
      } catch (error) {
        await daemon.stop();
        throw error;
      }
      return daemon;
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** The driver folder holds only the wanted modules: libvirtd loads whatever it finds there. */
  private static async linkDriverModules(driverDir: string, modules: readonly LibvirtdDriverModule[]): Promise<void> {
    const installed = libvirtDriverModuleDir();
    for (const module of modules) {
      const file = `libvirt_driver_${module}.so`;
      if (installed === undefined || !existsSync(join(installed, file))) {
        throw new Error(
          `libvirt's ${module} driver module ${file} is not installed: install Debian package ${module === 'qemu' ? 'libvirt-daemon-driver-qemu' : 'libvirt-daemon'}`,
        );
      }
      await symlink(join(installed, file), join(driverDir, file));
    }
  }

  /**
   * The command that starts libvirtd in a private mount namespace, with a tmpfs over each of
   * libvirt's system folders and our own /etc/libvirt (holding qemu.conf). libvirtd --daemon stays
   * in the namespace; the mounts go when it exits. A missing mount point is created first: an
   * empty folder libvirtd itself would create anyway.
   */
  private static async inPrivateState(
    dir: string,
    libvirtd: string,
    daemonArgs: readonly string[],
    options: PrivateLibvirtdOptions,
  ): Promise<[string, string[]]> {
    const unshare = requireExecutable('unshare', 'util-linux');
    const etcDir = join(dir, 'etc');
    await mkdir(etcDir);
    const qemuSettings = options.qemuConfig ?? {};
    await writeFile(
      join(etcDir, 'qemu.conf'),
      Object.entries(qemuSettings)
        .map(([key, value]) => `${key} = ${formatConfigValue(key, value)}\n`)
        .join(''),
    );
    for (const folder of systemStateFolders) await mkdir(folder, { recursive: true });
    // The fixed folders are plain words; our own paths travel in argv, so nothing needs quoting.
    const tmpfsMounts = systemStateFolders
      .filter((folder) => folder !== '/etc/libvirt')
      .map((folder) => `mount -t tmpfs -o mode=0755 tmpfs ${folder}`);
    const script = `${tmpfsMounts.join(' && ')} && mount --bind "$1" /etc/libvirt && shift && exec "$@"`;
    return [unshare, ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', etcDir, libvirtd, ...daemonArgs]];
  }

  private static async writeSaslConfig(saslDir: string, options: PrivateLibvirtdOptions): Promise<void> {
    const databaseFile = join(saslDir, 'passwd.db');
    const mechanisms = options.saslMechs ?? ['scram-sha-256'];
    for (const mechanism of mechanisms) {
      if (!/^[A-Za-z0-9_-]+$/.test(mechanism)) {
        throw new Error(`SASL mechanism ${JSON.stringify(mechanism)} is not a mechanism name`);
      }
    }
    // SASL_CONF_PATH=saslDir makes cyrus-sasl read saslDir/libvirt.conf (libvirt's SASL app name).
    await writeFile(join(saslDir, 'libvirt.conf'), `mech_list: ${mechanisms.join(' ')}\nsasldb_path: ${databaseFile}\n`);

    const saslpasswd2 = Object.keys(options.saslUsers ?? {}).length > 0 ? requireExecutable('saslpasswd2', 'sasl2-bin') : '';
    for (const [name, password] of Object.entries(options.saslUsers ?? {})) {
      if (!/^[A-Za-z0-9._-]+$/.test(name)) {
        throw new Error(`SASL user name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-'`);
      }
      // The entry is stored as name@<this host's name> (realm = host name); clients log in as plain `name`.
      const result = await runProcess(saslpasswd2, ['-p', '-c', '-f', databaseFile, '-a', 'libvirt', name], { input: password });
      if (result.code !== 0) {
        throw new Error(`saslpasswd2 could not create SASL user ${name}: exit ${result.code}, ${result.stderr.trim()}`);
      }
    }
  }

  private static configText(
    options: PrivateLibvirtdOptions,
    paths: { socketDir: string; logFile: string; tcpPort: number | undefined; tlsPort: number | undefined },
  ): string {
    const settings: Record<string, LibvirtdConfigValue> = {
      unix_sock_dir: paths.socketDir,
      unix_sock_rw_perms: '0777',
      unix_sock_ro_perms: '0777',
      unix_sock_admin_perms: '0700',
      auth_unix_rw: options.auth_unix_rw,
      auth_unix_ro: options.auth_unix_ro ?? options.auth_unix_rw,
      listen_tcp: options.listenTcp === true,
      listen_tls: options.listenTls === true,
      listen_addr: '127.0.0.1',
      log_outputs: `${options.logLevel ?? 3}:file:${paths.logFile}`,
    };
    if (paths.tcpPort !== undefined) {
      settings.tcp_port = String(paths.tcpPort);
      settings.auth_tcp = options.auth_tcp ?? 'sasl';
    }
    if (paths.tlsPort !== undefined && options.tls !== undefined) {
      settings.tls_port = String(paths.tlsPort);
      settings.auth_tls = options.auth_tls ?? 'none';
      settings.key_file = options.tls.serverKeyFile;
      settings.cert_file = options.tls.serverCertFile;
      settings.ca_file = options.tls.caCertFile;
    }
    if (options.allowedUsernames !== undefined) {
      settings.sasl_allowed_username_list = options.allowedUsernames;
    }
    Object.assign(settings, options.extraConfig ?? {});
    return Object.entries(settings)
      .map(([key, value]) => `${key} = ${formatConfigValue(key, value)}\n`)
      .join('');
  }

  /**
   * A client URI for this daemon, e.g. `test+unix:///default?socket=...`. `driverPath` is the URI
   * the daemon opens (default `test:///default`); `params` are added to the query.
   */
  uri(driverPath = 'test:///default', transport: LibvirtdTransport = 'unix', params: Record<string, string> = {}): string {
    const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(driverPath);
    if (match === null || match[2] !== '') {
      throw new Error(`driverPath ${JSON.stringify(driverPath)} must look like 'test:///default' (a driver URI without host)`);
    }
    const [, scheme, , path = '/', existingQuery] = match;
    const query: string[] = existingQuery ? [existingQuery] : [];
    const encode = (value: string) => encodeURIComponent(value).replaceAll('%2F', '/');
    let authority: string;
    switch (transport) {
      case 'unix':
      case 'unix-ro':
        authority = '';
        query.push(`socket=${encode(transport === 'unix' ? this.rwSocket : this.roSocket)}`);
        break;
      case 'tcp':
        if (this.tcpPort === undefined) {
          throw new Error('this libvirtd was started without listenTcp');
        }
        authority = `127.0.0.1:${this.tcpPort}`;
        break;
      case 'tls':
        if (this.tlsPort === undefined || this.pki === undefined) {
          throw new Error('this libvirtd was started without listenTls');
        }
        authority = `localhost:${this.tlsPort}`;
        if (params.pkipath === undefined) {
          query.push(`pkipath=${encode(this.pki.client.pkiPath)}`);
        }
        break;
    }
    for (const [key, value] of Object.entries(params)) {
      query.push(`${encodeURIComponent(key)}=${encode(value)}`);
    }
    const transportName = transport === 'unix-ro' ? 'unix' : transport;
    return `${scheme}+${transportName}://${authority}${path}${query.length > 0 ? `?${query.join('&')}` : ''}`;
  }

  /** The daemon's log so far (level from options.logLevel); handy in assertion messages. */
  async logText(): Promise<string> {
    try {
      return await readFile(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGTERM, wait for the daemon to exit (SIGKILL after 5 s), then remove its directory. */
  async stop(): Promise<void> {
    if (this.stopped) {
      return;
    }
    this.stopped = true;
    liveDaemons.delete(this);
    if (!processIsGone(this.pid)) {
      process.kill(this.pid, 'SIGTERM');
      try {
        await waitFor(() => processIsGone(this.pid), 5_000, `libvirtd ${this.pid} to exit`);
      } catch {
        if (!processIsGone(this.pid)) {
          process.kill(this.pid, 'SIGKILL');
          await delay(50);
        }
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /** @internal Synchronous last-resort kill used when the test process exits. */
  killNow(): void {
    if (!this.stopped && !processIsGone(this.pid)) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
  }
}
