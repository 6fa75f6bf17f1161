// A private libvirtd with a virtauthd gateway in front of it (uri_upstream_list), for the gateway
// interop tests and benchmarks; and the python3-libvirt script both are driven with. Free of ava.

import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { CredentialType, type ConnectAuth } from '@virtauth/core';
import type { RemoteConnection } from '@virtauth/drivers';
import { openAuth } from 'virtauth';

import { requireExecutable } from './peers/executables.js';
import { PrivateLibvirtd, type PrivateLibvirtdOptions } from './peers/libvirtd.js';
import { describeResult, runProcess } from './peers/process.js';
import type { TestPki } from './peers/pki.js';
import { tempDir, type Teardown } from './peers/util.js';
import { TestVirtauthd, type VirtauthTransport } from './sasl-support.js';

export const gatewayUser = 'alice';
export const gatewayPassword = 'alice-Gw-Pa55-51d0';

export interface GatewayPairOptions {
  /** Certificates: virtauthd then listens on TLS too, and libvirtd's TLS listener is started. */
  pki?: TestPki;
  /** How virtauthd reaches libvirtd: its unix socket (default) or TLS (needs `pki`). */
  upstream?: 'unix' | 'tls';
  /** More libvirtd options (e.g. SASL on its unix socket). */
  libvirtd?: Partial<PrivateLibvirtdOptions>;
  /** The driver URI clients open, mapped to the same on libvirtd (default `test:///default`). */
  driverUri?: string;
  /** Replaces the default upstream URI built from `upstream`. */
  upstreamUri?: (libvirtd: PrivateLibvirtd) => string;
  /** virtauthd settings besides the gateway's. */
  settings?: Record<string, string | number | readonly string[]>;
  logLevel?: 1 | 2 | 3 | 4;
  /** More SCRAM users besides alice (name -> password). */
  users?: Record<string, string>;
}

/** libvirtd, and virtauthd passing `test:///default` (or `driverUri`) through to it, with SCRAM user alice. */
export class GatewayPair {
  private constructor(
    readonly libvirtd: PrivateLibvirtd,
    readonly virtauthd: TestVirtauthd,
    readonly upstreamUri: string,
    readonly authFile: string,
    private readonly authDir: string,
    readonly driverUri: string,
  ) {}

  static async start(options: GatewayPairOptions = {}): Promise<GatewayPair> {
    const upstream = options.upstream ?? 'unix';
    const libvirtd = await PrivateLibvirtd.start({
      auth_unix_rw: 'none',
      ...(options.pki ? { listenTls: true, tls: options.pki } : {}),
      ...options.libvirtd,
    });
    try {
      const driverUri = options.driverUri ?? 'test:///default';
      const upstreamUri = options.upstreamUri ? options.upstreamUri(libvirtd) : libvirtd.uri(driverUri, upstream);
      const virtauthd = await TestVirtauthd.start({
        users: { [gatewayUser]: gatewayPassword, ...options.users },
        ...(options.pki ? { listenTls: true, pki: options.pki } : {}),
        logLevel: options.logLevel ?? 2,
        settings: { uri_upstream_list: [`${driverUri}=${upstreamUri}`], ...options.settings },
      });
      const authDir = await tempDir('vga');
      const authFile = join(authDir, 'auth.conf');
      await writeFile(
        authFile,
        `[credentials-gw]\nauthname=${gatewayUser}\npassword=${gatewayPassword}\n[auth-libvirt-localhost]\ncredentials=gw\n`,
        { mode: 0o600 },
      );
      return new GatewayPair(libvirtd, virtauthd, upstreamUri, authFile, authDir, driverUri);
    } catch (error) {
      await libvirtd.stop();
      throw error;
    }
  }

  /** The URI a client uses directly against libvirtd. */
  directUri(transport: 'unix' | 'tls' = 'unix'): string {
    return this.libvirtd.uri(this.driverUri, transport);
  }

  /** The URI a client uses through virtauthd (SCRAM: give it `authFile` or the credentials). */
  gatewayUri(transport: VirtauthTransport = 'unix'): string {
    const uri = this.virtauthd.uri(transport);
    const driver = /^([a-z]+):\/\/\/([^?#]*)$/.exec(this.driverUri);
    if (driver === null) throw new Error(`driverUri ${this.driverUri} must look like scheme:///path`);
    // virtauthd's URI names the test driver: the same listener, with this pair's scheme and path.
    return uri.replace(/^test\+([a-z]+):\/\/([^/]*)\/default/, `${driver[1]}+$1://$2/${driver[2]}`);
  }

  /** virtauth's own client, logged in to virtauthd as the gateway user over unix. */
  async openClient(): Promise<RemoteConnection> {
    const auth: ConnectAuth = {
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? gatewayUser : gatewayPassword;
      },
    };
    return (await openAuth(this.gatewayUri(), auth)) as RemoteConnection;
  }

  async stop(): Promise<void> {
    await Promise.allSettled([this.virtauthd.stop(), this.libvirtd.stop()]);
    await rm(this.authDir, { recursive: true, force: true });
  }
}

/** A GatewayPair stopped when the test ends. */
export async function startGatewayPair(t: Teardown, options: GatewayPairOptions = {}): Promise<GatewayPair> {
  const pair = await GatewayPair.start(options);
  t.teardown(() => pair.stop());
  return pair;
}

/** A temp folder removed when the test ends. */
export async function scratchDir(t: Teardown, prefix = 'vgw'): Promise<string> {
  const dir = await tempDir(prefix);
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** How many clients libvirtd has now (virt-admin srv-clients-info on its admin socket). */
export async function libvirtdClients(libvirtd: PrivateLibvirtd): Promise<number> {
  const result = await runProcess(requireExecutable('virt-admin', 'libvirt-clients'), [
    '-c',
    `libvirtd:///system?socket=${libvirtd.dir}/sock/libvirt-admin-sock`,
    'srv-clients-info',
    'libvirtd',
  ]);
  const match = /^nclients\s*:\s*(\d+)/m.exec(result.stdout);
  if (!match) throw new Error(`virt-admin srv-clients-info: ${describeResult(result)}`);
  return Number(match[1]);
}

/** A domain the test driver can define, start and screenshot. */
export const gatewayDomainXml = (name: string): string =>
  `<domain type='test'><name>${name}</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>`;

export const gatewayNetworkXml = (name: string, octet: number): string =>
  `<network><name>${name}</name><bridge name='${name}br'/><ip address='192.168.${octet}.1' netmask='255.255.255.0'/></network>`;

/**
 * A python3-libvirt session exercising the API through one connection: lifecycle with its events,
 * a screenshot stream, snapshots, networks, pools and volumes, node and capabilities. Prints one
 * JSON object; everything in it must be the same through virtauthd as directly.
 */
export function pythonGatewaySession(uri: string, domain: string): string {
  return pythonGatewayScript(uri, pythonSessionBody, {
    domainXml: gatewayDomainXml(domain),
    networkXml: gatewayNetworkXml(`${domain}n`, 231),
  });
}

/**
 * The start of a python3-libvirt script for the gateway user: `SETTINGS` (uri, user, password),
 * libvirt's event loop on a thread (events and close callbacks need one), and `answer`, the auth
 * callback. The script's own body follows it.
 */
export function pythonGatewayScript(uri: string, body: string, extraSettings: Record<string, unknown> = {}): string {
  const settings = { uri, user: gatewayUser, password: gatewayPassword, ...extraSettings };
  return `SETTINGS = __import__('json').loads(${JSON.stringify(JSON.stringify(settings))})\n${pythonPreamble}\n${body}`;
}

const pythonPreamble = String.raw`
import hashlib
import json
import sys
import threading
import time

import libvirt

libvirt.registerErrorHandler(lambda _c, _e: None, None)
libvirt.virEventRegisterDefaultImpl()


def run_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


threading.Thread(target=run_loop, daemon=True).start()


def answer(credentials, _opaque):
    for c in credentials:
        c[4] = SETTINGS['user'] if c[0] == libvirt.VIR_CRED_AUTHNAME else SETTINGS['password']
    return 0

`;

const pythonSessionBody = String.raw`
def error_of(call):
    try:
        call()
        return None
    except libvirt.libvirtError as e:
        return [e.get_error_code(), e.get_error_domain(), e.get_error_message()]


out = {}
events = []
done = threading.Event()


def on_lifecycle(_conn, dom, event, detail, _opaque):
    events.append([dom.name(), event, detail])
    if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
        done.set()


conn = libvirt.openAuth(SETTINGS['uri'], [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None], 0)
callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None)
out['nodeinfo'] = conn.getInfo()
out['capabilities'] = conn.getCapabilities()
out['hostname'] = conn.getHostname()
dom = conn.defineXML(SETTINGS['domainXml'])
dom.create()
dom.suspend()
out['suspended'] = dom.state()
dom.resume()
out['resumed'] = dom.state()
stream = conn.newStream(0)
mime = dom.screenshot(stream, 0, 0)
chunks = []
stream.recvAll(lambda _s, data, acc: acc.append(data) or len(data), chunks)
stream.finish()
shot = b''.join(chunks)
out['screenshot'] = [mime, len(shot), hashlib.sha256(shot).hexdigest()]
out['stats'] = sorted([d.name(), sorted(s.items())] for d, s in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE))
snapshot = dom.snapshotCreateXML('<domainsnapshot><name>s1</name></domainsnapshot>', 0)
out['snapshots'] = dom.snapshotListNames(0)
snapshot.delete(0)
out['snapshotsAfter'] = dom.snapshotListNames(0)
out['missingDomain'] = error_of(lambda: conn.lookupByName('no-such-domain'))
dom.destroy()
dom.undefine()
net = conn.networkDefineXML(SETTINGS['networkXml'])
net.create()
out['networks'] = sorted([n.name(), n.isActive()] for n in conn.listAllNetworks(0))
net.destroy()
net.undefine()
pool = conn.storagePoolLookupByName('default-pool')
out['pools'] = sorted(p.name() for p in conn.listAllStoragePools(0))
vol = pool.createXML("<volume><name>gwvol</name><capacity>1048576</capacity></volume>", 0)
out['volumes'] = sorted(pool.listVolumes())
upload = conn.newStream(0)
out['uploadError'] = error_of(lambda: vol.upload(upload, 0, 4096, 0))
download = conn.newStream(0)
out['downloadError'] = error_of(lambda: vol.download(download, 0, 4096, 0))
vol.delete(0)
done.wait(10)
out['events'] = events
conn.domainEventDeregisterAny(callback)
conn.close()
json.dump(out, sys.stdout)
sys.stdout.write('\n')
`;
