// The XenAPI driver: a libvirt connection backed by a XenAPI (XenServer / XCP-ng) pool master.
//
// Where the XenAPI server comes from, two URI forms:
//   xenapi://[user@]HOST[:PORT]/[?scheme=http][&no_verify=1]
//       opened in this process (the client library): HOST is the XenAPI server.
//   xenapi:///?server=HOST[:PORT][&scheme=http]
//       the form a daemon receives: the remote driver strips the host (and user, port, and its own
//       parameters such as no_verify) before forwarding a URI like `xenapi+unix:///?server=...`,
//       so the server travels as a query parameter.
// `scheme` is `https` (default, port 443) or `http` (port 80); `no_verify=1` skips the TLS
// certificate check.
//
// Credentials follow libvirt's ESX/XenAPI drivers: the username from the URI, else one AUTHNAME
// request (default `root`); then one PASSPHRASE request naming that user. The host process's
// requester consults auth.conf (service `xenapi`, host = server name) before any callback.

import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  LIBVIRT_API_VERSION,
  ListDomainsFlag,
  DomainState,
  remote,
  VirError,
  credential,
  formatUri,
  uriParam,
  type ConnectUri,
  type DomainInfo,
  type DomainRef,
  type Driver,
  type DriverConnection,
  type DriverOpenContext,
  type NodeInfo,
  withNamedMethods,
} from '@virtauth/core';
import { DEFAULT_CALL_TIMEOUT_MS, XenApiSession, type XenApiEndpoint } from './client.js';
import { domainXml } from './domain-xml.js';
import {
  asRecord,
  domainId,
  domainState,
  hostVersion,
  isActive,
  isGuest,
  parseHostRecord,
  parseVmRecord,
  truncateUtf8,
  uuidToBytes,
  uuidToString,
  type HostRecord,
  type VmRecord,
} from './records.js';

export const XENAPI_AUTH_SERVICE = 'xenapi';
export const XENAPI_DEFAULT_USER = 'root';

export interface XenApiDriverOptions {
  /** Per-call limit for XenAPI requests, in milliseconds. */
  callTimeoutMs?: number;
}

/** Where to reach the XenAPI server, decided from the URI. */
export interface XenApiTarget {
  endpoint: XenApiEndpoint;
  /** The server's host name, for prompts, auth.conf and messages. */
  host: string;
}

function invalidUri(uri: ConnectUri, why: string): VirError {
  return new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.XENAPI, detail: `${why} in URI '${publicUri(uri)}'` });
}

/** The URI without anything after a `:` in the user part (libvirt URIs carry no password, but be safe). */
function publicUri(uri: ConnectUri): string {
  const user = uri.user === null ? null : uri.user.split(':')[0]!;
  return formatUri({ ...uri, user });
}

function parseServerParam(uri: ConnectUri, text: string): { host: string; port: number | null } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:[\]]+)(?::(\d+))?$/.exec(text);
  if (!m) throw invalidUri(uri, `server='${text}' is not HOST[:PORT]`);
  const port = m[2] !== undefined ? Number(m[2]) : null;
  if (port !== null && (port < 1 || port > 65535)) throw invalidUri(uri, `port ${port} is out of range`);
  return { host: m[1]!, port };
}

/** Reads server, port, scheme and verification from a `xenapi` URI; bad values are INVALID_ARG. */
export function resolveTarget(uri: ConnectUri): XenApiTarget {
  const serverParam = uriParam(uri, 'server');
  const uriHost = uri.host !== null && uri.host !== '' ? uri.host : null;
  if (uriHost !== null && serverParam !== null) throw invalidUri(uri, 'the XenAPI server is given both as the host and as server=');
  let host: string;
  let port: number | null;
  if (uriHost !== null) {
    host = uriHost;
    port = uri.port;
  } else if (serverParam !== null && serverParam !== '') {
    ({ host, port } = parseServerParam(uri, serverParam));
  } else {
    throw invalidUri(uri, 'Server name not in URI: use xenapi://[user@]HOST[:PORT]/ or xenapi:///?server=HOST[:PORT]');
  }
  const schemeParam = uriParam(uri, 'scheme') ?? 'https';
  if (schemeParam !== 'https' && schemeParam !== 'http') throw invalidUri(uri, `scheme='${schemeParam}' is neither https nor http`);
  const noVerify = uriParam(uri, 'no_verify') ?? '0';
  if (noVerify !== '0' && noVerify !== '1') throw invalidUri(uri, `no_verify='${noVerify}' is neither 0 nor 1`);
  return {
    host,
    endpoint: { scheme: schemeParam, host, port: port ?? (schemeParam === 'https' ? 443 : 80), verifyCertificate: noVerify === '0' },
  };
}

function throwIfAborted(signal: AbortSignal | undefined, host: string): void {
  if (!signal?.aborted) return;
  if (signal.reason instanceof VirError) throw signal.reason;
  throw new VirError({
    code: ErrorCode.OPERATION_FAILED,
    domain: ErrorDomain.XENAPI,
    detail: `opening the XenAPI connection to ${host} was abandoned`,
    cause: signal.reason,
  });
}

/** Username from the URI, else asked for (libvirt's prompt, challenge = host, default `root`). */
async function decideUsername(uri: ConnectUri, target: XenApiTarget, ctx: DriverOpenContext): Promise<string> {
  if (uri.user !== null && uri.user !== '') return uri.user;
  const { host } = target;
  const ask = credential(CredentialType.AUTHNAME, `Enter username for ${host} [${XENAPI_DEFAULT_USER}]`, host, XENAPI_DEFAULT_USER);
  await ctx.requestCredentials([ask], requestInfo(target, ctx));
  return ask.result !== null && ask.result !== '' ? ask.result : XENAPI_DEFAULT_USER;
}

/** What a credential request is about; over http the answers would travel in clear. */
function requestInfo(target: XenApiTarget, ctx: DriverOpenContext) {
  return {
    service: XENAPI_AUTH_SERVICE,
    host: target.host,
    ...(target.endpoint.scheme === 'http' ? { cleartext: true } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  };
}

async function askPassword(username: string, target: XenApiTarget, ctx: DriverOpenContext): Promise<string> {
  const { host } = target;
  const ask = credential(CredentialType.PASSPHRASE, `Enter ${username}'s password for ${host}`, host);
  await ctx.requestCredentials([ask], requestInfo(target, ctx));
  if (ask.result === null) {
    throw new VirError({
      code: ErrorCode.AUTH_FAILED,
      domain: ErrorDomain.XENAPI,
      detail: `no password for user '${username}' on XenAPI server ${host}`,
    });
  }
  return ask.result;
}

export class XenApiDriver implements Driver {
  readonly name = 'xenapi';
  private readonly callTimeoutMs: number;

  constructor(options: XenApiDriverOptions = {}) {
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** Claims every transport-less `xenapi` URI; a missing server is reported by open() with the accepted forms. */
  accepts(uri: ConnectUri): boolean {
    return uri.driver === 'xenapi' && uri.transport === null;
  }

  async open(uri: ConnectUri, ctx: DriverOpenContext): Promise<DriverConnection> {
    const target = resolveTarget(uri);
    throwIfAborted(ctx.signal, target.host);
    const username = await decideUsername(uri, target, ctx);
    throwIfAborted(ctx.signal, target.host);
    const password = await askPassword(username, target, ctx);
    throwIfAborted(ctx.signal, target.host);
    const session = await XenApiSession.login({
      endpoint: target.endpoint,
      username,
      password,
      timeoutMs: this.callTimeoutMs,
      originator: ctx.processName,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    try {
      const pools = asRecord(await session.call('pool.get_all_records', [], ctx.signal ? { signal: ctx.signal } : {}), 'pool map');
      const pool = Object.values(pools)[0];
      const masterRef = pool !== undefined ? asRecord(pool, 'pool record')['master'] : undefined;
      if (typeof masterRef !== 'string' || masterRef === '') {
        throw new VirError({
          code: ErrorCode.INTERNAL_ERROR,
          domain: ErrorDomain.XENAPI,
          detail: `XenAPI server ${session.address} reports no pool master`,
        });
      }
      return new XenApiConnection(session, masterRef, publicUri(uri));
    } catch (e) {
      await session.logout().catch(() => undefined);
      throw e;
    }
  }
}

const KNOWN_LIST_FLAGS =
  ListDomainsFlag.ACTIVE |
  ListDomainsFlag.INACTIVE |
  ListDomainsFlag.PERSISTENT |
  ListDomainsFlag.TRANSIENT |
  ListDomainsFlag.RUNNING |
  ListDomainsFlag.PAUSED |
  ListDomainsFlag.SHUTOFF |
  ListDomainsFlag.OTHER;
const { DomainXmlFlag } = remote;
const KNOWN_XML_FLAGS = DomainXmlFlag.SECURE | DomainXmlFlag.INACTIVE | DomainXmlFlag.UPDATE_CPU | DomainXmlFlag.MIGRATABLE;

function checkFlags(flags: number, known: number, fn: string): void {
  const unknown = (flags >>> 0) & ~known;
  if (unknown !== 0) {
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.XENAPI,
      detail: `unsupported flags (0x${unknown.toString(16)}) in function ${fn}`,
    });
  }
}

/** The `virConnectListAllDomains` filter groups: each group set narrows, an unset group keeps all. */
export function matchesListFlags(vm: VmRecord, flags: number): boolean {
  const F = ListDomainsFlag;
  const activity = flags & (F.ACTIVE | F.INACTIVE);
  if (activity !== 0 && !(activity & (isActive(vm) ? F.ACTIVE : F.INACTIVE))) return false;
  // Every XenAPI VM is persistent: defined on the pool whether it runs or not.
  const persistence = flags & (F.PERSISTENT | F.TRANSIENT);
  if (persistence !== 0 && !(persistence & F.PERSISTENT)) return false;
  const states = flags & (F.RUNNING | F.PAUSED | F.SHUTOFF | F.OTHER);
  if (states !== 0) {
    const state = domainState(vm.powerState);
    const bit =
      state === DomainState.RUNNING
        ? F.RUNNING
        : state === DomainState.PAUSED
          ? F.PAUSED
          : state === DomainState.SHUTOFF
            ? F.SHUTOFF
            : F.OTHER;
    if (!(states & bit)) return false;
  }
  return true;
}

const toDomainRef = (vm: VmRecord): DomainRef => ({ name: vm.nameLabel, uuid: uuidToBytes(vm.uuid), id: domainId(vm) });

function noDomain(detail: string): VirError {
  return new VirError({ code: ErrorCode.NO_DOMAIN, domain: ErrorDomain.XENAPI, detail });
}

/** A libvirt operation done by one XenAPI call on the VM, allowed in some power states. */
interface PowerOperation {
  /** The libvirt API, named in errors. */
  api: string;
  /** The XenAPI power states it is allowed in, and how an error words them. */
  from: readonly string[];
  wanted: string;
  /** The XenAPI method, called with the VM's reference. */
  call: string;
}

const POWER_OPERATIONS = {
  suspend: { api: 'virDomainSuspend', from: ['Running'], wanted: 'running', call: 'VM.pause' },
  resume: { api: 'virDomainResume', from: ['Paused'], wanted: 'paused', call: 'VM.unpause' },
  // A clean shutdown asks the guest to power off; XenAPI offers no choice of method to pass flags to.
  shutdown: { api: 'virDomainShutdownFlags', from: ['Running'], wanted: 'running', call: 'VM.clean_shutdown' },
  reboot: { api: 'virDomainReboot', from: ['Running'], wanted: 'running', call: 'VM.clean_reboot' },
  // Powers the VM off at once; it stays defined on the pool.
  destroy: { api: 'virDomainDestroyFlags', from: ['Running', 'Paused'], wanted: 'running or paused', call: 'VM.hard_shutdown' },
  // Removes a halted VM from the pool; its disks stay, as XenAPI leaves them.
  undefine: { api: 'virDomainUndefineFlags', from: ['Halted'], wanted: 'halted', call: 'VM.destroy' },
} as const satisfies Record<string, PowerOperation>;

/** virDomainCreateFlags: START_PAUSED, which XenAPI's VM.start takes as an argument. */
const START_PAUSED = 1;

/** A domain is running when XenAPI calls it so; what it needs for each operation, in XenAPI's terms. */
function requirePowerState(vm: VmRecord, allowed: readonly string[], api: string, wanted: string): void {
  if (allowed.includes(vm.powerState)) return;
  throw new VirError({
    code: ErrorCode.OPERATION_INVALID,
    domain: ErrorDomain.XENAPI,
    detail: `${api}: domain '${vm.nameLabel}' is ${vm.powerState.toLowerCase() || 'in an unknown state'}, not ${wanted}`,
  });
}

/**
 * An open XenAPI session as a libvirt connection. It implements the generated RemoteApi (one
 * method per remote procedure, e.g. `domainCreate({ dom })`) for what XenAPI can do; the daemon
 * answers libvirt's "not supported" for every other procedure. The named methods of
 * DriverConnection come from withNamedMethods.
 */
export class XenApiConnection extends withNamedMethods(Object) implements DriverConnection {
  readonly driverName = 'xenapi';

  constructor(
    private readonly session: XenApiSession,
    private readonly masterRef: string,
    private readonly openedUri: string,
  ) {
    super();
  }

  // --- the connection and the host -------------------------------------------------------------

  async connectGetType(): Promise<remote.RemoteConnectGetTypeRet> {
    return { type: 'XenAPI' };
  }

  async connectGetVersion(): Promise<remote.RemoteConnectGetVersionRet> {
    return { hv_ver: hostVersion(await this.master()) };
  }

  async connectGetLibVersion(): Promise<remote.RemoteConnectGetLibVersionRet> {
    return { lib_ver: LIBVIRT_API_VERSION };
  }

  async connectGetHostname(): Promise<remote.RemoteConnectGetHostnameRet> {
    const master = await this.master();
    return { hostname: master.hostname || master.nameLabel };
  }

  async connectGetUri(): Promise<remote.RemoteConnectGetUriRet> {
    return { uri: this.openedUri };
  }

  async connectIsSecure(): Promise<remote.RemoteConnectIsSecureRet> {
    return { secure: this.session.endpoint.scheme === 'https' ? 1 : 0 };
  }

  async connectSupportsFeature(_args: remote.RemoteConnectSupportsFeatureArgs): Promise<remote.RemoteConnectSupportsFeatureRet> {
    return { supported: 0 };
  }

  async nodeGetInfo(): Promise<NodeInfo> {
    const host = await this.master();
    let memoryBytes = 0n;
    if (host.metricsRef !== '' && host.metricsRef !== 'OpaqueRef:NULL') {
      const metrics = asRecord(await this.session.call('host_metrics.get_record', [host.metricsRef]), 'host_metrics record');
      const total = metrics['memory_total'];
      if (typeof total === 'number' || (typeof total === 'string' && /^\d+$/.test(total))) memoryBytes = BigInt(total);
    }
    const cpus = Number.parseInt(host.cpuInfo['cpu_count'] ?? '', 10) || 0;
    const sockets = Number.parseInt(host.cpuInfo['socket_count'] ?? '', 10) || 1;
    return {
      // nodeinfo's model is char[32]: 31 bytes and the terminator.
      model: truncateUtf8(host.cpuInfo['modelname'] ?? '', 31),
      memory: memoryBytes / 1024n,
      cpus,
      mhz: Math.floor(Number.parseFloat(host.cpuInfo['speed'] ?? '') || 0),
      nodes: 1,
      sockets,
      cores: Math.max(1, Math.floor(cpus / sockets)),
      threads: 1,
    };
  }

  // --- finding domains -----------------------------------------------------------------------

  async connectListAllDomains({
    need_results,
    flags,
  }: remote.RemoteConnectListAllDomainsArgs): Promise<remote.RemoteConnectListAllDomainsRet> {
    checkFlags(flags, KNOWN_LIST_FLAGS, 'virConnectListAllDomains');
    const domains = (await this.allGuests()).filter((vm) => matchesListFlags(vm, flags)).map(toDomainRef);
    return { domains: need_results ? domains : [], ret: domains.length };
  }

  async domainLookupByName({ name }: remote.RemoteDomainLookupByNameArgs): Promise<remote.RemoteDomainLookupByNameRet> {
    const refs = await this.session.call('VM.get_by_name_label', [name]);
    if (Array.isArray(refs)) {
      for (const ref of refs) {
        if (typeof ref !== 'string') continue;
        const vm = parseVmRecord(ref, await this.session.call('VM.get_record', [ref]));
        if (isGuest(vm)) return { dom: toDomainRef(vm) };
      }
    }
    throw noDomain(`no domain with matching name '${name}'`);
  }

  async domainLookupById({ id }: remote.RemoteDomainLookupByIdArgs): Promise<remote.RemoteDomainLookupByIdRet> {
    const vm = id >= 0 ? (await this.allGuests()).find((v) => domainId(v) === id) : undefined;
    if (!vm) throw noDomain(`no domain with matching id ${id}`);
    return { dom: toDomainRef(vm) };
  }

  async domainLookupByUuid({ uuid }: remote.RemoteDomainLookupByUuidArgs): Promise<remote.RemoteDomainLookupByUuidRet> {
    return { dom: toDomainRef(await this.vmByUuid(uuidToString(uuid))) };
  }

  // --- reading a domain ----------------------------------------------------------------------

  async domainGetInfo({ dom }: remote.RemoteDomainGetInfoArgs): Promise<DomainInfo> {
    const vm = await this.vmOf(dom);
    const maxMem = vm.memoryStaticMax / 1024n;
    return {
      state: domainState(vm.powerState),
      maxMem,
      memory: isActive(vm) && vm.memoryDynamicMax > 0n ? vm.memoryDynamicMax / 1024n : maxMem,
      nrVirtCpu: vm.vcpusMax,
      cpuTime: 0n,
    };
  }

  async domainGetState({ dom, flags }: remote.RemoteDomainGetStateArgs): Promise<remote.RemoteDomainGetStateRet> {
    checkFlags(flags, 0, 'virDomainGetState');
    // XenAPI keeps no reason; 0 is every state's "unknown" reason.
    return { state: domainState((await this.vmOf(dom)).powerState), reason: 0 };
  }

  async domainGetXmlDesc({ dom, flags }: remote.RemoteDomainGetXmlDescArgs): Promise<remote.RemoteDomainGetXmlDescRet> {
    checkFlags(flags, KNOWN_XML_FLAGS, 'virDomainGetXMLDesc');
    return { xml: domainXml(await this.vmOf(dom)) };
  }

  async domainGetOsType({ dom }: remote.RemoteDomainGetOsTypeArgs): Promise<remote.RemoteDomainGetOsTypeRet> {
    return { type: (await this.vmOf(dom)).hvm ? 'hvm' : 'xen' };
  }

  async domainGetMaxMemory({ dom }: remote.RemoteDomainGetMaxMemoryArgs): Promise<remote.RemoteDomainGetMaxMemoryRet> {
    return { memory: (await this.vmOf(dom)).memoryStaticMax / 1024n };
  }

  async domainIsActive({ dom }: remote.RemoteDomainIsActiveArgs): Promise<remote.RemoteDomainIsActiveRet> {
    return { active: isActive(await this.vmOf(dom)) ? 1 : 0 };
  }

  /** Every XenAPI VM is defined on the pool whether or not it runs. */
  async domainIsPersistent({ dom }: remote.RemoteDomainIsPersistentArgs): Promise<remote.RemoteDomainIsPersistentRet> {
    await this.vmOf(dom);
    return { persistent: 1 };
  }

  async domainGetAutostart({ dom }: remote.RemoteDomainGetAutostartArgs): Promise<remote.RemoteDomainGetAutostartRet> {
    return { autostart: (await this.vmOf(dom)).autoPowerOn ? 1 : 0 };
  }

  /** XenAPI has no libvirt-style managed save: a suspended VM keeps its state on the pool instead. */
  async domainHasManagedSaveImage({
    dom,
    flags,
  }: remote.RemoteDomainHasManagedSaveImageArgs): Promise<remote.RemoteDomainHasManagedSaveImageRet> {
    checkFlags(flags, 0, 'virDomainHasManagedSaveImage');
    await this.vmOf(dom);
    return { result: 0 };
  }

  // --- changing a domain ---------------------------------------------------------------------

  async domainCreate({ dom }: remote.RemoteDomainCreateArgs): Promise<void> {
    await this.domainCreateWithFlags({ dom, flags: 0 });
  }

  /** A halted VM boots (VM.start), a suspended one is restored (VM.resume); START_PAUSED is passed on. */
  async domainCreateWithFlags({ dom, flags }: remote.RemoteDomainCreateWithFlagsArgs): Promise<remote.RemoteDomainCreateWithFlagsRet> {
    const api = 'virDomainCreateWithFlags';
    checkFlags(flags, START_PAUSED, api);
    const vm = await this.vmOf(dom);
    requirePowerState(vm, ['Halted', 'Suspended'], api, 'halted or suspended');
    const paused = (flags & START_PAUSED) !== 0;
    await this.session.call(vm.powerState === 'Suspended' ? 'VM.resume' : 'VM.start', [vm.ref, paused, false]);
    return { dom: toDomainRef(await this.vmOf(dom)) };
  }

  async domainSuspend({ dom }: remote.RemoteDomainSuspendArgs): Promise<void> {
    await this.powerOperation(dom, 0, POWER_OPERATIONS.suspend);
  }

  async domainResume({ dom }: remote.RemoteDomainResumeArgs): Promise<void> {
    await this.powerOperation(dom, 0, POWER_OPERATIONS.resume);
  }

  async domainShutdown({ dom }: remote.RemoteDomainShutdownArgs): Promise<void> {
    await this.powerOperation(dom, 0, POWER_OPERATIONS.shutdown);
  }

  async domainShutdownFlags({ dom, flags }: remote.RemoteDomainShutdownFlagsArgs): Promise<void> {
    await this.powerOperation(dom, flags, POWER_OPERATIONS.shutdown);
  }

  async domainReboot({ dom, flags }: remote.RemoteDomainRebootArgs): Promise<void> {
    await this.powerOperation(dom, flags, POWER_OPERATIONS.reboot);
  }

  async domainDestroy({ dom }: remote.RemoteDomainDestroyArgs): Promise<void> {
    await this.powerOperation(dom, 0, POWER_OPERATIONS.destroy);
  }

  async domainDestroyFlags({ dom, flags }: remote.RemoteDomainDestroyFlagsArgs): Promise<void> {
    await this.powerOperation(dom, flags, POWER_OPERATIONS.destroy);
  }

  /** Pool autostart is other_config:auto_poweron, replaced as a whole key. */
  async domainSetAutostart({ dom, autostart }: remote.RemoteDomainSetAutostartArgs): Promise<void> {
    const vm = await this.vmOf(dom);
    await this.session.call('VM.remove_from_other_config', [vm.ref, 'auto_poweron']);
    await this.session.call('VM.add_to_other_config', [vm.ref, 'auto_poweron', autostart !== 0 ? 'true' : 'false']);
  }

  async domainUndefine({ dom }: remote.RemoteDomainUndefineArgs): Promise<void> {
    await this.powerOperation(dom, 0, POWER_OPERATIONS.undefine);
  }

  async domainUndefineFlags({ dom, flags }: remote.RemoteDomainUndefineFlagsArgs): Promise<void> {
    await this.powerOperation(dom, flags, POWER_OPERATIONS.undefine);
  }

  /** Checks the flags (none is known) and the VM's power state, then makes the XenAPI call. */
  private async powerOperation(dom: DomainRef, flags: number, op: PowerOperation): Promise<void> {
    checkFlags(flags, 0, op.api);
    const vm = await this.vmOf(dom);
    requirePowerState(vm, op.from, op.api, op.wanted);
    await this.session.call(op.call, [vm.ref]);
  }

  /** Logs the session out; the connection is released even when the server is unreachable. */
  async close(): Promise<void> {
    await this.session.logout().catch(() => undefined);
  }

  private async master(): Promise<HostRecord> {
    return parseHostRecord(this.masterRef, await this.session.call('host.get_record', [this.masterRef]));
  }

  private async allGuests(): Promise<VmRecord[]> {
    const records = asRecord(await this.session.call('VM.get_all_records'), 'VM record map');
    return Object.entries(records)
      .map(([ref, record]) => parseVmRecord(ref, record))
      .filter(isGuest);
  }

  private async vmByUuid(uuid: string): Promise<VmRecord> {
    // An unknown uuid comes back as UUID_INVALID [VM, uuid], which the error mapping turns into NO_DOMAIN.
    const ref = await this.session.call('VM.get_by_uuid', [uuid]);
    if (typeof ref !== 'string') throw noDomain(`no domain with matching uuid '${uuid}'`);
    const vm = parseVmRecord(ref, await this.session.call('VM.get_record', [ref]));
    if (!isGuest(vm)) throw noDomain(`no domain with matching uuid '${uuid}'`);
    return vm;
  }

  private vmOf(dom: DomainRef): Promise<VmRecord> {
    return this.vmByUuid(uuidToString(dom.uuid));
  }
}
