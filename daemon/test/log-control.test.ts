// Run-time log filters and outputs in libvirt's syntax over pino: parsing with libvirt's errors,
// and their effect on loggers made before and after the change.

import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { ErrorCode } from '@virtauth/core';
import { createLogger, logControlOf } from '../src/logger.js';
import { parseLogFilters, parseLogOutputs } from '../src/log-control.js';

function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return { stream, events: () => text.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { event?: string }).event) };
}

test('filters parse as libvirt writes them; a bare name matches as *name*; bad ones get libvirt\'s texts', (t) => {
  t.deepEqual(parseLogFilters(' 1:relay  +3:client.* '), [{ priority: 1, match: '*relay*' }, { priority: 3, match: 'client.*' }]);
  t.deepEqual(parseLogFilters(''), []);
  for (const [text, message] of [
    ['bogus', "invalid argument: Malformed format for filter 'bogus'"],
    ['9:foo', "invalid argument: Invalid priority '9' for filter '9:foo'"],
    ['1:a:b', "invalid argument: Malformed format for filter '1:a:b'"],
    [':x', "invalid argument: Malformed format for filter ':x'"],
  ]) {
    t.throws(() => parseLogFilters(text!), { message, instanceOf: Error }, text);
  }
});

test('outputs: stderr and file:ABSOLUTE; other destinations refused with the reason', (t) => {
  t.deepEqual(parseLogOutputs('1:stderr 3:file:/var/log/x.log'), [{ priority: 1, destination: 'stderr' }, { priority: 3, destination: 'file', path: '/var/log/x.log' }]);
  t.throws(() => parseLogOutputs('3:bogus'), { message: "invalid argument: Invalid log destination 'bogus' for log output '3:bogus'" });
  t.throws(() => parseLogOutputs('3:file'), { message: "invalid argument: Log output '3:file' does not meet the format requirements for destination type 'file'" });
  t.throws(() => parseLogOutputs('3:file:relative'), { message: /does not meet the format requirements/ });
  const journald = t.throws(() => parseLogOutputs('3:journald'));
  t.is((journald as unknown as { code: number }).code, ErrorCode.CONFIG_UNSUPPORTED);
});

test('a filter lowers the level for matching events only, on loggers made before the change too', (t) => {
  const out = capture();
  const root = createLogger(3, out.stream);
  const session = root.child({ conn: 1 });
  const control = logControlOf(root)!;
  session.info({ event: 'connect.open' }, 'before');
  control.setFilters('2:connect.open 4:relay');
  t.deepEqual(control.filters(), { text: '2:*connect.open* 4:*relay*', count: 2 });
  session.info({ event: 'connect.open' }, 'passes');
  session.info({ event: 'client.authenticated' }, 'below the base level');
  session.warn({ event: 'relay.audit' }, 'below its filter');
  session.error({ event: 'relay.audit' }, 'passes');
  root.child({ conn: 2 }).info({ event: 'connect.open' }, 'a logger made after, passes');
  t.deepEqual(out.events(), ['connect.open', 'relay.audit', 'connect.open']);
  control.setFilters(null);
  t.deepEqual(control.filters(), { text: null, count: 0 });
  session.info({ event: 'connect.open' }, 'off again');
  t.is(out.events().length, 3);
});

test('outputs change where lines go; a file that cannot be opened leaves them as they were', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vlc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = capture();
  const root = createLogger(3, out.stream);
  const control = logControlOf(root)!;
  t.deepEqual(control.outputs(), { text: '3:stderr', count: 1 });
  const file = join(dir, 'v.log');
  control.setOutputs(`2:file:${file}`);
  root.info({ event: 'x.moved' }, 'to the file');
  t.regex(readFileSync(file, 'utf8'), /"event":"x\.moved"/);
  t.deepEqual(out.events(), []);
  t.throws(() => control.setOutputs(`2:file:${join(dir, 'missing', 'v.log')}`), { message: /failed to open/ });
  t.deepEqual(control.outputs(), { text: `2:file:${file}`, count: 1 });
});
