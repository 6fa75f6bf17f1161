// The virsh-like commands: each takes an open connection and returns the text to print.

import { ErrorCode, ErrorDomain, ListDomainsFlag, LIBVIRT_API_VERSION, VirError, parseUuid, type DomainRef } from '@virtauth/core';
import type { Connection } from './connect.js';
import { formatDomainList, formatDomInfo, formatVersion, type DomInfoDetails } from './format.js';

export const CLIENT_VERSION = '0.1.0';

/** Resolves a domain argument as virsh does: id, then UUID, then name. */
export async function lookupDomain(conn: Connection, arg: string): Promise<DomainRef> {
  if (/^\d+$/.test(arg)) {
    try {
      return await conn.lookupDomainById(Number(arg));
    } catch (e) {
      if (!(e instanceof VirError && e.code === ErrorCode.NO_DOMAIN)) throw e;
    }
  }
  const uuid = arg.length === 36 ? parseUuid(arg) : null;
  if (uuid) {
    try {
      return await conn.lookupDomainByUuid(uuid);
    } catch (e) {
      if (!(e instanceof VirError && e.code === ErrorCode.NO_DOMAIN)) throw e;
    }
  }
  try {
    return await conn.lookupDomainByName(arg);
  } catch (e) {
    if (e instanceof VirError && e.code === ErrorCode.NO_DOMAIN) {
      throw new VirError({ code: ErrorCode.NO_DOMAIN, domain: e.domain, message: `failed to get domain '${arg}'`, cause: e });
    }
    throw e;
  }
}

export async function hostnameCommand(conn: Connection): Promise<string> {
  return `${await conn.getHostname()}\n`;
}

export async function versionCommand(conn: Connection): Promise<string> {
  const type = await conn.getType();
  const hv = await conn.getVersion();
  return [
    `Compiled against library: virtauth ${CLIENT_VERSION}`,
    `Using library: virtauth ${CLIENT_VERSION}`,
    `Using API: ${type} ${formatVersion(LIBVIRT_API_VERSION)}`,
    `Running hypervisor: ${type} ${formatVersion(hv)}`,
    '',
  ].join('\n');
}

export async function uriCommand(conn: Connection): Promise<string> {
  return `${await conn.getUri()}\n`;
}

export async function listCommand(conn: Connection, opts: { all?: boolean; inactive?: boolean; name?: boolean }): Promise<string> {
  const flags = opts.all
    ? ListDomainsFlag.ACTIVE | ListDomainsFlag.INACTIVE
    : opts.inactive
      ? ListDomainsFlag.INACTIVE
      : ListDomainsFlag.ACTIVE;
  const domains = await conn.listAllDomains(flags);
  // Running domains first by id, then inactive ones by name, as virsh sorts them.
  domains.sort((a, b) => (a.id >= 0 && b.id >= 0 ? a.id - b.id : a.id >= 0 ? -1 : b.id >= 0 ? 1 : a.name.localeCompare(b.name)));
  if (opts.name) return domains.map((d) => `${d.name}\n`).join('');
  const withState = await Promise.all(domains.map(async (dom) => ({ dom, state: (await conn.getDomainState(dom)).state })));
  return formatDomainList(withState);
}

/** Optional details are left out when the driver does not provide them, as virsh does. */
async function optional<T>(fn: (() => Promise<T>) | undefined): Promise<T | undefined> {
  if (!fn) return undefined;
  try {
    return await fn();
  } catch {
    return undefined;
  }
}

export async function dominfoCommand(conn: Connection, arg: string): Promise<string> {
  const dom = await lookupDomain(conn, arg);
  const info = await conn.getDomainInfo(dom);
  const details: DomInfoDetails = { dom, info };
  const osType = await optional(conn.getDomainOsType && (() => conn.getDomainOsType!(dom)));
  if (osType !== undefined) details.osType = osType;
  const persistent = await optional(conn.isDomainPersistent && (() => conn.isDomainPersistent!(dom)));
  if (persistent !== undefined) details.persistent = persistent;
  const autostart = await optional(conn.getDomainAutostart && (() => conn.getDomainAutostart!(dom)));
  if (autostart !== undefined) details.autostart = autostart;
  const managedSave = await optional(conn.hasManagedSaveImage && (() => conn.hasManagedSaveImage!(dom)));
  if (managedSave !== undefined) details.managedSave = managedSave;
  const model = await optional(conn.getSecurityModel && (() => conn.getSecurityModel!()));
  if (model !== undefined) details.securityModel = model;
  const label = await optional(conn.getDomainSecurityLabel && (() => conn.getDomainSecurityLabel!(dom)));
  if (label !== undefined) details.securityLabel = label;
  return formatDomInfo(details);
}

export async function dumpxmlCommand(conn: Connection, arg: string, flags = 0): Promise<string> {
  const dom = await lookupDomain(conn, arg);
  return await conn.getDomainXmlDesc(dom, flags);
}

export function invalidArg(detail: string): VirError {
  return new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail });
}
