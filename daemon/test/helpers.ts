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
    const complete = parts.filter((line) => line !== '');
    this.lines.push(...complete);
    if (complete.length > 0) this.emit('lines');
    done();
  }

  /** Resolves with the records of `event` once there are `count` of them (those logged already count). */
  whenEvents(event: string, count = 1): Promise<Record<string, unknown>[]> {
    return new Promise((resolve) => {
      const check = () => {
        const found = this.events(event);
        if (found.length < count) return;
        this.off('lines', check);
        resolve(found);
      };
      this.on('lines', check);
      check();
    });
  }

  records(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  events(event: string): Record<string, unknown>[] {
    return this.records().filter((r) => r.event === event);
  }
}

/**
 * Keeps the test's process up until the test ends: the daemon's own timers are unref'd (they must
 * not keep a daemon alive), and a test waiting only on them would otherwise end as inactive.
 */
export function keepProcessAlive(t: ExecutionContext): void {
  const keepAlive = setInterval(() => undefined, 60_000);
  t.teardown(() => clearInterval(keepAlive));
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
