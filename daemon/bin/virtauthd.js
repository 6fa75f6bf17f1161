#!/usr/bin/env -S node --max-semi-space-size=4
// Node's flags as DAEMON_NODE_FLAGS in daemon/src/systemd/units.ts (why: there).
// Committed entry point, so npm links `virtauthd` at install time, before anything is compiled.
// The daemon itself lives in dist/ (built by `npm run build`, which `npm ci` runs as its prepare step).
import { existsSync } from 'node:fs';

const compiledEntryPoint = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(compiledEntryPoint)) {
  process.stderr.write('virtauthd: not built yet; run `npm run build` in the repository first\n');
  process.exit(1);
}
await import(compiledEntryPoint.href);
