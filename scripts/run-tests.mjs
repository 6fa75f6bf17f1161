#!/usr/bin/env node
// Runs the whole ava suite with the TAP reporter, streams its output unchanged, and closes with
// one plain summary line ("N passed, N failed[, N skipped]") that CI reads.
// Extra arguments go straight to ava: `npm test -- core/dist/test/xdr.test.js --match='*pack*'`.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const avaEntryPoint = join(repositoryRoot, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');

// A TAP test line: "ok 3 - title", "not ok 4 - title # TODO", "ok 1 - title # SKIP reason".
// YAML diagnostics under a failure are indented, so anchoring at column 0 ignores them.
const testLinePattern = /^(not ok|ok)\b(?:\s+\d+)?(?:\s*-?\s*)(.*)$/;
const directivePattern = /#\s*(SKIP|TODO)\b[^#]*$/i;

class TapTally {
  passed = 0;
  failed = 0;
  skipped = 0;
  todo = 0;
  failedTitles = [];

  consumeLine(line) {
    const match = testLinePattern.exec(line);
    if (!match) {
      return;
    }

    const [, status, description] = match;
    const directive = directivePattern.exec(description)?.[1]?.toUpperCase();
    if (directive === 'SKIP') {
      this.skipped++;
    } else if (directive === 'TODO') {
      // Ava marks todos "not ok ... # TODO"; TAP says a todo never counts as a failure.
      this.todo++;
    } else if (status === 'ok') {
      this.passed++;
    } else {
      this.failed++;
      this.failedTitles.push(description.trim());
    }
  }

  get ran() {
    return this.passed + this.failed;
  }
}

function splitLines(stream, onLine) {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    pending += chunk;
    let newline;
    while ((newline = pending.indexOf('\n')) !== -1) {
      onLine(pending.slice(0, newline).replace(/\r$/, ''));
      pending = pending.slice(newline + 1);
    }
  });
  stream.on('end', () => {
    if (pending.length > 0) {
      onLine(pending);
    }
  });
}

const startedAt = process.hrtime.bigint();
const tally = new TapTally();
let stderrTail = '';

const ava = spawn(process.execPath, [avaEntryPoint, '--tap', ...process.argv.slice(2)], {
  cwd: repositoryRoot,
  stdio: ['ignore', 'pipe', 'pipe'],
  env: process.env,
});

splitLines(ava.stdout, (line) => {
  process.stdout.write(line + '\n');
  tally.consumeLine(line);
});
ava.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  stderrTail = (stderrTail + chunk.toString('utf8')).slice(-4000);
});

// Forward an interrupt so ava can stop its workers instead of being orphaned.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => ava.kill(signal));
}

const { exitCode, signal } = await new Promise((resolve, reject) => {
  ava.on('error', reject);
  ava.on('close', (code, killedBy) => resolve({ exitCode: code, signal: killedBy }));
});

const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
const avaStatus = signal ? `killed by ${signal}` : `exit status ${exitCode}`;
process.stdout.write(`\n# ava finished in ${seconds.toFixed(1)} s (${avaStatus})\n`);

let failed = tally.failed;
if (exitCode !== 0 && failed === 0) {
  // Ava failed without a "not ok" line (its TAP reporter crashes on a test timeout, or a
  // worker died before reporting): count that as one failure so the summary cannot look green.
  failed = 1;
  const hint = /writeTimeout|writeProcessExit/.test(stderrTail)
    ? "a test timed out or called process.exit() (ava's TAP reporter crashed reporting it); rerun that file with `npx ava FILE` to see which"
    : 'see the output above';
  process.stdout.write(`# ava ended with ${avaStatus} but reported no failed test: ${hint}\n`);
}

if (tally.failedTitles.length > 0) {
  process.stdout.write('# failed:\n');
  for (const title of tally.failedTitles) {
    process.stdout.write(`#   ${title}\n`);
  }
}

if (tally.ran === 0 && failed === 0) {
  process.stdout.write('# no test ran: check the build output and the file globs in ava.config.js\n');
}

const skipped = tally.skipped + tally.todo;
let summary = `${tally.passed} passed, ${failed} failed`;
if (skipped > 0) {
  summary += `, ${skipped} skipped`;
}

process.stdout.write(summary + '\n');
process.exitCode = failed > 0 || tally.ran === 0 || exitCode !== 0 ? 1 : 0;
