// The part of a libvirt domain definition (<domain> XML) the in-memory test hypervisor keeps:
// name, UUID, memory, vCPUs and OS type. Parsed strictly: the XML comes from a client.

import { randomUUID } from 'node:crypto';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { ErrorCode, ErrorDomain, VirError, formatUuid, parseUuid } from '@virtauth/core';

export interface DomainDef {
  name: string;
  uuid: string;
  maxMemKiB: bigint;
  memoryKiB: bigint;
  vcpus: number;
  osType: string;
  arch: string;
}

const xmlError = (detail: string): VirError => new VirError({ code: ErrorCode.XML_ERROR, domain: ErrorDomain.DOMAIN, detail });

/** Multipliers of libvirt's memory units, to KiB. */
const UNIT_BYTES: Record<string, bigint> = {
  b: 1n,
  bytes: 1n,
  k: 1024n,
  kib: 1024n,
  kb: 1000n,
  m: 1024n ** 2n,
  mib: 1024n ** 2n,
  mb: 1000n ** 2n,
  g: 1024n ** 3n,
  gib: 1024n ** 3n,
  gb: 1000n ** 3n,
  t: 1024n ** 4n,
  tib: 1024n ** 4n,
  tb: 1000n ** 4n,
};
/** The largest memory libvirt accepts (an unsigned long long of KiB, capped like its parser). */
const MAX_MEMORY_KIB = (1n << 53n) - 1n;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: () => false,
});

type Node = Record<string, unknown>;

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Node)['#text'] === 'string') return (v as Node)['#text'] as string;
  if (v && typeof v === 'object') return '';
  return undefined;
}

function memory(node: unknown, element: string): bigint | undefined {
  if (node === undefined) return undefined;
  const value = text(node)?.trim() ?? '';
  if (!/^[0-9]{1,20}$/.test(value)) throw xmlError(`invalid value '${value}' for element '${element}'`);
  const unit = (typeof node === 'object' && node ? ((node as Node)['@unit'] as string | undefined) : undefined) ?? 'KiB';
  const bytes = UNIT_BYTES[unit.toLowerCase()];
  if (bytes === undefined) throw xmlError(`unknown unit '${unit}' for element '${element}'`);
  const kib = (BigInt(value) * bytes + 1023n) / 1024n;
  if (kib > MAX_MEMORY_KIB) throw xmlError(`value of '${element}' is too large`);
  return kib;
}

/** Parses a definition as virDomainDefineXML receives it. */
export function parseDomainXml(xml: string): DomainDef {
  // No document type, so no entity definitions to expand (libvirt parses with entities off too).
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw xmlError('document type declarations are not accepted');
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw xmlError(`(domain_definition):${valid.err.line}: ${valid.err.msg}`);
  const doc = parser.parse(xml) as Node;
  const roots = Object.keys(doc).filter((k) => !k.startsWith('?'));
  if (roots.length !== 1 || roots[0] !== 'domain') throw xmlError(`expected root element 'domain', got '${roots.join(',')}'`);
  const dom = doc['domain'];
  if (!dom || typeof dom !== 'object') throw xmlError('missing domain type attribute');
  const d = dom as Node;
  if (typeof d['@type'] !== 'string' || d['@type'] === '') throw xmlError('missing domain type attribute');
  const name = text(d['name'])?.trim();
  if (!name) throw new VirError({ code: ErrorCode.NO_NAME, domain: ErrorDomain.DOMAIN, message: 'missing name information' });
  if (name.includes('\n') || name.length > 1024) throw xmlError(`name '${name.slice(0, 64)}' contains illegal character or is too long`);
  let uuid: string;
  const uuidText = text(d['uuid'])?.trim();
  if (uuidText) {
    const bytes = parseUuid(uuidText);
    if (!bytes) throw xmlError(`malformed uuid element`);
    uuid = formatUuid(bytes)!;
  } else {
    uuid = randomUUID();
  }
  const maxMemKiB = memory(d['memory'], 'memory');
  if (maxMemKiB === undefined || maxMemKiB === 0n) {
    throw xmlError('Memory size must be specified via <memory> or in the <numa> configuration');
  }
  const memoryKiB = memory(d['currentMemory'], 'currentMemory') ?? maxMemKiB;
  const vcpuText = text(d['vcpu'])?.trim();
  const vcpus = vcpuText === undefined ? 1 : Number(vcpuText);
  if (!/^[0-9]{1,4}$/.test(vcpuText ?? '1') || vcpus < 1 || vcpus > 4096)
    throw xmlError(`maximum vcpus count must be an integer between 1 and 4096`);
  const os = d['os'];
  const type = os && typeof os === 'object' ? (os as Node)['type'] : undefined;
  const osType = text(type)?.trim();
  if (!osType) throw new VirError({ code: ErrorCode.OS_TYPE, domain: ErrorDomain.DOMAIN, message: 'An os <type> must be specified' });
  if (!['hvm', 'xen', 'linux', 'exe', 'uml'].includes(osType))
    throw new VirError({ code: ErrorCode.OS_TYPE, domain: ErrorDomain.DOMAIN, message: `unknown OS type ${osType}` });
  const arch = (type && typeof type === 'object' ? ((type as Node)['@arch'] as string | undefined) : undefined) ?? 'i686';
  if (!['i686', 'x86_64'].includes(arch))
    throw new VirError({
      code: ErrorCode.CONFIG_UNSUPPORTED,
      domain: ErrorDomain.DOMAIN,
      detail: `No guest options available for arch '${arch}'`,
    });
  return { name, uuid, maxMemKiB, memoryKiB: memoryKiB > maxMemKiB ? maxMemKiB : memoryKiB, vcpus, osType, arch };
}
