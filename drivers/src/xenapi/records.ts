// XenAPI records read defensively (ints may arrive as numbers or as strings) and mapped to libvirt's terms.

import { DomainState, ErrorCode, ErrorDomain, VirError, formatUuid, parseUuid } from '@virtauth/core';
import type { XenApiValue } from './client.js';

type XenApiRecord = { [key: string]: XenApiValue };

export interface VmRecord {
  ref: string;
  uuid: string;
  nameLabel: string;
  nameDescription: string;
  powerState: string;
  domid: number;
  isTemplate: boolean;
  isSnapshot: boolean;
  isControlDomain: boolean;
  memoryStaticMax: bigint;
  memoryDynamicMax: bigint;
  vcpusMax: number;
  vcpusAtStartup: number;
  hvm: boolean;
  actionsAfterShutdown: string;
  actionsAfterReboot: string;
  actionsAfterCrash: string;
  /** XenAPI's pool-level autostart: other_config:auto_poweron. */
  autoPowerOn: boolean;
}

export interface HostRecord {
  ref: string;
  hostname: string;
  nameLabel: string;
  metricsRef: string;
  softwareVersion: Record<string, string>;
  cpuInfo: Record<string, string>;
}

function malformed(what: string): VirError {
  return new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.XENAPI, detail: `the XenAPI server sent a malformed ${what}` });
}

export function asRecord(v: XenApiValue | undefined, what: string): XenApiRecord {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw malformed(what);
  return v;
}

const str = (v: XenApiValue | undefined): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');

function big(v: XenApiValue | undefined): bigint {
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return BigInt(v);
  return 0n;
}

const int = (v: XenApiValue | undefined): number => Number(big(v));

// XML-RPC servers send booleans as booleans, but some proxies flatten them to strings.
const bool = (v: XenApiValue | undefined): boolean => v === true || v === 'true' || v === '1' || v === 1;

function stringMap(v: XenApiValue | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) for (const [k, val] of Object.entries(v)) out[k] = str(val);
  return out;
}

export function parseVmRecord(ref: string, value: XenApiValue | undefined): VmRecord {
  const r = asRecord(value, `VM record for ${ref}`);
  return {
    ref,
    uuid: str(r['uuid']),
    nameLabel: str(r['name_label']),
    nameDescription: str(r['name_description']),
    powerState: str(r['power_state']),
    domid: int(r['domid']),
    isTemplate: bool(r['is_a_template']),
    isSnapshot: bool(r['is_a_snapshot']),
    isControlDomain: bool(r['is_control_domain']),
    memoryStaticMax: big(r['memory_static_max']),
    memoryDynamicMax: big(r['memory_dynamic_max']),
    vcpusMax: int(r['VCPUs_max']),
    vcpusAtStartup: int(r['VCPUs_at_startup']),
    // HVM guests boot through a policy ("BIOS order"); newer servers also say so in domain_type.
    hvm: str(r['domain_type']) === 'hvm' || (str(r['domain_type']) === '' && str(r['HVM_boot_policy']) !== ''),
    actionsAfterShutdown: str(r['actions_after_shutdown']),
    actionsAfterReboot: str(r['actions_after_reboot']),
    actionsAfterCrash: str(r['actions_after_crash']),
    autoPowerOn: stringMap(r['other_config'])['auto_poweron'] === 'true',
  };
}

export function parseHostRecord(ref: string, value: XenApiValue | undefined): HostRecord {
  const r = asRecord(value, `host record for ${ref}`);
  return {
    ref,
    hostname: str(r['hostname']),
    nameLabel: str(r['name_label']),
    metricsRef: str(r['metrics']),
    softwareVersion: stringMap(r['software_version']),
    cpuInfo: stringMap(r['cpu_info']),
  };
}

/** Guests a libvirt client manages: not templates, snapshots, or the control domain (dom0). */
export const isGuest = (vm: VmRecord): boolean => !vm.isTemplate && !vm.isSnapshot && !vm.isControlDomain;

/** XenAPI `power_state` → `virDomainState`. */
export function domainState(powerState: string): number {
  switch (powerState) {
    case 'Running':
      return DomainState.RUNNING;
    case 'Paused':
      return DomainState.PAUSED;
    case 'Halted':
      return DomainState.SHUTOFF;
    case 'Suspended':
      return DomainState.PMSUSPENDED;
    default:
      return DomainState.NOSTATE;
  }
}

/** Whether a domain runs (has a domid), as libvirt's "active". */
export const isActive = (vm: VmRecord): boolean => vm.powerState === 'Running' || vm.powerState === 'Paused';

/** libvirt's domain id: the Xen domid while active, -1 otherwise. */
export const domainId = (vm: VmRecord): number => (isActive(vm) && vm.domid >= 0 ? vm.domid : -1);

/** `"8.2.1"` → 8002001 (major * 1,000,000 + minor * 1,000 + micro), as libvirt encodes versions. */
export function parseVersion(text: string): bigint {
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text.trim());
  if (!m) {
    throw new VirError({
      code: ErrorCode.INTERNAL_ERROR,
      domain: ErrorDomain.XENAPI,
      detail: `cannot parse the XenAPI server version '${text}'`,
    });
  }
  const [major, minor, micro] = [m[1], m[2], m[3]].map((p) => BigInt(p ?? '0'));
  if (minor! > 999n || micro! > 999n) {
    throw new VirError({
      code: ErrorCode.INTERNAL_ERROR,
      domain: ErrorDomain.XENAPI,
      detail: `cannot encode the XenAPI server version '${text}'`,
    });
  }
  return major! * 1_000_000n + minor! * 1_000n + micro!;
}

/** The host's product version, falling back to the platform version on servers without a product. */
export function hostVersion(host: HostRecord): bigint {
  const text = host.softwareVersion['product_version'] || host.softwareVersion['platform_version'];
  if (!text) {
    throw new VirError({
      code: ErrorCode.INTERNAL_ERROR,
      domain: ErrorDomain.XENAPI,
      detail: `XenAPI host '${host.hostname}' reports no product or platform version`,
    });
  }
  return parseVersion(text);
}

export function uuidToBytes(text: string): Buffer {
  const bytes = parseUuid(text);
  if (!bytes)
    throw new VirError({
      code: ErrorCode.INTERNAL_ERROR,
      domain: ErrorDomain.XENAPI,
      detail: `the XenAPI server sent an invalid uuid '${text}'`,
    });
  return bytes;
}

export function uuidToString(bytes: Buffer): string {
  const text = formatUuid(bytes);
  if (text === null)
    throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.XENAPI, detail: `a uuid has 16 bytes, not ${bytes.length}` });
  return text;
}

/** Truncates to at most `maxBytes` of UTF-8 without splitting a character (nodeinfo's model is char[32]). */
export function truncateUtf8(text: string, maxBytes: number): string {
  let out = '';
  let size = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (size + n > maxBytes) break;
    out += ch;
    size += n;
  }
  return out;
}
