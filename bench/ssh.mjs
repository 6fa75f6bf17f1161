// SSH open throughput: an SSH handshake (key exchange, host key check against known_hosts, key
// login), the channel running nc on the remote, then libvirt's AUTH_LIST, CONNECT_OPEN and
// CONNECT_CLOSE, per second, one open at a time. A private sshd on a loopback port and a private
// libvirtd behind it, both started in this run.
//   node bench/ssh.mjs [seconds-per-measurement]      (needs root: sshd and libvirtd)
// Each figure is the median of three interleaved measurements. Needs the compiled tree.
//
// Clients: python3-libvirt (libvirt's own libssh transport) and our client (openAuth, +libssh
// through ssh2), with the same URI. Our client shares one SSH login among the opens made with
// the same callback while one is open; the last row measures that (an open that only adds a
// channel), the rows before it a full handshake per open.

import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { PrivateSshd } from '../test/dist/src/peers/sshd.js';
import { loopRate } from './lib/loop-rate.mjs';
import { pythonRate } from './lib/python-rate.mjs';

const secondsPerCase = Number(process.argv[2] ?? 2);
const rounds = 3;
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);

const ECHOPROMPT = 6;
const PASSPHRASE = 5;

let sshd;
let libvirtd;
try {
  libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
  sshd = await PrivateSshd.start({ users: [], rootByKey: true });
  const knownHosts = join(sshd.dir, 'bench_known_hosts');
  await writeFile(knownHosts, `${sshd.knownHostsLine()}\n`);
  const uri =
    `test+libssh://root@127.0.0.1:${sshd.port}/default?sshauth=privkey&keyfile=${sshd.clientKey}` +
    `&known_hosts=${knownHosts}&proxy=netcat&socket=${libvirtd.rwSocket}`;
  console.log(
    `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, median of ${rounds} x ${secondsPerCase}s per figure, ed25519 host and client keys`,
  );
  console.log(`URI: ${uri}\n`);

  // A callback object per open: opens never share a login, each pays the whole handshake.
  const freshAuth = () => ({ credTypes: [ECHOPROMPT, PASSPHRASE], callback: () => false });
  const oursFull = () => loopRate(async () => (await openAuth(uri, freshAuth())).close(), { seconds: secondsPerCase });
  const sharedAuth = freshAuth();
  const oursShared = async () => {
    // Held open for the measurement, so the login stays up and each open adds a channel.
    const anchor = await openAuth(uri, sharedAuth);
    try {
      return await loopRate(async () => (await openAuth(uri, sharedAuth)).close(), { seconds: secondsPerCase });
    } finally {
      await anchor.close();
    }
  };
  const python = () =>
    pythonRate({
      what: `+libssh opens of ${uri}`,
      settings: { uri },
      seconds: secondsPerCase,
      setup: [
        'def answer(_credentials, _opaque):',
        '    return -1',
        'auth = [[libvirt.VIR_CRED_ECHOPROMPT, libvirt.VIR_CRED_PASSPHRASE], answer, None]',
      ].join('\n'),
      operation: "libvirt.openAuth(SETTINGS['uri'], auth, 0).close()",
      batch: 2,
    });

  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const samples = { python: [], oursFull: [], oursShared: [] };
  for (let round = 0; round < rounds; round++) {
    samples.python.push(await python());
    samples.oursFull.push(await oursFull());
    samples.oursShared.push(await oursShared());
  }
  const figures = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, median(values)]));
  const row = (label, value) => console.log(`  ${label.padEnd(58)}${value.toFixed(1).padStart(10)}`);
  console.log(`  ${'SSH handshake + libvirt open, per second'.padEnd(58)}${'opens/s'.padStart(10)}`);
  row('python3-libvirt +libssh (libssh) -> sshd -> nc -> libvirtd', figures.python);
  row('virtauth client +libssh (ssh2), a login per open', figures.oursFull);
  row('virtauth client +libssh, opens sharing one login', figures.oursShared);
  console.log(`\n  virtauth / python3-libvirt, a login per open: ${(figures.oursFull / figures.python).toFixed(2)}x`);
  console.log(`  virtauth shared login / python3-libvirt:      ${(figures.oursShared / figures.python).toFixed(2)}x`);
} finally {
  await sshd?.stop();
  await libvirtd?.stop();
}
