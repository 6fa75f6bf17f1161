// The gateway's cost: the same clients against a private libvirtd directly and through virtauthd
// passing test:///default and storage:///system (a `dir` pool in a temp folder) through to it
// (uri_upstream_list; auth none on both, so only the forwarding is measured), in the same run. A
// plain byte-copying proxy (node's stream.pipe, no protocol at all) in front of the same libvirtd
// shows what any extra hop through one node process costs on this machine, and one written in C
// (bench/lib/c-proxy.c) what a hop costs when it does almost nothing itself.
//   node bench/gateway.mjs [seconds-per-measurement] [rounds]      (needs root for the private libvirtd)
// Needs the compiled tree (npm run build).

import 'reflect-metadata';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { openAuth } from '../cli/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { runPython } from '../test/dist/src/peers/clients.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { startByteProxy } from './lib/byte-proxy.mjs';
import { startCProxy } from './lib/c-proxy.mjs';
import { loopRate } from './lib/loop-rate.mjs';
import { pythonRate } from './lib/python-rate.mjs';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';

const secondsPerCase = Number(process.argv[2] ?? 1.5);
const roundsPerCase = Number(process.argv[3] ?? 5);
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);
const concurrentClients = 50;
const pipelineDepth = 64;
const eventSamples = 300;
const volumeBytes = 16 * 1024 * 1024;
const storageUri = 'storage:///system';

async function startGateway(routes) {
  const dir = await tempDir('vbg');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(
    configFile,
    `unix_sock_dir = "${dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nlog_level = 4\nmax_clients = 1000\n` +
      `uri_upstream_list = [ ${routes.map(([client, upstream]) => `"${client}=${upstream}"`).join(', ')} ]\n`,
  );
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => /'(test\+unix:[^']*virtauth-sock)'/.exec(stdout)?.[1]);
  const socket = new URL(virtauthd.found).searchParams.get('socket');
  return { uri: virtauthd.found, storageUri: `storage+unix:///system?socket=${socket}`, pid: virtauthd.pid, stop: virtauthd.stop };
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

/** Python that defines receive(begin): opens a stream, lets `begin(stream)` start it, reads it all. */
const pythonReceive = [
  'def receive(begin):',
  '    stream = connection.newStream(0)',
  '    begin(stream)',
  '    size = [0]',
  '    def sink(_s, data, acc):',
  '        acc[0] += len(data)',
  '        return len(data)',
  '    stream.recvAll(sink, size)',
  '    stream.finish()',
  '    return size[0]',
].join('\n');

/** Screenshots (a stream each: call, reply, data, finish) per second. */
function pythonScreenshots(uri) {
  return pythonRate({
    what: `screenshots against ${uri}`,
    settings: { uri },
    seconds: secondsPerCase,
    setup: ["connection = libvirt.open(SETTINGS['uri'])", "domain = connection.lookupByName('test')", pythonReceive].join('\n'),
    operation: 'receive(lambda stream: domain.screenshot(stream, 0, 0))',
    batch: 10,
    teardown: 'connection.close()',
  });
}

/** Bytes per second of whole vol-downloads (STREAM packets of up to 256 KiB) of the bench volume. */
async function pythonVolumeDownloads(uri) {
  const downloads = await pythonRate({
    what: `vol-download against ${uri}`,
    settings: { uri, bytes: volumeBytes },
    seconds: secondsPerCase,
    setup: [
      "connection = libvirt.open(SETTINGS['uri'])",
      "volume = connection.storagePoolLookupByName('vbench').storageVolLookupByName('data')",
      pythonReceive,
      "assert receive(lambda stream: volume.download(stream, 0, 0, 0)) == SETTINGS['bytes']",
    ].join('\n'),
    operation: 'receive(lambda stream: volume.download(stream, 0, 0, 0))',
    batch: 1,
    teardown: 'connection.close()',
  });
  return downloads * volumeBytes;
}

/** A transient `dir` pool over a temp folder holding one volume of random bytes, on libvirtd itself. */
async function createBenchPool(uri) {
  const poolDir = join(await tempDir('vbp'), 'pool');
  await mkdir(poolDir);
  await writeFile(join(poolDir, 'data'), randomBytes(volumeBytes));
  const xml = `<pool type='dir'><name>vbench</name><target><path>${poolDir}</path></target></pool>`;
  const result = await runPython(`import libvirt\nlibvirt.open(${JSON.stringify(uri)}).storagePoolCreateXML(${JSON.stringify(xml)}, 0)\n`, {
    timeoutMs: 60_000,
  });
  if (result.code !== 0) throw new Error(`creating the bench pool on ${uri} failed: ${result.stderr.trim()}`);
  return poolDir;
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

const libvirtd = await PrivateLibvirtd.start({
  auth_unix_rw: 'none',
  extraConfig: { max_clients: 1000, max_workers: 20 },
  drivers: ['storage'],
});
let gateway;
let proxy;
let cProxy;
let poolDir;
try {
  const direct = libvirtd.uri();
  const directStorage = libvirtd.uri(storageUri);
  gateway = await startGateway([
    ['test:///default', direct],
    [storageUri, directStorage],
  ]);
  proxy = await startByteProxy(libvirtd.rwSocket);
  cProxy = await startCProxy(libvirtd.rwSocket);
  poolDir = await createBenchPool(directStorage);
  const load = () => loadavg()[0].toFixed(1);
  console.log(
    `node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, ${secondsPerCase}s per measurement, ${roundsPerCase} rounds, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  console.log(`libvirtd:            ${direct}\nvirtauthd (gateway): ${gateway.uri}\nbyte-copying proxy:  ${proxy.socket}\n`);
  const proxies = (storage) =>
    [
      { name: 'node', uri: storage ? proxy.storageUri : proxy.uri },
      cProxy && { name: 'C', uri: storage ? cProxy.storageUri : cProxy.uri },
    ].filter(Boolean);

  // One measurement at a time, so none competes with another for the CPU; direct and gateway
  // alternate over several rounds and the ratio is the median of the rounds' ratios, so load that
  // comes and goes on a shared machine falls on both sides alike.
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  // `withProxies`: the byte-copying proxies are measured in the same rounds too.
  async function paired(measure, { gatewayUri = gateway.uri, withProxies = false } = {}) {
    const hops = withProxies ? proxies(gatewayUri === gateway.storageUri) : [];
    const rounds = [];
    const loadBefore = load();
    for (let i = 0; i < roundsPerCase; i++) {
      const order = i % 2 === 0 ? ['direct', 'gateway', 'proxy'] : ['proxy', 'gateway', 'direct'];
      const round = {};
      for (const side of order) {
        if (side === 'direct') round.direct = await measure(directFor(gatewayUri));
        else if (side === 'gateway') round.gateway = await withGatewayCpu(gateway.pid, () => measure(gatewayUri));
        else for (const hop of hops) round[hop.name] = await measure(hop.uri);
      }
      rounds.push(round);
    }
    return {
      proxyRatios: Object.fromEntries(hops.map((hop) => [hop.name, median(rounds.map((r) => r[hop.name] / r.direct))])),
      direct: median(rounds.map((r) => r.direct)),
      gateway: median(rounds.map((r) => r.gateway.rate)),
      ratio: median(rounds.map((r) => r.gateway.rate / r.direct)),
      cpuPerCall: median(rounds.map((r) => r.gateway.cpuPerCall)),
      load: `${loadBefore}-${load()}`,
    };
  }
  const directFor = (gatewayUri) => (gatewayUri === gateway.storageUri ? directStorage : direct);
  const seq = await paired(pythonCalls, { withProxies: true });
  // The same concurrent clients through a proxy that only copies bytes: the floor of any hop.
  const conc = await paired((uri) => pythonConcurrentCalls(uri, concurrentClients), { withProxies: true });
  const shots = await paired(pythonScreenshots, { withProxies: true });
  const downloads = await paired(pythonVolumeDownloads, { gatewayUri: gateway.storageUri, withProxies: true });
  const oursPipeGateway = await ourPipelinedCalls(gateway.uri);
  const events = await eventLatencyAdded(direct, gateway.uri);

  const number = (n) => Math.round(n).toLocaleString('en-US').padStart(10);
  const row = (label, c) => `  ${label.padEnd(46)}${number(c.direct)}${number(c.gateway)}   ${c.ratio.toFixed(2)}x   (load ${c.load})`;
  console.log(
    `  ${`per second, median of ${roundsPerCase} rounds`.padEnd(46)}${'direct'.padStart(10)}${'gateway'.padStart(10)}   gateway/direct`,
  );
  console.log(row('python3-libvirt, sequential calls', seq));
  console.log(row(`${concurrentClients} python3-libvirt clients, total calls`, conc));
  console.log(row('python3-libvirt, screenshot streams', shots));
  const mib = (c) => ({ ...c, direct: c.direct / 2 ** 20, gateway: c.gateway / 2 ** 20 });
  console.log(row(`python3-libvirt, vol-download MiB (${volumeBytes / 2 ** 20} MiB each)`, mib(downloads)));
  // What any hop costs here: through one node process, and through a C proxy that does nothing else.
  console.log('\n  the same through a byte-copying proxy (no protocol at all), per direct:');
  for (const [label, c] of [
    ['sequential calls', seq],
    [`${concurrentClients} clients`, conc],
    ['screenshots', shots],
    ['vol-download', downloads],
  ]) {
    const ratios = Object.entries(c.proxyRatios).map(([name, ratio]) => `${name} ${ratio.toFixed(2)}x`);
    console.log(`    ${label.padEnd(20)}${ratios.join('   ')}   (gateway ${c.ratio.toFixed(2)}x)`);
  }
  console.log('');
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
    // The goal is either stream's: a screenshot is mostly round trips, a download mostly bytes.
    ['screenshot or vol-download stream throughput (the better): gateway/direct', Math.max(shots.ratio, downloads.ratio), 0.8, 'x', true],
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
  await proxy?.stop();
  await cProxy?.stop();
  await gateway?.stop();
  if (poolDir) await rm(join(poolDir, '..'), { recursive: true, force: true });
  await libvirtd.stop();
}
