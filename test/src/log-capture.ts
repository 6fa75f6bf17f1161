// The daemons' pino JSON lines, collected in memory for assertions (events, no secrets).

import { Writable } from 'node:stream';

/** Collects a pino logger's JSON lines in memory. */
export class JsonLines extends Writable {
  readonly lines: string[] = [];
  private partial = '';

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    const text = this.partial + chunk.toString('utf8');
    const parts = text.split('\n');
    this.partial = parts.pop() ?? '';
    const complete = parts.filter((line) => line !== '');
    this.lines.push(...complete);
    // Waits on the log (whenEmitted(log, ['lines'], ...)) are told of each new line.
    if (complete.length > 0) this.emit('lines');
    done();
  }

  /** Adds text that arrives in pieces (a child process's stderr). */
  feed(text: string): void {
    this._write(Buffer.from(text), 'utf8', () => {});
  }

  records(): LogRecord[] {
    const out: LogRecord[] = [];
    for (const line of this.lines) {
      try {
        out.push(JSON.parse(line) as LogRecord);
      } catch {
        // A child's stderr can carry plain text lines (startup notices); they are not records.
      }
    }
    return out;
  }

  events(event: string): LogRecord[] {
    return this.records().filter((r) => r.event === event);
  }

  text(): string {
    return this.lines.join('\n');
  }
}

export interface LogRecord {
  level: number;
  time: number;
  msg?: string;
  event?: string;
  [key: string]: unknown;
}

/** A relay.audit record as the daemon logs it. */
