// SASL login throughput: full SCRAM-SHA-256 handshakes (connect, AUTH_LIST, AUTH_SASL_*,
// CONNECT_OPEN, CONNECT_CLOSE) per second, over a unix socket and over TLS, against virtauthd and a
// real libvirtd (Cyrus SASL with a sasldb), both started in this run with the same users.
//   node bench/sasl.mjs [seconds-per-measurement]      (needs root for the private libvirtd)
// Each figure is the median of three interleaved measurements.
// Needs the compiled tree (npm run build).
//
// Clients: python3-libvirt (libvirt's own C client) against both daemons, and our client
// (openAuth) against virtauthd. Handshakes are sequential, one login at a time, so the figures are
// latencies a user would see, not a saturation test. Then 500 logins at once from our client.
// virtauthd runs as its own process, as libvirtd does, so the daemon measured does not share an
// event loop with the client measuring it.

import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { TestPki } from '../test/dist/src/peers/pki.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { loopRate } from './lib/loop-rate.mjs';
import { pythonRate as measurePython } from './lib/python-rate.mjs';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';
import { addVirtauthUser } from '../test/dist/src/sasl-support.js';

const secondsPerCase = Number(process.argv[2] ?? 2);
const rounds = 3;
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);
const concurrentLogins = 500;
const user = 'benchuser';
const password = 'bench-Pa55-5c7a';
const credentialTypes = [2, 5]; // AUTHNAME, PASSPHRASE

// One python3-libvirt measurement: warm up, then count whole batches for the time budget.
function pythonRate(uri) {
  return measurePython({
    what: `handshakes against ${uri}`,
    settings: { uri, user, password },
    seconds: secondsPerCase,
    setup: [
      "answers = {libvirt.VIR_CRED_AUTHNAME: SETTINGS['user'], libvirt.VIR_CRED_PASSPHRASE: SETTINGS['password']}",
      'def answer(credentials, _opaque):',
      '    for credential in credentials:',
      '        credential[4] = answers[credential[0]]',
      '    return 0',
      'auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]',
    ].join('\n'),
    operation: "libvirt.openAuth(SETTINGS['uri'], auth, 0).close()",
    batch: 5,
  });
}

const auth = {
  credTypes: credentialTypes,
  callback: (creds) => {
    for (const c of creds) c.result = c.type === 2 ? user : password;
  },
};

async function ourHandshake(uri) {
  await (await openAuth(uri, auth)).close();
}

function ourHandshakeRate(uri) {
  return loopRate(() => ourHandshake(uri), { seconds: secondsPerCase });
}

/** `count` logins started together; every one must succeed. */
async function concurrentLoginTime(uri, count) {
  const started = performance.now();
  const outcomes = await Promise.allSettled(Array.from({ length: count }, () => ourHandshake(uri)));
  const elapsed = performance.now() - started;
  const failures = outcomes.filter((o) => o.status === 'rejected');
  return { elapsed, failures: failures.length, firstFailure: failures[0]?.reason?.message };
}

/** virtauthd as a separate process: SASL on its unix socket and TLS listener, errors logged only. */
async function startVirtauthd(pki) {
  const dir = await tempDir('vb');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(
    configFile,
    [
      `unix_sock_dir = "${dir}"`,
      'auth_unix_rw = "sasl"',
      'auth_unix_ro = "sasl"',
      `sasl_user_db = "${join(dir, 'users.json')}"`,
      'listen_tls = 1',
      'listen_addr = "127.0.0.1"',
      'tls_port = 0',
      'auth_tls = "sasl"',
      `key_file = "${pki.serverKeyFile}"`,
      `cert_file = "${pki.serverCertFile}"`,
      `ca_file = "${pki.caCertFile}"`,
      // Room for the concurrent logins: every one of them is unauthenticated at first.
      `max_anonymous_clients = ${concurrentLogins * 2}`,
      `max_clients = ${concurrentLogins * 4}`,
      'log_level = 4',
      '',
    ].join('\n'),
  );
  await addVirtauthUser(configFile, user, password);
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => {
    const unixUri = /'(test\+unix:[^']*virtauth-sock)'/.exec(stdout)?.[1];
    const tlsPort = /'test\+tls:\/\/[^:]+:(\d+)\//.exec(stdout)?.[1];
    return unixUri && tlsPort ? { unixUri, tlsPort } : undefined;
  });
  const { unixUri, tlsPort } = virtauthd.found;
  return {
    uri: (transport) => (transport === 'unix' ? unixUri : `test+tls://localhost:${tlsPort}/default?pkipath=${pki.client.pkiPath}`),
    stop: virtauthd.stop,
  };
}

const pki = await TestPki.create();
let libvirtd;
let virtauthd;
let failed = false;
try {
  libvirtd = await PrivateLibvirtd.start({
    auth_unix_rw: 'sasl',
    listenTls: true,
    auth_tls: 'sasl',
    tls: pki,
    saslUsers: { [user]: password },
    extraConfig: { max_anonymous_clients: concurrentLogins * 2, max_clients: concurrentLogins * 4 },
  });
  virtauthd = await startVirtauthd(pki);
  const libvirtdUri = (transport) => libvirtd.uri('test:///default', transport);
  console.log(
    `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, median of ${rounds} x ${secondsPerCase}s per figure, SCRAM-SHA-256 with 4096 iterations`,
  );
  console.log(`libvirtd:  ${libvirtdUri('unix')}\nvirtauthd: ${virtauthd.uri('unix')}\n`);

  // Measured one at a time, so no two measurements compete for the CPU, in interleaved rounds
  // whose median is kept, so that a burst of load elsewhere on the machine skews one round only.
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const figures = {};
  for (const transport of ['unix', 'tls']) {
    const samples = { pyLibvirtd: [], pyVirtauthd: [], oursVirtauthd: [] };
    for (let round = 0; round < rounds; round++) {
      samples.pyLibvirtd.push(await pythonRate(libvirtdUri(transport)));
      samples.pyVirtauthd.push(await pythonRate(virtauthd.uri(transport)));
      samples.oursVirtauthd.push(await ourHandshakeRate(virtauthd.uri(transport)));
    }
    figures[transport] = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, median(values)]));
  }

  const number = (n) => n.toFixed(1).padStart(10);
  console.log(`  ${'SCRAM handshakes per second'.padEnd(46)}${'unix'.padStart(10)}${'TLS'.padStart(10)}`);
  const row = (label, key) => console.log(`  ${label.padEnd(46)}${number(figures.unix[key])}${number(figures.tls[key])}`);
  row('python3-libvirt -> libvirtd', 'pyLibvirtd');
  row('python3-libvirt -> virtauthd', 'pyVirtauthd');
  row('virtauth client (openAuth) -> virtauthd', 'oursVirtauthd');

  console.log('\n  goals');
  for (const transport of ['unix', 'tls']) {
    const f = figures[transport];
    const goals = [
      [`${transport}: same C client, virtauthd / libvirtd`, f.pyVirtauthd / f.pyLibvirtd, 2],
      [`${transport}: virtauth client + virtauthd / python3-libvirt + libvirtd`, f.oursVirtauthd / f.pyLibvirtd, 5],
    ];
    for (const [label, ratio, goal] of goals) {
      const met = ratio >= goal;
      console.log(`  ${label.padEnd(66)}${ratio.toFixed(2).padStart(7)}x  (goal >= ${goal.toFixed(1)}x: ${met ? 'met' : 'MISSED'})`);
    }
  }

  console.log(`\n  ${concurrentLogins} concurrent SCRAM logins, virtauth client -> virtauthd`);
  for (const transport of ['unix', 'tls']) {
    const { elapsed, failures, firstFailure } = await concurrentLoginTime(virtauthd.uri(transport), concurrentLogins);
    failed ||= failures > 0;
    const verdict = failures === 0 ? 'zero failures' : `${failures} FAILED, e.g. ${firstFailure}`;
    console.log(
      `  ${transport.padEnd(6)}${(elapsed / 1000).toFixed(2)} s (${((concurrentLogins * 1000) / elapsed).toFixed(0)} logins/s), ${verdict}`,
    );
  }
} finally {
  await virtauthd?.stop();
  await libvirtd?.stop();
  await pki.remove();
}
if (failed) process.exitCode = 1;
