// The gateway's cost: the same clients against a private libvirtd directly and through virtauthd
// passing test:///default through to it (uri_upstream_list; auth none on both, so only the
// forwarding is measured), in the same run.
//   node bench/gateway.mjs [seconds-per-measurement] [rounds]      (needs root for the private libvirtd)
// Needs the compiled tree (npm run build).

import 'reflect-metadata';
import { readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { runPython } from '../test/dist/src/peers/clients.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { loopRate } from './lib/loop-rate.mjs';
import { pythonRate } from './lib/python-rate.mjs';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';

const secondsPerCase = Number(process.argv[2] ?? 1.5);
const roundsPerCase = Number(process.argv[3] ?? 5);
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);
const concurrentClients = 50;
const pipelineDepth = 64;
const eventSamples = 300;

async function startGateway(upstreamUri) {
  const dir = await tempDir('vbg');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(
    configFile,
    `unix_sock_dir = "${dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nlog_level = 4\nmax_clients = 1000\n` +
      `uri_upstream_list = [ "test:///default=${upstreamUri}" ]\n`,
  );
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => /'(test\+unix:[^']*virtauth-sock)'/.exec(stdout)?.[1]);
  return { uri: virtauthd.found, pid: virtauthd.pid, stop: virtauthd.stop };
}

/** CPU time (user + system) a process has used so far, in microseconds. */
async function cpuMicros(pid) {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, counted in clock ticks (100 per second).
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Runs `measure` (which returns calls per second) and also reports the gateway's CPU per call. */
async function withGatewayCpu(pid, measure) {
  const before = await cpuMicros(pid);
  const started = performance.now();
  const rate = await measure();
  const elapsedSeconds = (performance.now() - started) / 1000;
  const used = (await cpuMicros(pid)) - before;
  return { rate, cpuPerCall: used / (rate * elapsedSeconds) };
}

/** Sequential calls of one python3-libvirt connection: two round trips per operation. */
function pythonCalls(uri) {
  return pythonRate({
    what: `calls against ${uri}`,
    settings: { uri },
    seconds: secondsPerCase,
    setup: "connection = libvirt.open(SETTINGS['uri'])",
    operation: '(connection.getHostname(), connection.getLibVersion())',
    perCall: 2,
    batch: 50,
    teardown: 'connection.close()',
  });
}

/** Screenshots (a stream each: call, reply, data, finish) per second, and their bytes. */
function pythonScreenshots(uri) {
  return pythonRate({
    what: `screenshots against ${uri}`,
    settings: { uri },
    seconds: secondsPerCase,
    setup: [
      "connection = libvirt.open(SETTINGS['uri'])",
      "domain = connection.lookupByName('test')",
      'def screenshot():',
      '    stream = connection.newStream(0)',
      '    domain.screenshot(stream, 0, 0)',
      '    size = [0]',
      '    def sink(_s, data, acc):',
      '        acc[0] += len(data)',
      '        return len(data)',
      '    stream.recvAll(sink, size)',
      '    stream.finish()',
      '    return size[0]',
      'IMAGE_BYTES = screenshot()',
    ].join('\n'),
    operation: 'screenshot()',
    batch: 10,
    teardown: 'connection.close()',
  });
}

/** Total calls per second of `clients` connections, one thread each, in one python process. */
async function pythonConcurrentCalls(uri, clients) {
  const script = String.raw`
import json, sys, threading, time
import libvirt
libvirt.registerErrorHandler(lambda _c, _e: None, None)
SETTINGS = json.loads(${JSON.stringify(JSON.stringify({ uri, clients, seconds: secondsPerCase }))})
connections = [libvirt.open(SETTINGS['uri']) for _ in range(SETTINGS['clients'])]
counts = [0] * len(connections)
start = threading.Barrier(len(connections) + 1)
stop = [False]
def work(i):
    c = connections[i]
    for _ in range(20):
        c.getLibVersion()
    start.wait()
    n = 0
    while not stop[0]:
        c.getLibVersion()
        n += 1
    counts[i] = n
threads = [threading.Thread(target=work, args=(i,)) for i in range(len(connections))]
for t in threads: t.start()
start.wait()
began = time.perf_counter()
time.sleep(SETTINGS['seconds'])
stop[0] = True
for t in threads: t.join()
elapsed = time.perf_counter() - began
for c in connections: c.close()
json.dump({'rate': sum(counts) / elapsed}, sys.stdout)
`;
  const result = await runPython(script, { timeoutMs: (secondsPerCase + 60) * 1000 });
  if (result.code !== 0) throw new Error(`concurrent python3-libvirt against ${uri} failed: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout.trim().split('\n').pop()).rate;
}

/**
 * Median time an event takes longer through virtauthd: one process listens on a direct and a
 * gateway connection at once while a third connection suspends and resumes a domain; each event's
 * arrival on the two is compared.
 */
async function eventLatencyAdded(directUri, gatewayUri) {
  const script = String.raw`
import json, statistics, sys, threading, time
import libvirt
libvirt.registerErrorHandler(lambda _c, _e: None, None)
libvirt.virEventRegisterDefaultImpl()
SETTINGS = json.loads(${JSON.stringify(JSON.stringify({ directUri, gatewayUri, samples: eventSamples }))})
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()
arrivals = {'direct': [], 'gateway': []}
def listener(name):
    def on_event(_c, _d, event, _detail, _o):
        arrivals[name].append((time.perf_counter(), event))
    return on_event
direct = libvirt.open(SETTINGS['directUri'])
gateway = libvirt.open(SETTINGS['gatewayUri'])
direct.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, listener('direct'), None)
gateway.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, listener('gateway'), None)
actor = libvirt.open(SETTINGS['directUri'])
domain = actor.lookupByName('test')
for i in range(SETTINGS['samples']):
    expected = i + 1
    (domain.suspend if i % 2 == 0 else domain.resume)()
    deadline = time.perf_counter() + 5
    while (len(arrivals['direct']) < expected or len(arrivals['gateway']) < expected) and time.perf_counter() < deadline:
        time.sleep(0.0002)
n = min(len(arrivals['direct']), len(arrivals['gateway']))
added = [arrivals['gateway'][i][0] - arrivals['direct'][i][0] for i in range(n)]
json.dump({'events': n, 'medianMs': statistics.median(added) * 1000 if added else None}, sys.stdout)
`;
  const result = await runPython(script, { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`event latency measurement failed: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout.trim().split('\n').pop());
}

async function ourPipelinedCalls(uri) {
  const conn = await openAuth(uri, null);
  try {
    return await loopRate(() => conn.getLibVersion(), { seconds: secondsPerCase, workers: pipelineDepth });
  } finally {
    await conn.close();
  }
}

const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none', extraConfig: { max_clients: 1000, max_workers: 20 } });
let gateway;
try {
  const direct = libvirtd.uri();
  gateway = await startGateway(direct);
  console.log(
    `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, ${secondsPerCase}s per measurement, ${roundsPerCase} rounds`,
  );
  console.log(`libvirtd:            ${direct}\nvirtauthd (gateway): ${gateway.uri}\n`);

  // One measurement at a time, so none competes with another for the CPU; direct and gateway
  // alternate over several rounds and the ratio is the median of the rounds' ratios, so load that
  // comes and goes on a shared machine falls on both sides alike.
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  async function paired(measure) {
    const rounds = [];
    for (let i = 0; i < roundsPerCase; i++) {
      const order = i % 2 === 0 ? ['direct', 'gateway'] : ['gateway', 'direct'];
      const round = {};
      for (const side of order)
        round[side] = side === 'direct' ? await measure(direct) : await withGatewayCpu(gateway.pid, () => measure(gateway.uri));
      rounds.push(round);
    }
    return {
      direct: median(rounds.map((r) => r.direct)),
      gateway: median(rounds.map((r) => r.gateway.rate)),
      ratio: median(rounds.map((r) => r.gateway.rate / r.direct)),
      cpuPerCall: median(rounds.map((r) => r.gateway.cpuPerCall)),
    };
  }
  const seq = await paired(pythonCalls);
  const conc = await paired((uri) => pythonConcurrentCalls(uri, concurrentClients));
  const shots = await paired(pythonScreenshots);
  const oursPipeGateway = await ourPipelinedCalls(gateway.uri);
  const events = await eventLatencyAdded(direct, gateway.uri);

  const number = (n) => Math.round(n).toLocaleString('en-US').padStart(10);
  const row = (label, c) => `  ${label.padEnd(46)}${number(c.direct)}${number(c.gateway)}   ${c.ratio.toFixed(2)}x`;
  console.log(
    `  ${`per second, median of ${roundsPerCase} rounds`.padEnd(46)}${'direct'.padStart(10)}${'gateway'.padStart(10)}   gateway/direct`,
  );
  console.log(row('python3-libvirt, sequential calls', seq));
  console.log(row(`${concurrentClients} python3-libvirt clients, total calls`, conc));
  console.log(row('python3-libvirt, screenshot streams', shots));
  console.log(`  virtauth client, ${pipelineDepth} calls in flight, through the gateway: ${number(oursPipeGateway)}`);
  console.log(`  event latency added by the gateway: median ${events.medianMs?.toFixed(3)} ms over ${events.events} events`);
  console.log(
    `  gateway CPU per call (warm-up included): ~${seq.cpuPerCall.toFixed(0)} us sequential, ~${conc.cpuPerCall.toFixed(0)} us with ${concurrentClients} clients, ~${shots.cpuPerCall.toFixed(0)} us per screenshot`,
  );
  // On a machine where clients, gateway and libvirtd share the cores, the gateway's CPU comes out
  // of everyone's; on its own host its limit is this.
  console.log(
    `  gateway capacity at that cost: ~${number(1e6 / conc.cpuPerCall).trim()} calls/s per core (libvirtd served ${number(conc.direct).trim()} directly)`,
  );

  const goals = [
    ['same C client, sequential calls: gateway/direct', seq.ratio, 0.6, 'x', true],
    [`${concurrentClients} concurrent C clients, total calls: gateway/direct`, conc.ratio, 0.9, 'x', true],
    ['screenshot stream throughput: gateway/direct', shots.ratio, 0.8, 'x', true],
    [`virtauth client (${pipelineDepth} in flight) via gateway / python3-libvirt direct`, oursPipeGateway / seq.direct, 2.0, 'x', true],
    ['median event latency added (ms)', events.medianMs ?? Infinity, 0.2, ' ms', false],
  ];
  console.log('\n  goals');
  for (const [label, value, goal, unit, higherIsBetter] of goals) {
    const met = higherIsBetter ? value >= goal : value <= goal;
    console.log(
      `  ${label.padEnd(72)}${value.toFixed(2).padStart(7)}${unit}  (goal ${higherIsBetter ? '>=' : '<='} ${goal}${unit.trim()}: ${met ? 'met' : 'MISSED'})`,
    );
  }
} finally {
  await gateway?.stop();
  await libvirtd.stop();
}
