// libvirt's log_filters and log_outputs syntax: what is accepted, and clear errors for the rest.

import { fstatSync } from 'node:fs';
import test from 'ava';
import { VirError, type ConfValue } from '@virtauth/core';
import { buildConfig } from '../src/config.js';
import { defaultLogOutputs, parseLogFilters, parseLogOutputs } from '../src/logging/settings.js';

test('filters: priority and match per entry, whitespace-separated, libvirt\'s "+" flag accepted', (t) => {
  t.deepEqual(parseLogFilters('1:rpc 3:relay\t2:+daemon/src/server'), [
    { priority: 1, match: 'rpc' },
    { priority: 3, match: 'relay' },
    { priority: 2, match: 'daemon/src/server' },
  ]);
  t.deepEqual(parseLogFilters('   '), []);
});

test('outputs: stderr, journald and file with an absolute path (which may contain ":")', (t) => {
  t.deepEqual(parseLogOutputs('2:journald 1:file:/var/log/virtauth/virtauthd.log 3:stderr 4:file:/tmp/a:b.log'), [
    { priority: 2, kind: 'journald' },
    { priority: 1, kind: 'file', path: '/var/log/virtauth/virtauthd.log' },
    { priority: 3, kind: 'stderr' },
    { priority: 4, kind: 'file', path: '/tmp/a:b.log' },
  ]);
});

test('bad filters and outputs are configuration errors naming the key and the entry', (t) => {
  const cases: [string, (text: string) => unknown, RegExp][] = [
    ['rpc', parseLogFilters, /'rpc' is not PRIORITY:MATCH/],
    ['5:rpc', parseLogFilters, /'5:rpc' must start with a priority from 1/],
    ['0:rpc', parseLogFilters, /priority from 1/],
    ['1:', parseLogFilters, /nothing to match/],
    ['x:stderr', parseLogOutputs, /'x:stderr' must start with a priority/],
    ['1:file:relative.log', parseLogOutputs, /absolute path/],
    ['1:file:', parseLogOutputs, /absolute path/],
    ['1:syslog:virtauthd', parseLogOutputs, /syslog output is not supported; use journald/],
    ['1:stderr:extra', parseLogOutputs, /takes no argument/],
    ['1:printer', parseLogOutputs, /unknown output 'printer'/],
    ['2', parseLogOutputs, /'2' is not PRIORITY:OUTPUT/],
  ];
  for (const [text, parse, message] of cases) {
    const error = t.throws(() => parse(text), { instanceOf: VirError }, text);
    t.regex(error!.message, message, text);
    t.regex(error!.message, /^configuration file syntax error: log_(filters|outputs): /, text);
  }
});

test('the config file keys reach the daemon config, and a bad one fails loading it', (t) => {
  const cfg = buildConfig(
    new Map<string, ConfValue>([
      ['log_level', 2],
      ['log_filters', '1:rpc'],
      ['log_outputs', '1:stderr'],
    ]),
    'virtauthd.conf',
  );
  t.is(cfg.logLevel, 2);
  t.deepEqual(cfg.logFilters, [{ priority: 1, match: 'rpc' }]);
  t.deepEqual(cfg.logOutputs, [{ priority: 1, kind: 'stderr' }]);
  t.is(buildConfig(new Map()).logOutputs, null);
  const error = t.throws(() => buildConfig(new Map([['log_outputs', '1:nowhere']]), 'virtauthd.conf'), { instanceOf: VirError });
  t.regex(error!.message, /virtauthd\.conf: log_outputs: '1:nowhere'/);
  t.throws(() => buildConfig(new Map<string, ConfValue>([['log_filters', ['1:rpc']]]), 'virtauthd.conf'), {
    message: /log_filters: expected a "string"/,
  });
});

test('without log_outputs: stderr at log_level, or the journal when stderr is connected to it', (t) => {
  t.deepEqual(defaultLogOutputs(3, {}), [{ priority: 3, kind: 'stderr' }]);
  t.deepEqual(defaultLogOutputs(2, { JOURNAL_STREAM: '0:0' }), [{ priority: 2, kind: 'stderr' }]);
  // systemd names stderr's device and inode when it connects it to the journal.
  const stderr = fstatSync(2, { bigint: true });
  t.deepEqual(defaultLogOutputs(2, { JOURNAL_STREAM: `${stderr.dev}:${stderr.ino}` }), [{ priority: 2, kind: 'journald' }]);
});
