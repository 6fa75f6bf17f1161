import type { EventEmitter } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Unix socket paths must fit in sun_path (108 bytes); keep temp dirs well below that. */
const maximumTempRootLength = 40;

/** Creates a fresh private directory with a short path, e.g. `/tmp/vl-Ab12Cd`. */
export async function tempDir(prefix = 'vl'): Promise<string> {
  if (!/^[A-Za-z0-9_-]{1,16}$/.test(prefix)) {
    throw new Error(`tempDir prefix must be 1-16 characters of [A-Za-z0-9_-], got ${JSON.stringify(prefix)}`);
  }
  const systemTemp = tmpdir();
  const root = systemTemp.length <= maximumTempRootLength ? systemTemp : '/tmp';
  return mkdtemp(join(root, `${prefix}-`));
}

/** Asks the kernel for a currently free TCP port on the given address (bind to 0, read, release). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`could not read the port bound on ${host}`));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

export function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/**
 * Polls `condition` until it returns a truthy value (which is returned) or `timeoutMs` passes.
 * A condition that throws is treated as "not yet"; its last error is reported on timeout.
 * Only for what no event announces (a file or process of a foreign program); in-process state
 * is waited on with whenEmitted or untilClientCount.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  timeoutMs: number,
  what = 'condition',
  intervalMs = 10,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== null && value !== false && value !== 0 && value !== '') {
        return value as NonNullable<T>;
      }
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const cause = lastError instanceof Error ? `: last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await delay(intervalMs);
  }
}

/**
 * Resolves with `condition()`'s first truthy value, tried now and again each time `emitter` emits
 * one of `events`: a wait on what happens, not on the clock. `timeoutMs` only bounds a test that
 * would otherwise hang; it is generous, for a loaded machine.
 */
export function whenEmitted<T>(
  emitter: EventEmitter,
  events: readonly string[],
  condition: () => T,
  timeoutMs: number,
  what: string,
): Promise<NonNullable<T>> {
  return new Promise((resolve, reject) => {
    const finish = (outcome: () => void) => {
      clearTimeout(timer);
      for (const event of events) emitter.off(event, check);
      outcome();
    };
    const check = () => {
      const value = condition();
      if (value !== undefined && value !== null && value !== false && value !== 0 && value !== '') finish(() => resolve(value));
    };
    const timer = setTimeout(() => finish(() => reject(new Error(`gave up after ${timeoutMs} ms waiting for ${what}`))), timeoutMs);
    for (const event of events) emitter.on(event, check);
    check();
  });
}

/** What untilClientCount watches: a daemon's server, which reports each change of its client count. */
export interface ClientCounter {
  readonly clientCount: number;
  onClientCountChange(listener: (count: number) => void): () => void;
}

/** Resolves when each of `servers` has `count` clients (connected or waiting), as each reports its changes. */
export function untilClientCount(servers: readonly ClientCounter[], count: number, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const unsubscribes: (() => void)[] = [];
    const finish = (outcome: () => void) => {
      clearTimeout(timer);
      for (const unsubscribe of unsubscribes) unsubscribe();
      outcome();
    };
    const check = () => {
      if (servers.every((s) => s.clientCount === count)) finish(resolve);
    };
    const timer = setTimeout(() => finish(() => reject(new Error(`gave up after ${timeoutMs} ms waiting for ${what}`))), timeoutMs);
    for (const server of servers) unsubscribes.push(server.onClientCountChange(check));
    check();
  });
}
