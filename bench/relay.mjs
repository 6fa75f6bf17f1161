// Credential relay latency: what a relayed credential round trip costs compared with a plain RPC
// round trip over the same chain of daemons, for 1, 2 and 3 hops.
//   node bench/relay.mjs [samples-per-chain]        (default 800; needs the compiled tree)
//
// Each daemon is its own process on a unix socket (auth none: logins are not what is measured),
// as in a deployment. The last daemon has the relay probe driver; one open of
// `relayprobe:///?probe=flood&count=N` makes it ask N credentials in a row, each travelling back
// through every daemon to this client and answered at once. Relayed round trip = the time from
// the client answering one request to the next request reaching the client's callback (answer
// down the chain, driver asks again, request up the chain). RPC round trip = CONNECT_GET_HOSTNAME
// on the same connection, which the same daemons forward down the same chain. Goal: relayed
// round trip ≤ 1.5 × RPC round trip. Both are medians over rounds that alternate the two.

import 'reflect-metadata';
import { spawn } from 'node:child_process';
import { open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
const GOAL_RATIO = 1.5;
const WARM_UP = 5000;
const ROUNDS = 8;

/** One daemon of the chain (a child of this script). */
async function serve(name, socket, withProbe, logLevel) {
  const { createDaemon, defaultConfig } = await import('../daemon/dist/src/index.js');
  const { DRIVER } = await import('../core/dist/src/index.js');
  const { RelayProbeDriver, RELAY_PROBE_ALLOWED } = await import('../test/dist/src/relay-helpers.js');
  // Every daemon may open the probe and the next hops of the chain (sockets d1..d3 beside its own).
  const hops = [1, 2, 3].map((i) => join(dirname(socket), `d${i}.sock`));
  const uriAllowedList = [
    RELAY_PROBE_ALLOWED,
    ...hops.flatMap((s) => [`relayprobe+unix:///?socket=${s}&probe=*&count=*`, `relayprobe+unix:///?socket=${s}&name=*`]),
  ];
  const config = {
    ...defaultConfig(),
    logLevel,
    daemonName: name,
    relayMaxRequestsPerOpen: 100_000,
    maxClientRequests: 50,
    uriAllowedList,
  };
  const daemon = await createDaemon({ config, listeners: [{ kind: 'unix', path: socket, auth: 0, readOnly: false }] });
  if (withProbe) daemon.container.register(DRIVER, { useValue: new RelayProbeDriver() });
  process.stdout.write('ready\n');
  process.once('SIGTERM', () => daemon.stop().then(() => process.exit(0)));
}

/** A daemon of the chain; its log (pino JSON on stderr) goes to `logFd`. */
function startChild(name, socket, withProbe, logLevel, logFd) {
  const child = spawn(process.execPath, [...process.execArgv, self, '--serve', name, socket, withProbe ? 'probe' : '', String(logLevel)], {
    stdio: ['ignore', 'pipe', logFd],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('ready\n')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`daemon ${name} exited (${code}) before it was ready`)));
  });
}

const median = (xs) => quantile(xs, 0.5);
function quantile(xs, q) {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Relayed and RPC round trips over chains of 1, 2 and 3 daemons logging at `logLevel`. */
async function measure(samples, logLevel) {
  const { openAuth } = await import('../cli/dist/src/index.js');
  const { chainUri } = await import('../test/dist/src/relay-helpers.js');
  const { tempDir } = await import('../test/dist/src/peers/util.js');
  const dir = await tempDir('vb');
  const children = [];
  const rows = [];
  const log = await open(join(dir, 'daemons.log'), 'a');
  try {
    const sockets = [1, 2, 3].map((i) => join(dir, `d${i}.sock`));
    // d3 is the daemon with the probe driver; chains of 1, 2, 3 hops end there.
    for (let i = 0; i < 3; i++) children.push(await startChild(`virtauthd-${i + 1}`, sockets[i], i === 2, logLevel, log.fd));

    for (const hops of [1, 2, 3]) {
      const chain = sockets.slice(3 - hops);
      const uriFor = (count) => {
        let uri = `relayprobe+unix:///?socket=${chain.at(-1)}&probe=flood&count=${count}`;
        for (const socket of chain.slice(0, -1).reverse()) uri = chainUri(socket, uri);
        return uri;
      };
      let answeredAt = 0;
      const gaps = [];
      const auth = {
        credTypes: [2],
        callback: (creds) => {
          const now = performance.now();
          if (answeredAt !== 0) gaps.push(now - answeredAt);
          for (const c of creds) c.result = 'bench';
          answeredAt = performance.now();
        },
      };
      const openProbe = async (count) => {
        answeredAt = 0;
        // The per-origin rate would stop a benchmark that relays thousands of requests a minute.
        return openAuth(uriFor(count), auth, 0, {
          credentialSources: [],
          relayPolicy: { maxRequestsPerOpen: count + 1, timeoutMs: 60_000, perOrigin: { maxRequests: 1e9, windowMs: 1000 } },
        });
      };
      // Warm-up: both paths JIT-compiled alike (a few hundred requests still run in V8's
      // baseline tiers, at two to four times the cost).
      const warm = await openProbe(WARM_UP);
      for (let i = 0; i < WARM_UP; i++) await warm.getHostname();
      await warm.close();
      // Rounds alternate the two measurements, so a noisy neighbour slows both alike.
      const relayed = [];
      const rpc = [];
      const perRound = Math.ceil(samples / ROUNDS);
      for (let round = 0; round < ROUNDS; round++) {
        gaps.length = 0;
        const conn = await openProbe(perRound + 1);
        relayed.push(...gaps);
        for (let i = 0; i < perRound; i++) {
          const t0 = performance.now();
          await conn.getHostname();
          rpc.push(performance.now() - t0);
        }
        await conn.close();
      }
      rows.push({
        hops,
        relayedMedian: median(relayed),
        relayedP95: quantile(relayed, 0.95),
        rpcMedian: median(rpc),
        rpcP95: quantile(rpc, 0.95),
        ratio: median(relayed) / median(rpc),
        ratioP95: quantile(relayed, 0.95) / quantile(rpc, 0.95),
        count: relayed.length,
      });
    }
  } finally {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', r)))));
    await log.close();
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

async function main() {
  const samples = Number(process.argv[2] && /^\d+$/.test(process.argv[2]) ? process.argv[2] : 800);
  if (!(samples >= 10 && samples <= 900)) throw new Error(`samples per chain must be 10..900, got ${process.argv[2]}`);
  console.log(`credential relay vs plain RPC round trip (${samples} samples each; daemons as processes on unix sockets)`);
  const missed = report('daemons as configured by default (log_level 3: no info lines)', await measure(samples, 3));
  report('daemons at log_level 2: every hop also writes an audit line per request to its log file', await measure(samples, 2));
  if (missed) console.log(`note: a ratio above ${GOAL_RATIO} in the default configuration misses the goal`);
}

/** Prints one table; returns whether a ratio misses the goal. */
function report(title, rows) {
  const ms = (x) => `${x.toFixed(3)} ms`;
  console.log(`\n${title}`);
  console.log('hops  relayed median  relayed p95   RPC median    RPC p95       ratio (median)  ratio (p95)  goal');
  let missed = false;
  for (const r of rows) {
    const ok = r.ratio <= GOAL_RATIO;
    missed ||= !ok;
    console.log(
      `${String(r.hops).padEnd(6)}${ms(r.relayedMedian).padEnd(16)}${ms(r.relayedP95).padEnd(14)}${ms(r.rpcMedian).padEnd(14)}${ms(r.rpcP95).padEnd(14)}` +
        `${r.ratio.toFixed(2).padEnd(16)}${r.ratioP95.toFixed(2).padEnd(13)}${ok ? `≤ ${GOAL_RATIO} ok` : `> ${GOAL_RATIO} MISSED`}`,
    );
  }
  if (rows.length > 1) {
    const perHopRelayed = (rows.at(-1).relayedMedian - rows[0].relayedMedian) / (rows.at(-1).hops - rows[0].hops);
    const perHopRpc = (rows.at(-1).rpcMedian - rows[0].rpcMedian) / (rows.at(-1).hops - rows[0].hops);
    console.log(
      `each extra hop adds ${ms(perHopRelayed)} to a relayed round trip and ${ms(perHopRpc)} to an RPC round trip (ratio ${(perHopRelayed / perHopRpc).toFixed(2)})`,
    );
  }
  return missed;
}

// Last, so every helper above is initialised before it runs.
if (process.argv[2] === '--serve') {
  await serve(process.argv[3], process.argv[4], process.argv[5] === 'probe', Number(process.argv[6]));
} else {
  await main();
}
