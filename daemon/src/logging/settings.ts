// libvirt's logging settings: log_level, log_filters ("1:rpc 3:relay") and log_outputs
// ("2:journald 1:file:/var/log/virtauth/virtauthd.log 3:stderr"), parsed and checked.

import { fstatSync } from 'node:fs';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

/** libvirt's priorities: 1 debug, 2 info, 3 warning, 4 error. */
export type LogPriority = 1 | 2 | 3 | 4;

export interface LogFilter {
  priority: LogPriority;
  /** Matched as a substring of the source file that logs (e.g. "rpc" matches core/src/rpc/…). */
  match: string;
}

export type LogOutput =
  | { priority: LogPriority; kind: 'stderr' }
  | { priority: LogPriority; kind: 'journald' }
  | { priority: LogPriority; kind: 'file'; path: string };

export interface LogSettings {
  level: LogPriority;
  filters: LogFilter[];
  outputs: LogOutput[];
}

function bad(key: string, detail: string): VirError {
  return new VirError({ code: ErrorCode.CONF_SYNTAX, domain: ErrorDomain.CONF, detail: `${key}: ${detail}` });
}

function priorityOf(key: string, text: string, entry: string): LogPriority {
  if (!/^[1-4]$/.test(text)) throw bad(key, `'${entry}' must start with a priority from 1 (debug) to 4 (error), then ':'`);
  return Number(text) as LogPriority;
}

function entries(text: string): string[] {
  return text.split(/\s+/).filter((e) => e.length > 0);
}

/** Parses "PRIORITY:MATCH ..." (a '+' before MATCH, libvirt's stack-trace flag, is accepted and ignored). */
export function parseLogFilters(text: string, key = 'log_filters'): LogFilter[] {
  return entries(text).map((entry) => {
    const colon = entry.indexOf(':');
    if (colon < 0) throw bad(key, `'${entry}' is not PRIORITY:MATCH (e.g. "1:rpc")`);
    const priority = priorityOf(key, entry.slice(0, colon), entry);
    const match = entry.slice(colon + 1).replace(/^\+/, '');
    if (match.length === 0) throw bad(key, `'${entry}' has nothing to match after the priority`);
    return { priority, match };
  });
}

/** Parses "PRIORITY:stderr", "PRIORITY:journald" and "PRIORITY:file:ABSOLUTE_PATH" entries. */
export function parseLogOutputs(text: string, key = 'log_outputs'): LogOutput[] {
  const outputs = entries(text).map((entry): LogOutput => {
    if (!entry.includes(':')) throw bad(key, `'${entry}' is not PRIORITY:OUTPUT (e.g. "3:stderr")`);
    const [level, kind, ...rest] = entry.split(':');
    const priority = priorityOf(key, level ?? '', entry);
    switch (kind) {
      case 'stderr':
      case 'journald':
        if (rest.length) throw bad(key, `'${entry}': ${kind} takes no argument`);
        return { priority, kind };
      case 'file': {
        const path = rest.join(':');
        if (!path.startsWith('/')) throw bad(key, `'${entry}': file needs an absolute path, e.g. "1:file:/var/log/virtauth/virtauthd.log"`);
        return { priority, kind, path };
      }
      case 'syslog':
        throw bad(key, `'${entry}': the syslog output is not supported; use journald, which syslog daemons read too`);
      default:
        throw bad(key, `'${entry}': unknown output '${kind ?? ''}' (expected stderr, journald or file:PATH)`);
    }
  });
  return outputs;
}

/**
 * Whether stderr is connected to the journal (systemd sets JOURNAL_STREAM to its device and
 * inode), in which case journald, with its fields, is the better default output.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return stream === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}

/** The outputs used when log_outputs is unset: the journal under systemd, else stderr; at log_level. */
export function defaultLogOutputs(level: LogPriority, env: NodeJS.ProcessEnv = process.env): LogOutput[] {
  return [{ priority: level, kind: stderrIsJournal(env) ? 'journald' : 'stderr' }];
}
