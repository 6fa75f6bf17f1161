// Access control's cost: sequential python3-libvirt calls (libvirt's own C client) through a
// virtauthd whose cedar access driver holds a realistic policy of 20 rules, against the same
// virtauthd without access control, served by its own test driver and (as root) passed through
// as a gateway to a private libvirtd; and the cost of one Cedar decision, evaluated and cached.
//   node bench/access.mjs [seconds-per-measurement]
// Needs the compiled tree (npm run build).

import 'reflect-metadata';
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { describeObject, parseUuid } from '../core/dist/src/index.js';
import { CedarAccessDriver } from '../providers/dist/src/index.js';
import { PrivateLibvirtd } from '../test/dist/src/peers/libvirtd.js';
import { tempDir } from '../test/dist/src/peers/util.js';
import { pythonRate } from './lib/python-rate.mjs';
import { spawnVirtauthd } from './lib/virtauthd-process.mjs';

const secondsPerCase = Number(process.argv[2] ?? 3);
if (!(secondsPerCase > 0)) throw new Error(`seconds per measurement must be a positive number, got ${process.argv[2]}`);

/** 20 rules of the kind a site writes: roles by group, name patterns, a few forbids. */
const POLICY = `
permit (principal == User::"root", action, resource);
permit (principal in Group::"admins", action, resource);
permit (principal in Group::"viewers", action in [Action::"connect.getattr", Action::"connect.read", Action::"connect.search_domains"], resource);
permit (principal in Group::"viewers", action in [Action::"domain.getattr", Action::"domain.read"], resource is Domain);
permit (principal in Group::"ops", action in [Action::"domain.start", Action::"domain.stop", Action::"domain.suspend", Action::"domain.reset"], resource is Domain) when { resource.name like "web-*" };
permit (principal in Group::"ops", action in [Action::"domain.start", Action::"domain.stop"], resource is Domain) when { resource.name like "batch-*" };
permit (principal in Group::"dba", action in [Action::"domain.start", Action::"domain.stop", Action::"domain.snapshot"], resource is Domain) when { resource.name like "db-*" };
permit (principal in Group::"backup", action in [Action::"domain.snapshot", Action::"domain.block_read", Action::"domain.read"], resource is Domain);
permit (principal in Group::"netadmin", action, resource is Network);
permit (principal in Group::"netadmin", action in [Action::"connect.search_networks"], resource);
permit (principal in Group::"storage", action, resource is StoragePool);
permit (principal in Group::"storage", action, resource is StorageVol);
permit (principal in Group::"storage", action in [Action::"connect.search_storage_pools", Action::"connect.detect_storage_pools"], resource);
permit (principal == User::"monitor", action in [Action::"connect.getattr", Action::"connect.read", Action::"domain.getattr"], resource);
permit (principal in Group::"console", action in [Action::"domain.open_graphics", Action::"domain.open_device"], resource is Domain) when { resource.name like "web-*" };
permit (principal in Group::"ops", action == Action::"domain.migrate", resource is Domain) when { context.transport == "tls" };
forbid (principal, action == Action::"domain.read_secure", resource is Domain) when { resource.name like "prod-*" };
forbid (principal, action, resource) when { context.transport == "tcp" && context.auth_method == "none" };
forbid (principal in Group::"contractors", action == Action::"domain.delete", resource);
forbid (principal, action == Action::"domain.core_dump", resource is Domain) when { resource.name like "db-*" };
`;

async function startVirtauthd(extra) {
  const dir = await tempDir('vb');
  const configFile = join(dir, 'virtauthd.conf');
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  await writeFile(configFile, `unix_sock_dir = "${dir}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\nlog_level = 4\n${extra(dir)}`);
  const virtauthd = await spawnVirtauthd(configFile, dir, (stdout) => /'(test\+unix:[^']*virtauth-sock)'/.exec(stdout)?.[1]);
  return { uri: virtauthd.found, stop: virtauthd.stop };
}

/** One domain lookup in setup, then DOMAIN_GET_INFO and DOMAIN_GET_STATE: two domain:read checks per operation. */
function callRate(uri) {
  return pythonRate({
    what: `sequential calls against ${uri}`,
    settings: { uri },
    seconds: secondsPerCase,
    setup: "connection = libvirt.open(SETTINGS['uri'])\ndomain = connection.lookupByName('test')",
    operation: '(domain.info(), domain.state())',
    perCall: 2,
    batch: 50,
    teardown: 'connection.close()',
  });
}

/** Microseconds per decision: the Cedar evaluation alone, and a repeated one answered from the cache. */
async function decisionCost() {
  const dir = await tempDir('vc');
  const file = join(dir, 'policy.cedar');
  await writeFile(file, POLICY);
  const log = { info() {}, warn() {}, error() {}, debug() {} };
  const driver = await CedarAccessDriver.create({ policyFile: file, log });
  const subject = {
    identity: {
      username: 'alice',
      method: 'sasl',
      oidc: {
        issuer: 'https://idp',
        subject: 'a',
        usernameClaim: 'sub',
        username: 'alice',
        groups: ['ops', 'viewers'],
        roles: [],
        scopes: [],
      },
    },
    transport: 'unix',
    readOnly: false,
    connectDriver: 'QEMU',
    connectionId: 1,
  };
  const object = describeObject('domain', { name: 'web-17', uuid: parseUuid('6f1c8a52-6a8e-4b7e-9a41-0f5e2d7c1b11'), id: 3 }, 'QEMU');
  const time = (n, fn) => {
    for (let i = 0; i < Math.min(n, 200); i++) fn();
    const started = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - started) / n / 1000;
  };
  const uncached = time(2000, () => driver.decide(subject, object, 'start'));
  const cached = time(200_000, () => driver.check({ subject, object, permission: 'start' }));
  if (!driver.decide(subject, object, 'start')) throw new Error('the benchmark policy should allow ops to start web-17');
  return { uncached, cached };
}

console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'} x${availableParallelism()}, ${secondsPerCase}s per measurement`);
const cost = await decisionCost();
console.log(
  `  one Cedar decision (20 rules, preparsed): ${cost.uncached.toFixed(1)} µs evaluated, ${cost.cached.toFixed(2)} µs from the per-connection cache`,
);

const cedarSettings = (dir) => `access_drivers = [ "cedar" ]\naccess_cedar_policy_file = "${dir}/policy.cedar"\n`;

/** Without and with access control, alternated so a machine that slows down mid-run affects both alike. */
async function compare(label, extra) {
  const plain = await startVirtauthd(extra);
  let checked;
  try {
    checked = await startVirtauthd((dir) => extra(dir) + cedarSettings(dir));
    const without = [];
    const withAccess = [];
    for (let round = 0; round < 3; round++) {
      without.push(await callRate(plain.uri));
      withAccess.push(await callRate(checked.uri));
    }
    const best = (xs) => Math.max(...xs);
    const ratio = best(withAccess) / best(without);
    const number = (n) => Math.round(n).toLocaleString('en-US').padStart(10);
    const perCall = (1e6 / best(withAccess) - 1e6 / best(without)).toFixed(1);
    console.log(
      `  ${label}: python3-libvirt sequential domain calls/s: without access control ${number(best(without))}, with cedar ${number(best(withAccess))}`,
    );
    console.log(
      `  ${label}: with/without: ${ratio.toFixed(2)}x, ${perCall} µs per call  (goal >= 0.9x: ${ratio >= 0.9 ? 'met' : 'MISSED'})`,
    );
  } finally {
    await checked?.stop();
    await plain.stop();
  }
}

await compare('embedded test driver', () => '');
if (process.getuid?.() === 0) {
  // libvirtd's test:///default lives while a connection holds it; the benchmark's own do.
  const libvirtd = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
  try {
    const upstream = libvirtd.uri('test:///default', 'unix');
    await compare('gateway to libvirtd', () => `uri_upstream_list = [ "test:///default=${upstream}" ]\n`);
  } finally {
    await libvirtd.stop();
  }
} else {
  console.log('  gateway to libvirtd: skipped (a private libvirtd needs root)');
}
