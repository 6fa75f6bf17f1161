// Audit lines: the line pino writes for the record, taken at once and written with the others of
// the next few milliseconds (at once when the daemon stops, the process exits or too many are
// held), and none built when info lines are off.

import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AUDIT_BATCH_MS, MAX_HELD_AUDIT_RECORDS, auditLineWriter, flushAuditRecords } from '../src/audit-log.js';
import { createLogger } from '../src/logger.js';

function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return {
    stream,
    lines: () =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const record = {
  id: 7,
  connectionId: 3,
  origin: [{ daemon: 'virtauthd@b', driver: 'xenapi', uri: 'xenapi://x/' }],
  service: 'xenapi',
  host: 'x',
  credentialTypes: ['PASSPHRASE'],
  outcome: 'OK',
  durationMs: 4,
};

const withoutTime = ({ time: _time, ...rest }: Record<string, unknown>) => rest;
const nextTick = () => new Promise((resolve) => process.nextTick(resolve));

test.serial('an audit line is the line pino writes for the same record, written within the batch time, in order', async (t) => {
  const out = capture();
  const log = createLogger(2, out.stream).child({ conn: 3, transport: 'unix' }).child({ event: 'relay.audit' });
  const write = auditLineWriter(log, 'relayed credential request');
  t.truthy(write);
  log.info(record, 'relayed credential request');
  const taken = Date.now();
  write!(record);
  write!({ ...record, id: 8 });
  await nextTick();
  t.is(out.lines().length, 1, 'the records are held, not written one by one');
  while (out.lines().length < 3) await new Promise((resolve) => setTimeout(resolve, 1));
  const [viaPino, first, second] = out.lines();
  t.deepEqual(withoutTime(first!), withoutTime(viaPino!));
  t.deepEqual(Object.keys(first!), Object.keys(viaPino!), 'the same fields in the same order');
  t.true((first!['time'] as number) - taken < AUDIT_BATCH_MS + 1000, 'written within the batch time (a loaded machine allowed)');
  t.is(second!['id'], 8);
});

test.serial('flushAuditRecords writes what is held at once; a full batch writes itself', async (t) => {
  const out = capture();
  const write = auditLineWriter(createLogger(2, out.stream), 'access control')!;
  write(record);
  flushAuditRecords();
  await nextTick();
  t.is(out.lines().length, 1);
  for (let i = 0; i < MAX_HELD_AUDIT_RECORDS; i++) write({ ...record, id: i });
  await nextTick();
  const ids = out.lines().map((l) => l['id']);
  t.is(ids.length, 1 + MAX_HELD_AUDIT_RECORDS, 'no record is held beyond the bound');
  t.deepEqual(ids.slice(1), [...Array(MAX_HELD_AUDIT_RECORDS).keys()]);
});

test('with info lines off there is no writer, and nothing is built', (t) => {
  const out = capture();
  t.is(auditLineWriter(createLogger(3, out.stream), 'relayed credential request'), null);
});

// A process that ends right after it took its records, before any timer: process.exit, or an
// exception nothing catches. Its `exit` event writes them.
for (const ending of ['process.exit(3)', "throw new Error('crash')"]) {
  test(`held records are in the log file when the process ends by ${ending}`, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'vaudit-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'audit.log');
    const module = (name: string) => JSON.stringify(fileURLToPath(new URL(`../src/${name}`, import.meta.url)));
    const script = `
      import { openSync } from 'node:fs';
      const { auditLineWriter } = await import(${module('audit-log.js')});
      const { createLogger } = await import(${module('logger.js')});
      const log = createLogger(2, openSync(${JSON.stringify(logFile)}, 'a'));
      log.info({ event: 'before' }, 'a line the file output holds');
      const write = auditLineWriter(log, 'relayed credential request');
      for (let id = 1; id <= 3; id++) write({ id, outcome: 'OK' });
      ${ending};
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    t.not(code, 0, stderr);
    const lines = (await readFile(logFile, 'utf8')).split('\n').filter((l) => l !== '');
    t.deepEqual(
      lines.map((l) => JSON.parse(l) as { event?: string; id?: number }).map((r) => r.event ?? r.id),
      ['before', 1, 2, 3],
      stderr,
    );
  });
}
