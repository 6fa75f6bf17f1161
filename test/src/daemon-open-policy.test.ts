// What a client can make virtauthd open, tried as an attacker would: an anonymous client on the
// read-only socket names a XenAPI server, a socket it owns, the daemon's own sockets, paths to
// probe. Nothing but what uri_allowed_list names is opened, the daemon's stored credentials go only
// to the exact host they are stored for and never in clear, and a read-only client learns nothing
// about the daemon's host from a failure.

import 'reflect-metadata';
import test from 'ava';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthType,
  ErrorCode,
  ErrorDomain,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  RpcConnection,
  VirError,
  createDispatcher,
  remote,
  xdr,
  type Procedure,
} from '@virtauth/core';
import { buildConfig, createDaemon, createLogger, type DaemonHandle } from '@virtauth/daemon';
import { selfSignedCertificate, startXenApiServer, type XenApiServer } from './fixtures/xenapi-server.js';
import { JsonLines } from './log-capture.js';
import { tempDir } from './peers/index.js';
import { RawClient } from './sasl-test-helpers.js';

const secret = (label: string) => `${label}-${randomBytes(9).toString('base64url')}`;
const XEN_PASSWORD = secret('xen-pw');
const DEFAULT_XEN_PASSWORD = secret('default-xen-pw');
const DEFAULT_LIBVIRT_PASSWORD = secret('default-libvirt-pw');
const TCP_LIBVIRT_PASSWORD = secret('tcp-libvirt-pw');

/** A listening socket of a test's own, on a unix path or a loopback TCP port. */
class Listener {
  readonly server = net.createServer();

  protected async listen(where: string | { host: string; port: 0 }): Promise<void> {
    this.server.on('connection', (socket) => {
      socket.on('error', () => undefined);
      this.accepted(socket);
    });
    await new Promise<void>((resolve) =>
      typeof where === 'string' ? this.server.listen(where, resolve) : this.server.listen(where.port, where.host, resolve),
    );
  }

  protected accepted(_socket: net.Socket): void {}

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A listener an attacker owns: it counts connections and keeps every byte it receives. */
class Trap extends Listener {
  connections = 0;
  received = Buffer.alloc(0);

  static async at(where: string | { host: string; port: 0 }): Promise<Trap> {
    const trap = new Trap();
    await trap.listen(where);
    return trap;
  }

  protected override accepted(socket: net.Socket): void {
    this.connections++;
    socket.on('data', (b) => (this.received = Buffer.concat([this.received, b])));
  }
}

/** A libvirt server on plain TCP that offers SASL PLAIN and records whether a login was tried. */
class PlainOverTcpServer extends Listener {
  saslStarts = 0;
  private readonly procedures = new Map<number, Procedure>([
    [RemoteProc.AUTH_LIST, { args: xdr.xvoid, ret: remote.authListRet, needsAuth: false, handle: () => ({ types: [AuthType.SASL] }) }],
    [RemoteProc.AUTH_SASL_INIT, { args: xdr.xvoid, ret: remote.authSaslInitRet, needsAuth: false, handle: () => ({ mechlist: 'PLAIN' }) }],
    [
      RemoteProc.AUTH_SASL_START,
      {
        args: remote.authSaslStartArgs,
        ret: remote.authSaslStartRet,
        needsAuth: false,
        handle: () => {
          this.saslStarts++;
          return { complete: 1, nil: 1, data: Buffer.alloc(0) };
        },
      },
    ],
  ]);

  static async start(): Promise<PlainOverTcpServer> {
    const server = new PlainOverTcpServer();
    await server.listen({ host: '127.0.0.1', port: 0 });
    return server;
  }

  protected override accepted(socket: net.Socket): void {
    const program = { prog: REMOTE_PROGRAM, vers: REMOTE_PROTOCOL_VERSION, procedures: this.procedures };
    new RpcConnection(socket).setCallHandler(createDispatcher([program], { context: null, isAuthenticated: () => true }));
  }
}

interface World {
  dir: string;
  daemon: DaemonHandle;
  log: JsonLines;
  rw: string;
  ro: string;
  xen: XenApiServer;
  /** Plain-HTTP XenAPI server that would accept the daemon's stored password. */
  httpXen: XenApiServer;
  xenTrap: Trap;
  plainTcp: PlainOverTcpServer;
  socketTrap: Trap;
  socketTrapPath: string;
}

let world: World;

const allowedXen = () => `xenapi:///?server=127.0.0.1:${world.xen.port}&no_verify=1`;
/** Same server, by a name the daemon's auth.conf has no entry of its own for. */
const allowedXenByName = () => `xenapi:///?server=localhost:${world.xen.port}&no_verify=1`;
const allowedHttpXen = () => `xenapi:///?server=127.0.0.1:${world.httpXen.port}&scheme=http`;
const missingSocket = () => join(world.dir, 'no-such-dir', 'missing.sock');
const allowedPlainTcp = () => `test+tcp://127.0.0.1:${world.plainTcp.port}/default`;

test.before(async () => {
  const dir = await tempDir('vop');
  const { key, cert } = selfSignedCertificate();
  const xen = await startXenApiServer({ users: { root: XEN_PASSWORD }, tls: { key, cert } });
  const httpXen = await startXenApiServer({ users: { root: XEN_PASSWORD } });
  const xenTrap = await Trap.at({ host: '127.0.0.1', port: 0 });
  const socketTrapPath = join(dir, 'attacker.sock');
  const socketTrap = await Trap.at(socketTrapPath);
  const plainTcp = await PlainOverTcpServer.start();
  // The daemon's own auth.conf: an exact entry for 127.0.0.1, and -default entries an attacker wants.
  const authFile = join(dir, 'daemon-auth.conf');
  await writeFile(
    authFile,
    `[credentials-xen]\nusername=root\npassword=${XEN_PASSWORD}\n[auth-xenapi-127.0.0.1]\ncredentials=xen\n` +
      `[credentials-anyxen]\nusername=root\npassword=${DEFAULT_XEN_PASSWORD}\n[auth-xenapi-default]\ncredentials=anyxen\n` +
      `[credentials-anylibvirt]\nauthname=admin\npassword=${DEFAULT_LIBVIRT_PASSWORD}\n[auth-libvirt-default]\ncredentials=anylibvirt\n` +
      `[credentials-tcp]\nauthname=admin\npassword=${TCP_LIBVIRT_PASSWORD}\n[auth-libvirt-127.0.0.1]\ncredentials=tcp\n`,
    { mode: 0o600 },
  );
  process.env.LIBVIRT_AUTH_FILE = authFile;
  world = { dir, xen, httpXen, xenTrap, socketTrap, socketTrapPath, plainTcp } as World;
  const settings = new Map<string, string | number | string[]>([
    ['unix_sock_dir', dir],
    ['auth_unix_ro', 'none'],
    ['auth_unix_rw', 'none'],
    ['log_level', 1],
    [
      'uri_allowed_list',
      [
        'test:///default',
        allowedXen(),
        allowedXenByName(),
        allowedHttpXen(),
        `test+unix:///default?socket=${missingSocket()}`,
        allowedPlainTcp(),
      ],
    ],
  ]);
  const log = new JsonLines();
  const config = buildConfig(settings, 'virtauthd.conf');
  const daemon = await createDaemon({ config, logger: createLogger(config.logLevel, log) });
  world = { ...world, daemon, log, rw: join(dir, 'virtauth-sock'), ro: join(dir, 'virtauth-sock-ro') };
});

test.after.always(async () => {
  if (!world) return;
  await world.daemon?.stop();
  await Promise.all([world.xen.close(), world.httpXen.close(), world.xenTrap.close(), world.socketTrap.close(), world.plainTcp.close()]);
  await rm(world.dir, { recursive: true, force: true });
});

/** CONNECT_OPEN of `name` as a client of `socket`; resolves the client (open) or the error. */
async function openAs(socket: string, name: string): Promise<{ client: RawClient; error: VirError | null }> {
  const client = await RawClient.connect(`test+unix:///default?socket=${socket}`);
  await client.authList();
  try {
    await client.call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: name === '' ? null : name, flags: 0 }, xdr.xvoid);
    return { client, error: null };
  } catch (e) {
    client.close();
    if (!(e instanceof VirError)) throw e;
    return { client, error: e };
  }
}

function assertNoSecretAnywhere(t: import('ava').ExecutionContext, texts: string[]): void {
  for (const s of [XEN_PASSWORD, DEFAULT_XEN_PASSWORD, DEFAULT_LIBVIRT_PASSWORD, TCP_LIBVIRT_PASSWORD]) {
    for (const text of texts) t.false(text.includes(s), 'a stored secret leaked');
  }
}

test.serial(
  'an anonymous read-only client cannot make the daemon connect anywhere it names: the targets see nothing, the refusal is audited',
  async (t) => {
    const deniedBefore = world.log.events('connect.open.denied').length;
    const attacks = [
      // The first attack: the daemon's XenAPI driver logging in to the attacker over http.
      `xenapi:///?server=127.0.0.1:${world.xenTrap.port}&scheme=http`,
      `xenapi+unix:///?server=127.0.0.1:${world.xenTrap.port}&scheme=http&socket=${world.ro}`,
      // The remote driver logging in (PLAIN, -default credentials) to a socket the attacker owns.
      `test+unix:///default?socket=${world.socketTrapPath}`,
      `test+unix:///default?socket=${world.socketTrapPath}&auth=sasl.PLAIN`,
      // The daemon's own root-only read-write socket, and TCP port probes.
      `test+unix:///default?socket=${world.rw}`,
      `test+tcp://127.0.0.1:${world.xenTrap.port}/default`,
      // An allowed entry with a connection parameter changed, added, or given twice.
      `xenapi:///?server=127.0.0.1:${world.xenTrap.port}&no_verify=1`,
      `${allowedXen()}&scheme=http`,
      `xenapi:///?server=127.0.0.1:${world.xen.port}`,
      `${allowedXen()}&server=127.0.0.1:${world.xenTrap.port}`,
      `${allowedHttpXen()}&server=127.0.0.1:${world.xenTrap.port}`,
      `xenapi://root@127.0.0.1:${world.xenTrap.port}/?scheme=http`,
    ];
    for (const name of attacks) {
      const { error } = await openAs(world.ro, name);
      t.truthy(error, name);
      t.is(error!.code, ErrorCode.ACCESS_DENIED, name);
      t.is(error!.domain, ErrorDomain.ACCESS, name);
      t.regex(error!.message, /^access denied: this daemon does not open '.*' \(its operator can allow it in uri_allowed_list\)$/, name);
    }
    t.is(world.xenTrap.connections, 0, 'the fake XenAPI listener saw no connection');
    t.is(world.socketTrap.connections, 0, "the attacker's socket saw no connection");
    t.is(world.xenTrap.received.length + world.socketTrap.received.length, 0);
    const denied = world.log.events('connect.open.denied').slice(deniedBefore);
    t.is(denied.length, attacks.length, 'one audit record per refused open');
    t.like(denied[0], { level: 40, readOnly: true, method: 'none', uri: attacks[0] });
    t.false(
      world.log.events('connect.open.failed').some((r) => attacks.includes(r.uri as string)),
      'no driver ran',
    );
    assertNoSecretAnywhere(t, [world.log.text()]);
  },
);

test.serial('whether a file exists or a socket refuses is not told apart: every name not allowed fails with the same words', async (t) => {
  const probes = [
    `test+unix:///default?socket=${world.rw}`,
    `test+unix:///default?socket=${join(world.dir, 'nothing-here')}`,
    'test+unix:///default?socket=/root/.ssh/id_rsa',
  ];
  const messages: string[] = [];
  for (const name of probes) messages.push((await openAs(world.ro, name)).error!.message.replace(name, 'NAME'));
  t.is(new Set(messages).size, 1, messages.join(' | '));
});

test.serial("an allowed entry that fails tells a read-only client no path or errno; the daemon's log keeps the reason", async (t) => {
  const name = `test+unix:///default?socket=${missingSocket()}`;
  const { error } = await openAs(world.ro, name);
  t.is(error!.code, ErrorCode.SYSTEM_ERROR);
  // The name the client gave is echoed back; nothing else about it.
  t.notRegex(error!.message.replace(name, 'NAME'), /ENOENT|ECONNREFUSED|No such file|missing\.sock/);
  t.regex(error!.message, /the daemon's log has the reason \(connection \d+\)/);
  const failed = world.log.events('connect.open.failed').at(-1)!;
  t.regex(failed.err as string, /ENOENT|missing\.sock/);
  // The read-write socket (mode 0700, its user already owns the daemon's host) keeps the details.
  const rw = await openAs(world.rw, name);
  t.regex(rw.error!.message, /missing\.sock/);
});

test.serial("the allowed XenAPI entry opens with the daemon's credentials for exactly that host", async (t) => {
  const callsBefore = world.xen.calls.length;
  const { client, error } = await openAs(world.ro, allowedXen());
  t.is(error, null);
  const { hostname } = await client.call(RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet);
  t.is(hostname, 'xen1.example');
  await client.closeConnection();
  t.true(world.xen.calls.slice(callsBefore).includes('session.login_with_password'));
});

test.serial(
  '[auth-xenapi-default] never answers for a host without its own entry: the open fails before the server is asked',
  async (t) => {
    const callsBefore = world.xen.calls.length;
    const { error } = await openAs(world.rw, allowedXenByName());
    t.truthy(error);
    // Nothing stored answers, and this client enabled no relay to ask.
    t.is(error!.code, ErrorCode.AUTH_UNAVAILABLE);
    t.deepEqual(world.xen.calls.slice(callsBefore), [], 'no login was attempted with the -default password');
    assertNoSecretAnywhere(t, [error!.message, world.log.text()]);
    // What the relay says the client was asked for is kept for a read-only client too.
    const ro = await openAs(world.ro, allowedXenByName());
    t.is(ro.error!.code, ErrorCode.AUTH_UNAVAILABLE);
    t.is(ro.error!.message, error!.message);
    t.regex(ro.error!.message, /^authentication unavailable: /);
  },
);

test.serial("the daemon's stored XenAPI password never goes over http, even to the exact host it is stored for", async (t) => {
  const callsBefore = world.httpXen.calls.length;
  const withheldBefore = world.log.events('credentials.stored.withheld').length;
  const { error } = await openAs(world.rw, allowedHttpXen());
  t.truthy(error);
  t.is(error!.code, ErrorCode.AUTH_UNAVAILABLE);
  t.deepEqual(world.httpXen.calls.slice(callsBefore), [], 'the http server was never sent a login');
  t.like(world.log.events('credentials.stored.withheld').slice(withheldBefore)[0], { service: 'xenapi', host: '127.0.0.1' });
  assertNoSecretAnywhere(t, [error!.message, world.log.text()]);
});

test.serial("the daemon's stored libvirt password never goes to a server over plain TCP, even one offering PLAIN", async (t) => {
  const { error } = await openAs(world.rw, allowedPlainTcp());
  t.truthy(error);
  t.is(error!.code, ErrorCode.AUTH_FAILED);
  t.regex(error!.message, /plain TCP would expose it/);
  t.is(world.plainTcp.saslStarts, 0, 'no SASL exchange was started, so nothing was sent');
  assertNoSecretAnywhere(t, [error!.message, world.log.text()]);
});

test.serial('an open with no name opens the configured default_uri; so does the embedded test:///default', async (t) => {
  for (const name of ['', 'test:///default']) {
    const { client, error } = await openAs(world.ro, name);
    t.is(error, null, name);
    await client.closeConnection();
  }
});
