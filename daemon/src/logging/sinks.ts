// Where log lines go. Every sink receives the line pino wrote (already redacted), and parses
// it only if it needs its fields.

import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { sendUnixDatagram } from '@virtauth/peercred';
import { encodeJournalEntry, journalFieldsOf } from './journal.js';

export type LogRecord = Record<string, unknown>;

export interface LogSink {
  write(line: string, record: () => LogRecord | null): void;
  close(): void;
}

/** Writes whole lines to a descriptor, retrying short writes (a full pipe returns EAGAIN). */
function writeFully(fd: number, text: string): void {
  let buffer = Buffer.from(text, 'utf8');
  while (buffer.length > 0) {
    try {
      const written = writeSync(fd, buffer);
      buffer = buffer.subarray(written);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
}

/** pino's JSON lines, unchanged, on a descriptor (stderr when it is not a terminal). */
export class JsonLinesSink implements LogSink {
  constructor(private readonly fd: number, private readonly ownsFd = false) {}

  write(line: string): void {
    writeFully(this.fd, line.endsWith('\n') ? line : `${line}\n`);
  }

  close(): void {
    if (this.ownsFd) closeSync(this.fd);
  }
}

/** JSON lines appended to a file, created (with its directory) if missing. */
export function openFileSink(path: string): JsonLinesSink {
  mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
  return new JsonLinesSink(openSync(path, 'a', 0o640), true);
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

/**
 * Native journal entries, one datagram each, sent without blocking: when journald's queue is
 * full an entry is dropped and counted, and the count is reported with the next one that fits.
 */
export class JournalSink implements LogSink {
  private dropped = 0;
  private warned = false;

  constructor(
    private readonly socketPath: string,
    private readonly identifier: string,
    private readonly send: (path: string, data: Buffer, viaMemfd: boolean) => void = (path, data, viaMemfd) => sendUnixDatagram(path, data, { viaMemfd }),
    private readonly complain: (message: string) => void = (message) => writeFully(2, `${message}\n`),
  ) {}

  write(_line: string, record: () => LogRecord | null): void {
    const parsed = record();
    if (!parsed) return;
    const fields = journalFieldsOf(parsed, this.identifier);
    if (this.dropped > 0) fields.push(['VIRTAUTH_DROPPED_BEFORE', String(this.dropped)]);
    const entry = encodeJournalEntry(fields);
    try {
      try {
        this.send(this.socketPath, entry, false);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EMSGSIZE' && code !== 'ENOBUFS') throw e;
        this.send(this.socketPath, entry, true);
      }
      this.dropped = 0;
    } catch (e) {
      this.dropped++;
      const code = (e as NodeJS.ErrnoException).code;
      // A full queue is transient; anything else (no journald here) is worth one line on stderr.
      if (code !== 'EAGAIN' && !this.warned) {
        this.warned = true;
        this.complain(`virtauthd: cannot write to the journal at ${this.socketPath} (${(e as Error).message}); journald log lines are dropped`);
      }
    }
  }

  close(): void {}
}
