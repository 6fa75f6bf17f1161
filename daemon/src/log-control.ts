// Run-time control of the daemon's logging in libvirt's terms (log_filters, log_outputs), as
// virt-admin's daemon-log-filters and daemon-log-outputs use it. The admin program only sees the
// LogControl interface; daemonLogControl implements it over the service's logging (logging/),
// so the admin reads and changes the very settings log_filters and log_outputs configured.

import type { Logger } from 'pino';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { daemonLoggingOf, type DaemonLogging } from './logging/daemon-logging.js';
import { parseLogFilters, parseLogOutputs, type LogFilter, type LogOutput } from './logging/settings.js';

/** What virt-admin's logging verbs need. */
export interface LogControl {
  /** The filters in libvirt's syntax (`1:rpc 3:relay`), or null when none is set. */
  filters(): { text: string | null; count: number };
  /** Replaces the filters; null or '' removes them all. Throws libvirt's INVALID_ARG errors. */
  setFilters(text: string | null): void;
  outputs(): { text: string; count: number };
  /** Replaces the outputs; null or '' restores the daemon's default (the journal under systemd, else stderr). */
  setOutputs(text: string | null): void;
}

const formatFilter = (f: LogFilter) => `${f.priority}:${f.match}`;
const formatOutput = (o: LogOutput) => `${o.priority}:${o.kind}${o.kind === 'file' ? `:${o.path}` : ''}`;

/** The config parser's errors, as libvirt's admin API reports a bad list: an invalid argument. */
function parsedAsArgument<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (!(e instanceof VirError) || e.code !== ErrorCode.CONF_SYNTAX) throw e;
    throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail: e.str2 ?? e.message });
  }
}

export function daemonLogControl(logging: DaemonLogging): LogControl {
  return {
    filters: () => {
      const list = logging.settings().filters;
      return list.length === 0 ? { text: null, count: 0 } : { text: list.map(formatFilter).join(' '), count: list.length };
    },
    setFilters: (text) => {
      const filters = text ? parsedAsArgument(() => parseLogFilters(text, 'filters')) : [];
      logging.reconfigure({ ...logging.settings(), filters });
    },
    outputs: () => {
      const list = logging.outputs();
      return { text: list.map(formatOutput).join(' '), count: list.length };
    },
    // A file that cannot be opened leaves the outputs as they were (reconfigure opens all first).
    setOutputs: (text) => {
      const outputs = text ? parsedAsArgument(() => parseLogOutputs(text, 'outputs')) : [];
      logging.reconfigure({ ...logging.settings(), outputs });
    },
  };
}

const PRIORITY_OF_LEVEL: Record<string, number> = { trace: 1, debug: 1, info: 2, warn: 3, error: 4, fatal: 4 };

/**
 * The control of a daemon's logger: the service logging's own, or for a logger made elsewhere
 * (createLogger, an embedding program's) one that reports its level and refuses changes with
 * the reason rather than ignoring them.
 */
export function logControlFor(logger: Logger): LogControl {
  const logging = daemonLoggingOf(logger);
  if (logging) return daemonLogControl(logging);
  const refuse = (): never => {
    throw new VirError({
      code: ErrorCode.OPERATION_UNSUPPORTED,
      domain: ErrorDomain.ADMIN,
      detail: 'this daemon was given a logger virtauthd did not create, so its logging cannot be changed at run time',
    });
  };
  return {
    filters: () => ({ text: null, count: 0 }),
    setFilters: refuse,
    outputs: () => ({ text: `${PRIORITY_OF_LEVEL[logger.level] ?? 2}:stderr`, count: 1 }),
    setOutputs: refuse,
  };
}
