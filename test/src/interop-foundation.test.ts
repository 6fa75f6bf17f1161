// The foundation against real libvirt: virtauthd serving virsh and python3-libvirt, our client and
// CLI against a real libvirtd, wire-level errors compared side by side with libvirtd, hostile
// input, the virtauthd executable, and keepalive.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ExecutionContext } from 'ava';
import {
  ErrorCode,
  ErrorDomain,
  Feature,
  KEEPALIVE_PROGRAM,
  KeepaliveProc,
  MessageStatus,
  MessageType,
  OpenFlag,
  PACKET_MAX,
  PacketFramer,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  RpcConnection,
  VirError,
  XdrReader,
  createDispatcher,
  encodePacket,
  errorPayload,
  readHeader,
  remote,
  xdr,
  type Codec,
  type ErrorPayload,
  type Header,
  type Procedure,
} from '@virtauth/core';
import type { DaemonExtension } from '@virtauth/daemon';
import { startVirtauthd } from './virtauthd-support.js';
import { openAuth, type Connection } from 'virtauth';

import {
  PrivateLibvirtd,
  describeResult,
  interopTest,
  libvirtClientEnv,
  requireExecutable,
  runPythonLibvirt,
  runProcess,
  tempDir,
  untilClientCount,
  whenEmitted,
  type ProcessResult,
  type PythonDomainSummary,
} from './peers/index.js';

const repositoryRoot = fileURLToPath(new URL('../../../', import.meta.url));
const cliBin = join(repositoryRoot, 'cli', 'dist', 'src', 'bin.js');
const daemonMain = join(repositoryRoot, 'daemon', 'dist', 'src', 'main.js');

// --- helpers ---------------------------------------------------------------------------------

async function startLibvirtd(t: ExecutionContext, options: Parameters<typeof PrivateLibvirtd.start>[0]): Promise<PrivateLibvirtd> {
  const daemon = await PrivateLibvirtd.start(options);
  t.teardown(() => daemon.stop());
  return daemon;
}

/** virsh without --quiet: the format the virtauth CLI reproduces (list header, trailing blank line). */
function virsh(uri: string, args: readonly string[]): Promise<ProcessResult> {
  return runProcess(requireExecutable('virsh', 'libvirt-clients'), ['-c', uri, ...args], {
    env: libvirtClientEnv(),
    timeoutMs: clientTimeoutMs,
  });
}

function virtauthCli(uri: string, args: readonly string[]): Promise<ProcessResult> {
  return runProcess(process.execPath, [cliBin, '-c', uri, ...args], { env: libvirtClientEnv(), timeoutMs: clientTimeoutMs });
}

// Each CLI run starts a node process (about half a CPU second): a few at a time and a generous
// timeout keep a loaded two-CPU CI machine from timing them out.
const clientTimeoutMs = 30_000;
const clientProcessesAtOnce = 3;

async function mapLimited<T, R>(items: readonly T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await run(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The CPU time line changes between two runs against a running domain. */
const withoutCpuTime = (text: string) => text.replace(/^CPU time:.*\n/m, '');

/** virsh's version lines about the hypervisor; the library lines name each client's own library. */
const hypervisorLines = (text: string) => text.split('\n').filter((line) => /^(Using API|Running hypervisor):/.test(line));

const textCommands: { args: string[]; normalise(text: string): unknown }[] = [
  { args: ['hostname'], normalise: (text) => text },
  { args: ['uri'], normalise: (text) => text },
  { args: ['version'], normalise: hypervisorLines },
  { args: ['list', '--all'], normalise: (text) => text },
  { args: ['dominfo', 'test'], normalise: withoutCpuTime },
  { args: ['dumpxml', 'test'], normalise: (text) => text },
];

/** Runs every command through virsh and the virtauth CLI and checks they print the same. */
async function assertCliMatchesVirsh(t: ExecutionContext, uri: string, commands = textCommands): Promise<void> {
  const results = await mapLimited(commands, clientProcessesAtOnce, async (command) => ({
    command,
    ours: await virtauthCli(uri, command.args),
    theirs: await virsh(uri, command.args),
  }));
  for (const { command, ours, theirs } of results) {
    const label = `${command.args.join(' ')} on ${uri}`;
    t.is(theirs.code, 0, `virsh ${label}: ${describeResult(theirs)}`);
    t.is(ours.code, 0, `virtauth ${label}: ${describeResult(ours)}`);
    t.not(theirs.stdout.trim(), '', `virsh ${label} printed nothing`);
    t.deepEqual(command.normalise(ours.stdout), command.normalise(theirs.stdout), label);
  }
}

async function openNoAuth(t: ExecutionContext, uri: string, flags = 0): Promise<Connection> {
  const conn = await openAuth(uri, null, flags);
  t.teardown(() => conn.close().catch(() => {}));
  return conn;
}

/** What python3-libvirt reports for a domain, computed through our client. */
async function domainSummary(conn: Connection, name: string): Promise<PythonDomainSummary> {
  const dom = await conn.lookupDomainByName(name);
  const info = await conn.getDomainInfo(dom);
  const hex = dom.uuid.toString('hex');
  return {
    name: dom.name,
    id: dom.id,
    uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    state: info.state,
    maxMem: Number(info.maxMem),
    memory: Number(info.memory),
    vcpus: info.nrVirtCpu,
  };
}

interface RawPacket {
  header: Header;
  /** The decoded error when the packet is a REPLY with status ERROR. */
  error?: ErrorPayload;
  body: Buffer;
  atMs: number;
}

interface RawExchange {
  packets: RawPacket[];
  /** Whether the server closed the connection before `waitMs` ran out. */
  closedByServer: boolean;
  closedAtMs?: number;
}

/**
 * Speaks to a socket below any client library: writes the bytes (then half-closes if asked),
 * collects every packet the server sends, and ends after `waitMs` or when `until` is satisfied.
 */
function rawExchange(
  path: string,
  writes: readonly Buffer[],
  options: { waitMs?: number; endAfterWrite?: boolean | undefined; until?: (packets: RawPacket[]) => boolean } = {},
): Promise<RawExchange> {
  const waitMs = options.waitMs ?? 2000;
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    const framer = new PacketFramer();
    const packets: RawPacket[] = [];
    const startedAt = Date.now();
    let settled = false;
    const finish = (closedByServer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ packets, closedByServer, ...(closedByServer ? { closedAtMs: Date.now() - startedAt } : {}) });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('data', (chunk: Buffer) => {
      framer.push(chunk, (packet) => {
        const reader = new XdrReader(packet, 4);
        const header = readHeader(reader);
        const isError = header.type === MessageType.REPLY && header.status === MessageStatus.ERROR;
        packets.push({
          header,
          body: packet.subarray(28),
          atMs: Date.now() - startedAt,
          ...(isError ? { error: errorPayload.decode(reader) } : {}),
        });
      });
      if (options.until?.(packets)) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A reset after we wrote garbage is the server dropping us; failing to connect is a test error.
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') return;
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(error);
      }
    });
    socket.on('connect', () => {
      for (const bytes of writes) socket.write(bytes);
      if (options.endAfterWrite) socket.end();
    });
  });
}

function callPacket<T>(proc: number, codec: Codec<T>, value: T, overrides: Partial<Header> = {}): Buffer {
  return encodePacket(
    {
      prog: REMOTE_PROGRAM,
      vers: REMOTE_PROTOCOL_VERSION,
      proc,
      type: MessageType.CALL,
      serial: 7,
      status: MessageStatus.OK,
      ...overrides,
    },
    codec,
    value,
  );
}

const voidCall = (proc: number, overrides: Partial<Header> = {}) => callPacket(proc, xdr.xvoid, undefined, overrides);

/** The fields a libvirt client acts on, plus the template libvirt sends along. */
function errorEssentials(error: ErrorPayload | undefined) {
  if (error === undefined) return undefined;
  const { code, domain, message, level, str1, str2, int1, int2 } = error;
  return { code, domain, message, level, str1, str2, int1, int2 };
}

async function firstErrorReply(path: string, packet: Buffer) {
  const exchange = await rawExchange(path, [packet], { until: (packets) => packets.length > 0 });
  const reply = exchange.packets[0];
  return { header: reply?.header, error: errorEssentials(reply?.error) };
}

function rawClient(path: string): Promise<RpcConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(new RpcConnection(socket));
    });
  });
}

async function expectVirError(t: ExecutionContext, promise: Promise<unknown>): Promise<VirError | undefined> {
  const error = await t.throwsAsync(promise);
  t.true(error instanceof VirError, `expected a VirError, got ${String(error)}`);
  return error instanceof VirError ? error : undefined;
}

// --- virsh and python3-libvirt against virtauthd -------------------------------------------------

interopTest(
  'virsh and python3-libvirt against virtauthd print what the virtauth CLI and API report',
  ['virsh', 'python3-libvirt'],
  async (t) => {
    const daemon = await startVirtauthd(t);
    const uri = daemon.uri();
    const [, python] = await Promise.all([
      assertCliMatchesVirsh(t, uri),
      runPythonLibvirt(uri, { commands: ['hostname', 'version', 'uri', 'list', 'dominfo test', 'dumpxml test'] }),
    ]);
    if (!python.ok) {
      t.fail(`python3-libvirt failed at ${python.stage}: ${JSON.stringify(python.error)}`);
      return;
    }
    const conn = await openNoAuth(t, uri);
    t.is(python.hostname, await conn.getHostname());
    t.is(python.libVersion, Number(await conn.getLibVersion()));
    t.is(python.version, Number(await conn.getVersion()));
    t.is(python.uri, await conn.getUri());
    t.is(python.uri, uri);
    const ourDomains = await Promise.all((await conn.listAllDomains(0)).map((dom) => domainSummary(conn, dom.name)));
    t.deepEqual(python.domains, ourDomains);
    t.true(
      ourDomains.some((domain) => domain.name === 'test'),
      JSON.stringify(ourDomains),
    );
    t.deepEqual(python.domainInfo?.test, await domainSummary(conn, 'test'));
    t.is(python.domainXml?.test, await conn.getDomainXmlDesc(await conn.lookupDomainByName('test'), 0));
    t.deepEqual(python.credentialRequests, [], 'auth none asks for nothing');
  },
);

// --- our client and CLI against a real libvirtd ------------------------------------------------

interopTest(
  'the virtauth CLI and openAuth against a real libvirtd (unix and TCP, auth none) match virsh',
  ['root', 'libvirtd', 'virsh'],
  async (t) => {
    const libvirtd = await startLibvirtd(t, { auth_unix_rw: 'none', listenTcp: true, auth_tcp: 'none' });
    const uris = [libvirtd.uri(), libvirtd.uri('test:///default', 'tcp')];
    t.regex(uris[1]!, /^test\+tcp:\/\/127\.0\.0\.1:\d+\/default$/);
    for (const uri of uris) await assertCliMatchesVirsh(t, uri);

    for (const uri of uris) {
      const conn = await openNoAuth(t, uri);
      const plainHostname = await virsh(uri, ['hostname']);
      t.is(`${await conn.getHostname()}\n\n`, plainHostname.stdout);
      t.is(await conn.getUri(), uri);
      t.is(await conn.getType(), 'TEST');
      t.true((await conn.getLibVersion()) >= 9_000_000n);
      t.deepEqual(
        (await conn.listAllDomains(0)).map((dom) => dom.name),
        ['test'],
      );
      t.is(await conn.isSecure(), uri.startsWith('test+unix'), 'libvirtd says plain TCP is not secure and a unix socket is');
    }
  },
);

// --- authentication negotiation at the edges ----------------------------------------------------

interopTest(
  'a server that predates AUTH_LIST answers "unknown procedure: 66"; our client and virsh go on without auth',
  ['virsh'],
  async (t) => {
    const dir = await tempDir('vo');
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'old-sock');
    const seen: number[] = [];
    const procedure = <A, R>(
      args: Codec<A>,
      ret: Codec<R>,
      handle: (rpc: RpcConnection, value: A) => R,
    ): Procedure<A, R, RpcConnection> => ({ args, ret, needsAuth: false, handle });
    const procedures = new Map<number, Procedure<any, any, RpcConnection>>([
      [RemoteProc.CONNECT_OPEN, procedure(remote.connectOpenArgs, xdr.xvoid, () => undefined)],
      [RemoteProc.CONNECT_GET_HOSTNAME, procedure(xdr.xvoid, remote.connectGetHostnameRet, () => ({ hostname: 'old-server' }))],
      [RemoteProc.CONNECT_CLOSE, procedure(xdr.xvoid, xdr.xvoid, (rpc) => void setImmediate(() => rpc.closeAfterFlush()))],
    ]);
    const server = net.createServer((socket) => {
      const rpc = new RpcConnection(socket);
      const dispatch = createDispatcher([{ prog: REMOTE_PROGRAM, vers: REMOTE_PROTOCOL_VERSION, procedures }], {
        context: rpc,
        isAuthenticated: () => true,
      });
      rpc.setCallHandler((header, body) => {
        seen.push(header.proc);
        return dispatch(header, body);
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const uri = `test+unix:///default?socket=${path}`;

    const authList = await firstErrorReply(path, voidCall(RemoteProc.AUTH_LIST));
    t.like(authList.error, { code: ErrorCode.RPC, domain: ErrorDomain.RPC, level: 2, message: 'unknown procedure: 66' });

    seen.length = 0;
    const conn = await openAuth(uri, null);
    t.is(await conn.getHostname(), 'old-server');
    await conn.close();
    t.is(seen[0], RemoteProc.AUTH_LIST, 'the client asked for the auth list first');
    t.true(seen.includes(RemoteProc.CONNECT_OPEN));

    const fromVirsh = await virsh(uri, ['hostname']);
    t.is(fromVirsh.code, 0, describeResult(fromVirsh));
    t.is(fromVirsh.stdout.trim(), 'old-server');
  },
);

interopTest(
  'raw packets: virtauthd answers auth-required, unknown procedure and unknown program exactly as libvirtd does',
  ['root', 'libvirtd'],
  async (t) => {
    const [ours, theirs] = await Promise.all([
      startVirtauthd(t, { authUnixRw: 'sasl', authUnixRo: 'none' }),
      startLibvirtd(t, { auth_unix_rw: 'sasl', auth_unix_ro: 'none' }),
    ]);
    const openCall = callPacket(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 });
    const cases: { what: string; socket: 'rw' | 'ro'; packet: Buffer; expected: Partial<ErrorPayload> }[] = [
      {
        what: 'CONNECT_OPEN before authenticating',
        socket: 'rw',
        packet: openCall,
        expected: { code: 39, domain: 7, message: 'authentication required' },
      },
      {
        what: 'unknown procedure on the SASL socket',
        socket: 'rw',
        packet: voidCall(9999),
        expected: { message: 'unknown procedure: 9999' },
      },
      {
        what: 'unknown procedure',
        socket: 'ro',
        packet: voidCall(9999),
        expected: { code: 39, domain: 7, message: 'unknown procedure: 9999' },
      },
      {
        what: 'unknown program',
        socket: 'ro',
        packet: voidCall(1, { prog: 0x12345678 }),
        expected: { message: 'Cannot find program 305419896 version 1' },
      },
      {
        what: 'unknown program number above 2^31',
        socket: 'ro',
        packet: voidCall(1, { prog: 0x92345678, vers: 7 }),
        expected: { message: 'Cannot find program -1842063752 version 7' },
      },
      {
        what: 'CALL with status ERROR',
        socket: 'ro',
        packet: voidCall(RemoteProc.CONNECT_GET_HOSTNAME, { status: MessageStatus.ERROR }),
        expected: { message: 'Unexpected message status 1' },
      },
      {
        what: 'CONNECT_OPEN without its arguments',
        socket: 'ro',
        packet: voidCall(RemoteProc.CONNECT_OPEN),
        expected: { message: 'Unable to decode message payload' },
      },
    ];
    for (const { what, socket, packet, expected } of cases) {
      const [fromOurs, fromTheirs] = await Promise.all([
        firstErrorReply(socket === 'rw' ? ours.rwSocket : ours.roSocket, packet),
        firstErrorReply(socket === 'rw' ? theirs.rwSocket : theirs.roSocket, packet),
      ]);
      t.like(fromTheirs.error, expected, `libvirtd, ${what}`);
      t.deepEqual(fromOurs, fromTheirs, what);
    }

    // Through a client library the unknown procedure becomes NO_SUPPORT, as libvirt's client maps
    // it, before authentication too; the auth gate's error stays an RPC error.
    for (const [who, daemon] of [
      ['virtauthd', ours],
      ['libvirtd', theirs],
    ] as const) {
      for (const path of [daemon.roSocket, daemon.rwSocket]) {
        const rpc = await rawClient(path);
        t.teardown(() => rpc.close(null));
        const mapped = await expectVirError(t, rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, 9999, xdr.xvoid, undefined, xdr.xvoid));
        t.like(mapped, { code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.RPC, message: 'unknown procedure: 9999' }, `${who} ${path}`);
      }
      const saslRpc = await rawClient(daemon.rwSocket);
      t.teardown(() => saslRpc.close(null));
      const refused = await expectVirError(
        t,
        saslRpc.call(
          REMOTE_PROGRAM,
          REMOTE_PROTOCOL_VERSION,
          RemoteProc.CONNECT_OPEN,
          remote.connectOpenArgs,
          { name: null, flags: 0 },
          xdr.xvoid,
        ),
      );
      t.like(refused, { code: ErrorCode.RPC, domain: ErrorDomain.RPC, level: 2, message: 'authentication required' }, who);
    }
  },
);

interopTest(
  'auth=polkit against a server offering only none fails with AUTH_FAILED, for virtauthd and libvirtd alike',
  ['root', 'libvirtd', 'virsh'],
  async (t) => {
    const [ours, theirs] = await Promise.all([startVirtauthd(t), startLibvirtd(t, { auth_unix_rw: 'none' })]);
    for (const uri of [`${ours.uri()}&auth=polkit`, `${theirs.uri()}&auth=polkit`]) {
      const error = await expectVirError(t, openAuth(uri, null));
      t.like(error, { code: ErrorCode.AUTH_FAILED, message: 'authentication failed: requested authentication type polkit rejected' }, uri);
      const fromVirsh = await virsh(uri, ['hostname']);
      t.not(fromVirsh.code, 0);
      t.regex(fromVirsh.stderr, /authentication failed: requested authentication type polkit rejected/, uri);
    }
  },
);

interopTest(
  'the read-only socket opens read-only whatever the flags; the rw socket honours VIR_CONNECT_RO',
  ['python3-libvirt'],
  async (t) => {
    const opens: { readOnly: boolean }[] = [];
    const recordOpen: DaemonExtension = {
      decorateOpenContext: (_session, ctx) => {
        opens.push({ readOnly: ctx.readOnly });
        return ctx;
      },
    };
    const daemon = await startVirtauthd(t, {}, [recordOpen]);

    const roSocketOpen = await openNoAuth(t, daemon.uri(true));
    const rwSocketOpen = await openNoAuth(t, daemon.uri());
    t.is(await roSocketOpen.getHostname(), await rwSocketOpen.getHostname());
    await openNoAuth(t, daemon.uri(), OpenFlag.READ_ONLY);
    t.deepEqual(
      opens.map((open) => open.readOnly),
      [true, false, true],
      'ro socket, rw socket, rw socket with VIR_CONNECT_RO',
    );

    const python = await runPythonLibvirt(daemon.uri(true), { readOnly: true, commands: ['hostname', 'list'] });
    t.true(python.ok, JSON.stringify(python));
    t.is(opens.at(-1)?.readOnly, true);
    const ro = await rawExchange(
      daemon.roSocket,
      [callPacket(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 })],
      { until: (packets) => packets.length > 0 },
    );
    t.is(ro.packets[0]?.header.status, MessageStatus.OK, JSON.stringify(ro.packets[0]?.error));
  },
);

// --- hostile input ----------------------------------------------------------------------------

interopTest('bad input closes that connection or gets an RPC error while another client keeps working', [], async (t) => {
  const daemon = await startVirtauthd(t);
  const bystander = await openAuth(daemon.uri(), null);
  const expectedHostname = await bystander.getHostname();
  const lengthWord = (value: number, padding = 0) => {
    const bytes = Buffer.alloc(4 + padding);
    bytes.writeUInt32BE(value >>> 0, 0);
    return bytes;
  };
  const validOpen = callPacket(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 });
  const closes: { what: string; bytes: Buffer[]; endAfterWrite?: boolean }[] = [
    { what: 'length word 0', bytes: [lengthWord(0, 24)] },
    { what: 'length word 27 (below a header)', bytes: [lengthWord(27, 23)] },
    { what: `length word ${PACKET_MAX + 1} (above the maximum)`, bytes: [lengthWord(PACKET_MAX + 1)] },
    { what: 'length word 0xffffffff', bytes: [lengthWord(0xffffffff, 60)] },
    { what: 'a header cut short, then EOF', bytes: [validOpen.subarray(0, 17)], endAfterWrite: true },
    { what: 'a payload cut short, then EOF', bytes: [validOpen.subarray(0, validOpen.length - 3)], endAfterWrite: true },
    { what: 'the maximum length announced, a few bytes sent, then EOF', bytes: [lengthWord(PACKET_MAX, 100)], endAfterWrite: true },
    { what: 'random garbage', bytes: [Buffer.concat([Buffer.from([0xde, 0xad, 0xbe, 0xef]), randomBytes(200)])] },
    { what: 'text (an HTTP request)', bytes: [Buffer.from('GET / HTTP/1.1\r\nHost: virtauthd\r\n\r\n')] },
  ];
  for (const { what, bytes, endAfterWrite } of closes) {
    const [exchange, hostname] = await Promise.all([rawExchange(daemon.rwSocket, bytes, { endAfterWrite }), bystander.getHostname()]);
    t.true(exchange.closedByServer, `${what}: the server should close the connection`);
    t.deepEqual(exchange.packets, [], `${what}: nothing is answered`);
    t.is(hostname, expectedHostname, what);
  }

  const errors: { what: string; bytes: Buffer; message: string }[] = [
    {
      what: 'a CALL to an unknown program',
      bytes: voidCall(1, { prog: 0xdeadbeef }),
      message: `Cannot find program ${0xdeadbeef | 0} version 1`,
    },
    {
      what: 'a payload the procedure cannot decode',
      bytes: callPacket(RemoteProc.CONNECT_OPEN, xdr.uint, 0xffffff00),
      message: 'Unable to decode message payload',
    },
  ];
  for (const { what, bytes, message } of errors) {
    const [reply, hostname] = await Promise.all([firstErrorReply(daemon.rwSocket, bytes), bystander.getHostname()]);
    t.like(reply.error, { code: ErrorCode.RPC, domain: ErrorDomain.RPC, message }, what);
    t.is(hostname, expectedHostname, what);
  }

  // Many garbage connections leave no session behind.
  const connections = 200;
  const batch = 20;
  for (let started = 0; started < connections; started += batch) {
    const exchanges = await Promise.all(
      Array.from({ length: batch }, () => rawExchange(daemon.rwSocket, [Buffer.concat([lengthWord(3), randomBytes(32)])])),
    );
    t.true(exchanges.every((exchange) => exchange.closedByServer));
  }
  t.is(await bystander.getHostname(), expectedHostname);
  await bystander.close();
  await untilClientCount([daemon.handle.server], 0, 30_000, 'every session to end');
  t.is(daemon.handle.server.clientCount, 0);
});

// --- the virtauthd executable --------------------------------------------------------------

interopTest('virtauthd prints a URI per listener, serves virsh on it, exits 0 on SIGTERM and removes its sockets', ['virsh'], async (t) => {
  const dir = await tempDir('vm');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, `unix_sock_dir = "${dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nlog_level = 4\n`);
  const child = spawn(process.execPath, [daemonMain, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout.on('data', () => child.emit('output'));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );

  try {
    // Generous: a loaded CI machine can take seconds to start node.
    await whenEmitted(
      child,
      ['output', 'exit'],
      () => stdout.split('\n').filter((line) => line !== '').length >= 2 || child.exitCode !== null,
      30_000,
      'two listener lines',
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}; stdout ${JSON.stringify(stdout)}, stderr ${JSON.stringify(stderr)}`, { cause: error });
  }
  t.is(child.exitCode, null, `virtauthd exited early: ${stderr}`);
  const lines = stdout.trim().split('\n');
  t.is(lines.length, 2, stdout);
  const uris = lines.map((line) => /'(test\+unix:\/\/\/default\?socket=[^']+)'/.exec(line)?.[1]);
  t.deepEqual(
    uris,
    [`test+unix:///default?socket=${join(dir, 'virtauth-sock')}`, `test+unix:///default?socket=${join(dir, 'virtauth-sock-ro')}`],
    stdout,
  );
  t.regex(lines[1]!, /read-only/);

  for (const uri of uris) {
    const result = await virsh(uri!, ['hostname']);
    t.is(result.code, 0, describeResult(result));
    t.not(result.stdout.trim(), '');
  }

  child.kill('SIGTERM');
  const ended = await exited;
  t.deepEqual(ended, { code: 0, signal: null }, stderr);
  t.false(existsSync(join(dir, 'virtauth-sock')), 'rw socket removed');
  t.false(existsSync(join(dir, 'virtauth-sock-ro')), 'ro socket removed');

  const badConfigs = ['listen_tcp = "maybe"\n', 'auth_unix_rw = "kerberos"\n', 'unix_sock_dir = \n'];
  for (const text of badConfigs) {
    const badFile = join(dir, 'bad.conf');
    await writeFile(badFile, `unix_sock_dir = "${dir}"\n${text}`);
    const result = await runProcess(process.execPath, [daemonMain, '--config', badFile], { timeoutMs: 10_000 });
    t.is(result.code, 1, `${JSON.stringify(text)}: ${describeResult(result)}`);
    t.regex(result.stderr, /^virtauthd: configuration file syntax error: /, JSON.stringify(text));
    t.true(result.stderr.includes(badFile), `the message names the file: ${result.stderr}`);
  }
  const missing = await runProcess(process.execPath, [daemonMain, '--config', join(dir, 'absent.conf')], { timeoutMs: 10_000 });
  t.is(missing.code, 1);
  t.regex(missing.stderr, /configuration file syntax error: cannot read configuration file .*absent\.conf/);
});

// --- keepalive -------------------------------------------------------------------------------

/** Asks for keepalive, then never answers a PING; returns when the server gives up. */
function silentKeepaliveClient(path: string): Promise<RawExchange> {
  return rawExchange(
    path,
    [callPacket(RemoteProc.CONNECT_SUPPORTS_FEATURE, remote.connectSupportsFeatureArgs, { feature: Feature.PROGRAM_KEEPALIVE })],
    { waitMs: 8000 },
  );
}

interopTest(
  'keepalive: a client that stops answering PINGs is dropped after interval*(count+1) s, as libvirtd does',
  ['root', 'libvirtd'],
  async (t) => {
    const [ours, theirs] = await Promise.all([
      startVirtauthd(t, { keepaliveInterval: 1, keepaliveCount: 2 }),
      startLibvirtd(t, { auth_unix_rw: 'none', extraConfig: { keepalive_interval: 1, keepalive_count: 2 } }),
    ]);
    // A client that answers PINGs (our RpcConnection does) outlives the silent one.
    const answering = await rawClient(ours.rwSocket);
    t.teardown(() => answering.close(null));
    const supported = await answering.call(
      REMOTE_PROGRAM,
      REMOTE_PROTOCOL_VERSION,
      RemoteProc.CONNECT_SUPPORTS_FEATURE,
      remote.connectSupportsFeatureArgs,
      { feature: Feature.PROGRAM_KEEPALIVE },
      remote.connectSupportsFeatureRet,
    );
    t.is(supported.supported, 1);

    const [fromOurs, fromTheirs] = await Promise.all([silentKeepaliveClient(ours.rwSocket), silentKeepaliveClient(theirs.rwSocket)]);
    for (const [who, exchange] of [
      ['virtauthd', fromOurs],
      ['libvirtd', fromTheirs],
    ] as const) {
      t.true(exchange.closedByServer, `${who} dropped the silent client`);
      const [reply, ...rest] = exchange.packets;
      t.like(reply?.header, { proc: RemoteProc.CONNECT_SUPPORTS_FEATURE, status: MessageStatus.OK }, who);
      t.deepEqual(reply?.body, Buffer.from([0, 0, 0, 1]), `${who} supports keepalive`);
      t.deepEqual(
        rest.map((packet) => [packet.header.prog, packet.header.type, packet.header.proc]),
        [
          [KEEPALIVE_PROGRAM, MessageType.MESSAGE, KeepaliveProc.PING],
          [KEEPALIVE_PROGRAM, MessageType.MESSAGE, KeepaliveProc.PING],
        ],
        `${who}: count PINGs`,
      );
      t.true(exchange.closedAtMs! >= 2500 && exchange.closedAtMs! <= 6000, `${who} closed after ${exchange.closedAtMs} ms`);
    }
    t.false(answering.closed, 'the answering client is still connected');
    const stillServed = await answering.call(
      REMOTE_PROGRAM,
      REMOTE_PROTOCOL_VERSION,
      RemoteProc.CONNECT_SUPPORTS_FEATURE,
      remote.connectSupportsFeatureArgs,
      { feature: Feature.REMOTE },
      remote.connectSupportsFeatureRet,
    );
    t.is(stillServed.supported, 1);
  },
);
