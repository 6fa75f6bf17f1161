// virtauthd's logger configured as libvirt's daemons are: a default priority (log_level),
// per-source priorities (log_filters) and several outputs (log_outputs), each with its own
// priority, all changeable on SIGHUP. Redaction happens once, in pino, before any output.

import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino, type Logger, type LogFn } from 'pino';
import { REDACTED_PATHS } from '../logger.js';
import { defaultLogOutputs, type LogFilter, type LogOutput, type LogPriority, type LogSettings } from './settings.js';
import { JournalSink, JsonLinesSink, ReadableSink, openFileSink, type LogRecord, type LogSink } from './sinks.js';

/** pino's level numbers for libvirt's priorities. */
const PINO_LEVEL: Record<LogPriority, number> = { 1: 20, 2: 30, 3: 40, 4: 50 };
const PINO_LABEL: Record<number, string> = { 20: 'debug', 30: 'info', 40: 'warn', 50: 'error' };

export const DEFAULT_JOURNAL_SOCKET = '/run/systemd/journal/socket';

/** The repository root, so source files are named as in the tree (daemon/src/server.ts). */
const REPOSITORY_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const THIS_FILE = fileURLToPath(import.meta.url);

export interface SourceLocation {
  file: string;
  line: number;
  func: string;
}

/** "…/daemon/dist/src/server.js" → "daemon/src/server.ts": where the line was written, as in the tree. */
export function sourceFileName(fileName: string): string {
  const path = fileName.startsWith('file://') ? fileURLToPath(fileName) : fileName;
  const inTree = relative(REPOSITORY_ROOT, path);
  if (inTree.startsWith('..')) return path;
  return inTree.replace(/\/dist\/(src|test)\//, '/$1/').replace(/\.js$/, '.ts');
}

/**
 * How a logger made here decides per source file, for writers that decide once for many lines
 * (audit records, see audit-log.ts); child loggers see it through their prototype.
 */
export const LOG_ROUTING = Symbol.for('virtauth.logRouting');

export interface LogRouting {
  /** Whether a line of pino level `level` written by `file` passes log_level and log_filters. */
  admits(level: number, file: string): boolean;
  /** Whether lines carry their source location (filters or a journald output are configured). */
  readonly wantsSource: boolean;
}

/**
 * The first stack frame outside pino, this module and `skipFiles` (absolute paths): the code
 * that called log.info() and friends.
 */
export function callerLocation(skipFiles: readonly string[] = []): SourceLocation | null {
  const savedPrepare = Error.prepareStackTrace;
  const savedLimit = Error.stackTraceLimit;
  let sites: NodeJS.CallSite[];
  try {
    Error.stackTraceLimit = 8;
    Error.prepareStackTrace = (_error, callSites) => callSites;
    const holder: { stack?: NodeJS.CallSite[] } = {};
    Error.captureStackTrace(holder);
    sites = holder.stack ?? [];
  } finally {
    Error.prepareStackTrace = savedPrepare;
    Error.stackTraceLimit = savedLimit;
  }
  for (const site of sites) {
    const file = site.getFileName();
    const path = file?.startsWith('file://') ? fileURLToPath(file) : file;
    if (!path || path === THIS_FILE || skipFiles.includes(path) || path.includes('/node_modules/pino/')) continue;
    return { file: sourceFileName(path), line: site.getLineNumber() ?? 0, func: site.getFunctionName() ?? site.getMethodName() ?? '' };
  }
  return null;
}

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object';
const isSourceLocation = (value: unknown): value is SourceLocation =>
  isObject(value) && typeof value.file === 'string' && typeof value.line === 'number';

interface Route {
  minLevel: number;
  sink: LogSink;
}

export interface DaemonLoggingOptions {
  /** SYSLOG_IDENTIFIER of journal entries. */
  identifier?: string;
  /** The journal's socket (tests point it at their own). */
  journalSocket?: string;
  /** Whether stderr is a terminal: human-readable lines there, else pino's JSON. */
  stderrIsTerminal?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Where the stderr output writes instead of descriptor 2 (an embedding program's stream), as JSON lines. */
  stderrStream?: { write(line: string): unknown };
}

export interface DaemonLogging {
  readonly logger: Logger;
  /** The settings in effect (log_outputs empty: the default outputs, see effectiveOutputs). */
  settings(): LogSettings;
  /** The outputs in effect, the default ones included. */
  outputs(): LogOutput[];
  /** Replaces priorities, filters and outputs; throws (keeping the current ones) if an output cannot be opened. */
  reconfigure(settings: LogSettings): void;
  close(): void;
}

const loggings = new WeakMap<Logger, DaemonLogging>();

/** The logging a logger was made by (null for a logger made elsewhere), to change it at run time. */
export function daemonLoggingOf(logger: Logger): DaemonLogging | null {
  return loggings.get(logger) ?? null;
}

/** The outputs in effect for these settings (log_outputs, or the default at log_level). */
export function effectiveOutputs(settings: LogSettings, env: NodeJS.ProcessEnv = process.env): LogOutput[] {
  return settings.outputs.length > 0 ? settings.outputs : defaultLogOutputs(settings.level, env);
}

export function createDaemonLogging(initial: LogSettings, options: DaemonLoggingOptions = {}): DaemonLogging {
  const identifier = options.identifier ?? 'virtauthd';
  const env = options.env ?? process.env;
  const journalSocket = options.journalSocket ?? env.VIRTAUTHD_JOURNAL_SOCKET ?? DEFAULT_JOURNAL_SOCKET;
  const stderrIsTerminal = options.stderrIsTerminal ?? Boolean(process.stderr.isTTY);

  let routes: Route[] = [];
  let defaultLevel = PINO_LEVEL[initial.level];
  let filters: { match: string; level: number }[] = [];
  let wantsSource = false;

  const openSink = (output: LogOutput): LogSink => {
    switch (output.kind) {
      case 'stderr': {
        const stream = options.stderrStream;
        if (stream) return { write: (line) => void stream.write(line.endsWith('\n') ? line : `${line}\n`), close: () => undefined };
        return stderrIsTerminal ? new ReadableSink(2) : new JsonLinesSink(2);
      }
      case 'file':
        return openFileSink(output.path);
      case 'journald':
        return new JournalSink(journalSocket, identifier);
    }
  };

  // The destination pino writes to: each line goes to the outputs whose priority it reaches,
  // parsed at most once and only if an output needs fields.
  const destination = {
    write(line: string): void {
      const level = Number(/^\{"level":(\d+)/.exec(line)?.[1] ?? 30);
      let parsed: LogRecord | null | undefined;
      const record = () => {
        if (parsed === undefined) {
          try {
            parsed = JSON.parse(line) as LogRecord;
          } catch {
            parsed = null;
          }
        }
        return parsed;
      };
      for (const route of routes) if (level >= route.minLevel) route.sink.write(line, record);
    },
  };

  const logger: Logger = pino(
    {
      level: 'debug',
      base: { name: identifier },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      hooks: {
        // Filters decide per source file, which only the call stack knows; the location then
        // travels with the record for the journal's CODE_FILE, CODE_LINE and CODE_FUNC.
        logMethod(this: Logger, args: Parameters<LogFn>, method: LogFn, level: number): void {
          if (!wantsSource) {
            if (level >= defaultLevel) method.apply(this, args);
            return;
          }
          const [first, ...rest] = args as unknown[];
          // A record that names its source was admitted by its writer (an audit line writer decides
          // once for all its lines).
          if (isObject(first) && isSourceLocation(first.src)) {
            method.apply(this, args);
            return;
          }
          const src = callerLocation();
          if (level < thresholdFor(src?.file)) return;
          if (first instanceof Error) (method as (...a: unknown[]) => void).apply(this, [{ err: first, src }, ...rest]);
          else if (first !== null && typeof first === 'object')
            (method as (...a: unknown[]) => void).apply(this, [{ ...first, src }, ...rest]);
          else (method as (...a: unknown[]) => void).apply(this, [{ src }, first, ...rest]);
        },
      },
    },
    destination,
  );

  const thresholdFor = (file: string | undefined): number =>
    (file === undefined ? undefined : filters.find((f) => file.includes(f.match))?.level) ?? defaultLevel;
  const routing: LogRouting = {
    admits: (level, file) => level >= thresholdFor(file),
    get wantsSource() {
      return wantsSource;
    },
  };
  (logger as unknown as Record<symbol, unknown>)[LOG_ROUTING] = routing;

  let current: LogSettings = initial;
  const apply = (settings: LogSettings) => {
    const outputs = effectiveOutputs(settings, env);
    const opened: Route[] = [];
    try {
      for (const output of outputs) opened.push({ minLevel: PINO_LEVEL[output.priority], sink: openSink(output) });
    } catch (e) {
      for (const route of opened) route.sink.close();
      throw e;
    }
    const previous = routes;
    routes = opened;
    current = settings;
    for (const route of previous) route.sink.close();
    defaultLevel = PINO_LEVEL[settings.level];
    filters = settings.filters.map((f: LogFilter) => ({ match: f.match, level: PINO_LEVEL[f.priority] }));
    wantsSource = filters.length > 0 || outputs.some((o) => o.kind === 'journald');
    // pino skips a call below its level without even reaching the hook: its level is the most
    // verbose any filter or the default asks for, but no more verbose than any output takes.
    const mostVerbose = Math.min(defaultLevel, ...filters.map((f) => f.level));
    const leastOutput = Math.min(...routes.map((r) => r.minLevel));
    const level = Math.max(mostVerbose, Number.isFinite(leastOutput) ? leastOutput : 50);
    // Child loggers made without options inherit the level methods from their parent's
    // prototype, so this reaches every session's logger too.
    logger.level = PINO_LABEL[level] ?? 'info';
  };
  apply(initial);

  const logging: DaemonLogging = {
    logger,
    settings: () => current,
    outputs: () => effectiveOutputs(current, env),
    reconfigure: apply,
    close: () => {
      for (const route of routes) route.sink.close();
      routes = [];
    },
  };
  loggings.set(logger, logging);
  return logging;
}
