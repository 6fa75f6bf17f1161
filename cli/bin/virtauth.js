#!/usr/bin/env node
// Committed entry point, so npm links `virtauth` at install time, before anything is compiled.
// The CLI itself lives in dist/ (built by `npm run build`, which `npm ci` runs as its prepare step).
import { existsSync } from 'node:fs';

const compiledEntryPoint = new URL('../dist/src/bin.js', import.meta.url);
if (!existsSync(compiledEntryPoint)) {
  process.stderr.write('virtauth: not built yet; run `npm run build` in the repository first\n');
  process.exit(1);
}
await import(compiledEntryPoint.href);
