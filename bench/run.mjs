// Runs every benchmark in this directory (bench/*.mjs except this file), one after the other.
//   node bench/run.mjs [args passed to each benchmark]
// Exits non-zero when any of them fails; the others still run.

import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const benchDirectory = dirname(fileURLToPath(import.meta.url));
const self = basename(fileURLToPath(import.meta.url));
const benchmarks = readdirSync(benchDirectory)
  .filter((file) => file.endsWith('.mjs') && file !== self && !file.startsWith('.'))
  .sort();

if (benchmarks.length === 0) {
  console.error(`no benchmark found in ${benchDirectory}`);
  process.exit(1);
}

const failed = [];
for (const file of benchmarks) {
  console.log(`\n=== ${file} ===`);
  const { code, signal } = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(benchDirectory, file), ...process.argv.slice(2)], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('close', (exitCode, killedBy) => resolve({ code: exitCode, signal: killedBy }));
  });
  if (code !== 0) failed.push(`${file} (${signal ? `killed by ${signal}` : `exit ${code}`})`);
}

if (failed.length > 0) {
  console.error(`\nfailed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
