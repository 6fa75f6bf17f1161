// Where log lines go. Every sink receives the line pino wrote (already redacted), and parses
// it only if it needs its fields.

import { mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { sendUnixDatagram } from '@virtauth/peercred';
import { DescriptorOutput, writeFully } from './descriptor-output.js';
import { encodeJournalEntry, journalFieldsOf } from './journal.js';

export type LogRecord = Record<string, unknown>;

export interface LogSink {
  write(line: string, record: () => LogRecord | null): void;
  close(): void;
}

/** pino's JSON lines, unchanged, on a descriptor (stderr when it is not a terminal). */
export class JsonLinesSink implements LogSink {
  private readonly output: DescriptorOutput;

  constructor(fd: number, ownsFd = false) {
    this.output = new DescriptorOutput(fd, ownsFd);
  }

  write(line: string): void {
    this.output.write(line.endsWith('\n') ? line : `${line}\n`);
  }

  close(): void {
    this.output.close();
  }
}

/** JSON lines appended to a file, created (with its directory) if missing. */
export function openFileSink(path: string): JsonLinesSink {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
    return new JsonLinesSink(openSync(path, 'a', 0o640), true);
  } catch (e) {
    throw new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.NONE,
      detail: `Cannot open log output file '${path}': ${(e as Error).message}`,
    });
  }
}

const PRIORITY_NAMES: Record<number, string> = { 10: 'debug', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'error' };
const HIDDEN_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'src']);

function showValue(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** One human-readable line per record for a terminal, in libvirt's "time: pid: level : message" form. */
export function formatReadableLine(record: LogRecord): string {
  const time = typeof record.time === 'number' ? new Date(record.time).toISOString().replace('T', ' ').replace('Z', '+0000') : '';
  const level = PRIORITY_NAMES[record.level as number] ?? String(record.level);
  const details = Object.entries(record)
    .filter(([key]) => !HIDDEN_KEYS.has(key))
    .map(([key, value]) => `${key}=${showValue(value)}`)
    .join(' ');
  return `${time}: ${process.pid}: ${level} : ${String(record.msg ?? '')}${details ? ` ${details}` : ''}\n`;
}

export class ReadableSink implements LogSink {
  constructor(private readonly fd: number) {}

  write(line: string, record: () => LogRecord | null): void {
    const parsed = record();
    writeFully(this.fd, parsed ? formatReadableLine(parsed) : line);
  }

  close(): void {}
}

/** Entries held while journald's queue is full, oldest dropped first beyond this. */
const JOURNAL_BACKLOG_LIMIT = 1000;
const JOURNAL_RETRY_MS = 10;

/**
 * Native journal entries, one datagram each, sent without ever blocking the event loop: while
 * journald's queue is full, entries wait in a bounded backlog retried on a timer; beyond it the
 * oldest are dropped, and the next entry sent says how many.
 */
export class JournalSink implements LogSink {
  private readonly backlog: Buffer[] = [];
  private dropped = 0;
  private warned = false;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly socketPath: string,
    private readonly identifier: string,
    private readonly send: (path: string, data: Buffer, viaMemfd: boolean) => void = (path, data, viaMemfd) =>
      sendUnixDatagram(path, data, { viaMemfd }),
    private readonly complain: (message: string) => void = (message) => writeFully(2, `${message}\n`),
  ) {}

  write(_line: string, record: () => LogRecord | null): void {
    const parsed = record();
    if (!parsed) return;
    this.backlog.push(encodeJournalEntry(journalFieldsOf(parsed, this.identifier)));
    if (this.backlog.length > JOURNAL_BACKLOG_LIMIT) {
      this.backlog.shift();
      this.dropped++;
    }
    if (!this.retry) this.flush();
  }

  /** Sends what waits, in order; stops at a full queue (retrying later) or drops on a hard error. */
  private flush(): void {
    this.retry = null;
    while (this.backlog.length > 0) {
      const entry =
        this.dropped > 0
          ? Buffer.concat([this.backlog[0]!, encodeJournalEntry([['VIRTAUTH_DROPPED_BEFORE', String(this.dropped)]])])
          : this.backlog[0]!;
      try {
        this.sendEntry(entry);
        this.dropped = 0;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          this.retry = setTimeout(() => this.flush(), JOURNAL_RETRY_MS);
          this.retry.unref();
          return;
        }
        // No journald here (or it refuses us): say so once on stderr, and drop.
        this.dropped++;
        if (!this.warned) {
          this.warned = true;
          this.complain(
            `virtauthd: cannot write to the journal at ${this.socketPath} (${(e as Error).message}); journald log lines are dropped`,
          );
        }
      }
      this.backlog.shift();
    }
  }

  private sendEntry(entry: Buffer): void {
    try {
      this.send(this.socketPath, entry, false);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EMSGSIZE' && code !== 'ENOBUFS') throw e;
      this.send(this.socketPath, entry, true);
    }
  }

  close(): void {
    if (this.retry) clearTimeout(this.retry);
    this.flush();
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }
}
