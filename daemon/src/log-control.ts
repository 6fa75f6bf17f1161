// Run-time control of the daemon's logging in libvirt's terms (log_filters, log_outputs), as
// virt-admin's daemon-log-filters and daemon-log-outputs use it. The admin program only sees the
// LogControl interface; PinoLogControl implements it over the pino logger createLogger makes.

import { openSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { ErrorCode, ErrorDomain, VirError, globMatch } from '@virtauth/core';

/** What virt-admin's logging verbs need; a richer logging module can implement it instead. */
export interface LogControl {
  /** The filters in libvirt's syntax (`1:*rpc* 3:*relay*`), or null when none is set. */
  filters(): { text: string | null; count: number };
  /** Replaces the filters; null or '' removes them all. Throws libvirt's INVALID_ARG errors. */
  setFilters(text: string | null): void;
  outputs(): { text: string; count: number };
  /** Replaces the outputs; null or '' restores the daemon's default (stderr). */
  setOutputs(text: string | null): void;
}

/** libvirt's priorities 1..4 and pino's level names. */
const PINO_LEVEL: Record<number, string> = { 1: 'debug', 2: 'info', 3: 'warn', 4: 'error' };
const PINO_VALUE: Record<number, number> = { 1: 20, 2: 30, 3: 40, 4: 50 };

export interface LogFilter {
  priority: number;
  /** A glob matched against a record's `event` (e.g. `client.connected`, `relay.audit`). */
  match: string;
}

export interface LogOutput {
  priority: number;
  destination: 'stderr' | 'file';
  path?: string;
}

const invalid = (detail: string) => new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail });

function parsePriority(text: string, what: string): number {
  const n = /^[1-4]$/.test(text) ? Number(text) : NaN;
  if (Number.isNaN(n)) throw invalid(`Invalid priority '${text}' for ${what}`);
  return n;
}

/** Parses libvirt's filter list, e.g. `1:relay 3:client.*`; a bare name matches as `*name*`. */
export function parseLogFilters(text: string): LogFilter[] {
  const out: LogFilter[] = [];
  for (const raw of text.split(/\s+/).filter((x) => x !== '')) {
    // libvirt once gave '+' a meaning (keep stack traces) and still accepts and ignores it.
    const item = raw.startsWith('+') ? raw.slice(1) : raw;
    const parts = item.split(':');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw invalid(`Malformed format for filter '${raw}'`);
    const priority = parsePriority(parts[0]!, `filter '${raw}'`);
    const name = parts[1]!;
    out.push({ priority, match: /[*?[]/.test(name) ? name : `*${name}*` });
  }
  return out;
}

/** Parses libvirt's output list; virtauthd writes to `stderr` and `file:PATH`. */
export function parseLogOutputs(text: string): LogOutput[] {
  const out: LogOutput[] = [];
  for (const raw of text.split(/\s+/).filter((x) => x !== '')) {
    const first = raw.indexOf(':');
    if (first < 0) throw invalid(`Malformed format for log output '${raw}'`);
    const priority = parsePriority(raw.slice(0, first), `log output '${raw}'`);
    const rest = raw.slice(first + 1);
    const second = rest.indexOf(':');
    const kind = second < 0 ? rest : rest.slice(0, second);
    const arg = second < 0 ? null : rest.slice(second + 1);
    if (kind === 'stderr') {
      if (arg !== null) throw invalid(`Log output '${raw}' does not meet the format requirements for destination type 'stderr'`);
      out.push({ priority, destination: 'stderr' });
    } else if (kind === 'file') {
      if (!arg || !arg.startsWith('/')) throw invalid(`Log output '${raw}' does not meet the format requirements for destination type 'file'`);
      out.push({ priority, destination: 'file', path: arg });
    } else if (kind === 'syslog' || kind === 'journald') {
      throw new VirError({ code: ErrorCode.CONFIG_UNSUPPORTED, domain: ErrorDomain.NONE, detail: `virtauthd writes logs to stderr or a file only, not to ${kind} (log output '${raw}')` });
    } else {
      throw invalid(`Invalid log destination '${kind}' for log output '${raw}'`);
    }
  }
  return out;
}

const formatOutput = (o: LogOutput) => `${o.priority}:${o.destination}${o.path ? `:${o.path}` : ''}`;

type Writable = { write(line: string): unknown };

const stderrWriter: Writable = { write: (line) => process.stderr.write(line) };

/**
 * The stream pino writes to; it forwards to the current outputs, so they can change while the
 * daemon runs without rebuilding loggers (and the audit writer's direct writes follow too).
 */
class SwitchableDestination implements Writable {
  targets: Writable[] = [];
  write(line: string): boolean {
    for (const t of this.targets) t.write(line);
    return true;
  }
}

/**
 * Filters and outputs over one pino logger and its children. A record passes when its level
 * reaches the priority of the first filter whose glob matches its `event`, or else the lowest
 * output priority. pino has one stream per logger, so every output receives what passes at the
 * lowest of the outputs' priorities.
 */
export class PinoLogControl implements LogControl {
  readonly destination = new SwitchableDestination();
  private filterList: LogFilter[] = [];
  private outputList: LogOutput[];
  private readonly defaultOutputs: LogOutput[];
  /** Files this control opened for outputs, closed when outputs change again. */
  private owned: { end(): void }[] = [];
  private readonly loggers = new Set<WeakRef<Logger>>();
  private readonly registry = new FinalizationRegistry<WeakRef<Logger>>((ref) => this.loggers.delete(ref));

  /** `initial` is where and from which priority the daemon logs at start. */
  constructor(initial: { priority: number; target: Writable; description: string }) {
    this.defaultOutputs = [{ priority: initial.priority, destination: 'stderr' }];
    this.outputList = initial.description.startsWith('file:')
      ? [{ priority: initial.priority, destination: 'file', path: initial.description.slice(5) }]
      : [{ priority: initial.priority, destination: 'stderr' }];
    this.destination.targets = [initial.target];
  }

  /** The pino level all loggers must let through for the filters and outputs to be applied. */
  pinoLevel(): string {
    return PINO_LEVEL[Math.min(this.baseline(), ...this.filterList.map((f) => f.priority))]!;
  }

  /** For pino's `hooks.logMethod`: whether a record at pino level `level` is written. */
  admits(args: unknown[], level: number): boolean {
    if (this.filterList.length === 0) return true;
    const first = args[0];
    const event = first !== null && typeof first === 'object' ? (first as { event?: unknown }).event : undefined;
    if (typeof event === 'string') {
      for (const f of this.filterList) if (globMatch(f.match, event)) return level >= PINO_VALUE[f.priority]!;
    }
    return level >= PINO_VALUE[this.baseline()]!;
  }

  /** Follows a logger (and its children, through pino's onChild) so level changes reach it. */
  track(logger: Logger): void {
    const ref = new WeakRef(logger);
    this.loggers.add(ref);
    this.registry.register(logger, ref);
  }

  filters(): { text: string | null; count: number } {
    if (this.filterList.length === 0) return { text: null, count: 0 };
    return { text: this.filterList.map((f) => `${f.priority}:${f.match}`).join(' '), count: this.filterList.length };
  }

  setFilters(text: string | null): void {
    this.filterList = text ? parseLogFilters(text) : [];
    this.applyLevel();
  }

  outputs(): { text: string; count: number } {
    return { text: this.outputList.map(formatOutput).join(' '), count: this.outputList.length };
  }

  setOutputs(text: string | null): void {
    const list = text ? parseLogOutputs(text) : this.defaultOutputs;
    // Every file opens before anything changes: one bad path leaves the old outputs in place.
    const opened: { end(): void }[] = [];
    const targets = list.map((o): Writable => {
      if (o.destination === 'stderr') return stderrWriter;
      try {
        const file = pino.destination({ fd: openSync(o.path!, 'a', 0o600), sync: true });
        opened.push(file);
        return file;
      } catch (e) {
        for (const f of opened) f.end();
        throw new VirError({ code: ErrorCode.SYSTEM_ERROR, domain: ErrorDomain.NONE, detail: `failed to open ${o.path}: ${(e as Error).message}` });
      }
    });
    this.outputList = list;
    this.destination.targets = targets;
    for (const f of this.owned.splice(0, this.owned.length, ...opened)) f.end();
    this.applyLevel();
  }

  private baseline(): number {
    return Math.min(...this.outputList.map((o) => o.priority));
  }

  private applyLevel(): void {
    const level = this.pinoLevel();
    for (const ref of this.loggers) {
      const logger = ref.deref();
      if (logger) logger.level = level;
      else this.loggers.delete(ref);
    }
  }
}

/**
 * For a logger made outside createLogger: no filters or output changes, only what it is. Setting
 * either is refused with the reason rather than ignored.
 */
export function levelOnlyLogControl(logger: Logger): LogControl {
  const priority = Number(Object.entries(PINO_LEVEL).find(([, name]) => name === logger.level)?.[0] ?? 2);
  const refuse = (): never => {
    throw new VirError({ code: ErrorCode.OPERATION_UNSUPPORTED, domain: ErrorDomain.ADMIN, detail: 'this daemon was given a logger virtauthd did not create, so its logging cannot be changed at run time' });
  };
  return {
    filters: () => ({ text: null, count: 0 }),
    setFilters: refuse,
    outputs: () => ({ text: `${priority}:stderr`, count: 1 }),
    setOutputs: refuse,
  };
}
