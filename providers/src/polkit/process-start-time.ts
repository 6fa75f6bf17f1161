// A process's start time, which polkit pairs with its pid so a recycled pid cannot inherit an
// authorization.

import { readFile } from 'node:fs/promises';

/** Field 22 of /proc/PID/stat (clock ticks after boot), or null when the process no longer exists. */
export async function processStartTime(pid: number, procRoot = '/proc'): Promise<bigint | null> {
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`invalid process id ${pid}`);
  let stat: string;
  try {
    stat = await readFile(`${procRoot}/${pid}/stat`, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ESRCH') return null;
    throw e;
  }
  return parseStartTime(stat, pid);
}

/** Fields 1 and 2 are the pid and `(comm)`; comm may hold spaces and parentheses, so count from the last ')'. */
export function parseStartTime(stat: string, pid: number): bigint {
  const end = stat.lastIndexOf(')');
  const fields =
    end < 0
      ? []
      : stat
          .slice(end + 1)
          .trim()
          .split(/\s+/);
  // fields[0] is field 3 (state), so field 22 is fields[19].
  const value = fields[19];
  if (value === undefined || !/^\d+$/.test(value)) throw new Error(`cannot read the start time of process ${pid} from /proc/${pid}/stat`);
  return BigInt(value);
}
