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
const uuidText = (v: unknown): string => (Buffer.isBuffer(v) ? formatUuid(v) ?? '' : typeof v === 'string' ? v : '');

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
  const base = { connect_driver: connectDriver };
  switch (type) {
    case 'domain': {
      const uuid = uuidText(r['uuid']);
      return { type, id: uuid, attributes: { ...base, domain_name: text(r['name']), domain_uuid: uuid } };
    }
    case 'network': {
      const uuid = uuidText(r['uuid']);
      return { type, id: uuid, attributes: { ...base, network_name: text(r['name']), network_uuid: uuid } };
    }
    case 'network_port': {
      const net = (r['net'] ?? {}) as Ref;
      const uuid = uuidText(r['uuid']);
      return { type, id: uuid, attributes: { ...base, network_name: text(net['name']), network_uuid: uuidText(net['uuid']), port_uuid: uuid } };
    }
    case 'storage_pool': {
      const uuid = uuidText(r['uuid']);
      return { type, id: uuid, attributes: { ...base, pool_name: text(r['name']), pool_uuid: uuid } };
    }
    case 'storage_vol':
      return { type, id: text(r['key']), attributes: { ...base, pool_name: text(r['pool']), vol_name: text(r['name']), vol_key: text(r['key']) } };
    case 'interface':
      return { type, id: text(r['name']), attributes: { ...base, interface_name: text(r['name']), interface_macaddr: text(r['mac']) } };
    case 'node_device':
      return { type, id: text(r['name']), attributes: { ...base, node_device_name: text(r['name']) } };
    case 'nwfilter': {
      const uuid = uuidText(r['uuid']);
      return { type, id: uuid, attributes: { ...base, nwfilter_name: text(r['name']), nwfilter_uuid: uuid } };
    }
    case 'nwfilter_binding':
      return {
        type,
        id: text(r['portdev']),
        attributes: { ...base, nwfilter_binding_portdev: text(r['portdev']), nwfilter_binding_filter: text(r['filtername']) },
      };
    case 'secret': {
      const uuid = uuidText(r['uuid']);
      const usage = SECRET_USAGE_ATTRIBUTE[typeof r['usageType'] === 'number' ? (r['usageType'] as number) : -1];
      return { type, id: uuid, attributes: { ...base, secret_uuid: uuid, ...(usage ? { [usage]: text(r['usageID']) } : {}) } };
    }
    default:
      return null;
  }
}

/** virSecretUsageType -> the attribute libvirt names the usage by. */
const SECRET_USAGE_ATTRIBUTE: Record<number, string> = { 1: 'secret_usage_volume', 2: 'secret_usage_ceph', 3: 'secret_usage_target', 5: 'secret_usage_name' };

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
    if (depth === 1 && (name === 'name' || name === 'uuid') && !selfClosing && found[name!] === undefined) found[name!] = decodeEntities(after!.trim());
    if (!selfClosing) depth++;
  }
  return { name: found['name'] ?? '', uuid: (found['uuid'] ?? '').toLowerCase() };
}

function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!);
}
