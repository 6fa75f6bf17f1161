// Log lines to a descriptor in batches: one write(2) for many lines, at most a few milliseconds
// and a few KiB behind, and all of them on flush, on close and when the process exits. Writing
// each line on its own cost an audited relay hop more than the rest of its log line did.

import { closeSync, writeSync } from 'node:fs';
import type { Logger } from 'pino';

/** Characters of lines held before they are written at once. */
export const LOG_BATCH_CHARS = 8 * 1024;
/** Longest a line waits for its batch (ms). */
export const LOG_BATCH_MS = 10;

/**
 * Writes what the outputs of a logger made here hold (root or child: children see it through
 * their prototype). A process killed outright loses at most what waits: LOG_BATCH_MS, LOG_BATCH_CHARS.
 */
export const LOG_FLUSH = Symbol.for('virtauth.logFlush');

/** Writes what `log`'s outputs hold now; nothing for a logger made elsewhere. */
export function flushLog(log: Logger): void {
  (log as unknown as Record<symbol, (() => void) | undefined>)[LOG_FLUSH]?.();
}

const openOutputs = new Set<BufferedLogOutput>();

/** Writes what every output made here holds (at process exit, after the lines still to come). */
export function flushAllLogOutputs(): void {
  for (const output of openOutputs) output.flushOrReport();
}

/**
 * Lines held in memory and written with one write(2). Not pino.destination with minLength: it
 * measures the whole held buffer's UTF-8 length on every line, which cost more than the write
 * it saves.
 */
export class BufferedLogOutput {
  private held: string[] = [];
  private heldLength = 0;
  private timer: NodeJS.Timeout | null = null;
  private failureReported = false;

  constructor(
    private readonly fd: number,
    private readonly ownsFd = false,
  ) {
    if (openOutputs.size === 0) process.on('exit', flushAllLogOutputs);
    openOutputs.add(this);
  }

  write(line: string): void {
    this.held.push(line);
    this.heldLength += line.length;
    if (this.heldLength >= LOG_BATCH_CHARS) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(this.flushOrReport, LOG_BATCH_MS);
      this.timer.unref();
    }
  }

  readonly flush = (): void => {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.held.length === 0) return;
    const text = this.held.join('');
    this.held = [];
    this.heldLength = 0;
    writeFully(this.fd, text);
  };

  /** For a timer or the exit, which have no caller to throw to: a failure is reported on stderr, once per output. */
  readonly flushOrReport = (): void => {
    try {
      this.flush();
    } catch (e) {
      if (this.failureReported) return;
      this.failureReported = true;
      process.stderr.write(`virtauthd: cannot write log lines to descriptor ${this.fd}: ${(e as Error).message}\n`);
    }
  };

  close(): void {
    this.flush();
    openOutputs.delete(this);
    if (openOutputs.size === 0) process.off('exit', flushAllLogOutputs);
    if (this.ownsFd) closeSync(this.fd);
  }
}

/** Writes all of `text` to a descriptor, retrying short writes (a full pipe returns EAGAIN). */
export function writeFully(fd: number, text: string): void {
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
