// The daemon's access control: `access_drivers` picks access drivers registered under
// ACCESS_DRIVER (cedar and polkit ship; third parties register more), every one must allow, and
// `access_audit` says which decisions become audit lines. Also the unix peer identity read when a
// client connects, which access drivers, audit lines and the admin interface see.

import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { DependencyContainer } from 'tsyringe';
import {
  ACCESS_DRIVER,
  AccessManager,
  ErrorCode,
  ErrorDomain,
  VirError,
  type AccessAuditMode,
  type AccessDriver,
  type ConfValue,
  type PeerCredentials,
  type UnixPeerIdentity,
} from '@virtauth/core';
import { parseStartTime } from '@virtauth/providers';
import { auditLineWriter } from './audit-log.js';

/** The configuration keys this part of the daemon reads. */
export const ACCESS_CONFIG_KEYS = ['access_drivers', 'access_cedar_policy_file', 'access_audit'] as const;

export interface AccessSettings {
  /** Driver names in order; empty means no checks beyond the read-only rule, as libvirt's default. */
  drivers: string[];
  audit: AccessAuditMode;
}

function confError(key: string, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${key}: ${why}` });
}

export function accessSettingsFrom(extra: ReadonlyMap<string, ConfValue>): AccessSettings {
  const drivers = extra.get('access_drivers') ?? [];
  if (!Array.isArray(drivers) || drivers.some((d) => typeof d !== 'string'))
    throw confError('access_drivers', 'expected a [ "list", "of", "driver names" ] such as [ "cedar", "polkit" ]');
  if (new Set(drivers).size !== drivers.length) throw confError('access_drivers', 'a driver is listed twice');
  const audit = extra.get('access_audit') ?? 'denied';
  if (audit !== 'denied' && audit !== 'all') throw confError('access_audit', `expected "denied" or "all", not ${JSON.stringify(audit)}`);
  return { drivers: drivers.filter((d) => d !== 'none' && d !== 'nop'), audit };
}

/** Builds the configured drivers; an unknown name is a configuration error naming the known ones. */
export async function createAccessManager(
  container: DependencyContainer,
  extra: ReadonlyMap<string, ConfValue>,
  log: Logger,
): Promise<AccessManager> {
  const settings = accessSettingsFrom(extra);
  const factories = container.isRegistered(ACCESS_DRIVER, true) ? container.resolveAll(ACCESS_DRIVER) : [];
  const drivers: AccessDriver[] = [];
  const accessLog = log.child({ component: 'access' });
  try {
    for (const name of settings.drivers) {
      const factory = factories.find((f) => f.name === name);
      if (!factory)
        throw confError(
          'access_drivers',
          `unknown access driver '${name}' (registered: ${factories.map((f) => f.name).join(', ') || 'none'})`,
        );
      drivers.push(await factory.create(extra, accessLog));
    }
  } catch (e) {
    for (const d of drivers) await d.close?.();
    throw e;
  }
  const write = auditLineWriter(log, 'access control');
  const manager = new AccessManager(drivers, {
    log: accessLog,
    auditMode: settings.audit,
    audit: (record) => {
      // Denials are warnings, so they are recorded at the default log level too.
      if (record.event === 'access.denied') log.warn(record, 'access denied');
      else write?.(record);
    },
  });
  if (drivers.length > 0) log.info({ event: 'access.enabled', drivers: settings.drivers, audit: settings.audit }, 'access control enabled');
  return manager;
}

/**
 * What the kernel says about a unix-socket peer, completed from /proc and the user and group
 * databases at accept time (a process start time read later could belong to a recycled pid).
 */
export function unixPeerIdentity(peer: PeerCredentials, procRoot = '/proc'): UnixPeerIdentity {
  const groups = peer.groups ?? supplementaryGroups(peer.pid, procRoot);
  const identity: UnixPeerIdentity = {
    uid: peer.uid,
    gid: peer.gid,
    groups,
    pid: peer.pid,
    processStartTime: processStartTimeSync(peer.pid, procRoot),
  };
  const names = systemNames();
  const userName = names.users.get(peer.uid);
  if (userName !== undefined) identity.userName = userName;
  const groupNames = [...new Set([peer.gid, ...groups])].map((g) => names.groups.get(g)).filter((g): g is string => g !== undefined);
  identity.groupNames = groupNames;
  return identity;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function processStartTimeSync(pid: number, procRoot: string): bigint | null {
  const stat = readText(`${procRoot}/${pid}/stat`);
  if (stat === null) return null;
  try {
    return parseStartTime(stat, pid);
  } catch {
    return null;
  }
}

function supplementaryGroups(pid: number, procRoot: string): number[] {
  const status = readText(`${procRoot}/${pid}/status`);
  const line = status?.split('\n').find((l) => l.startsWith('Groups:'));
  return line
    ? line
        .slice('Groups:'.length)
        .trim()
        .split(/\s+/)
        .filter((g) => /^\d+$/.test(g))
        .map(Number)
    : [];
}

interface SystemNames {
  users: Map<number, string>;
  groups: Map<number, string>;
}

let namesCache: { at: number; names: SystemNames } | null = null;

/** /etc/passwd and /etc/group, re-read at most once a second (accepts can come in bursts). */
function systemNames(): SystemNames {
  const now = Date.now();
  if (namesCache && now - namesCache.at < 1000) return namesCache.names;
  const parse = (text: string | null) => {
    const map = new Map<number, string>();
    for (const line of (text ?? '').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && /^\d+$/.test(id) && !map.has(Number(id))) map.set(Number(id), name);
    }
    return map;
  };
  const names = { users: parse(readText('/etc/passwd')), groups: parse(readText('/etc/group')) };
  namesCache = { at: now, names };
  return names;
}
