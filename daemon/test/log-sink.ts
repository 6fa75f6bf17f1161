// A pino destination for daemon tests: the JSON lines, kept in memory.

import { Writable } from 'node:stream';

export class JsonSink extends Writable {
  readonly lines: string[] = [];
  private partial = '';

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    const parts = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = parts.pop() ?? '';
    this.lines.push(...parts.filter((line) => line !== ''));
    done();
  }

  records(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  events(event: string): Record<string, unknown>[] {
    return this.records().filter((r) => r.event === event);
  }
}
