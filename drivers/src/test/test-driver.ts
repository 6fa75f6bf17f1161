// An in-memory hypervisor, like libvirt's test:///default: one running domain `test`, the
// machine's host name, fixed versions. State is shared by every connection to the same path.

import { hostname } from 'node:os';
import {
  DomainState,
  ErrorCode,
  ErrorDomain,
  Feature,
  ListDomainsFlag,
  VirError,
  formatUuid,
  parseUuid,
  type ConnectUri,
  type DomainInfo,
  type DomainRef,
  type Driver,
  type DriverConnection,
  type DriverOpenContext,
  type NodeInfo,
  LIBVIRT_API_VERSION,
} from '@virtauth/core';

export interface TestDomain {
  name: string;
  uuid: string;
  id: number; // -1 when not running
  state: number;
  maxMemKiB: bigint;
  memoryKiB: bigint;
  vcpus: number;
  cpuTimeNs: bigint;
  persistent: boolean;
  osType: string;
  arch: string;
}

const DEFAULT_DOMAINS: readonly TestDomain[] = [
  {
    name: 'test',
    uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f',
    id: 1,
    state: DomainState.RUNNING,
    maxMemKiB: 8388608n,
    memoryKiB: 2097152n,
    vcpus: 2,
    cpuTimeNs: 0n,
    persistent: true,
    osType: 'hvm',
    arch: 'i686',
  },
];

const NODE_INFO: NodeInfo = { model: 'i686', memory: 3145728n, cpus: 16, mhz: 1400, nodes: 2, sockets: 2, cores: 2, threads: 2 };

/** The test hypervisor's version as libvirt's test driver reports it (0.0.2). */
const TEST_HV_VERSION = 2n;

/** A domain as the hypervisor holds it: its UUID parsed once, not on every lookup. */
interface HostedDomain extends TestDomain {
  uuidBytes: Buffer;
}

function host(d: TestDomain): HostedDomain {
  const uuidBytes = parseUuid(d.uuid);
  if (!uuidBytes) throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.TEST, detail: `malformed UUID '${d.uuid}'` });
  return { ...d, uuidBytes };
}

class TestHypervisor {
  readonly domains: HostedDomain[] = DEFAULT_DOMAINS.map(host);
  readonly bootTime = process.hrtime.bigint();
}

function noDomain(what: string): VirError {
  return new VirError({ code: ErrorCode.NO_DOMAIN, domain: ErrorDomain.TEST, detail: what });
}

class TestConnection implements DriverConnection {
  readonly driverName = 'test';
  private open = true;

  constructor(private readonly hv: TestHypervisor, private readonly uri: string) {}

  private check(): void {
    if (!this.open) throw new VirError({ code: ErrorCode.INVALID_CONN, domain: ErrorDomain.TEST, detail: 'connection is closed' });
  }

  private ref(d: HostedDomain): DomainRef {
    return { name: d.name, uuid: d.uuidBytes, id: d.id };
  }

  private find(dom: DomainRef): HostedDomain {
    const d = this.hv.domains.find((x) => x.name === dom.name || x.uuidBytes.equals(dom.uuid));
    if (!d) throw noDomain(`no domain with matching name '${dom.name}'`);
    return d;
  }

  private cpuTime(d: TestDomain): bigint {
    // A running domain accumulates CPU time, so repeated queries see it move as on a real host.
    return d.state === DomainState.RUNNING ? d.cpuTimeNs + (process.hrtime.bigint() - this.hv.bootTime) * BigInt(d.vcpus) : d.cpuTimeNs;
  }

  async getType() { this.check(); return 'TEST'; }
  async getVersion() { this.check(); return TEST_HV_VERSION; }
  async getLibVersion() { this.check(); return LIBVIRT_API_VERSION; }
  async getHostname() { this.check(); return hostname(); }
  async getUri() { this.check(); return this.uri; }
  async isSecure() { this.check(); return true; }
  async supportsFeature(feature: number) {
    this.check();
    return feature === Feature.TYPED_PARAM_STRING;
  }
  async getNodeInfo() { this.check(); return { ...NODE_INFO }; }

  async listAllDomains(flags: number) {
    this.check();
    const wantActive = (flags & ListDomainsFlag.ACTIVE) !== 0;
    const wantInactive = (flags & ListDomainsFlag.INACTIVE) !== 0;
    return this.hv.domains
      .filter((d) => {
        const active = d.id >= 0;
        if (wantActive || wantInactive) return (wantActive && active) || (wantInactive && !active);
        return true;
      })
      .map((d) => this.ref(d));
  }

  async lookupDomainByName(name: string) {
    this.check();
    const d = this.hv.domains.find((x) => x.name === name);
    if (!d) throw noDomain(`no domain with matching name '${name}'`);
    return this.ref(d);
  }

  async lookupDomainById(id: number) {
    this.check();
    const d = this.hv.domains.find((x) => x.id === id && id >= 0);
    if (!d) throw noDomain(`no domain with matching id ${id}`);
    return this.ref(d);
  }

  async lookupDomainByUuid(uuid: Buffer) {
    this.check();
    const d = this.hv.domains.find((x) => x.uuidBytes.equals(uuid));
    if (!d) throw noDomain(`no domain with matching uuid '${formatUuid(uuid) ?? uuid.toString('hex')}'`);
    return this.ref(d);
  }

  async getDomainInfo(dom: DomainRef): Promise<DomainInfo> {
    this.check();
    const d = this.find(dom);
    return { state: d.state, maxMem: d.maxMemKiB, memory: d.memoryKiB, nrVirtCpu: d.vcpus, cpuTime: this.cpuTime(d) };
  }

  async getDomainState(dom: DomainRef) {
    this.check();
    const d = this.find(dom);
    return { state: d.state, reason: d.state === DomainState.RUNNING ? 1 : 0 };
  }

  async getDomainXmlDesc(dom: DomainRef, _flags: number) {
    this.check();
    const d = this.find(dom);
    const idAttr = d.id >= 0 ? ` id='${d.id}'` : '';
    return [
      `<domain type='test'${idAttr}>`,
      `  <name>${escapeXml(d.name)}</name>`,
      `  <uuid>${d.uuid}</uuid>`,
      `  <memory unit='KiB'>${d.maxMemKiB}</memory>`,
      `  <currentMemory unit='KiB'>${d.memoryKiB}</currentMemory>`,
      `  <vcpu placement='static'>${d.vcpus}</vcpu>`,
      `  <os>`,
      `    <type arch='${d.arch}'>${d.osType}</type>`,
      `    <boot dev='hd'/>`,
      `  </os>`,
      `  <clock offset='utc'/>`,
      `  <on_poweroff>destroy</on_poweroff>`,
      `  <on_reboot>restart</on_reboot>`,
      `  <on_crash>destroy</on_crash>`,
      `  <devices>`,
      `    <disk type='file' device='disk'>`,
      `      <source file='/guest/diskimage1'/>`,
      `      <target dev='vda' bus='virtio'/>`,
      `    </disk>`,
      `    <interface type='network'>`,
      `      <mac address='aa:bb:cc:dd:ee:ff'/>`,
      `      <source network='default'/>`,
      `      <target dev='testnet0'/>`,
      `    </interface>`,
      `  </devices>`,
      `</domain>`,
      '',
    ].join('\n');
  }

  async close() {
    this.open = false;
  }

  async getDomainOsType(dom: DomainRef) { this.check(); this.find(dom); return 'linux'; }
  async getDomainAutostart(dom: DomainRef) { this.check(); this.find(dom); return false; }
  async isDomainPersistent(dom: DomainRef) { this.check(); return this.find(dom).persistent; }
  async hasManagedSaveImage(dom: DomainRef) { this.check(); this.find(dom); return false; }
  async getSecurityModel() { this.check(); return { model: 'testSecurity', doi: '' }; }
  async getDomainSecurityLabel(dom: DomainRef) { this.check(); this.find(dom); return { label: 'libvirt-test', enforcing: true }; }
  async getDomainMessages(dom: DomainRef, _flags: number) { this.check(); this.find(dom); return [] as string[]; }
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

/** libvirt's `test` driver: `test:///default` (and any other path, each its own hypervisor). */
export class TestDriver implements Driver {
  readonly name = 'test';
  private readonly hypervisors = new Map<string, TestHypervisor>();

  accepts(uri: ConnectUri): boolean {
    return uri.driver === 'test' && uri.transport === null && !uri.host;
  }

  async open(uri: ConnectUri, _ctx: DriverOpenContext): Promise<DriverConnection> {
    const path = uri.path || '/default';
    if (path !== '/default') {
      throw new VirError({ code: ErrorCode.NO_SUPPORT, domain: ErrorDomain.TEST, detail: `only test:///default is provided, not 'test://${path}'` });
    }
    let hv = this.hypervisors.get(path);
    if (!hv) this.hypervisors.set(path, (hv = new TestHypervisor()));
    return new TestConnection(hv, 'test:///default');
  }
}
