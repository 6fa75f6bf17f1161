// An in-memory hypervisor, like libvirt's test:///default: one running domain `test`, the
// machine's host name, fixed versions. State is shared by every connection to the same path.
// It implements procedures of the generated RemoteApi (reads, and define, undefine, start,
// shutdown, destroy, suspend, resume) and sends lifecycle events as libvirt's test driver does;
// the daemon refuses the procedures it lacks with "not supported".

import { hostname } from 'node:os';
import {
  DomainEventType,
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
  type DomainLifecycleEvent,
  type NodeInfo,
  remote,
  LIBVIRT_API_VERSION,
  withNamedMethods,
} from '@virtauth/core';
import { parseDomainXml } from './domain-def.js';

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
  /** virDomainState reason of the current state (e.g. BOOTED, USER, DESTROYED). */
  reason?: number;
  /** Whether the definition has the built-in default devices (the default domain does). */
  defaultDevices?: boolean;
  autostart?: boolean;
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
    defaultDevices: true,
  },
];

/** Event details (virDomainEvent*DetailType) the test hypervisor reports. */
const Detail = {
  DEFINED_ADDED: 0,
  DEFINED_UPDATED: 1,
  UNDEFINED_REMOVED: 0,
  STARTED_BOOTED: 0,
  SUSPENDED_PAUSED: 0,
  RESUMED_UNPAUSED: 0,
  STOPPED_SHUTDOWN: 0,
  STOPPED_DESTROYED: 1,
} as const;
/** State reasons (virDomainRunningReason etc.). */
const Reason = { RUNNING_BOOTED: 1, RUNNING_UNPAUSED: 5, PAUSED_USER: 1, SHUTOFF_SHUTDOWN: 1, SHUTOFF_DESTROYED: 2 } as const;
/** virDomainDestroyFlags: GRACEFUL, the only flag libvirt's test driver takes. */
const DESTROY_GRACEFUL = 1;
/** virDomainUndefineFlags the test driver takes: MANAGED_SAVE, SNAPSHOTS_METADATA, NVRAM, KEEP_NVRAM, CHECKPOINTS_METADATA, TPM, KEEP_TPM. */
const UNDEFINE_FLAGS = 1 | 2 | 4 | 8 | 16 | 32 | 64;
/** virDomainRebootFlagValues the test driver takes (ACPI, agent, initctl, signal, paravirt). */
const REBOOT_FLAGS = 1 | 2 | 4 | 8 | 16;
/** virDomainDefineFlags: VALIDATE. */
const DEFINE_VALIDATE = 1;

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
  /** The id the next started domain gets (the default domain has 1). */
  nextId = 2;
  private readonly listeners = new Set<(e: DomainLifecycleEvent) => void>();

  subscribe(listener: (e: DomainLifecycleEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Delivers an event after the current call has answered, as libvirt queues its events. */
  emit(d: HostedDomain, event: number, detail: number): void {
    const e: DomainLifecycleEvent = { dom: { name: d.name, uuid: d.uuidBytes, id: d.id }, event, detail };
    setImmediate(() => {
      for (const l of this.listeners) l(e);
    });
  }
}

function noDomain(what: string): VirError {
  return new VirError({ code: ErrorCode.NO_DOMAIN, domain: ErrorDomain.TEST, detail: what });
}

const testError = (message: string): VirError =>
  new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.TEST, detail: message });
const notRunning = (): VirError =>
  new VirError({ code: ErrorCode.OPERATION_INVALID, domain: ErrorDomain.DOMAIN, detail: 'domain is not running' });

/** libvirt's virCheckFlags: a flag the operation does not know is refused, not ignored. */
function checkFlags(flags: number, allowed: number, api: string): void {
  const unknown = (flags >>> 0) & ~allowed;
  if (unknown !== 0) {
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.TEST,
      detail: `${api}: unsupported flags (0x${(unknown >>> 0).toString(16)})`,
    });
  }
}

class TestConnection extends withNamedMethods(Object) implements DriverConnection {
  readonly driverName = 'test';
  private open = true;

  constructor(
    private readonly hv: TestHypervisor,
    private readonly uri: string,
  ) {
    super();
  }

  private check(): void {
    if (!this.open) throw new VirError({ code: ErrorCode.INVALID_CONN, domain: ErrorDomain.TEST, detail: 'connection is closed' });
  }

  private ref(d: HostedDomain): DomainRef {
    return { name: d.name, uuid: d.uuidBytes, id: d.id };
  }

  private find(dom: DomainRef): HostedDomain {
    // libvirt's drivers find a domain by its UUID; the name only words the error.
    const d = this.hv.domains.find((x) => x.uuidBytes.equals(dom.uuid));
    if (!d) throw noDomain(`no domain with matching uuid '${formatUuid(dom.uuid) ?? dom.uuid.toString('hex')}' (${dom.name})`);
    return d;
  }

  private cpuTime(d: TestDomain): bigint {
    // A running domain accumulates CPU time, so repeated queries see it move as on a real host.
    return d.state === DomainState.RUNNING ? d.cpuTimeNs + (process.hrtime.bigint() - this.hv.bootTime) * BigInt(d.vcpus) : d.cpuTimeNs;
  }

  async connectGetType(): Promise<remote.RemoteConnectGetTypeRet> {
    this.check();
    return { type: 'TEST' };
  }
  async connectGetVersion(): Promise<remote.RemoteConnectGetVersionRet> {
    this.check();
    return { hv_ver: TEST_HV_VERSION };
  }
  async connectGetLibVersion(): Promise<remote.RemoteConnectGetLibVersionRet> {
    this.check();
    return { lib_ver: LIBVIRT_API_VERSION };
  }
  async connectGetHostname(): Promise<remote.RemoteConnectGetHostnameRet> {
    this.check();
    return { hostname: hostname() };
  }
  async connectGetUri(): Promise<remote.RemoteConnectGetUriRet> {
    this.check();
    return { uri: this.uri };
  }
  async connectIsSecure(): Promise<remote.RemoteConnectIsSecureRet> {
    this.check();
    return { secure: 1 };
  }
  async connectSupportsFeature({ feature }: remote.RemoteConnectSupportsFeatureArgs): Promise<remote.RemoteConnectSupportsFeatureRet> {
    this.check();
    return { supported: feature === Feature.TYPED_PARAM_STRING ? 1 : 0 };
  }
  async nodeGetInfo(): Promise<NodeInfo> {
    this.check();
    return { ...NODE_INFO };
  }

  async connectListAllDomains({
    need_results,
    flags,
  }: remote.RemoteConnectListAllDomainsArgs): Promise<remote.RemoteConnectListAllDomainsRet> {
    this.check();
    const wantActive = (flags & ListDomainsFlag.ACTIVE) !== 0;
    const wantInactive = (flags & ListDomainsFlag.INACTIVE) !== 0;
    const domains = this.hv.domains
      .filter((d) => {
        const active = d.id >= 0;
        if (wantActive || wantInactive) return (wantActive && active) || (wantInactive && !active);
        return true;
      })
      .map((d) => this.ref(d));
    return { domains: need_results ? domains : [], ret: domains.length };
  }

  async domainLookupByName({ name }: remote.RemoteDomainLookupByNameArgs): Promise<remote.RemoteDomainLookupByNameRet> {
    this.check();
    const d = this.hv.domains.find((x) => x.name === name);
    if (!d) throw noDomain(`no domain with matching name '${name}'`);
    return { dom: this.ref(d) };
  }

  async domainLookupById({ id }: remote.RemoteDomainLookupByIdArgs): Promise<remote.RemoteDomainLookupByIdRet> {
    this.check();
    const d = this.hv.domains.find((x) => x.id === id && id >= 0);
    if (!d) throw noDomain(`no domain with matching id ${id}`);
    return { dom: this.ref(d) };
  }

  async domainLookupByUuid({ uuid }: remote.RemoteDomainLookupByUuidArgs): Promise<remote.RemoteDomainLookupByUuidRet> {
    this.check();
    const d = this.hv.domains.find((x) => x.uuidBytes.equals(uuid));
    if (!d) throw noDomain(`no domain with matching uuid '${formatUuid(uuid) ?? uuid.toString('hex')}'`);
    return { dom: this.ref(d) };
  }

  async domainGetInfo({ dom }: remote.RemoteDomainGetInfoArgs): Promise<DomainInfo> {
    this.check();
    const d = this.find(dom);
    return { state: d.state, maxMem: d.maxMemKiB, memory: d.memoryKiB, nrVirtCpu: d.vcpus, cpuTime: this.cpuTime(d) };
  }

  async domainGetState({ dom }: remote.RemoteDomainGetStateArgs): Promise<remote.RemoteDomainGetStateRet> {
    this.check();
    const d = this.find(dom);
    return { state: d.state, reason: d.reason ?? (d.state === DomainState.RUNNING ? Reason.RUNNING_BOOTED : 0) };
  }

  async domainGetMaxMemory({ dom }: remote.RemoteDomainGetMaxMemoryArgs): Promise<remote.RemoteDomainGetMaxMemoryRet> {
    this.check();
    return { memory: this.find(dom).maxMemKiB };
  }

  async domainIsActive({ dom }: remote.RemoteDomainIsActiveArgs): Promise<remote.RemoteDomainIsActiveRet> {
    this.check();
    const { state } = this.find(dom);
    return { active: state !== DomainState.SHUTOFF && state !== DomainState.NOSTATE ? 1 : 0 };
  }

  async domainGetXmlDesc({ dom }: remote.RemoteDomainGetXmlDescArgs): Promise<remote.RemoteDomainGetXmlDescRet> {
    this.check();
    const d = this.find(dom);
    const idAttr = d.id >= 0 ? ` id='${d.id}'` : '';
    const xml = [
      `<domain type='test'${idAttr}>`,
      `  <name>${escapeXml(d.name)}</name>`,
      `  <uuid>${escapeXml(d.uuid)}</uuid>`,
      `  <memory unit='KiB'>${d.maxMemKiB}</memory>`,
      `  <currentMemory unit='KiB'>${d.memoryKiB}</currentMemory>`,
      `  <vcpu placement='static'>${d.vcpus}</vcpu>`,
      `  <os>`,
      `    <type arch='${escapeXml(d.arch)}'>${escapeXml(d.osType)}</type>`,
      `    <boot dev='hd'/>`,
      `  </os>`,
      `  <clock offset='utc'/>`,
      `  <on_poweroff>destroy</on_poweroff>`,
      `  <on_reboot>restart</on_reboot>`,
      `  <on_crash>destroy</on_crash>`,
      ...(d.defaultDevices ? DEFAULT_DEVICES_XML : [`  <devices>`, `  </devices>`]),
      `</domain>`,
      '',
    ].join('\n');
    return { xml };
  }

  async close() {
    this.open = false;
  }

  // --- generated RemoteApi: writes --------------------------------------------------------

  async domainDefineXml({ xml }: remote.RemoteDomainDefineXmlArgs): Promise<remote.RemoteDomainDefineXmlRet> {
    return this.domainDefineXmlFlags({ xml, flags: 0 });
  }

  async domainDefineXmlFlags({ xml, flags }: remote.RemoteDomainDefineXmlFlagsArgs): Promise<remote.RemoteDomainDefineXmlFlagsRet> {
    this.check();
    checkFlags(flags, DEFINE_VALIDATE, 'virDomainDefineXMLFlags');
    const def = parseDomainXml(xml);
    const uuidBytes = parseUuid(def.uuid)!;
    const byName = this.hv.domains.find((x) => x.name === def.name);
    const byUuid = this.hv.domains.find((x) => x.uuidBytes.equals(uuidBytes));
    if (byName && byName !== byUuid) {
      throw new VirError({
        code: ErrorCode.OPERATION_FAILED,
        domain: ErrorDomain.DOMAIN,
        detail: `domain '${def.name}' is already defined with uuid ${byName.uuid}`,
      });
    }
    if (byUuid && byUuid.name !== def.name) {
      throw new VirError({
        code: ErrorCode.OPERATION_FAILED,
        domain: ErrorDomain.DOMAIN,
        detail: `domain '${byUuid.name}' already exists with uuid ${byUuid.uuid}`,
      });
    }
    let d: HostedDomain;
    if (byUuid) {
      d = byUuid;
      Object.assign(d, {
        maxMemKiB: def.maxMemKiB,
        memoryKiB: def.memoryKiB,
        vcpus: def.vcpus,
        osType: def.osType,
        arch: def.arch,
        persistent: true,
      });
    } else {
      d = { ...def, uuidBytes, id: -1, state: DomainState.SHUTOFF, reason: 0, cpuTimeNs: 0n, persistent: true };
      this.hv.domains.push(d);
    }
    this.hv.emit(d, DomainEventType.DEFINED, byUuid ? Detail.DEFINED_UPDATED : Detail.DEFINED_ADDED);
    return { dom: this.ref(d) };
  }

  async domainUndefine({ dom }: remote.RemoteDomainUndefineArgs): Promise<void> {
    return this.domainUndefineFlags({ dom, flags: 0 });
  }

  async domainUndefineFlags({ dom, flags }: remote.RemoteDomainUndefineFlagsArgs): Promise<void> {
    this.check();
    checkFlags(flags, UNDEFINE_FLAGS, 'virDomainUndefineFlags');
    const d = this.find(dom);
    if (!d.persistent)
      throw new VirError({ code: ErrorCode.OPERATION_INVALID, domain: ErrorDomain.DOMAIN, detail: 'cannot undefine transient domain' });
    this.hv.emit(d, DomainEventType.UNDEFINED, Detail.UNDEFINED_REMOVED);
    // A running domain stays, transient, until it stops.
    if (d.id >= 0) d.persistent = false;
    else this.remove(d);
  }

  async domainCreate({ dom }: remote.RemoteDomainCreateArgs): Promise<void> {
    await this.domainCreateWithFlags({ dom, flags: 0 });
  }

  async domainCreateWithFlags({ dom, flags }: remote.RemoteDomainCreateWithFlagsArgs): Promise<remote.RemoteDomainCreateWithFlagsRet> {
    this.check();
    checkFlags(flags, 0, 'virDomainCreateWithFlags');
    const d = this.find(dom);
    if (d.state !== DomainState.SHUTOFF) throw testError(`Domain '${d.name}' is already running`);
    d.id = this.hv.nextId++;
    d.state = DomainState.RUNNING;
    d.reason = Reason.RUNNING_BOOTED;
    this.hv.emit(d, DomainEventType.STARTED, Detail.STARTED_BOOTED);
    return { dom: this.ref(d) };
  }

  async domainSuspend({ dom }: remote.RemoteDomainSuspendArgs): Promise<void> {
    this.check();
    const d = this.find(dom);
    if (d.state === DomainState.SHUTOFF || d.state === DomainState.PAUSED) throw testError(`domain '${d.name}' not running`);
    d.state = DomainState.PAUSED;
    d.reason = Reason.PAUSED_USER;
    this.hv.emit(d, DomainEventType.SUSPENDED, Detail.SUSPENDED_PAUSED);
  }

  async domainResume({ dom }: remote.RemoteDomainResumeArgs): Promise<void> {
    this.check();
    const d = this.find(dom);
    if (d.state !== DomainState.PAUSED) throw testError(`domain '${d.name}' not paused`);
    d.state = DomainState.RUNNING;
    d.reason = Reason.RUNNING_UNPAUSED;
    this.hv.emit(d, DomainEventType.RESUMED, Detail.RESUMED_UNPAUSED);
  }

  async domainShutdown({ dom }: remote.RemoteDomainShutdownArgs): Promise<void> {
    return this.domainShutdownFlags({ dom, flags: 0 });
  }

  async domainShutdownFlags({ dom, flags }: remote.RemoteDomainShutdownFlagsArgs): Promise<void> {
    this.check();
    checkFlags(flags, 0, 'virDomainShutdownFlags');
    const d = this.find(dom);
    if (d.state === DomainState.SHUTOFF) throw testError(`domain '${d.name}' not running`);
    // The guest powers off at once (on_poweroff is destroy).
    this.stop(d, Reason.SHUTOFF_SHUTDOWN, Detail.STOPPED_SHUTDOWN);
  }

  async domainDestroy({ dom }: remote.RemoteDomainDestroyArgs): Promise<void> {
    return this.domainDestroyFlags({ dom, flags: 0 });
  }

  async domainDestroyFlags({ dom, flags }: remote.RemoteDomainDestroyFlagsArgs): Promise<void> {
    this.check();
    checkFlags(flags, DESTROY_GRACEFUL, 'virDomainDestroyFlags');
    const d = this.find(dom);
    if (d.id < 0) throw notRunning();
    this.stop(d, Reason.SHUTOFF_DESTROYED, Detail.STOPPED_DESTROYED);
  }

  async domainReboot({ dom, flags }: remote.RemoteDomainRebootArgs): Promise<void> {
    this.check();
    checkFlags(flags, REBOOT_FLAGS, 'virDomainReboot');
    const d = this.find(dom);
    if (d.id < 0) throw notRunning();
    // on_reboot is restart: the guest comes straight back, with no lifecycle event.
    d.state = DomainState.RUNNING;
    d.reason = Reason.RUNNING_BOOTED;
  }

  async domainSetAutostart({ dom, autostart }: remote.RemoteDomainSetAutostartArgs): Promise<void> {
    this.check();
    this.find(dom).autostart = autostart !== 0;
  }

  async domainSnapshotNum({ dom }: remote.RemoteDomainSnapshotNumArgs): Promise<remote.RemoteDomainSnapshotNumRet> {
    this.check();
    this.find(dom);
    return { num: 0 };
  }

  subscribeDomainLifecycle(listener: (e: DomainLifecycleEvent) => void): () => void {
    this.check();
    return this.hv.subscribe(listener);
  }

  private stop(d: HostedDomain, reason: number, detail: number): void {
    d.cpuTimeNs = this.cpuTime(d);
    d.state = DomainState.SHUTOFF;
    d.reason = reason;
    d.id = -1;
    this.hv.emit(d, DomainEventType.STOPPED, detail);
    if (!d.persistent) this.remove(d);
  }

  private remove(d: HostedDomain): void {
    const i = this.hv.domains.indexOf(d);
    if (i >= 0) this.hv.domains.splice(i, 1);
  }

  async domainGetOsType({ dom }: remote.RemoteDomainGetOsTypeArgs): Promise<remote.RemoteDomainGetOsTypeRet> {
    this.check();
    this.find(dom);
    return { type: 'linux' };
  }
  async domainGetAutostart({ dom }: remote.RemoteDomainGetAutostartArgs): Promise<remote.RemoteDomainGetAutostartRet> {
    this.check();
    return { autostart: this.find(dom).autostart === true ? 1 : 0 };
  }
  async domainIsPersistent({ dom }: remote.RemoteDomainIsPersistentArgs): Promise<remote.RemoteDomainIsPersistentRet> {
    this.check();
    return { persistent: this.find(dom).persistent ? 1 : 0 };
  }
  async domainHasManagedSaveImage({ dom }: remote.RemoteDomainHasManagedSaveImageArgs): Promise<remote.RemoteDomainHasManagedSaveImageRet> {
    this.check();
    this.find(dom);
    return { result: 0 };
  }
  async nodeGetSecurityModel(): Promise<remote.RemoteNodeGetSecurityModelRet> {
    this.check();
    return { model: remote.cString('testSecurity'), doi: remote.cString('') };
  }
  async domainGetSecurityLabel({ dom }: remote.RemoteDomainGetSecurityLabelArgs): Promise<remote.RemoteDomainGetSecurityLabelRet> {
    this.check();
    this.find(dom);
    return { label: remote.cString('libvirt-test'), enforcing: 1 };
  }
  async domainGetMessages({ dom }: remote.RemoteDomainGetMessagesArgs): Promise<remote.RemoteDomainGetMessagesRet> {
    this.check();
    this.find(dom);
    return { msgs: [] };
  }
}

const DEFAULT_DEVICES_XML = [
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
];

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
      throw new VirError({
        code: ErrorCode.NO_SUPPORT,
        domain: ErrorDomain.TEST,
        detail: `only test:///default is provided, not 'test://${path}'`,
      });
    }
    let hv = this.hypervisors.get(path);
    if (!hv) this.hypervisors.set(path, (hv = new TestHypervisor()));
    return new TestConnection(hv, 'test:///default');
  }
}
