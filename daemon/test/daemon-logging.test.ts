// The daemon's configurable logger: default priority, per-source filters, several outputs with
// their own priorities, redaction on each, and reconfiguration that keeps the old setup on error.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { createDaemonLogging, sourceFileName } from '../src/logging/daemon-logging.js';
import { formatReadableLine } from '../src/logging/sinks.js';
import { auditLineWriter, flushAuditRecords } from '../src/audit-log.js';
import type { LogSettings } from '../src/logging/settings.js';

async function scratch(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'vlog-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function lines(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('source files are named as in the tree, whatever the compiled path', (t) => {
  t.is(sourceFileName(new URL('../src/server.js', import.meta.url).href), 'daemon/src/server.ts');
  t.is(sourceFileName(new URL('./x.test.js', import.meta.url).pathname), 'daemon/test/x.test.ts');
  t.is(sourceFileName('/elsewhere/lib.js'), '/elsewhere/lib.js');
});

test("log_level and each output's priority decide what reaches each output", async (t) => {
  const dir = await scratch(t);
  const all = join(dir, 'all.log');
  const errors = join(dir, 'errors.log');
  const logging = createDaemonLogging({
    level: 2,
    filters: [],
    outputs: [
      { priority: 1, kind: 'file', path: all },
      { priority: 4, kind: 'file', path: errors },
    ],
  });
  t.teardown(() => logging.close());
  const log = logging.logger.child({ conn: 5 });
  log.debug('dropped: below log_level');
  log.info({ event: 'e.info' }, 'info line');
  log.error({ event: 'e.error' }, 'error line');
  t.deepEqual(
    (await lines(all)).map((l) => l.msg),
    ['info line', 'error line'],
  );
  t.deepEqual(
    (await lines(errors)).map((l) => [l.msg, l.conn]),
    [['error line', 5]],
  );
});

test('log_filters: the first filter matching the source file sets its priority, both ways', async (t) => {
  const dir = await scratch(t);
  const out = join(dir, 'out.log');
  const settings = (filters: LogSettings['filters']): LogSettings => ({
    level: 3,
    filters,
    outputs: [{ priority: 1, kind: 'file', path: out }],
  });
  const logging = createDaemonLogging(
    settings([
      { priority: 1, match: 'daemon/test/daemon-logging' },
      { priority: 4, match: 'daemon/test' },
    ]),
  );
  t.teardown(() => logging.close());
  const child = logging.logger.child({ conn: 1 });
  child.debug({ event: 'raised' }, 'debug from a file a filter raised');
  const [first] = await lines(out);
  t.is(first?.msg, 'debug from a file a filter raised');
  t.like(first?.src, { file: 'daemon/test/daemon-logging.test.ts' });
  t.true(typeof (first?.src as { line?: unknown }).line === 'number');

  logging.reconfigure(settings([{ priority: 4, match: 'daemon/test' }]));
  child.warn('a warning from a file filtered to errors only');
  child.error(new Error('boom'), 'an error passes');
  const after = await lines(out);
  t.deepEqual(
    after.map((l) => l.msg),
    ['debug from a file a filter raised', 'an error passes'],
  );
  t.like(after[1]?.err, { message: 'boom' });
});

test('secrets are redacted in every output, including the readable one', async (t) => {
  const dir = await scratch(t);
  const out = join(dir, 'out.log');
  const logging = createDaemonLogging({
    level: 1,
    filters: [{ priority: 1, match: 'nothing-matches' }],
    outputs: [{ priority: 1, kind: 'file', path: out }],
  });
  t.teardown(() => logging.close());
  logging.logger.info({ password: 'hunter2', nested: { secret: 'hunter3' }, credentials: [{ result: 'hunter4' }] }, 'with secrets');
  const text = await readFile(out, 'utf8');
  t.false(/hunter/.test(text), text);
  t.false(/hunter/.test(formatReadableLine(JSON.parse(text) as Record<string, unknown>)));
});

test('readable lines: time, pid, level and message, then the fields', (t) => {
  const line = formatReadableLine({
    level: 40,
    time: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    name: 'virtauthd',
    msg: 'client refused',
    conn: 3,
    dn: 'C=GB,CN=a b',
  });
  t.is(line, `2026-01-02 03:04:05.006+0000: ${process.pid}: warning : client refused conn=3 dn="C=GB,CN=a b"\n`);
});

test('a reconfiguration whose output cannot be opened changes nothing', async (t) => {
  const dir = await scratch(t);
  const out = join(dir, 'out.log');
  const blocker = join(dir, 'not-a-dir');
  await writeFile(blocker, '');
  const logging = createDaemonLogging({ level: 2, filters: [], outputs: [{ priority: 2, kind: 'file', path: out }] });
  t.teardown(() => logging.close());
  t.throws(() => logging.reconfigure({ level: 4, filters: [], outputs: [{ priority: 1, kind: 'file', path: join(blocker, 'x.log') }] }));
  logging.logger.info('still at info, still to the old file');
  t.deepEqual(
    (await lines(out)).map((l) => l.msg),
    ['still at info, still to the old file'],
  );
});

test("audit lines, written from a timer, obey the filters too, and carry their writer's source", async (t) => {
  const dir = await scratch(t);
  const out = join(dir, 'out.log');
  const settings = (priority: 1 | 4): LogSettings => ({
    level: 2,
    filters: [{ priority, match: 'daemon/test/daemon-logging' }],
    outputs: [{ priority: 1, kind: 'file', path: out }],
  });
  const logging = createDaemonLogging(settings(4));
  t.teardown(() => logging.close());
  const session = logging.logger.child({ conn: 9 });
  t.is(auditLineWriter(session, 'relayed credential request'), null, 'a filter keeping this file to errors drops its info lines');
  logging.reconfigure(settings(1));
  const write = auditLineWriter(session, 'relayed credential request');
  t.truthy(write);
  write!({ outcome: 'OK' });
  flushAuditRecords();
  const [line] = await lines(out);
  t.like(line, { conn: 9, outcome: 'OK', msg: 'relayed credential request', src: { file: 'daemon/test/daemon-logging.test.ts' } });
});
