// virtauthd run as systemd runs it, without systemd as PID 1: sockets passed by
// systemd-socket-activate and used by real virsh, readiness on a stand-in NOTIFY_SOCKET, exit on
// --timeout, SIGHUP reloads that spare existing clients, journal entries on a stand-in journal
// socket, the units checked by systemd-analyze, and one-line startup errors.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ExecutionContext } from 'ava';
import { CredentialType, VirError } from '@virtauth/core';
import { decodeJournalEntry, UNIT_FILES } from '@virtauth/daemon';
import { openAuth, type Connection } from 'virtauth';

import {
  DatagramReceiver,
  TestPki,
  describeResult,
  interopTest,
  libvirtClientEnv,
  requireExecutable,
  runProcess,
  runVirsh,
  tempDir,
  whenEmitted,
} from './peers/index.js';
import { addVirtauthUser } from './sasl-support.js';

// Serial: each test starts daemons, certtool or systemd's tools, and run all at once they starve
// the other test files' daemons of CPU on a small machine.

const daemonMain = fileURLToPath(new URL('../../../daemon/dist/src/main.js', import.meta.url));
const installer = fileURLToPath(new URL('../../../daemon/scripts/install-service.mjs', import.meta.url));

type ConfigValue = string | number | readonly string[];

function configText(settings: Record<string, ConfigValue>): string {
  const quote = (text: string) => `"${text}"`;
  return Object.entries(settings)
    .map(
      ([key, value]) =>
        `${key} = ${typeof value === 'number' ? value : typeof value === 'string' ? quote(value) : `[${value.map(quote).join(', ')}]`}\n`,
    )
    .join('');
}

/** A virtauthd (or the program that execs it) run as a child process, its output collected. */
class DaemonProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      this.stdout += text;
      child.emit('output');
    });
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.stderr += text;
      child.emit('output');
    });
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  static start(t: ExecutionContext, command: string, args: string[], env: NodeJS.ProcessEnv = {}): DaemonProcess {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const daemon = new DaemonProcess(child);
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return daemon;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  describe(): string {
    return `stdout ${JSON.stringify(this.stdout)}, stderr ${JSON.stringify(this.stderr)}`;
  }

  async waitForOutput(pattern: RegExp, what: string, timeoutMs = 60_000): Promise<void> {
    try {
      await this.whenOutput(() => pattern.test(this.stdout + this.stderr) || !this.running, timeoutMs, what);
    } catch (error) {
      throw new Error(`${(error as Error).message}; ${this.describe()}`, { cause: error });
    }
    if (!pattern.test(this.stdout + this.stderr)) throw new Error(`exited before ${what}: ${this.describe()}`);
  }

  /** Resolves once `condition` holds, checked as output arrives and when the process has ended. */
  private whenOutput(condition: () => boolean, timeoutMs: number, what: string): Promise<unknown> {
    return whenEmitted(this.child, ['output', 'close'], condition, timeoutMs, what);
  }

  /** The JSON log lines on stderr with this event. */
  events(event: string): Record<string, unknown>[] {
    return this.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((record) => record.event === event);
  }

  async waitForEvent(event: string, count = 1): Promise<Record<string, unknown>[]> {
    await this.whenOutput(() => this.events(event).length >= count || !this.running, 60_000, `${count} '${event}' log line(s)`).catch(
      (error: Error) => {
        throw new Error(`${error.message}; ${this.describe()}`);
      },
    );
    const found = this.events(event);
    if (found.length < count) throw new Error(`exited before '${event}': ${this.describe()}`);
    return found;
  }
}

function notifications(receiver: DatagramReceiver): string[] {
  return receiver.received.map((datagram) => datagram.toString('utf8'));
}

async function notifyReceiver(t: ExecutionContext, dir: string, abstract = false): Promise<DatagramReceiver> {
  const receiver = await DatagramReceiver.start(abstract ? `@virtauth-test-notify-${process.pid}-${Date.now()}` : join(dir, 'notify'));
  t.teardown(() => receiver.close());
  return receiver;
}

function credentials(authname: string, passphrase: string) {
  return {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds: { type: number; result?: string | null }[]) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? authname : passphrase;
    },
  };
}

// --- socket activation -------------------------------------------------------------------------

interopTest.serial(
  'systemd-socket-activate passes named sockets; virsh connects through them; the daemon leaves them in place',
  ['virsh', 'systemd-socket-activate', 'python3'],
  async (t) => {
    const dir = await tempDir('sa');
    const configFile = join(dir, 'virtauthd.conf');
    await writeFile(configFile, configText({ unix_sock_dir: dir, log_level: 2 }));
    const notify = await notifyReceiver(t, dir);
    const rw = join(dir, 'virtauth-sock');
    const ro = join(dir, 'virtauth-sock-ro');
    const activator = DaemonProcess.start(
      t,
      'systemd-socket-activate',
      [
        '-l',
        rw,
        '-l',
        ro,
        '--fdname=virtauthd.socket:virtauthd-ro.socket',
        '-E',
        'NOTIFY_SOCKET',
        process.execPath,
        daemonMain,
        '--config',
        configFile,
      ],
      { NOTIFY_SOCKET: notify.path },
    );
    await activator.waitForOutput(/Listening on .*virtauth-sock-ro/, 'systemd-socket-activate listening');
    t.is(notifications(notify).length, 0, 'nothing runs before the first connection');

    // The first connection starts the daemon, which takes over the socket with virsh waiting on it.
    const hostname = await runVirsh(['hostname'], { uri: `test+unix:///default?socket=${rw}`, timeoutMs: 60_000 });
    t.is(hostname.code, 0, describeResult(hostname));
    t.true(hostname.stdout.trim().length > 0);
    await notify.waitFor((d) => d.toString().startsWith('READY=1'));
    await activator.waitForOutput(/virtauth-sock-ro \(auth/, 'the listener lines');
    await activator.waitForEvent('daemon.ready');
    t.regex(activator.stdout, new RegExp(`listening on unix ${rw} \\(auth none, from systemd\\)`));
    t.regex(activator.stdout, new RegExp(`listening on unix ${ro} \\(auth none, read-only, from systemd\\)`));
    t.is(activator.events('daemon.ready')[0]?.activated, true);

    const readOnly = await runVirsh(['list', '--all'], { uri: `test+unix:///default?socket=${ro}` });
    t.is(readOnly.code, 0, describeResult(readOnly));
    t.regex(readOnly.stdout, /\btest\b/);

    activator.child.kill('SIGTERM');
    t.like(await activator.exited, { code: 0 });
    await notify.waitFor((d) => d.toString() === 'STOPPING=1');
    t.true(existsSync(rw) && existsSync(ro), "sockets passed by systemd are systemd's: the daemon does not unlink them");
  },
);

interopTest.serial(
  'virtauthd-admin.socket from systemd serves the admin program: virt-admin starts the daemon through it',
  ['virt-admin', 'virsh', 'systemd-socket-activate'],
  async (t) => {
    const dir = await tempDir('sa');
    const configFile = join(dir, 'virtauthd.conf');
    await writeFile(configFile, configText({ unix_sock_dir: dir, log_level: 2 }));
    const adminSocket = join(dir, 'virtauth-admin-sock');
    const activator = DaemonProcess.start(t, 'systemd-socket-activate', [
      '-l',
      adminSocket,
      '--fdname=virtauthd-admin.socket',
      process.execPath,
      daemonMain,
      '--config',
      configFile,
    ]);
    await activator.waitForOutput(/Listening on /, 'systemd-socket-activate listening');
    // The first admin connection starts the daemon, which serves it on the passed socket.
    const virtAdmin = (...args: string[]) =>
      runProcess(requireExecutable('virt-admin', 'libvirt-clients'), ['-c', `virtauthd:///system?socket=${adminSocket}`, ...args], {
        env: libvirtClientEnv(),
        timeoutMs: 60_000,
      });
    const servers = await virtAdmin('srv-list');
    t.is(servers.code, 0, `${describeResult(servers)}\n${activator.describe()}`);
    t.regex(servers.stdout, /\badmin\b[\s\S]*\bvirtauthd\b/);
    t.false(/activation\.admin|closing it/.test(activator.stdout + activator.stderr), 'the admin socket is served, not closed');
    // The other sockets, not passed, are the daemon's own; a client on one shows in client-list.
    await activator.waitForOutput(/virtauth-sock-ro \(auth/, 'the listener lines');
    const list = await runVirsh(['list', '--all'], { uri: `test+unix:///default?socket=${join(dir, 'virtauth-sock')}` });
    t.is(list.code, 0, describeResult(list));
    const clients = await virtAdmin('srv-clients-info', 'virtauthd');
    t.is(clients.code, 0, describeResult(clients));
    t.regex(clients.stdout, /nclients_max\s*: 5000/);

    activator.child.kill('SIGTERM');
    t.like(await activator.exited, { code: 0 });
    t.true(existsSync(adminSocket), "the admin socket systemd passed is systemd's: the daemon does not unlink it");
    t.false(existsSync(join(dir, 'virtauth-sock')), 'the daemon removes the sockets it made itself');
  },
);

interopTest.serial(
  "unnamed sockets are matched by their address; a socket that is not virtauthd's is a one-line error",
  ['virsh', 'systemd-socket-activate'],
  async (t) => {
    const dir = await tempDir('sa');
    const configFile = join(dir, 'virtauthd.conf');
    await writeFile(configFile, configText({ unix_sock_dir: dir }));
    const rw = join(dir, 'virtauth-sock');
    const activator = DaemonProcess.start(t, 'systemd-socket-activate', [
      '-l',
      rw,
      process.execPath,
      daemonMain,
      '--config',
      configFile,
      '--timeout',
      '30',
    ]);
    await activator.waitForOutput(/Listening on /, 'systemd-socket-activate listening');
    const list = await runVirsh(['list', '--all'], { uri: `test+unix:///default?socket=${rw}`, timeoutMs: 60_000 });
    t.is(list.code, 0, describeResult(list));
    t.regex(list.stdout, /\btest\b/);
    // Not passed, so created by the daemon itself, as libvirt does.
    await activator.waitForOutput(/virtauth-sock-ro \(auth/, 'the read-only listener line');
    t.regex(activator.stdout, /listening on unix .*virtauth-sock-ro \(auth none, read-only\):/);
    activator.child.kill('SIGTERM');
    await activator.exited;

    const stranger = join(dir, 'virtqemud-sock');
    const wrong = DaemonProcess.start(t, 'systemd-socket-activate', [
      '-l',
      stranger,
      '--fdname=virtqemud.socket',
      process.execPath,
      daemonMain,
      '--config',
      configFile,
    ]);
    await wrong.waitForOutput(/Listening on /, 'systemd-socket-activate listening');
    const poke = net.connect(stranger);
    poke.on('error', () => {});
    t.teardown(() => poke.destroy());
    const exit = await wrong.exited;
    t.is(exit.code, 1, wrong.describe());
    const lines = wrong.stderr.split('\n').filter((line) => line && !/^(Listening on|Communication attempt|Execing) /.test(line));
    t.deepEqual(lines, [
      `virtauthd: socket activation: descriptor 3 'virtqemud.socket' (unix ${stranger}) is none of virtauthd's sockets (expected one of virtauthd.socket, virtauthd-ro.socket, virtauthd-admin.socket, virtauthd-tcp.socket, virtauthd-tls.socket)`,
    ]);
  },
);

// --- readiness and --timeout -------------------------------------------------------------------

interopTest.serial('NOTIFY_SOCKET gets READY=1 once the sockets accept, then STOPPING=1 on SIGTERM', ['python3'], async (t) => {
  const dir = await tempDir('sn');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, configText({ unix_sock_dir: dir, listen_tcp: 1, tcp_port: 0, auth_tcp: 'none' }));
  const notify = await notifyReceiver(t, dir, true);
  const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile], { NOTIFY_SOCKET: notify.path });
  const ready = (await notify.waitFor((d) => d.toString().startsWith('READY=1'))).toString();
  t.regex(ready, new RegExp(`^READY=1\\nMAINPID=${daemon.child.pid}\\nSTATUS=serving 3 listener\\(s\\)$`));
  // Ready means ready: the socket accepts at once.
  await new Promise<void>((resolve, reject) =>
    net
      .connect(join(dir, 'virtauth-sock'))
      .once('connect', function (this: net.Socket) {
        this.destroy();
        resolve();
      })
      .once('error', reject),
  );
  t.false(notifications(notify).includes('STOPPING=1'));
  daemon.child.kill('SIGTERM');
  t.like(await daemon.exited, { code: 0 });
  await notify.waitFor((d) => d.toString() === 'STOPPING=1');
  t.deepEqual(
    notifications(notify).map((n) => n.split('\n')[0]),
    ['READY=1', 'STOPPING=1'],
  );

  // A NOTIFY_SOCKET nobody listens on is logged and changes nothing else.
  const unheard = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile], {
    NOTIFY_SOCKET: join(dir, 'nobody-listens'),
  });
  const [failed] = await unheard.waitForEvent('systemd.notify.failed');
  t.like(failed, { notification: 'READY=1', msg: 'cannot notify systemd' });
  t.regex(String(failed?.err), /No such file or directory/);
  await unheard.waitForOutput(/listening on tcp/, 'the listeners');
  unheard.child.kill('SIGTERM');
  t.like(await unheard.exited, { code: 0 });
});

interopTest.serial('--timeout exits after that long without a client, never while one is connected', ['root'], async (t) => {
  const dir = await tempDir('st');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, configText({ unix_sock_dir: dir }));
  const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile, '--timeout', '1']);
  await daemon.waitForOutput(/listening on unix .*virtauth-sock-ro/, 'listener lines');
  const client = net.connect(join(dir, 'virtauth-sock'));
  t.teardown(() => client.destroy());
  await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
  // Connected for three times the timeout: still serving.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.true(daemon.running, daemon.describe());
  const left = Date.now();
  client.destroy();
  t.like(await daemon.exited, { code: 0 });
  t.true(Date.now() - left >= 900, `exited ${Date.now() - left} ms after the client left`);
  t.regex(daemon.stderr, /virtauthd: no client for 1 s \(--timeout\), shutting down/);
  t.false(existsSync(join(dir, 'virtauth-sock')), 'its own sockets are removed');

  for (const bad of ['0', '-5', 'soon', '1.5']) {
    const result = await runProcess(process.execPath, [daemonMain, '--config', configFile, `--timeout=${bad}`], { timeoutMs: 60_000 });
    t.is(result.code, 1, describeResult(result));
    t.is(result.stderr, `virtauthd: invalid --timeout '${bad}': expected a number of seconds greater than 0\n`);
  }
});

interopTest.serial('stderr on a terminal gets readable lines; elsewhere pino JSON', ['script'], async (t) => {
  const dir = await tempDir('sy');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, configText({ unix_sock_dir: dir, log_level: 2 }));
  const command = `'${process.execPath}' '${daemonMain}' --config '${configFile}' --timeout 1`;
  const onTerminal = await runProcess('script', ['-qec', command, '/dev/null'], { timeoutMs: 60_000 });
  t.is(onTerminal.code, 0, describeResult(onTerminal));
  t.regex(
    onTerminal.stdout,
    /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: \d+: info : virtauthd is ready event=daemon\.ready listeners=2 activated=false\r?$/m,
  );
  t.false(onTerminal.stdout.includes('{"level"'));
  const piped = await runProcess(process.execPath, [daemonMain, '--config', configFile, '--timeout', '1'], { timeoutMs: 60_000 });
  t.regex(piped.stderr, /^\{"level":30,"time":\d+,"name":"virtauthd","event":"daemon\.ready",/m);
});

// --- SIGHUP ------------------------------------------------------------------------------------

interopTest.serial(
  'SIGHUP with a new CA and certificate, a CRL, then an allowed DN list: new clients see each change, connected clients stay up',
  ['certtool', 'virsh'],
  async (t) => {
    const [oldPki, newPki] = await Promise.all([TestPki.create(), TestPki.create()]);
    t.teardown(() => Promise.all([oldPki.remove(), newPki.remove()]));
    const dir = await tempDir('sh');
    const configFile = join(dir, 'virtauthd.conf');
    const settings = (pki: TestPki) =>
      configText({
        unix_sock_dir: dir,
        listen_tls: 1,
        tls_port: 0,
        listen_addr: '127.0.0.1',
        auth_tls: 'none',
        log_level: 2,
        key_file: pki.serverKeyFile,
        cert_file: pki.serverCertFile,
        ca_file: pki.caCertFile,
      });
    await writeFile(configFile, settings(oldPki));
    const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile]);
    await daemon.waitForOutput(/listening on tls 127\.0\.0\.1:(\d+)/, 'the TLS listener');
    const port = Number(/listening on tls 127\.0\.0\.1:(\d+)/.exec(daemon.stdout)![1]);
    const uri = (pki: TestPki) => `test+tls://localhost:${port}/default?pkipath=${pki.client.pkiPath}`;
    const virshWith = (pki: TestPki) => runVirsh(['hostname'], { uri: uri(pki), timeoutMs: 60_000 });

    const connected: Connection = await openAuth(uri(oldPki), null);
    t.teardown(() => connected.close().catch(() => {}));
    const before = await connected.getHostname();

    let reloads = 0;
    const reloadWith = async (text: string) => {
      await writeFile(configFile, text);
      daemon.child.kill('SIGHUP');
      await daemon.waitForEvent('daemon.reloaded', ++reloads);
    };
    await reloadWith(settings(newPki));

    const withNew = await virshWith(newPki);
    t.is(withNew.code, 0, describeResult(withNew));
    const withOld = await virshWith(oldPki);
    t.not(withOld.code, 0, 'a client trusting only the old CA no longer accepts the server');
    t.is(await connected.getHostname(), before, 'the connection made before the reload still works');
    t.is(daemon.events('daemon.reload.restart_needed').length, 0);

    // A CRL revoking a connected client's certificate: refused from the next connection on.
    const { client: revokedClient, crlFile } = await newPki.revokedClient();
    const revokedUri = `test+tls://localhost:${port}/default?pkipath=${revokedClient.pkiPath}`;
    const connectedRevoked: Connection = await openAuth(revokedUri, null);
    t.teardown(() => connectedRevoked.close().catch(() => {}));
    const withCrl = `${settings(newPki)}crl_file = "${crlFile}"\n`;
    await reloadWith(withCrl);
    const revoked = await runVirsh(['hostname'], { uri: revokedUri, timeoutMs: 60_000 });
    t.not(revoked.code, 0, `a revoked certificate is refused: ${describeResult(revoked)}`);
    t.truthy(await connectedRevoked.getHostname(), 'a client connected before its certificate was revoked stays up');
    t.is((await virshWith(newPki)).code, 0, 'certificates not revoked still get in');

    // A CRL that cannot be read keeps the running credentials.
    await writeFile(configFile, `${settings(newPki)}crl_file = "${join(dir, 'missing-crl.pem')}"\n`);
    daemon.child.kill('SIGHUP');
    const [failed] = await daemon.waitForEvent('daemon.reload.failed');
    t.regex(String(failed?.msg), /Cannot read TLS certificate revocation list '.*missing-crl\.pem'/);
    t.not((await runVirsh(['hostname'], { uri: revokedUri, timeoutMs: 60_000 })).code, 0, 'the CRL in force stays in force');

    // tls_allowed_dn_list: a DN taken off the list is refused from the next connection on, and back.
    const allowOnly = (dn: string) => `${withCrl}tls_allowed_dn_list = ["${dn}"]\n`;
    await reloadWith(allowOnly('C=GB,O=virtauth,CN=someone-else'));
    t.not((await virshWith(newPki)).code, 0, 'a DN no longer allowed is refused');
    t.true(daemon.events('client.refused').some((r) => r.reason === 'tls_allowed_dn_list'));
    await reloadWith(allowOnly(newPki.client.subject));
    const allowedAgain = await virshWith(newPki);
    t.is(allowedAgain.code, 0, describeResult(allowedAgain));
  },
);

interopTest.serial(
  'SIGHUP: a user added to the allow list gets in, connected users stay; a broken file changes nothing',
  ['root'],
  async (t) => {
    const dir = await tempDir('sh');
    const configFile = join(dir, 'virtauthd.conf');
    const settings = (extra: Record<string, ConfigValue>) =>
      configText({
        unix_sock_dir: dir,
        auth_unix_rw: 'sasl',
        sasl_user_db: join(dir, 'users.json'),
        sasl_failure_delay_ms: 0,
        log_level: 2,
        ...extra,
      });
    await writeFile(configFile, settings({ sasl_allowed_username_list: ['alice'] }));
    await addVirtauthUser(configFile, 'alice', 'alice-password');
    await addVirtauthUser(configFile, 'bob', 'bob-password');
    const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile]);
    await daemon.waitForOutput(/listening on unix .*virtauth-sock-ro/, 'listener lines');
    const uri = `test+unix:///default?socket=${join(dir, 'virtauth-sock')}&auth=sasl.SCRAM-SHA-256`;

    const alice = await openAuth(uri, credentials('alice', 'alice-password'));
    t.teardown(() => alice.close().catch(() => {}));
    await t.throwsAsync(openAuth(uri, credentials('bob', 'bob-password')), { instanceOf: VirError, message: /authentication failed/ });

    await writeFile(configFile, settings({ sasl_allowed_username_list: ['alice', 'bob'] }));
    daemon.child.kill('SIGHUP');
    await daemon.waitForEvent('daemon.reloaded');
    const bob = await openAuth(uri, credentials('bob', 'bob-password'));
    t.truthy(await bob.getHostname());
    await bob.close();
    t.truthy(await alice.getHostname(), 'alice, connected before the reload, is still served');

    // uri_allowed_list, the operator's policy of what may be opened, changes live too.
    const otherUri = `test+unix:///${join(dir, 'other.xml').slice(1)}?socket=${join(dir, 'virtauth-sock')}&auth=sasl.SCRAM-SHA-256`;
    await t.throwsAsync(openAuth(otherUri, credentials('alice', 'alice-password')), {
      message: /^access denied: this daemon does not open '.*other\.xml'/,
    });
    await writeFile(
      configFile,
      settings({ sasl_allowed_username_list: ['alice', 'bob'], uri_allowed_list: ['test:///default', `test://${join(dir, 'other.xml')}`] }),
    );
    daemon.child.kill('SIGHUP');
    await daemon.waitForEvent('daemon.reloaded', 2);
    const opened = await openAuth(otherUri, credentials('alice', 'alice-password')).then(
      (conn) => conn.close().then(() => 'opened'),
      (error: Error) => error.message,
    );
    t.false(/access denied/.test(opened), `allowed after the reload: ${opened}`);

    // A broken file: the running settings stay, and the log says why.
    await writeFile(configFile, `${settings({ sasl_allowed_username_list: ['alice'] })}log_outputs = "1:nowhere"\n`);
    daemon.child.kill('SIGHUP');
    const [failed] = await daemon.waitForEvent('daemon.reload.failed');
    t.regex(
      String(failed?.msg),
      /^reload failed, keeping the running configuration: configuration file syntax error: .*log_outputs: '1:nowhere'/,
    );
    const bobAgain = await openAuth(uri, credentials('bob', 'bob-password'));
    await bobAgain.close();

    // Listen settings cannot change live: the reload applies the rest (here a new log output too) and names them.
    const logFile = join(dir, 'log', 'virtauthd.log');
    await writeFile(
      configFile,
      settings({
        sasl_allowed_username_list: ['alice'],
        listen_tcp: 1,
        unix_sock_ro_perms: '0700',
        log_outputs: `2:stderr 2:file:${logFile}`,
      }),
    );
    daemon.child.kill('SIGHUP');
    const [restart] = await daemon.waitForEvent('daemon.reload.restart_needed');
    t.deepEqual(restart?.keys, ['listen_tcp', 'unix_sock_ro_perms']);
    await t.throwsAsync(
      openAuth(uri, credentials('bob', 'bob-password')),
      { message: /authentication failed/ },
      'the allow list was applied',
    );
    t.false(/listening on tcp/.test(daemon.stdout));
    t.truthy(await alice.getHostname());
    const logged = (await readFile(logFile, 'utf8'))
      .split('\n')
      .filter((line) => line)
      .map((line) => JSON.parse(line) as { event?: string; user?: string });
    t.true(
      logged.some((r) => r.event === 'daemon.reloaded'),
      'the new file output took effect with the reload',
    );
    t.true(logged.some((r) => r.event === 'auth.sasl.failed' && r.user === 'bob'));
  },
);

interopTest.serial(
  'SIGHUP re-reads the Cedar policy: an open connection sees the new decisions; a policy that does not parse keeps the old',
  ['root'],
  async (t) => {
    const dir = await tempDir('sh-cedar');
    const configFile = join(dir, 'virtauthd.conf');
    const policyFile = join(dir, 'policy.cedar');
    await writeFile(
      configFile,
      configText({
        unix_sock_dir: dir,
        auth_unix_rw: 'sasl',
        sasl_user_db: join(dir, 'users.json'),
        log_level: 2,
        access_drivers: ['cedar'],
        access_cedar_policy_file: policyFile,
      }),
    );
    await writeFile(policyFile, 'permit (principal == User::"alice", action, resource);\n');
    await addVirtauthUser(configFile, 'alice', 'alice-password');
    const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile]);
    await daemon.waitForOutput(/listening on unix .*virtauth-sock-ro/, 'listener lines');
    const alice = await openAuth(
      `test+unix:///default?socket=${join(dir, 'virtauth-sock')}&auth=sasl.SCRAM-SHA-256`,
      credentials('alice', 'alice-password'),
    );
    t.teardown(() => alice.close().catch(() => {}));
    t.true((await alice.listAllDomains(0)).length > 0, 'the first policy lets alice list domains');

    // Only connect.getattr now: the hostname still answers, the list is refused on the same connection.
    await writeFile(policyFile, 'permit (principal == User::"alice", action == Action::"connect.getattr", resource);\n');
    daemon.child.kill('SIGHUP');
    await daemon.waitForEvent('daemon.reloaded');
    t.is(daemon.events('access.cedar.reloaded').length, 1);
    t.truthy(await alice.getHostname());
    await t.throwsAsync(alice.listAllDomains(0), { instanceOf: VirError, message: /^access denied/ });

    // A policy that does not parse: logged, and the one in force stays.
    await writeFile(policyFile, 'permit (principal == User::"alice", action, resource\n');
    daemon.child.kill('SIGHUP');
    await daemon.waitForEvent('daemon.reloaded', 2);
    t.is(daemon.events('access.cedar.reload_failed').length, 1, 'the broken policy is reported');
    t.truthy(await alice.getHostname());
    await t.throwsAsync(alice.listAllDomains(0), { instanceOf: VirError, message: /^access denied/ });
  },
);

// --- the journal -------------------------------------------------------------------------------

interopTest.serial('journald output: well-formed native entries on the journal socket, with no secret in any', ['python3'], async (t) => {
  const dir = await tempDir('sj');
  const journal = await DatagramReceiver.start(join(dir, 'journal-socket'));
  t.teardown(() => journal.close());
  const configFile = join(dir, 'virtauthd.conf');
  const password = 'journal-Secret-4817';
  await writeFile(
    configFile,
    configText({
      unix_sock_dir: dir,
      auth_unix_rw: 'sasl',
      sasl_user_db: join(dir, 'users.json'),
      sasl_failure_delay_ms: 0,
      sasl_mech_list: ['PLAIN', 'SCRAM-SHA-256'],
      log_level: 1,
      log_outputs: '1:journald 3:stderr',
    }),
  );
  await addVirtauthUser(configFile, 'carol', password);
  const daemon = DaemonProcess.start(t, process.execPath, [daemonMain, '--config', configFile], { VIRTAUTHD_JOURNAL_SOCKET: journal.path });
  await daemon.waitForOutput(/listening on unix .*virtauth-sock-ro/, 'listener lines');
  const uri = (mech: string) => `test+unix:///default?socket=${join(dir, 'virtauth-sock')}&auth=sasl.${mech}`;
  // PLAIN carries the password itself on the wire: the strictest test of redaction.
  const conn = await openAuth(uri('PLAIN'), credentials('carol', password));
  await conn.getHostname();
  await conn.close();
  await t.throwsAsync(openAuth(uri('PLAIN'), credentials('carol', `${password}-wrong`)));

  const byEvent = (event: string) => (d: Buffer) =>
    decodeJournalEntry(d).some(([name, value]) => name === 'VIRTAUTH_EVENT' && value === event);
  await journal.waitFor(byEvent('auth.sasl.succeeded'));
  await journal.waitFor(byEvent('auth.sasl.failed'));
  daemon.child.kill('SIGTERM');
  await daemon.exited;

  t.true(journal.received.length >= 3);
  for (const datagram of journal.received) {
    const fields = decodeJournalEntry(datagram);
    const names = fields.map(([name]) => name);
    for (const name of names) t.regex(name, /^[A-Z][A-Z0-9_]{0,63}$/);
    const field = (name: string) => fields.find(([n]) => n === name)?.[1];
    t.truthy(field('MESSAGE'));
    t.regex(field('PRIORITY') ?? '', /^[2-7]$/);
    t.is(field('SYSLOG_IDENTIFIER'), 'virtauthd');
    t.regex(field('CODE_FILE') ?? '', /^[a-z]+\/src\/.+\.ts$/);
    t.regex(field('CODE_LINE') ?? '', /^\d+$/);
    for (const secret of [password, Buffer.from(password).toString('base64'), Buffer.from(`\0carol\0${password}`).toString('base64')]) {
      t.false(datagram.includes(secret), `an entry holds the secret: ${datagram.toString('utf8')}`);
    }
  }
  const succeeded = journal.received
    .map(decodeJournalEntry)
    .find((fields) => fields.some(([n, v]) => n === 'VIRTAUTH_EVENT' && v === 'auth.sasl.succeeded'))!;
  const get = (name: string) => succeeded.find(([n]) => n === name)?.[1];
  t.is(get('PRIORITY'), '6');
  t.regex(get('VIRTAUTH_CLIENT_ID') ?? '', /^\d+$/);
  t.is(get('VIRTAUTH_USER'), 'carol');
  t.is(get('CODE_FILE'), 'providers/src/sasl-provider.ts');
  t.false(daemon.stderr.includes(password));
});

// --- units and startup errors --------------------------------------------------------------------

interopTest.serial('systemd-analyze verify accepts the installed units, and would name a broken one', ['systemd-analyze'], async (t) => {
  const dir = await tempDir('su');
  const unitDir = join(dir, 'units');
  const configFile = join(dir, 'etc', 'virtauthd.conf');
  const install = await runProcess(process.execPath, [installer, '--unit-dir', unitDir, '--config', configFile, '--no-reload'], {
    timeoutMs: 60_000,
  });
  t.is(install.code, 0, describeResult(install));
  t.regex(await readFile(configFile, 'utf8'), /unix_sock_dir = "\/run\/virtauth"/);
  const units = UNIT_FILES.map((name) => join(unitDir, name));
  const verify = await runProcess('systemd-analyze', ['verify', ...units], { timeoutMs: 60_000, cwd: unitDir });
  t.is(verify.code, 0, describeResult(verify));
  t.is(verify.stderr.trim(), '', 'no warnings either');

  const broken = join(dir, 'broken');
  await mkdir(broken);
  for (const name of UNIT_FILES) {
    const text = await readFile(join(unitDir, name), 'utf8');
    await writeFile(
      join(broken, name),
      name === 'virtauthd.service' ? text.replace('Type=notify', 'Type=notify\nProtectSystm=strict') : text,
    );
  }
  const complaint = await runProcess('systemd-analyze', ['verify', ...UNIT_FILES.map((name) => join(broken, name))], {
    timeoutMs: 60_000,
    cwd: broken,
  });
  t.regex(complaint.stderr, /Unknown key.*ProtectSystm/);
});

interopTest.serial(
  'startup errors are one line and exit 1: port in use, missing certificate, log file, unreadable user database',
  ['root'],
  async (t) => {
    const dir = await tempDir('se');
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    t.teardown(() => busy.close());
    const port = (busy.address() as net.AddressInfo).port;
    const run = async (name: string, settings: Record<string, ConfigValue>) => {
      const sockDir = join(dir, name);
      const configFile = join(dir, `${name}.conf`);
      await writeFile(configFile, configText({ unix_sock_dir: sockDir, ...settings }));
      const result = await runProcess(process.execPath, [daemonMain, '--config', configFile], { timeoutMs: 60_000 });
      t.is(result.code, 1, `${name}: ${describeResult(result)}`);
      t.is(result.stdout, '', name);
      t.regex(result.stderr, /^virtauthd: [^\n]+\n$/, `${name}: one line`);
      t.false(/\n\s+at /.test(result.stderr), `${name}: no stack trace`);
      t.false(existsSync(join(sockDir, 'virtauth-sock')), `${name}: nothing left behind`);
      return result.stderr;
    };
    t.is(
      await run('port', { listen_tcp: 1, tcp_port: port, auth_tcp: 'none' }),
      `virtauthd: Unable to bind to port ${port} on 127.0.0.1: Address already in use\n`,
    );
    t.regex(
      await run('cert', {
        listen_tls: 1,
        tls_port: 0,
        auth_tls: 'none',
        key_file: join(dir, 'none.pem'),
        cert_file: join(dir, 'none.pem'),
        ca_file: join(dir, 'none.pem'),
      }),
      /^virtauthd: Cannot read TLS (key|certificate|CA certificate) '.*none\.pem': ENOENT: no such file or directory/,
    );
    const notADirectory = join(dir, 'plain-file');
    await writeFile(notADirectory, '');
    t.regex(
      await run('logfile', { log_outputs: `1:file:${notADirectory}/virtauthd.log` }),
      /^virtauthd: Cannot open log output file '.*plain-file\/virtauthd\.log': (EEXIST|ENOTDIR): /,
    );
    const userDatabase = join(dir, 'users.json');
    await writeFile(userDatabase, '{"version": 1, "users": {"alice": ');
    t.regex(await run('userdb', { auth_unix_rw: 'sasl', sasl_user_db: userDatabase }), /^virtauthd: .*users\.json.*\n$/);
  },
);
