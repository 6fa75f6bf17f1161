// unix_sock_group: the group that owns the daemon's unix sockets, by name or number.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

const run = promisify(execFile);

function noGroup(name: string, why: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `unix_sock_group: ${why} '${name}'` });
}

/**
 * The gid of a group name (through NSS, as getent sees it), or of a number (`100` or libvirt's
 * `+100`); an unknown group stops the daemon rather than leaving the sockets with another group.
 */
export async function resolveGroupId(group: string): Promise<number> {
  const numeric = /^\+?(\d+)$/.exec(group);
  if (numeric) return Number(numeric[1]);
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/.test(group)) throw noGroup(group, 'not a group name:');
  let out: string;
  try {
    ({ stdout: out } = await run('getent', ['group', group], { timeout: 10_000 }));
  } catch {
    throw noGroup(group, 'no such group');
  }
  const gid = Number(out.split(':')[2]);
  if (!Number.isInteger(gid) || gid < 0) throw noGroup(group, 'no such group');
  return gid;
}
