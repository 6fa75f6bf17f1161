// Operations per second of python3-libvirt (the real C client) against a daemon: a warm-up, then
// whole batches until the time is up. Not a benchmark itself.

import { runPython } from '../../test/dist/src/peers/clients.js';

const PREAMBLE = String.raw`
import json, sys, time
import libvirt

libvirt.registerErrorHandler(lambda _context, _error: None, None)
seconds = SETTINGS['seconds']

def measure(operation, operations_per_call, batch):
    warm_until = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_until:
        operation()
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(batch):
            operation()
        done += batch * operations_per_call
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)
`;

/**
 * `setup` (python, may read SETTINGS) prepares names for `operation`, a python expression run
 * repeatedly that counts as `perCall` operations; `teardown` runs after measuring.
 */
export async function pythonRate({ what, settings, seconds, setup = '', operation, perCall = 1, batch, teardown = '' }) {
  const encoded = JSON.stringify(JSON.stringify({ ...settings, seconds }));
  const script = [
    `SETTINGS = __import__('json').loads(${encoded})`,
    PREAMBLE,
    setup,
    `rate = measure(lambda: ${operation}, ${perCall}, ${batch})`,
    teardown,
    `json.dump({'rate': rate}, sys.stdout)`,
  ].join('\n');
  const result = await runPython(script, { timeoutMs: (seconds + 30) * 1000 });
  if (result.code !== 0) throw new Error(`python3-libvirt ${what} failed: exit ${result.code}: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout.trim().split('\n').pop()).rate;
}
