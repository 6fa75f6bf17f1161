// The objects libvirt's permissions are checked on, described from the wire structures that name
// them (remote_nonnull_domain, remote_nonnull_storage_pool, ...), with the attribute names
// libvirt's polkit access driver uses.

import type { AccessObject } from '../contracts/access.js';
import { formatUuid } from '../uuid.js';

/** Every object type of libvirt's permission model, as the `@acl` annotations write it. */
export const ACL_OBJECT_TYPES = [
  'connect',
  'domain',
  'interface',
  'network',
  'network_port',
  'node_device',
  'nwfilter',
  'nwfilter_binding',
  'secret',
  'storage_pool',
  'storage_vol',
] as const;

export type AclObjectType = (typeof ACL_OBJECT_TYPES)[number];

type Ref = Record<string, unknown>;

const text = (v: unknown): string => (typeof v === 'string' ? v : '');
const uuidText = (v: unknown): string => (Buffer.isBuffer(v) ? (formatUuid(v) ?? '') : typeof v === 'string' ? v : '');

/** The connection itself: only its driver. */
export function connectObject(connectDriver: string): AccessObject {
  return { type: 'connect', id: connectDriver, attributes: { connect_driver: connectDriver } };
}

/**
 * An object of `type` from the wire structure naming it, or null when the structure is not one
 * (a hostile or malformed argument is then checked as nothing, which no policy allows).
 */
export function describeObject(type: string, ref: unknown, connectDriver: string): AccessObject | null {
  if (type === 'connect') return connectObject(connectDriver);
  if (ref === null || typeof ref !== 'object') return null;
  const r = ref as Ref;
  const attributes: Record<string, string> = { connect_driver: connectDriver };
  let id: string;
  switch (type) {
    case 'domain':
      id = uuidText(r['uuid']);
      attributes['domain_name'] = text(r['name']);
      attributes['domain_uuid'] = id;
      break;
    case 'network':
      id = uuidText(r['uuid']);
      attributes['network_name'] = text(r['name']);
      attributes['network_uuid'] = id;
      break;
    case 'network_port': {
      const net = (r['net'] ?? {}) as Ref;
      id = uuidText(r['uuid']);
      attributes['network_name'] = text(net['name']);
      attributes['network_uuid'] = uuidText(net['uuid']);
      attributes['port_uuid'] = id;
      break;
    }
    case 'storage_pool':
      id = uuidText(r['uuid']);
      attributes['pool_name'] = text(r['name']);
      attributes['pool_uuid'] = id;
      break;
    case 'storage_vol':
      id = text(r['key']);
      attributes['pool_name'] = text(r['pool']);
      attributes['vol_name'] = text(r['name']);
      attributes['vol_key'] = id;
      break;
    case 'interface':
      id = text(r['name']);
      attributes['interface_name'] = id;
      attributes['interface_macaddr'] = text(r['mac']);
      break;
    case 'node_device':
      id = text(r['name']);
      attributes['node_device_name'] = id;
      break;
    case 'nwfilter':
      id = uuidText(r['uuid']);
      attributes['nwfilter_name'] = text(r['name']);
      attributes['nwfilter_uuid'] = id;
      break;
    case 'nwfilter_binding':
      id = text(r['portdev']);
      attributes['nwfilter_binding_portdev'] = id;
      attributes['nwfilter_binding_filter'] = text(r['filtername']);
      break;
    case 'secret': {
      id = uuidText(r['uuid']);
      attributes['secret_uuid'] = id;
      const usage = SECRET_USAGE_ATTRIBUTE[typeof r['usageType'] === 'number' ? (r['usageType'] as number) : -1];
      if (usage) attributes[usage] = text(r['usageID']);
      break;
    }
    default:
      return null;
  }
  return { type, id, attributes };
}

/** virSecretUsageType -> the attribute libvirt names the usage by. */
const SECRET_USAGE_ATTRIBUTE: Record<number, string> = {
  1: 'secret_usage_volume',
  2: 'secret_usage_ceph',
  3: 'secret_usage_target',
  5: 'secret_usage_name',
};

/** The attribute prefix of each object type (`domain_name` -> `name` for policy languages). */
const ATTRIBUTE_PREFIX: Record<string, string> = {
  domain: 'domain_',
  network: 'network_',
  network_port: 'port_',
  storage_pool: 'pool_',
  storage_vol: 'vol_',
  interface: 'interface_',
  node_device: 'node_device_',
  nwfilter: 'nwfilter_',
  nwfilter_binding: 'nwfilter_binding_',
  secret: 'secret_',
};

/**
 * The object's attributes with its own prefix dropped (`domain_name` -> `name`), others as they are
 * (`connect_driver`, a volume's `pool_name`).
 */
export function shortAttributes(object: AccessObject): Record<string, string> {
  const prefix = ATTRIBUTE_PREFIX[object.type];
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(object.attributes)) out[prefix && k.startsWith(prefix) ? k.slice(prefix.length) : k] = v;
  return out;
}

/** The object's human name for logs and audit records, when it has one. */
export function objectName(object: AccessObject): string | null {
  const a = shortAttributes(object);
  return a['name'] ?? a['portdev'] ?? null;
}

/**
 * The `<name>` and `<uuid>` of an XML document's root element, read before a define or create
 * runs so its permission is checked on the object it would make. Deliberately small: the driver
 * parses the document for real; an unreadable one yields empty values, which no name rule allows.
 */
export function namedInXml(xml: unknown): { name: string; uuid: string } {
  if (typeof xml !== 'string') return { name: '', uuid: '' };
  const body = xml.replace(/<!--[\s\S]*?-->/g, '').replace(/<\?[\s\S]*?\?>/g, '');
  const root = /<([A-Za-z_][\w.-]*)\b[^>]*>/.exec(body);
  if (!root) return { name: '', uuid: '' };
  // Only direct children of the root: count depth while scanning tags.
  const found: Record<string, string> = {};
  const tag = /<(\/?)([A-Za-z_][\w.-]*)\b[^>]*?(\/?)>([^<]*)/g;
  tag.lastIndex = root.index + root[0].length;
  let depth = 1;
  for (let m = tag.exec(body); m && depth > 0; m = tag.exec(body)) {
    const [, closing, name, selfClosing, after] = m;
    if (closing) {
      depth--;
      continue;
    }
    if (depth === 1 && (name === 'name' || name === 'uuid') && !selfClosing && found[name!] === undefined)
      found[name!] = decodeEntities(after!.trim());
    if (!selfClosing) depth++;
  }
  return { name: found['name'] ?? '', uuid: (found['uuid'] ?? '').toLowerCase() };
}

function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!);
}
