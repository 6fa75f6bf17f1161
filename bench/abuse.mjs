// What a client that never authenticates can cost a daemon (issue 10, item 5): resident memory
// under a client that sends calls and never reads the replies, memory after it leaves, and the
// log written for a flood of junk packets. virtauthd runs as its own process; a private libvirtd
// (root only) is measured the same way for comparison.
//   node bench/abuse.mjs [MiB-sent]           (default 10; needs the compiled tree)
// Not a timed test: it prints figures, and fails only if a daemon cannot be started or measured.

import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { MessageStatus, MessageType, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc } from '../core/dist/src/index.js';
import { repeatedPackets, sendWithoutReading } from '../test/dist/src/abuse-client.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';

const mebibytes = Number(process.argv[2] ?? 10);
if (!(mebibytes > 0)) throw new Error(`MiB to send must be a positive number, got ${process.argv[2]}`);

/** The kernel's resident set size of a process, in KiB. */
function residentKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
}

/** Bytes a process has read through system calls (sockets included). */
function bytesReadBy(pid) {
  return Number(/rchar:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1]);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const hostnameCall = {
  prog: REMOTE_PROGRAM,
  vers: REMOTE_PROTOCOL_VERSION,
  proc: RemoteProc.CONNECT_GET_HOSTNAME,
  type: MessageType.CALL,
  status: MessageStatus.OK,
};

function connect(target) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(target, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** RSS before, while a never-reading client has sent what it could, and after it left. */
async function neverReadingClient(pid, target) {
  const calls = repeatedPackets(hostnameCall, Math.floor((mebibytes << 20) / 28));
  await sleep(500);
  const before = residentKiB(pid);
  const readBefore = bytesReadBy(pid);
  const socket = await connect(target);
  socket.on('error', () => {});
  const accepted = await sendWithoutReading(socket, calls, 1000);
  const during = residentKiB(pid);
  const read = bytesReadBy(pid) - readBefore;
  socket.destroy();
  await sleep(2000);
  const after = residentKiB(pid);
  return { sent: calls.length, accepted, read, before, during, after };
}

const mib = (kib) => (kib / 1024).toFixed(1);
const signed = (kib) => `${kib >= 0 ? '+' : ''}${mib(kib)}`;

function report(name, r) {
  console.log(
    `  ${name.padEnd(34)} ${mib(r.accepted / 1024).padStart(5)} MiB left the client, ${mib(r.read / 1024).padStart(5)} MiB read by the daemon   RSS ${mib(r.before)} -> ${mib(r.during)} MiB (${signed(r.during - r.before)}), after close ${mib(r.after)} MiB`,
  );
}

async function startVirtauthd() {
  const dir = await tempDir('va');
  const configFile = join(dir, 'virtauthd.conf');
  // SASL everywhere: every call below is made before authenticating. Warnings are logged, so the
  // junk flood's log lines can be counted.
  const settings = {
    unix_sock_dir: dir,
    auth_unix_rw: 'sasl',
    auth_unix_ro: 'sasl',
    sasl_user_db: join(dir, 'users.json'),
    listen_tcp: 1,
    listen_addr: '127.0.0.1',
    tcp_port: 0,
    auth_tcp: 'sasl',
    log_level: 3,
  };
  await writeFile(
    configFile,
    Object.entries(settings)
      .map(([key, value]) => `${key} = ${JSON.stringify(value)}\n`)
      .join(''),
  );
  const daemon = await spawnVirtauthd(configFile, dir, (stdout) => {
    const tcp = /'test\+tcp:\/\/127\.0\.0\.1:(\d+)\//.exec(stdout)?.[1];
    return tcp && stdout.includes('virtauth-sock-ro') ? { port: Number(tcp) } : undefined;
  });
  return { ...daemon, socketPath: join(dir, 'virtauth-sock'), port: daemon.found.port };
}

console.log(`A client that never authenticates: ${mebibytes} MiB of 28-byte CONNECT_GET_HOSTNAME calls, replies never read\n`);
const virtauthd = await startVirtauthd();
try {
  report('virtauthd, unix socket (SASL)', await neverReadingClient(virtauthd.pid, virtauthd.socketPath));
  // Twice over TCP: the kernel's larger TCP buffers let more through; the second run shows
  // whether what the first one cost stays or is reused.
  report('virtauthd, TCP (SASL)', await neverReadingClient(virtauthd.pid, { host: '127.0.0.1', port: virtauthd.port }));
  report('virtauthd, TCP (SASL), again', await neverReadingClient(virtauthd.pid, { host: '127.0.0.1', port: virtauthd.port }));

  // Stray REPLY packets (match no call): each is a protocol error; the log says so in few lines.
  const junkBytes = 560 * 1024;
  const logBefore = virtauthd.logBytes();
  const junk = await connect(virtauthd.socketPath);
  await new Promise((resolve) =>
    junk.write(repeatedPackets({ ...hostnameCall, type: MessageType.REPLY }, Math.floor(junkBytes / 28)), resolve),
  );
  await sleep(500);
  junk.destroy();
  await sleep(500);
  console.log(`  virtauthd, ${junkBytes / 1024} KiB of junk REPLY packets: ${virtauthd.logBytes() - logBefore} bytes of log`);
} finally {
  await virtauthd.stop();
}

if (process.getuid?.() === 0) {
  const libvirtd = await PrivateLibvirtd.start({
    auth_unix_rw: 'sasl',
    listenTcp: true,
    auth_tcp: 'sasl',
    saslUsers: { alice: 'alice-Pa55-abuse' },
  });
  try {
    report('libvirtd, unix socket (SASL)', await neverReadingClient(libvirtd.pid, libvirtd.rwSocket));
    report('libvirtd, TCP (SASL)', await neverReadingClient(libvirtd.pid, { host: '127.0.0.1', port: libvirtd.tcpPort }));
  } finally {
    await libvirtd.stop();
  }
} else {
  console.log('  (libvirtd not measured: a private libvirtd needs root)');
}
