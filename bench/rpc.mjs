// RPC throughput: virtauthd against a real libvirtd, both serving the test driver with auth none
// over unix sockets, started in the same run and measured with the same clients.
//   node bench/rpc.mjs [seconds-per-measurement]      (needs root for the private libvirtd)
// Needs the compiled tree (npm run build).
//
// Clients: python3-libvirt (libvirt's own C client) against both daemons, sequential calls and
// full open+close handshakes; our client (openAuth) against virtauthd, sequential and with many
// calls in flight. virtauthd runs as its own process, as libvirtd does, so neither daemon shares
// an event loop or a CPU thread with the client measuring it.

import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { loopRate } from './lib/loop-rate.mjs';
import { pythonRate as measurePython } from './lib/python-rate.mjs';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';

const secondsPerCase = Number(process.argv[2] ?? 3);
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);
const pipelineDepth = 64;

// One python3-libvirt measurement: warm up, then count whole batches for the time budget.
function pythonRate(uri, mode) {
  const common = { what: `${mode} against ${uri}`, settings: { uri }, seconds: secondsPerCase };
  if (mode === 'calls') {
    // One getHostname and one getLibVersion per operation: two round trips.
    return measurePython({
      ...common,
      setup: "connection = libvirt.open(SETTINGS['uri'])",
      operation: '(connection.getHostname(), connection.getLibVersion())',
      perCall: 2,
      batch: 50,
      teardown: 'connection.close()',
    });
  }
  return measurePython({ ...common, operation: "libvirt.open(SETTINGS['uri']).close()", batch: 5 });
}

/** Our client: `workers` loops issuing getHostname/getLibVersion back to back on one connection. */
async function ourCallRate(uri, workers) {
  const conn = await openAuth(uri, null);
  try {
    return await loopRate(
      async () => {
        await conn.getHostname();
        await conn.getLibVersion();
      },
      { seconds: secondsPerCase, workers, perOperation: 2 },
    );
  } finally {
    await conn.close();
  }
}

function ourHandshakeRate(uri) {
  return loopRate(async () => (await openAuth(uri, null)).close(), { seconds: secondsPerCase });
}

/** virtauthd as a separate process (auth none, warnings and errors only), like libvirtd. */
async function startVirtauthd() {
  const dir = await tempDir('vb');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(configFile, `unix_sock_dir = "${dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nlog_level = 4\n`);
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => /'(test\+unix:[^']*virtauth-sock)'/.exec(stdout)?.[1]);
  return { uri: virtauthd.found, stop: virtauthd.stop };
}

const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
let virtauthd;
try {
  virtauthd = await startVirtauthd();
  const libvirtdUri = libvirtd.uri();
  console.log(
    `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, ${secondsPerCase}s per measurement`,
  );
  console.log(`libvirtd:  ${libvirtdUri}\nvirtauthd: ${virtauthd.uri}\n`);

  // Measured one at a time, so no two measurements compete for the CPU.
  const figures = {
    pyCallsLibvirtd: await pythonRate(libvirtdUri, 'calls'),
    pyCallsVirtauthd: await pythonRate(virtauthd.uri, 'calls'),
    pyOpensLibvirtd: await pythonRate(libvirtdUri, 'handshakes'),
    pyOpensVirtauthd: await pythonRate(virtauthd.uri, 'handshakes'),
    oursSeqLibvirtd: await ourCallRate(libvirtdUri, 1),
    oursSeqVirtauthd: await ourCallRate(virtauthd.uri, 1),
    oursPipeLibvirtd: await ourCallRate(libvirtdUri, pipelineDepth),
    oursPipeVirtauthd: await ourCallRate(virtauthd.uri, pipelineDepth),
    oursOpensLibvirtd: await ourHandshakeRate(libvirtdUri),
    oursOpensVirtauthd: await ourHandshakeRate(virtauthd.uri),
  };

  const number = (n) => Math.round(n).toLocaleString('en-US').padStart(10);
  const row = (label, onLibvirtd, onVirtauthd) =>
    `  ${label.padEnd(44)}${number(onLibvirtd)}${number(onVirtauthd)}   ${(onVirtauthd / onLibvirtd).toFixed(2)}x`;
  console.log(`  ${'per second'.padEnd(44)}${'libvirtd'.padStart(10)}${'virtauthd'.padStart(10)}   virtauthd/libvirtd`);
  console.log(row('python3-libvirt, sequential calls', figures.pyCallsLibvirtd, figures.pyCallsVirtauthd));
  console.log(row('python3-libvirt, open+close handshakes', figures.pyOpensLibvirtd, figures.pyOpensVirtauthd));
  console.log(row('virtauth client, sequential calls', figures.oursSeqLibvirtd, figures.oursSeqVirtauthd));
  console.log(row(`virtauth client, ${pipelineDepth} calls in flight`, figures.oursPipeLibvirtd, figures.oursPipeVirtauthd));
  console.log(row('virtauth client, open+close handshakes', figures.oursOpensLibvirtd, figures.oursOpensVirtauthd));

  const goals = [
    ['same C client, sequential calls: virtauthd/libvirtd', figures.pyCallsVirtauthd / figures.pyCallsLibvirtd, 1.0],
    ['same C client, handshakes: virtauthd/libvirtd', figures.pyOpensVirtauthd / figures.pyOpensLibvirtd, 1.5],
    [
      `virtauth client (${pipelineDepth} in flight) + virtauthd / python3-libvirt + libvirtd`,
      figures.oursPipeVirtauthd / figures.pyCallsLibvirtd,
      5.0,
    ],
  ];
  console.log('\n  goals');
  for (const [label, ratio, goal] of goals) {
    console.log(
      `  ${label.padEnd(72)}${ratio.toFixed(2).padStart(7)}x  (goal >= ${goal.toFixed(1)}x: ${ratio >= goal ? 'met' : 'MISSED'})`,
    );
  }
} finally {
  await virtauthd?.stop();
  await libvirtd.stop();
}
