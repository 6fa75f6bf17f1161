// Log lines to a descriptor: each line at once, except inside writeLinesTogether(), whose lines
// each output writes with one write(2) when it ends. Audit records are written that way, a batch
// at a time: a write(2) per record cost an audited relay hop a quarter of its time.

import { closeSync, writeSync } from 'node:fs';

/** The outputs holding lines of the writeLinesTogether() in progress, if one is. */
let gathering: Set<DescriptorOutput> | null = null;

/** Runs `write`; each output writes the lines it got from it in one go when it returns. */
export function writeLinesTogether(write: () => void): void {
  if (gathering) return write();
  const outputs = new Set<DescriptorOutput>();
  gathering = outputs;
  try {
    write();
  } finally {
    gathering = null;
    for (const output of outputs) output.writeHeld();
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

export class DescriptorOutput {
  private held: string[] = [];

  constructor(
    private readonly fd: number,
    private readonly ownsFd = false,
  ) {}

  write(line: string): void {
    if (gathering === null) return writeFully(this.fd, line);
    if (this.held.length === 0) gathering.add(this);
    this.held.push(line);
  }

  writeHeld(): void {
    if (this.held.length === 0) return;
    const text = this.held.join('');
    this.held = [];
    writeFully(this.fd, text);
  }

  close(): void {
    this.writeHeld();
    if (this.ownsFd) closeSync(this.fd);
  }
}
