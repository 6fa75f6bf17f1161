// The per-connection budget of warnings about a client's malformed input.

import test from 'ava';
import { PeerFaultLog } from '../src/peer-fault-log.js';

function budget() {
  const lines: Record<string, unknown>[] = [];
  let time = 0;
  const log = new PeerFaultLog(
    { warn: (obj) => lines.push(obj as Record<string, unknown>) },
    { burst: 3, refillMs: 1000, now: () => time },
  );
  return { lines, log, advance: (ms: number) => (time += ms) };
}

test('a burst is written, the rest counted; the next line written says how many were left out', (t) => {
  const { lines, log, advance } = budget();
  for (let n = 0; n < 100; n++) log.warn({ event: 'protocol.error', n }, 'malformed input from client');
  t.deepEqual(
    lines.map((l) => l.n),
    [0, 1, 2],
  );
  t.is(log.suppressedCount, 97);
  advance(999);
  log.warn({ event: 'protocol.error', n: 100 }, 'still too soon');
  t.is(lines.length, 3);
  advance(1);
  log.warn({ event: 'protocol.error', n: 101 }, 'one more after a second');
  t.like(lines[3], { n: 101, suppressed: 98 });
  t.is(log.suppressedCount, 0);
});

test('the budget refills up to the burst only, and flush reports what is left out, once', (t) => {
  const { lines, log, advance } = budget();
  advance(60_000);
  for (let n = 0; n < 5; n++) log.warn({ n }, 'x');
  t.is(lines.length, 3, 'a long quiet time earns no more than the burst');
  log.flush();
  t.like(lines[3], { event: 'protocol.error.suppressed', count: 2 });
  log.flush();
  t.is(lines.length, 4, 'nothing more to report');
});
