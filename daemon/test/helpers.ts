// Helpers for daemon tests: a pino destination that keeps the JSON lines, and a client that
// speaks the remote program by hand.

import net from 'node:net';
import { Writable } from 'node:stream';
import type { ExecutionContext } from 'ava';
import { REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RpcConnection, type Codec } from '@virtauth/core';

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

/** A connection to a daemon's unix socket, closed when the test ends. */
export async function connect(t: ExecutionContext, path: string): Promise<RpcConnection> {
  const socket = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const rpc = new RpcConnection(socket);
  socket.resume();
  t.teardown(() => rpc.close(null));
  return rpc;
}

/** One call of the remote program. */
export function callRemote<A, R>(rpc: RpcConnection, proc: number, args: Codec<A>, value: A, ret: Codec<R>): Promise<R> {
  return rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret);
}
