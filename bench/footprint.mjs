// What a client costs each daemon: memory per connection held open, and server CPU per login,
// virtauthd against a real libvirtd started in the same run with the same users.
//   node bench/footprint.mjs [idle-connections] [seconds-per-cpu-round]
//     (default 10000 and 3; needs root for the private libvirtd; re-runs itself with a higher
//     open-file limit when the current one is too low for the connections held)
// Needs the compiled tree (npm run build).
//
// Memory: the daemon's RSS growth while a raw client holds `idle-connections` connections that
// each did AUTH_LIST + CONNECT_OPEN (auth none), divided by the count, after a warm-up batch was
// opened and closed; then the same for connections that logged in with SCRAM-SHA-256 (our client,
// fewer of them: the client's own PBKDF2 makes each login cost milliseconds).
// CPU: the daemon's utime+stime (/proc/PID/stat) over a run of python3-libvirt logins, divided by
// the logins, for full SCRAM-SHA-256 logins and for auth-none open+close. Each memory figure comes
// from freshly started daemons (so one measurement's freed memory is not taken off the next one's
// growth). CPU rounds alternate the two
// daemons; figures are medians, with the range of the rounds.

import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { runPython } from '../test/dist/src/peers/clients.js';
import { addVirtauthUser } from '../test/dist/src/sasl-support.js';
import { spawnVirtauthd, writeVirtauthdConfig } from './lib/virtauthd-process.mjs';

const idleConnections = Number(process.argv[2] ?? 10_000);
const secondsPerCpuRound = Number(process.argv[3] ?? 3);
if (!(Number.isInteger(idleConnections) && idleConnections >= 100))
  throw new Error(`idle connections must be an integer >= 100, got ${process.argv[2]}`);
if (!(secondsPerCpuRound > 0)) throw new Error(`seconds per CPU round must be a positive number, got ${process.argv[3]}`);
const scramConnections = Math.min(1000, idleConnections);
const warmUpConnections = 300;
const rounds = 3;
const memoryGoal = 2;
const loginCpuGoal = 5;
const user = 'benchuser';
const password = 'bench-Pa55-5c7a';

// Both this client and each daemon hold a descriptor per connection, plus their own.
const filesNeeded = idleConnections + 1024;
const openFileLimit = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 0);
if (openFileLimit < filesNeeded) {
  if (process.env.VIRTAUTH_BENCH_RELIMITED)
    throw new Error(`open-file limit is ${openFileLimit}, ${filesNeeded} needed, and raising it failed`);
  const limit = String(filesNeeded + 1024);
  const rerun = spawnSync(
    'prlimit',
    [`--nofile=${limit}:${limit}`, process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
      env: { ...process.env, VIRTAUTH_BENCH_RELIMITED: '1' },
    },
  );
  if (rerun.error) throw new Error(`cannot raise the open-file limit to ${limit} with prlimit: ${rerun.error.message}`);
  process.exit(rerun.status ?? 1);
}

/** CPU time (user + system) a process has used so far, in microseconds. */
async function cpuMicros(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, counted in clock ticks (100 per second).
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function rssBytes(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)[1]) * 1024;
}

const REMOTE_PROGRAM = 0x20008086;
const PROC_CONNECT_OPEN = 1;
const PROC_AUTH_LIST = 66;

/** A CALL packet of the remote program: header, then the payload words given. */
function callPacket(proc, serial, payloadWords) {
  const words = [0, REMOTE_PROGRAM, 1, proc, 0 /* CALL */, serial, 0 /* OK */, ...payloadWords];
  const packet = Buffer.alloc(words.length * 4);
  words.forEach((word, i) => packet.writeUInt32BE(word >>> 0, i * 4));
  packet.writeUInt32BE(packet.length, 0);
  return packet;
}
/** XDR words of a non-null remote_string. */
function stringWords(text) {
  const bytes = Buffer.alloc(Math.ceil(text.length / 4) * 4);
  bytes.write(text, 'latin1');
  return [1, text.length, ...Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readUInt32BE(i * 4))];
}
// AUTH_LIST (no arguments), then CONNECT_OPEN("test:///default", flags 0), sent together as a
// client pipelines them; both replies must say OK.
const openingPackets = Buffer.concat([
  callPacket(PROC_AUTH_LIST, 1, []),
  callPacket(PROC_CONNECT_OPEN, 2, [...stringWords('test:///default'), 0]),
]);

/** A raw connection that has done AUTH_LIST + CONNECT_OPEN and stays open, idle. */
function openIdle(path) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let input = Buffer.alloc(0);
    let replies = 0;
    const fail = (error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', fail);
    socket.once('connect', () => socket.write(openingPackets));
    socket.on('data', (chunk) => {
      input = Buffer.concat([input, chunk]);
      while (input.length >= 4 && input.length >= input.readUInt32BE(0)) {
        const length = input.readUInt32BE(0);
        const status = input.readUInt32BE(24);
        if (status !== 0) return fail(new Error(`call ${input.readUInt32BE(12)} failed with status ${status}`));
        input = input.subarray(length);
        if (++replies === 2) {
          socket.removeAllListeners('data');
          socket.once('close', () => {});
          return resolve(socket);
        }
      }
    });
  });
}

/** Opens `count` connections with `open`, `parallel` at a time; all must succeed. */
async function openMany(count, parallel, open) {
  const held = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      held.push(await open());
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return held;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 1500));

/** RSS growth per connection while `count` connections opened by `open` are held. */
async function memoryPerConnection(pid, count, parallel, open, close) {
  // Warm-up: the daemon's code paths compiled and its pools grown before the baseline.
  for (const c of await openMany(Math.min(warmUpConnections, count), parallel, open)) await close(c);
  await settle();
  const before = await rssBytes(pid);
  const held = await openMany(count, parallel, open);
  await settle();
  const after = await rssBytes(pid);
  await Promise.all(held.map(close));
  return { perConnection: (after - before) / count, held: held.length };
}

const closeSocket = (socket) =>
  new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once('close', resolve);
    socket.destroy();
  });

/**
 * Closes one of our client's connections after the figure was taken: a daemon may already have
 * dropped it (its keepalive), which makes CONNECT_CLOSE fail and changes nothing measured.
 */
const closeQuietly = (connection) => connection.close().catch(() => {});

const scramAuth = {
  credTypes: [2, 5], // AUTHNAME, PASSPHRASE
  callback: (creds) => {
    for (const c of creds) c.result = c.type === 2 ? user : password;
  },
};

/** python3-libvirt logins (or auth-none opens) for `seconds`; prints how many were done. */
async function pythonLogins(uri, seconds, withPassword) {
  const settings = JSON.stringify(JSON.stringify({ uri, user, password, seconds }));
  const script = String.raw`
import json, sys, time
import libvirt
libvirt.registerErrorHandler(lambda _context, _error: None, None)
SETTINGS = json.loads(${settings})
answers = {libvirt.VIR_CRED_AUTHNAME: SETTINGS['user'], libvirt.VIR_CRED_PASSPHRASE: SETTINGS['password']}
def answer(credentials, _opaque):
    for credential in credentials:
        credential[4] = answers[credential[0]]
    return 0
auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
with_password = ${withPassword ? 'True' : 'False'}
done = 0
deadline = time.perf_counter() + SETTINGS['seconds']
while time.perf_counter() < deadline:
    for _ in range(5):
        connection = libvirt.openAuth(SETTINGS['uri'], auth, 0) if with_password else libvirt.open(SETTINGS['uri'])
        connection.close()
    done += 5
json.dump({'done': done}, sys.stdout)
`;
  const result = await runPython(script, { timeoutMs: (seconds + 30) * 1000 });
  if (result.code !== 0) throw new Error(`python3-libvirt logins against ${uri} failed: exit ${result.code}: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout.trim().split('\n').pop()).done;
}

/** Server CPU per login, in microseconds: the daemon's CPU over a run of logins / logins. */
async function cpuPerLogin(pid, uri, withPassword) {
  const before = await cpuMicros(pid);
  const logins = await pythonLogins(uri, secondsPerCpuRound, withPassword);
  return ((await cpuMicros(pid)) - before) / logins;
}

async function startVirtauthd() {
  const { dir, configFile } = await writeVirtauthdConfig((dir) => [
    `unix_sock_dir = "${dir}"`,
    'auth_unix_rw = "none"',
    'auth_unix_ro = "sasl"',
    `sasl_user_db = "${join(dir, 'users.json')}"`,
    `max_clients = ${idleConnections + 100}`,
    `max_anonymous_clients = ${idleConnections + 100}`,
    'log_level = 4',
  ]);
  await addVirtauthUser(configFile, user, password);
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => /'test\+unix:[^']*socket=([^']*virtauth-sock)'/.exec(stdout)?.[1]);
  const rwSocket = virtauthd.found;
  return {
    pid: virtauthd.pid,
    rwSocket,
    noneUri: `test+unix:///default?socket=${rwSocket}`,
    scramUri: `test+unix:///default?socket=${rwSocket}-ro`,
    stop: virtauthd.stop,
  };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const range = (values) => `${Math.min(...values).toFixed(2)}..${Math.max(...values).toFixed(2)}`;

/** Both daemons, fresh, for `use`; stopped after it. */
async function withDaemons(use) {
  let libvirtd;
  let virtauthd;
  try {
    libvirtd = await PrivateLibvirtd.start({
      auth_unix_rw: 'none',
      auth_unix_ro: 'sasl',
      saslUsers: { [user]: password },
      extraConfig: { max_clients: idleConnections + 100, max_anonymous_clients: idleConnections + 100 },
    });
    virtauthd = await startVirtauthd();
    return await use({
      libvirtd: {
        pid: libvirtd.pid,
        rwSocket: libvirtd.rwSocket,
        noneUri: libvirtd.uri(),
        scramUri: libvirtd.uri('test:///default', 'unix-ro'),
      },
      virtauthd,
    });
  } finally {
    await virtauthd?.stop();
    await libvirtd?.stop();
  }
}

let missed = false;
console.log(
  `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}; ${idleConnections} idle connections, ${scramConnections} SCRAM ones; CPU: median of ${rounds} x ${secondsPerCpuRound}s`,
);

// Each memory figure from daemons of its own: memory a previous measurement freed (a garbage
// collection after it) would otherwise come off the next one's growth.
const memory = { idle: {}, scram: {} };
await withDaemons(async (daemons) => {
  for (const [name, d] of Object.entries(daemons)) {
    memory.idle[name] = (await memoryPerConnection(d.pid, idleConnections, 50, () => openIdle(d.rwSocket), closeSocket)).perConnection;
  }
});
await withDaemons(async (daemons) => {
  for (const [name, d] of Object.entries(daemons)) {
    memory.scram[name] = (
      await memoryPerConnection(d.pid, scramConnections, 10, () => openAuth(d.scramUri, scramAuth, 1 /* read-only */), closeQuietly)
    ).perConnection;
  }
});

await withDaemons(async (daemons) => {
  const cpu = { scram: { libvirtd: [], virtauthd: [] }, none: { libvirtd: [], virtauthd: [] } };
  for (const d of Object.values(daemons)) {
    // Warm-up: V8 compiles the login path, libvirtd loads its SASL plugins.
    await pythonLogins(d.scramUri, 0.5, true);
    await pythonLogins(d.noneUri, 0.5, false);
  }
  for (let round = 0; round < rounds; round++) {
    for (const [name, d] of Object.entries(daemons)) {
      cpu.scram[name].push(await cpuPerLogin(d.pid, d.scramUri, true));
      cpu.none[name].push(await cpuPerLogin(d.pid, d.noneUri, false));
    }
  }

  const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`.padStart(12);
  const ms = (values) => `${(median(values) / 1000).toFixed(2)} ms`.padStart(10) + ` (${range(values.map((v) => v / 1000))})`.padEnd(14);
  console.log(
    `\n  ${'memory per connection held (RSS growth / count)'.padEnd(58)}${'libvirtd'.padStart(12)}${'virtauthd'.padStart(12)}   virtauthd/libvirtd`,
  );
  console.log(
    `  ${`idle, AUTH_LIST + CONNECT_OPEN, auth none (${idleConnections})`.padEnd(58)}${kib(memory.idle.libvirtd)}${kib(memory.idle.virtauthd)}   ${(memory.idle.virtauthd / memory.idle.libvirtd).toFixed(2)}x`,
  );
  console.log(
    `  ${`logged in with SCRAM-SHA-256 (${scramConnections})`.padEnd(58)}${kib(memory.scram.libvirtd)}${kib(memory.scram.virtauthd)}   ${(memory.scram.virtauthd / memory.scram.libvirtd).toFixed(2)}x`,
  );
  console.log(
    `\n  ${'server CPU per login (utime+stime / logins), median (range)'.padEnd(58)}${'libvirtd'.padStart(24)}${'virtauthd'.padStart(24)}`,
  );
  console.log(`  ${'python3-libvirt, full SCRAM-SHA-256 login + close'.padEnd(58)}${ms(cpu.scram.libvirtd)}${ms(cpu.scram.virtauthd)}`);
  console.log(`  ${'python3-libvirt, auth-none open + close'.padEnd(58)}${ms(cpu.none.libvirtd)}${ms(cpu.none.virtauthd)}`);

  const memoryRatio = memory.idle.virtauthd / memory.idle.libvirtd;
  const cpuRatio = median(cpu.scram.libvirtd) / median(cpu.scram.virtauthd);
  console.log('\n  goals');
  const goal = (label, ratio, text, met) => {
    missed ||= !met;
    console.log(`  ${label.padEnd(72)}${ratio.toFixed(2).padStart(7)}x  (goal ${text}: ${met ? 'met' : 'MISSED'})`);
  };
  goal(
    `memory per idle connection, ${idleConnections} held: virtauthd/libvirtd`,
    memoryRatio,
    `<= ${memoryGoal.toFixed(1)}x`,
    memoryRatio <= memoryGoal,
  );
  goal('server CPU per SCRAM login: libvirtd/virtauthd', cpuRatio, `>= ${loginCpuGoal.toFixed(1)}x`, cpuRatio >= loginCpuGoal);
});
if (missed) process.exitCode = 1;
