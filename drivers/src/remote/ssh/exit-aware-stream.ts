// A byte stream whose far end is a command (a local ssh process, or a remote command on an SSH
// channel): its end of output is an error when the command failed, with what it said on stderr.

import { Duplex, type Readable, type Writable } from 'node:stream';

/** The last bytes a command wrote to stderr, kept for the error that explains its failure. */
export class StderrTail {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit = 4096) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.limit && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
  }

  /** Printable text, one line, trimmed: a hostile remote end cannot paint the terminal. */
  text(): string {
    const all = Buffer.concat(this.chunks);
    return (
      all
        .subarray(Math.max(0, all.length - this.limit))
        .toString('utf8')
        // eslint-disable-next-line no-control-regex -- control characters are what it removes
        .replace(/[\x00-\x1f\x7f]+/g, ' ')
        .trim()
    );
  }
}

/**
 * Reads from `output`, writes to `input`. When `output` ends, waits for `exited`: null ends the
 * stream cleanly, an Error destroys it with that error (the RPC layer reports it).
 */
export class ExitAwareStream extends Duplex {
  constructor(
    private readonly output: Readable,
    private readonly input: Writable,
    exited: Promise<Error | null>,
    private readonly onDestroy: () => void,
  ) {
    super({ allowHalfOpen: false });
    output.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) output.pause();
    });
    let outputEnded = false;
    output.once('end', () => (outputEnded = true));
    output.once('error', (e: Error) => this.destroy(e));
    input.on('error', () => {
      // Writing to a command that went away: its exit explains why.
    });
    exited.then((error) => {
      if (this.destroyed) return;
      if (error) this.destroy(error);
      else if (outputEnded) this.push(null);
      else output.once('end', () => this.push(null));
    });
    output.pause();
  }

  override _read(): void {
    this.output.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.input.destroyed) {
      callback(new Error('the SSH connection closed'));
      return;
    }
    this.input.write(chunk, (e) => callback(e ?? null));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.input.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.onDestroy();
    callback(error);
  }
}
