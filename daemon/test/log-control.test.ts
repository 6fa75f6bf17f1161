// virt-admin's daemon-log-filters and daemon-log-outputs over the service's logging: they read and
// change the very settings log_filters and log_outputs made, with libvirt's error code for a bad
// list, and a change reaches loggers made before it.

import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { createDaemonLogging } from '../src/logging/daemon-logging.js';
import { parseLogFilters, type LogSettings } from '../src/logging/settings.js';
import { logControlFor } from '../src/log-control.js';
import { createLogger } from '../src/logger.js';

function capture(settings: LogSettings) {
  const lines: string[] = [];
  const logging = createDaemonLogging(settings, { stderrStream: { write: (line: string) => lines.push(line) }, env: {} });
  const events = () => lines.map((l) => (JSON.parse(l) as { event?: string }).event);
  return { logging, control: logControlFor(logging.logger), events };
}

test('the control shows the configured filters and outputs, default outputs included', (t) => {
  const { control, logging } = capture({ level: 3, filters: parseLogFilters('1:rpc 4:+relay'), outputs: [] });
  t.teardown(() => logging.close());
  t.deepEqual(control.filters(), { text: '1:rpc 4:relay', count: 2 });
  t.deepEqual(control.outputs(), { text: '3:stderr', count: 1 });
});

test('a filter applies to loggers made before the change; clearing it restores log_level', (t) => {
  // An output's own priority still applies (as in libvirt): this one takes everything.
  const { control, logging, events } = capture({ level: 3, filters: [], outputs: [{ priority: 1, kind: 'stderr' }] });
  t.teardown(() => logging.close());
  const session = logging.logger.child({ conn: 1 });
  session.info({ event: 'before' }, 'below log_level');
  control.setFilters('2:no-such-source');
  session.info({ event: 'unmatched' }, 'no filter matches this file');
  control.setFilters('2:daemon/test/log-control');
  t.deepEqual(control.filters(), { text: '2:daemon/test/log-control', count: 1 });
  session.info({ event: 'matched' }, 'this file matches');
  control.setFilters('');
  t.deepEqual(control.filters(), { text: null, count: 0 });
  session.info({ event: 'after' }, 'off again');
  session.warn({ event: 'warned' }, 'at log_level');
  t.deepEqual(events(), ['matched', 'warned']);
});

test('a bad list is an invalid argument and changes nothing', (t) => {
  const { control, logging } = capture({ level: 3, filters: parseLogFilters('2:rpc'), outputs: [] });
  t.teardown(() => logging.close());
  for (const [set, text] of [
    [() => control.setFilters('bogus'), /^invalid argument: filters: 'bogus' is not PRIORITY:MATCH/],
    [() => control.setFilters('9:foo'), /^invalid argument: filters: '9:foo' must start with a priority/],
    [() => control.setOutputs('3:bogus'), /^invalid argument: outputs: '3:bogus': unknown output 'bogus'/],
    [() => control.setOutputs('3:file:relative'), /^invalid argument: outputs: '3:file:relative': file needs an absolute path/],
  ] as const) {
    const e = t.throws(set, { instanceOf: VirError });
    t.is(e!.code, ErrorCode.INVALID_ARG);
    t.is(e!.domain, ErrorDomain.NONE);
    t.regex(e!.message, text);
  }
  t.deepEqual(control.filters(), { text: '2:rpc', count: 1 });
  t.deepEqual(control.outputs(), { text: '3:stderr', count: 1 });
});

test('outputs move lines to a file and journald is accepted; one that cannot open leaves them as they were', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vlc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { control, logging, events } = capture({ level: 2, filters: [], outputs: [] });
  t.teardown(() => logging.close());
  const file = join(dir, 'v.log');
  control.setOutputs(`2:file:${file}`);
  t.deepEqual(control.outputs(), { text: `2:file:${file}`, count: 1 });
  logging.logger.info({ event: 'x.moved' }, 'to the file');
  t.regex(readFileSync(file, 'utf8'), /"event":"x\.moved"/);
  t.deepEqual(events(), []);
  const notADirectory = join(dir, 'plain');
  writeFileSync(notADirectory, '');
  t.throws(() => control.setOutputs(`2:file:${join(notADirectory, 'v.log')}`), { message: /Cannot open log output file/ });
  t.deepEqual(control.outputs(), { text: `2:file:${file}`, count: 1 });
  control.setOutputs('3:journald 4:stderr');
  t.deepEqual(control.outputs(), { text: '3:journald 4:stderr', count: 2 });
  control.setOutputs(null);
  t.deepEqual(control.outputs(), { text: '2:stderr', count: 1 }, 'an empty list is the default output again');
});

test('a logger virtauthd did not configure reports its level and refuses changes with the reason', (t) => {
  const control = logControlFor(createLogger(3, { write: () => true } as unknown as NodeJS.WritableStream));
  t.deepEqual(control.outputs(), { text: '3:stderr', count: 1 });
  const e = t.throws(() => control.setFilters('1:rpc'), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.OPERATION_UNSUPPORTED);
  t.regex(e!.message, /cannot be changed at run time/);
});
